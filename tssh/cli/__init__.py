"""Command-line front end: one module per command group, parsing only."""
