"""The daemon's configuration: one typed object built from TOML, then environment, then flags.

Each ``Config`` field is a TOML key of the same name, a ``TSSH_<NAME>`` environment variable
and a ``--<name-with-dashes>`` flag; later sources override earlier ones. Every value is checked
and a bad one is reported with where it came from (``tssh.toml: port``, ``TSSH_PORT``,
``--port``). The keys are documented in docs/config.md.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from tssh.errors import ConfigError
from tssh.forwarding import (
    FORWARDING_KEYS,
    VALUE_PARSERS,
    ForwardingConfig,
    ForwardingSettings,
    MatchBlock,
    Mode,
    Permit,
    parse_match_blocks,
)

IdentityBackend = Literal["netmap", "tailscale", "wireguard"]
LogFormat = Literal["json", "text"]
AuditUnparsable = Literal["pass", "cut"]
LOG_LEVELS = ("debug", "info", "warning", "error")
ENV_PREFIX = "TSSH_"


def default_state_dir() -> Path:
    """``/var/lib/tssh`` for root, else ``$XDG_STATE_HOME/tssh`` (docs/daemon.md).

    Raises ConfigError when there is no home directory to put it in (a uid with no passwd
    entry and no ``$HOME``, as in containers): the state directory must then be named.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/tssh")
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "tssh"
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        raise ConfigError(
            f"no home directory for uid {os.geteuid()} to keep tssh's state in: set"
            f" {env_var('state_dir')} or pass {flag('state_dir')}"
        ) from None
    return home / ".local" / "state" / "tssh"


def expand_user(path: Path) -> Path:
    """``path`` with a leading ``~`` expanded; ValueError (not RuntimeError) with no home."""
    try:
        return path.expanduser()
    except (RuntimeError, KeyError):
        raise ValueError(f"cannot expand {str(path)!r}: no home directory") from None


@dataclass(frozen=True)
class Config:
    identity: IdentityBackend = "netmap"
    # netmap file (identity "netmap") or inventory file (identity "wireguard")
    netmap: Path | None = None
    tailscale_socket: Path = Path("/var/run/tailscale/tailscaled.sock")
    wireguard_interface: str | None = None
    # None with the tailscale backend: the policy comes from the tailnet (later)
    policy: Path | None = None
    port: int = 22
    # Explicit listen addresses; empty means "this node's tailnet addresses" from the backend.
    listen: tuple[str, ...] = ()
    state_dir: Path = field(default_factory=default_state_dir)
    recorder_port: int = 80
    # Host key files; empty means /etc/ssh/ssh_host_*_key when root, else generated in state_dir.
    host_keys: tuple[Path, ...] = ()
    log_format: LogFormat = "json"
    log_level: str = "info"
    # Debug only: when no recorder is reachable, write the stream to this directory instead.
    local_recording_dir: Path | None = None
    # Session channels one SSH connection may have open at once (sshd's MaxSessions).
    max_sessions: int = 64
    # Bytes a client may send on a session channel before the daemon's program has read
    # them (the SSH receive window; docs/config.md, "Channel window").
    channel_window: int = 8 * 1024 * 1024
    # Connection limits, with sshd_config's meanings (docs/daemon.md, "Limits"); 0 is off.
    login_grace_time: int = 60
    max_startups: MaxStartups = field(default_factory=lambda: MaxStartups(10, 30, 100))
    per_source_max_startups: int = 32
    client_alive_interval: int = 60
    client_alive_count_max: int = 3
    idle_timeout: int = 0
    session_max_duration: int = 0
    # Seconds a login held by a check rule waits for an approval before it is refused.
    check_timeout: int = 600
    # Approval through the identity provider (OIDC): issuer URL, this client's id, a file
    # holding its secret (none: a public client, PKCE only), and the approval pages' port.
    check_oidc_issuer: str | None = None
    check_oidc_client_id: str | None = None
    check_oidc_client_secret_file: Path | None = None
    check_oidc_claim: str = "email"
    check_oidc_max_age: int = 300
    check_port: int = 8022
    # Forwarding (sshd_config's keywords; docs/config.md, "Forwarding").
    allow_tcp_forwarding: Mode = "yes"
    allow_stream_local_forwarding: Mode = "yes"
    allow_agent_forwarding: bool = True
    permit_open: tuple[Permit, ...] | None = None  # None: any
    permit_listen: tuple[Permit, ...] | None = None  # None: any
    gateway_ports: bool = False
    match: tuple[MatchBlock, ...] = ()  # [[match]] tables, file only

    def forwarding(self) -> ForwardingConfig:
        """The forwarding keys as ``tssh.forwarding.effective_forwarding`` takes them."""
        top = ForwardingSettings(**{key: getattr(self, key) for key in FORWARDING_KEYS})
        default = ForwardingSettings()
        origins = {key: "top level" for key in FORWARDING_KEYS
                   if getattr(top, key) != getattr(default, key)}
        return ForwardingConfig(top, self.match, origins)
    # The audit log (docs/audit.md): <state_dir>/audit.jsonl rotated at this size, this many
    # files kept (the current one included).
    audit_max_bytes: int = 64 * 1024 * 1024
    audit_files: int = 5
    # A transfer stream the audit cannot parse: "pass" it on (audited as unparsable), or
    # "cut" the session.
    audit_unparsable: AuditUnparsable = "pass"
    # Processes serving SSH connections (docs/daemon.md, "Worker processes"); 1: the daemon's
    # own process serves them all.
    workers: int = 1


