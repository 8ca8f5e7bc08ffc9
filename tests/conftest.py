"""Shared fixtures: every test gets its own store under pytest's tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runstash


@pytest.fixture
def store(tmp_path: Path) -> runstash.Store:
    return runstash.Store(tmp_path / "store", durability="os")


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
