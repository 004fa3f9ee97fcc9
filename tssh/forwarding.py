"""Which forwards a connection may open: sshd's forwarding keywords and ``Match``, resolved.

Pure: the config's values in, one ``ForwardingSettings`` per connection out, and the checks
each forward request goes through. No I/O, so the config loader and the daemon share it.
See docs/config.md, "Forwarding", for the keys and docs/daemon.md, "Forwarding", for what
the daemon does with them.

Resolution is sshd's rule for ``Match``: every ``[[match]]`` block whose criteria all hold
is read in file order and the *first* value found for each key wins; keys no matching block
sets come from the top level (itself defaults, then file, environment, flags).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from tssh.identity.base import Peer
from tssh.policy.selectors import Selector, parse_selector, src_matches

Mode = Literal["yes", "no", "local", "remote"]
MODES: tuple[Mode, ...] = ("yes", "no", "local", "remote")
FORWARDING_KEYS = ("allow_tcp_forwarding", "allow_stream_local_forwarding",
                   "allow_agent_forwarding", "permit_open", "permit_listen", "gateway_ports")
MATCH_CRITERIA = ("src", "users", "recorded")
ANY = "*"


@dataclass(frozen=True)
class Permit:
    """One ``host:port`` entry of ``permit_open`` / ``permit_listen``; ``*`` matches any."""

    host: str
    port: int | None  # None: any port

    def matches(self, host: str, port: int) -> bool:
        host_ok = self.host == ANY or _same_host(self.host, host)
        return host_ok and (self.port is None or self.port == port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{ANY if self.port is None else self.port}"


def _same_host(pattern: str, host: str) -> bool:
    try:
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(host)
    except ValueError:
        return pattern.lower() == host.lower()


@dataclass(frozen=True)
class ForwardingSettings:
    """The effective settings of one connection, and where each came from (for
    ``--explain`` and refusal texts: ``"default"``, ``"top level"`` or ``"match N"``)."""

    allow_tcp_forwarding: Mode = "yes"
    allow_stream_local_forwarding: Mode = "yes"
    allow_agent_forwarding: bool = True
    permit_open: tuple[Permit, ...] | None = None  # None: any destination
    permit_listen: tuple[Permit, ...] | None = None  # None: any listen address
    gateway_ports: bool = False
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, object]:
        def permits(value: tuple[Permit, ...] | None) -> list[str] | str:
            return "any" if value is None else [str(p) for p in value]

        return {
            "allow_tcp_forwarding": self.allow_tcp_forwarding,
            "allow_stream_local_forwarding": self.allow_stream_local_forwarding,
            "allow_agent_forwarding": self.allow_agent_forwarding,
            "permit_open": permits(self.permit_open),
            "permit_listen": permits(self.permit_listen),
            "gateway_ports": self.gateway_ports,
            "from": dict(self.origins),
        }


@dataclass(frozen=True)
class MatchBlock:
    """One ``[[match]]`` table: criteria (None: not given) and the keys it sets."""

    index: int  # 1-based, in file order
    src: tuple[Selector, ...] | None = None
    users: tuple[str, ...] | None = None
    recorded: bool | None = None
    values: Mapping[str, object] = field(default_factory=dict)

    def matches(self, peer: Peer, local_user: str, recorded: bool,
                groups: Mapping[str, tuple[str, ...]]) -> bool:
        if self.src is not None and not any(src_matches(s, peer, groups) for s in self.src):
            return False
        if self.users is not None and local_user not in self.users:
            return False
        return self.recorded is None or self.recorded == recorded


@dataclass(frozen=True)
class ForwardingConfig:
    """The top level's values (every key, defaults included) and the match blocks."""

    top: ForwardingSettings = ForwardingSettings()
    blocks: tuple[MatchBlock, ...] = ()
    top_origins: Mapping[str, str] = field(default_factory=dict)  # key -> "top level"


