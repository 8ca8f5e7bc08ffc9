"""Reopen time of one index, A/B: two builds of runstash open the same million-record store
in turn, in fresh processes, alternating which goes first; prints each build's median.

    python benches/reopen_ab.py PKG_A PKG_B [--rounds 12] [--store DIR]

PKG_A and PKG_B are directories holding an unpacked release wheel each (``python -m zipfile
-e runstash-*.whl PKG``). The store is built once with PKG_B (records as in
``benches/index_compare.py``, through ``record_many``, then compacted) and reused when
``--store`` names an existing one. Reopening is the noisiest index figure on a shared VM, so
one run of ``index_compare.py`` per build says little; this says whether a difference holds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from index_compare import REOPEN

BUILD = r"""
import random, sys
import runstash
s = runstash.Store(sys.argv[1], durability="os")
blob = s.put_bytes(b"x", kind="k")
rng = random.Random(1)
for start in range(0, 1_000_000, 10_000):
    s.record_many(blob, [
        {"kind": f"kind{i % 10}", "run_id": f"r{i % 100}",
         "labels": {k: f"v{rng.randrange(10)}" for k in "abc"},
         "metrics": {"m": rng.random(), "n": rng.random()}}
        for i in range(start, start + 10_000)
    ])
s.compact()
"""


def _run(pkg: str, code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": pkg}
    return subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="directory with build A unpacked")
    ap.add_argument("b", help="directory with build B unpacked")
    ap.add_argument("--rounds", type=int, default=12, help="reopens per build")
    ap.add_argument("--store", help="a store to reuse (built here when missing)")
    args = ap.parse_args()
    root = args.store or os.path.join(tempfile.mkdtemp(prefix="runstash-ab-"), "store")
    if not os.path.exists(root):
        _run(args.b, BUILD, root)
    times: dict[str, list[float]] = {args.a: [], args.b: []}
    for r in range(args.rounds):
        for pkg in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
            times[pkg].append(json.loads(_run(pkg, REOPEN, root))["seconds"])
    for pkg, xs in times.items():
        runs = " ".join(f"{x:.2f}" for x in xs)
        print(f"{pkg}: median {statistics.median(xs):.2f} s over {len(xs)} reopens ({runs})")


if __name__ == "__main__":
    main()
