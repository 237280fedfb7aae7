from __future__ import annotations

import os
from pathlib import Path

from mailroom.store.spool import SpoolFile


def test_small_in_memory_large_rolls_to_an_unnamed_file(tmp_path: Path) -> None:
    small = SpoolFile(tmp_path, memory_limit=1024)
    small.write(b"x" * 1000)
    assert small.in_memory and small.size == 1000
    assert small.reader().read() == b"x" * 1000
    small.close()
    big = SpoolFile(tmp_path, memory_limit=1024)
    for _ in range(100):
        big.write(b"y" * 1000)
    assert not big.in_memory and big.size == 100_000
    assert os.listdir(tmp_path) == []  # unnamed: nothing to clean up after a crash
    assert big.reader().read() == b"y" * 100_000
    big.close()
