"""Index queries under pytest-benchmark, beside a plain-Python scan of the same records.

The headline 1,000,000-record numbers come from index_compare.py; this suite keeps the same
queries measured at a size pytest-benchmark can repeat many times (100,000 records, or 5,000
in quick mode).
"""

from __future__ import annotations

import pytest
from _common import QUICK
from index_compare import make_items, python_best, python_search

import runstash

N = 5_000 if QUICK else 100_000


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[runstash.Store, list[dict]]:  # noqa: ANN001
    store = runstash.Store(tmp_path_factory.mktemp("idx") / "s", durability="os")
    blob = store.put_bytes(b"x")
    items = make_items(N)
    for i in range(0, N, 10_000):
        store.record_many(blob, items[i : i + 10_000])
    return store, items


def _rounds() -> dict[str, int]:
    return {"rounds": 3 if QUICK else 2000, "iterations": 1}


def bench_best_runstash(benchmark, loaded) -> None:  # noqa: ANN001
    benchmark.group = "best, kind + label filter"
    store, items = loaded
    got = benchmark.pedantic(
        lambda: store.best(kind="kind3", labels={"task": "v4"}, metric="acc"), **_rounds()
    )
    assert got.metrics["acc"] == python_best(items, "kind3", "v4")["metrics"]["acc"]


def bench_best_python_scan(benchmark, loaded) -> None:  # noqa: ANN001
    benchmark.group = "best, kind + label filter"
    _, items = loaded
    benchmark.pedantic(lambda: python_best(items, "kind3", "v4"), rounds=3 if QUICK else 10)


def bench_search100_runstash(benchmark, loaded) -> None:  # noqa: ANN001
    benchmark.group = "search, 100 ranked"
    store, items = loaded
    got = benchmark.pedantic(
        lambda: store.search(kind="kind3", metric="acc", limit=100), **_rounds()
    )
    want = python_search(items, "kind3", 100)
    assert [a.metrics["acc"] for a in got] == [r["metrics"]["acc"] for r in want]


def bench_search100_python_scan(benchmark, loaded) -> None:  # noqa: ANN001
    benchmark.group = "search, 100 ranked"
    _, items = loaded
    benchmark.pedantic(lambda: python_search(items, "kind3", 100), rounds=3 if QUICK else 10)
