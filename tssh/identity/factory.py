"""Build the identity backend that a daemon's configuration names."""

from __future__ import annotations

from tssh.config import Config
from tssh.errors import ConfigError
from tssh.identity.base import Resolver
from tssh.identity.netmap import NetmapResolver
from tssh.identity.tailscale import TailscaleResolver
from tssh.identity.wireguard import WireGuardResolver


def open_resolver(config: Config) -> Resolver:
    """The Resolver for ``config.identity``.

    Raises ConfigError when a setting the backend needs is missing, IdentityError when its
    file cannot be read or is invalid. Nothing is contacted yet for ``tailscale``: tailscaled
    may start after the daemon, so its errors surface on first use.
    """
    if config.identity == "netmap":
        if config.netmap is None:
            raise ConfigError("identity \"netmap\" needs a netmap file (netmap = \"FILE\")")
        return NetmapResolver.from_file(config.netmap)
    if config.identity == "tailscale":
        return TailscaleResolver(config.tailscale_socket)
    if config.identity == "wireguard":
        if config.wireguard_interface is None:
            raise ConfigError(
                "identity \"wireguard\" needs the interface (wireguard_interface = \"wg0\")"
            )
        if config.netmap is None:
            raise ConfigError(
                "identity \"wireguard\" needs an inventory of nodes and keys (netmap = \"FILE\")"
            )
        return WireGuardResolver.from_file(config.wireguard_interface, config.netmap)
    raise ConfigError(f"unknown identity backend {config.identity!r}")
