"""Card-side Q.931 call control against the network emulator, over the in-memory D-channel."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from isdn_harness import Harness, cause_value

from firmware_sim import lapd, q931
from firmware_sim.callcontrol import (
    N316,
    N322,
    P_ACTIVE,
    P_IN_PROC,
    P_NULL,
    TIMERS,
    Call,
    CallControl,
    _stop_call_timer,
    _TimerQueue,
)
from firmware_sim.dchannel import back_to_back
from firmware_sim.network import (
    Answer,
    Busy,
    Congestion,
    NoAnswer,
    NoResponse,
    RawCause,
    Reject,
)
from firmware_sim.regmap import (
    CAUSE_SRC_LOCAL,
    CAUSE_SRC_REMOTE,
    CMD_ALERT,
    CMD_ANSWER,
    CMD_MAKE_CALL,
    CMD_RELEASE,
    DIR_INCOMING,
    EV_CLEARED,
    EV_INCOMING,
    EV_STATE,
    LINE_T1,
    MB_DONE,
    MB_ERR_ARGUMENT,
    MB_ERR_NO_LINK,
    MB_ERR_STATE,
    MB_ERR_UNKNOWN,
    ROLE_NT,
    ROLE_TE,
    ST_ACTIVE,
    ST_CLEARING,
    ST_CONNECTING,
    ST_IDLE,
    ST_IN_ALERTING,
    ST_IN_PRESENT,
    ST_MAINTENANCE,
    ST_OUT_ALERTING,
    ST_OUT_PROCEEDING,
    ST_OUT_SETUP,
)

NORMAL = q931.cause_body(16, 0)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(timers={"T303": 0.1, "T310": 0.2, "T305": 0.1, "T308": 0.1,
                              "T313": 0.1, "T301": 0.3, "T309": 0.3, "T316": 0.3,
                              "T322": 0.1},
                      net_timers={"T301": 0.2})
    harness.wait_link()
    yield harness
    harness.close()


def dial(h: Harness, ts: int, number: str, calling: str = "5550001") -> None:
    assert h.spans[0].command(ts, CMD_MAKE_CALL, number, calling, b"") == MB_DONE


def wait_cleared(h: Harness, ts: int, n: int = 1, timeout: float = 3.0) -> bytes:
    h.run_until(lambda: h.sink.cleared(0, ts) >= n, timeout)
    ch = h.sink.chan(0, ts)
    assert ch.state == ST_IDLE
    return ch.cause


def test_answer_then_card_clears(h: Harness) -> None:
    h.network.route("100", Answer(after=0.05))
    dial(h, 1, "100")
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE)
    states = [s for _, s in h.sink.chan(0, 1).events]
    assert states == [ST_OUT_SETUP, ST_OUT_PROCEEDING, ST_OUT_ALERTING, ST_ACTIVE]
    received = h.network.received[-1].result
    assert (received.called, received.calling, received.timeslot) == ("100", "5550001", 1)
    cause = bytes((0x80, 0x90, 0x01, 0x02))  # with diagnostics: passed through unchanged
    assert h.spans[0].command(1, CMD_RELEASE, "", "", cause) == MB_DONE
    assert wait_cleared(h, 1) == cause
    assert h.sink.chan(0, 1).cause_source == CAUSE_SRC_LOCAL
    h.run_until(lambda: h.network.received[-1].result.cleared)
    r = h.network.received[-1].result
    assert (r.cleared_by, r.cause, r.cause_octets) == ("card", 16, cause)


def test_answer_with_hold_network_clears(h: Harness) -> None:
    h.network.route("101", Answer(hold=0.05))
    dial(h, 2, "101")
    assert wait_cleared(h, 2) == q931.cause_body(16, q931.LOC_PUBLIC_REMOTE)
    assert h.sink.chan(0, 2).cause_source == CAUSE_SRC_REMOTE
    assert ST_ACTIVE in [s for _, s in h.sink.chan(0, 2).events]


@pytest.mark.parametrize("stage", ["setup", "proceeding", "alerting", "inband"])
def test_busy_every_stage(h: Harness, stage: str) -> None:
    h.network.route("200", Busy(stage))  # type: ignore[arg-type]
    dial(h, 3, "200")
    assert wait_cleared(h, 3) == bytes((0x84, 0x91))
    assert h.sink.chan(0, 3).cause_source == CAUSE_SRC_REMOTE


@pytest.mark.parametrize("cause", [0, 1, 3, 17, 21, 31, 34, 38, 41, 42, 44, 50, 57, 58, 63,
                                   65, 79, 81, 88, 95, 96, 102, 111, 127])
def test_reject_any_cause_octets_intact(h: Harness, cause: int) -> None:
    h.network.route("300", Reject(cause, location=7, diagnostic=b"\x99\x01",
                                  stage="proceeding"))
    dial(h, 4, "300")
    assert wait_cleared(h, 4) == bytes((0x87, 0x80 | cause, 0x99, 0x01))


@pytest.mark.parametrize("raw", [b"\xe3\x91",  # network-specific coding standard
                                 b"\x84",  # truncated
                                 b"\x04\x91",  # octet 3a missing
                                 b"\x02\x83\x9f",  # with octet 3a
                                 b"\x80\x7f\x00",  # cause octet without extension bit
                                 bytes(range(0x80, 0xA0))])  # 32 octets
def test_raw_cause_recorded_unchanged(h: Harness, raw: bytes) -> None:
    h.network.route("301", RawCause(raw, stage="alerting"))
    dial(h, 5, "301")
    assert wait_cleared(h, 5) == raw
    assert h.sink.chan(0, 5).cause_source == CAUSE_SRC_REMOTE


def test_unrouted_and_congestion(h: Harness) -> None:
    dial(h, 6, "999")
    assert wait_cleared(h, 6) == bytes((0x82, 0x81))
    h.network.route("400", Congestion())
    dial(h, 7, "400")
    assert cause_value(wait_cleared(h, 7)) == 42


def test_no_response_t303_twice_then_102(h: Harness) -> None:
    h.network.route("500", NoResponse())
    dial(h, 8, "500")
    h.run(0.15)
    assert h.sink.chan(0, 8).state == ST_OUT_SETUP  # SETUP resent once after the first T303
    assert wait_cleared(h, 8) == bytes((0x80, 0xE6)) + b"303"
    assert h.sink.chan(0, 8).cause_source == CAUSE_SRC_LOCAL


def test_no_answer_network_t301_cause_19(h: Harness) -> None:
    h.network.route("600", NoAnswer())
    dial(h, 9, "600")
    h.run_until(lambda: h.sink.chan(0, 9).state == ST_OUT_ALERTING)
    assert wait_cleared(h, 9) == q931.cause_body(19, q931.LOC_PUBLIC_LOCAL)


def test_card_t301_when_network_waits_longer() -> None:
    harness = Harness(timers={"T301": 0.1}, net_timers={"T301": 5.0})
    try:
        harness.wait_link()
        harness.network.route("600", NoAnswer())
        assert harness.spans[0].command(1, CMD_MAKE_CALL, "600", "", b"") == MB_DONE
        assert wait_cleared(harness, 1) == bytes((0x80, 0xE6)) + b"301"
    finally:
        harness.close()


def test_t310_expiry_after_proceeding(h: Harness) -> None:
    entity = h.network.entity(0)
    entity.listener.on_incoming = lambda call, msg: entity.proceeding(call)  # type: ignore
    dial(h, 10, "700")
    h.run_until(lambda: h.sink.chan(0, 10).state == ST_OUT_PROCEEDING)
    assert wait_cleared(h, 10) == bytes((0x80, 0xE6)) + b"310"


def test_incoming_answer_and_network_clears(h: Harness) -> None:
    call = h.network.place_call("2000", "3000")  # the network hunts from the top: 31
    h.run_until(lambda: h.sink.chan(0, 31).state == ST_IN_PRESENT)
    ch = h.sink.chan(0, 31)
    assert (ch.called, ch.calling, ch.direction) == ("2000", "3000", DIR_INCOMING)
    assert ch.events[-1][0] == EV_INCOMING and ch.call_ref & 0x8000
    assert h.spans[0].command(31, CMD_ALERT, "", "", b"") == MB_DONE
    h.run_until(lambda: call.result.alerted)
    assert h.sink.chan(0, 31).state == ST_IN_ALERTING
    assert h.spans[0].command(31, CMD_ANSWER, "", "", b"") == MB_DONE
    assert h.sink.chan(0, 31).state == ST_CONNECTING
    h.run_until(lambda: call.result.answered and h.sink.chan(0, 31).state == ST_ACTIVE)
    assert call.result.timeslot == 31
    call.clear(cause=16, location=q931.LOC_PUBLIC_REMOTE)
    assert wait_cleared(h, 31) == bytes((0x84, 0x90))
    assert call.result.cleared_by == "network"


def test_incoming_rejected_with_release_complete(h: Harness) -> None:
    call = h.network.place_call("2001", span=0, timeslot=3)
    h.run_until(lambda: h.sink.chan(0, 3).state == ST_IN_PRESENT)
    cause = q931.cause_body(21, 0, b"\x05")
    assert h.spans[0].command(3, CMD_RELEASE, "", "", cause) == MB_DONE
    h.run_until(lambda: call.result.cleared)
    r = call.result
    assert (r.cause, r.location, r.cause_octets, r.cleared_by) == (21, 0, cause, "card")
    assert not r.alerted and not r.answered
    assert h.sink.chan(0, 3).cause == cause


def test_incoming_cleared_after_hold_and_t313() -> None:
    harness = Harness(timers={"T313": 0.1})
    try:
        harness.wait_link()
        call = harness.network.place_call("1", hold=0.05, timeslot=1)
        harness.run_until(lambda: harness.sink.chan(0, 1).state == ST_IN_PRESENT)
        harness.spans[0].command(1, CMD_ANSWER, "", "", b"")
        harness.run_until(lambda: call.result.cleared)
        assert call.result.answered and call.result.cause == 16
        # T313: the network never acknowledges the CONNECT
        entity = harness.network.entity(0)
        harness.network.place_call("2", timeslot=2)
        harness.run_until(lambda: harness.sink.chan(0, 2).state == ST_IN_PRESENT)
        entity._handlers[q931.CONNECT] = lambda c, m, e: None  # swallow CONNECT
        harness.spans[0].command(2, CMD_ANSWER, "", "", b"")
        assert wait_cleared(harness, 2) == bytes((0x80, 0xE6)) + b"313"
    finally:
        harness.close()


def test_t305_and_t308_when_network_silent(hc: Harness) -> None:
    h = hc
    h.network.route("100", Answer())
    dial(h, 11, "100")
    h.run_until(lambda: h.sink.chan(0, 11).state == ST_ACTIVE)
    h.deaf = True  # type: ignore[attr-defined]  # the network stops answering
    h.spans[0].command(11, CMD_RELEASE, "", "", NORMAL)
    h.run(0.05)
    assert h.sink.chan(0, 11).state == ST_CLEARING
    # DISCONNECT, T305, RELEASE, T308 twice: the call is released (CLEARED, IDLE) ...
    h.run_until(lambda: h.sink.cleared(0, 11) == 1, 3.0)
    ch = h.sink.chan(0, 11)
    # ... and the channel goes out of service at once, keeping the call's cause (§5.3.4.3)
    assert ch.events[-2:] == [(EV_CLEARED, ST_IDLE), (EV_STATE, ST_MAINTENANCE)]
    assert ch.cause == NORMAL
    assert restarts_for(h, 11) == 1  # RESTART for the channel, T316 running
    sig = h.spans[0]
    assert sig.command(11, CMD_MAKE_CALL, "100", "", b"") == MB_ERR_STATE
    assert sig.cc.free_timeslot() != 11
    h.deaf = False  # type: ignore[attr-defined]  # the first RESTART was lost; T316 ...
    h.run_until(lambda: ch.state == ST_IDLE, 1.0)
    # ... sent it again, and RESTART ACKNOWLEDGE returned the channel to service
    assert restarts_for(h, 11) == 2
    assert ch.events[-1] == (EV_STATE, ST_IDLE) and not sig.cc.maintenance
    assert sig.command(11, CMD_MAKE_CALL, "100", "", b"") == MB_DONE


def restarts_for(h: Harness, ts: int | None) -> int:
    """RESTART messages the card sent for one channel (None: the interface)."""
    n = 0
    for payload in h.sent_by_card:
        msg = q931.decode(payload)
        if msg is None or msg.mt != q931.RESTART:
            continue
        cid = msg.ies.get(q931.IE_CHANNEL_ID)
        named = None if cid is None else (q931.parse_channel_id(cid) or (False, None))[1]
        n += named == ts
    return n


def test_restart_given_up_after_n316_and_sent_again_on_link_establishment(
        hc: Harness) -> None:
    """§5.5.1: N316 RESTARTs unanswered and the card gives up (the channel stays out of
    service); the next data link establishment sends the RESTART again."""
    h = hc
    h.deaf = True  # type: ignore[attr-defined]  # the network hears nothing
    cc = h.spans[0].cc
    cc.restart(3)
    h.run_until(lambda: cc.stats["restarts_failed"] == 1, 2.0)
    h.run(0.4)  # well past another T316
    assert restarts_for(h, 3) == N316 and 3 in cc.maintenance
    h.deaf = False  # type: ignore[attr-defined]
    call = h.network.place_call("4000", timeslot=3)  # exclusive: refused, channel unusable
    h.run_until(lambda: call.result.cleared)
    assert call.result.cause == q931.CAUSE_CHANNEL_NOT_AVAILABLE
    h.network.entity(0).lapd._reestablish()  # the network's SABME: a data link reset
    h.run_until(lambda: 3 not in cc.maintenance, 1.0)
    assert restarts_for(h, 3) == N316 + 1 and h.sink.chan(0, 3).state == ST_IDLE


def test_commands_errors(h: Harness) -> None:
    sig = h.spans[0]
    assert sig.command(16, CMD_MAKE_CALL, "1", "", b"") == MB_ERR_ARGUMENT  # D-channel slot
    assert sig.command(1, CMD_MAKE_CALL, "", "", b"") == MB_ERR_ARGUMENT
    assert sig.command(1, CMD_MAKE_CALL, "12a", "", b"") == MB_ERR_ARGUMENT
    assert sig.command(1, CMD_MAKE_CALL, "1" * 33, "", b"") == MB_ERR_ARGUMENT
    assert sig.command(1, 99, "", "", b"") == MB_ERR_UNKNOWN
    assert sig.command(1, CMD_ANSWER, "", "", b"") == MB_ERR_STATE
    assert sig.command(1, CMD_RELEASE, "", "", NORMAL) == MB_ERR_STATE
    h.network.route("100", NoAnswer())
    dial(h, 1, "100")
    assert sig.command(1, CMD_MAKE_CALL, "100", "", b"") == MB_ERR_STATE
    assert sig.command(1, CMD_ALERT, "", "", b"") == MB_ERR_STATE  # outgoing call
    assert sig.command(1, CMD_RELEASE, "", "", b"") == MB_ERR_ARGUMENT
    assert sig.command(1, CMD_RELEASE, "", "", bytes(33)) == MB_ERR_ARGUMENT


def test_no_link() -> None:
    harness = Harness()
    try:
        assert harness.spans[0].command(1, CMD_MAKE_CALL, "1", "", b"") == MB_ERR_NO_LINK
    finally:
        harness.close()


def test_glare_network_wins(h: Harness) -> None:
    h.network.route("100", Answer())
    call = h.network.place_call("4000", timeslot=5)
    dial(h, 5, "100")  # same channel, same loop turn: both SETUPs cross on the wire
    h.run_until(lambda: h.sink.chan(0, 5).state == ST_IN_PRESENT)
    ch = h.sink.chan(0, 5)
    assert [e for e, _ in ch.events] == [1, EV_CLEARED, EV_INCOMING]
    assert h.sink.clearings == [(0, 5, bytes((0x80, 0x80 | 44)), CAUSE_SRC_LOCAL)]
    h.spans[0].command(5, CMD_ANSWER, "", "", b"")
    h.run_until(lambda: call.result.answered)
    h.run(0.1)
    assert not h.network.received  # the card's SETUP was refused (cause 44), never offered


def enquiries(h: Harness) -> list[int]:
    """Call references of the STATUS ENQUIRY messages the card sent."""
    return [msg.cr for msg in map(q931.decode, h.sent_by_card)
            if msg is not None and msg.mt == q931.STATUS_ENQUIRY]


def test_link_released_by_network_is_reestablished_t309(hc: Harness) -> None:
    """§5.8.9: on the network's DISC the card clears the calls not yet active, starts T309
    for the active ones and asks for the link again (SABME) by itself; the active calls
    survive, audited with STATUS ENQUIRY. A link that stays down clears them (cause 27)."""
    h = hc
    h.network.route("100", Answer())
    dial(h, 1, "100")
    dial(h, 2, "100")
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE
                and h.sink.chan(0, 2).state == ST_ACTIVE)
    h.network.route("101", NoAnswer())
    dial(h, 3, "101")
    h.run_until(lambda: h.sink.chan(0, 3).state == ST_OUT_ALERTING)
    entity = h.network.entity(0)
    entity.lapd.release()  # the network takes the data link down (DISC)
    h.run_until(lambda: (0, False) in h.sink.span_events)
    assert cause_value(h.sink.chan(0, 3).cause) == 41  # not active: cleared at once
    h.run_until(lambda: h.sink.dchannel[0] and entity.lapd.up, 1.0)  # the card's SABME
    assert h.sink.span_events[-2:] == [(0, False), (0, True)]
    h.run(0.4)  # past T309
    assert h.sink.chan(0, 1).state == ST_ACTIVE and h.sink.chan(0, 2).state == ST_ACTIVE
    assert sorted(enquiries(h)) == [h.sink.chan(0, 1).call_ref, h.sink.chan(0, 2).call_ref]
    entity.lapd.release()  # ... and now for good: the network stays silent
    entity.lapd.stop()
    assert wait_cleared(h, 1) == q931.cause_body(27, 0)
    assert h.sink.chan(0, 1).cause_source == CAUSE_SRC_LOCAL
    assert h.spans[0].cc.lapd.state == lapd.ST_AWAITING_ESTABLISHMENT  # still asking


def test_link_released_without_calls_is_reestablished(h: Harness) -> None:
    """A PRI keeps its data link established: the card asks for it again with no call
    waiting too."""
    h.network.entity(0).lapd.release()
    h.run_until(lambda: len(h.sink.span_events) >= 3, 1.0)
    assert h.sink.span_events == [(0, True), (0, False), (0, True)]


def test_network_forgets_calls_and_resets_link(hc: Harness) -> None:
    """§5.8.8: the network restarts without the link dropping (it forgets its calls and
    re-establishes the link): the card audits each call with STATUS ENQUIRY and clears those
    the network answers with call state 0 (§5.8.11) at once, not after T301 or T309."""
    h = hc
    h.network.route("100", Answer())
    h.network.route("101", NoAnswer())
    dial(h, 1, "100")
    dial(h, 2, "101")
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE
                and h.sink.chan(0, 2).state == ST_OUT_ALERTING)
    entity = h.network.entity(0)
    for call in list(entity.calls.values()):
        entity.discard(call)
    entity.lapd._reestablish()  # SABME in multiple-frame state: a data link reset
    h.run_until(lambda: h.sink.cleared(0, 1) == 1 and h.sink.cleared(0, 2) == 1, 1.0)
    assert len(enquiries(h)) == 2
    for ts in (1, 2):
        ch = h.sink.chan(0, ts)
        assert ch.cause_source == CAUSE_SRC_REMOTE and cause_value(ch.cause) == 30
    assert h.sink.dchannel[0]


def test_link_reset_keeps_calls_the_network_knows(hc: Harness) -> None:
    """§5.8.8: after a data link reset calls the network still has stay up."""
    h = hc
    active_call(h, 4)
    h.network.entity(0).lapd._reestablish()
    h.run_until(lambda: len(enquiries(h)) == 1, 1.0)
    h.run(0.3)
    assert h.sink.chan(0, 4).state == ST_ACTIVE and h.sink.cleared(0, 4) == 0


def test_unanswered_audit_is_resent_on_t322_then_clears_41(hc: Harness) -> None:
    """§5.8.10: T322 runs from the STATUS ENQUIRY of an audit (here after a data link reset);
    unanswered, the enquiry goes once more, then the call clears with cause 41. One enquiry at a
    time: another audit while T322 runs sends none."""
    h = hc
    cr = active_call(h, 4)
    h.deaf = True  # type: ignore[attr-defined]  # the network ignores what it hears
    h.network.entity(0).lapd._reestablish()
    h.run_until(lambda: len(enquiries(h)) == 1, 1.0)
    h.spans[0].cc.status_enquiry(h.spans[0].cc.channels[4])
    assert enquiries(h) == [cr]
    h.run_until(lambda: len(enquiries(h)) == N322, 1.0)
    h.deaf = False  # type: ignore[attr-defined]  # it hears the clearing that follows
    assert cause_value(wait_cleared(h, 4)) == q931.CAUSE_TEMPORARY_FAILURE
    assert enquiries(h) == [cr] * N322
    assert h.sink.chan(0, 4).cause_source == CAUSE_SRC_LOCAL


def test_audit_answered_stops_t322(hc: Harness) -> None:
    """A STATUS answering the enquiry (the far end still has the call) stops T322: no more
    enquiries, the call stays up."""
    h = hc
    cr = active_call(h, 4)
    h.network.entity(0).lapd._reestablish()
    h.run_until(lambda: len(enquiries(h)) == 1, 1.0)
    h.run(0.4)  # well past T322
    assert enquiries(h) == [cr] and h.sink.chan(0, 4).state == ST_ACTIVE


def test_restart_clears_channel(h: Harness) -> None:
    h.network.route("100", Answer())
    dial(h, 1, "100")
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE)
    h.network.restart(0, 1)
    assert cause_value(wait_cleared(h, 1)) == 41


def last_status(h: Harness) -> tuple[int | None, bytes]:
    """Cause value and diagnostic of the last STATUS the card sent."""
    frames = h.sent_by_card
    for payload in reversed(frames):
        msg = q931.decode(payload)
        if msg is not None and msg.mt == q931.STATUS:
            f = q931.parse_cause(msg.ies[q931.IE_CAUSE])
            assert f is not None
            return f.value, f.diagnostic
    return None, b""


@pytest.fixture
def hc(h: Harness) -> Harness:
    """h, plus a record of the card's Q.931 messages as the network receives them."""
    sent: list[bytes] = []
    lapd = h.network.entity(0).lapd
    original = lapd.on_data

    def spy(payload: bytes) -> None:
        sent.append(payload)
        if not h.deaf:  # type: ignore[attr-defined]
            original(payload)

    lapd.on_data = spy
    h.sent_by_card = sent  # type: ignore[attr-defined]
    h.deaf = False  # type: ignore[attr-defined]  # True: the network ignores what it hears
    return h


