"""Overlap dialling (datasheet 2.7, Q.931 §5.1.3 and §5.2.4): the card's call control against
the network emulator, both ways, with every Q.931 message each end received recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from isdn_harness import Harness, cause_value
from libpri_process import HAVE_LIBPRI, LibpriProcess, build

from firmware_sim import SimulatedCard, q931
from firmware_sim.callcontrol import CallControl
from firmware_sim.demo_plan import simulated_card
from firmware_sim.firmware import call_on_loop
from firmware_sim.network import Answer, NoResponse
from firmware_sim.regmap import (
    CAUSE_SRC_LOCAL,
    CAUSE_SRC_REMOTE,
    CHAN_STATE,
    CMD_ALERT,
    CMD_ANSWER,
    CMD_MAKE_CALL,
    CMD_MAKE_CALL_OVERLAP,
    CMD_SEND_DIGITS,
    CMD_SEND_DIGITS_COMPLETE,
    EV_INCOMING,
    MB_DONE,
    MB_ERR_ARGUMENT,
    MB_ERR_STATE,
    ROLE_NT,
    ROLE_TE,
    ST_ACTIVE,
    ST_IDLE,
    ST_IN_OVERLAP,
    ST_IN_PRESENT,
    ST_OUT_OVERLAP,
    ST_OUT_PROCEEDING,
    ST_OUT_SETUP,
    chan_reg,
)
from telecard import Card, Cause, InvalidStateError, State, TelecardError
from telecard._cdriver import lib
from telecard.registers import CardState
from tests.conftest import free, wait_for

Received = list[tuple[int, q931.Message]]  # (role of the receiving entity, message)


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> Received:
    """Every Q.931 message a call control entity receives, in order."""
    seen: Received = []
    original = CallControl.receive

    def receive(self: CallControl, payload: bytes) -> None:
        msg = q931.decode(payload)
        if msg is not None:
            seen.append((self.role, msg))
        original(self, payload)

    monkeypatch.setattr(CallControl, "receive", receive)
    return seen


def make(role: int = ROLE_TE, **timers: float) -> Harness:
    h = Harness(role=role, timers=timers, net_timers={"T302": 5.0})
    h.wait_link()
    return h


@pytest.fixture(params=[ROLE_TE, ROLE_NT], ids=["TE", "NT"])
def h(request: pytest.FixtureRequest, received: Received) -> Iterator[Harness]:
    harness = make(request.param, T302=0.3, T304=0.3)
    yield harness
    harness.close()


def sent_by_card(h: Harness, received: Received) -> list[q931.Message]:
    """The messages the card sent (those its far end, of the other role, received)."""
    card_role = h.spans[0].cc.role
    return [m for role, m in received if role != card_role]


def card_got(h: Harness, received: Received) -> list[q931.Message]:
    card_role = h.spans[0].cc.role
    return [m for role, m in received if role == card_role]


def digits_of(messages: list[q931.Message], mt: int) -> list[tuple[str, bool]]:
    return [(q931.number_digits(m.ies[q931.IE_CALLED_NUMBER])
             if q931.IE_CALLED_NUMBER in m.ies else "", m.sending_complete)
            for m in messages if m.mt == mt]


# --- overlap sending: the host dials ------------------------------------------------------


def test_outgoing_overlap_completed_by_sending_complete(h: Harness, received: Received) -> None:
    h.network.route("5551234", Answer())
    sig = h.spans[0]
    assert sig.command(1, CMD_MAKE_CALL_OVERLAP, "55", "700", b"") == MB_DONE
    # digits before the SETUP ACKNOWLEDGE wait on the card and go with it
    assert sig.command(1, CMD_SEND_DIGITS, "5", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_OUT_OVERLAP)
    assert sig.command(1, CMD_SEND_DIGITS, "12", "", b"") == MB_DONE
    assert sig.command(1, CMD_SEND_DIGITS_COMPLETE, "34", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE)
    ch = h.sink.chan(0, 1)
    assert ch.called == "5551234"
    states = [s for _, s in ch.events]
    assert states[:2] == [ST_OUT_SETUP, ST_OUT_SETUP] and ST_OUT_OVERLAP in states
    out = sent_by_card(h, received)
    assert digits_of(out, q931.SETUP) == [("55", False)]
    assert digits_of(out, q931.INFORMATION) == [("5", False), ("12", False), ("34", True)]
    assert h.network.received[-1].result.called == "5551234"
    # Sending Complete given: nothing more to send
    assert sig.command(1, CMD_SEND_DIGITS, "9", "", b"") == MB_ERR_STATE


def test_outgoing_overlap_completed_by_a_route_without_sending_complete(
        h: Harness, received: Received) -> None:
    h.network.route("4321", Answer())
    sig = h.spans[0]
    assert sig.command(2, CMD_MAKE_CALL_OVERLAP, "", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 2).state == ST_OUT_OVERLAP)
    for digit in "4321":
        assert sig.command(2, CMD_SEND_DIGITS, digit, "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 2).state == ST_ACTIVE)
    out = sent_by_card(h, received)
    setup = next(m for m in out if m.mt == q931.SETUP)
    assert q931.IE_CALLED_NUMBER not in setup.ies and not setup.sending_complete


def test_outgoing_overlap_t304_expiry_clears_with_102(h: Harness, received: Received) -> None:
    sig = h.spans[0]
    assert sig.command(3, CMD_MAKE_CALL_OVERLAP, "12", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 3).state == ST_OUT_OVERLAP)
    assert sig.command(3, CMD_SEND_DIGITS, "3", "", b"") == MB_DONE  # restarts T304
    h.run_until(lambda: h.sink.cleared(0, 3) == 1, timeout=3.0)
    ch = h.sink.chan(0, 3)
    assert ch.state == ST_IDLE and ch.cause_source == CAUSE_SRC_LOCAL
    assert cause_value(ch.cause) == q931.CAUSE_TIMER_EXPIRY and ch.cause[2:] == b"304"
    assert any(m.mt == q931.DISCONNECT for m in sent_by_card(h, received))


def test_send_digits_refusals(h: Harness) -> None:
    sig = h.spans[0]
    assert sig.command(4, CMD_SEND_DIGITS, "1", "", b"") == MB_ERR_STATE  # no call
    h.network.route("77", Answer())
    assert sig.command(4, CMD_MAKE_CALL, "77", "", b"") == MB_DONE  # en bloc
    assert sig.command(4, CMD_SEND_DIGITS, "1", "", b"") == MB_ERR_STATE
    assert sig.command(5, CMD_MAKE_CALL_OVERLAP, "1" * 30, "", b"") == MB_DONE
    assert sig.command(5, CMD_SEND_DIGITS, "123", "", b"") == MB_ERR_ARGUMENT  # 33 digits
    assert sig.command(5, CMD_SEND_DIGITS, "", "", b"") == MB_ERR_ARGUMENT
    assert sig.command(5, CMD_SEND_DIGITS, "1a", "", b"") == MB_ERR_ARGUMENT
    assert sig.command(5, CMD_SEND_DIGITS_COMPLETE, "", "", b"") == MB_DONE
    assert h.sink.chan(0, 5).called == "1" * 30


def test_proceeding_at_once_leaves_overlap_sending(h: Harness) -> None:
    h.network.route("600", Answer())  # routed: the network proceeds without SETUP ACK
    sig = h.spans[0]
    assert sig.command(6, CMD_MAKE_CALL_OVERLAP, "600", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 6).state == ST_ACTIVE)
    assert ST_OUT_OVERLAP not in [s for _, s in h.sink.chan(0, 6).events]
    assert sig.command(6, CMD_SEND_DIGITS, "1", "", b"") == MB_ERR_STATE


def test_setup_ack_to_an_en_bloc_call_shows_out_proceeding(h: Harness) -> None:
    h.network.route("900", Answer(overlap=True))
    assert h.spans[0].command(7, CMD_MAKE_CALL, "900", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 7).state == ST_ACTIVE)
    states = [s for _, s in h.sink.chan(0, 7).events]
    assert ST_OUT_PROCEEDING in states and ST_OUT_OVERLAP not in states


# --- overlap receiving: the far end dials -------------------------------------------------


def offered(h: Harness, ts: int) -> bool:
    return any(ev == EV_INCOMING for ev, _ in h.sink.chan(0, ts).events)


def test_incoming_overlap_completed_by_sending_complete(h: Harness, received: Received) -> None:
    h.spans[0].overlap_digits = 10
    call = h.network.place_call("5550123", "42", timeslot=9, overlap=2)
    h.run_until(lambda: offered(h, 9))
    ch = h.sink.chan(0, 9)
    assert [s for _, s in ch.events] == [ST_IN_OVERLAP, ST_IN_PRESENT]
    assert (ch.called, ch.calling) == ("5550123", "42")
    got = card_got(h, received)
    assert digits_of(got, q931.SETUP) == [("55", False)]
    assert digits_of(got, q931.INFORMATION)[-1] == ("3", True)
    mts = [m.mt for m in sent_by_card(h, received)]
    assert mts[:2] == [q931.SETUP_ACKNOWLEDGE, q931.CALL_PROCEEDING]
    assert h.spans[0].command(9, CMD_ANSWER, "", "", b"") == MB_DONE
    h.run_until(lambda: call.result.answered)


def test_incoming_overlap_completed_by_the_length_rule(h: Harness, received: Received) -> None:
    h.spans[0].overlap_digits = 5
    h.network.place_call("1234567", timeslot=10, overlap=1, sending_complete=False)
    h.run_until(lambda: offered(h, 10))
    # complete at 5 digits: CALL PROCEEDING goes at once; the far end's later digits are
    # INFORMATION in incoming call proceeding, accepted and ignored
    assert h.sink.chan(0, 10).called == "12345"
    h.run(0.05)
    assert h.sink.chan(0, 10).called == "12345"
    assert not any(m.mt == q931.STATUS for m in sent_by_card(h, received))


def test_incoming_overlap_completed_by_t302_expiry(h: Harness, received: Received) -> None:
    h.spans[0].overlap_digits = 12
    h.network.place_call("8765", timeslot=11, overlap=2, sending_complete=False)
    h.run_until(lambda: h.sink.chan(0, 11).state == ST_IN_OVERLAP)
    assert not offered(h, 11)
    h.run_until(lambda: offered(h, 11), timeout=3.0)
    assert h.sink.chan(0, 11).called == "8765"
    # ALERT and ANSWER wait for the complete number; afterwards they work
    assert h.spans[0].command(11, CMD_ALERT, "", "", b"") == MB_DONE


def test_incoming_overlap_t302_expiry_without_digits_clears_with_28(
        h: Harness, received: Received) -> None:
    h.spans[0].overlap_digits = 4
    h.network.place_call("", timeslot=12, overlap=0, sending_complete=False)
    h.run_until(lambda: h.sink.chan(0, 12).state == ST_IN_OVERLAP)
    assert h.spans[0].command(12, CMD_ANSWER, "", "", b"") == MB_ERR_STATE
    h.run_until(lambda: h.sink.cleared(0, 12) == 1, timeout=3.0)
    assert cause_value(h.sink.chan(0, 12).cause) == q931.CAUSE_INVALID_NUMBER_FORMAT
    assert not offered(h, 12)


def test_without_overlap_digits_every_setup_is_offered_at_once(
        h: Harness, received: Received) -> None:
    h.network.place_call("12", timeslot=13, overlap=2, sending_complete=False)
    h.run_until(lambda: offered(h, 13))
    assert [s for _, s in h.sink.chan(0, 13).events] == [ST_IN_PRESENT]
    assert q931.SETUP_ACKNOWLEDGE not in [m.mt for m in sent_by_card(h, received)]


# --- INFORMATION where Q.931 does not allow it --------------------------------------------


def test_information_in_call_initiated_gets_status_101(h: Harness, received: Received) -> None:
    h.network.route("404", NoResponse())
    assert h.spans[0].command(14, CMD_MAKE_CALL, "404", "", b"") == MB_DONE
    h.run_until(lambda: any(m.mt == q931.SETUP for m in sent_by_card(h, received)))
    setup = next(m for m in sent_by_card(h, received) if m.mt == q931.SETUP)
    h.network.inject(0, q931.header(q931.INFORMATION, setup.cr, True)
                     + q931.ie(q931.IE_CALLED_NUMBER, q931.number("1")))
    h.run_until(lambda: any(m.mt == q931.STATUS for m in sent_by_card(h, received)))
    status = next(m for m in sent_by_card(h, received) if m.mt == q931.STATUS)
    assert cause_value(status.ies[q931.IE_CAUSE]) == q931.CAUSE_WRONG_STATE
    assert status.ies[q931.IE_CALL_STATE][0] & 0x3F == (1 if h.spans[0].cc.role == ROLE_TE
                                                         else 6)
    # The card kept its call: only the far end, which had discarded the SETUP, ends it
    # (RELEASE COMPLETE answering the STATUS, §5.8.3.2)
    h.run_until(lambda: h.sink.cleared(0, 14) == 1)
    assert h.sink.chan(0, 14).cause_source == CAUSE_SRC_REMOTE
    assert not any(m.mt in (q931.DISCONNECT, q931.RELEASE, q931.RELEASE_COMPLETE)
                   for m in sent_by_card(h, received))


def test_information_in_active_state_is_accepted(h: Harness, received: Received) -> None:
    h.network.route("505", Answer())
    assert h.spans[0].command(15, CMD_MAKE_CALL, "505", "", b"") == MB_DONE
    h.run_until(lambda: h.sink.chan(0, 15).state == ST_ACTIVE)
    h.network.inject(0, q931.header(q931.INFORMATION,
                                    h.network.received[-1].call.cr,  # type: ignore[union-attr]
                                    True) + q931.ie(q931.IE_CALLED_NUMBER, q931.number("1")))
    h.run(0.1)
    assert not any(m.mt == q931.STATUS for m in sent_by_card(h, received))
    assert h.sink.chan(0, 15).state == ST_ACTIVE


# --- the whole stack: telecard's API on a simulated card ------------------------------------


@pytest.fixture
def stack() -> Iterator[tuple[SimulatedCard, Card]]:
    with simulated_card(timers={"T302": 1.0, "T304": 0.5},
                        network_timers={"T302": 5.0}) as sim, Card.open(sim.device_path) as card:
        yield sim, card


def test_api_overlap_sending(stack: tuple[SimulatedCard, Card]) -> None:
    sim, card = stack
    sim.network.route("0301234", Answer())
    channel = free(card)
    assert channel.start_call("03", "42", sending_complete=False) is State.CALL_OUTGOING
    assert channel.details.call_to == "03"
    channel.send_digits("012")
    assert channel.send_digits("34", sending_complete=True) in (State.CALL_OUTGOING,
                                                                  State.ANSWERED)
    assert channel.details.call_to == "0301234"
    wait_for(lambda: channel.state() is State.ANSWERED)
    assert sim.network.received[-1].result.called == "0301234"
    with pytest.raises(InvalidStateError):
        channel.send_digits("5")
    assert channel.hang_up() is State.IDLE
    assert channel.details.call_to == "0301234"


def test_api_send_digits_refusals(stack: tuple[SimulatedCard, Card]) -> None:
    sim, card = stack
    channel = free(card)
    with pytest.raises(InvalidStateError):
        channel.send_digits("1")  # no call
    for bad in ("1a", "+1", 7):
        with pytest.raises(ValueError):
            channel.send_digits(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        channel.send_digits("")
    with pytest.raises(ValueError):
        channel.start_call("", sending_complete=True)
    channel.start_call("1" * 31, sending_complete=False)
    with pytest.raises(ValueError):
        channel.send_digits("12")
    channel.hang_up()
    channel.start_call("3302")  # en bloc: nothing more to dial
    with pytest.raises(InvalidStateError):
        channel.send_digits("1")
    channel.hang_up()


def test_api_overlap_sending_t304_expiry(stack: tuple[SimulatedCard, Card]) -> None:
    _, card = stack
    channel = free(card)
    channel.start_call("55", sending_complete=False)
    assert channel.wait_for_idle(5) is State.IDLE
    assert channel.details.raw_cause == 102 and channel.details.cause_source == "local"
    assert channel.details.cause_diagnostic == b"304"


def test_api_overlap_receiving_by_length(stack: tuple[SimulatedCard, Card]) -> None:
    sim, card = stack
    card.set_overlap_digits(0, 6)
    sim.network.place_call("123456", "777", overlap=2, sending_complete=False, timeslot=5)
    channel = card.wait_for_incoming_call(5)
    assert channel is not None and channel.number == 5
    assert (channel.details.call_to, channel.details.call_from) == ("123456", "777")
    assert channel.answer() is State.ANSWERED
    channel.hang_up()


def test_api_overlap_receiving_by_t302_and_not_offered_before(
        stack: tuple[SimulatedCard, Card]) -> None:
    sim, card = stack
    card.set_overlap_digits(0, 10)
    sim.network.place_call("4711", overlap=1, sending_complete=False, timeslot=6)
    channel = card.channel(0, 6)
    wait_for(lambda: card.device.read_channel(0, 6).state is CardState.IN_OVERLAP)
    assert channel.state() is State.IDLE and card.calls_waiting == 0
    offered = card.wait_for_incoming_call(5)
    assert offered is channel and channel.details.call_to == "4711"
    channel.reject()


def test_api_set_overlap_digits_checks(stack: tuple[SimulatedCard, Card]) -> None:
    _, card = stack
    for span, digits in ((1, 4), (0, 33), (0, -1), (0, True)):
        with pytest.raises(ValueError):
            card.set_overlap_digits(span, digits)
    card.set_overlap_digits(0, 32)
    assert card.device.read(lib.TC_SPAN_BASE + lib.TC_SPAN_OVERLAP_DIGITS, 1) == b"\x20"
    with pytest.raises(TelecardError):  # the card refuses it too (BAD_VALUE)
        card.device.write(lib.TC_SPAN_BASE + lib.TC_SPAN_OVERLAP_DIGITS, b"\x21")
    with pytest.raises(TelecardError):  # a span the card does not have
        card.device.write(lib.TC_SPAN_BASE + lib.TC_SPAN_STRIDE + lib.TC_SPAN_OVERLAP_DIGITS,
                          b"\x01")


# --- against libpri (tests/peers/libpri_peer.c, the network side) ---------------------------


@pytest.fixture(scope="module")
def peer_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("libpri"))


@pytest.fixture
def pri(peer_exe: Path) -> Iterator[tuple[LibpriProcess, Harness]]:
    lib = LibpriProcess(peer_exe)
    h = Harness(sockets={0: lib.card_sock}, timers={"T302": 0.5})
    try:
        h.wait_link()
        lib.send("overlap")
        h.run_until(lambda: lib.seen("ok") is not None)
        yield lib, h
    finally:
        h.close()
        lib.close()


def seen(h: Harness, lib: LibpriProcess, prefix: str, timeout: float = 5.0) -> str:
    h.run_until(lambda: lib.seen(prefix) is not None, timeout)
    return lib.seen(prefix) or ""


@pytest.mark.libpri
@pytest.mark.skipif(not HAVE_LIBPRI, reason="libpri-dev or a C compiler is missing")
def test_libpri_collects_the_cards_overlap_digits(pri: tuple[LibpriProcess, Harness]) -> None:
    lib, h = pri
    lib.send("route 551234 answer")
    sig = h.spans[0]
    assert sig.command(1, CMD_MAKE_CALL_OVERLAP, "55", "", b"") == MB_DONE
    assert seen(h, lib, "more 1") == "more 1 55"  # libpri answered SETUP ACKNOWLEDGE
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_OUT_OVERLAP)
    assert sig.command(1, CMD_SEND_DIGITS, "12", "", b"") == MB_DONE
    assert seen(h, lib, "info 1 5512") == "info 1 5512 0"
    assert sig.command(1, CMD_SEND_DIGITS_COMPLETE, "34", "", b"") == MB_DONE
    assert seen(h, lib, "info 1 551234") == "info 1 551234 1"  # Sending Complete seen
    h.run_until(lambda: h.sink.chan(0, 1).state == ST_ACTIVE)
    assert h.sink.chan(0, 1).called == "551234"


@pytest.mark.libpri
@pytest.mark.skipif(not HAVE_LIBPRI, reason="libpri-dev or a C compiler is missing")
@pytest.mark.parametrize(("wanted", "timeout"), [(6, 2.0), (12, 3.0)], ids=["length", "T302"])
def test_libpri_dials_overlap_to_the_card(pri: tuple[LibpriProcess, Harness], wanted: int,
                                          timeout: float) -> None:
    lib, h = pri
    h.spans[0].overlap_digits = wanted
    lib.send("dial 5 12 3456")  # SETUP with 12, then one INFORMATION per digit
    assert seen(h, lib, "setup_ack 5") == "setup_ack 5"
    h.run_until(lambda: offered(h, 5), timeout)
    ch = h.sink.chan(0, 5)
    assert [s for _, s in ch.events] == [ST_IN_OVERLAP, ST_IN_PRESENT]
    assert ch.called == "123456"
    assert h.spans[0].command(5, CMD_ANSWER, "", "", b"") == MB_DONE
    assert seen(h, lib, "answer 5") == "answer 5"


def test_api_wait_for_answer(stack: tuple[SimulatedCard, Card]) -> None:
    sim, card = stack
    channel = free(card)
    assert channel.wait_for_answer(0.1) is State.IDLE  # no call: at once
    channel.start_call("3303")  # the demo plan rings it and never answers
    assert channel.wait_for_answer(0.3) is State.IDLE
    assert channel.cause() is Cause.TIMEOUT and channel.details.raw_cause == 102
    channel.release()
    sim.network.place_call("2000", timeslot=9)
    incoming = card.wait_for_incoming_call(5)
    assert incoming is not None
    with pytest.raises(InvalidStateError):
        incoming.wait_for_answer(0.1)
    incoming.reject()


def test_api_overlap_digits_survive_a_card_reset(stack: tuple[SimulatedCard, Card]) -> None:
    sim, card = stack
    card.set_overlap_digits(0, 6)
    boot_id = card.device.info.boot_id
    sim.firmware.reset()  # OVERLAP_DIGITS back to 0 on the card
    wait_for(lambda: card.device.info.boot_id != boot_id and card.spans[0].dchannel_up)
    wait_for(lambda: card.device.read(lib.TC_SPAN_BASE + lib.TC_SPAN_OVERLAP_DIGITS, 1)
             == b"\x06")
    sim.network.place_call("123456", overlap=2, sending_complete=False, timeslot=5)
    channel = card.wait_for_incoming_call(5)
    assert channel is not None and channel.details.call_to == "123456"
    channel.reject()



def test_api_send_digits_through_a_stalled_link_sends_them_once() -> None:
    """The driver gives up on a SEND_DIGITS the card only takes later: the card's CALLED says
    it took the digits, so send_digits() succeeds, and a caller has no reason to send them
    again (which would dial them twice)."""
    with simulated_card(timers={"T304": 10.0}, network_timers={"T302": 10.0}) as sim, \
            Card.open(sim.device_path) as card:
        sim.network.route("0312", Answer())
        channel = free(card)
        channel.start_call("03", sending_complete=False)
        wait_for(lambda: card.device.read_channel(0, channel.number).state
                 is CardState.OUT_OVERLAP)
        sim.faults.stall(1.5)  # longer than the driver's four tries of 0.25 s
        channel.send_digits("12")
        assert channel.details.call_to == "0312"
        wait_for(lambda: channel.state() is State.ANSWERED)
        assert sim.network.received[-1].result.called == "0312"
        channel.hang_up()



def test_api_a_card_opened_during_overlap_receiving_adopts_no_call() -> None:
    """A Card opened while the card collects a caller's digits (IN_OVERLAP) adopts no call
    there, and gets it, counted once, when the card offers it complete."""
    with simulated_card(timers={"T302": 1.0}) as sim:
        with Card.open(sim.device_path) as card:
            card.set_overlap_digits(0, 6)  # kept across the next HELLO
        sim.network.place_call("4711", overlap=2, sending_complete=False, timeslot=7)
        state = chan_reg(0, 7, CHAN_STATE)
        wait_for(lambda: call_on_loop(sim.loop, sim.firmware.regs.u8, state) == ST_IN_OVERLAP)
        with Card.open(sim.device_path) as card:
            channel = card.channel(0, 7)
            assert channel.state() is State.IDLE and channel.details.direction == ""
            assert card.statistics().total.incoming.attempts == 0
            assert card.wait_for_incoming_call(5) is channel  # at T302 expiry
            assert channel.details.call_to == "4711"
            assert card.statistics().total.incoming.attempts == 1
            channel.reject()


def test_digits_for_after_setup_ack_are_dropped_when_the_far_end_proceeds(
        h: Harness, received: Received) -> None:
    """The far end takes the SETUP's number as complete (CALL PROCEEDING, no SETUP
    ACKNOWLEDGE): digits the host gave meanwhile are never sent, and CALLED says so."""
    h.network.route("600", Answer())
    sig = h.spans[0]
    assert sig.command(4, CMD_MAKE_CALL_OVERLAP, "600", "", b"") == MB_DONE
    assert sig.command(4, CMD_SEND_DIGITS, "12", "", b"") == MB_DONE  # before any answer
    h.run_until(lambda: h.sink.chan(0, 4).state == ST_ACTIVE)
    assert h.sink.chan(0, 4).called == "600"
    assert digits_of(sent_by_card(h, received), q931.INFORMATION) == []


def test_api_record_keeps_the_number_the_network_got(stack: tuple[SimulatedCard, Card]) -> None:
    """The same through the API: the call's record ends with the number the network got."""
    sim, card = stack
    sim.network.route("600", Answer())
    entity = call_on_loop(sim.loop, sim.network.entity, 0)
    hears = entity.lapd.on_data
    held: list[bytes] = []
    call_on_loop(sim.loop, setattr, entity.lapd, "on_data", held.append)
    channel = free(card)
    channel.start_call("600", sending_complete=False)
    wait_for(lambda: held)  # the SETUP, not yet heard by the network
    channel.send_digits("12")  # waits on the card for a SETUP ACKNOWLEDGE
    assert channel.details.call_to == "60012"
    call_on_loop(sim.loop, setattr, entity.lapd, "on_data", hears)
    for payload in held:
        call_on_loop(sim.loop, hears, payload)
    assert channel.wait_for_answer(5) is State.ANSWERED
    assert sim.network.received[-1].result.called == "600"
    assert channel.hang_up() is State.IDLE
    assert channel.details.call_to == channel.details.called_number.digits == "600"
