"""Buffers of any format are stored as their raw bytes (issue 12, point 8): numpy arrays of any
dtype, memoryviews of any format, pyarrow buffers, through put_bytes, the writer and the
module functions; a non-contiguous view is refused with a hint, a non-buffer with TypeError."""

from __future__ import annotations

import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import runstash

pytestmark = pytest.mark.both_backends

ARRAYS = {
    "float64": np.arange(10.0),
    "int8": np.arange(-5, 5, dtype=np.int8),
    "uint16-2d": np.arange(12, dtype=np.uint16).reshape(3, 4),
    "complex": np.array([1 + 2j, 3 - 4j]),
    "bool": np.array([True, False, True]),
    "empty-f32": np.zeros(0, dtype=np.float32),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_numpy_array_of_any_dtype_is_stored_as_its_bytes(store: runstash.Store, name: str) -> None:
    arr = ARRAYS[name]
    a = store.put_bytes(arr, kind="array", labels={"dtype": str(arr.dtype)})
    assert a.size == arr.nbytes
    assert store.read_bytes(a) == arr.tobytes()
    assert a.hash == runstash.hash_bytes(arr.tobytes(), store.hash_algo)


def test_memoryviews_of_any_format_and_arrow_buffers(store: runstash.Store) -> None:
    floats = np.linspace(0, 1, 7)
    cases = [
        memoryview(floats),
        memoryview(array.array("i", [1, -2, 3])),
        memoryview(floats).cast("B"),
        pa.py_buffer(b"arrow bytes"),
        np.asfortranarray(np.arange(4.0)),  # 1-D: C- and Fortran-contiguous at once
    ]
    for data in cases:
        a = store.put_bytes(data)
        assert store.read_bytes(a) == bytes(memoryview(data).cast("B"))


def test_module_functions_take_typed_buffers(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.int32)
    assert runstash.hash_bytes(arr) == runstash.hash_bytes(arr.tobytes())
    target = tmp_path / "out.bin"
    runstash.write_atomic(target, arr)
    assert target.read_bytes() == arr.tobytes()


def test_writer_takes_typed_buffers(store: runstash.Store) -> None:
    arr = np.arange(8, dtype=np.float32)
    with store.writer(".bin") as w:
        w.write(arr)
        w.write(memoryview(np.arange(3, dtype=np.int64)))
    a = w.artifact
    assert a is not None
    assert store.read_bytes(a) == arr.tobytes() + np.arange(3, dtype=np.int64).tobytes()


def test_strided_view_is_refused_with_a_hint(store: runstash.Store) -> None:
    strided = np.arange(10.0)[::2]
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    before = store.count()
    for data in (strided, memoryview(strided), fortran):
        with pytest.raises(ValueError, match=r"numpy\.ascontiguousarray"):
            store.put_bytes(data)
    with pytest.raises(ValueError, match=r"numpy\.ascontiguousarray"):
        runstash.hash_bytes(strided)
    assert store.count() == before, "nothing is recorded for a refused buffer"
    a = store.put_bytes(np.ascontiguousarray(strided))
    assert store.read_bytes(a) == strided.tobytes()


def test_non_buffer_is_a_type_error(store: runstash.Store) -> None:
    for bad in ("text", 12, None, [1, 2]):
        with pytest.raises(TypeError, match="buffer protocol"):
            store.put_bytes(bad)  # type: ignore[arg-type]
