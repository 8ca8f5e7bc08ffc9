"""runstash: an embedded, crash-safe artifact store for Python programs that produce many files."""

from . import bundle, errors
from ._core import Artifact
from .errors import (
    AlreadyExistsError,
    CorruptError,
    IncompatibleStoreError,
    InvalidArgumentError,
    NotFoundError,
    RunstashError,
    StoreIOError,
)
from .facade import ArtifactFacade
from .functions import hash_bytes, hash_file, write_atomic
from .reports import (
    CorruptBlob,
    GcReport,
    IntegrityReport,
    MissingBlob,
    OrphanedBlob,
    QuarantinedBlob,
    RetentionReport,
    StoreStats,
    VerifyReport,
)
from .s3 import S3Options
from .store import DEFAULT_GC_GRACE, DEFAULT_ROOT, TREE_MIME, Store
from .writer import ArtifactWriter

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_GC_GRACE",
    "DEFAULT_ROOT",
    "AlreadyExistsError",
    "Artifact",
    "ArtifactFacade",
    "ArtifactWriter",
    "CorruptBlob",
    "CorruptError",
    "GcReport",
    "IncompatibleStoreError",
    "IntegrityReport",
    "InvalidArgumentError",
    "MissingBlob",
    "QuarantinedBlob",
    "NotFoundError",
    "OrphanedBlob",
    "RetentionReport",
    "RunstashError",
    "S3Options",
    "Store",
    "StoreIOError",
    "StoreStats",
    "TREE_MIME",
    "VerifyReport",
    "bundle",
    "errors",
    "hash_bytes",
    "hash_file",
    "write_atomic",
]