def active_call(h: Harness, ts: int = 1) -> int:
    h.network.route("100", Answer())
    dial(h, ts, "100")
    h.run_until(lambda: h.sink.chan(0, ts).state == ST_ACTIVE)
    return h.sink.chan(0, ts).call_ref


@pytest.mark.parametrize(("payload_tail", "cause", "diag"), [
    (bytes((0x20,)), 97, b"\x20"),  # USER INFORMATION: not implemented here
    (bytes((0x60,)), 97, b"\x60"),  # no such message type
    (bytes((q931.ALERTING,)), 101, bytes((q931.ALERTING,))),  # wrong state
    (bytes((q931.PROGRESS,)), 96, bytes((q931.IE_PROGRESS,))),  # mandatory IE missing
    (bytes((q931.PROGRESS, 0x1E, 1, 0x80)), 100, bytes((q931.IE_PROGRESS,))),  # bad contents
    (bytes((q931.CONNECT_ACKNOWLEDGE, 0x7F, 1, 0)), 99, b"\x7f"),  # unknown optional IE
    (bytes((q931.CONNECT_ACKNOWLEDGE, 0x28, 1, 0xFF)), 100, b"\x28"),  # bad optional IE
])
def test_section_5_8_status(hc: Harness, payload_tail: bytes, cause: int, diag: bytes) -> None:
    cr = active_call(hc)
    hc.network.inject(0, bytes((0x08, 0x02, 0x80 | cr >> 8, cr & 0xFF)) + payload_tail)
    hc.run_until(lambda: last_status(hc)[0] is not None)
    assert last_status(hc) == (cause, diag)
    assert hc.sink.chan(0, 1).state == ST_ACTIVE


