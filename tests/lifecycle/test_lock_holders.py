"""One index lock holder at a time, whatever happens to the handle or to ``index/LOCK``
(issue 10, hostile pass).

Two ways two processes came to "hold" the index lock at once, and to append at the same
offset (acknowledged records lost, the log damaged):

- a ``Store`` handle used on both sides of ``fork()`` (a fork-start multiprocessing pool that
  inherits a module-level store): the inherited descriptor shares the parent's flock;
- ``index/LOCK`` removed or replaced while handles are open: the open handle goes on locking
  the old file while a new process creates and locks a new one.

Each test runs its writers as real processes under a watchdog (``communicate(timeout=...)``),
then counts with a fresh handle: every acknowledged record is there and reads back.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import runstash
from tests.conftest import spawn_python

TIMEOUT = 120
N = 400

FORKING = r"""
import os, sys
import runstash
root, n = sys.argv[1], int(sys.argv[2])
store = runstash.Store(root, durability="os")
store.put_bytes(b"before the fork", kind="w")
pids = []
for k in range(2):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for i in range(n):
                store.put_bytes(b"child %d record %d" % (k, i), kind="w", labels={"who": "c%d" % k})
        except BaseException as e:
            print(repr(e), file=sys.stderr)
            code = 1
        os._exit(code)
    pids.append(pid)
for i in range(n):
    store.put_bytes(b"parent record %d" % i, kind="w", labels={"who": "p"})
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
print(codes)
sys.exit(max(codes))
"""

WRITER = r"""
import sys
import runstash
root, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = runstash.Store(root, durability="os")
store.put_bytes(b"opened by " + who.encode(), kind="w", labels={"who": who})
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
for i in range(n):
    store.put_bytes(b"%s record %d" % (who.encode(), i), kind="w", labels={"who": who})
print("done", flush=True)
"""


def _finish(p: subprocess.Popen[bytes], what: str) -> bytes:
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"{what} hung (killed after {TIMEOUT} s)")
    assert p.returncode == 0, f"{what} failed: {err.decode(errors='replace')}"
    return out


def _all_there(root: Path, expect: dict[str, int]) -> None:
    fresh = runstash.Store(root, durability="os")
    for who, n in expect.items():
        arts = fresh.list(labels={"who": who})
        assert len(arts) == n, f"{who}: {len(arts)} of {n} acknowledged records"
    for a in fresh.list():
        fresh.read_bytes(a, verify=True)
    assert fresh.verify_report().ok


def test_a_handle_used_after_fork_never_shares_the_parents_lock(tmp_path: Path) -> None:
    root = tmp_path / "store"
    p = spawn_python(FORKING, str(root), str(N))
    _finish(p, "forking writers")
    fresh = runstash.Store(root, durability="os")
    assert fresh.count() == 1 + 3 * N
    _all_there(root, {"c0": N, "c1": N, "p": N})


def _remove(lock: Path) -> None:
    lock.unlink()


def _replace(lock: Path) -> None:
    other = lock.with_name("LOCK.new")
    other.write_bytes(b"")
    os.replace(other, lock)


@pytest.mark.parametrize("change", [_remove, _replace], ids=["removed", "replaced"])
def test_lock_file_removed_or_replaced_under_open_handles(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os").put_bytes(b"first", kind="w", labels={"who": "x"})
    a = spawn_python(WRITER, str(root), "a", str(N), stdin=subprocess.PIPE)
    assert a.stdout is not None and a.stdin is not None
    assert a.stdout.readline().strip() == b"ready"
    change(root / "index" / "LOCK")
    # b opens after the change: it locks the LOCK that is there now.
    b = spawn_python(WRITER, str(root), "b", str(N), stdin=subprocess.PIPE)
    assert b.stdout is not None and b.stdin is not None
    assert b.stdout.readline().strip() == b"ready"
    for p in (a, b):
        p.stdin.write(b"go\n")
        p.stdin.flush()
    _finish(a, "writer a")
    _finish(b, "writer b")
    _all_there(root, {"x": 1, "a": N + 1, "b": N + 1})
