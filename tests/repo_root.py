"""Where the checkout is, for tests that read files beside the code (README, docs, scripts).

One place, so a test file can move between folders without counting its own depth.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
