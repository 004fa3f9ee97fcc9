"""Who is this peer? One Resolver interface, one module per backend."""
