"""The process launcher: own session, stdio wiring, credentials, exec errors."""

from __future__ import annotations

import os
import shutil

import pytest

from tssh.server.account import lookup_account
from tssh.server.spawn import SpawnRequest, decode_wait_status, spawn


def _run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str = "/",
         account: object = None) -> tuple[bytes, int]:
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    os.close(in_w)
    try:
        pid = spawn(SpawnRequest(
            executable=argv[0], argv=argv, env=env or {}, cwd=cwd,
            account=account,  # type: ignore[arg-type]
            stdin=in_r, stdout=out_w, stderr=out_w,
        ))
    finally:
        os.close(out_w)
        os.close(in_r)
    chunks = []
    while chunk := os.read(out_r, 65536):
        chunks.append(chunk)
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    code, _, _ = decode_wait_status(status)
    assert code is not None
    return b"".join(chunks), code


def test_new_session_env_and_cwd(tmp_path: object) -> None:
    sh = shutil.which("sh")
    assert sh
    out, code = _run(
        [sh, "-c", 'echo "$FOO $(pwd)"; ps -o sid= -p $$; echo $$; exit 4'],
        env={"FOO": "bar", "PATH": "/usr/bin:/bin"}, cwd=str(tmp_path),
    )
    lines = out.decode().split("\n")
    assert lines[0] == f"bar {tmp_path}"
    assert lines[1].strip() == lines[2].strip()  # session id == own pid: a session leader
    assert code == 4


def test_exec_failure_raises_with_errno() -> None:
    with pytest.raises(FileNotFoundError):
        _run(["/nonexistent/program"])


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runs_as_account() -> None:
    nobody = lookup_account("nobody")
    out, code = _run(["/usr/bin/id", "-u"], account=nobody)
    assert code == 0 and out.decode().strip() == str(nobody.uid)


def test_signal_status_decoded() -> None:
    sh = shutil.which("sh")
    assert sh
    pid = spawn(SpawnRequest(executable=sh, argv=[sh, "-c", "kill -TERM $$"], env={},
                             cwd="/", account=None, stdin=0, stdout=1, stderr=2))
    _, status = os.waitpid(pid, 0)
    assert decode_wait_status(status)[:2] == (None, 15)
