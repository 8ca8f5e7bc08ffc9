"""What reaches the disk and when, observed with strace on a real child process.

In "fsync" durability a blob's temp file is fsynced before it is renamed or linked into place
and the directory that received it is fsynced after; a small payload packed into the index log is
written there, with its record, in one write that is fdatasynced before the call returns; in
"os" durability nothing is fsynced at all.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STRACE, traced_region

pytestmark = pytest.mark.skipif(
    STRACE is None, reason="strace is not installed (.ci/run installs it)"
)

WRITES = r"""
import os, sys, runstash
root, src = sys.argv[1], sys.argv[2]
s = runstash.Store(root, durability=sys.argv[3])
os.write(2, b"@@BEGIN@@")
s.put_bytes(b"large payload" * 10000)
s.save(src)
with s.writer(ext=".bin") as w:
    w.write(b"streamed" * 10000)
p = s.stage(".txt")
open(p, "wb").write(b"staged")
s.ingest(p)
os.write(2, b"@@END@@")
"""


def traced_calls(tmp_path: Path, durability: str) -> list[tuple[str, str]]:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * (3 << 20))
    out = tmp_path / f"trace-{durability}.txt"
    cmd = [
        str(STRACE), "-f", "-y", "-s", "256", "-o", str(out),
        "-e", "trace=fsync,fdatasync,sync_file_range,syncfs,"
        "rename,renameat,renameat2,link,linkat,write,pwrite64",
        sys.executable, "-c", WRITES, str(tmp_path / f"store-{durability}"), str(src), durability,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    calls = traced_region(out)
    return calls


def is_publish(name: str, args: str) -> bool:
    """A rename or link whose target is under blobs/ (writer and ingest link their file and
    remove its temp name once the record is appended)."""
    return name.startswith(("rename", "link")) and "/blobs/" in args


def test_fsync_before_rename_and_dir_fsync_after(tmp_path: Path) -> None:
    calls = traced_calls(tmp_path, "fsync")
    publishes = [i for i, (n, a) in enumerate(calls) if is_publish(n, a)]
    assert len(publishes) == 4, calls  # put_bytes, save, writer, ingest
    for i in publishes:
        name, args = calls[i]
        src_path = re.findall(r'"([^"]+)"', args)[0]
        dest_path = re.findall(r'"([^"]+)"', args)[1]
        before = [a for n, a in calls[:i] if n in ("fsync", "fdatasync")]
        assert any(src_path in a for a in before), f"{src_path} not fsynced before publish: {calls}"
        after = [a for n, a in calls[i + 1 :] if n == "fsync"]
        dest_dir = str(Path(dest_path).parent)
        assert any(a.rstrip(">").endswith(dest_dir) for a in after), (
            f"directory {dest_dir} not fsynced after publish: {calls}"
        )


def test_os_durability_never_fsyncs(tmp_path: Path) -> None:
    calls = traced_calls(tmp_path, "os")
    assert [c for c in calls if is_publish(*c)], "the trace saw no publish at all"
    assert [c for c in calls if c[0] in ("fsync", "fdatasync", "syncfs", "sync_file_range")] == []


PACKED = r"""
import os, sys, runstash
root, src = sys.argv[1], sys.argv[2]
s = runstash.Store(root, durability="fsync")
s.put_bytes(b"warm up: the index segment exists")
os.write(2, b"@@STEP0@@")
s.put_bytes(b"small payload")
os.write(2, b"@@STEP1@@")
s.save(src)
os.write(2, b"@@STEP2@@")
with s.writer(ext=".json") as w:
    w.write(b"{\"a\": 1}")
os.write(2, b"@@STEP3@@")
"""

_LINE = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")


def test_packed_write_is_one_log_append_then_fdatasync(tmp_path: Path) -> None:
    """A small put_bytes, save and writer: the bytes and the record go to the index log in one
    pwrite, the log is fdatasynced before the call returns, and nothing is published under
    blobs/ (no rename or link there)."""
    src = tmp_path / "small.txt"
    src.write_bytes(b"a small file")
    out = tmp_path / "trace-packed.txt"
    cmd = [
        str(STRACE), "-f", "-y", "-s", "64", "-o", str(out),
        "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat,write,pwrite64",
        sys.executable, "-c", PACKED, str(tmp_path / "store"), str(src),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    steps: list[list[tuple[str, str]]] = []
    for line in out.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, args = m.group(1), m.group(2)
        if name == "write" and "@@STEP" in args:
            steps.append([])
        elif steps and name != "write":
            steps[-1].append((name, args))
    assert len(steps) == 4, steps
    for calls in steps[:3]:
        appends = [i for i, (n, a) in enumerate(calls) if n == "pwrite64" and "/index/log-" in a]
        syncs = [i for i, (n, a) in enumerate(calls) if n == "fdatasync" and "/index/log-" in a]
        assert len(appends) == 1, calls
        assert syncs and syncs[-1] > appends[0], f"log not fdatasynced after the append: {calls}"
        assert not [c for c in calls if "/blobs/" in c[1]], (
            f"a packed write touched blobs/: {calls}"
        )
