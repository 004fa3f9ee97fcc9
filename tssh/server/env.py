"""The environment a session's process starts with, built the way OpenSSH builds it.

Pure: the caller passes the account, the connection's addresses and what the client sent.
Client-sent variables pass only when they are ``TERM``, ``LANG``, ``LC_*`` or match one of
the rule's ``acceptEnv`` patterns, and never when they could make a loader or an interpreter
run code the user did not ask for (``LD_PRELOAD``, ``BASH_ENV``, ``PYTHONSTARTUP``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tssh.policy.acceptenv import glob_match, is_dangerous

# Debian's OpenSSH defaults (``_PATH_STDPATH`` and the root variant).
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_NAME = re.compile(r"[A-Za-z0-9_-]+")

# Set by the daemon; a client can never override them whatever acceptEnv says.
_PROTECTED = frozenset(
    {"USER", "LOGNAME", "HOME", "SHELL", "PATH", "MAIL", "SSH_CLIENT", "SSH_CONNECTION",
     "SSH_TTY", "SSH_AUTH_SOCK", "SSH_ORIGINAL_COMMAND"}
)

# Names that make the dynamic loader, libc or an interpreter load or run something.
_DENIED_NAMES = frozenset(
    {"BASH_ENV", "ENV", "IFS", "CDPATH", "PS4", "SHELLOPTS", "BASHOPTS", "PROMPT_COMMAND",
     "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
     "PERLLIB", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
     "NLSPATH", "RES_OPTIONS", "GLIBC_TUNABLES", "RESOLV_HOST_CONF", "GIT_EXEC_PATH",
     "GIT_CONFIG_PARAMETERS"}
)
_DENIED_PREFIXES = (
    "LD_", "DYLD_", "PYTHON", "PERL5", "PERLIO", "RUBY", "BASH_FUNC_", "MALLOC_", "GIT_CONFIG_",
    "LUA_", "TCL", "PHP",
)


def is_denied(name: str) -> bool:
    """True for names no client may ever set, whatever the policy's acceptEnv says.

    The policy's own refusals (``tssh.policy.acceptenv``: linker variables in any case,
    unsafe characters) plus the interpreter and shell hooks listed here.
    """
    if is_dangerous(name) or not _NAME.fullmatch(name):
        return True
    return name in _DENIED_NAMES or name in _PROTECTED or name.startswith(_DENIED_PREFIXES)


def is_accepted(name: str, accept_env: Iterable[str]) -> bool:
    """Whether a client-sent variable may reach the session's process."""
    if is_denied(name):
        return False
    if name in ("TERM", "LANG") or name.startswith("LC_"):
        return True
    return any(glob_match(pattern, name) for pattern in accept_env)


@dataclass(frozen=True)
class SessionEnvInput:
    """What the daemon knows when it builds a session's environment."""

    user: str
    home: str
    shell: str
    uid: int
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    term: str | None = None  # from the pty request
    tty: str | None = None  # slave path, e.g. /dev/pts/3


def build_env(
    info: SessionEnvInput, client_env: Mapping[str, str], accept_env: Iterable[str]
) -> dict[str, str]:
    """The process environment: the daemon's variables win over anything the client sent."""
    patterns = tuple(accept_env)
    env: dict[str, str] = {}
    for name, value in client_env.items():
        if "\0" in value or "\0" in name:
            continue
        if is_accepted(name, patterns):
            env[name] = value
    env.update(
        USER=info.user,
        LOGNAME=info.user,
        HOME=info.home,
        SHELL=info.shell,
        PATH=ROOT_PATH if info.uid == 0 else USER_PATH,
        MAIL=f"/var/mail/{info.user}",
        SSH_CLIENT=f"{info.peer_ip} {info.peer_port} {info.local_port}",
        SSH_CONNECTION=f"{info.peer_ip} {info.peer_port} {info.local_ip} {info.local_port}",
    )
    if info.tty is not None:
        env["SSH_TTY"] = info.tty
    if info.term is not None and "\0" not in info.term:  # from the pty request, unchecked
        env["TERM"] = info.term
    return env
