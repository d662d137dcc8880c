"""Interoperation with libpri (Debian libpri-dev) as the EuroISDN E1 network side.

The card's span talks LAPD/Q.931 over a SOCK_SEQPACKET socketpair to tests/peers/libpri_peer.c,
compiled here against the system libpri and driven by a line protocol on its stdin/stdout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from isdn_harness import Harness
from libpri_process import LibpriProcess, build, needs_libpri

from firmware_sim import q931
from firmware_sim.regmap import (
    CAUSE_SRC_LOCAL,
    CAUSE_SRC_REMOTE,
    CMD_ALERT,
    CMD_ANSWER,
    CMD_MAKE_CALL,
    CMD_RELEASE,
    CMD_RESERVE,
    CMD_UNRESERVE,
    MB_DONE,
    ST_ACTIVE,
    ST_IDLE,
    ST_IN_PRESENT,
    ST_MAINTENANCE,
    ST_OUT_ALERTING,
)

pytestmark = needs_libpri


@pytest.fixture(scope="module")
def peer_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("libpri"))


class Peer:
    """The libpri process and the card span (call control on a test loop) cabled to it."""

    def __init__(self, exe: Path) -> None:
        self.lib = LibpriProcess(exe)
        self.send = self.lib.send
        self.h = Harness(sockets={0: self.lib.card_sock})
        self.sig = self.h.spans[0]
        self.sink = self.h.sink

    def expect(self, prefix: str, timeout: float = 5.0) -> str:
        self.h.run_until(lambda: self.lib.seen(prefix) is not None, timeout)
        line = self.lib.seen(prefix)
        assert line is not None
        return line

    def close(self) -> None:
        self.h.close()
        self.lib.close()


@pytest.fixture
def peer(peer_exe: Path) -> Iterator[Peer]:
    p = Peer(peer_exe)
    try:
        p.expect("up")
        p.h.wait_link()
        yield p
    finally:
        p.close()


@pytest.mark.parametrize("cause", [1, 17, 21, 34, 41])
def test_card_call_rejected_by_libpri(peer: Peer, cause: int) -> None:
    peer.send(f"route 100 reject {cause}")
    peer.expect("ok")
    assert peer.sig.command(3, CMD_MAKE_CALL, "100", "2000", b"") == MB_DONE
    assert peer.expect("ring ") == "ring 3 100 2000"
    peer.h.run_until(lambda: peer.sink.cleared(0, 3) == 1)
    ch = peer.sink.chan(0, 3)
    fields = q931.parse_cause(ch.cause)
    assert fields is not None and fields.value == cause
    assert fields.location == q931.LOC_PRIVATE_LOCAL  # libpri's location for its causes
    assert ch.cause_source == CAUSE_SRC_REMOTE and ch.state == ST_IDLE


def test_card_call_answered_then_libpri_clears(peer: Peer) -> None:
    peer.send("route 200 answer")
    peer.expect("ok")
    peer.sig.command(1, CMD_MAKE_CALL, "200", "", b"")
    peer.h.run_until(lambda: peer.sink.chan(0, 1).state == ST_ACTIVE)
    assert ST_OUT_ALERTING in [s for _, s in peer.sink.chan(0, 1).events]
    peer.send("hangup 1 16")
    peer.h.run_until(lambda: peer.sink.cleared(0, 1) == 1)
    assert q931.parse_cause(peer.sink.chan(0, 1).cause).value == 16  # type: ignore[union-attr]


def test_card_call_answered_then_card_clears(peer: Peer) -> None:
    peer.send("route 201 answer")
    peer.expect("ok")
    peer.sig.command(2, CMD_MAKE_CALL, "201", "", b"")
    peer.h.run_until(lambda: peer.sink.chan(0, 2).state == ST_ACTIVE)
    cause = q931.cause_body(31, 0)
    peer.sig.command(2, CMD_RELEASE, "", "", cause)
    assert peer.expect("hangup_req 2") == "hangup_req 2 31"
    peer.h.run_until(lambda: peer.sink.cleared(0, 2) == 1)
    assert peer.sink.chan(0, 2).cause == cause
    assert peer.sink.chan(0, 2).cause_source == CAUSE_SRC_LOCAL


def test_libpri_call_answered_and_cleared_by_libpri(peer: Peer) -> None:
    peer.send("call 5 3000 4000")
    peer.h.run_until(lambda: peer.sink.chan(0, 5).state == ST_IN_PRESENT)
    ch = peer.sink.chan(0, 5)
    assert (ch.called, ch.calling) == ("3000", "4000")
    assert peer.expect("proceeding 5")
    assert peer.sig.command(5, CMD_ALERT, "", "", b"") == MB_DONE
    assert peer.expect("ringing 5")
    assert peer.sig.command(5, CMD_ANSWER, "", "", b"") == MB_DONE
    assert peer.expect("answer 5")
    peer.h.run_until(lambda: peer.sink.chan(0, 5).state == ST_ACTIVE)
    peer.send("hangup 5 16")
    peer.h.run_until(lambda: peer.sink.cleared(0, 5) == 1)
    fields = q931.parse_cause(peer.sink.chan(0, 5).cause)
    assert fields is not None and fields.value == 16
    assert peer.sink.chan(0, 5).cause_source == CAUSE_SRC_REMOTE


@pytest.mark.parametrize("cause", [17, 21, 88])
def test_libpri_call_rejected_by_card(peer: Peer, cause: int) -> None:
    peer.send("call 7 3001")
    peer.h.run_until(lambda: peer.sink.chan(0, 7).state == ST_IN_PRESENT)
    body = q931.cause_body(cause, q931.LOC_USER)
    assert peer.sig.command(7, CMD_RELEASE, "", "", body) == MB_DONE
    assert peer.expect("hangup_req 7") == f"hangup_req 7 {cause}"  # a DISCONNECT
    peer.h.run_until(lambda: peer.sink.cleared(0, 7) == 1)
    assert peer.sink.chan(0, 7).cause == body


def test_libpri_call_answered_then_card_clears(peer: Peer) -> None:
    peer.send("call 9 3002")
    peer.h.run_until(lambda: peer.sink.chan(0, 9).state == ST_IN_PRESENT)
    peer.sig.command(9, CMD_ANSWER, "", "", b"")
    peer.h.run_until(lambda: peer.sink.chan(0, 9).state == ST_ACTIVE)
    peer.sig.command(9, CMD_RELEASE, "", "", q931.cause_body(16, 0))
    assert peer.expect("hangup_req 9") == "hangup_req 9 16"
    peer.h.run_until(lambda: peer.sink.cleared(0, 9) == 1)
    assert peer.sink.chan(0, 9).cause_source == CAUSE_SRC_LOCAL


def test_libpri_call_on_a_reserved_channel_refused_44(peer: Peer) -> None:
    assert peer.sig.command(6, CMD_RESERVE, "", "", b"") == MB_DONE
    peer.send("call 6 3003")  # libpri names the channel exclusive
    assert peer.expect("hangup 6") == "hangup 6 44"
    assert peer.sink.chan(0, 6).events == []  # never offered to the host
    assert peer.sig.command(6, CMD_UNRESERVE, "", "", b"") == MB_DONE
    peer.send("call 6 3004")
    peer.h.run_until(lambda: peer.sink.chan(0, 6).state == ST_IN_PRESENT)


def test_libpri_reboot_clears_calls_it_forgot(peer: Peer) -> None:
    """libpri restarts on a live link (a fresh instance: no calls, SABME): the card's audit
    after the data link reset (STATUS ENQUIRY, Q.931 §5.8.8) finds the calls gone and clears
    them at once (§5.8.11) instead of keeping them up."""
    peer.send("route 300 answer")
    peer.expect("ok")
    peer.sig.command(6, CMD_MAKE_CALL, "300", "", b"")
    peer.h.run_until(lambda: peer.sink.chan(0, 6).state == ST_ACTIVE)
    peer.lib.lines.clear()
    peer.send("reboot")
    peer.expect("ok")
    peer.h.run_until(lambda: peer.sink.cleared(0, 6) == 1, 3.0)
    ch = peer.sink.chan(0, 6)
    assert ch.state == ST_IDLE and ch.cause_source == CAUSE_SRC_REMOTE
    assert peer.sink.dchannel[0]
    peer.expect("up")


def test_card_restart_acknowledged_by_libpri(peer: Peer) -> None:
    """The card's RESTART for a channel (as after a second T308 expiry, §5.3.4.3) takes it out
    of service until libpri's RESTART ACKNOWLEDGE returns it."""
    cc = peer.sig.cc
    cc.restart(7)
    assert peer.sink.chan(0, 7).state == ST_MAINTENANCE
    assert peer.expect("restart ") == "restart 7"
    peer.h.run_until(lambda: peer.sink.chan(0, 7).state == ST_IDLE, 3.0)
    assert not cc.maintenance and cc.stats["ignored"] == 0
    assert peer.sig.command(7, CMD_MAKE_CALL, "300", "", b"") == MB_DONE