def test_unknown_call_reference_and_global(hc: Harness) -> None:
    hc.network.inject(0, q931.header(q931.DISCONNECT, 77, False)
                      + q931.ie(q931.IE_CAUSE, NORMAL))
    hc.run(0.05)
    rc = q931.decode(hc.sent_by_card[-1])
    assert rc is not None and rc.mt == q931.RELEASE_COMPLETE and rc.cr == 77
    assert cause_value(rc.ies[q931.IE_CAUSE]) == 81
    hc.network.inject(0, q931.global_header(q931.ALERTING))
    hc.run(0.05)
    assert last_status(hc)[0] == 81
    hc.network.inject(0, q931.header(q931.STATUS_ENQUIRY, 78, False))
    hc.run(0.05)
    assert last_status(hc)[0] == 30


def test_setup_without_bearer_refused_96(hc: Harness) -> None:
    hc.network.inject(0, q931.header(q931.SETUP, 9, False)
                      + q931.ie(q931.IE_CHANNEL_ID, q931.channel_id(4)))
    hc.run(0.05)
    rc = q931.decode(hc.sent_by_card[-1])
    assert rc is not None and rc.mt == q931.RELEASE_COMPLETE
    assert q931.parse_cause(rc.ies[q931.IE_CAUSE]) == q931.CauseFields(0, 0, 96, None, b"\x04")
    assert hc.sink.chan(0, 4).state == ST_IDLE


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mt=st.sampled_from(sorted(q931.MESSAGE_NAMES) + [0x00, 0x7B, 0x6E]),
       body=st.binary(max_size=40), flag=st.booleans(), known_cr=st.booleans())
