"""Shared fixtures: every test gets its own store under pytest's tmp_path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import runstash


@pytest.fixture
def store(tmp_path: Path) -> runstash.Store:
    return runstash.Store(tmp_path / "store", durability="os")


@pytest.fixture
def fac(store: runstash.Store) -> runstash.ArtifactFacade:
    """An AetherGraph-style facade over ``store`` with every scope id set."""
    return runstash.ArtifactFacade(
        store, run_id="run-1", graph_id="g1", node_id="n1", project_id="proj"
    )


@pytest.fixture
def durable_store(tmp_path: Path) -> runstash.Store:
    return runstash.Store(tmp_path / "store", durability="fsync")


def blob_files(root: str | Path) -> list[Path]:
    """Every file under blobs/ of a store."""
    return sorted(p for p in Path(root, "blobs").rglob("*") if p.is_file())


def staging_entries(root: str | Path) -> list[Path]:
    return sorted(Path(root, "staging").iterdir())


def spawn_python(code: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    """Start a child interpreter running `code` (real process, real signals)."""
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


#: strace, when installed (.ci/run installs it): the durability tests observe syscalls with it.
STRACE = shutil.which("strace")
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+)")


def traced_region(trace: Path) -> list[tuple[str, str]]:
    """Successful syscalls (name, args) of an ``strace -f -y -o trace`` output, taken between
    the child's writes of ``@@BEGIN@@`` and ``@@END@@`` (the writes themselves excluded)."""
    calls: list[tuple[str, str]] = []
    active = False
    for line in trace.read_text().splitlines():
        m = _CALL.match(line)
        if not m:
            continue
        name, args = m.group(1), m.group(2)
        if name == "write" and "@@BEGIN@@" in args:
            active = True
        elif name == "write" and "@@END@@" in args:
            active = False
        elif active and name != "write" and m.group(3) == "0":
            calls.append((name, args))  # successful calls only (a first rename may hit ENOENT)
    return calls
