"""gc, stats and verify beside a process that deletes directory artifacts and compacts.

Found by the process model (``test_lifecycle_model.py``) in CI: gc read which directory
artifacts are live from one state of the index, then each packed manifest through a call that
caught up again. When another process deleted the artifact and compacted in between, the
manifest's packed bytes were gone with it and gc refused ("the manifest of a live directory
artifact cannot be read"); stats and verify likewise counted the deleted artifact's blobs as
missing. Now liveness, manifests and absence come from one view, and loss is concluded only
under the index lock: beside a churning writer, gc never refuses and nothing is reported
missing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import runstash
from tests.conftest import spawn_python

#: Directory artifacts the churning process ingests (each deleted and compacted away).
ROUNDS = 400

CHURN = r"""
import asyncio, random, sys
from pathlib import Path
import runstash
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
async def main():
    store = runstash.Store(root, durability="os")
    fac = runstash.ArtifactFacade(store, run_id="r")
    for i in range(n):
        d = Path(await fac.stage_dir())
        (d / "a.bin").write_bytes(rng.randbytes(200))
        art = await fac.ingest_dir(str(d), kind="dir")
        store.delete(art.id)
        store.compact()
asyncio.run(main())
"""

WATCH = r"""
import os, sys
import runstash
root, stop = sys.argv[1], sys.argv[2]
s = runstash.Store(root, durability="os")
bad, passes = [], 0
while not os.path.exists(stop) or passes < 2:
    passes += 1
    try:
        s.gc(dry_run=True)
    except runstash.RunstashError as e:
        bad.append(f"gc: {e!r}")
    st = s.stats()
    if st.missing_blobs:
        bad.append(f"stats: {st.missing_blobs} missing")
    if passes % 8 == 0:
        missing = s.verify_report().missing
        if missing:
            bad.append(f"verify_report: {missing!r}")
print(len(bad), passes)
for b in bad[:5]:
    print(b)
"""


def _finish(p: subprocess.Popen[bytes], what: str, deadline: float) -> str:
    """Waits for `p` until `deadline` (time.monotonic()): the watchdog, so a hang fails."""
    try:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"{what} hung") from None
    assert p.returncode == 0, f"{what} failed: {err.decode()[-3000:]}"
    return out.decode()


def test_no_false_loss_beside_deletes_and_compaction(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    stop = tmp_path / "stop"
    watch = spawn_python(WATCH, str(root), str(stop))
    churn = spawn_python(CHURN, str(root), str(ROUNDS))
    deadline = time.monotonic() + 300
    try:
        _finish(churn, "churning process", deadline)
    finally:
        stop.touch()
        try:
            out = _finish(watch, "gc/stats/verify process", deadline)
        finally:
            for p in (churn, watch):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    n_bad, passes = out.split("\n", 1)[0].split()
    assert int(n_bad) == 0, f"{n_bad} false losses in {passes} passes:\n{out}"