def test_random_messages_never_break_live_entity(h: Harness, mt: int, body: bytes,
                                                 flag: bool, known_cr: bool) -> None:
    cc = h.spans[0].cc
    if not cc.channels:
        h.network.route("100", Answer())
        call = cc.make_call(1, "100")
        assert call is not None
        h.run_until(lambda: call.phase in (P_ACTIVE, P_NULL))
        if call.phase == P_NULL:
            # An injected clearing message left the network's end of an earlier call behind,
            # so it refused this one (cause 44): have the network clear that call too.
            h.network.clear(0, 1)
    cr = next(iter(cc.calls.values())).cr if known_cr and cc.calls else 4321
    cc.receive(q931.header(mt, cr, flag) + body)  # raises nothing, whatever the input
    cc.receive(body)
    h.run(0.002)
    assert h.spans[0].cc.link_up
    for ch in h.sink.channels.values():
        assert ch.state in range(0, 9)


def test_t1_and_card_as_network_side() -> None:
    harness = Harness(role=ROLE_NT, line=LINE_T1)
    try:
        harness.wait_link()
        harness.network.route("100", Answer())
        assert harness.spans[0].command(23, CMD_MAKE_CALL, "100", "", b"") == MB_DONE
        assert harness.spans[0].command(24, CMD_MAKE_CALL, "100", "", b"") == MB_ERR_ARGUMENT
        harness.run_until(lambda: harness.sink.chan(0, 23).state == ST_ACTIVE)
        call = harness.network.place_call("55")  # the user side hunts down from 23, busy
        harness.run_until(lambda: harness.sink.chan(0, 22).state == ST_IN_PRESENT)
        harness.spans[0].command(22, CMD_ANSWER, "", "", b"")
        harness.run_until(lambda: call.result.answered)
        assert harness.sink.chan(0, 22).state == ST_ACTIVE  # no CONNECT ACK wait on NT
        harness.spans[0].command(22, CMD_RELEASE, "", "", q931.cause_body(16, 1))
        harness.run_until(lambda: call.result.cleared)
        assert call.result.location == 1 and call.result.cause == 16
    finally:
        harness.close()


