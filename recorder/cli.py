"""``tssh-recorder``: serve (default), ``reindex``, ``token create|list|revoke``,
``retention run``, ``hold ID``, ``release ID`` (docs/recorder.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from recorder import __version__
from recorder.settings import DEFAULT_LISTEN, RecorderSettings, default_state_dir
from recorder.tokens import TokenStore
from tssh.cli.config_flags import add_config_arguments, config_overrides
from tssh.config import Config, load_config
from tssh.errors import TsshError

if TYPE_CHECKING:
    from recorder.service import RecorderService

T = TypeVar("T")

COMMANDS = ("serve", "reindex", "token", "retention", "hold", "release")
# identity and policy come as for the daemon: --config FILE, or these flags, or TSSH_* variables
IDENTITY_KEYS = ("identity", "netmap", "tailscale_socket", "wireguard_interface", "policy")


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a positive ``kind`` below 10⁹ (NaN and infinity are refused)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value < 10**9:
            raise argparse.ArgumentTypeError(f"expected a positive number, not {text[:40]!r}")
        return value

    return parse


_SIZE = re.compile(r"([0-9]{1,20})(\.[0-9]{1,9})?\s*([KMGT]?)(?:i?B)?",
                   re.ASCII | re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """An argparse type: a positive number of bytes, with an optional K, M, G or T suffix
    (powers of 1024; "KiB", "GB" ... read the same), under 2⁶³."""
    m = _SIZE.fullmatch(text.strip())
    size = 0
    if m:
        unit = _UNITS[m.group(3).upper()]
        size = int(m.group(1)) * unit + int(float(m.group(2) or "0") * unit)
    if not 0 < size < 1 << 63:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500G, 10M or 1048576 (bytes), not {text[:40]!r}")
    return size


def _retention_flags(p: argparse.ArgumentParser, what: str) -> None:
    env = os.environ.get
    p.add_argument("--retain-days", type=_positive(float), metavar="DAYS",
                   default=env("TSRECORDER_RETAIN_DAYS"),
                   help=f"delete finished recordings older than this{what}, except those on "
                   "legal hold [TSRECORDER_RETAIN_DAYS]")
    p.add_argument("--retain-bytes", type=parse_size, metavar="SIZE",
                   default=env("TSRECORDER_RETAIN_BYTES"),
                   help="while the finished recordings of --dst hold more than SIZE (500G, "
                   "10M, bytes), delete the oldest, except those on legal hold "
                   "[TSRECORDER_RETAIN_BYTES]")


def _storage_flags(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--dst", default=env("TSRECORDER_DST"),
                   help="DIR, s3://ENDPOINT or s3+http://HOST:PORT [TSRECORDER_DST]")
    p.add_argument("--bucket", default=env("TSRECORDER_BUCKET"),
                   help="S3 bucket with an s3 --dst [TSRECORDER_BUCKET]")
    p.add_argument("--state-dir", type=Path,
                   default=Path(env("TSRECORDER_STATEDIR") or default_state_dir()),
                   help="index, signing key, tokens, S3 spool [TSRECORDER_STATEDIR]")
    p.add_argument("--index", default=env("TSRECORDER_INDEX"), metavar="URL",
                   help="postgresql://USER@HOST/DB: an index shared by a fleet of recorders "
                   "(default: SQLite in the state dir) [TSRECORDER_INDEX]")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="tssh-recorder",
        description="Receives, stores, seals and serves tssh/Tailscale session recordings.",
        epilog="serve is the default command: `tssh-recorder --dst DIR ...` runs it; "
        "see `tssh-recorder serve --help` for its flags.",
    )
    parser.add_argument("--version", action="version", version=f"tssh-recorder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the recorder (the default command)")
    _storage_flags(serve)
    serve.add_argument("--listen", default=env("TSRECORDER_LISTEN", DEFAULT_LISTEN),
                       help=f"ADDR:PORT (default {DEFAULT_LISTEN}) [TSRECORDER_LISTEN]")
    add_config_arguments(serve, IDENTITY_KEYS)
    serve.add_argument("--viewer", action="append", dest="viewers", metavar="SELECTOR",
                       help="who may read recordings: a login, group:x or tag:x (repeatable)")
    serve.add_argument("--trust-key", action="append", dest="trusted_keys", metavar="KEY",
                       help="another recorder's public key (GET /api/v1/key) whose seals "
                       "verify here, for recorders sharing a bucket (repeatable)")
    serve.add_argument("--ui", action="store_true", default=_env_bool("TSRECORDER_UI"),
                       help="serve the web UI at / [TSRECORDER_UI]")
    serve.add_argument("--max-uploads-per-node", type=_positive(int), metavar="N",
                       default=env("TSRECORDER_MAX_UPLOADS_PER_NODE", "1024"),
                       help="uploads one node may run at once; more get 503 (default 1024) "
                       "[TSRECORDER_MAX_UPLOADS_PER_NODE]")
    serve.add_argument("--max-uploads", type=_positive(int), metavar="N",
                       default=env("TSRECORDER_MAX_UPLOADS", "4096"),
                       help="uploads running at once in all; more get 503 (default 4096) "
                       "[TSRECORDER_MAX_UPLOADS]")
    serve.add_argument("--header-timeout", type=_positive(float), metavar="SECONDS",
                       default=env("TSRECORDER_HEADER_TIMEOUT", "30"),
                       help="time an upload has to send its request head and asciicast header "
                       "(default 30) [TSRECORDER_HEADER_TIMEOUT]")
    serve.add_argument("--admin", action="append", dest="admins", metavar="SELECTOR",
                       help="who may also place and lift legal holds through the API: a "
                       "login, group:x or tag:x (repeatable; an admin may read too) "
                       "[TSRECORDER_ADMINS, comma-separated]")
    serve.add_argument("--replica-timeout", type=_positive(float), metavar="SECONDS",
                       default=env("TSRECORDER_REPLICA_TIMEOUT", "30"),
                       help="with a PostgreSQL index: a replica silent this long is dead, and "
                       "another finishes its live recordings (default 30) "
                       "[TSRECORDER_REPLICA_TIMEOUT]")
    _retention_flags(serve, " (at start-up, then hourly; default: keep all)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    reindex = sub.add_parser("reindex", help="rebuild the index from stored recordings")
    _storage_flags(reindex)
    reindex.set_defaults(func=_reindex)

    retention = sub.add_parser("retention", help="apply the retention policy now")
    rsub = retention.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    run = rsub.add_parser("run", help="delete what --retain-days and --retain-bytes select")
    _storage_flags(run)
    _retention_flags(run, "")
    run.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    run.set_defaults(func=_retention_run)
    hold = sub.add_parser("hold", help="place a legal hold: retention never deletes it")
    _storage_flags(hold)
    hold.add_argument("id")
    hold.add_argument("--reason", default="legal hold", help="recorded with the hold")
    hold.set_defaults(func=_hold)
    release = sub.add_parser("release", help="lift a legal hold")
    _storage_flags(release)
    release.add_argument("id")
    release.set_defaults(func=_hold, reason=None)

    token = sub.add_parser("token", help="manage API tokens")
    token.add_argument("--state-dir", type=Path,
                       default=Path(env("TSRECORDER_STATEDIR") or default_state_dir()))
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="create a token (printed once)")
    create.add_argument("name", help="what the token is for")
    create.set_defaults(func=_token_create)
    listing = tsub.add_parser("list", help="list tokens (ids and names)")
    listing.set_defaults(func=_token_list)
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=_token_revoke)
    for action in (create, listing, revoke):  # also accepted after the action
        action.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    return parser


def _settings(args: argparse.Namespace) -> RecorderSettings:
    from recorder.errors import SettingsError

    if not args.dst:
        raise SettingsError("no storage: give --dst DIR or --dst s3://ENDPOINT --bucket NAME")
    RecorderSettings(dst=args.dst, bucket=args.bucket).s3()  # storage errors first
    RecorderSettings(dst=args.dst, index=args.index).index_url()
    trusted = tuple(_check_key(k) for k in getattr(args, "trusted_keys", None) or ())
    env_viewers = _env_list("TSRECORDER_VIEWERS")
    return RecorderSettings(
        dst=args.dst, bucket=args.bucket, state_dir=args.state_dir,
        listen=getattr(args, "listen", DEFAULT_LISTEN),
        identity=(
            load_config(args.config, os.environ, config_overrides(args))
            if hasattr(args, "config") else Config()
        ),
        viewers=tuple(getattr(args, "viewers", None) or env_viewers),
        admins=tuple(getattr(args, "admins", None) or _env_list("TSRECORDER_ADMINS")),
        ui=getattr(args, "ui", False),
        trusted_keys=trusted, index=args.index,
        retain_days=getattr(args, "retain_days", None),
        retain_bytes=getattr(args, "retain_bytes", None),
        **{name: getattr(args, name) for name in (
            "max_uploads_per_node", "max_uploads", "header_timeout", "replica_timeout")
            if hasattr(args, name)},
    )


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def _check_key(text: str) -> str:
    import base64
    import binascii

    from recorder.errors import SettingsError

    try:
        if len(base64.b64decode(text, validate=True)) == 32:
            return text
    except (binascii.Error, ValueError):
        pass
    raise SettingsError(f"--trust-key {text[:60]!r}: expected a base64 Ed25519 public key")


def _serve(args: argparse.Namespace) -> int:
    from recorder.app import serve_recorder

    logging.basicConfig(
        level=str(args.log_level).upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import uvloop

    uvloop.run(serve_recorder(_settings(args)))
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from recorder.app import open_service
    from recorder.service import Reindexed

    async def run() -> Reindexed:
        service = open_service(_settings(args))
        await service.storage.start()
        await service.index.open()
        try:
            return await service.reindex()
        finally:
            await service.close()

    done = asyncio.run(run())
    print(f"indexed {done.indexed} recordings"
          + (f"; dropped {done.dropped} index rows of recordings no longer in storage"
             if done.dropped else ""))
    return 0


def _offline(args: argparse.Namespace, work: Callable[[RecorderService], Awaitable[T]]) -> T:
    """Runs ``work`` on the storage and index of ``args``, without serving."""
    from recorder.app import open_service

    async def run() -> T:
        service = open_service(_settings(args))
        await service.storage.start()
        await service.index.open()
        try:
            return await work(service)
        finally:
            await service.close()

    return asyncio.run(run())


def _retention_run(args: argparse.Namespace) -> int:
    from recorder.errors import SettingsError
    from recorder.retention import RetentionPolicy, RetentionRun, run_retention

    policy = RetentionPolicy(args.retain_days, args.retain_bytes)
    if not policy.active:
        raise SettingsError("retention run: give --retain-days DAYS and/or --retain-bytes SIZE "
                            "(or TSRECORDER_RETAIN_DAYS / TSRECORDER_RETAIN_BYTES)")

    def work(service: RecorderService) -> Awaitable[RetentionRun]:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        return run_retention(service, policy, args.state_dir / "retention.jsonl",
                             dry_run=args.dry_run)

    done = _offline(args, work)
    verb = "would delete" if args.dry_run else "deleted"
    for rid in done.deleted:
        print(f"{verb} {rid}")
    for rid in done.held:
        print(f"kept {rid} (legal hold)")
    for rid, why in done.failed:
        print(f"failed {rid}: {why}", file=sys.stderr)
    summary = f"{verb} {len(done.deleted)} recordings; {len(done.held)} on hold kept"
    if done.remaining_bytes is not None:
        summary += (f"; {done.deleted_bytes} bytes freed, {done.remaining_bytes} bytes of "
                    "finished recordings left")
        if policy.max_bytes is not None and done.remaining_bytes > policy.max_bytes:
            summary += f", still more than --retain-bytes {policy.max_bytes}"
    print(summary, file=sys.stderr)
    return 1 if done.failed else 0


def _hold(args: argparse.Namespace) -> int:
    import getpass

    from recorder.retention import set_hold

    def work(service: RecorderService) -> Awaitable[object]:
        return set_hold(service, args.id, args.reason, getpass.getuser())

    _offline(args, work)
    print(f"recording {args.id}: " + ("on legal hold" if args.reason is not None
                                      else "legal hold released"), file=sys.stderr)
    return 0


def _token_create(args: argparse.Namespace) -> int:
    record, token = TokenStore(args.state_dir / "tokens.json").create(args.name)
    print(token)
    print(f"token {record.id} ({record.name}) created; it is shown only once", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    for r in TokenStore(args.state_dir / "tokens.json").records():
        print(f"{r.id}\t{r.created}\t{r.name}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    TokenStore(args.state_dir / "tokens.json").revoke(args.id)
    print(f"token {args.id} revoked", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in COMMANDS and args_list[0] not in
                         ("-h", "--help", "--version")):
        args_list.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except TsshError as e:
        print(f"tssh-recorder: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
