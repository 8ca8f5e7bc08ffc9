"""Helpers shared by the fault tests: a byte-exact picture of a directory tree."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

Entry = tuple[str, int, str]  # (type, size, sha256 of the bytes or the link target)


def tree(root: str | Path) -> dict[str, Entry]:
    """Every entry under ``root`` (not following symlinks): its type, size and content hash,
    keyed by path relative to ``root``. Two equal pictures mean nothing was created, removed,
    resized or rewritten (timestamps are left out on purpose)."""
    root = Path(root)
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, "")
            else:
                out[rel] = ("file", st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def tree_diff(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """Human-readable differences between two :func:`tree` pictures (empty when equal)."""
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(f"{k}: {before.get(k)} -> {after.get(k)}")
    return out
