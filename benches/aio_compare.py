"""The facade's thread hop, side by side: ``loop.run_in_executor`` against runstash's own
awaitables (``_core.run_async``: any call on runstash's Rust thread pool; ``save_async``: the
whole save made in Rust), in one run.

Two figures, each measured in interleaved rounds (executor, Rust, executor, Rust ...) and
reported as the median:

- per-call overhead: one awaited hop of a call that does nothing, in µs;
- 64-way concurrent small saves: 64 tasks each saving a 1 KiB file in turn, saves per second
  through ``Store.save`` on the hop, on a local store in ``"os"`` durability.

Run with a release build:

    MATURIN_PEP517_ARGS="--profile release" pip install -e '.[test]'
    python benches/aio_compare.py           # full: 20 000 hops, 64 x 100 saves, 5 rounds
    python benches/aio_compare.py --quick   # a smoke run for CI
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import runstash
from runstash import _core
from runstash.args import _meta

Hop = Callable[[asyncio.AbstractEventLoop, Callable[..., object]], Awaitable[object]]


def executor_hop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object]) -> Awaitable[object]:
    return loop.run_in_executor(None, fn)


def rust_hop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object]) -> Awaitable[object]:
    return _core.run_async(loop, fn)


async def hops(hop: Hop, n: int) -> float:
    """Seconds per awaited hop of a call that does nothing."""
    loop = asyncio.get_running_loop()
    nothing = lambda: None  # noqa: E731
    for _ in range(50):  # warm the pool's threads
        await hop(loop, nothing)
    t = time.perf_counter()
    for _ in range(n):
        await hop(loop, nothing)
    return (time.perf_counter() - t) / n


async def saves(store: runstash.Store, files: list[str], per_task: int, how: str) -> float:
    """Saves per second: 64 tasks, each saving its files one after another."""
    loop = asyncio.get_running_loop()
    meta = _meta("bench", None, None, "r", None, None, None, False, None)

    def one(path: str) -> Awaitable[object]:
        if how == "executor":
            return loop.run_in_executor(None, functools.partial(store.save, path, run_id="r"))
        if how == "run_async":
            return _core.run_async(loop, functools.partial(store.save, path, run_id="r"))
        return store._core.save_async(loop, path, meta)

    async def task(i: int) -> None:
        for j in range(per_task):
            await one(files[(i * per_task + j) % len(files)])

    t = time.perf_counter()
    await asyncio.gather(*(task(i) for i in range(64)))
    return 64 * per_task / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny counts, one round (CI smoke)")
    args = ap.parse_args(argv)
    quick = args.quick or os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")
    n_hops, per_task, rounds = (200, 2, 1) if quick else (20_000, 100, 5)

    with tempfile.TemporaryDirectory(prefix="runstash-aio-") as tmp:
        files = []
        for i in range(256):
            p = os.path.join(tmp, f"in{i}.bin")
            with open(p, "wb") as f:
                f.write(i.to_bytes(4, "little") * 256)
            files.append(p)
        store = runstash.Store(os.path.join(tmp, "store"), durability="os")
        hop_us: dict[str, list[float]] = {"executor": [], "run_async": []}
        rate: dict[str, list[float]] = {"executor": [], "run_async": [], "save_async": []}
        for _ in range(rounds):
            hop_us["executor"].append(asyncio.run(hops(executor_hop, n_hops)) * 1e6)
            hop_us["run_async"].append(asyncio.run(hops(rust_hop, n_hops)) * 1e6)
            for how in rate:
                rate[how].append(asyncio.run(saves(store, files, per_task, how)))
        store.close()

    med = statistics.median
    ex_hop, ex_rate = med(hop_us["executor"]), med(rate["executor"])
    print("| hop | per-call overhead | 64-way small saves |")
    print("|---|---:|---:|")
    print(f"| `loop.run_in_executor` (today) | {ex_hop:.1f} µs | {ex_rate:,.0f}/s |")
    print(
        f"| `_core.run_async` (Rust pool) | {med(hop_us['run_async']):.1f} µs "
        f"({ex_hop / med(hop_us['run_async']):.2f}x) | {med(rate['run_async']):,.0f}/s "
        f"({med(rate['run_async']) / ex_rate:.2f}x) |"
    )
    print(
        f"| `CoreStore.save_async` (all in Rust) | - | {med(rate['save_async']):,.0f}/s "
        f"({med(rate['save_async']) / ex_rate:.2f}x) |"
    )
    print(f"\n({rounds} rounds, median; {n_hops} hops, 64 x {per_task} saves per round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