def effective_forwarding(config: ForwardingConfig, peer: Peer, local_user: str,
                         recorded: bool,
                         groups: Mapping[str, tuple[str, ...]] | None = None
                         ) -> ForwardingSettings:
    """The settings for a connection from ``peer`` running as ``local_user``; ``recorded``:
    its rule records sessions. ``groups``: the policy's, for ``group:`` selectors."""
    chosen: dict[str, object] = {}
    origins: dict[str, str] = {}
    for block in config.blocks:
        if not block.matches(peer, local_user, recorded, groups or {}):
            continue
        for key, value in block.values.items():
            if key not in chosen:
                chosen[key] = value
                origins[key] = f"match {block.index}"
    for key in FORWARDING_KEYS:
        if key not in chosen:
            chosen[key] = getattr(config.top, key)
            origins[key] = config.top_origins.get(key, "default")
    return ForwardingSettings(
        allow_tcp_forwarding=cast(Mode, chosen["allow_tcp_forwarding"]),
        allow_stream_local_forwarding=cast(Mode, chosen["allow_stream_local_forwarding"]),
        allow_agent_forwarding=bool(chosen["allow_agent_forwarding"]),
        permit_open=cast("tuple[Permit, ...] | None", chosen["permit_open"]),
        permit_listen=cast("tuple[Permit, ...] | None", chosen["permit_listen"]),
        gateway_ports=bool(chosen["gateway_ports"]),
        origins=origins,
    )


# --- the checks each forward goes through ------------------------------------------------
# Each returns None (allowed) or the refusal text the client sees (a channel-open failure
# "administratively prohibited"), naming the setting that refused and where it came from.

Direction = Literal["local", "remote"]


def _where(settings: ForwardingSettings, key: str) -> str:
    origin = settings.origins.get(key, "default")
    return "" if origin in ("default", "top level") else f" ({origin})"


def _mode_refusal(settings: ForwardingSettings, key: str, direction: Direction,
                  what: str) -> str | None:
    mode: Mode = getattr(settings, key)
    if mode == "yes" or mode == direction:
        return None
    return f'tssh: {key} = "{mode}" refuses {what}{_where(settings, key)}'


def tcp_refusal(settings: ForwardingSettings, direction: Direction, host: str,
                port: int) -> str | None:
    """``direction`` local: ``-L``/``-D``/``-W`` to host:port; remote: ``-R`` listening
    on host:port."""
    what = "local forwarding" if direction == "local" else "remote forwarding"
    refusal = _mode_refusal(settings, "allow_tcp_forwarding", direction, what)
    if refusal is not None:
        return refusal
    key = "permit_open" if direction == "local" else "permit_listen"
    permits: tuple[Permit, ...] | None = getattr(settings, key)
    if permits is None or any(p.matches(host, port) for p in permits):
        return None
    target = str(Permit(host, port))
    return f"tssh: {key} does not include {target}{_where(settings, key)}"


def stream_local_refusal(settings: ForwardingSettings, direction: Direction) -> str | None:
    what = ("Unix socket forwarding to this node" if direction == "local"
            else "Unix socket listeners on this node")
    return _mode_refusal(settings, "allow_stream_local_forwarding", direction, what)


def agent_refusal(settings: ForwardingSettings) -> str | None:
    if settings.allow_agent_forwarding:
        return None
    return ("tssh: allow_agent_forwarding = false refuses agent forwarding"
            + _where(settings, "allow_agent_forwarding"))


X11_REFUSAL = "tssh: X11 forwarding is not supported by this server"


def listen_address(settings: ForwardingSettings, requested: str) -> str:
    """Where a ``-R`` listener binds: loopback unless ``gateway_ports``, as sshd's
    ``GatewayPorts no`` (the client's address is then ignored)."""
    host = requested.strip()
    if not settings.gateway_ports:
        return "::1" if _is_v6_loopback(host) else "127.0.0.1"
    if host in ("", ANY, "0.0.0.0"):
        return "0.0.0.0"
    if host == "localhost":
        return "127.0.0.1"
    return host


def _is_v6_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address("::1")
    except ValueError:
        return False


# --- value parsers (shared by the top level and [[match]] blocks) -------------------------
# Each raises ValueError with a message that completes "KEY: ...".


