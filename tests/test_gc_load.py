"""Load: many writer processes, random pins and deletes, with gc and keep-best running beside
them; nothing pinned or live is ever lost and a final verify is clean.

- 8 writer processes each store WRITES payloads: mostly 20 KiB of random bytes (each its own
  blob file: the writers open the store with pack_max=4096, so only the tiny ones are packed
  into the index log),
  some tiny ones and some 20 KiB ones from pools shared by every writer (dedup across
  processes, and writes that land on a blob gc may be deleting right then). After writes
  they pin and delete their own records at random; a tenth of the records are "scored"
  models, some pinned at once.
- Beside them a gc process loops with no grace period (every unreferenced blob is fair
  game at once), and a keep-best process loops pruning the scored models to the top 5 (it
  gc's too).
- At the end: every record a writer left live is in the index with the bytes it wrote
  (re-hashed); every pinned record is there, scored ones included, however keep-best ran;
  a last gc leaves no orphans and verify_report is clean.

Writers check, under the index lock, that their blob still exists before they append their
record, and publish it again if a gc removed it (Store::record, the writer's half of the gc
protocol in rust/core/src/gc.rs): without that check this test loses records.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import runstash
from tests.conftest import spawn_python

WRITERS = 8
# 10,000 per writer (80,000 in all, as issue 5 asks): about 45 s on a 2-vCPU VM, debug build
# (the tiny payloads are packed into the index log, which made it twice as fast as before).
WRITES = int(os.environ.get("RUNSTASH_LOAD_WRITES", "10000"))

WRITER = r"""
import json, os, random, sys
import runstash
root, w, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(1000 + w)
shared = random.Random(42)  # the same pools in every writer
tiny_pool = [b"tiny %d" % k for k in range(16)]
dup_pool = [shared.randbytes(20 * 1024) for _ in range(8)]
s = runstash.Store(root, durability="os", pack_max=4096)
live, pinned, deleted, order = {}, set(), set(), []
scored_pinned, scored_lost_before_pin = {}, 0
for i in range(n):
    r = rng.random()
    if r < 0.75:
        data = os.urandom(20 * 1024)
    elif r < 0.90:
        data = rng.choice(tiny_pool)
    else:
        data = rng.choice(dup_pool)
    if rng.random() < 0.1:
        a = s.put_bytes(data, kind="scored", labels={"w": w}, metrics={"score": rng.random()})
        if rng.random() < 0.3:
            try:
                s.pin(a.id)
                scored_pinned[a.id] = a.hash
            except runstash.NotFoundError:
                scored_lost_before_pin += 1  # keep-best pruned it first: allowed
        continue
    a = s.put_bytes(data, kind="load", labels={"w": w, "i": i})
    live[a.id] = a.hash
    order.append(a.id)
    x = rng.random()
    victim = rng.choice(order)
    if x < 0.08 and victim not in deleted:
        s.pin(victim)
        pinned.add(victim)
    elif x < 0.20 and victim not in deleted and victim not in pinned:
        s.delete(victim)
        deleted.add(victim)
        del live[victim]
with open(out, "w") as f:
    json.dump({"live": live, "pinned": sorted(pinned), "scored_pinned": scored_pinned,
               "scored_lost_before_pin": scored_lost_before_pin}, f)
"""

GC_LOOP = r"""
import json, os, sys
import runstash
root, stop, log = sys.argv[1], sys.argv[2], sys.argv[3]
s = runstash.Store(root, durability="os")
passes = deleted = revived = 0
with open(log, "w") as f:
    while not os.path.exists(stop):
        r = s.gc(dry_run=False, grace=0)
        passes += 1
        deleted += r.deleted_count
        revived += r.revived
        for h in r.deleted:
            f.write(h + "\n")
print(json.dumps({"passes": passes, "deleted": deleted, "revived": revived}))
"""

KEEP_LOOP = r"""
import json, os, sys
import runstash
root, stop, log = sys.argv[1], sys.argv[2], sys.argv[3]
s = runstash.Store(root, durability="os")
passes = deleted = 0
with open(log, "w") as f:
    while not os.path.exists(stop):
        r = s.keep_best(kind="scored", metric="score", mode="max", k=5, dry_run=False, grace=0)
        passes += 1
        deleted += len(r.deleted)
        for h in r.gc.deleted:
            f.write(h + "\n")
print(json.dumps({"passes": passes, "deleted": deleted}))
"""


def finish(p: subprocess.Popen[bytes], what: str) -> str:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, f"{what} failed: {err.decode()[-3000:]}"
    return out.decode()


@pytest.mark.slow
def test_writers_pins_deletes_gc_and_keep_best_at_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    stop = tmp_path / "stop"
    loops = [
        spawn_python(GC_LOOP, str(root), str(stop), str(tmp_path / "gc.log")),
        spawn_python(KEEP_LOOP, str(root), str(stop), str(tmp_path / "keep.log")),
    ]
    outs = [tmp_path / f"writer{w}.json" for w in range(WRITERS)]
    writers = [
        spawn_python(WRITER, str(root), str(w), str(WRITES), str(outs[w])) for w in range(WRITERS)
    ]
    try:
        for w, p in enumerate(writers):
            finish(p, f"writer {w}")
    finally:
        stop.touch()
        gc_stats = json.loads(finish(loops[0], "gc loop"))
        keep_stats = json.loads(finish(loops[1], "keep-best loop"))
        for p in writers:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert gc_stats["passes"] >= 2 and keep_stats["passes"] >= 2, (gc_stats, keep_stats)
    states = [json.loads(o.read_text()) for o in outs]
    store = runstash.Store(root, durability="os")
    gc_deleted = set((tmp_path / "gc.log").read_text().split())
    gc_deleted |= set((tmp_path / "keep.log").read_text().split())

    lost: list[str] = []  # blobs of live or pinned records that are gone
    for st in states:
        for id_, h in {**st["live"], **st["scored_pinned"]}.items():
            a = store.get(id_)
            assert a is not None, f"record {id_} vanished from the index"
            assert a.hash == h
            try:
                data = store.read_bytes(a, verify=True)
            except runstash.NotFoundError:
                lost.append(h)
                continue
            assert runstash.hash_bytes(data) == h
        for id_ in st["pinned"]:
            a = store.get(id_)
            assert a is not None and a.pinned, f"pinned record {id_} is gone or unpinned"
        for id_ in st["scored_pinned"]:
            a = store.get(id_)
            assert a is not None and a.pinned, f"pinned scored record {id_} was pruned"

    store.keep_best(kind="scored", metric="score", mode="max", k=5, dry_run=False, grace=0)
    assert store.count(kind="scored", pinned=False) <= 5
    assert all(store.get(i) is not None for st in states for i in st["scored_pinned"])
    assert store.count(kind="load") == sum(len(st["live"]) for st in states)
    store.gc(dry_run=False, grace=0)
    report = store.verify_report()
    assert not (report.corrupt or report.orphaned or report.stray or report.unreadable), report
    missing = {m.hash for m in report.missing}
    assert set(lost) <= missing

    assert not missing, (
        f"{len(missing)} blobs of live records are gone; "
        f"{len(missing & gc_deleted)} of them were deleted by the gc loops"
    )
    assert report.ok, report
