"""runstash: an embedded, crash-safe artifact store for Python programs that produce many files."""

from . import bundle, errors
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
from .store import (
    DEFAULT_ROOT,
    Artifact,
    ArtifactWriter,
    Store,
    VerifyReport,
    hash_bytes,
    hash_file,
    write_atomic,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ROOT",
    "AlreadyExistsError",
    "Artifact",
    "ArtifactFacade",
    "ArtifactWriter",
    "CorruptError",
    "IncompatibleStoreError",
    "InvalidArgumentError",
    "NotFoundError",
    "RunstashError",
    "Store",
    "StoreIOError",
    "VerifyReport",
    "bundle",
    "errors",
    "hash_bytes",
    "hash_file",
    "write_atomic",
]
