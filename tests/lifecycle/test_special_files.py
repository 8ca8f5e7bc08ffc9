"""Non-regular files are refused at once, never read (issue 10, item 6).

Before the fix ``save()`` and ``hash_file()`` of a FIFO blocked forever, and of ``/dev/zero``
or ``/dev/urandom`` read forever; ``ingest_dir`` silently left a FIFO out of the manifest.
Now each raises InvalidArgumentError before any read, and ``ingest_dir`` stores nothing.

Every call runs in its own child process with a timeout (and a file-size limit, so that a
regression copying ``/dev/zero`` into the store cannot fill the disk): a regression fails
instead of hanging. The children are all started together when the module's first test runs,
so a regression costs one timeout, not one per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import runstash
from tests.conftest import spawn_python

TIMEOUT = 10.0  # seconds for all the children together; the refusal is immediate

CHILD = r"""
import asyncio, json, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
import runstash

op, root, target = sys.argv[1:4]
store = runstash.Store(root, durability="os")
facade = runstash.ArtifactFacade(store, run_id="r")
calls = {
    "save": lambda: store.save(target),
    "hash_file": lambda: runstash.hash_file(target),
    "hash_file_sha256": lambda: runstash.hash_file(target, algo="sha256"),
    "ingest_dir": lambda: asyncio.run(facade.ingest_dir(target, kind="d", cleanup=False)),
}
try:
    calls[op]()
    out = {"raised": None}
except Exception as e:
    out = {"raised": type(e).__name__, "invalid": isinstance(e, runstash.InvalidArgumentError)}
    out["message"] = str(e)
out["count"] = store.count()
print(json.dumps(out))
"""

SMALL = {"a.txt": b"a regular file, small enough to be packed", "sub/b.txt": b"another one"}

#: case id -> (operation, target); "fifo" and "dir-with-fifo" are made per case.
CASES = {
    "save-fifo": ("save", "fifo"),
    "hash_file-fifo": ("hash_file", "fifo"),
    "hash_file_sha256-fifo": ("hash_file_sha256", "fifo"),
    "save-/dev/zero": ("save", "/dev/zero"),
    "save-/dev/urandom": ("save", "/dev/urandom"),
    "hash_file-/dev/urandom": ("hash_file", "/dev/urandom"),
    "hash_file-/dev/zero": ("hash_file", "/dev/zero"),
    "ingest_dir-dir-with-fifo": ("ingest_dir", "dir-with-fifo"),
}


@dataclass
class Child:
    op: str
    target: str
    root: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Child], float]]:
    started: dict[str, Child] = {}
    for case, (op, target) in CASES.items():
        base = tmp_path_factory.mktemp("special")
        if target == "fifo":
            target = str(base / "a.fifo")
            os.mkfifo(target)
        elif target == "dir-with-fifo":
            src = base / "dir"
            for rel, data in SMALL.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
            os.mkfifo(src / "sub" / "pipe")
            target = str(src)
        elif not os.path.exists(target):
            continue
        root = base / "store"
        started[case] = Child(op, target, root, spawn_python(CHILD, op, str(root), target))
    deadline = time.monotonic() + TIMEOUT
    yield started, deadline
    for child in started.values():
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.communicate(timeout=TIMEOUT)


def _result(children: tuple[dict[str, Child], float], case: str) -> tuple[Child, dict]:
    started, deadline = children
    if case not in started:
        pytest.skip(f"no {CASES[case][1]} on this system")
    child = started[case]
    try:
        out, err = child.proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.communicate(timeout=TIMEOUT)
        out = None
    if out is None:
        pytest.fail(f"{child.op}({child.target}) did not return in {TIMEOUT} s: it blocks or reads")
    assert child.proc.returncode == 0, f"child died ({child.proc.returncode}): {err.decode()}"
    return child, json.loads(out.decode().strip().splitlines()[-1])


def _blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith(("save", "hash_file"))])
def test_non_regular_file_is_refused_at_once(
    children: tuple[dict[str, Child], float], case: str
) -> None:
    child, res = _result(children, case)
    assert res["raised"] == "InvalidArgumentError" and res["invalid"], res
    assert res["count"] == 0
    assert _blob_files(child.root) == []


def test_ingest_dir_with_a_fifo_stores_nothing(children: tuple[dict[str, Child], float]) -> None:
    child, res = _result(children, "ingest_dir-dir-with-fifo")
    assert res["raised"] == "InvalidArgumentError" and res["invalid"], res
    assert res["count"] == 0
    with runstash.Store(child.root, durability="os") as s:
        assert s.count() == 0
        for data in SMALL.values():
            assert not s.exists(runstash.hash_bytes(data)), "a file of the refused dir is stored"
    assert _blob_files(child.root) == []
    trees = child.root / "trees"
    assert not trees.exists() or not any(trees.iterdir())
    for rel, data in SMALL.items():
        assert (Path(child.target) / rel).read_bytes() == data
