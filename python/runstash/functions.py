"""runstash's module functions: hashing and atomic writes, without a store."""

from __future__ import annotations

from . import _core
from .args import Buffer, PathArg

__all__ = ["hash_bytes", "hash_file", "write_atomic"]


def hash_bytes(data: Buffer, algo: str = "blake3") -> str:
    """The ``"<algo>:<hex>"`` digest of a buffer (GIL released; large inputs use all cores)."""
    return _core.hash_bytes(data, algo)


def hash_file(path: PathArg, algo: str = "blake3") -> str:
    """The ``"<algo>:<hex>"`` digest of a file (memory-mapped, all cores for large files)."""
    return _core.hash_file(path, algo)


def write_atomic(path: PathArg, data: Buffer, durability: str = "fsync") -> None:
    """Replace the file at ``path`` atomically: readers see the old or the new bytes, never a
    mix. With ``durability="fsync"`` the file and its directory are fsynced."""
    _core.write_atomic(path, data, durability)
