"""The reliability lab: the whole product on a WireGuard tailnet under faults, slow links,
load and hostile input (docs/reliability.md)."""