# --- value parsers --------------------------------------------------------------------------
# Each takes the raw value (a TOML value, an environment string, or a flag's value) and the
# directory relative paths are taken from, and returns the typed value or raises ValueError
# whose message completes "KEY: ...".

Parser = Callable[[object, Path], object]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_kind(value)}")
    return value.strip()


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _path(value: object, base: Path) -> Path:
    if isinstance(value, Path):
        value = str(value)
    text = _text(value)
    if not text:
        raise ValueError("must be a path, not empty")
    if "\0" in text:  # TOML can spell one; the OS would refuse it later with a bare ValueError
        raise ValueError("must not contain a NUL character")
    path = expand_user(Path(text))
    return path if path.is_absolute() else base / path


def _port(value: object, _base: Path) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a port number from 1 to 65535, not {value!r}")
    if not 1 <= value <= 65535:
        raise ValueError(f"must be a port number from 1 to 65535, not {value}")
    return value


MAX_SESSIONS_LIMIT = 100_000


def _whole(value: object, low: int, high: int, unit: str) -> int:
    """A whole number (or its digits in a string) from ``low`` to ``high``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"must be {unit} from {low} to {high}, not {value!r}")
    return value


def _count(value: object, _base: Path) -> int:
    return _whole(value, 1, MAX_SESSIONS_LIMIT, "a whole number")


WORKERS_LIMIT = 256


def _workers(value: object, _base: Path) -> int:
    return _whole(value, 1, WORKERS_LIMIT, "a whole number of processes")


CHECK_TIMEOUT_LIMIT = 86_400


def _seconds_or_off(value: object, _base: Path) -> int:
    """Whole seconds, 0 for "no limit" (sshd's spelling)."""
    return _whole(value, 0, CHECK_TIMEOUT_LIMIT * 365, "whole seconds (0: no limit)")


@dataclass(frozen=True)
class MaxStartups:
    """sshd's ``MaxStartups start:rate:full``: from ``start`` unauthenticated connections on,
    refuse a new one with probability ``rate`` % rising linearly to 100 % at ``full``."""

    start: int
    rate: int
    full: int

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"


def _max_startups(value: object, _base: Path) -> MaxStartups:
    if isinstance(value, MaxStartups):
        return value
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) \
        else None
    parts = text.split(":") if text else []
    if len(parts) == 1 and parts[0].isdigit():
        parts = [parts[0], "100", parts[0]]  # sshd: a single number is a hard limit
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f'must be "start:rate:full" (e.g. "10:30:100") or a number, '
                         f"not {value!r}")
    start, rate, full = (int(p) for p in parts)
    if not (1 <= start <= full <= MAX_SESSIONS_LIMIT and rate <= 100):
        raise ValueError(f"must have 1 <= start <= full and rate <= 100, not {value!r}")
    return MaxStartups(start, rate, full)


