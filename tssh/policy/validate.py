"""From a parsed HuJSON document to a :class:`Policy`, refusing what Tailscale refuses.

Every refusal is a :class:`PolicyError` reading ``file:line:col: ssh[2].users[1]: ...``: the
position of the offending value and its place in the document (rule index and field).
Tailscale rejects unknown fields, so does tssh; sections tssh has no use for are accepted
untouched so that any file Tailscale accepts loads here.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tssh.errors import PolicyError
from tssh.hujson import Document, Path
from tssh.policy.duration import DurationError, format_duration, parse_duration
from tssh.policy.model import (
    CHECK_ALWAYS,
    DEFAULT_CHECK_PERIOD,
    MAX_CHECK_PERIOD_NS,
    Action,
    Policy,
    SshRule,
    SshTest,
)
from tssh.policy.selectors import (
    AUTOGROUP_MEMBER,
    AUTOGROUP_NONROOT,
    AUTOGROUP_SELF,
    AUTOGROUP_TAGGED,
    Autogroup,
    Domain,
    Group,
    Localpart,
    LocalUser,
    NonRoot,
    Selector,
    Tag,
    User,
    UserEntry,
)

# Top-level sections of a Tailscale policy file. tssh reads a few and accepts the rest untouched.
READ_SECTIONS = frozenset({"groups", "tagOwners", "hosts", "acls", "ssh", "sshTests"})
IGNORED_SECTIONS = frozenset({
    "grants", "tests", "nodeAttrs", "autoApprovers", "postures", "defaultSrcPosture", "ipsets",
    "derpMap", "randomizeClientPort", "disableIPv4", "OneCGNATRoute", "attrs",
})
SSH_RULE_FIELDS = frozenset({
    "action", "src", "dst", "users", "checkPeriod", "acceptEnv", "recorder", "enforceRecorder",
})
ACL_FIELDS = frozenset({"action", "src", "dst", "proto", "users", "ports", "srcPosture"})
SSH_TEST_FIELDS = frozenset({"src", "dst", "accept", "deny", "check"})
SSH_SRC_AUTOGROUPS = frozenset({AUTOGROUP_MEMBER, AUTOGROUP_TAGGED})
SSH_DST_AUTOGROUPS = frozenset({AUTOGROUP_MEMBER, AUTOGROUP_TAGGED, AUTOGROUP_SELF})


def build_policy(doc: Document) -> Policy:
    """Validate ``doc`` (a parsed policy file) and return the policy it describes."""
    return _Builder(doc).build()


def describe(path: Path) -> str:
    """``("ssh", 2, "users", 1)`` -> ``ssh[2].users[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "policy"


def _is_ip_or_prefix(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _valid_tag_name(tag: str) -> bool:
    name = tag.removeprefix("tag:")
    return bool(name) and name[0].isascii() and name[0].isalpha() and not any(
        c.isspace() for c in name)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.groups: dict[str, tuple[str, ...]] = {}
        self.tag_owners: dict[str, tuple[str, ...]] = {}
        self.hosts: dict[str, str] = {}

    # -- helpers ---------------------------------------------------------------------------

    def fail(self, path: Path, message: str) -> PolicyError:
        return self.doc.error(path, f"{describe(path)}: {message}")

    def obj(self, path: Path, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"{what} must be an object, not {_type_name(value)}")
        return value

    def strings(self, path: Path, value: Any, what: str) -> list[str]:
        """A list of strings (None counts as empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"{what} must be a list of strings, not {_type_name(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail((*path, i), f"{what} entries must be strings, not "
                                f"{_type_name(item)}")
        return value

    def string(self, path: Path, value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"{what} must be a string, not {_type_name(value)}")
        return value

    def known_fields(self, path: Path, value: dict[str, Any], allowed: frozenset[str],
                     what: str) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail((*path, key), f"unknown field {key!r} in {what} "
                                f"(expected one of: {', '.join(sorted(allowed))})")

    # -- sections --------------------------------------------------------------------------

    def build(self) -> Policy:
        root = self.obj((), self.doc.value, "the policy")
        for key in root:
            if key not in READ_SECTIONS and key not in IGNORED_SECTIONS:
                raise self.fail((key,), f"unknown section {key!r}")
        self.read_groups(root.get("groups"))
        self.read_tag_owners(root.get("tagOwners"))
        self.read_hosts(root.get("hosts"))
        self.read_acls(root.get("acls"))
        ssh_value = root.get("ssh")
        rules: list[SshRule] = []
        if ssh_value is not None:
            if not isinstance(ssh_value, list):
                raise self.fail(("ssh",), f"must be a list of rules, not {_type_name(ssh_value)}")
            rules = [self.read_ssh_rule(i, rule) for i, rule in enumerate(ssh_value)]
        tests = self.read_ssh_tests(root.get("sshTests"))
        return Policy(
            groups=self.groups, tag_owners=self.tag_owners, hosts=self.hosts, ssh=tuple(rules),
            ssh_tests=tuple(tests), has_ssh_section=ssh_value is not None,
            filename=self.doc.filename,
        )

    def read_groups(self, value: Any) -> None:
        if value is None:
            return
        groups = self.obj(("groups",), value, "groups")
        for name, members in groups.items():
            path: Path = ("groups", name)
            if not name.startswith("group:") or len(name) == len("group:"):
                raise self.fail(path, f"group name {name!r} must look like group:<name>")
            out: list[str] = []
            for i, raw in enumerate(self.strings(path, members, "group members")):
                member = raw.strip()
                if member.startswith("group:"):
                    raise self.fail((*path, i), f"{member!r}: group members cannot be "
                                    "recursive (nested groups are not supported)")
                if member.startswith(("tag:", "autogroup:")) or not member or member == "*":
                    raise self.fail((*path, i), f"{member!r} is not a valid group member; "
                                    "members are user logins")
                out.append(member)
            self.groups[name] = tuple(out)

    def read_tag_owners(self, value: Any) -> None:
        if value is None:
            return
        owners = self.obj(("tagOwners",), value, "tagOwners")
        for tag in owners:
            if not tag.startswith("tag:") or not _valid_tag_name(tag):
                raise self.fail(("tagOwners", tag), f"invalid tag {tag!r}: tag names must "
                                "start with an ASCII letter, after 'tag:'")
        for tag, raw_owners in owners.items():
            path: Path = ("tagOwners", tag)
            out: list[str] = []
            for i, raw in enumerate(self.strings(path, raw_owners, "tag owners")):
                owner = raw.strip()
                if owner.startswith("group:") and owner not in self.groups:
                    raise self.fail((*path, i), f"group {owner!r} is not defined in groups")
                if owner.startswith("tag:") and owner not in owners:
                    raise self.fail((*path, i), f"tag {owner!r} is not defined in tagOwners")
                out.append(owner)
            self.tag_owners[tag] = tuple(out)

    def read_hosts(self, value: Any) -> None:
        if value is None:
            return
        for name, address in self.obj(("hosts",), value, "hosts").items():
            path: Path = ("hosts", name)
            if not name or name.startswith(("tag:", "group:", "autogroup:")) or "@" in name:
                raise self.fail(path, f"invalid host name {name!r}")
            text = self.string(path, address, "a host's address").strip()
            if not _is_ip_or_prefix(text):
                raise self.fail(path, f"host {name!r}: {text!r} is not an IP address or prefix")
            self.hosts[name] = text

    def read_acls(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            raise self.fail(("acls",), f"must be a list of rules, not {_type_name(value)}")
        for i, raw in enumerate(value):
            path: Path = ("acls", i)
            acl = self.obj(path, raw, "an acls rule")
            self.known_fields(path, acl, ACL_FIELDS, "an acls rule")
            action = acl.get("action")
            if action is None or self.string((*path, "action"), action, "action").strip() \
                    != "accept":
                raise self.fail((*path, "action"), f"{action!r} is not a valid action; acls "
                                "rules only accept")
            for fld in ("src", "users"):
                for j, entry in enumerate(self.strings((*path, fld), acl.get(fld), fld)):
                    self.check_reference((*path, fld, j), entry.strip())
            for fld in ("dst", "ports"):
                for j, entry in enumerate(self.strings((*path, fld), acl.get(fld), fld)):
                    target = entry.strip()
                    if target.startswith(("tag:", "group:", "autogroup:")):
                        target = target.rsplit(":", 1)[0] if target.count(":") > 1 else target
                    self.check_reference((*path, fld, j), target)
            if "proto" in acl and not isinstance(acl["proto"], str | int):
                raise self.fail((*path, "proto"), "proto must be a string or a number")

    def check_reference(self, path: Path, entry: str) -> None:
        """A group or tag an ACL names must be defined. Autogroups are left to Tailscale,
        which adds new ones over time (roles, posture groups)."""
        if entry.startswith("group:") and entry not in self.groups:
            raise self.fail(path, f"group {entry!r} is not defined in groups")
        if entry.startswith("tag:") and entry not in self.tag_owners:
            raise self.fail(path, f"tag {entry!r} is not defined in tagOwners")

    # -- ssh rules -------------------------------------------------------------------------

    def read_ssh_rule(self, index: int, raw: Any) -> SshRule:
        path: Path = ("ssh", index)
        rule = self.obj(path, raw, "an ssh rule")
        self.known_fields(path, rule, SSH_RULE_FIELDS, "an ssh rule")

        action_raw = rule.get("action")
        action_text = "" if action_raw is None else self.string(
            (*path, "action"), action_raw, "action").strip()
        if not action_text:
            raise self.fail((*path, "action"), "action must be specified (accept or check)")
        if action_text not in ("accept", "check"):
            raise self.fail((*path, "action"), f"{action_text!r} is not a valid action "
                            "(accept or check; values are case-sensitive)")
        action: Action = "accept" if action_text == "accept" else "check"

        src = tuple(self.src_selector((*path, "src", i), s.strip())
                    for i, s in enumerate(self.strings((*path, "src"), rule.get("src"), "src")))
        dst = tuple(self.dst_selector((*path, "dst", i), s.strip())
                    for i, s in enumerate(self.strings((*path, "dst"), rule.get("dst"), "dst")))
        self.check_src_dst(path, src, dst)
        users = self.read_users(path, rule.get("users"))
        check_period = self.read_check_period(path, action, rule.get("checkPeriod"))

        accept_env = self.strings((*path, "acceptEnv"), rule.get("acceptEnv"), "acceptEnv")
        for i, pattern in enumerate(accept_env):
            if not pattern:
                raise self.fail((*path, "acceptEnv", i), "acceptEnv values cannot be empty")

        recorders: list[str] = []
        for i, raw_rec in enumerate(self.strings((*path, "recorder"), rule.get("recorder"),
                                                 "recorder")):
            rec = raw_rec.strip()
            rpath: Path = (*path, "recorder", i)
            if rec.startswith("tag:"):
                self.check_tag(rpath, rec)
            elif not _is_recorder_address(rec):
                raise self.fail(rpath, f"invalid recorder {rec!r}: use a tag (tag:recorder) or "
                                "an address (IP or IP:port)")
            recorders.append(rec)
        enforce = rule.get("enforceRecorder")
        if enforce is not None and not isinstance(enforce, bool):
            raise self.fail((*path, "enforceRecorder"), "enforceRecorder must be true or false, "
                            f"not {_type_name(enforce)}")

        return SshRule(
            index=index, action=action, src=src, dst=dst, users=users, check_period=check_period,
            accept_env=tuple(accept_env), recorder=tuple(recorders),
            enforce_recorder=bool(enforce),
        )

    def check_tag(self, path: Path, tag: str) -> None:
        if not _valid_tag_name(tag):
            raise self.fail(path, f"invalid tag {tag!r}: tag names must start with an ASCII "
                            "letter, after 'tag:'")
        if tag not in self.tag_owners:
            raise self.fail(path, f"tag {tag!r} is not defined in tagOwners")

    def src_selector(self, path: Path, entry: str) -> Selector:
        if entry == "*":
            raise self.fail(path, "'*' is not allowed as an ssh source; use autogroup:member, "
                            "autogroup:tagged, groups, tags or users")
        if entry.startswith("autogroup:"):
            if entry not in SSH_SRC_AUTOGROUPS:
                raise self.fail(path, f"{entry!r} is not allowed as an ssh source (use "
                                "autogroup:member or autogroup:tagged)")
            return Autogroup(entry)
        if entry.startswith("group:"):
            if entry not in self.groups:
                raise self.fail(path, f"group {entry!r} is not defined in groups")
            return Group(entry)
        if entry.startswith("tag:"):
            self.check_tag(path, entry)
            return Tag(entry)
        domain = _domain_wildcard(entry)
        if domain is not None:
            if not domain or "*" in domain or "@" in domain:
                raise self.fail(path, f"invalid domain wildcard {entry!r} (use user:*@domain)")
            return Domain(domain.lower())
        if _is_ip_or_prefix(entry):
            raise self.fail(path, f"IP addresses are not allowed as an ssh source ({entry!r})")
        if entry in self.hosts:
            raise self.fail(path, f"hosts are not allowed as an ssh source ({entry!r})")
        if "@" in entry and "*" not in entry and not entry.startswith("@"):
            return User(entry)
        raise self.fail(path, f"invalid ssh source {entry!r}")

    def dst_selector(self, path: Path, entry: str) -> Selector:
        if entry == "*":
            raise self.fail(path, "'*' is not allowed as an ssh destination; use "
                            "autogroup:member for user-owned devices, autogroup:tagged for "
                            "tagged devices, or specific tags")
        if entry.startswith("autogroup:"):
            if entry not in SSH_DST_AUTOGROUPS:
                raise self.fail(path, f"{entry!r} is not allowed as an ssh destination (use "
                                "autogroup:self, autogroup:member or autogroup:tagged)")
            return Autogroup(entry)
        if entry.startswith("tag:"):
            self.check_tag(path, entry)
            return Tag(entry)
        if entry.startswith("group:"):
            raise self.fail(path, f"groups are not allowed as an ssh destination ({entry!r}); "
                            "use autogroup:self or tags")
        if entry in self.hosts:
            raise self.fail(path, f"invalid dst {entry!r}: hosts are not allowed as an ssh "
                            "destination")
        if _is_ip_or_prefix(entry):
            raise self.fail(path, f"IP addresses are not allowed as an ssh destination "
                            f"({entry!r})")
        if "@" in entry and "*" not in entry and not entry.startswith(("@", "user:")):
            return User(entry)
        raise self.fail(path, f"invalid ssh destination {entry!r}")

    def check_src_dst(self, path: Path, src: tuple[Selector, ...],
                      dst: tuple[Selector, ...]) -> None:
        """Tailscale's rules on which sources may reach which destinations."""
        tagged_src = any(isinstance(s, Tag) or s == Autogroup(AUTOGROUP_TAGGED) for s in src)
        for i, d in enumerate(dst):
            where: Path = (*path, "dst", i)
            if isinstance(d, User):
                if tagged_src:
                    raise self.fail(where, f"tags in an ssh source cannot reach user-owned "
                                    f"devices ({d.login!r}); use tags as destinations")
                if src != (User(d.login),) and set(src) != {User(d.login)}:
                    raise self.fail(where, f"a user destination ({d.login!r}) requires the "
                                    "source to be exactly that user; use autogroup:self for "
                                    "same-user access")
            elif d == Autogroup(AUTOGROUP_SELF) and tagged_src:
                raise self.fail(where, "autogroup:self requires the source to hold only users, "
                                "groups or autogroup:member, not tags")
            elif d == Autogroup(AUTOGROUP_MEMBER) and tagged_src:
                raise self.fail(where, "tags in an ssh source cannot reach autogroup:member "
                                "(user-owned devices)")

    def read_users(self, path: Path, value: Any) -> tuple[UserEntry, ...]:
        upath: Path = (*path, "users")
        entries = self.strings(upath, value, "users")
        if not entries:
            raise self.fail(upath, "users must be specified (e.g. [\"autogroup:nonroot\"])")
        out: list[UserEntry] = []
        for i, raw in enumerate(entries):
            name = raw.strip()
            if name in ("", "*"):
                raise self.fail((*upath, i), f"user {name!r} is not valid".replace("'", '"'))
            if name == AUTOGROUP_NONROOT:
                out.append(NonRoot())
            elif name.startswith("localpart:*@") and name != "localpart:*@":
                # Tailscale takes a bare "localpart:*@" as a literal name, like "localpart:x".
                domain = name.removeprefix("localpart:*@")
                if "*" in domain or "@" in domain:
                    raise self.fail((*upath, i), f"{name!r}: localpart:*@<domain> needs one "
                                    "plain domain")
                out.append(Localpart(domain))
            else:
                # Tailscale maps anything else, even "group:x", to a literal local account.
                out.append(LocalUser(name))
        return tuple(out)

    def read_check_period(self, path: Path, action: Action, value: Any) -> str | None:
        cpath: Path = (*path, "checkPeriod")
        if value is None:
            return DEFAULT_CHECK_PERIOD if action == "check" else None
        text = self.string(cpath, value, "checkPeriod").strip()
        if text == CHECK_ALWAYS:
            return CHECK_ALWAYS if action == "check" else None
        try:
            ns = parse_duration(text)
        except DurationError as e:
            raise self.fail(cpath, f"{e}") from None
        if ns < 0:
            raise self.fail(cpath, f"checkPeriod {format_duration(ns)} must be a positive "
                            "duration")
        if ns > MAX_CHECK_PERIOD_NS:
            raise self.fail(cpath, f"checkPeriod {format_duration(ns)} is above the max (168h)")
        return text if action == "check" else None

    # -- sshTests --------------------------------------------------------------------------

    def read_ssh_tests(self, value: Any) -> list[SshTest]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(("sshTests",), f"must be a list of tests, not {_type_name(value)}")
        tests: list[SshTest] = []
        for i, raw in enumerate(value):
            path: Path = ("sshTests", i)
            test = self.obj(path, raw, "an sshTests entry")
            self.known_fields(path, test, SSH_TEST_FIELDS, "an sshTests entry")
            src_raw = test.get("src")
            src = "" if src_raw is None else self.string((*path, "src"), src_raw, "src").strip()
            if not src:
                raise self.fail((*path, "src"), "an sshTests entry must have a non-empty src")
            dst = [d.strip() for d in self.strings((*path, "dst"), test.get("dst"), "dst")]
            if not dst:
                raise self.fail((*path, "dst"), "an sshTests entry must have at least one dst")
            for j, d in enumerate(dst):
                dpath: Path = (*path, "dst", j)
                if d.startswith("tag:") and d not in self.tag_owners:
                    raise self.fail(dpath, f"sshTests dst contains unknown tag {d!r}")
                if d == "*" or d.startswith(("autogroup:", "group:")) or (
                        "/" in d and _is_ip_or_prefix(d)):
                    raise self.fail(dpath, f"sshTests dst contains disallowed element {d!r}")
            lists = {k: tuple(u.strip() for u in self.strings((*path, k), test.get(k), k))
                     for k in ("accept", "deny", "check")}
            tests.append(SshTest(index=i, src=src, dst=tuple(dst), accept=lists["accept"],
                                 deny=lists["deny"], check=lists["check"]))
        return tests


def _domain_wildcard(entry: str) -> str | None:
    """The domain of ``user:*@domain`` (or ``*@domain``), else None."""
    for prefix in ("user:*@", "*@"):
        if entry.startswith(prefix):
            return entry.removeprefix(prefix)
    return None


def _is_recorder_address(text: str) -> bool:
    if _is_ip_or_prefix(text) and "/" not in text:
        return True
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return port.isdigit() and 0 < int(port) < 65536


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
