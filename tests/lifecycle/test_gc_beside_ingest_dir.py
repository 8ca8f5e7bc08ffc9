"""gc beside ``ingest_dir``: no deadlock, no lost member (issue 10, item 5).

One process loops ``gc(grace=0, dry_run=False)``; another ingests small directories (their
manifests are packed into the index log) through the facade, some of them holding the same
files as directories deleted before (members that are old orphans to gc). Before the fix gc
re-read a packed manifest under the index lock through the path that takes the index state
again: it blocked forever on its own mutex while holding ``index/LOCK``, and every other
process then waited on that lock. And a member gc removed between its save and the manifest's
record was lost. Now both processes finish (a watchdog bounds the wait), and every file of
every live directory artifact reads back.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import runstash
from tests.conftest import spawn_python

DIRS = 600

INGEST = r"""
import asyncio, json, random, sys
from pathlib import Path
import runstash
root, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(3)
pool = [b"member %d" % k * 40 for k in range(12)]
async def main():
    fac = runstash.ArtifactFacade(runstash.Store(root, durability="os"), run_id="r")
    live = {}
    for i in range(n):
        d = Path(await fac.stage_dir())
        for j in range(rng.randint(1, 4)):
            data = rng.choice(pool) if rng.random() < 0.3 else rng.randbytes(300)
            (d / f"f{j}.bin").write_bytes(data)
        art = await fac.ingest_dir(str(d), kind="dir")
        live[art.id] = art.hash
        if rng.random() < 0.5:
            victim = rng.choice(sorted(live))
            fac.store.delete(victim)
            del live[victim]
    json.dump(live, open(out, "w"))
asyncio.run(main())
"""

GC = r"""
import os, sys
import runstash
root, stop = sys.argv[1], sys.argv[2]
s = runstash.Store(root, durability="os")
passes = 0
while not os.path.exists(stop) or passes < 2:
    s.gc(dry_run=False, grace=0)
    passes += 1
print(passes)
"""


def _finish(p: subprocess.Popen[bytes], what: str, deadline: float) -> str:
    """Waits for `p` until `deadline` (time.monotonic()): the watchdog, so a hang fails."""
    try:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"{what} hung (the gc deadlock?)") from None
    assert p.returncode == 0, f"{what} failed: {err.decode()[-3000:]}"
    return out.decode()


def test_gc_and_ingest_dir_neither_hang_nor_lose_members(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    stop = tmp_path / "stop"
    out = tmp_path / "live.json"
    gc = spawn_python(GC, str(root), str(stop))
    ingest = spawn_python(INGEST, str(root), str(DIRS), str(out))
    # About 5 s when nothing hangs (debug build, 2 vCPUs); the deadlock came within seconds.
    deadline = time.monotonic() + 120
    try:
        _finish(ingest, "ingest_dir process", deadline)
    finally:
        stop.touch()
        try:
            _finish(gc, "gc process", deadline)
        finally:
            for p in (ingest, gc):
                if p.poll() is None:
                    p.kill()
                    p.wait()

    live = json.loads(out.read_text())
    with runstash.Store(root, durability="os") as s:
        for id_, h in live.items():
            manifest = json.loads(s.read_bytes(h, verify=True))
            for e in manifest["files"]:
                assert s.read_bytes(e["hash"], verify=True), f"member {e['path']} of {id_} lost"
        assert s.verify_report().intact
