"""Side-by-side peer comparison: runstash against the obvious Python way, in one run.

Prints a Markdown table of median times and ratios (peer time / runstash time, so > 1 means
runstash is faster) beside each target from the issues. Run with a release build:

    MATURIN_PEP517_ARGS="--profile release" pip install -e '.[test]'
    python benches/compare.py            # full sizes (needs ~3 GiB free in $TMPDIR)
    python benches/compare.py --quick    # tiny sizes, one round: a smoke run for CI

Each pair is measured interleaved (ours, theirs, ours, theirs ...) so that machine noise hits
both sides alike; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import blake3
from _common import GIB, KIB, MIB, Payloads, make_file, python_atomic_write, size_name

import runstash


@dataclass
class Row:
    what: str
    ours: float  # seconds per operation (median)
    peer_name: str
    peer: float
    target: float | None  # minimum ratio peer/ours
    target_text: str

    @property
    def ratio(self) -> float:
        return self.peer / self.ours

    def verdict(self) -> str:
        if self.target is None:
            return "info"
        return "met" if self.ratio >= self.target else "MISSED"


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.1f} µs"


def per_op(fn: Callable[[], object], ops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - t0) / ops


def pair(
    ours: Callable[[], float], theirs: Callable[[], float], rounds: int
) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(ours())
        b.append(theirs())
    return statistics.median(a), statistics.median(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round (CI smoke run)")
    args = ap.parse_args(argv)
    quick = args.quick or os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")

    rounds = 1 if quick else 7
    big_hash = 1 * MIB if quick else 256 * MIB
    big_file = 4 * MIB if quick else 1 * GIB
    small_ops = 20 if quick else 2000
    fsync_ops = 4 if quick else 200
    rows: list[Row] = []
    work = tempfile.mkdtemp(prefix="runstash-compare-")
    try:
        # -- hashing -------------------------------------------------------------------------
        for size, ops in ((KIB, 20000), (MIB, 200), (big_hash, 3)):
            data = os.urandom(size)
            ops = 2 if quick else ops
            ours, b3 = pair(
                lambda d=data, o=ops: per_op(lambda: runstash.hash_bytes(d), o),
                lambda d=data, o=ops: per_op(
                    lambda: blake3.blake3(d, max_threads=blake3.blake3.AUTO).hexdigest(), o
                ),
                rounds,
            )
            big = size == big_hash
            rows.append(
                Row(
                    f"hash {size_name(size)}",
                    ours,
                    "blake3 pkg, threads",
                    b3,
                    0.95 if big else None,
                    ">= 0.95x" if big else "",
                )
            )
            sha = statistics.median(
                per_op(lambda d=data: hashlib.sha256(d).hexdigest(), ops) for _ in range(rounds)
            )
            rows.append(
                Row(
                    f"hash {size_name(size)}",
                    ours,
                    "hashlib.sha256",
                    sha,
                    4.0 if big else None,
                    ">= 4x" if big else "",
                )
            )

        # -- small payloads ------------------------------------------------------------------
        for durability, ops in (("os", small_ops), ("fsync", fsync_ops)):
            for size in (KIB, 64 * KIB):
                sdir = os.path.join(work, f"store-{durability}-{size}")
                pdir = os.path.join(work, f"py-{durability}-{size}")
                os.makedirs(pdir)
                store = runstash.Store(sdir, durability=durability)
                p1, p2 = Payloads(size), Payloads(size)
                fs = durability == "fsync"
                ours, py = pair(
                    lambda s=store, p=p1, o=ops: per_op(lambda: s.put_bytes(p.next()), o),
                    lambda d=pdir, p=p2, o=ops, f=fs: per_op(
                        lambda: python_atomic_write(d, p.next(), fsync=f), o
                    ),
                    rounds,
                )
                target = {("os", KIB): (3.0, ">= 3x"), ("fsync", KIB): (1.0, ">= 1x")}.get(
                    (durability, size), (None, "")
                )
                rows.append(
                    Row(
                        f"store {size_name(size)}, {durability}, sequential",
                        ours,
                        "hashlib+tmp+os.replace",
                        py,
                        *target,
                    )
                )

        # -- 8 concurrent durable writers ----------------------------------------------------
        threads, per_thread = 8, (2 if quick else 40)
        store = runstash.Store(os.path.join(work, "store-8w"), durability="fsync")
        pdir = os.path.join(work, "py-8w")
        os.makedirs(pdir)
        pay_ours = [Payloads(KIB) for _ in range(threads)]
        pay_py = [Payloads(KIB) for _ in range(threads)]

        def run_threads(job: Callable[[int], object]) -> float:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda i: [job(i) for _ in range(per_thread)], range(threads)))
            return (time.perf_counter() - t0) / (threads * per_thread)

        ours, py = pair(
            lambda: run_threads(lambda i: store.put_bytes(pay_ours[i].next())),
            lambda: run_threads(lambda i: python_atomic_write(pdir, pay_py[i].next(), fsync=True)),
            rounds,
        )
        rows.append(
            Row("store 1 KiB, fsync, 8 threads", ours, "same, with fsyncs", py, 2.0, ">= 2x")
        )

        # -- a big file ----------------------------------------------------------------------
        src = make_file(work, big_file)
        dest = os.path.join(work, "copy.bin")

        def save_once() -> float:
            sroot = os.path.join(work, "store-save")
            shutil.rmtree(sroot, ignore_errors=True)
            s = runstash.Store(sroot, durability="os")
            t0 = time.perf_counter()
            s.save(src)
            return time.perf_counter() - t0

        def copy_once() -> float:
            if os.path.exists(dest):
                os.unlink(dest)
            t0 = time.perf_counter()
            shutil.copyfile(src, dest)
            return time.perf_counter() - t0

        ours, cp = pair(save_once, copy_once, 1 if quick else 5)
        rows.append(
            Row(
                f"save {size_name(big_file)} file (hash + copy)",
                ours,
                "shutil.copyfile (no hash)",
                cp,
                1 / 1.3,
                "within 1.3x (>= 0.77x)",
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"runstash {runstash.__version__}, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus, {'quick' if quick else 'full'} mode\n"
    )
    print("| operation | runstash | peer | peer time | ratio (peer/runstash) | target | |")
    print("|---|---:|---|---:|---:|---|---|")
    for r in rows:
        print(
            f"| {r.what} | {fmt_time(r.ours)} | {r.peer_name} | {fmt_time(r.peer)} | "
            f"{r.ratio:.2f}x | {r.target_text} | {r.verdict()} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