def _seconds(value: object, _base: Path) -> int:
    return _whole(value, 1, CHECK_TIMEOUT_LIMIT, "whole seconds")


AUDIT_MAX_BYTES_RANGE = (4096, 1 << 40)
AUDIT_FILES_LIMIT = 100


def _audit_bytes(value: object, _base: Path) -> int:
    return _whole(value, *AUDIT_MAX_BYTES_RANGE, "whole bytes")


# An SSH window is a uint32 (RFC 4254 §5.2); below one 32 KiB packet nothing could be sent.
CHANNEL_WINDOW_RANGE = (64 * 1024, 1 << 30)


def _channel_window(value: object, _base: Path) -> int:
    return _whole(value, *CHANNEL_WINDOW_RANGE, "whole bytes")


def _audit_files(value: object, _base: Path) -> int:
    return _whole(value, 1, AUDIT_FILES_LIMIT, "whole files")


def _issuer(value: object, _base: Path) -> str:
    text = _text(value).rstrip("/")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme == "https" and parts.hostname:
        return text
    if parts.scheme == "http" and parts.hostname:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return text
        if parts.hostname == "localhost":
            return text
    raise ValueError(f"must be an https:// URL (http:// only on loopback), not {value!r}")


def _nonempty(value: object, _base: Path) -> str:
    text = _text(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _items(value: object) -> list[object]:
    """A TOML list, a Python sequence (flags), or a comma-separated string (environment)."""
    if isinstance(value, str):
        return [item for item in (part.strip() for part in value.split(",")) if item]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"must be a list, not {_kind(value)}")


def _listen(value: object, _base: Path) -> tuple[str, ...]:
    out: list[str] = []
    for item in _items(value):
        try:
            out.append(str(ipaddress.ip_address(_text(item))))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    return tuple(out)


def _host_keys(value: object, base: Path) -> tuple[Path, ...]:
    return tuple(_path(item, base) for item in _items(value))


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(value: object, _base: Path) -> str:
        text = _text(value).lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return text
    return parse


_INTERFACE = re.compile(r"[A-Za-z0-9_.=+-]{1,15}")


def _interface(value: object, _base: Path) -> str:
    text = _text(value)
    if not _INTERFACE.fullmatch(text) or text in (".", ".."):
        raise ValueError(f"{value!r} is not a network interface name (1-15 characters)")
    return text


def _forwarding(key: str) -> Parser:
    parse = VALUE_PARSERS[key]
    return lambda value, _base: parse(value)


PARSERS: dict[str, Parser] = {
    "identity": _choice(get_args(IdentityBackend)),
    "netmap": _path,
    "tailscale_socket": _path,
    "wireguard_interface": _interface,
    "policy": _path,
    "port": _port,
    "listen": _listen,
    "state_dir": _path,
    "recorder_port": _port,
    "host_keys": _host_keys,
    "log_format": _choice(get_args(LogFormat)),
    "log_level": _choice(LOG_LEVELS),
    "local_recording_dir": _path,
    "max_sessions": _count,
    "channel_window": _channel_window,
    "login_grace_time": _seconds_or_off,
    "max_startups": _max_startups,
    "per_source_max_startups": _count,
    "client_alive_interval": _seconds_or_off,
    "client_alive_count_max": _count,
    "idle_timeout": _seconds_or_off,
    "session_max_duration": _seconds_or_off,
    "check_timeout": _seconds,
    "check_oidc_issuer": _issuer,
    "check_oidc_client_id": _nonempty,
    "check_oidc_client_secret_file": _path,
    "check_oidc_claim": _nonempty,
    "check_oidc_max_age": _seconds,
    "check_port": _port,
    **{key: _forwarding(key) for key in FORWARDING_KEYS},
    "match": lambda value, _base: parse_match_blocks(value),
    "audit_max_bytes": _audit_bytes,
    "audit_files": _audit_files,
    "audit_unparsable": _choice(get_args(AuditUnparsable)),
    "workers": _workers,
}
# Keys only the file can set (a table has no environment or flag spelling).
FILE_ONLY_KEYS = frozenset({"match"})


