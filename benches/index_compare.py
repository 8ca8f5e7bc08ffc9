"""Index benchmark: 1,000,000 records in memory, ranked queries beside a plain-Python list scan.

    MATURIN_PEP517_ARGS="--profile release" pip install -e '.[test]'
    python benches/index_compare.py            # 1,000,000 records
    python benches/index_compare.py --quick    # 20,000 records: a smoke run for CI

Records: 10 kinds, 3 label keys of 10 values each, 2 metrics (one of them missing on a tenth
of the records), 100 run ids, all pointing at one stored blob (one record per write, bytes
deduplicated), built through the bulk path `Store.record_many`. Query latencies are the
median (p50) and p99 of individually timed calls, Python call included. Reopening and its
memory are measured in a fresh process: resident memory after opening minus before.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import runstash

KINDS = [f"kind{i}" for i in range(10)]
VALUES = [f"v{i}" for i in range(10)]


def make_items(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        metrics = {"loss": rng.random()}
        if i % 10:
            metrics["acc"] = round(rng.random(), 4)  # rounded: ties happen
        items.append(
            {
                "kind": KINDS[rng.randrange(10)],
                "labels": {
                    "task": VALUES[rng.randrange(10)],
                    "model": VALUES[rng.randrange(10)],
                    "split": VALUES[rng.randrange(10)],
                },
                "metrics": metrics,
                "run_id": f"run{rng.randrange(100)}",
            }
        )
    return items


def timed(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


REOPEN = r"""
import json, os, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import runstash
before = rss()
t0 = time.perf_counter()
s = runstash.Store(sys.argv[1], durability="os")
n = s.count()
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rss": rss() - before, "records": n}))
"""


def python_best(rows: list[dict], kind: str, task: str) -> dict | None:
    best = None
    for r in rows:
        if r["kind"] == kind and r["labels"].get("task") == task and "acc" in r["metrics"]:
            if best is None or r["metrics"]["acc"] > best["metrics"]["acc"]:
                best = r
    return best


def python_search(rows: list[dict], kind: str, k: int) -> list[dict]:
    hits = [r for r in rows if r["kind"] == kind and "acc" in r["metrics"]]
    hits.sort(key=lambda r: -r["metrics"]["acc"])
    return hits[:k]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 records (CI smoke run)")
    ap.add_argument("--records", type=int, default=None)
    args = ap.parse_args(argv)
    quick = args.quick or os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")
    n = args.records or (20_000 if quick else 1_000_000)
    calls = 200 if quick else 2000
    work = tempfile.mkdtemp(prefix="runstash-index-")
    try:
        root = os.path.join(work, "store")
        store = runstash.Store(root, durability="os")
        blob = store.put_bytes(b"shared payload")
        items = make_items(n)
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):
            store.record_many(blob, items[i : i + 10_000])
        build = time.perf_counter() - t0
        assert store.count() == n + 1

        rng = random.Random(2)
        queries = [(KINDS[rng.randrange(10)], VALUES[rng.randrange(10)]) for _ in range(64)]
        qi = iter(range(10**9))

        def best() -> object:
            kind, task = queries[next(qi) % 64]
            return store.best(kind=kind, labels={"task": task}, metric="acc", mode="max")

        def search() -> object:
            kind, _ = queries[next(qi) % 64]
            return store.search(kind=kind, metric="acc", mode="max", limit=100)

        def count() -> object:
            kind, task = queries[next(qi) % 64]
            return store.count(kind=kind, labels={"task": task})

        best_p50, best_p99 = timed(best, calls)
        search_p50, search_p99 = timed(search, calls)
        count_p50, count_p99 = timed(count, calls)

        # The same answers by a plain-Python scan over a list of dicts, checked to agree.
        rows = items
        kind, task = queries[0]
        want = store.best(kind=kind, labels={"task": task}, metric="acc", mode="max")
        got = python_best(rows, kind, task)
        assert want is not None and got is not None
        assert want.metrics["acc"] == got["metrics"]["acc"]
        scan_calls = 5 if not quick else 20
        py_best_p50, _ = timed(lambda: python_best(rows, *queries[next(qi) % 64]), scan_calls)
        py_search_p50, _ = timed(
            lambda: python_search(rows, queries[next(qi) % 64][0], 100), scan_calls
        )

        t0 = time.perf_counter()
        store.compact()
        compact = time.perf_counter() - t0
        store.close()
        out = subprocess.run(
            [sys.executable, "-c", REOPEN, root], check=True, capture_output=True, text=True
        )
        reopen = json.loads(out.stdout)
        assert reopen["records"] == n + 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_rec = reopen["rss"] / n
    print(
        f"runstash {runstash.__version__}, {n:,} records, {os.cpu_count()} cpus, "
        f"{'quick' if quick else 'full'} mode"
    )
    print(f"bulk build {build:.2f} s ({n / build:,.0f} records/s), compaction {compact:.2f} s\n")
    print("| measure | runstash | plain-Python list scan | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| best, kind + label filter (p50 / p99) | {best_p50:.1f} / {best_p99:.1f} µs | "
        f"{py_best_p50 / 1e3:.1f} ms | {py_best_p50 / best_p50:,.0f}x | p50 < 10 µs |"
    )
    print(
        f"| search, 100 ranked (p50 / p99) | {search_p50:.1f} / {search_p99:.1f} µs | "
        f"{py_search_p50 / 1e3:.1f} ms | {py_search_p50 / search_p50:,.0f}x | < 100 µs |"
    )
    print(f"| count, kind + label (p50 / p99) | {count_p50:.1f} / {count_p99:.1f} µs | | | |")
    print(f"| reopen from disk | {reopen['seconds']:.2f} s | | | < 1.5 s |")
    print(f"| index memory per record | {per_rec:.0f} B | | | < 400 B |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
