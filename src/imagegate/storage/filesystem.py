"""The default image store: one file per image in a local directory.

Blocking file I/O runs in a worker thread so a slow disk never stalls the event loop.
Writes go to a hidden temp file that is renamed into place, so a reader never sees half
an image. A file's age is its mtime; past ``ttl_s`` plus a grace period it is neither
served nor kept.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import anyio.to_thread

from imagegate.core.types import OutputFormat
from imagegate.storage.base import (
    ImageStore,
    file_id_content_type,
    new_file_id,
    storage_failure,
)

GRACE_S = 60.0
_TMP_PREFIX = ".tmp-"


class FilesystemStore(ImageStore):
    """Images under ``root`` (created 0700), each file 0600, expiring ``ttl_s`` after writing.

    The grace period lets a URL signed to expire at ``ttl_s`` still download right up to
    its expiry even if clocks or the sweep run a little early.
    """

    def __init__(self, root: Path, ttl_s: int, *, grace_s: float = GRACE_S) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def check(self) -> None:
        """The directory exists and this process can write into it."""
        if not self.root.is_dir():
            raise OSError(f"image directory {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"image directory {self.root} is not writable")

    def _expired(self, mtime: float, now: float) -> bool:
        return mtime + self.ttl_s + self.grace_s < now

    async def put(self, data: bytes, fmt: OutputFormat) -> str:
        file_id = new_file_id(fmt)
        try:
            await anyio.to_thread.run_sync(self._write, file_id, data)
        except OSError as exc:  # directory gone, disk full, permissions: 503, not 500
            raise storage_failure(exc, "put", f"directory {self.root}") from exc
        return file_id

    def _write(self, file_id: str, data: bytes) -> None:
        tmp = self.root / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # Stamp the age with the clock ``_expired`` compares against (a network
            # filesystem's server clock, or a faked test clock, may differ).
            now = time.time()
            os.utime(tmp, (now, now))
            os.replace(tmp, self.root / file_id)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _read(self, file_id: str) -> bytes | None:
        try:
            with open(self.root / file_id, "rb") as fh:
                if self._expired(os.fstat(fh.fileno()).st_mtime, time.time()):
                    return None
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    async def sweep(self, now: float | None = None) -> int:
        return await anyio.to_thread.run_sync(self._sweep, time.time() if now is None else now)

    def _sweep(self, now: float) -> int:
        # Only names this store writes are touched, so a misconfigured root (say, a home
        # directory) never loses unrelated files.
        deleted = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                ours = file_id_content_type(entry.name) is not None or entry.name.startswith(
                    _TMP_PREFIX
                )
                try:
                    if not ours or not entry.is_file(follow_symlinks=False):
                        continue
                    if self._expired(entry.stat(follow_symlinks=False).st_mtime, now):
                        os.unlink(entry.path)
                        deleted += 1
                except FileNotFoundError:
                    continue  # removed concurrently (another worker's sweep)
        return deleted
