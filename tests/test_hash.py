"""Hashes equal the reference implementations (hashlib, the blake3 package) on random inputs,
and streaming in any chunking equals one-shot."""

from __future__ import annotations

import hashlib
import random

import blake3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import runstash

MiB = 1 << 20

# Sizes from 0 B to 64 MiB, biased towards the small end and the chunk boundaries of BLAKE3
# (1 KiB chunks) and of runstash's parallel path (1 MiB).
sizes = st.one_of(
    st.integers(0, 4096),
    st.sampled_from([1023, 1024, 1025, MiB - 1, MiB, MiB + 1, 64 * MiB]),
    st.integers(0, 64 * MiB),
)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=sizes, seed=st.integers(0, 2**32))
@example(size=0, seed=0)
@example(size=64 * MiB, seed=1)
@example(size=33 * MiB + 123, seed=2)
def test_hash_bytes_matches_references(size: int, seed: int) -> None:
    data = payload(size, seed)
    assert runstash.hash_bytes(data) == "blake3:" + blake3.blake3(data).hexdigest()
    assert runstash.hash_bytes(data, "sha256") == "sha256:" + hashlib.sha256(data).hexdigest()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=sizes, seed=st.integers(0, 2**32))
@example(size=0, seed=0)
@example(size=64 * MiB, seed=3)
@example(size=5 * MiB + 1, seed=4)
def test_hash_file_matches_references(
    tmp_path_factory: pytest.TempPathFactory, size: int, seed: int
) -> None:
    data = payload(size, seed)
    path = tmp_path_factory.mktemp("h") / "f.bin"
    path.write_bytes(data)
    assert runstash.hash_file(path) == "blake3:" + blake3.blake3(data).hexdigest()
    assert runstash.hash_file(path, "sha256") == "sha256:" + hashlib.sha256(data).hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(st.integers(0, 20_000), st.integers(0, 8 * MiB)),
    seed=st.integers(0, 2**32),
    algo=st.sampled_from(["blake3", "sha256"]),
    data=st.data(),
)
def test_streaming_in_random_chunks_equals_one_shot(
    tmp_path_factory: pytest.TempPathFactory, size: int, seed: int, algo: str, data: st.DataObject
) -> None:
    body = payload(size, seed)
    store = runstash.Store(tmp_path_factory.mktemp("s") / "store", hash=algo, durability="os")
    with store.writer() as w:
        pos = 0
        while pos < size:
            n = data.draw(st.integers(1, max(1, size // 3 + 1)), label="chunk")
            w.write(body[pos : pos + n])
            pos += n
    assert w.artifact is not None
    assert w.artifact.hash == runstash.hash_bytes(body, algo)
    assert w.artifact.size == size
    assert store.read_bytes(w.artifact) == body


def test_memoryview_and_bytearray_inputs() -> None:
    data = bytearray(b"abc" * 1000)
    expect = "blake3:" + blake3.blake3(bytes(data)).hexdigest()
    assert runstash.hash_bytes(data) == expect
    assert runstash.hash_bytes(memoryview(data)) == expect


def test_bad_algorithm_is_a_clear_error() -> None:
    with pytest.raises(runstash.InvalidArgumentError, match="md5"):
        runstash.hash_bytes(b"x", "md5")
