"""`SimulatedCard(pcap=PATH)` with calls placed through the API, read back with tshark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.network import Answer, Busy, Reject
from telecard import Card, Cause, State

TSHARK = shutil.which("tshark")
pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(TSHARK is None, reason="tshark (Debian package tshark) is not installed"),
]


def test_every_frame_of_every_span_decodes(tmp_path: Path) -> None:
    pcap = tmp_path / "card.pcap"
    with SimulatedCard(spans=2, pcap=pcap) as sim, Card.open(sim.device_path) as card:
        sim.network.route("3301", Busy())
        sim.network.route("3302", Answer())
        sim.network.route("3304", Reject(42, location=3, diagnostic=b"\x01"))
        assert card.channel(0, 1).call("3301", seconds_timeout=5) is State.IDLE
        answered = card.channel(1, 2)
        assert answered.call("3302", seconds_timeout=5) is State.ANSWERED
        answered.hang_up()
        congested = card.channel(1, 17)
        assert congested.call("3304", seconds_timeout=5) is State.IDLE
        assert congested.cause() is Cause.CONGESTION
        offered = sim.network.place_call("2000", span=1)
        incoming = card.wait_for_incoming_call(seconds_timeout=5)
        assert incoming is not None
        incoming.reject(Cause.BUSY)
        assert offered.wait(5).cause == 17
    assert TSHARK is not None
    fields = subprocess.run(
        [TSHARK, "-r", str(pcap), "-Y", "q931", "-T", "fields", "-E", "separator=,",
         "-e", "q931.message_type", "-e", "q931.cause_value", "-e", "q931.cause_location"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    rows = [tuple(row.split(",")) for row in fields]
    causes = {(int(t, 0), int(v), int(loc)) for t, v, loc in rows if v}
    assert (0x5A, 17, 4) in causes  # RELEASE COMPLETE: user busy, public network remote user
    assert (0x45, 16, 0) in causes  # the card's DISCONNECT from hang_up(): normal, user
    assert (0x5A, 42, 3) in causes  # RELEASE COMPLETE: switching congestion, transit network
    # reject() after the card's CALL PROCEEDING: a DISCONNECT, as Q.931 5.3.2 requires
    assert (0x45, 17, 0) in causes and (0x5A, 17, 0) not in causes
    assert {0x05, 0x02, 0x01, 0x07, 0x0F, 0x45, 0x4D, 0x5A} <= {int(t, 0) for t, _, _ in rows}
    expert = subprocess.run(
        [TSHARK, "-r", str(pcap), "-q", "-z", "expert"], capture_output=True, text=True, check=True
    ).stdout
    assert "Malformed" not in expert and "Error" not in expert
