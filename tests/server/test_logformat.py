"""JSON log lines carry extras as top-level keys."""

from __future__ import annotations

import json
import logging

from tssh.logformat import JsonFormatter, TextFormatter


def _record() -> logging.LogRecord:
    logger = logging.getLogger("tssh.test")
    return logger.makeRecord("tssh.test", logging.INFO, __file__, 1, "login %s", ("ok",),
                             None, extra={"user": "alice", "rule": 0})


def test_json_line() -> None:
    entry = json.loads(JsonFormatter().format(_record()))
    assert entry["msg"] == "login ok" and entry["level"] == "info"
    assert entry["user"] == "alice" and entry["rule"] == 0
    assert entry["logger"] == "tssh.test" and entry["time"].endswith("Z")


def test_text_line() -> None:
    line = TextFormatter().format(_record())
    assert "login ok" in line and "user=alice" in line
