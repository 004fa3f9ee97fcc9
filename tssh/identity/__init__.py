"""Who is this peer? One Resolver interface (``base``), one module per backend.

``factory.open_resolver`` builds the backend a daemon's Config names. Nothing is imported
here: the recording worker uses ``Peer`` without loading every backend's HTTP client.
"""
