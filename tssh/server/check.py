"""Check mode bookkeeping: logins held for an operator's approval, and remembered approvals.

Pure: no I/O but :func:`load_approvals` / :func:`save_approvals`, and the clock is passed in
(seconds since the epoch: approvals outlive the daemon, so wall-clock time).

An ``action: "check"`` rule holds a login (a :class:`Hold`, with a short unguessable id)
until it is approved, denied, or times out. An approval covers one (source node, login,
local user) — a :class:`CheckKey` — for the rule's ``checkPeriod``:

- a duration such as ``12h``: remembered until then; logins inside it are not held;
- ``always`` or ``0s``: admits the held login only (nothing is remembered).

A remembered approval is used only while the policy still decides the login with a check
rule, and for at most the period of the rule deciding it now (a policy that shortens the
period shortens the approvals already given).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tssh.errors import TsshError
from tssh.policy.duration import DurationError, parse_duration
from tssh.policy.model import CHECK_ALWAYS

APPROVALS_FILE = "check-approvals.json"
FORMAT_VERSION = 1
# Hold ids: 12 characters of a 32-letter alphabet without look-alikes (0/o, 1/l/i): 60 bits.
ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ID_LENGTH = 12


def new_hold_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def period_seconds(period: str | None) -> float:
    """How long an approval under ``checkPeriod`` lasts; 0 for ``always`` and ``0s`` (the
    held login only). Unparsable text (never from a validated policy) counts as 0."""
    if period is None or period.strip() == CHECK_ALWAYS:
        return 0.0
    try:
        ns = parse_duration(period.strip())
    except DurationError:
        return 0.0
    return max(ns, 0) / 1e9


@dataclass(frozen=True)
class CheckKey:
    """What one approval covers."""

    node_id: str  # the source node's stable id
    login: str
    local_user: str


@dataclass(frozen=True)
class Approval:
    id: str
    key: CheckKey
    node: str  # the source node's name, for people
    approved_at: float
    period: str  # the checkPeriod it was given under
    expires: float | None  # None: the held login only (always, 0s)

    @property
    def remembered(self) -> bool:
        return self.expires is not None

    def valid(self, now: float, period: str | None = None) -> bool:
        """Usable for a new login at ``now``, under the current rule's ``period``."""
        if self.expires is None or now >= self.expires:
            return False
        if period is not None:
            return now < self.approved_at + period_seconds(period)
        return True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "node": self.node, "nodeId": self.key.node_id,
                "login": self.key.login, "localUser": self.key.local_user,
                "approvedAt": self.approved_at, "period": self.period,
                "expires": self.expires}

    @classmethod
    def from_json(cls, data: Any) -> Approval:
        """Raises ValueError (or KeyError/TypeError) for a malformed entry."""
        expires = data["expires"]
        return cls(
            id=_str(data["id"]), node=_str(data["node"]),
            key=CheckKey(_str(data["nodeId"]), _str(data["login"]), _str(data["localUser"])),
            approved_at=float(data["approvedAt"]), period=_str(data["period"]),
            expires=None if expires is None else float(expires),
        )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {value!r}")
    return value


@dataclass
class Hold:
    """A login waiting for an approval."""

    id: str
    key: CheckKey
    node: str
    since: float
    period: str
    url: str | None = None
    user: str | None = None  # the source node's tailnet user (None: a tagged node)

    def to_json(self) -> dict[str, Any]:
        """The ``tssh check list --json`` entry."""
        return {"id": self.id, "node": self.node, "login": self.key.login,
                "localUser": self.key.local_user, "since": self.since, "url": self.url}


class CheckError(TsshError):
    """No such hold (already decided, timed out, or its client left)."""


