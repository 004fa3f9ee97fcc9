"""How tests and benchmarks run the stock OpenSSH client: no user config, no prompts, no
known_hosts (the servers under test make fresh host keys every run)."""

from __future__ import annotations

CLIENT_OPTIONS = (
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
)
