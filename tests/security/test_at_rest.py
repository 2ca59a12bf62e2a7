"""Data at rest (issue 12, 7): the SQLite database and its -wal/-shm files are 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imagegate.db.session import Database


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _open_and_write(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    db.migrate()
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
    return db


def test_new_sqlite_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "imagegate.db"
        db = _open_and_write(path)
        try:
            for suffix in ("", "-wal", "-shm"):
                file = Path(f"{path}{suffix}")
                assert file.exists(), file
                assert _mode(file) == 0o600, (file, oct(_mode(file)))
        finally:
            db.dispose()
    finally:
        os.umask(old)


def test_existing_world_readable_files_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "imagegate.db"
    _open_and_write(path).dispose()
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        if file.exists():
            file.chmod(0o644)
    db = _open_and_write(path)
    try:
        for suffix in ("", "-wal", "-shm"):
            file = Path(f"{path}{suffix}")
            if file.exists():
                assert _mode(file) == 0o600, (file, oct(_mode(file)))
    finally:
        db.dispose()
