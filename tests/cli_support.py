"""Run the ``imagegate`` CLI as a subprocess with a data dir of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGEGATE_DATA_DIR": str(data_dir)}
    env.pop("IMAGEGATE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "imagegate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
