"""The ``runstash`` command (also ``python -m runstash``).

Subcommands so far: ``demo`` (a small simulation loop on the embedded default store, then a
ranking query over what it stored) and ``verify`` (re-hash every blob).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence

from .store import DEFAULT_ROOT, Store, VerifyReport


def _demo(args: argparse.Namespace) -> int:
    store = Store(args.root, durability=args.durability)
    print(f"runstash demo: {args.steps} steps into {store.root} (durability={store.durability})")
    run_id = f"demo-{int(time.time())}"
    written = 0
    count = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for step in range(args.steps):
            energy = math.exp(-step / 50.0) * (1.0 + 0.3 * math.sin(step))
            state = {"step": step, "energy": energy, "t": step * 0.01}
            scope = {"run_id": run_id, "labels": {"phase": "warmup" if step < 100 else "main"}}
            a = store.put_bytes(
                json.dumps(state).encode(), kind="state", metrics={"energy": energy}, **scope
            )
            written += a.size
            with store.writer(".bin", kind="frame", **scope) as w:
                for row in range(64):
                    w.write(bytes((step * 31 + row + i) % 256 for i in range(64)))
            assert w.artifact is not None
            written += w.artifact.size
            count += 2
            if step % 50 == 49:
                ckpt = os.path.join(scratch, f"checkpoint-{step}.bin")
                with open(ckpt, "wb") as f:
                    f.write(os.urandom(256 * 1024))
                written += store.save(
                    ckpt, kind="checkpoint", metrics={"energy": energy, "step": step}, **scope
                ).size
                count += 1
    dt = time.perf_counter() - t0
    rate = count / dt
    print(f"stored {count} artifacts ({written / 1e6:.2f} MB) in {dt:.3f} s: {rate:,.0f}/s")
    best = store.best(kind="state", metric="energy", mode="min", run_id=run_id)
    if best is not None:
        print(f"lowest-energy state of run {run_id}: {store.read_bytes(best).decode()}")
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
