"""tssh-recorder: receives, stores, seals, indexes and serves session recordings."""

__version__ = "0.1.0"
