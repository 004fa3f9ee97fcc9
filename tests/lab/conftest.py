"""The lab's fixtures: one lab per test session (built by the xdist worker that runs the
``lab`` group), put right again after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.results import LONG_ENV, long_run
from tests.lab.testbed import Testbed, unavailable_reason, up


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason=f"reliability lab unavailable: {reason}")
    workdir = tmp_path_factory.mktemp("lab")
    bed = up(workdir)
    # If this process dies without its teardown, `python -m tests.lab down --state` with
    # this file still ends exactly what was started.
    bed.save(workdir / "lab.json")
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def lab(testbed: Testbed) -> Iterator[Testbed]:
    """The lab, restored after the test (services back, inventories whole, disk free)."""
    try:
        yield testbed
    finally:
        testbed.restore()
        testbed.save(testbed.workdir / "lab.json")


@pytest.fixture
def rerun(request: pytest.FixtureRequest) -> str:
    """The command that runs this test alone (the report's "rerun" column)."""
    prefix = f"{LONG_ENV}=1 " if long_run() else ""
    return f"{prefix}python -m pytest -n 0 {request.node.nodeid}"