def env_var(key: str) -> str:
    """The environment variable for a config key: ``state_dir`` -> ``TSSH_STATE_DIR``."""
    return ENV_PREFIX + key.upper()


def flag(key: str) -> str:
    """The command-line flag for a config key: ``state_dir`` -> ``--state-dir``."""
    return "--" + key.replace("_", "-")


def _unknown(key: str) -> str:
    near = difflib.get_close_matches(key, PARSERS, n=1)
    return f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw TOML table of ``path``; raises ConfigError with the file name."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    except UnicodeDecodeError as e:  # tomllib decodes the whole file before parsing it
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start});"
            " TOML files are UTF-8"
        ) from e


def load_config(
    path: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
) -> Config:
    """Build the Config: defaults, then the TOML file, then ``TSSH_*`` variables, then flags.

    ``path`` None falls back to ``$TSSH_CONFIG``, else no file. Relative paths in the file
    are taken from the file's directory, others from the current directory. ``overrides``
    holds flag values by key (None means "flag not given"). Raises ConfigError naming the key
    and where the bad value came from.
    """
    values, sources = _layer(path, env, overrides, PARSERS)
    config = Config(**cast(dict[str, Any], values))
    _check_backend(config, sources)
    return config


def load_partial_config(
    path: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    keys: Collection[str],
) -> Config:
    """Like :func:`load_config` for a command that needs only ``keys`` (``tssh ssh``: the
    identity settings): the file's other keys are not read, and the daemon's requirements
    (a policy, say) are not checked."""
    values, _sources = _layer(path, env, overrides, keys)
    return Config(**cast(dict[str, Any], values))


def _layer(
    path: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    keys: Collection[str],
) -> tuple[dict[str, object], dict[str, str]]:
    """The parsed values of ``keys`` and where each came from, later layers winning. A file
    key unknown to tssh is an error only when every key is read."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    every_key = set(keys) >= set(PARSERS)

    def take(key: str, raw: object, source: str, base: Path) -> None:
        try:
            values[key] = PARSERS[key](raw, base)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
        sources[key] = source

    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    if path is not None:
        try:
            path = expand_user(path).absolute()
        except ValueError as e:
            raise ConfigError(f"config file: {e}") from None
        for key, raw in read_config_file(path).items():
            if key in keys:
                take(key, raw, f"{path}: {key}", path.parent)
            elif every_key:  # reading every key, one outside them is unknown
                raise ConfigError(f"{path}: {_unknown(key)}")

    cwd = Path.cwd()
    for key in keys:
        name = env_var(key)
        if name in env and key not in FILE_ONLY_KEYS:
            take(key, env[name], f"environment {name}", cwd)

    for key, raw in overrides.items():
        if key not in PARSERS:
            raise ConfigError(f"{flag(key)}: {_unknown(key)}")
        if raw is not None:
            take(key, raw, flag(key), cwd)
    return values, sources


def _check_backend(config: Config, sources: Mapping[str, str]) -> None:
    """Settings that only make sense together (the identity backend and what it needs)."""

    def where(key: str) -> str:
        return f"set {key} in the config file, {env_var(key)} or {flag(key)}"

    chosen = f"identity {config.identity!r}"
    if "identity" in sources:
        chosen += f" (from {sources['identity']})"
    if config.identity == "netmap" and config.netmap is None:
        raise ConfigError(f"{chosen} needs a netmap file: {where('netmap')}")
    if config.identity == "wireguard":
        if config.wireguard_interface is None:
            raise ConfigError(
                f"{chosen} needs the WireGuard interface: {where('wireguard_interface')}"
            )
        if config.netmap is None:
            raise ConfigError(
                f"{chosen} needs an inventory of nodes and their keys: {where('netmap')}"
            )
    if config.check_oidc_issuer is not None and config.check_oidc_client_id is None:
        raise ConfigError(
            f"check_oidc_issuer needs the client's id: {where('check_oidc_client_id')}")
    if config.identity != "tailscale" and config.policy is None:
        raise ConfigError(
            f"{chosen} needs a policy file (only the tailscale backend can take the policy"
            f" from the tailnet): {where('policy')}"
        )
