"""Which exec commands the daemon runs itself as file transfers (tssh.server.transfer).

Pure: the resolver is a fake, so nothing here depends on what is installed.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tssh.server.transfer import (
    TRUSTED_DIRS,
    TransferCommand,
    is_general_shell,
    parse_transfer,
    split_words,
    trusted_program,
)

BASH = "/bin/bash"


def fake_resolve(word: str) -> str | None:
    return word if word.startswith("/") else f"/usr/bin/{word}"


def parse(command: str, shell: str = BASH) -> TransferCommand | None:
    return parse_transfer(command, shell, resolve=fake_resolve)


def argv(command: str) -> tuple[str, ...] | None:
    result = parse(command)
    return result.argv if result is not None else None


# --- what the stock clients send -------------------------------------------------------

@pytest.mark.parametrize(("command", "expected"), [
    # OpenSSH scp -O (legacy protocol), as captured from the client
    ("scp -t dest", ("scp", "-t", "dest")),
    ("scp -r -p -t a", ("scp", "-r", "-p", "-t", "a")),
    ("scp -f -- -x", ("scp", "-f", "--", "-x")),
    ("scp -v -d -t dir", ("scp", "-v", "-d", "-t", "dir")),
    ("scp -d -f x y", ("scp", "-d", "-f", "x", "y")),
    ("scp -q -f x", ("scp", "-q", "-f", "x")),
    ("scp -t 'a b'", ("scp", "-t", "a b")),
    ('scp -f "it\'s \\"q\\"" b\\ c', ("scp", "-f", 'it\'s "q"', "b c")),
    ("/usr/bin/scp -t .", ("/usr/bin/scp", "-t", ".")),
    ("/usr/local/bin/scp -t .", ("/usr/local/bin/scp", "-t", ".")),
    # rsync, as captured from rsync 3.x clients
    ("rsync --server -logDtpre.iLsfxCIvu . dest/",
     ("rsync", "--server", "-logDtpre.iLsfxCIvu", ".", "dest/")),
    ("rsync --server --sender -logDtpre.iLsfxCIvu . src/",
     ("rsync", "--server", "--sender", "-logDtpre.iLsfxCIvu", ".", "src/")),
    ("rsync --server -vlogDtprze.iLsfxCIvu --bwlimit=100 --delete --partial . dest\\ dir/",
     ("rsync", "--server", "-vlogDtprze.iLsfxCIvu", "--bwlimit=100", "--delete", "--partial",
      ".", "dest dir/")),
    ("rsync --server -blogDtpre.iLsfxCIvu --iconv=latin1 --backup-dir bk --suffix=.b "
     "--max-size=10485760 --delete-after --size-only --numeric-ids --usermap=\\*:a "
     "--groupmap=\\*:b --ignore-existing --append --remove-source-files . d/",
     ("rsync", "--server", "-blogDtpre.iLsfxCIvu", "--iconv=latin1", "--backup-dir", "bk",
      "--suffix=.b", "--max-size=10485760", "--delete-after", "--size-only", "--numeric-ids",
      "--usermap=*:a", "--groupmap=*:b", "--ignore-existing", "--append",
      "--remove-source-files", ".", "d/")),
    ("rsync --server -logDtpre.iLsfxCIvu --timeout=5 --checksum-choice=md5 "
     "--compress-choice=zstd --partial-dir .p --temp-dir /tmp --link-dest ../x . d/",
     ("rsync", "--server", "-logDtpre.iLsfxCIvu", "--timeout=5", "--checksum-choice=md5",
      "--compress-choice=zstd", "--partial-dir", ".p", "--temp-dir", "/tmp", "--link-dest",
      "../x", ".", "d/")),
    ("rsync --server -logDtpre.iLsfxCIvu --fake-super . d/\\$x\\;y",
     ("rsync", "--server", "-logDtpre.iLsfxCIvu", "--fake-super", ".", "d/$x;y")),
    ("rsync --server -logDtpre.iLsfxCIvu . it\\'s\\ \\\"q\\\"/",
     ("rsync", "--server", "-logDtpre.iLsfxCIvu", ".", "it's \"q\"/")),
    ("rsync --server -e31.0iLsfxCIvu -B1024 -@-1 . d", (
        "rsync", "--server", "-e31.0iLsfxCIvu", "-B1024", "-@-1", ".", "d")),
    ("/bin/rsync --server --sender -r . x", ("/bin/rsync", "--server", "--sender", "-r", ".",
                                             "x")),
])
def test_client_commands_are_transfers(command: str, expected: tuple[str, ...]) -> None:
    result = parse(command)
    assert result is not None
    assert result.argv == expected
    assert result.protocol == os.path.basename(expected[0])
    assert result.executable == fake_resolve(expected[0])


# --- the bypasses, and everything else that is a shell command --------------------------

@pytest.mark.parametrize("command", [
    # the reported bypasses
    "rsync --server </dev/null >/dev/null 2>&1; echo SECRET",
    "rsync --server 2>/dev/null </dev/null; exec bash -i",
    "sftp-server -h; echo SECRET",
    "/usr/lib/openssh/sftp-server",  # only the sftp subsystem is an sftp transfer
    "scp -f x; echo SECRET",
    "./scp -t",
    "./scp -t x",
    "~/scp -t x",
    "/home/u/scp -t x",
    "/tmp/rsync --server . x",
    "bin/scp -t x",
    "/usr/bin/../bin/scp -t x",
    "/usr/sbin/scp -t x",
    "scp.sh -t x",
    # operators, redirections, expansions outside quotes
    "scp -t x && bash", "scp -t x || bash", "scp -t x | tee y", "scp -t x & bash",
    "scp -t x > y", "scp -t x < y", "scp -t (x)", "scp -t $HOME", "scp -t `id`",
    "scp -t $(id)", "scp -t x\nbash", "scp -t x\rbash\n", "scp -t *.txt", "scp -f x?",
    "scp -f [ab]", "scp -f ~/x", "scp -f ~", "scp -f {a,b}", "scp -f x #c", "! scp -t x",
    "scp -f x!", "scp -t \"$HOME\"", "scp -t \"`id`\"", "scp -t \"$(id)\"",
    "scp -t 'unbalanced", 'scp -t "unbalanced', "scp -t x\\", "scp\x00 -t x",
    # not server mode, or flags the client never sends
    "scp a b", "scp -t", "scp -f", "scp -t a b", "scp -t -f x", "scp -S /bin/sh -t x",
    "scp -o ProxyCommand=x -t x", "scp -rp -t x", "scp -t -x", "scp -f a -b", "scp -D x -f y",
    "rsync -a src/ dst/", "rsync --server", "rsync --server .", "rsync --server x y",
    "rsync --server --daemon .", "rsync --server --daemon --config=/tmp/c .",
    "rsync --daemon --server .", "rsync --sender --server . x",
    "rsync --server --config=c . x", "rsync --server -M--x . x",
    "rsync --server --remote-option=--x . x", "rsync --server --dparam=a=b . x",
    "rsync --server -slogDtpre.iLsfxCIvu", "rsync --server -s . x",
    "rsync --server --protect-args . x", "rsync --server --secluded-args . x",
    "rsync --server --rsh=sh . x", "rsync --server -ebash . x", "rsync --server -e . x",
    "rsync --server --rsync-path=x . x", "rsync --server --log-file=/tmp/l . x",
    "rsync --server --write-batch=b . x", "rsync --server --read-batch=b . x",
    "rsync --server --early-input=f . x", "rsync --server -T /tmp . x",
    "rsync --server --temp-dir . x", "rsync --server --temp-dir --daemon . x",
    "rsync --server --timeout 5 . x", "rsync --server -r . -x", "rsync --server -r . x --daemon",
    "rsync --server -- . x", "rsync --server -F . x", "rsync --server -B . x",
    "VAR=1 rsync --server . x", "exec scp -t x", "command scp -t x", "",
    "   ",
])
def test_shell_commands_are_not_transfers(command: str) -> None:
    assert parse(command) is None


@pytest.mark.parametrize("shell", [
    "/usr/bin/git-shell", "/usr/sbin/nologin", "/bin/false", "/usr/bin/rssh", "/bin/rbash",
    "/usr/bin/tmux", "/usr/lib/git-core/git-shell", "/home/u/bin/bash", "bash", "",
    "/usr/bin/scponly", "/usr/bin/python3", "/bin/bash/", "/bin/sh -x",
])
def test_restricted_or_unknown_shells_never_exec_directly(shell: str) -> None:
    assert not is_general_shell(shell)
    assert parse("scp -t x", shell) is None
    assert parse("rsync --server --sender -r . x", shell) is None


@pytest.mark.parametrize("shell", ["/bin/bash", "/usr/bin/zsh", "/bin/sh", "/bin/dash",
                                   "/usr/bin/fish", "/bin/tcsh", "/usr/local/bin/bash"])
def test_general_shells_exec_directly(shell: str) -> None:
    assert parse("scp -t x", shell) is not None


def test_a_program_the_resolver_cannot_find_is_no_transfer() -> None:
    assert parse_transfer("scp -t x", BASH, resolve=lambda word: None) is None


def test_the_resolver_is_only_asked_for_an_accepted_command() -> None:
    asked: list[str] = []

    def resolve(word: str) -> str | None:
        asked.append(word)
        return "/usr/bin/scp"

    assert parse_transfer("scp -t x; id", BASH, resolve=resolve) is None
    assert parse_transfer("scp -t x", "/usr/sbin/nologin", resolve=resolve) is None
    assert asked == []
    assert parse_transfer("scp -t x", BASH, resolve=resolve) is not None
    assert asked == ["scp"]


@pytest.mark.parametrize(("command", "words"), [
    ("a  b\tc", ["a", "b", "c"]),
    ("'a'\"b\"c", ["abc"]),
    ("''", [""]),
    ("a ''~", ["a", "~"]),
    ("a b~", ["a", "b~"]),
    ("a '~' \\~", ["a", "~", "~"]),
    ('"a\\b\\"c\\\\"', ['a\\b"c\\']),
    ("'a\\b'", ["a\\b"]),
    ("\\;\\|\\&\\$\\*", [";|&$*"]),
    ('";|&<>()*?[{#!~"', [";|&<>()*?[{#!~"]),
    ("a=b --x=y", ["a=b", "--x=y"]),
    ("a }", ["a", "}"]),
    ("a ;", None), ("a\nb", None), ('"$x"', None), ("'a", None),
])
def test_split_words(command: str, words: list[str] | None) -> None:
    assert split_words(command) == words
    if words is not None:
        assert shlex.split(command) == words  # the same words as POSIX quoting gives


# --- properties ---------------------------------------------------------------------

_path = st.text(st.characters(blacklist_categories=("Cs", "Cc")),  # control: refused
                min_size=1, max_size=20).filter(lambda p: not p.startswith("-"))
_scp = st.builds(
    lambda flags, mode, paths: ["scp", *flags, mode, *paths],
    st.lists(st.sampled_from(["-r", "-p", "-d", "-v", "-q"]), max_size=4),
    st.sampled_from(["-t", "-f"]),
    st.lists(_path, min_size=1, max_size=3),
)
_rsync = st.builds(
    lambda sender, cluster, longs, paths: ["rsync", "--server", *sender, cluster, *longs, ".",
                                           *paths],
    st.lists(st.just("--sender"), max_size=1),
    st.text("vlogDtprzHAX", min_size=1, max_size=8).map(lambda s: f"-{s}e.iLsfxCIvu"),
    st.lists(st.sampled_from(["--delete", "--partial", "--bwlimit=10", "--numeric-ids",
                              "--timeout=5", "--inplace"]), max_size=3),
    st.lists(_path, min_size=1, max_size=3),
)


def _valid_scp(words: list[str]) -> bool:
    mode = "-t" if "-t" in words else "-f"
    return mode != "-t" or len(words) - words.index(mode) - 1 == 1


def _quote(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_scp.filter(_valid_scp), _rsync))
def test_accepted_commands_round_trip(words: list[str]) -> None:
    first = parse(_quote(words))
    assert first is not None, words
    assert list(first.argv) == words
    second = parse(_quote(list(first.argv)))
    assert second == first


_separators = st.sampled_from([";", "|", "&", "\n", "$(", "`", "&&", "||", ">", "<"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(_scp.filter(_valid_scp), _rsync), _separators, st.text(max_size=30))
def test_an_unquoted_operator_is_never_a_transfer(words: list[str], separator: str,
                                                  tail: str) -> None:
    command = _quote(words)
    assume(parse(command) is not None)
    assert parse(command + separator + tail) is None
    assert parse(command + " " + separator + " " + tail) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(_scp.filter(_valid_scp), _rsync), _separators, st.data())
def test_an_unquoted_operator_between_any_two_words_is_never_a_transfer(
        words: list[str], separator: str, data: st.DataObject) -> None:
    quoted = [shlex.quote(w) for w in words]
    k = data.draw(st.integers(1, len(quoted)))
    glued = data.draw(st.booleans())  # `a;b` as well as `a ; b`
    joint = separator if glued else f" {separator} "
    command = " ".join(quoted[:k]) + joint + " ".join(quoted[k:])
    assert parse(command) is None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_anything_accepted_splits_as_posix_quoting_does(command: str) -> None:
    # shlex keeps the backslash of \$ and \` inside double quotes; a POSIX shell does not.
    assume("\\$" not in command and "\\`" not in command)
    words = split_words(command)
    if words is not None:
        assert shlex.split(command, posix=True) == words


# --- the daemon's resolver ------------------------------------------------------------

def test_trusted_program_looks_only_in_the_trusted_dirs(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "scp").write_text("#!/bin/sh\n")
    (tmp_path / "scp").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    found = trusted_program("scp")
    assert found is None or os.path.dirname(found) in TRUSTED_DIRS
    assert trusted_program(str(tmp_path / "scp")) is None  # not a trusted directory
    assert trusted_program("./scp") is None


def test_trusted_program_refuses_files_others_may_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "rsync"
    program.write_text("#!/bin/sh\n")
    monkeypatch.setattr("tssh.server.transfer.TRUSTED_DIRS", (str(tmp_path),))
    program.chmod(0o777)
    assert trusted_program("rsync") is None
    program.chmod(0o644)
    assert trusted_program("rsync") is None  # not executable
    program.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(program, 0, 0)
        assert trusted_program("rsync") == str(program)
        assert trusted_program(str(program)) == str(program)
        os.chown(program, 1, 1)
        assert trusted_program("rsync") is None  # not root's
    program.unlink()
    program.mkdir()
    assert stat.S_ISDIR(os.stat(program).st_mode)
    assert trusted_program("rsync") is None
