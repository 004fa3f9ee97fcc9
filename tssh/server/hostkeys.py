"""Host keys: configured files, else the system's sshd keys (root), else our own, made once.

Reusing ``/etc/ssh`` keys keeps clients' known_hosts valid when tssh replaces sshd on a node.
Generated keys (ed25519 and RSA 3072) live in the state dir, mode 0600, and are reused on
every start; the first daemon to publish one wins.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from tssh.errors import ConfigError

log = logging.getLogger("tssh.hostkeys")

SYSTEM_DIR = Path("/etc/ssh")
KEY_TYPES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ed25519", "ssh-ed25519", {}),
    ("rsa", "ssh-rsa", {"key_size": 3072}),
)


def _load(path: Path) -> Any:
    """Read a private host key, refusing one that other users may read or change (as sshd
    does; group read is allowed for systems that share keys with a key-signing group)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o037:
            raise ConfigError(
                f"host key {path} is accessible by other users (mode {mode:o}); "
                f"chmod 600 {path}"
            )
        return asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError) as e:
        raise ConfigError(f"cannot read host key {path}: {e}") from None


def _generate(path: Path, alg: str, options: dict[str, Any]) -> Any:
    """Make a key and publish it at ``path`` unless another daemon got there first.

    The key is written to a fresh 0600 temp file (``mkstemp``: never an existing file whose
    mode could be wider) and hard-linked into place, which fails if ``path`` exists: two
    daemons starting at once both end up serving the one key on disk.
    """
    key = asyncssh.generate_private_key(alg, **options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key.export_private_key("openssh"))
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except FileExistsError:
        return _load(path)
    except OSError as e:
        raise ConfigError(f"cannot write host key {path}: {e.strerror or e}") from None
    log.info("generated host key", extra={"path": str(path), "type": alg})
    return key


def host_keypairs(keys: Sequence[Any], algorithms: Sequence[str]) -> list[Any]:
    """``keys`` as key pairs that offer only ``algorithms`` as host key algorithms.

    asyncssh advertises every signature an RSA key can make, SHA-1 ``ssh-rsa`` and the
    ``ssh-rsa-sha*@ssh.com`` variants included; docs/daemon.md allows only rsa-sha2-* for RSA.
    A key left with no allowed algorithm is a configuration error, not silently dropped.
    """
    allowed = [a.encode("ascii") for a in algorithms]
    pairs = asyncssh.load_keypairs(list(keys))
    for pair in pairs:
        offered = [a for a in allowed if a in pair.host_key_algorithms]
        if not offered:
            raise ConfigError(
                f"host key type {pair.algorithm.decode('ascii', 'replace')} is not allowed;"
                f" use an ed25519 or RSA key"
            )
        pair.host_key_algorithms = offered
    return list(pairs)


def load_host_keys(configured: Sequence[Path], state_dir: Path) -> list[Any]:
    """The host keys to serve, in preference order (ed25519 first)."""
    if configured:
        return [_load(p) for p in configured]
    keys: list[Any] = []
    if os.geteuid() == 0:
        for name, _alg, _opts in KEY_TYPES:
            path = SYSTEM_DIR / f"ssh_host_{name}_key"
            if path.is_file():
                keys.append(_load(path))
        if keys:
            return keys
    for name, alg, opts in KEY_TYPES:
        path = state_dir / f"ssh_host_{name}_key"
        keys.append(_load(path) if path.is_file() else _generate(path, alg, opts))
    return keys
