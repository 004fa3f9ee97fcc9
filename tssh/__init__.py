"""tssh: keyless SSH for tailnets, decided by a Tailscale-format policy, with session recording."""

__version__ = "0.1.0"
