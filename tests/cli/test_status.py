"""``tssh status`` rendering: known keys presented, unknown keys shown as they are."""

from __future__ import annotations

from tssh.cli.status import render_status


def test_full_status() -> None:
    text = render_status({
        "sessions": [
            {"id": "ssh-conn-1", "user": "alice@example.com", "localUser": "alice",
             "from": "laptop", "started": "2026-11-25T09:00:00Z", "recorded": True},
        ],
        "ssh": True,
        "listening": ["100.64.0.1:22", "[fd7a:115c:a1e0::1]:22"],
        "identity": "tailscale",
        "policy": {"source": "tailnet", "error": "policy.hujson:3:5: unknown field",
                   "loaded": "2026-11-25T08:00:00Z"},
        "recorders": [
            {"name": "rec1", "address": "100.64.0.20:80", "healthy": True, "error": None},
            {"name": None, "address": "100.64.0.21:80", "healthy": False,
             "error": "connection refused"},
        ],
        "uptime": 12,
        "limits": {"sessions": 100, "perUser": None},
    })
    assert text == (
        "SSH: on\n"
        "listening: 100.64.0.1:22, [fd7a:115c:a1e0::1]:22\n"
        "identity: tailscale\n"
        "policy: tailnet\n"
        "  error: policy.hujson:3:5: unknown field\n"
        "  loaded: 2026-11-25T08:00:00Z\n"
        "recorders:\n"
        "  rec1 (100.64.0.20:80): healthy\n"
        "  100.64.0.21:80: unhealthy: connection refused\n"
        "sessions: 1\n"
        "  ssh-conn-1: alice@example.com as alice from laptop since 2026-11-25T09:00:00Z"
        " (recorded=yes)\n"
        "uptime: 12\n"
        "limits:\n"
        "  sessions: 100\n"
        "  perUser: -\n"
    )


def test_off_and_empty() -> None:
    assert render_status({"ssh": False, "listening": [], "recorders": [], "sessions": []}) == (
        "SSH: off\nlistening: none\nrecorders: none\nsessions: none\n"
    )


def test_unexpected_shapes_fall_back_to_plain_display() -> None:
    text = render_status({"policy": "/etc/p.hujson", "recorders": ["a", "b"],
                          "sessions": 3, "peers": [{"name": "x"}, "y"]})
    assert text == (
        "policy: /etc/p.hujson\nrecorders: a, b\nsessions: 3\npeers:\n  - name=x\n  - y\n"
    )
    assert render_status({}) == ""


def test_control_characters_are_shown_escaped() -> None:
    """Names in the status come from the tailnet (node names, logins, a peer's requested
    login); a terminal escape sequence among them must not reach the terminal."""
    text = render_status({
        "sessions": [{"user": "eve@example.com", "localUser": "eve\x1b]0;owned\x07",
                      "from": "lap\rtop"}],
        "policy": {"source": "tailnet", "error": "bad\x9b2J"},
        "note\x1b[2J": "multi\nline",
    })
    assert text == (
        "policy: tailnet\n"
        "  error: bad\\x9b2J\n"
        "sessions: 1\n"
        "  eve@example.com as eve\\x1b]0;owned\\x07 from lap\\rtop\n"
        "note\\x1b[2J: multi\\nline\n"
    )
    assert all(ch == "\n" or ch.isprintable() for ch in text)


def test_forwards_listed() -> None:
    text = render_status({"forwards": [
        {"connection": "ssh-conn-1", "localUser": "alice", "id": 1, "kind": "local",
         "destination": "127.0.0.1:5432", "origin": "127.0.0.1:40000",
         "opened": "2026-01-01T00:00:00Z", "bytesSent": 10, "bytesReceived": 20},
        {"connection": "ssh-conn-1", "localUser": "alice", "id": 2, "kind": "remote-listener",
         "destination": "127.0.0.1:8080", "origin": "", "opened": "2026-01-01T00:00:00Z",
         "bytesSent": 0, "bytesReceived": 0},
    ]})
    assert text == (
        "forwards: 2\n"
        "  ssh-conn-1: local 127.0.0.1:5432 from 127.0.0.1:40000 as alice since "
        "2026-01-01T00:00:00Z: sent 10 B, received 20 B\n"
        "  ssh-conn-1: remote-listener 127.0.0.1:8080 as alice since 2026-01-01T00:00:00Z: "
        "sent 0 B, received 0 B\n")
    assert render_status({"forwards": []}) == "forwards: none\n"
