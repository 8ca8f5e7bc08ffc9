"""runstash's ArtifactFacade beside AetherGraph 0.1.0a15's own default store and index.

AetherGraph side: its FSArtifactStore with the SQLite artifact index (what its runtime builds
by default), driven through its ArtifactFacade exactly as a node would. runstash side: the
ArtifactFacade over a Store in "fsync" durability (blob, directory entry and log fsynced before
a write returns: stronger than AetherGraph's unsynced blob files). Same workload, same run,
same calls (the 0.1.0a15 keyword names, which runstash accepts):

  2,000 saves of distinct 1 KiB files with labels and metrics, one at a time, and 2,000 more
  issued 16 at a time with asyncio.gather
  500 writer() artifacts of 64 KiB
  200 best() calls (kind + metric, run scope)
  a reopen (new store + index + facade objects, then one best())
  best() again once the store holds 20,000 artifacts (AetherGraph topped up through its
  index's upsert, runstash through record_many, so the top-up itself is not timed)

    pip install aethergraph==0.1.0a15     # in a scratch venv that also has runstash
    python benches/aethergraph_compare.py            # full workload
    python benches/aethergraph_compare.py --quick    # tiny: a smoke run (skips AetherGraph
                                                       # if it is not installed)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import runstash

R, G, N = "run-1", "graph-1", "node-1"


class Side:
    name: str
    facade: Any
    template: Any = None

    def __init__(self, root: str) -> None:
        self.root = root

    def open(self) -> None:
        raise NotImplementedError

    async def top_up(self, n: int) -> None:
        raise NotImplementedError


class RunstashSide(Side):
    name = "runstash (fsync)"

    def open(self) -> None:
        self.store = runstash.Store(os.path.join(self.root, "store"), durability="fsync")
        self.facade = runstash.ArtifactFacade(self.store, run_id=R, graph_id=G, node_id=N)

    async def top_up(self, n: int) -> None:
        blob = self.store.put_bytes(b"filler")
        rng = random.Random(5)
        items = [
            {
                "kind": "model",
                "labels": {"task": f"t{i % 10}"},
                "metrics": {"acc": rng.random() * 0.9},
                "run_id": R,
                "graph_id": G,
                "node_id": N,
            }
            for i in range(n)
        ]
        for i in range(0, n, 5000):
            self.store.record_many(blob, items[i : i + 5000])


class AetherGraphSide(Side):
    name = "AetherGraph 0.1.0a15 (FS + SQLite)"

    def open(self) -> None:
        from aethergraph.services.artifacts.facade import ArtifactFacade
        from aethergraph.services.scope.scope_factory import ScopeFactory
        from aethergraph.storage.artifacts.artifact_index_sqlite import SqliteArtifactIndex
        from aethergraph.storage.artifacts.fs_cas import FSArtifactStore

        base = os.path.join(self.root, "artifacts")
        self.store = FSArtifactStore(base_dir=base)
        self.index = SqliteArtifactIndex(path=os.path.join(base, "index.sqlite"))
        scope = ScopeFactory().for_memory(
            identity=None, run_id=R, graph_id=G, node_id=N, level="run"
        )
        self.facade = ArtifactFacade(
            run_id=R,
            graph_id=G,
            node_id=N,
            tool_name="bench",
            tool_version="0",
            art_store=self.store,
            art_index=self.index,
            scope=scope,
        )

    async def top_up(self, n: int) -> None:
        import dataclasses

        template = self.template
        rng = random.Random(5)
        for i in range(n):
            a = dataclasses.replace(
                template,
                artifact_id=f"filler{i:08d}",
                kind="model",
                labels={**(template.labels or {}), "task": f"t{i % 10}"},
                metrics={"acc": rng.random() * 0.9},
            )
            await self.index.upsert(a)


async def workload(
    side: Side, work: str, n_saves: int, n_writers: int, n_best: int, top_up_to: int
) -> dict[str, float]:
    src = os.path.join(work, f"src-{side.name[:3]}")
    os.makedirs(src)
    paths = []
    for i in range(n_saves):  # distinct 1 KiB files, made before the clock starts
        p = os.path.join(src, f"f{i}.bin")
        with open(p, "wb") as f:
            f.write(i.to_bytes(8, "little") + os.urandom(1016))
        paths.append(p)
    side.open()
    f = side.facade
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    for i, p in enumerate(paths):
        await f.save(
            p,
            kind="model",
            labels={"task": f"t{i % 10}"},
            metrics={"acc": (i % 997) / 1000, "loss": 1 - (i % 997) / 1000},
        )
    out["save 1 KiB (per op)"] = (time.perf_counter() - t0) / n_saves
    side.template = f.last_artifact  # a saved model record, the pattern for the top-up

    # The same saves again, 16 at a time through asyncio.gather (distinct new files).
    more = []
    for i in range(n_saves):
        p = os.path.join(src, f"g{i}.bin")
        with open(p, "wb") as fh:
            fh.write((n_saves + i).to_bytes(8, "little") + os.urandom(1016))
        more.append(p)
    t0 = time.perf_counter()
    for b in range(0, n_saves, 16):
        await asyncio.gather(
            *(f.save(p, kind="table", labels={"batch": "g"}) for p in more[b : b + 16])
        )
    out["save 1 KiB, 16 concurrent (per op)"] = (time.perf_counter() - t0) / n_saves

    chunk = os.urandom(64 * 1024)
    t0 = time.perf_counter()
    for i in range(n_writers):
        async with f.writer(kind="frame", planned_ext=".bin") as w:
            w.write(i.to_bytes(8, "little") + chunk[8:])
    out["writer 64 KiB (per op)"] = (time.perf_counter() - t0) / n_writers

    async def best() -> Any:
        return await f.best(kind="model", metric="acc", metric_mode="max", level="run")

    out["best, 4.5k artifacts (per call)"] = await per_call(best, n_best)
    want = await best()

    t0 = time.perf_counter()
    side.open()
    got = await best()
    out["reopen + first best"] = time.perf_counter() - t0
    assert got is not None and want is not None
    top = max((i % 997) / 1000 for i in range(n_saves))
    assert got.metrics["acc"] == want.metrics["acc"] == top, (got.metrics, want.metrics)

    await side.top_up(top_up_to - 2 * n_saves - n_writers)
    out["best, 20k artifacts (per call)"] = await per_call(best, max(3, n_best // 10))
    return out


async def per_call(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def fmt(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny workload (CI smoke run)")
    args = ap.parse_args(argv)
    quick = args.quick or os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")
    sizes = (40, 10, 10, 200) if quick else (2000, 500, 200, 20_000)
    warnings.simplefilter("ignore", DeprecationWarning)  # AetherGraph's a15 aliases warn
    sides: list[Side] = []
    work = tempfile.mkdtemp(prefix="runstash-ag-")
    try:
        sides.append(RunstashSide(os.path.join(work, "rs")))
        try:
            import aethergraph  # noqa: F401

            sides.append(AetherGraphSide(os.path.join(work, "ag")))
        except ImportError:
            print("aethergraph is not installed: measuring runstash alone\n")
        results = {s.name: asyncio.run(workload(s, work, *sizes)) for s in sides}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"runstash {runstash.__version__}, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus, {'quick' if quick else 'full'} mode\n"
    )
    names = list(results)
    head = "| operation | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |")
    print(head)
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for op in results[names[0]]:
        cells = [fmt(results[n][op]) for n in names]
        ratio = ""
        if len(names) == 2:
            ratio = f" {results[names[1]][op] / results[names[0]][op]:,.1f}x |"
        print(f"| {op} | " + " | ".join(cells) + " |" + ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
