"""What reaches the disk and when, observed with strace on a real child process.

In "fsync" durability a blob's temp file is fsynced before it is renamed into place and the
directory that received it is fsynced after; in "os" durability nothing is fsynced at all.
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
s.put_bytes(b"small payload")
s.save(src)
with s.writer(ext=".bin") as w:
    w.write(b"streamed" * 1000)
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
        "rename,renameat,renameat2,link,linkat,write",
        sys.executable, "-c", WRITES, str(tmp_path / f"store-{durability}"), str(src), durability,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    calls = traced_region(out)
    return calls


def test_fsync_before_rename_and_dir_fsync_after(tmp_path: Path) -> None:
    calls = traced_calls(tmp_path, "fsync")
    publishes = [i for i, (n, a) in enumerate(calls) if n.startswith("rename") and "/blobs/" in a]
    assert len(publishes) == 4, calls  # put_bytes, save, writer, ingest
    for i in publishes:
        name, args = calls[i]
        src_path = re.findall(r'"([^"]+)"', args)[0]
        dest_path = re.findall(r'"([^"]+)"', args)[1]
        before = [a for n, a in calls[:i] if n in ("fsync", "fdatasync")]
        assert any(src_path in a for a in before), f"{src_path} not fsynced before rename: {calls}"
        after = [a for n, a in calls[i + 1 :] if n == "fsync"]
        dest_dir = str(Path(dest_path).parent)
        assert any(a.rstrip(">").endswith(dest_dir) for a in after), (
            f"directory {dest_dir} not fsynced after rename: {calls}"
        )


def test_os_durability_never_fsyncs(tmp_path: Path) -> None:
    calls = traced_calls(tmp_path, "os")
    assert [n for n, _ in calls if n.startswith("rename")], "the trace saw no publish at all"
    assert [c for c in calls if c[0] in ("fsync", "fdatasync", "syncfs", "sync_file_range")] == []
