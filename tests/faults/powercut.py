"""A model of what a power cut keeps, driven by an strace of the writer.

A process killed at some syscall leaves its files as the kernel's page cache had them: that is
a process crash. A power cut also loses what the page cache had not yet written out. The
model rewinds the crashed directory to what a POSIX filesystem must have kept, using the
trace of the writer (``strace -f -y``) since the round started:

- File data written since the file's last ``fsync``/``fdatasync`` may be lost. For such a
  "dirty" file the model keeps the durable part (the bytes up to the size it had at its last
  sync in this round, or else its content at the start of the round, or nothing for a new
  file) and then, depending on the variant, nothing more, or a random prefix of what came
  after, possibly with a random range of that tail zeroed (pages written out of order, or a
  size that reached the disk before the data).
- A directory entry change (create, mkdir, rename, link, unlink, rmdir) is durable only once
  its parent directory was fsynced after it (the POSIX rule; ext4 and XFS usually keep more,
  this model does not assume it). Changes that are not durable are undone, newest first: all
  of them ("lose-all"), or a random subset ("random"). Undoing a rename moves the file back;
  undoing an unlink brings the name back with the content the file had at the round start
  (known for index files, which is where it matters), as a link to the inode's other name
  when it had one (a staged file linked into blobs/, then unlinked), or empty for a temp file.

Not modelled: reordering inside one synced region, metadata other than names and sizes (mode,
times), a sync that reports success but did not persist, media errors. Files outside the
store root are not touched, except that the root's own creation is a change to its parent.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$")
_FD = re.compile(r"\b(\d+)<([^>]*)>")
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')

#: Syscalls the writer must be traced with for the model to see every change.
TRACE_SET = (
    "write,pwrite64,writev,pwritev,pwritev2,copy_file_range,sendfile,splice,"
    "fsync,fdatasync,sync,syncfs,sync_file_range,"
    "open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,"
    "link,linkat,unlink,unlinkat,rmdir,ftruncate,truncate,fallocate"
)


class ModelError(AssertionError):
    """The trace holds something the model cannot rewind; the test must not guess."""


@dataclass
class Call:
    pid: int
    name: str
    args: str
    ret: int | None  # None: the process was killed inside the call (it may or may not ran)
    tail: str  # what follows the return value (the fd annotation of open's result)


def parse_trace(text: str) -> list[Call]:
    """The calls of an ``strace -f -y -o`` output, with interrupted calls put back together."""
    pending: dict[int, str] = {}
    calls = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<..."):
            head = pending.pop(pid, None)
            if head is None:
                continue
            rest = head + rest.split("resumed>", 1)[1]
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        c = _CALL.match(rest)
        if not c:
            continue
        ret = None if c.group(3) == "?" else int(c.group(3))
        calls.append(Call(pid, c.group(1), c.group(2), ret, c.group(4)))
    # A call cut by the kill has no "resumed" line: it is in flight.
    for pid, head in pending.items():
        c = re.match(r"^(\w+)\((.*)$", head)
        if c:
            calls.append(Call(pid, c.group(1), c.group(2).rstrip(", "), None, ""))
    return calls


@dataclass
class FileState:
    size: int
    dirty: bool = False
    synced_size: int | None = None  # size at the last sync in this round
    cut_after_sync: bool = False  # truncated (or size unknown) since that sync
    base: bytes | None = None  # content at the round start (index files only)


@dataclass
class DirOp:
    kind: str  # create | mkdir | rename | link | unlink | rmdir
    path: str  # the name created / removed (for rename: the new name)
    old: str = ""  # rename: the old name; link: the source
    durable: bool = False
    base: bytes | None = None  # unlink: the content the name had at the round start
    alias: str = ""  # unlink: another name of the same inode (a file linked, then unlinked)


@dataclass
class Model:
    """What one round of writes did to the store under ``root``, as far as a cut goes."""

    root: str
    files: dict[str, FileState] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    ops: list[DirOp] = field(default_factory=list)

    @classmethod
    def at_round_start(cls, root: Path) -> Model:
        """Everything on disk now is durable (it survived the previous cut, or a reboot)."""
        root = root.resolve()
        m = cls(str(root))
        if root.exists():
            m.dirs.add(str(root))
            for dirpath, dirnames, filenames in os.walk(root):
                for d in dirnames:
                    m.dirs.add(os.path.join(dirpath, d))
                for f in filenames:
                    p = os.path.join(dirpath, f)
                    base = Path(p).read_bytes() if "/index/" in p else None
                    m.files[p] = FileState(os.path.getsize(p), base=base)
        return m

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def _dir_op(self, op: DirOp) -> None:
        if self.inside(op.path) or self.inside(op.old):
            self.ops.append(op)

    def feed(self, calls: list[Call]) -> None:
        for c in calls:
            if c.ret is not None and c.ret < 0:
                continue  # failed: changed nothing
            self._apply(c)

    def _apply(self, c: Call) -> None:
        fds = _FD.findall(c.args)
        strs = _STR.findall(c.args)
        name = c.name
        if name in ("open", "openat", "openat2", "creat"):
            flags = c.args
            if "O_TMPFILE" in flags:
                got = _FD.findall(c.tail)
                if got:  # an unnamed file: no directory entry until it is linked
                    self.files[got[0][1]] = FileState(0)
                return
            if (name == "creat" or "O_CREAT" in flags) and strs:
                path = strs[0]
                if path not in self.files and self.inside(path):
                    self.files[path] = FileState(0)
                    self._dir_op(DirOp("create", path))
                if "O_TRUNC" in flags and path in self.files:
                    self._resize(self.files[path], 0)
            return
        if c.ret is None and name not in ("fsync", "fdatasync") and not self._took_effect(c):
            return
        if name in ("mkdir", "mkdirat") and strs:
            if strs[0] in self.dirs:
                return  # it was there already: a mkdir the kill cut short changed nothing
            self.dirs.add(strs[0])
            self._dir_op(DirOp("mkdir", strs[0]))
            return
        if name in ("rename", "renameat", "renameat2") and len(strs) >= 2:
            old, new = strs[0], strs[1]
            if new in self.files:
                raise ModelError(f"rename over an existing file: {c.args}")
            if old in self.files:
                self.files[new] = self.files.pop(old)
            self._dir_op(DirOp("rename", new, old))
            return
        if name in ("link", "linkat"):
            if "AT_EMPTY_PATH" in c.args and fds:
                src, new = fds[0][1], strs[-1]
            elif len(strs) >= 2:
                src, new = strs[0], strs[1]
            else:
                return
            state = self.files.get(src)
            if state is None:  # e.g. /proc/self/fd/N: its state is unknown, assume the worst
                state = FileState(0, dirty=True, cut_after_sync=True)
            self.files[new] = state  # one inode, two names: they share the state
            self._dir_op(DirOp("link", new, src))
            return
        if name in ("unlink", "unlinkat", "rmdir") and strs:
            path = strs[-1]
            is_dir = name == "rmdir" or "AT_REMOVEDIR" in c.args
            state = self.files.pop(path, None)
            if is_dir:
                self.dirs.discard(path)
            alias = next((p for p, f in self.files.items() if state and f is state), "")
            self._dir_op(
                DirOp(
                    "rmdir" if is_dir else "unlink",
                    path,
                    base=state.base if state else None,
                    alias=alias,
                )
            )
            return
        if name in ("fsync", "fdatasync") and fds:
            if c.ret is None:
                return  # a sync cut short by the kill promises nothing
            path = fds[0][1]
            if path in self.dirs or (path not in self.files and os.path.isdir(path)):
                for op in self.ops:
                    # A rename is judged by its new name's directory (see the module doc).
                    if os.path.dirname(op.path) == path:
                        op.durable = True
            elif path in self.files:
                f = self.files[path]
                f.dirty = False
                f.synced_size = f.size
                f.cut_after_sync = False
            return
        if name in ("sync", "syncfs", "sync_file_range"):
            raise ModelError(f"{name} is not modelled")
        # data writes
        if name in ("write", "writev") and fds:
            self._grow(fds[0][1], None, c.ret)
        elif name in ("pwrite64", "pwritev", "pwritev2") and fds:
            nums = re.findall(r"(\d+)\s*$", c.args)
            off = int(nums[-1]) if nums else None
            self._grow(fds[0][1], off, c.ret)
        elif name in ("copy_file_range", "sendfile", "splice") and len(fds) >= 2:
            self._grow(fds[1][1], None, c.ret)
        elif name in ("ftruncate", "fallocate") and fds:
            nums = re.findall(r"(\d+)\s*$", c.args)
            f = self.files.get(fds[0][1])
            if f is not None:
                f.dirty = True
                if name == "ftruncate" and nums and c.ret is not None:
                    self._resize(f, int(nums[-1]))
                else:
                    f.cut_after_sync = True
        elif name == "truncate" and strs and strs[0] in self.files:
            f = self.files[strs[0]]
            f.dirty = True
            f.cut_after_sync = True

    @staticmethod
    def _took_effect(c: Call) -> bool:
        """Whether a call the kill interrupted changed a name (it is the writer's last call,
        so the disk now shows it); data calls count as done, which is the worse case."""
        strs = _STR.findall(c.args)
        if c.name in ("mkdir", "mkdirat", "open", "openat", "openat2", "creat"):
            return bool(strs) and os.path.exists(strs[0])
        if c.name in ("rename", "renameat", "renameat2", "link", "linkat"):
            return bool(strs) and os.path.exists(strs[-1])
        if c.name in ("unlink", "unlinkat", "rmdir"):
            return bool(strs) and not os.path.exists(strs[-1])
        return True

    def _resize(self, f: FileState, size: int) -> None:
        if f.synced_size is not None and size < f.synced_size:
            f.cut_after_sync = True
        f.size = size
        f.dirty = True

    def _grow(self, path: str, off: int | None, n: int | None) -> None:
        f = self.files.get(path)
        if f is None:
            return  # not a store file (a pipe, the terminal, a source file)
        f.dirty = True
        if n is None:
            pass  # in flight: it wrote some of its bytes, or none; it never shrinks the file
        elif off is None:
            f.size += n  # the store's files are written sequentially from the start
        else:
            f.size = max(f.size, off + n)

    # -- the cut --------------------------------------------------------------------------

    def cut(self, rng: random.Random, variant: str) -> list[str]:
        """Rewinds the directory on disk to one state a power cut may leave. ``variant`` is
        ``"lose-all"`` (every non-durable change undone, every unsynced byte lost) or
        ``"random"``. Returns a log of what was done, for failure messages."""
        log: list[str] = []
        # 1. File data (per inode, under the names it has now).
        seen: set[int] = set()
        for path, f in sorted(self.files.items()):
            if not f.dirty or id(f) in seen or not os.path.isfile(path):
                continue
            seen.add(id(f))
            now = Path(path).read_bytes()
            if f.synced_size is not None and not f.cut_after_sync:
                keep = now[: f.synced_size]
            elif f.base is not None:
                keep = f.base
            else:
                keep = b""
            common = _common_prefix(keep, now)
            if variant == "lose-all" or rng.random() < 0.3:
                new = keep
            else:
                end = rng.randint(common, len(now))
                new = bytearray(now[:end])
                if end > common and rng.random() < 0.4:
                    a = rng.randint(common, end - 1)
                    b = rng.randint(a + 1, end)
                    new[a:b] = bytes(b - a)
                new = bytes(new)
            if new != now:
                _rewrite(Path(path), new)
                log.append(f"data {path}: {len(now)} -> {len(new)} bytes")
        # 2. Names, newest change first.
        for op in reversed(self.ops):
            if op.durable or (variant == "random" and rng.random() < 0.5):
                continue
            if self._undo(op):
                log.append(f"undo {op.kind} {op.old + ' -> ' if op.old else ''}{op.path}")
        return log

    def _undo(self, op: DirOp) -> bool:
        """Undoes one change if the disk still shows it; returns whether it did."""
        p = Path(op.path)
        if op.kind in ("create", "link") and p.is_file():
            p.unlink()
        elif op.kind == "mkdir" and p.is_dir():
            _rmtree(p)
        elif op.kind == "rename" and p.exists() and not Path(op.old).exists():
            if not Path(op.old).parent.is_dir():
                return False  # its old directory is gone too
            os.rename(p, op.old)
        elif op.kind == "unlink" and not p.exists() and p.parent.is_dir():
            if op.base is None and op.alias and os.path.isfile(op.alias):
                os.link(op.alias, p)  # the inode's other name is still there (newest first)
                return True
            if op.base is None and ".rstmp." not in p.name:
                raise ModelError(f"cannot bring back {p}: its content is not known")
            p.write_bytes(op.base or b"")
        elif op.kind == "rmdir" and not p.exists() and p.parent.is_dir():
            p.mkdir()
        else:
            return False
        return True


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _rewrite(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, mode & 0o7777)


def _rmtree(path: Path) -> None:
    for dirpath, _, _ in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path)