def parse_mode(value: object) -> Mode:
    if isinstance(value, bool):  # sshd's yes/no spelt as TOML booleans
        return "yes" if value else "no"
    if not isinstance(value, str) or value.strip().lower() not in MODES:
        raise ValueError(f'must be one of "yes", "no", "local", "remote", not {value!r}')
    return cast(Mode, value.strip().lower())


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "1", "no", "false",
                                                            "0"):
        return value.strip().lower() in ("yes", "true", "1")
    raise ValueError(f"must be true or false, not {value!r}")


def parse_permit(text: object) -> Permit:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not host:port")
    entry = text.strip()
    if entry == ANY:
        return Permit(ANY, None)
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host:port ([v6 address]:port for IPv6)")
        port_text = rest[1:]
    else:
        host, sep, port_text = entry.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"{text!r} is not host:port ([v6 address]:port for IPv6)")
    if port_text == ANY:
        return Permit(host, None)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be 0-65535 or *")
    return Permit(host, int(port_text))


def parse_permits(value: object) -> tuple[Permit, ...] | None:
    """A list of ``host:port``; ``"any"`` (or ``["any"]``) allows any, ``"none"`` nothing;
    a comma-separated string is read as a list (the environment's form)."""
    if isinstance(value, str):
        if value.strip().lower() == "any":
            return None
        items: list[object] = [p for p in (v.strip() for v in value.split(",")) if p]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("must be a list of host:port")
    if len(items) == 1 and isinstance(items[0], str) and items[0].strip().lower() == "any":
        return None
    if len(items) == 1 and isinstance(items[0], str) and items[0].strip().lower() == "none":
        return ()
    return tuple(parse_permit(item) for item in items)


VALUE_PARSERS = {
    "allow_tcp_forwarding": parse_mode,
    "allow_stream_local_forwarding": parse_mode,
    "allow_agent_forwarding": parse_bool,
    "permit_open": parse_permits,
    "permit_listen": parse_permits,
    "gateway_ports": parse_bool,
}


def parse_match_blocks(value: object) -> tuple[MatchBlock, ...]:
    """The ``[[match]]`` array of tables; ValueError names the block and key."""
    if not isinstance(value, list | tuple):
        raise ValueError("must be an array of tables ([[match]]), set in the config file")
    blocks = []
    for number, table in enumerate(value, start=1):
        if isinstance(table, MatchBlock):  # already parsed (a Config passed on)
            blocks.append(table)
            continue
        if not isinstance(table, dict):
            raise ValueError(f"block {number}: must be a table")
        blocks.append(_parse_block(number, table))
    return tuple(blocks)


def _parse_block(number: int, table: Mapping[str, object]) -> MatchBlock:
    where = f"block {number}"
    src: tuple[Selector, ...] | None = None
    users: tuple[str, ...] | None = None
    recorded: bool | None = None
    values: dict[str, object] = {}
    for key, raw in table.items():
        try:
            if key == "src":
                src = tuple(parse_selector(_string(s)) for s in _list(raw))
            elif key == "users":
                users = tuple(_string(u).strip() for u in _list(raw))
            elif key == "recorded":
                recorded = parse_bool(raw)
            elif key in VALUE_PARSERS:
                values[key] = VALUE_PARSERS[key](raw)
            else:
                known = ", ".join((*MATCH_CRITERIA, *FORWARDING_KEYS))
                raise ValueError(f"unknown key (a match block takes {known})")
        except ValueError as e:
            raise ValueError(f"{where}: {key}: {e}") from None
    if src is None and users is None and recorded is None:
        raise ValueError(f"{where}: needs at least one criterion: src, users or recorded")
    if not values:
        raise ValueError(f"{where}: sets none of {', '.join(FORWARDING_KEYS)}")
    return MatchBlock(number, src, users, recorded, values)


def _list(value: object) -> list[object]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and value:
        return list(value)
    raise ValueError("must be a non-empty list of strings")


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a non-empty string")
    return value
