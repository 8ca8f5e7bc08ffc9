"""Storing payloads and files: runstash beside the obvious Python way, in the same run.

Python way: hashlib.sha256 + tempfile.mkstemp + write (+ fsync) + os.replace (+ dir fsync),
and shutil.copyfile for whole files.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from _common import BIG_FILE, KIB, QUICK, Payloads, make_file, python_atomic_write, size_name

import runstash

SIZES = [KIB, 64 * KIB]
DURABILITY = ["os", "fsync"]


def _rounds(durability: str) -> dict[str, int]:
    if QUICK:
        return {"rounds": 2, "iterations": 1}
    return {"rounds": 3000 if durability == "os" else 300, "iterations": 1}


@pytest.mark.parametrize("size", SIZES, ids=size_name)
@pytest.mark.parametrize("durability", DURABILITY)
def bench_put_runstash(benchmark, tmp_path, durability: str, size: int) -> None:  # noqa: ANN001
    benchmark.group = f"store {size_name(size)} {durability}"
    store = runstash.Store(tmp_path / "store", durability=durability)
    payloads = Payloads(size)
    benchmark.pedantic(lambda: store.put_bytes(payloads.next()), **_rounds(durability))
    assert store.verify().ok


@pytest.mark.parametrize("size", SIZES, ids=size_name)
@pytest.mark.parametrize("durability", DURABILITY)
def bench_put_python(benchmark, tmp_path, durability: str, size: int) -> None:  # noqa: ANN001
    benchmark.group = f"store {size_name(size)} {durability}"
    directory = str(tmp_path)
    payloads = Payloads(size)
    fsync = durability == "fsync"
    benchmark.pedantic(
        lambda: python_atomic_write(directory, payloads.next(), fsync=fsync),
        **_rounds(durability),
    )


def _concurrent(fn, threads: int = 8, per_thread: int = 8) -> None:  # noqa: ANN001
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: [fn() for _ in range(per_thread)], range(threads)))


def bench_put_8_writers_runstash(benchmark, tmp_path) -> None:  # noqa: ANN001
    benchmark.group = "store 1 KiB fsync, 8 threads x 8 writes"
    store = runstash.Store(tmp_path / "store", durability="fsync")
    payloads = [Payloads(KIB) for _ in range(8)]
    it = iter(range(10**9))

    def one() -> None:
        store.put_bytes(payloads[next(it) % 8].next())

    benchmark.pedantic(lambda: _concurrent(one), rounds=1 if QUICK else 10, iterations=1)


def bench_put_8_writers_python(benchmark, tmp_path) -> None:  # noqa: ANN001
    benchmark.group = "store 1 KiB fsync, 8 threads x 8 writes"
    directory = str(tmp_path)
    payloads = [Payloads(KIB) for _ in range(8)]
    it = iter(range(10**9))

    def one() -> None:
        python_atomic_write(directory, payloads[next(it) % 8].next(), fsync=True)

    benchmark.pedantic(lambda: _concurrent(one), rounds=1 if QUICK else 10, iterations=1)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> str:  # noqa: ANN001
    return make_file(str(tmp_path_factory.mktemp("src")), BIG_FILE)


def bench_save_runstash(benchmark, tmp_path, big_file: str) -> None:  # noqa: ANN001
    benchmark.group = f"save {size_name(BIG_FILE)} file"

    def setup() -> tuple[tuple[runstash.Store], dict[str, object]]:
        shutil.rmtree(tmp_path / "s", ignore_errors=True)  # keep one GiB on disk, not five
        return (runstash.Store(tmp_path / "s", durability="os"),), {}

    def run(store: runstash.Store) -> None:
        store.save(big_file)

    benchmark.pedantic(run, setup=setup, rounds=1 if QUICK else 5)


def bench_save_copyfile(benchmark, tmp_path, big_file: str) -> None:  # noqa: ANN001
    benchmark.group = f"save {size_name(BIG_FILE)} file"
    dest = tmp_path / "copy"

    def setup() -> tuple[tuple[()], dict[str, object]]:
        dest.unlink(missing_ok=True)
        return (), {}

    benchmark.pedantic(
        lambda: shutil.copyfile(big_file, dest), setup=setup, rounds=1 if QUICK else 5
    )
