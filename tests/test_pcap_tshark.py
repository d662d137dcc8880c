"""pcap capture checked with tshark: every message type and cause decoded, nothing malformed."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from isdn_harness import Harness

from firmware_sim import q931
from firmware_sim.network import Answer, Busy, NoAnswer, RawCause, Reject
from firmware_sim.pcap import LINKTYPE_LINUX_LAPD, PcapWriter
from firmware_sim.regmap import (
    CMD_ALERT,
    CMD_ANSWER,
    CMD_MAKE_CALL,
    CMD_RELEASE,
    ST_ACTIVE,
    ST_IDLE,
    ST_IN_PRESENT,
)

TSHARK = shutil.which("tshark")
pytestmark = [pytest.mark.tshark,
              pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")]

CAUSES = [(1, 2), (16, 0), (17, 4), (19, 2), (21, 0), (34, 2), (41, 1), (102, 0), (127, 7)]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pcap") / "dchannel.pcap"
    pcap = PcapWriter(path)
    h = Harness(spans=2, pcap=pcap, timers={"T303": 0.05}, net_timers={"T301": 0.1})
    try:
        for span in (0, 1):
            h.wait_link(span)
        sig = h.spans[0]
        net = h.network
        net.route("100", Answer(overlap=True))
        net.route("101", NoAnswer())
        net.route("102", Busy("inband"))
        for i, (cause, loc) in enumerate(CAUSES):
            net.route(f"2{i:02d}", Reject(cause, location=loc, stage="alerting"))
        net.route("300", RawCause(b"\x84\x91\x01\x02"))
        net.route("301", Reject(102, location=2, diagnostic=b"303"))
        # outgoing: answered with SETUP ACK, then the card clears (DISCONNECT/RELEASE/RC)
        sig.command(1, CMD_MAKE_CALL, "100", "5551000", b"")
        h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE)
        net.status_enquiry(0, 1)  # STATUS ENQUIRY -> STATUS
        h.run(0.02)
        sig.command(1, CMD_RELEASE, "", "", q931.cause_body(16, 0))
        for ts, number in enumerate(["101", "102", "300", "301"]
                                    + [f"2{i:02d}" for i in range(len(CAUSES))], start=2):
            sig.command(ts, CMD_MAKE_CALL, number, "", b"")
        h.run_until(lambda: all(h.sink.chan(0, ts).state == ST_IDLE
                                and h.sink.cleared(0, ts) for ts in range(1, 15)))
        # incoming: alerted and answered, cleared by the network; and one refused
        call = net.place_call("7000", "7001", span=1, timeslot=1)
        h.run_until(lambda: h.sink.chan(1, 1).state == ST_IN_PRESENT)
        h.spans[1].command(1, CMD_ALERT, "", "", b"")
        h.spans[1].command(1, CMD_ANSWER, "", "", b"")
        h.run_until(lambda: call.result.answered)
        call.clear(cause=31)
        refused = net.place_call("7002", span=1, timeslot=2)
        h.run_until(lambda: h.sink.chan(1, 2).state == ST_IN_PRESENT)
        h.spans[1].command(2, CMD_RELEASE, "", "", q931.cause_body(21, 0))
        h.run_until(lambda: call.result.cleared and refused.result.cleared)
        net.restart(1, 5)  # RESTART -> RESTART ACK
        net.inject(1, bytes((0x08, 0x02, 0x00, 0x33, 0x7B)))  # unknown CR -> RC 81
        h.run(0.05)
    finally:
        h.close()
        pcap.close()
    return path


def fields(path: Path, *names: str) -> list[list[str]]:
    cmd = [TSHARK or "tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for n in names:
        cmd += ["-e", n]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines()]


def test_pcap_header(capture: Path) -> None:
    data = capture.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and linktype == LINKTYPE_LINUX_LAPD == 177


def test_every_message_type_decoded(capture: Path) -> None:
    rows = fields(capture, "q931.message_type")
    seen = {int(v, 0) for row in rows for v in row[0].split(",") if v}
    assert set(q931.MESSAGE_NAMES) <= seen, {q931.MESSAGE_NAMES[m] for m in
                                              set(q931.MESSAGE_NAMES) - seen}


def test_both_directions_and_lapd(capture: Path) -> None:
    rows = fields(capture, "lapd.sapi", "lapd.tei", "lapd.cr", "q931.message_type")
    assert rows and all(r[0] == "0" and r[1] == "0" for r in rows)
    assert {r[2] for r in rows} == {"0", "1"}


def test_causes_decoded(capture: Path) -> None:
    rows = fields(capture, "q931.message_type", "q931.cause_value", "q931.cause_location",
                  "q931.coding_standard")
    seen = Counter((int(r[1].split(",")[0]), int(r[2].split(",")[0]))
                   for r in rows if r[1] and int(r[3].split(",")[-1], 0) == 0)
    for cause, loc in CAUSES:
        assert seen[(cause, loc)] >= 1, (cause, loc)
    assert seen[(17, 4)] >= 2 and seen[(81, 0)] >= 1 and seen[(31, 4)] >= 1
    timers = fields(capture, "q931.cause_call.rec_timer")
    assert any("303" in r[0] for r in timers)


def test_no_malformed_or_expert_warnings(capture: Path) -> None:
    out = subprocess.run([TSHARK or "tshark", "-r", str(capture), "-q", "-z", "expert"],
                         check=True, capture_output=True, text=True).stdout
    assert "Malformed" not in out and "Warning" not in out and "Error" not in out, out
    verbose = subprocess.run([TSHARK or "tshark", "-r", str(capture), "-V"], check=True,
                             capture_output=True, text=True).stdout
    assert "Malformed" not in verbose and "Message type: SETUP" in verbose