@dataclass
class CheckBook:
    """The holds and approvals of one daemon."""

    holds: dict[str, Hold] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)  # remembered ones, by id

    # --- remembered approvals ---

    def find(self, key: CheckKey, now: float, period: str | None) -> Approval | None:
        """A remembered approval that admits a login for ``key`` now without a hold."""
        if period_seconds(period) <= 0:
            return None  # always / 0s: every login asks
        best: Approval | None = None
        for approval in self.approvals.values():
            if approval.key == key and approval.valid(now, period) \
                    and (best is None or approval.approved_at > best.approved_at):
                best = approval
        return best

    def prune(self, now: float) -> list[Approval]:
        """Drop expired approvals; returns them."""
        gone = [a for a in self.approvals.values() if a.expires is None or now >= a.expires]
        for approval in gone:
            del self.approvals[approval.id]
        return gone

    def current(self, now: float) -> list[Approval]:
        return sorted((a for a in self.approvals.values() if a.valid(now)),
                      key=lambda a: a.approved_at)

    def revoke(self, login: str | None = None) -> list[Approval]:
        """Drop the remembered approvals (for ``login`` only, if given); returns them."""
        gone = [a for a in self.approvals.values() if login is None or a.key.login == login]
        for approval in gone:
            del self.approvals[approval.id]
        return gone

    # --- holds ---

    def hold(self, key: CheckKey, node: str, period: str, now: float,
             url: str | None = None, user: str | None = None) -> Hold:
        hold_id = new_hold_id()
        while hold_id in self.holds:  # pragma: no cover - 60 bits
            hold_id = new_hold_id()
        held = Hold(hold_id, key, node, now, period, url, user)
        self.holds[hold_id] = held
        return held

    def pending(self) -> list[Hold]:
        return sorted(self.holds.values(), key=lambda h: h.since)

    def get(self, hold_id: str) -> Hold:
        held = self.holds.get(_normal_id(hold_id))
        if held is None:
            raise CheckError(f"no login held as {hold_id!r} (already decided, timed out, "
                             "or its client left)")
        return held

    def approve(self, hold_id: str, now: float) -> Approval:
        """End the hold with an approval; remembered if the period is a positive duration."""
        held = self.get(hold_id)
        del self.holds[held.id]
        seconds = period_seconds(held.period)
        approval = Approval(id=held.id, key=held.key, node=held.node, approved_at=now,
                            period=held.period, expires=now + seconds if seconds > 0 else None)
        if approval.remembered:
            self.approvals[approval.id] = approval
        return approval

    def deny(self, hold_id: str) -> Hold:
        held = self.get(hold_id)
        del self.holds[held.id]
        return held

    def drop(self, hold_id: str) -> Hold | None:
        """Forget a hold (timed out, client gone); None if it was decided already."""
        return self.holds.pop(hold_id, None)


def _normal_id(text: str) -> str:
    """Ids as people type them: case and dashes or spaces do not matter."""
    return "".join(ch for ch in text.strip().lower() if ch not in "- ")


# --- persistence ----------------------------------------------------------------------

def approvals_path(state_dir: Path) -> Path:
    return state_dir / APPROVALS_FILE


def dump_approvals(approvals: list[Approval]) -> str:
    """``{"version": 1, "approvals": [...]}``: the file's whole content."""
    return json.dumps({"version": FORMAT_VERSION,
                       "approvals": [a.to_json() for a in approvals]}, indent=1) + "\n"


def parse_approvals(text: str) -> list[Approval]:
    """Raises ValueError for a file that is not this format; malformed entries are errors
    too (a file tssh did not write is not trusted in parts)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION \
            or not isinstance(data.get("approvals"), list):
        raise ValueError("not a tssh check approvals file (version 1)")
    out: list[Approval] = []
    for entry in data["approvals"]:
        try:
            approval = Approval.from_json(entry)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed approval entry: {e}") from None
        if approval.expires is not None:
            out.append(approval)
    return out


def load_approvals(state_dir: Path) -> list[Approval]:
    """The approvals saved in ``state_dir``; none if there is no file. Raises ValueError for
    a file that cannot be read as approvals (the daemon logs it and starts with none)."""
    try:
        text = approvals_path(state_dir).read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ValueError(str(e)) from None
    return parse_approvals(text)


def save_approvals(state_dir: Path, approvals: list[Approval]) -> None:
    """Written atomically (a temporary file renamed over it), mode 0600."""
    path = approvals_path(state_dir)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # a leftover temporary file keeps its mode otherwise
        f.write(dump_approvals(approvals))
        f.flush()
        os.fsync(fd)
    os.replace(tmp, path)
