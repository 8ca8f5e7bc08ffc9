"""How a ``Store("s3://...")`` reaches its bucket: :class:`S3Options`, and opening the engine's
remote store with them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import _core
from .args import PathArg

__all__ = ["S3Options"]


@dataclass(frozen=True)
class S3Options:
    """How :class:`Store` reaches an S3 bucket (``Store("s3://bucket/prefix", s3=...)``).

    Every field is optional: ``None`` takes the usual ``AWS_*`` environment variables
    (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AWS_ALLOW_HTTP``), then AWS's defaults.
    """

    #: The S3 endpoint, e.g. ``"http://127.0.0.1:8333"`` for a local SeaweedFS.
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    #: Allow a plain ``http://`` endpoint (default: allowed when the endpoint says http://).
    allow_http: bool | None = None
    #: Virtual-hosted-style requests (``bucket.host``) instead of path-style (``host/bucket``).
    virtual_hosted: bool = False
    #: The local cache of fetched blobs and index segments. Default:
    #: ``$XDG_CACHE_HOME/runstash/s3/<bucket>/<prefix>`` (``~/.cache/...``).
    cache_dir: PathArg | None = None
    #: Queries re-read the bucket's index when their view is older than this (seconds);
    #: :meth:`Store.refresh` does it at once.
    max_staleness: float = 1.0
    #: Retries of a failed request, and the time limit of one request (seconds).
    max_retries: int = 3
    request_timeout: float = 30.0
    #: The gc lease of a *new* store, in seconds (default 600; an existing store keeps the
    #: one in its ``STORE.json``, since every process must agree on it). A writer stores a
    #: record within this long of confirming its blob is in the bucket, and :meth:`Store.gc`
    #: deletes a blob it found unreferenced no sooner than 1.25 times this later. It must
    #: exceed twice the longest a request may take with its retries
    #: (``request_timeout * (max_retries + 1)``).
    gc_lease: float | None = None


def _default_cache_dir(url: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    rest = url.removeprefix("s3://").strip("/")
    return os.path.join(base, "runstash", "s3", *[p for p in rest.split("/") if p])


def _open_remote(
    url: str,
    s3: S3Options | None,
    hash: str | None,
    durability: str,
    pack_max: int,
    create: bool = True,
) -> _core.CoreStore:
    o = s3 or S3Options()
    cache = os.fspath(o.cache_dir) if o.cache_dir is not None else _default_cache_dir(url)
    return _core.open_s3(
        url,
        cache,
        hash,
        durability,
        pack_max,
        o.endpoint,
        o.region,
        o.access_key_id,
        o.secret_access_key,
        o.session_token,
        o.allow_http,
        o.virtual_hosted,
        o.max_staleness,
        o.max_retries,
        o.request_timeout,
        o.gc_lease,
        create,
    )
