"""Who is this peer? One Resolver interface (``base``), one module per backend.

``open_resolver`` builds the backend a daemon's Config names.
"""

from tssh.identity.base import Peer, Resolver
from tssh.identity.factory import open_resolver

__all__ = ["Peer", "Resolver", "open_resolver"]
