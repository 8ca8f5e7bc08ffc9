"""``runstash demo``: a simulation loop through the async facade, on the embedded store."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

from .facade import ArtifactFacade
from .reports import VerifyReport
from .store import DEFAULT_ROOT, Store

__all__ = ["run_demo"]


def run_demo(args: argparse.Namespace) -> int:
    """Runs the demo with the parsed ``runstash demo`` options (``store``, ``durability``,
    ``steps``); the exit code: 0 when the store verifies intact."""
    return asyncio.run(_demo_async(args))


async def _demo_async(args: argparse.Namespace) -> int:
    """A simulation loop through the async facade: each step stores its state (JSON, with an
    energy metric), a frame (streamed through ``writer``) and, every 50 steps, a CSV table
    (stage + ingest); then it asks the index for the best state and checkpoints."""
    store = Store(args.store, durability=args.durability)
    run_id = f"demo-{int(time.time())}"
    arts = ArtifactFacade(store, run_id=run_id, graph_id="sim", node_id="step")
    print(f"runstash demo: {args.steps} steps into {store.root} (durability={store.durability})")
    written = 0
    count = 0
    t0 = time.perf_counter()
    for step in range(args.steps):
        energy = math.exp(-step / 50.0) * (1.0 + 0.3 * math.sin(step))
        phase = {"phase": "warmup" if step < 100 else "main"}
        async with arts.writer(
            kind="state", planned_ext=".json", labels=phase, metrics={"energy": energy}
        ) as w:
            w.write(json.dumps({"step": step, "energy": energy, "t": step * 0.01}).encode())
        async with arts.writer(kind="frame", planned_ext=".bin", labels=phase) as w:
            for row in range(64):
                w.write(bytes((step * 31 + row + i) % 256 for i in range(64)))
        count += 2
        if step % 50 == 49:
            staged = await arts.stage(".csv")
            with open(staged, "w", encoding="utf-8") as f:
                f.write("step,energy\n" + f"{step},{energy}\n")
            await arts.ingest(
                staged, kind="checkpoint", labels=phase, metrics={"energy": energy, "step": step}
            )
            count += 1
        assert arts.last_artifact is not None
        written += arts.last_artifact.size
    dt = time.perf_counter() - t0
    print(f"stored {count} artifacts in {dt:.3f} s: {count / dt:,.0f} artifacts/s")
    best = await arts.best(kind="state", metric="energy", mode="min")
    if best is not None:
        print(f"lowest-energy state of run {run_id}: {await arts.load_artifact(best.uri)}")
    top = store.top_k(3, kind="checkpoint", metric="energy", mode="min", run_id=run_id)
    for a in top:
        print(f"  checkpoint {a.id} step={a.metrics['step']:.0f} energy={a.metrics['energy']:.6g}")
    print(f"index: {store.count()} artifacts in the store, {store.count(run_id=run_id)} this run")
    report = store.verify()
    assert isinstance(report, VerifyReport)
    print(
        f"verify: {report.checked} blobs checked, {'all intact' if report.ok else 'PROBLEMS FOUND'}"
    )
    opt = "" if args.store == DEFAULT_ROOT else f" --store {args.store}"
    print(f"look inside: runstash{opt} ls --kind checkpoint --sort energy --mode min")
    return 0 if report.ok else 1