def test_two_cards_back_to_back() -> None:
    a_sock, b_sock = back_to_back()
    te = Harness(sockets={0: a_sock})
    nt = Harness(role=ROLE_NT, sockets={0: b_sock}, loop=te.loop)  # one loop drives both
    try:
        te.run_until(lambda: te.sink.dchannel.get(0) and nt.sink.dchannel.get(0))
        assert te.spans[0].command(7, CMD_MAKE_CALL, "42", "43", b"") == MB_DONE
        te.run_until(lambda: nt.sink.chan(0, 7).state == ST_IN_PRESENT)
        assert nt.sink.chan(0, 7).called == "42"
        nt.spans[0].command(7, CMD_ANSWER, "", "", b"")
        te.run_until(lambda: te.sink.chan(0, 7).state == ST_ACTIVE)
        cause = q931.cause_body(31, 1, b"\x01\x02")
        nt.spans[0].command(7, CMD_RELEASE, "", "", cause)
        te.run_until(lambda: te.sink.chan(0, 7).state == ST_IDLE
                     and nt.sink.chan(0, 7).state == ST_IDLE)
        assert te.sink.chan(0, 7).cause == cause == nt.sink.chan(0, 7).cause
        assert te.sink.chan(0, 7).cause_source == CAUSE_SRC_REMOTE
        assert nt.sink.chan(0, 7).cause_source == CAUSE_SRC_LOCAL
    finally:
        for sig in nt.spans:
            sig.stop()
        te.close()


