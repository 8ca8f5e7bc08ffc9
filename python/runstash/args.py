"""Arguments of the public API checked and shaped for the engine: blob refs, ids, record
metadata, filters, limits and grace periods, and the type aliases they use."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from ._core import Artifact
from .errors import InvalidArgumentError

PathArg = str | os.PathLike[str]
Grace = float | int | timedelta
Per = Literal["run", "graph", "node"]
#: ``progress(done, total, bytes_done, total_bytes)`` of :meth:`Store.verify_report`.
VerifyProgress = Callable[[int, int, int, int], object]
BlobRef = str | Artifact
LabelValue = str | int | float | bool
Labels = dict[str, LabelValue]
Metrics = dict[str, float]
if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:  # no way to name "has the buffer protocol" before Python 3.12
    Buffer = Any
#: ``Buffer`` above: any C-contiguous object with the buffer protocol (bytes, bytearray, a
#: memoryview of any format, a numpy array of any dtype, a pyarrow buffer); its raw bytes are
#: stored without a copy.


def _ref(r: BlobRef) -> str:
    if isinstance(r, Artifact):
        return r.hash
    if isinstance(r, str):
        return r
    raise TypeError(f"expected a digest string, a blob URI or an Artifact, not {type(r).__name__}")


def _id(a: str | Artifact) -> str:
    if isinstance(a, Artifact):
        return a.id
    if isinstance(a, str):
        return a
    raise TypeError(f"expected an artifact id or an Artifact, not {type(a).__name__}")


def _meta(
    kind: str,
    labels: Labels | None,
    metrics: Metrics | None,
    run_id: str | None,
    graph_id: str | None,
    node_id: str | None,
    project_id: str | None,
    pin: bool,
    mime: str | None,
) -> tuple[Any, ...]:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, not {type(kind).__name__}")
    if labels is not None and not isinstance(labels, dict):
        labels = dict(labels)
    if metrics is not None and not isinstance(metrics, dict):
        metrics = dict(metrics)
    return (kind, labels, metrics, run_id, graph_id, node_id, project_id, bool(pin), mime)


def check_limit(limit: int | None) -> int | None:
    """A ``limit=`` argument: ``None`` (no limit) or a non-negative int.

    :param limit: the value the caller passed.
    :raises InvalidArgumentError: for a negative number or a non-integer."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgumentError(f"limit must be None or a non-negative int, got {limit!r}")
    return limit


def _filter(
    kind: str | None,
    labels: Labels | None,
    run_id: str | None,
    graph_id: str | None,
    node_id: str | None,
    project_id: str | None,
    pinned: bool | None,
) -> tuple[Any, ...]:
    if labels is not None and not isinstance(labels, dict):
        labels = dict(labels)
    return (kind, labels, run_id, graph_id, node_id, project_id, pinned)


def _grace_seconds(grace: Grace) -> float:
    if isinstance(grace, timedelta):
        secs = grace.total_seconds()
    elif isinstance(grace, int | float) and not isinstance(grace, bool):
        secs = float(grace)
    else:
        raise TypeError(f"grace must be seconds or a timedelta, not {type(grace).__name__}")
    if not math.isfinite(secs) or secs < 0:
        raise InvalidArgumentError(f"grace must be a non-negative duration, got {grace!r}")
    return secs
