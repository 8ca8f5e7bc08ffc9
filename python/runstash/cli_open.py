"""How the ``runstash`` command opens its store: ``--store`` names a directory or an
``s3://bucket/prefix`` URL; the S3 settings come from the ``--s3-*`` flags, then the usual
``AWS_*`` environment variables (credentials only from the environment, never from flags that
would show in the process list). A command never creates a store: a place without one is an
error, and the commands that only look write nothing."""

from __future__ import annotations

import argparse

from .s3 import S3Options
from .store import DEFAULT_ROOT, Store

__all__ = ["add_store_options", "open_store"]

_STORE_HELP = (
    f"the store: a directory (default: {DEFAULT_ROOT}, the embedded default store) or "
    "s3://bucket/prefix"
)


def add_store_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Add ``--store`` and the ``--s3-*`` flags to ``parser``.

    :param parser: the top-level parser (``defaults=True``: the options get their defaults)
        or the parent of the subcommands (``defaults=False``: an option given after the
        subcommand overrides one given before it, and absent ones leave it alone).
    :param defaults: whether absent options get their default values here.
    """
    default = DEFAULT_ROOT if defaults else argparse.SUPPRESS
    none = None if defaults else argparse.SUPPRESS
    parser.add_argument("--store", dest="store", metavar="PATH", default=default, help=_STORE_HELP)
    # --root: the option's name before --store; still accepted, no longer shown.
    parser.add_argument("--root", dest="store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        default=none,
        help="S3 endpoint of an s3:// store (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    parser.add_argument(
        "--s3-region", metavar="NAME", default=none, help="S3 region (default: $AWS_REGION)"
    )
    parser.add_argument(
        "--s3-cache-dir",
        metavar="PATH",
        default=none,
        help="local cache of an s3:// store (default: ~/.cache/runstash/s3/<bucket>/<prefix>)",
    )


def open_store(args: argparse.Namespace) -> Store:
    """The existing store that ``args`` name (see :func:`add_store_options`).

    :param args: parsed arguments with ``store`` and the ``s3_*`` attributes.
    :raises NotFoundError: no store there (nothing is created).
    """
    where = str(args.store)
    if where.startswith("s3://"):
        s3 = S3Options(
            endpoint=getattr(args, "s3_endpoint", None),
            region=getattr(args, "s3_region", None),
            cache_dir=getattr(args, "s3_cache_dir", None),
        )
        return Store(where, s3=s3, create=False)
    return Store(where, create=False)
