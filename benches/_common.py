"""Shared helpers for the benchmarks: sizes, quick mode, and the Python baselines.

The baselines are "the obvious Python way" that runstash is measured against, written once
here so that pytest-benchmark suites and compare.py time exactly the same code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

QUICK = os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# Full sizes are those the issues name; quick mode shrinks them so CI only checks nothing rots.
HASH_SIZES = [KIB, MIB, 1 * MIB if QUICK else 256 * MIB]
BIG_FILE = 4 * MIB if QUICK else 1 * GIB


def size_name(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def python_atomic_write(directory: str, data: bytes, *, fsync: bool) -> str:
    """hashlib + a unique temp file + os.replace (+ file and directory fsync when asked)."""
    name = hashlib.sha256(data).hexdigest()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        final = os.path.join(directory, name)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if fsync:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return final


class Payloads:
    """Distinct payloads of one size, so that content-addressed stores never dedup them."""

    def __init__(self, size: int) -> None:
        self.base = bytearray(os.urandom(size))
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        self.base[:8] = self.n.to_bytes(8, "little")
        return bytes(self.base)


def make_file(directory: str, size: int, name: str = "source.bin") -> str:
    path = os.path.join(directory, name)
    chunk = os.urandom(min(size, 8 * MIB))
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return path
