"""Storage keys: Tailscale's plain name first, a random suffix on a clash, any number of them."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import pytest

from recorder.errors import StorageError
from recorder.keys import check_key, storage_key
from tests.recorder.conftest import ALICE, SERVER, RecorderProc, cast_header, event

CONN = "ssh-conn-20261125T090000-samesecond"


async def test_thirty_recordings_of_one_connection_in_one_second(
    recorder: RecorderProc,
) -> None:
    """The recorder used to try 8 names (``.1`` … ``.7``) per connection and second: the 9th
    session started on one SSH connection within a second failed with "too many recordings"."""
    bodies = [cast_header(conn=CONN) + event(0.1, f"session {i}\n") for i in range(30)]
    await asyncio.sleep(1.02 - time.time() % 1)  # start just after a second boundary
    async with recorder.aclient(SERVER) as c:
        answers = await asyncio.gather(*(c.post("/record", content=b) for b in bodies))
    assert [r.status_code for r in answers] == [200] * 30, [r.text for r in answers]

    with recorder.client(ALICE) as c:
        listing = c.get("/api/v1/recordings", params={"limit": 100}).json()["recordings"]
        assert len(listing) == 30
        keys = [str(m["storageKey"]) for m in listing]
        assert len(set(keys)) == 30
        stored = sorted(c.get(f"/api/v1/recordings/{m['id']}/cast").content for m in listing)
        assert stored == sorted(bodies)
    per_second = Counter(k.split("-", 1)[0] for k in keys)
    assert max(per_second.values()) > 8, per_second  # the old limit was really exceeded
    for key in keys:  # one plain name per second, the others suffixed
        assert re.fullmatch(rf"nSRV1/[0-9]{{8}}T[0-9]{{6}}Z-{CONN}(\.[0-9a-f]{{8}})?", key), key
        check_key(key)
    plain = [k for k in keys if k.endswith(CONN)]
    assert len(plain) == len(per_second)
    assert all((recorder.tmp / "store" / f"{k}.cast").exists() for k in keys)


def test_key_shapes() -> None:
    assert storage_key("nSRV1", 1764061200, "c1") == "nSRV1/20251125T090000Z-c1"
    suffixed = storage_key("nSRV1", 1764061200, "c1", attempt=1)
    assert re.fullmatch(r"nSRV1/20251125T090000Z-c1\.[0-9a-f]{8}", suffixed)
    assert storage_key("nSRV1", 1764061200, "c1", attempt=1) != suffixed
    longest = storage_key("n" * 128, 1764061200, "c" * 128, attempt=3)
    assert check_key(longest) == longest  # reindex reads back every key begin() can make
    assert check_key("nSRV1/20251125T090000Z-c1.7") == "nSRV1/20251125T090000Z-c1.7"  # older
    for bad in ("../x", "a/../b", "a/b/c", "a", "a/.hidden", "a/b\n", "/a/b", "a/" + "x" * 193):
        with pytest.raises(StorageError):
            check_key(bad)
