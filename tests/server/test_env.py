"""Session environment: OpenSSH's variables, client variables filtered."""

from __future__ import annotations

import pytest

from tssh.server.env import ROOT_PATH, USER_PATH, SessionEnvInput, build_env, is_accepted

INFO = SessionEnvInput(
    user="alice", home="/home/alice", shell="/bin/bash", uid=1000, peer_ip="127.0.0.2",
    peer_port=50000, local_ip="127.0.0.10", local_port=22, term="xterm-256color",
    tty="/dev/pts/4",
)


def test_openssh_variables() -> None:
    env = build_env(INFO, {}, ())
    assert env == {
        "USER": "alice", "LOGNAME": "alice", "HOME": "/home/alice", "SHELL": "/bin/bash",
        "PATH": USER_PATH, "MAIL": "/var/mail/alice",
        "SSH_CLIENT": "127.0.0.2 50000 22",
        "SSH_CONNECTION": "127.0.0.2 50000 127.0.0.10 22",
        "SSH_TTY": "/dev/pts/4", "TERM": "xterm-256color",
    }


def test_root_path_and_no_tty() -> None:
    info = SessionEnvInput(
        user="root", home="/root", shell="/bin/sh", uid=0, peer_ip="::1", peer_port=1,
        local_ip="::1", local_port=2,
    )
    env = build_env(info, {}, ())
    assert env["PATH"] == ROOT_PATH
    assert "SSH_TTY" not in env and "TERM" not in env


def test_lang_and_lc_always_pass() -> None:
    env = build_env(INFO, {"LANG": "C.UTF-8", "LC_ALL": "C", "LC_TIME": "en_GB"}, ())
    assert (env["LANG"], env["LC_ALL"], env["LC_TIME"]) == ("C.UTF-8", "C", "en_GB")


def test_accept_env_patterns() -> None:
    client = {"FOO_A": "1", "FOO": "2", "BAR1": "3", "BAR12": "4", "OTHER": "5"}
    env = build_env(INFO, client, ("FOO_*", "BAR?"))
    assert env["FOO_A"] == "1" and env["BAR1"] == "3"
    assert "FOO" not in env and "BAR12" not in env and "OTHER" not in env


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "BASH_ENV", "ENV",
     "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT", "PERL5LIB", "RUBYOPT", "NODE_OPTIONS", "IFS",
     "BASH_FUNC_x%%", "GCONV_PATH", "GLIBC_TUNABLES", "bad name", "A=B", "", "ld_preload",
     "GOTRACEBACK"],
)
def test_injection_never_passes_even_with_star(name: str) -> None:
    assert not is_accepted(name, ("*",))
    assert name not in build_env(INFO, {name: "x"}, ("*",))


def test_daemon_variables_win_over_client() -> None:
    client = {"USER": "root", "HOME": "/", "PATH": "/evil", "SSH_TTY": "x", "TERM": "dumb",
              "SHELL": "/bin/evil"}
    env = build_env(INFO, client, ("*",))
    assert env["USER"] == "alice" and env["HOME"] == "/home/alice"
    assert env["PATH"] == USER_PATH and env["SSH_TTY"] == "/dev/pts/4"
    assert env["TERM"] == "xterm-256color" and env["SHELL"] == "/bin/bash"


def test_nul_in_value_dropped() -> None:
    assert "FOO_X" not in build_env(INFO, {"FOO_X": "a\0b"}, ("FOO_*",))


def test_nul_in_pty_terminal_type_dropped() -> None:
    """execve refuses a NUL in the environment: the session would not start at all."""
    info = SessionEnvInput(
        user="alice", home="/home/alice", shell="/bin/bash", uid=1000, peer_ip="127.0.0.2",
        peer_port=50000, local_ip="127.0.0.10", local_port=22, term="xterm\0evil",
        tty="/dev/pts/4",
    )
    env = build_env(info, {}, ())
    assert "TERM" not in env
    assert not [v for v in env.values() if "\0" in v]
