from tssh.identity.base import Peer
from tssh.recording.targets import RecorderAddress, recorder_targets

REC1 = Peer(name="rec1.example.ts.net.", id="r1", addresses=("fd7a::1", "100.64.0.21"),
            tags=("tag:recorder",))
REC2 = Peer(name="rec2.example.ts.net", id="r2", addresses=("100.64.0.22",),
            tags=("tag:recorder", "tag:prod"))
V6ONLY = Peer(name="rec6", id="r6", addresses=("fd7a::6",), tags=("tag:v6",))
LAPTOP = Peer(name="laptop", id="l", addresses=("100.64.0.2",), user="alice@example.com")
PEERS = [LAPTOP, REC1, REC2, V6ONLY]


def test_tag_selects_every_tagged_node_at_its_ipv4_address_in_order() -> None:
    assert recorder_targets(["tag:recorder"], PEERS, 80) == [
        RecorderAddress("100.64.0.21", 80), RecorderAddress("100.64.0.22", 80)]


def test_names_literals_order_and_duplicates() -> None:
    got = recorder_targets([" rec2 ", "tag:recorder", "100.64.0.99:8080", "[fd7a::9]:81",
                            "fd7a::8", "rec1.example.ts.net", "tag:none", "nobody"], PEERS, 80)
    assert got == [RecorderAddress("100.64.0.22", 80), RecorderAddress("100.64.0.21", 80),
                   RecorderAddress("100.64.0.99", 8080), RecorderAddress("fd7a::9", 81),
                   RecorderAddress("fd7a::8", 80)]
    assert [str(a) for a in got[3:]] == ["[fd7a::9]:81", "[fd7a::8]:80"]


def test_ipv6_only_node_is_dialed_over_ipv6() -> None:
    assert recorder_targets(["tag:v6"], PEERS, 443) == [RecorderAddress("fd7a::6", 443)]


def test_prefixes_and_garbage_in_addresses() -> None:
    odd = Peer(name="odd", id="o", addresses=("bogus", "fd7a::7/128", "100.64.0.7/32"),
               tags=("tag:odd",))
    none = Peer(name="none", id="n", addresses=("bogus",), tags=("tag:odd",))
    assert recorder_targets(["tag:odd"], [odd, none], 80) == [RecorderAddress("100.64.0.7", 80)]
