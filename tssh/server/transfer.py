"""Which exec commands are file transfers, and what the daemon runs for them.

A file transfer's recording holds only metadata (its stdout is a protocol stream; see
docs/recording.md), so the daemon calls a command a transfer only when it runs the transfer
program itself, with arguments it has parsed and vetted, and never through the user's shell:
otherwise ``rsync --server; exec bash -i`` would be an unrecorded shell (docs/security.md).

A command is a transfer when all of these hold:

- the account's login shell is a general-purpose shell (``GENERAL_SHELLS`` in one of
  ``TRUSTED_DIRS``): a restricted shell (``git-shell``, ``nologin``, ``rbash``, ...) decides
  for itself what its user may run, so its commands always go through it;
- the command is a plain list of words in POSIX shell quoting (single quotes, double quotes,
  backslashes), with no shell metacharacter outside quotes and no expansion anywhere
  (``split_words``);
- the first word is ``scp`` or ``rsync``, bare or as one of the ``TRUSTED_DIRS`` paths, and
  the program is found there (by the resolver passed in: the only I/O here);
- the other words are what OpenSSH's scp (legacy protocol, ``scp -O``) or the rsync client
  sends to the remote side: ``scp_arguments_ok`` and ``rsync_arguments_ok`` say exactly what.

``parse_transfer`` is pure given its resolver.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Where the daemon looks for the transfer programs, in this order (never the user's PATH).
TRUSTED_DIRS = ("/usr/bin", "/bin", "/usr/local/bin")
# Login shells that run whatever ``-c`` is given: for their users, direct exec bypasses
# nothing the shell would have refused. Anything else (restricted shells included) is not.
GENERAL_SHELLS = frozenset({
    "sh", "bash", "dash", "ash", "ksh", "ksh93", "mksh", "lksh", "pdksh", "oksh", "zsh",
    "yash", "posh", "fish", "csh", "tcsh",
})
PROGRAMS = ("scp", "rsync")

# Outside quotes, any of these makes the command a shell command: operators, redirections,
# subshells, expansions, globs, braces, comments, history/negation.
_UNQUOTED_META = frozenset(";&|<>()$`*?[{#!")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # newline included; tab separates words

Resolver = Callable[[str], str | None]


@dataclass(frozen=True)
class TransferCommand:
    """An exec command the daemon runs itself, without a shell."""

    protocol: str  # "scp" | "rsync"
    executable: str  # absolute path, found in TRUSTED_DIRS
    argv: tuple[str, ...]  # argv[0] as the command wrote it


def split_words(command: str) -> list[str] | None:
    """The words of ``command`` as a POSIX shell would split it, or None if the shell would
    do anything more than split and unquote it (expansions, operators, globs, ...)."""
    if _CONTROL.search(command):
        return None
    words: list[str] = []
    word: list[str] | None = None  # None: between words
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        if word is None:
            if c == "~":  # tilde expansion
                return None
            word = []
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                return None
            word.append(command[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    return None
                c = command[i]
                if c == '"':
                    i += 1
                    break
                if c in "$`":  # expansions inside double quotes
                    return None
                if c == "\\" and i + 1 < n and command[i + 1] in '$`"\\':
                    word.append(command[i + 1])
                    i += 2
                    continue
                word.append(c)
                i += 1
        elif c == "\\":
            if i + 1 >= n:
                return None
            word.append(command[i + 1])
            i += 2
        elif c in _UNQUOTED_META:
            return None
        else:
            word.append(c)
            i += 1
    if word is not None:
        words.append("".join(word))
    return words


# --- scp ------------------------------------------------------------------------------
# OpenSSH's scp in legacy mode runs ``scp [-v] [-r] [-p] [-d] -t|-f [--] PATH...`` remotely;
# ``-q`` is accepted too (it only silences scp).
_SCP_FLAGS = frozenset({"-r", "-p", "-d", "-v", "-q"})


def scp_arguments_ok(args: Sequence[str]) -> bool:
    """``scp`` in server mode: one of ``-t`` (sink, one target) and ``-f`` (source, one or more
    paths), the flags the client sends, ``--``, paths. A path that starts with ``-`` must come
    after ``--`` (so no getopt can take it for an option)."""
    mode = None
    i = 0
    dashdash = False
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            dashdash = True
            break
        if arg in ("-t", "-f"):
            if mode is not None:
                return False
            mode = arg
        elif arg not in _SCP_FLAGS:
            if arg.startswith("-"):
                return False
            i -= 1
            break
    paths = args[i:]
    if mode is None or not paths:
        return False
    if mode == "-t" and len(paths) != 1:
        return False
    return dashdash or not any(p.startswith("-") for p in paths)


# --- rsync ----------------------------------------------------------------------------
# What rsync's client puts on the remote command line (options.c: server_options()), minus
# everything that lets the server read arguments or a configuration we have not vetted:
#   --daemon (rsync reads rsyncd.conf, by default from the home directory, whose
#   ``pre-xfer exec``/``post-xfer exec``/``early exec``/``name converter`` run commands),
#   --config, -M/--dparam (daemon parameters), -M/--remote-option, and -s/--protect-args/
#   --secluded-args (the real arguments then come over stdin, unseen here);
# ``--server`` must come first: rsync reads ~/.popt (option aliases) until it has seen it.
_RSYNC_SHORT = frozenset("vqbunldKmOJyLkWHogDtUNpEAXrcCIRxSz")
_RSYNC_E_VALUE = re.compile(r"(?:\.|[0-9]+\.[0-9]+)[A-Za-z]*")  # -e.iLsfxCIvu: capabilities
_RSYNC_FLAGS = frozenset({
    "--sender", "--list-only", "--no-r", "--no-specials", "--specials", "--msgs2stderr",
    "--no-msgs2stderr", "--new-compress", "--old-compress", "--delete", "--delete-before",
    "--delete-delay", "--delete-during", "--delete-after", "--delete-excluded", "--force",
    "--super", "--fake-super", "--size-only", "--stats", "--delete-missing-args",
    "--ignore-missing-args", "--delay-updates", "--partial", "--ignore-errors",
    "--copy-unsafe-links", "--safe-links", "--numeric-ids", "--use-qsort",
    "--ignore-existing", "--existing", "--fsync", "--append", "--inplace", "--no-W",
    "--from0", "--no-relative", "--no-implied-dirs", "--write-devices",
    "--remove-source-files", "--remove-sent-files", "--copy-devices", "--preallocate",
    "--open-noatime", "--mkpath",
})
_RSYNC_VALUED = frozenset({  # only as --name=value
    "--compress-level", "--log-format", "--timeout", "--bwlimit", "--suffix",
    "--checksum-choice", "--compress-choice", "--max-delete", "--min-size", "--max-size",
    "--skip-compress", "--max-alloc", "--modify-window", "--checksum-seed", "--usermap",
    "--groupmap", "--info", "--debug", "--iconv",
})
_RSYNC_PATH_VALUED = frozenset({  # --name=value, or --name value
    "--backup-dir", "--partial-dir", "--temp-dir", "--compare-dest", "--copy-dest",
    "--link-dest", "--files-from",
})


def _rsync_short_ok(arg: str) -> bool:
    """A cluster of short flags (``-logDtpre.iLsfxCIvu``), ``-B<size>`` or ``-@<window>``."""
    if re.fullmatch(r"-B[0-9]+|-@-?[0-9]+", arg):
        return True
    letters = arg[1:]
    if not letters:
        return False
    for k, letter in enumerate(letters):
        if letter == "e":  # takes the rest of the cluster as its value
            return _RSYNC_E_VALUE.fullmatch(letters[k + 1:]) is not None
        if letter not in _RSYNC_SHORT:
            return False
    return True


def rsync_arguments_ok(args: Sequence[str]) -> bool:
    """``rsync --server [OPTIONS] . PATH...`` with only the options listed above; ``.`` is
    the placeholder the client always sends; no path may start with ``-``."""
    if not args or args[0] != "--server":
        return False
    i = 1
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, eq, _ = arg.partition("=")
            if eq:
                if name not in _RSYNC_VALUED and name not in _RSYNC_PATH_VALUED:
                    return False
            elif name in _RSYNC_PATH_VALUED:
                if i >= len(args) or args[i].startswith("-"):
                    return False
                i += 1
            elif name not in _RSYNC_FLAGS:
                return False
        elif not _rsync_short_ok(arg):
            return False
    rest = args[i:]
    if len(rest) < 2 or rest[0] != ".":
        return False
    return not any(p.startswith("-") for p in rest[1:])


_CHECKS: dict[str, Callable[[Sequence[str]], bool]] = {
    "scp": scp_arguments_ok, "rsync": rsync_arguments_ok,
}


def is_general_shell(login_shell: str) -> bool:
    """A general-purpose shell installed where the system keeps them (not a restricted one)."""
    directory, name = os.path.split(login_shell)
    return name in GENERAL_SHELLS and directory in TRUSTED_DIRS


def program_name(word: str) -> str | None:
    """``scp``/``rsync`` if ``word`` names one bare or at one of the trusted paths."""
    if word in PROGRAMS:
        return word
    directory, name = os.path.split(word)
    if name in PROGRAMS and directory in TRUSTED_DIRS:
        return name
    return None


def trusted_program(word: str) -> str | None:
    """The resolver the daemon uses: ``word`` itself if it is a path in ``TRUSTED_DIRS``,
    else the first of ``TRUSTED_DIRS`` holding it; only a regular, executable file owned by
    root and not writable by group or others counts."""
    directory, name = os.path.split(word)
    if directory:
        candidates = [word] if directory in TRUSTED_DIRS else []
    else:
        candidates = [os.path.join(d, name) for d in TRUSTED_DIRS]
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (stat.S_ISREG(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022
                and st.st_mode & 0o111):
            return path
    return None


def parse_transfer(command: str, login_shell: str,
                   resolve: Resolver = trusted_program) -> TransferCommand | None:
    """The transfer the daemon runs for exec ``command``, or None: an ordinary command, run
    by the login shell and recorded in full. Pure but for ``resolve`` (called last, once)."""
    if not is_general_shell(login_shell):
        return None
    words = split_words(command)
    if not words:
        return None
    protocol = program_name(words[0])
    if protocol is None or not _CHECKS[protocol](words[1:]):
        return None
    executable = resolve(words[0])
    if executable is None:
        return None
    return TransferCommand(protocol, executable, tuple(words))
