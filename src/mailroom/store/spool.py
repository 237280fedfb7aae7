"""Spool files: a message is written here while the peer sends it, then copied into SQLite in
one short transaction, so a slow sender never holds the database write lock.

The spool is not the durable copy (the database commit is), so spool files are not fsync'd;
leftovers after a crash are removed at start.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


class SpoolFile:
    """A temporary file that counts what is written to it."""

    def __init__(self, spool_dir: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="msg-", suffix=".tmp", dir=spool_dir)
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def reader(self) -> BinaryIO:
        """Flush and rewind: the file positioned at the start, ready to copy into the store."""
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        """Close and delete (after the store committed it, or when the message is abandoned)."""
        try:
            self._file.close()
        finally:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def clean_spool(spool_dir: Path) -> int:
    """Remove spool files left by a previous run (their messages were never acknowledged)."""
    removed = 0
    for path in spool_dir.glob("msg-*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
