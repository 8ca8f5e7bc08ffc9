"""Hashing: runstash beside the blake3 package (threads on) and hashlib, same inputs, same run."""

from __future__ import annotations

import hashlib
import os

import blake3
import pytest
from _common import HASH_SIZES, QUICK, size_name

import runstash

_DATA = {n: os.urandom(n) for n in HASH_SIZES}


def _rounds(n: int) -> dict[str, int]:
    if QUICK:
        return {"rounds": 1, "iterations": 1}
    if n >= 64 * 1024 * 1024:
        return {"rounds": 10, "iterations": 1}
    return {"rounds": 200 if n >= 1024 * 1024 else 20000, "iterations": 1}


IMPLS = {
    "runstash-blake3": lambda b: runstash.hash_bytes(b),
    "blake3-pkg-threads": lambda b: blake3.blake3(b, max_threads=blake3.blake3.AUTO).hexdigest(),
    "runstash-sha256": lambda b: runstash.hash_bytes(b, algo="sha256"),
    "hashlib-sha256": lambda b: hashlib.sha256(b).hexdigest(),
}


@pytest.mark.parametrize("size", HASH_SIZES, ids=size_name)
@pytest.mark.parametrize("impl", list(IMPLS))
def bench_hash_bytes(benchmark, impl: str, size: int) -> None:  # noqa: ANN001
    benchmark.group = f"hash {size_name(size)}"
    data = _DATA[size]
    fn = IMPLS[impl]
    out = benchmark.pedantic(fn, args=(data,), **_rounds(size))
    assert out.split(":")[-1] in (
        blake3.blake3(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )
