"""A throwaway PostgreSQL server for index tests: Debian's binaries, ``initdb`` in a temp dir
as the ``postgres`` OS user (initdb and postgres refuse root), on a free loopback port with its
Unix socket in the same dir, stopped by PID. Each test gets a database of its own."""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_port, wait_for_port

USER = "postgres"


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding initdb and postgres, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


def skip_reason() -> str | None:
    if binaries() is None:
        return "PostgreSQL is not installed (Debian's postgresql package; .ci/run installs it)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER} OS user to run PostgreSQL as"
    return None


@dataclass
class PostgresServer:
    bin: Path
    # not under pytest's tmp_path: its parents are root's, mode 0700, closed to postgres
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tssh-pg-")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        owner = pwd.getpwnam(USER)
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.dir.chmod(0o700)
        as_postgres = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [],
                       "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}}
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, cwd=self.dir, timeout=120, **as_postgres,
        )
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-c", "listen_addresses=127.0.0.1",
             "-p", str(self.port), "-k", str(self.dir), "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **as_postgres,
        )
        log.close()
        wait_for_port("127.0.0.1", self.port, self.proc, timeout=60, log=self.log)
        deadline = time.monotonic() + 60
        while True:  # the port opens before the server accepts logins
            try:
                asyncio.run(self._execute("postgres", "SELECT 1"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    async def _execute(self, database: str, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn(database), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def new_database(self) -> str:
        """A fresh, empty database's DSN."""
        name = f"t{os.getpid()}_{next(self._names)}"
        asyncio.run(self._execute("postgres", f'CREATE DATABASE "{name}"'))
        return self.dsn(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