def test_call_timer_queue_fires_in_order_and_sheds_stopped_timers() -> None:
    loop = asyncio.new_event_loop()
    try:
        fired: list[tuple[int, str]] = []
        queue = _TimerQueue(loop, "T305", 0.02, lambda call, name: fired.append((call.cr, name)))
        calls = [Call(cr, True, 1, P_ACTIVE) for cr in (1, 2, 3)]
        for call in calls:
            queue.start(call)
        _stop_call_timer(calls[1])
        loop.run_until_complete(asyncio.sleep(0.05))
        assert fired == [(1, "T305"), (3, "T305")]
        assert not queue.entries and queue.live == 0 and calls[0].timer is None
        for _ in range(1000):  # started and stopped long before expiry, as most timers are
            queue.start(calls[0])
            _stop_call_timer(calls[0])
        assert len(queue.entries) <= 65
        queue.start(calls[2])
        loop.run_until_complete(asyncio.sleep(0.05))
        assert fired[2:] == [(3, "T305")] and not queue.entries
    finally:
        loop.close()


# --- review: Q.931 §5.8 error handling and the global/dummy call reference ---------------


def proceeding_call(h: Harness, ts: int = 1) -> int:
    """An outgoing call the network answered with CALL PROCEEDING only (state U3)."""
    entity = h.network.entity(0)
    entity.listener.on_incoming = lambda call, msg: entity.proceeding(call)  # type: ignore
    dial(h, ts, "700")
    h.run_until(lambda: h.sink.chan(0, ts).state == ST_OUT_PROCEEDING)
    return h.sink.chan(0, ts).call_ref


@pytest.mark.parametrize(("tail", "diag"), [
    (bytes((q931.ALERTING, 0x05, 1, 0x00)), b"\x05"),  # comprehension-required IE unknown
    (bytes((q931.CONNECT, 0x0B, 1, 0x00)), b"\x0b"),
])
def test_comprehension_required_ie_blocks_message(hc: Harness, tail: bytes,
                                                  diag: bytes) -> None:
    """Q.931 §5.8.7.1 -> §5.8.6.1: no action, no state change, STATUS cause 96."""
    cr = proceeding_call(hc)
    hc.network.inject(0, bytes((0x08, 0x02, 0x80 | cr >> 8, cr & 0xFF)) + tail)
    hc.run_until(lambda: last_status(hc)[0] is not None)
    assert last_status(hc) == (96, diag)
    hc.run(0.02)
    assert hc.sink.chan(0, 1).state == ST_OUT_PROCEEDING


def test_setup_to_user_without_channel_id_refused_96(hc: Harness) -> None:
    """Channel identification is mandatory network-to-user on a PRI (Q.931 §3.1.14)."""
    hc.network.inject(0, q931.header(q931.SETUP, 9, False)
                      + q931.ie(q931.IE_BEARER_CAPABILITY, q931.bearer_capability(1))
                      + q931.ie(q931.IE_CALLED_NUMBER, q931.number("1")))
    hc.run(0.05)
    rc = q931.decode(hc.sent_by_card[-1])
    assert rc is not None and rc.mt == q931.RELEASE_COMPLETE and rc.cr == 9
    assert q931.parse_cause(rc.ies[q931.IE_CAUSE]) == q931.CauseFields(0, 0, 96, None, b"\x18")
    assert all(ch.state == ST_IDLE for ch in hc.sink.channels.values())


def test_setup_to_user_with_bad_channel_id_refused_100(hc: Harness) -> None:
    hc.network.inject(0, q931.header(q931.SETUP, 10, False)
                      + q931.ie(q931.IE_BEARER_CAPABILITY, q931.bearer_capability(1))
                      + q931.ie(q931.IE_CHANNEL_ID, bytes((0x89, 0x83, 0x81))))  # BRI form
    hc.run(0.05)
    rc = q931.decode(hc.sent_by_card[-1])
    assert rc is not None and rc.mt == q931.RELEASE_COMPLETE and rc.cr == 10
    assert q931.parse_cause(rc.ies[q931.IE_CAUSE]) == q931.CauseFields(0, 0, 100, None,
                                                                        b"\x18")


def test_dummy_call_reference_is_not_global(hc: Harness) -> None:
    """A RESTART with the dummy (zero-length) call reference must not restart anything."""
    active_call(hc)
    n0 = len(hc.sent_by_card)
    hc.network.inject(0, bytes((0x08, 0x00, q931.RESTART))
                      + q931.ie(q931.IE_RESTART_INDICATOR, b"\x87"))
    hc.run(0.05)
    assert hc.sink.chan(0, 1).state == ST_ACTIVE
    assert not [p for p in hc.sent_by_card[n0:]
                if (m := q931.decode(p)) and m.mt == q931.RESTART_ACKNOWLEDGE]


@pytest.mark.parametrize(("body", "cause", "diag"), [
    (q931.ie(q931.IE_RESTART_INDICATOR, b"\x83"), 100, b"\x79"),  # reserved class
    (q931.ie(q931.IE_RESTART_INDICATOR, b"\x80"), 96, b"\x18"),  # indicated, no channel
])
def test_restart_errors(hc: Harness, body: bytes, cause: int, diag: bytes) -> None:
    active_call(hc)
    hc.network.inject(0, q931.global_header(q931.RESTART) + body)
    hc.run_until(lambda: last_status(hc)[0] is not None)
    assert last_status(hc) == (cause, diag)
    status = q931.decode(hc.sent_by_card[-1])
    assert status is not None and status.cr == 0 and status.from_destination  # flag mirrored
    assert hc.sink.chan(0, 1).state == ST_ACTIVE


