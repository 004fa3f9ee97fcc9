"""Config loading: TOML, then TSSH_* environment, then flags; errors name key and source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tssh.config import PARSERS, Config, env_var, flag, load_config, load_partial_config
from tssh.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tssh.toml"
    path.write_text(text)
    return path


def test_every_field_is_loadable() -> None:
    assert set(PARSERS) == {f.name for f in dataclasses.fields(Config)}


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, """
identity = "netmap"
netmap = "mesh.hujson"          # relative to this file
policy = "/etc/tssh/policy.hujson"
port = 2222
listen = ["100.64.0.1", "fd7a:115c:a1e0::0001"]
host_keys = ["/etc/ssh/ssh_host_ed25519_key"]
log_format = "text"
log_level = "DEBUG"
""")
    config = load_config(path, {}, {})
    assert config.netmap == tmp_path / "mesh.hujson"
    assert config.policy == Path("/etc/tssh/policy.hujson")
    assert config.port == 2222
    assert config.listen == ("100.64.0.1", "fd7a:115c:a1e0::1")
    assert config.host_keys == (Path("/etc/ssh/ssh_host_ed25519_key"),)
    assert (config.log_format, config.log_level) == ("text", "debug")
    assert config.recorder_port == 80  # default kept

    env = {"TSSH_PORT": "2200", "TSSH_LISTEN": "127.0.0.10, 127.0.0.11", "TSSH_VENV": "x"}
    config = load_config(path, env, {})
    assert config.port == 2200 and config.listen == ("127.0.0.10", "127.0.0.11")

    config = load_config(path, env, {"port": 2022, "state_dir": "st", "policy": None})
    assert config.port == 2022
    assert config.state_dir == Path.cwd() / "st"
    assert config.policy == Path("/etc/tssh/policy.hujson")  # None: flag not given


def test_partial_config_reads_only_its_keys(tmp_path: Path) -> None:
    """``tssh ssh`` reads the daemon's file for the identity settings, layered the same way;
    the rest of the file (here a bad port and a key tssh does not know) is not its business,
    and no policy is required."""
    path = write(tmp_path, 'netmap = "mesh.hujson"\nport = "ssh"\ncolour = "blue"\n')
    keys = ("identity", "netmap")
    config = load_partial_config(path, {}, {}, keys)
    assert (config.identity, config.netmap, config.port) == ("netmap", tmp_path / "mesh.hujson",
                                                             22)
    config = load_partial_config(None, {"TSSH_CONFIG": str(path), "TSSH_NETMAP": "env.json"},
                                 {}, keys)
    assert config.netmap == Path.cwd() / "env.json"
    config = load_partial_config(path, {"TSSH_NETMAP": "env.json"}, {"netmap": "flag.json"},
                                 keys)
    assert config.netmap == Path.cwd() / "flag.json"
    with pytest.raises(ConfigError, match=r"environment TSSH_IDENTITY: .*'mesh'"):
        load_partial_config(path, {"TSSH_IDENTITY": "mesh"}, {}, keys)
    with pytest.raises(ConfigError, match="port"):
        load_config(path, {}, {"policy": "p"})  # the daemon does read the whole file


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'identity = "tailscale"\nrecorder_port = 8080\n')
    config = load_config(None, {"TSSH_CONFIG": str(path)}, {})
    assert config.identity == "tailscale" and config.recorder_port == 8080
    assert config.policy is None  # the tailscale backend may take it from the tailnet


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("prot = 22", "tssh.toml: unknown key 'prot' (did you mean 'port'?)"),
        ("[daemon]\nport = 22", "tssh.toml: unknown key 'daemon'"),
        ("port = 0", "tssh.toml: port: must be a port number from 1 to 65535, not 0"),
        ("port = 65536", "port: must be a port number from 1 to 65535, not 65536"),
        ('port = "22x"', "port: must be a port number from 1 to 65535, not '22x'"),
        ("port = true", "port: must be a port number"),
        ("recorder_port = 1.5", "recorder_port: must be a port number"),
        ('identity = "headscale"', "identity: must be one of netmap, tailscale, wireguard"),
        ("netmap = 3", "netmap: must be a string, not an integer"),
        ('netmap = ""', "netmap: must be a path, not empty"),
        ('netmap = "a\\u0000b"', "netmap: must not contain a NUL character"),
        ('host_keys = ["k", "\\u0000"]', "host_keys: must not contain a NUL character"),
        ('listen = ["100.64.0.1", "laptop"]', "listen: 'laptop' is not an IP address"),
        ("listen = 5", "listen: must be a list, not an integer"),
        ('log_format = "yaml"', "log_format: must be one of json, text"),
        ('log_level = "loud"', "log_level: must be one of debug, info, warning, error"),
        ('wireguard_interface = "wg/0"', "'wg/0' is not a network interface name"),
        ('wireguard_interface = "a-very-long-interface"', "is not a network interface name"),
        ("port = ", "tssh.toml: Invalid value (at line 1, column 8)"),
        ("check_timeout = 0", "check_timeout: must be whole seconds from 1 to 86400, not 0"),
        ("check_timeout = 1.5", "check_timeout: must be whole seconds"),
        ('check_oidc_issuer = "http://idp.example.com"',
         "check_oidc_issuer: must be an https:// URL (http:// only on loopback)"),
        ('check_oidc_issuer = "idp.example.com"', "check_oidc_issuer: must be an https:// URL"),
        ('check_oidc_client_id = ""', "check_oidc_client_id: must not be empty"),
        ("check_port = 0", "check_port: must be a port number"),
        ("audit_max_bytes = 100", "audit_max_bytes: must be whole bytes from 4096 to"),
        ("audit_files = 0", "audit_files: must be whole files from 1 to 100, not 0"),
        ('audit_files = "many"', "audit_files: must be whole files from 1 to 100, not 'many'"),
    ],
)
def test_bad_file_values_name_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    base = 'netmap = "m"\npolicy = "p"\n' if "netmap" not in toml else 'policy = "p"\n'
    path = write(tmp_path, base + toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, {})
    assert str(path) in str(info.value)
    assert message.replace("tssh.toml", str(path)) in str(info.value).replace(
        "line 3", "line 1").replace("line 2", "line 1")


def test_bad_env_and_flag_values_name_their_source(tmp_path: Path) -> None:
    path = write(tmp_path, 'netmap = "m"\npolicy = "p"\n')
    with pytest.raises(ConfigError, match=r"^environment TSSH_PORT: must be a port number"):
        load_config(path, {"TSSH_PORT": "ssh"}, {})
    with pytest.raises(ConfigError, match=r"^--recorder-port: must be a port number .* 0$"):
        load_config(path, {}, {"recorder_port": 0})
    with pytest.raises(ConfigError, match=r"^--prot: unknown key 'prot'"):
        load_config(path, {}, {"prot": 1})


def test_backend_requirements(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"identity 'netmap' needs a netmap file: set netmap"
                                          r" in the config file, TSSH_NETMAP or --netmap"):
        load_config(None, {}, {"policy": "p"})
    with pytest.raises(ConfigError, match=r"identity 'wireguard' \(from environment"
                                          r" TSSH_IDENTITY\) needs the WireGuard interface"):
        load_config(None, {"TSSH_IDENTITY": "wireguard"}, {"netmap": "inv", "policy": "p"})
    with pytest.raises(ConfigError, match=r"'wireguard' \(from --identity\) needs an inventory"):
        load_config(None, {}, {"identity": "wireguard", "wireguard_interface": "wg0",
                                "policy": "p"})
    with pytest.raises(ConfigError, match="needs a policy file"):
        load_config(None, {}, {"netmap": "m"})
    config = load_config(None, {}, {"identity": "wireguard", "wireguard_interface": "wg0",
                                    "netmap": "inv", "policy": "p"})
    assert config.wireguard_interface == "wg0"
    with pytest.raises(ConfigError, match="check_oidc_issuer needs the client's id"):
        load_config(None, {}, {"netmap": "m", "policy": "p",
                               "check_oidc_issuer": "https://idp.example.com/"})
    config = load_config(None, {"TSSH_CHECK_TIMEOUT": "30"}, {
        "netmap": "m", "policy": "p", "check_oidc_issuer": "http://127.0.0.1:9000/",
        "check_oidc_client_id": "tssh"})
    assert (config.check_timeout, config.check_oidc_issuer) == (30, "http://127.0.0.1:9000")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.toml: No such file"):
        load_config(tmp_path / "nope.toml", {}, {})


def test_names() -> None:
    assert env_var("state_dir") == "TSSH_STATE_DIR"
    assert flag("recorder_port") == "--recorder-port"


def test_shipped_example_loads_and_documents_every_key() -> None:
    example = REPO / "deploy" / "tssh.toml"
    config = load_config(example, {}, {})
    assert config.port == 22
    docs = (REPO / "docs" / "config.md").read_text()
    for key in PARSERS:
        assert f"`{key}`" in docs, f"docs/config.md does not document {key}"
        assert env_var(key) in docs
        assert key in example.read_text(), f"deploy/tssh.toml does not show {key}"


def test_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "tssh.toml"
    path.write_bytes(b'policy = "caf\xe9.hujson"\n')
    with pytest.raises(ConfigError, match=r"tssh\.toml: not UTF-8 text \(byte 0xe9 at offset 13\)"):
        load_config(path, {}, {})


def test_audit_log_settings(tmp_path: Path) -> None:
    path = write(tmp_path, 'netmap = "m"\npolicy = "p"\naudit_max_bytes = 1048576\n')
    config = load_config(path, {"TSSH_AUDIT_FILES": "3"}, {})
    assert (config.audit_max_bytes, config.audit_files) == (1048576, 3)
    default = load_config(write(tmp_path, 'netmap = "m"\npolicy = "p"\n'), {}, {})
    assert (default.audit_max_bytes, default.audit_files) == (64 * 1024 * 1024, 5)


def test_channel_window(tmp_path: Path) -> None:
    path = write(tmp_path, 'netmap = "m"\npolicy = "p"\nchannel_window = 16777216\n')
    assert load_config(path, {}, {}).channel_window == 16 * 1024 * 1024
    default = load_config(write(tmp_path, 'netmap = "m"\npolicy = "p"\n'), {}, {})
    assert default.channel_window == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"TSSH_CHANNEL_WINDOW: must be whole bytes from "
                                          r"65536 to 1073741824"):
        load_config(path, {"TSSH_CHANNEL_WINDOW": "1000"}, {})
