"""Crash and concurrency behaviour, with real processes, real files and real signals.

- A writer killed with SIGKILL mid-write leaves no blob and no file at a final path; the next
  open of the store removes its temp file.
- A reader polling a path during repeated atomic overwrites sees only complete contents.
- Many threads and processes storing the same content at once yield one blob and no error.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from pathlib import Path

import runstash
from tests.conftest import blob_files, spawn_python, staging_entries

STREAM_AND_DIE = r"""
import os, sys, runstash
s = runstash.Store(sys.argv[1], durability=sys.argv[2])
chunk = os.urandom(1 << 20)
with s.writer(ext=".bin") as w:
    for i in range(1_000_000):
        w.write(chunk)
        if i == int(sys.argv[3]):
            print("writing", flush=True)
"""


def test_sigkill_mid_writer_leaves_no_blob(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root)
    for durability, after in (("os", 2), ("fsync", 0), ("os", 40)):
        child = spawn_python(STREAM_AND_DIE, str(root), durability, str(after))
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        assert blob_files(root) == [], "a killed writer must not leave a blob"
        leftovers = staging_entries(root)
        assert len(leftovers) == 1 and leftovers[0].name.startswith(f".rstmp.{child.pid}.")
        runstash.Store(root)  # reopening cleans temps of dead writers
        assert staging_entries(root) == []


PUT_LOOP = r"""
import os, sys, runstash
s = runstash.Store(sys.argv[1], durability="os")
src = os.path.join(sys.argv[1], "..", "src.bin")
i = 0
while True:
    i += 1
    if i % 3 == 0:
        with open(src, "wb") as f:
            f.write(os.urandom(1 << 21))
        b = s.save(src)
    elif i % 3 == 1:
        b = s.put_bytes(os.urandom(i % 5000))
    else:
        with s.writer() as w:
            w.write(os.urandom(300_000))
        b = w.artifact
    print(b.hash, flush=True)
"""


def test_sigkill_at_random_moments_keeps_store_consistent(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os")
    rng = random.Random(7)
    acked: set[str] = set()
    for _ in range(10):
        child = spawn_python(PUT_LOOP, str(root))
        assert child.stdout is not None
        for _ in range(rng.randint(1, 12)):
            acked.add(child.stdout.readline().decode().strip())
        child.send_signal(signal.SIGKILL)
        child.wait()
        store = runstash.Store(root, durability="os")
        report = store.verify()
        assert isinstance(report, runstash.VerifyReport)
        assert report.ok, report
        for h in acked:
            assert store.exists(h), f"acknowledged blob {h} lost"
        assert staging_entries(root) == []


OVERWRITE = r"""
import sys, runstash
path, n = sys.argv[1], int(sys.argv[2])
a = b"A" * 300_000
b = b"B" * 170_000
for i in range(n):
    runstash.write_atomic(path, a if i % 2 else b, durability="os")
print("done", flush=True)
"""


def test_reader_never_sees_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    complete = {b"A" * 300_000, b"B" * 170_000}
    runstash.write_atomic(path, b"A" * 300_000, durability="os")
    child = spawn_python(OVERWRITE, str(path), "400")
    reads = 0
    seen: set[bytes] = set()
    while child.poll() is None:
        data = path.read_bytes()
        assert data in complete, f"torn read of {len(data)} bytes"
        seen.add(data[:1])
        reads += 1
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""
    assert reads > 0
    assert path.read_bytes() in complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"], "temp files left behind"


SAME_CONTENT = r"""
import sys, threading, runstash
root, payload_path = sys.argv[1], sys.argv[2]
payload = open(payload_path, "rb").read()
s = runstash.Store(root, durability=sys.argv[3])
sys.stdin.readline()  # the parent's "go": every process starts together
hashes, errors = [], []
def work():
    try:
        for i in range(6):
            if i % 3 == 0:
                hashes.append(s.put_bytes(payload).hash)
            elif i % 3 == 1:
                with s.writer() as w:
                    w.write(payload)
                hashes.append(w.artifact.hash)
            else:
                hashes.append(s.save(payload_path).hash)
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=work) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join()
print("ERR" if errors else "OK", *sorted(set(hashes)), *errors)
"""


def race_same_content(root: Path, payload_path: Path, durability: str) -> None:
    """4 processes x 8 threads and 8 threads here store one payload at the same instant."""
    payload = payload_path.read_bytes()
    expect = runstash.hash_bytes(payload)
    runstash.Store(root, durability=durability)
    kids = [
        spawn_python(SAME_CONTENT, str(root), str(payload_path), durability, stdin=subprocess.PIPE)
        for _ in range(4)
    ]
    store = runstash.Store(root, durability=durability)
    local: list[str] = []
    errors: list[BaseException] = []
    go = threading.Barrier(9)

    def work() -> None:
        go.wait()
        try:
            for _ in range(4):
                local.append(store.put_bytes(payload).hash)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for k in kids:
        assert k.stdin is not None
        k.stdin.write(b"go\n")
        k.stdin.flush()
    go.wait()
    for t in threads:
        t.join()
    for k in kids:
        out, err = k.communicate()
        assert k.returncode == 0, err.decode()
        assert out.decode().split() == ["OK", expect], out.decode() + err.decode()
    assert not errors
    assert set(local) == {expect}
    blobs = blob_files(root)
    assert len(blobs) == 1 and blobs[0] == Path(store.path_of(expect))
    assert store.read_bytes(expect, verify=True) == payload
    assert staging_entries(root) == []


def test_threads_and_processes_storing_same_content(tmp_path: Path) -> None:
    payload_path = tmp_path / "payload.bin"
    payload_path.write_bytes(random.Random(1).randbytes(3 * (1 << 20) + 5))
    race_same_content(tmp_path / "store-os", payload_path, "os")
    race_same_content(tmp_path / "store-fsync", payload_path, "fsync")
