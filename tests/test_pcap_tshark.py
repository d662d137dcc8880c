"""pcapng capture checked with tshark: every frame decoded as LAPD/Q.931 on its span's
interface with its direction, every message type and cause decoded, nothing malformed."""

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
from firmware_sim.pcap import (
    BLOCK_EPB,
    BLOCK_IDB,
    BLOCK_SHB,
    BYTE_ORDER_MAGIC,
    EPB_INBOUND,
    EPB_OUTBOUND,
    LINKTYPE_LINUX_LAPD,
    PcapWriter,
)
from firmware_sim.regmap import (
    CMD_ALERT,
    CMD_ANSWER,
    CMD_MAKE_CALL,
    CMD_MAKE_CALL_OVERLAP,
    CMD_RELEASE,
    CMD_SEND_DIGITS,
    CMD_SEND_DIGITS_COMPLETE,
    ST_ACTIVE,
    ST_IDLE,
    ST_IN_PRESENT,
    ST_OUT_OVERLAP,
)

TSHARK = shutil.which("tshark")
pytestmark = [pytest.mark.tshark,
              pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")]

CAUSES = [(1, 2), (16, 0), (17, 4), (19, 2), (21, 0), (34, 2), (41, 1), (102, 0), (127, 7)]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pcap") / "dchannel.pcapng"
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
        # overlap dialling both ways: the card dials 8, 12, 3 + Sending Complete on span 0;
        # the network dials 700, 3 to the card on span 1, complete by the length rule
        net.route("8123", Answer())
        sig.command(29, CMD_MAKE_CALL_OVERLAP, "8", "", b"")
        h.run_until(lambda: h.sink.chan(0, 29).state == ST_OUT_OVERLAP)
        sig.command(29, CMD_SEND_DIGITS, "12", "", b"")
        sig.command(29, CMD_SEND_DIGITS_COMPLETE, "3", "", b"")
        h.run_until(lambda: h.sink.chan(0, 29).state == ST_ACTIVE)
        h.spans[1].overlap_digits = 4
        net.place_call("7003", span=1, timeslot=3, overlap=3, sending_complete=False)
        h.run_until(lambda: h.sink.chan(1, 3).state == ST_IN_PRESENT)
        net.restart(1, 5)  # RESTART -> RESTART ACK
        net.inject(1, bytes((0x08, 0x02, 0x00, 0x33, 0x7B)))  # unknown CR -> RC 81
        sig.cc.restart(20)  # the card's RESTART -> the network's RESTART ACK
        sig.command(30, CMD_MAKE_CALL, "100", "", b"")
        h.run_until(lambda: h.sink.chan(0, 30).state == ST_ACTIVE)
        net.entity(0).lapd._reestablish()  # data link reset: the card's STATUS ENQUIRY
        h.run_until(lambda: h.sink.chan(0, 20).state == ST_IDLE)
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


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(block type, body) of every pcapng block, checking each block's two lengths agree."""
    out = []
    pos = 0
    while pos < len(data):
        kind, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0 and struct.unpack_from("<I", data, pos + total - 4)[0] == total
        out.append((kind, data[pos + 8:pos + total - 4]))
        pos += total
    assert pos == len(data)
    return out


def options(raw: bytes) -> dict[int, bytes]:
    found = {}
    pos = 0
    while pos < len(raw):
        code, length = struct.unpack_from("<HH", raw, pos)
        if code == 0:
            break
        found[code] = raw[pos + 4:pos + 4 + length]
        pos += 4 + length + (-length % 4)
    return found


def test_pcapng_blocks(capture: Path) -> None:
    found = blocks(capture.read_bytes())
    kind, shb = found[0]
    assert kind == BLOCK_SHB and struct.unpack_from("<IHH", shb) == (BYTE_ORDER_MAGIC, 1, 0)
    names = []
    flags = set()
    for kind, body in found[1:]:
        if kind == BLOCK_IDB:
            assert struct.unpack_from("<H", body)[0] == LINKTYPE_LINUX_LAPD == 177
            names.append(options(body[8:])[2])  # if_name
        else:
            assert kind == BLOCK_EPB
            iface, _, _, caplen, _ = struct.unpack_from("<IIIII", body)
            assert iface < len(names)  # its interface was described before it
            flags.add(struct.unpack("<I", options(body[20 + caplen + (-caplen % 4):])[2])[0])
    assert sorted(names) == [b"span0", b"span1"]
    assert flags == {EPB_INBOUND, EPB_OUTBOUND}


def test_every_frame_decoded_on_its_span(capture: Path) -> None:
    rows = fields(capture, "frame.interface_name", "frame.interface_description",
                  "frame.packet_flags_direction", "frame.protocols", "lapd.control.ftype",
                  "lapd.cr", "q931.message_type", "q931.called_party_number.digits")
    assert len(rows) > 100
    seen_spans = set()
    i_frames = 0
    for name, description, direction, protocols, ftype, cr, mt, called in rows:
        assert name in ("span0", "span1") and description == f"span {name[4:]} D-channel"
        seen_spans.add(name)
        assert protocols.startswith("lapd"), protocols
        if int(ftype, 0) == 0:  # an I-frame: carries a Q.931 message
            i_frames += 1
            assert "q931" in protocols and mt, (protocols, mt)
            # The card is the user side: the I-frames it sends are commands with C/R 0, the
            # network's carry C/R 1 (Q.921 3.3.2), so the direction flag must agree with C/R.
            assert int(direction, 0) == (EPB_OUTBOUND if cr == "0" else EPB_INBOUND)
        if called and int(mt, 0) != q931.INFORMATION:  # (overlap digits: test_overlap_*)
            # The card calls out on span 0; the network calls the card (7000...) on span 1.
            outgoing = not called.startswith("700")
            assert name == ("span0" if outgoing else "span1"), (name, called)
            assert int(direction, 0) == (EPB_OUTBOUND if outgoing else EPB_INBOUND)
    assert seen_spans == {"span0", "span1"} and i_frames > 50


def test_every_message_type_decoded(capture: Path) -> None:
    rows = fields(capture, "q931.message_type")
    seen = {int(v, 0) for row in rows for v in row[0].split(",") if v}
    assert set(q931.MESSAGE_NAMES) <= seen, {q931.MESSAGE_NAMES[m] for m in
                                              set(q931.MESSAGE_NAMES) - seen}


def test_overlap_decoded(capture: Path) -> None:
    """SETUP without Sending Complete, SETUP ACKNOWLEDGE and the INFORMATION digits, both
    ways: the card's on span 0 (the last with Sending Complete), the network's on span 1 (the
    digitless INFORMATION is the one injected for an unknown call reference)."""
    rows = fields(capture, "frame.interface_name", "frame.packet_flags_direction",
                  "q931.message_type", "q931.called_party_number.digits",
                  "q931.sending_complete")
    info = [(name, int(d, 0), called, complete == "1")
            for name, d, mt, called, complete in rows
            if mt and int(mt, 0) == q931.INFORMATION and called]
    assert info == [("span0", EPB_OUTBOUND, "12", False), ("span0", EPB_OUTBOUND, "3", True),
                    ("span1", EPB_INBOUND, "3", False)]
    acks = {(name, int(d, 0)) for name, d, mt, _, _ in rows
            if mt and int(mt, 0) == q931.SETUP_ACKNOWLEDGE}
    assert {("span0", EPB_INBOUND), ("span1", EPB_OUTBOUND)} <= acks
    overlap_setups = {(name, called) for name, d, mt, called, complete in rows
                      if mt and int(mt, 0) == q931.SETUP and complete != "1"}
    assert overlap_setups == {("span0", "8"), ("span1", "700")}


def test_card_restart_and_audit_decoded(capture: Path) -> None:
    """The card's own RESTART (channel maintenance) and STATUS ENQUIRY (audit after a data
    link reset) go out on span 0 and decode, answered by RESTART ACK and STATUS."""
    rows = fields(capture, "frame.interface_name", "frame.packet_flags_direction",
                  "q931.message_type")
    sent = {int(mt, 0) for name, d, mt in rows if name == "span0" and mt
            and int(d, 0) == EPB_OUTBOUND}
    received = {int(mt, 0) for name, d, mt in rows if name == "span0" and mt
                and int(d, 0) == EPB_INBOUND}
    assert {q931.RESTART, q931.STATUS_ENQUIRY} <= sent
    assert {q931.RESTART_ACKNOWLEDGE, q931.STATUS} <= received


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
