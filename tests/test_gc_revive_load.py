"""Load at the default grace: writers that delete and later write the same bytes again
(reviving them, via put_bytes and ingest), pin, and read through path_of and open, beside a
process looping ``gc(dry_run=False)`` and one looping ``keep_best(dry_run=False)``, both with
the default grace (issue 10, item 2).

Nothing gc deletes here is a fresh blob (the grace is 15 minutes): what it does is compact the
index whenever deleted records left packed bytes behind, and that removes log segments under
the writers. Before the fix a writer that had seen packed bytes in a segment another process
then compacted away kept believing they were there: writing those bytes again (ingest, or a
record of them) was acknowledged without storing them, and reads of live records failed with
NotFoundError. Every read of a live acknowledged record must succeed, during the run and at
the end, from a fresh handle, and the store must verify intact.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import runstash
from tests.conftest import spawn_python

WRITERS = 3
ROUNDS = int(os.environ.get("RUNSTASH_REVIVE_ROUNDS", "1500"))

WRITER = r"""
import json, random, sys
from pathlib import Path
import runstash
root, w, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(7000 + w)
shared = random.Random(99)  # the same pool in every writer: writers revive each other's bytes
pool = [b"small %d " % k * (k + 1) for k in range(24)] + [
    shared.randbytes(70_000 + k) for k in range(6)  # over pack_max: blob files
]
s = runstash.Store(root, durability="os")
live, pinned, failures = {}, set(), []

def check(id_, h):
    try:
        how = rng.random()
        if how < 0.3:
            data = Path(s.path_of(h)).read_bytes()
        elif how < 0.6:
            with s.open(h) as f:
                data = f.read()
        else:
            data = s.read_bytes(h, verify=True)
    except runstash.RunstashError as e:
        failures.append(f"read of live {id_}: {type(e).__name__}: {e}")
        return
    if runstash.hash_bytes(data) != h:
        failures.append(f"read of live {id_}: wrong bytes")

for i in range(n):
    data = rng.choice(pool)
    r = rng.random()
    if r < 0.35:
        a = s.put_bytes(data, kind="k", labels={"w": w})
    elif r < 0.55:
        staged = s.stage(".bin")
        Path(staged).write_bytes(data)
        a = s.ingest(staged, kind="k", labels={"w": w})
    elif r < 0.62:
        # A record of bytes this writer saw stored: refused (NotFoundError) if they are not.
        try:
            a = s.record_many(runstash.hash_bytes(data), [{"kind": "k"}])[0]
        except runstash.NotFoundError:
            a = None
    elif r < 0.64:
        s.compact()
        a = None
    elif r < 0.72:
        a = s.put_bytes(data, kind="scored", metrics={"score": rng.random()})
        if rng.random() < 0.3:
            try:
                pinned.add(s.pin(a).id)
                live[a.id] = a.hash
            except runstash.NotFoundError:
                pass  # keep-best pruned it first: allowed
        continue
    else:
        a = None
    if a is not None:
        live[a.id] = a.hash
    if live and rng.random() < 0.4:
        victim = rng.choice(sorted(live))
        if victim not in pinned:
            s.delete(victim)
            del live[victim]
    if live:
        victim = rng.choice(sorted(live))
        check(victim, live[victim])
with open(out, "w") as f:
    json.dump({"live": live, "pinned": sorted(pinned), "failures": failures}, f)
"""

LOOP = r"""
import os, sys
import runstash
root, stop, what = sys.argv[1], sys.argv[2], sys.argv[3]
s = runstash.Store(root, durability="os")
passes = 0
while not os.path.exists(stop) or passes < 2:
    if what == "gc":
        s.gc(dry_run=False)
    else:
        s.keep_best(kind="scored", metric="score", mode="max", k=3, dry_run=False)
    passes += 1
print(passes)
"""


def _finish(p: subprocess.Popen[bytes], what: str) -> str:
    out, err = p.communicate(timeout=600)  # the watchdog: a hang fails, it never blocks CI
    assert p.returncode == 0, f"{what} failed: {err.decode()[-3000:]}"
    return out.decode()


@pytest.mark.slow
def test_writers_revive_bytes_beside_gc_and_keep_best_at_default_grace(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    stop = tmp_path / "stop"
    loops = [spawn_python(LOOP, str(root), str(stop), what) for what in ("gc", "keep")]
    outs = [tmp_path / f"writer{w}.json" for w in range(WRITERS)]
    writers = [
        spawn_python(WRITER, str(root), str(w), str(ROUNDS), str(outs[w])) for w in range(WRITERS)
    ]
    try:
        for w, p in enumerate(writers):
            _finish(p, f"writer {w}")
    finally:
        stop.touch()
        passes = [int(_finish(p, "loop")) for p in loops]
        for p in writers + loops:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert min(passes) >= 2, passes

    states = [json.loads(o.read_text()) for o in outs]
    failures = [f for st in states for f in st["failures"]]
    assert not failures, f"{len(failures)} reads of live records failed: {failures[:5]}"
    with runstash.Store(root, durability="os") as fresh:
        for st in states:
            for id_, h in st["live"].items():
                a = fresh.get(id_)
                assert a is not None, f"live record {id_} vanished"
                assert a.hash == h
                assert fresh.read_bytes(a, verify=True) is not None
            for id_ in st["pinned"]:
                a = fresh.get(id_)
                assert a is not None and a.pinned
        fresh.compact()
    with runstash.Store(root, durability="os") as again:
        report = again.verify_report()
        assert report.intact, report
        for st in states:
            for id_ in st["live"]:
                a = again.get(id_)
                assert a is not None
                again.read_bytes(a, verify=True)