def test_data_link_reset_keeps_calls(h: Harness) -> None:
    """Q.921 re-establishment is a data link reset (DL-ESTABLISH-INDICATION), not a release:
    Q.931 §5.8.8 keeps calls in the establishment phase; only §5.8.9 failure clears them."""
    h.network.route("600", NoAnswer())
    dial(h, 9, "600")
    h.run_until(lambda: h.sink.chan(0, 9).state == ST_OUT_ALERTING)
    card_lapd = h.spans[0].cc.lapd
    card_lapd.receive(bytes((0x02, 0x01, 0x87, 0, 0, 0, 0, 0)))  # FRMR: re-establish
    h.run(0.05)
    assert card_lapd.stats["reestablished"] == 1 and card_lapd.up
    assert h.sink.chan(0, 9).state == ST_OUT_ALERTING and h.sink.cleared(0, 9) == 0
    assert h.sink.dchannel[0]
    h.network.clear(0, 9, cause=21)  # the call is still alive at both ends
    assert cause_value(wait_cleared(h, 9)) == 21


# --- review: PROGRESS state checks, first-response channel, STATUS call states, T306 --------


def spy_rx(cc: CallControl) -> list[q931.Message]:
    """Record every Q.931 message an entity receives (decoded), then handle it as usual."""
    got: list[q931.Message] = []
    original = cc.lapd.on_data

    def spy(payload: bytes) -> None:
        msg = q931.decode(payload)
        if msg is not None:
            got.append(msg)
        original(payload)

    cc.lapd.on_data = spy
    return got


def of_type(msgs: list[q931.Message], mt: int) -> list[q931.Message]:
    return [m for m in msgs if m.mt == mt]


@pytest.mark.parametrize("role", [ROLE_TE, ROLE_NT])
def test_progress_in_incoming_state_answered_101(role: int) -> None:
    """Q.931 §5.8.4: PROGRESS is not expected by the called side's incoming-call states."""
    harness = Harness(role=role)
    try:
        harness.wait_link()
        rx = spy_rx(harness.network.entity(0))
        handle = harness.network.place_call("2000", timeslot=2)
        harness.run_until(lambda: harness.sink.chan(0, 2).state == ST_IN_PRESENT)
        harness.run(0.02)
        assert handle.call is not None
        harness.network.entity(0).progress(handle.call)
        harness.run_until(lambda: bool(of_type(rx, q931.STATUS)))
        status = of_type(rx, q931.STATUS)[-1]
        assert q931.parse_cause(status.ies[q931.IE_CAUSE]).value == 101  # type: ignore[union-attr]
        assert status.ies[q931.IE_CALL_STATE] == bytes((9 if role == ROLE_TE else 3,))
        assert harness.sink.chan(0, 2).state == ST_IN_PRESENT
    finally:
        harness.close()


def test_progress_during_overlap_sending_stops_t304() -> None:
    harness = Harness(timers={"T304": 0.1})
    try:
        harness.wait_link()
        entity = harness.network.entity(0)

        def overlap_then_progress(call: Call, msg: q931.Message) -> None:
            entity.setup_ack(call)
            entity.progress(call)

        entity.listener.on_incoming = overlap_then_progress  # type: ignore[method-assign]
        assert harness.spans[0].command(1, CMD_MAKE_CALL, "700", "", b"") == MB_DONE
        harness.run(0.3)  # three T304 periods: the PROGRESS stopped it
        assert harness.sink.chan(0, 1).state == ST_OUT_PROCEEDING
        assert harness.sink.cleared(0, 1) == 0
    finally:
        harness.close()


@pytest.mark.parametrize("mt", [q931.CALL_PROCEEDING, q931.SETUP_ACKNOWLEDGE, q931.ALERTING,
                                q931.CONNECT])
@pytest.mark.parametrize("role", [ROLE_TE, ROLE_NT])
def test_first_response_other_channel_released_cause_6(role: int, mt: int) -> None:
    """Q.931 §5.1.2 and §5.3.2 d): a first response naming another channel than the exclusive
    one asked for ends channel selection: RELEASE with cause 6, reported as the card's cause."""
    harness = Harness(role=role)
    try:
        harness.wait_link()
        entity = harness.network.entity(0)
        rx = spy_rx(entity)

        def answer_on_other_channel(call: Call, msg: q931.Message) -> None:
            call.phase = P_IN_PROC  # the far end believes the call proceeds
            entity._send(call, mt, q931.ie(q931.IE_CHANNEL_ID, q931.channel_id(9)))

        entity.listener.on_incoming = answer_on_other_channel  # type: ignore[method-assign]
        assert harness.spans[0].command(3, CMD_MAKE_CALL, "800", "", b"") == MB_DONE
        harness.run_until(lambda: harness.sink.cleared(0, 3) == 1)
        location = q931.LOC_USER if role == ROLE_TE else q931.LOC_PRIVATE_LOCAL
        ch = harness.sink.chan(0, 3)
        assert (ch.cause, ch.cause_source) == (q931.cause_body(6, location), CAUSE_SRC_LOCAL)
        release = of_type(rx, q931.RELEASE)
        assert len(release) == 1 and cause_value(release[0].ies[q931.IE_CAUSE]) == 6
        assert not of_type(rx, q931.CONNECT_ACKNOWLEDGE) and not of_type(rx, q931.STATUS)
    finally:
        harness.close()


def test_first_response_same_channel_accepted(h: Harness) -> None:
    h.network.route("100", Answer())
    dial(h, 4, "100")
    h.run_until(lambda: h.sink.chan(0, 4).state == ST_ACTIVE)


def status_state(harness: Harness, asker: CallControl, ts: int) -> int:
    """Have `asker` send STATUS ENQUIRY for its call on `ts`; the call state its peer reports
    (Q.931 §5.8.10)."""
    original = asker.lapd.on_data
    rx = spy_rx(asker)
    asker.status_enquiry(asker.channels[ts])
    harness.run_until(lambda: bool(of_type(rx, q931.STATUS)))
    asker.lapd.on_data = original
    return of_type(rx, q931.STATUS)[-1].ies[q931.IE_CALL_STATE][0] & 0x3F


