"""Spool files: a message is written here while the peer sends it, then copied into SQLite in
one short transaction, so a slow sender never holds the database write lock.

Up to ``MEMORY_LIMIT`` bytes stay in memory (most mail is small, and a file per message was a
measurable cost); beyond that the data rolls over to an unnamed file in the spool directory, so a
50 MB message never sits in memory. The spool is not the durable copy (the database commit is),
so it is not fsync'd.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

MEMORY_LIMIT = 256 * 1024


class SpoolFile:
    """A temporary file that counts what is written to it."""

    def __init__(self, spool_dir: Path, memory_limit: int = MEMORY_LIMIT) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=memory_limit, dir=str(spool_dir))  # noqa: SIM115
        self.size = 0

    @property
    def in_memory(self) -> bool:
        return not getattr(self._file, "_rolled", True)

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def reader(self) -> IO[bytes]:
        """Flush and rewind: the file positioned at the start, ready to copy into the store."""
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        """Release it (after the store committed it, or when the message is abandoned)."""
        self._file.close()

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def clean_spool(spool_dir: Path) -> int:
    """Remove named spool files an older version left behind (their messages were never acknowledged)."""
    removed = 0
    for path in spool_dir.glob("msg-*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
