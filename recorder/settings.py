"""The recorder's settings: one typed object built by the CLI from flags and TSRECORDER_*."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from recorder.errors import SettingsError
from tssh.config import Config

DEFAULT_LISTEN = "0.0.0.0:80"


def default_state_dir() -> Path:
    """``/var/lib/tssh-recorder`` for root, else ``$XDG_STATE_HOME/tssh-recorder``."""
    if os.geteuid() == 0:
        return Path("/var/lib/tssh-recorder")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "tssh-recorder"


@dataclass(frozen=True)
class S3Target:
    endpoint_url: str  # https://s3.us-east-1.amazonaws.com or http://127.0.0.1:9000
    bucket: str


@dataclass(frozen=True)
class RecorderSettings:
    dst: str
    bucket: str | None = None
    listen: str = DEFAULT_LISTEN
    state_dir: Path = field(default_factory=default_state_dir)
    # identity backend and policy file, named as for the daemon (--config, --netmap, ...)
    identity: Config = field(default_factory=Config)
    viewers: tuple[str, ...] = ()
    ui: bool = False
    trusted_keys: tuple[str, ...] = ()  # other recorders' public keys (a shared bucket)
    ack_interval: float = 0.0  # seconds to wait after an ack (0: the group commit batches)
    idle_ack: float = 10.0  # seconds between acks of an idle v2 stream
    sync_pace: float = 0.1  # seconds: a v2 upload starts at most one sync this often
    # seconds an upload may take to send its request head and asciicast header line
    header_timeout: float = 30.0
    max_uploads_per_node: int = 1024  # uploads running at once from one node; 503 past it
    max_uploads: int = 4096  # uploads running at once in all
    # Loopback demo: API readers must be local processes of this uid (every local account
    # shares the 127.0.0.1 source address the viewer identity comes from).
    local_owner: int | None = None
    # None: SQLite in the state dir; postgresql://...: one database shared by a fleet
    index: str | None = None
    retain_days: float | None = None  # None: keep every recording (docs/recorder.md)
    retain_bytes: int | None = None  # None: no limit on the store's finished recordings
    # who may place and lift legal holds through the API (selectors as for viewers)
    admins: tuple[str, ...] = ()
    # with a shared (PostgreSQL) index: seconds without a heartbeat after which a replica is
    # dead and another finishes its live recordings (docs/recorder.md, "Fleet")
    replica_timeout: float = 30.0

    def index_url(self) -> str | None:
        """The PostgreSQL URL of ``--index``, or None for the SQLite index."""
        if self.index is None or not self.index.strip():
            return None
        if not self.index.startswith(("postgresql://", "postgres://")):
            raise SettingsError(f"--index {self.index[:60]!r}: expected postgresql://... "
                                "(or nothing for SQLite in the state dir)")
        return self.index

    def s3(self) -> S3Target | None:
        """The S3 target when ``dst`` is ``s3://ENDPOINT`` or ``s3+http://HOST:PORT``."""
        scheme = self.dst.split("://", 1)[0] if "://" in self.dst else ""
        if scheme not in ("s3", "s3+http"):
            if scheme:
                raise SettingsError(f"--dst {self.dst!r}: use a directory, s3:// or s3+http://")
            return None
        parts = urlsplit(self.dst)
        if not parts.netloc or parts.path not in ("", "/"):
            raise SettingsError(f"--dst {self.dst!r}: expected s3://ENDPOINT (no path)")
        if not self.bucket:
            raise SettingsError("--dst s3://... needs --bucket NAME (or TSRECORDER_BUCKET)")
        http = "http" if scheme == "s3+http" else "https"
        return S3Target(f"{http}://{parts.netloc}", self.bucket)

    def listen_address(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(f"--listen {self.listen!r}: expected ADDR:PORT")
        host = host.strip("[]") or "0.0.0.0"
        return host, int(port)