@pytest.mark.parametrize("role", [ROLE_TE, ROLE_NT])
def test_status_reports_the_call_state_of_each_role(role: int) -> None:
    """Q.931 §2.1/§4.5.7: U-states from the user side, N-states from the network side."""
    harness = Harness(role=role)
    te = role == ROLE_TE
    try:
        harness.wait_link()
        card, far = harness.spans[0].cc, harness.network.entity(0)
        far.listener.on_incoming = lambda call, msg: far.setup_ack(call)  # type: ignore
        assert harness.spans[0].command(1, CMD_MAKE_CALL, "1", "", b"") == MB_DONE
        harness.run_until(lambda: bool(far.channels) and bool(card.calls)
                          and next(iter(card.calls.values())).phase == 2)
        # the card got SETUP ACKNOWLEDGE: U2 overlap sending / N25 overlap receiving
        assert status_state(harness, far, 1) == (2 if te else 25)
        # the far end sent it: N2 overlap sending / U25 overlap receiving (N-states mirror
        # the peer's U-states)
        assert status_state(harness, card, 1) == (2 if te else 25)
        far.proceeding(far.channels[1])
        harness.run(0.02)
        assert status_state(harness, far, 1) == (3 if te else 9)
        assert status_state(harness, card, 1) == (3 if te else 9)
        far.alert(far.channels[1])
        harness.run(0.02)
        assert status_state(harness, far, 1) == (4 if te else 7)
        assert status_state(harness, card, 1) == (4 if te else 7)
        far.answer(far.channels[1])
        harness.run_until(lambda: harness.sink.chan(0, 1).state == ST_ACTIVE)
        harness.run(0.02)
        assert status_state(harness, far, 1) == 10
        # an incoming call the card answered with CALL PROCEEDING: U9 and N9 when the card
        # is the user, N3 and U3 when it is the network
        harness.network.place_call("2", timeslot=5)
        harness.run_until(lambda: harness.sink.chan(0, 5).state == ST_IN_PRESENT)
        harness.run(0.02)
        assert status_state(harness, far, 5) == (9 if te else 3)
        assert status_state(harness, card, 5) == (9 if te else 3)
    finally:
        harness.close()


@pytest.mark.parametrize(("stage", "slow"), [("inband", True), ("proceeding", False)])
def test_network_disconnect_with_inband_info_runs_t306(stage: str, slow: bool) -> None:
    """Q.931 §5.3.4.1 / table 9-1: DISCONNECT with progress indicator #8 starts T306 (not T305);
    on expiry the network sends RELEASE with the cause of its DISCONNECT."""
    harness = Harness(net_timers={"T305": 0.05, "T306": 0.4})
    try:
        harness.wait_link()
        card = harness.spans[0].cc
        card._handlers[q931.DISCONNECT] = lambda c, m, e: None  # the card stays on the tones
        rx = spy_rx(card)
        times: dict[int, float] = {}
        inner = card.lapd.on_data

        def stamp(payload: bytes) -> None:
            times.setdefault(payload[4], harness.loop.time())
            inner(payload)

        card.lapd.on_data = stamp
        harness.network.route("200", Busy(stage))  # type: ignore[arg-type]
        assert harness.spans[0].command(1, CMD_MAKE_CALL, "200", "", b"") == MB_DONE
        harness.run_until(lambda: harness.sink.cleared(0, 1) == 1)
        waited = times[q931.RELEASE] - times[q931.DISCONNECT]
        assert (0.3 < waited < 1.0) if slow else waited < 0.3
        release = of_type(rx, q931.RELEASE)[0]
        assert release.ies[q931.IE_CAUSE] == bytes((0x84, 0x91))  # the DISCONNECT's cause
    finally:
        harness.close()


def test_disconnect_unknown_ie_reported_in_release(hc: Harness) -> None:
    """Q.931 §5.8.7.1: cause 99 for a DISCONNECT goes in the RELEASE, not in a STATUS."""
    cr = active_call(hc)
    n0 = len(hc.sent_by_card)
    hc.network.inject(0, bytes((0x08, 0x02, 0x80 | cr >> 8, cr & 0xFF, q931.DISCONNECT))
                      + q931.ie(q931.IE_CAUSE, bytes((0x84, 0x91))) + bytes((0x7F, 1, 0)))
    assert wait_cleared(hc, 1) == bytes((0x84, 0x91))
    sent = [m for p in hc.sent_by_card[n0:] if (m := q931.decode(p)) is not None]
    assert [m.mt for m in sent] == [q931.RELEASE]
    assert q931.parse_cause(sent[0].ies[q931.IE_CAUSE]) == q931.CauseFields(0, 0, 99, None,
                                                                           b"\x7f")


def test_datasheet_timer_table_is_the_code_table() -> None:
    """docs/datasheet.md section 5 lists exactly callcontrol.TIMERS, per side, and N316."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "datasheet.md").read_text()
    section = text[text.index("## 5. Timing"):]
    rows = re.findall(r"^\| (T3\d\d) \| ([^|]+) \| ([^|]+) \|", section, re.MULTILINE)

    def seconds(cell: str) -> float | None:
        cell = cell.strip()
        return None if cell == "—" else float(cell.removesuffix(" s"))

    assert {name: (seconds(u), seconds(n)) for name, u, n in rows} == TIMERS
    assert f"N316 = {N316}" in section
    assert "T200 1 s, T203 10 s, N200 3, k 7" in section
    assert (lapd.DEFAULT_TIMERS, lapd.DEFAULT_N200, lapd.DEFAULT_K) == (
        {"T200": 1.0, "T203": 10.0}, 3, 7)


def test_link_reset_clears_overlap_calls(hc: Harness) -> None:
    """§5.8.8 a): a call in overlap sending when the data link is reset clears with cause 41."""
    h = hc
    h.network.route("500", NoResponse())
    dial(h, 8, "500")
    h.run_until(lambda: len(h.sent_by_card) == 1)
    cr = h.sink.chan(0, 8).call_ref
    h.network.inject(0, q931.header(q931.SETUP_ACKNOWLEDGE, cr, True)
                     + q931.ie(q931.IE_CHANNEL_ID, q931.channel_id(8)))
    h.run_until(lambda: h.sink.chan(0, 8).state == ST_OUT_PROCEEDING)
    h.network.entity(0).lapd._reestablish()
    assert cause_value(wait_cleared(h, 8)) == 41
    assert h.sink.chan(0, 8).cause_source == CAUSE_SRC_LOCAL and not enquiries(h)
