"""The ``runstash`` command (also ``python -m runstash``).

Subcommands so far: ``demo`` (a small simulation loop through the async facade on the embedded
default store, then ranking queries over what it stored) and ``verify`` (re-hash every blob).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence

from .facade import ArtifactFacade
from .store import DEFAULT_ROOT, Store, VerifyReport


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo_async(args))


async def _demo_async(args: argparse.Namespace) -> int:
    """A simulation loop through the async facade: each step stores its state (JSON, with an
    energy metric), a frame (streamed through ``writer``) and, every 50 steps, a CSV table
    (stage + ingest); then it asks the index for the best state and checkpoints."""
    store = Store(args.root, durability=args.durability)
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
        print(f"  checkpoint {a.id} step={a.metrics['step']:.0f} energy={a.metrics['energy']:.4f}")
    print(f"index: {store.count()} artifacts in the store, {store.count(run_id=run_id)} this run")
    report = store.verify()
    assert isinstance(report, VerifyReport)
    print(
        f"verify: {report.checked} blobs checked, {'all intact' if report.ok else 'PROBLEMS FOUND'}"
    )
    return 0 if report.ok else 1


def _verify(args: argparse.Namespace) -> int:
    report = Store(args.root).verify()
    assert isinstance(report, VerifyReport)
    for p in report.corrupt:
        print(f"corrupt: {p}", file=sys.stderr)
    for p in report.stray:
        print(f"stray: {p}", file=sys.stderr)
    print(
        f"{report.checked} blobs checked, {len(report.corrupt)} corrupt, {len(report.stray)} stray"
    )
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``runstash`` command."""
    p = argparse.ArgumentParser(
        prog="runstash", description="An embedded, crash-safe artifact store."
    )
    p.add_argument("--root", default=DEFAULT_ROOT, help="store directory (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a small simulation loop that stores artifacts")
    d.add_argument("--steps", type=int, default=500, help="simulation steps (default: %(default)s)")
    d.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    d.set_defaults(func=_demo)
    v = sub.add_parser("verify", help="re-hash every blob; exit 1 if any is corrupt or stray")
    v.set_defaults(func=_verify)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runstash`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
