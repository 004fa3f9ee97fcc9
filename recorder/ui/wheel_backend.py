"""The build backend of tssh's wheel: setuptools, after putting the web UI's player into
``recorder/ui/vendor/`` so that the wheel carries it (docs/recorder.md, "Web UI").

The player comes from the npm registry, pinned by ``package-lock.json`` here, and is never
committed: ``npm ci`` installs exactly the locked version, as ``./dev`` does for a checkout.
When the vendored files are already there and match the lockfile (``./dev`` put them), the
build uses them and needs no npm. Editable installs and sdists are setuptools' own.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any


def __getattr__(name: str) -> Any:
    """The other PEP 517 hooks are setuptools' own; imported only when a build asks for one
    (``./dev`` runs this file in a venv that may have no setuptools)."""
    if name.startswith(("build_", "get_requires_for_", "prepare_metadata_for_")):
        from setuptools import build_meta

        return getattr(build_meta, name)
    raise AttributeError(name)


UI = Path(__file__).resolve().parent
PLAYER_FILES = ("asciinema-player.min.js", "asciinema-player.css")
STAMP = ".lockfile-sha256"  # in vendor/: the lockfile the files were installed from


class PlayerUnavailable(RuntimeError):
    """The wheel cannot be built with its player."""


def lock_digest(ui: Path = UI) -> str:
    return hashlib.sha256((ui / "package-lock.json").read_bytes()).hexdigest()


def player_vendored(ui: Path = UI) -> bool:
    """Whether ``vendor/`` holds the player installed from the current lockfile."""
    vendor = ui / "vendor"
    return all((vendor / name).is_file() for name in PLAYER_FILES) and \
        (vendor / STAMP).is_file() and (vendor / STAMP).read_text().strip() == lock_digest(ui)


def vendor_player(ui: Path = UI) -> None:
    """Make ``vendor/`` hold the locked player, running ``npm ci`` only when it does not."""
    if player_vendored(ui):
        return
    vendor = ui / "vendor"
    npm = shutil.which("npm")
    if npm is None:
        raise PlayerUnavailable("building the wheel needs npm, to install the web UI's player "
                                "(asciinema-player, pinned in recorder/ui/package-lock.json)")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ui, check=False)
    if done.returncode != 0:
        raise PlayerUnavailable(f"npm ci in {ui} failed (exit status {done.returncode})")
    bundle = ui / "node_modules" / "asciinema-player" / "dist" / "bundle"
    vendor.mkdir(exist_ok=True)
    for name in PLAYER_FILES:
        shutil.copyfile(bundle / name, vendor / name)
    (vendor / STAMP).write_text(lock_digest(ui) + "\n")


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    from setuptools import build_meta

    vendor_player()
    return str(build_meta.build_wheel(wheel_directory, config_settings, metadata_directory))


if __name__ == "__main__":  # ./dev: the same for a checkout, carrying on without a player
    import sys

    try:
        vendor_player()
    except (PlayerUnavailable, OSError) as e:
        print(f"dev: {e}: the recorder's web UI will say its player is missing",
              file=sys.stderr)
        sys.exit(1)
