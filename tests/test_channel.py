"""CallChannel end to end: network emulator -> simulated card -> C driver -> telecard API."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time

import pytest

import firmware_sim.network
import telecard
from firmware_sim import SimulatedCard
from firmware_sim.demo_plan import simulated_card
from firmware_sim.network import (
    Answer,
    NoAnswer,
    NoResponse,
    RawCause,
)
from telecard import (
    CallChannel,
    CallDetails,
    Card,
    CardState,
    Cause,
    ChannelBlock,
    Line,
    Role,
    State,
)
from telecard.device import Event
from telecard.registers import EventCode
from tests.conftest import free, wait_for

LOC_USER = 0
LOC_PUBLIC_LOCAL = 2
LOC_PUBLIC_REMOTE = 4


def test_uas_example_verbatim(tc: Card, capsys: pytest.CaptureFixture[str]) -> None:
    channel = free(tc)
    state = channel.call('3301')
    if state != channel.State.ANSWERED:
        if channel.cause() == channel.Cause.BUSY:
            print("Busy, try again")
    assert capsys.readouterr().out == "Busy, try again\n"
    assert telecard.State is channel.State and telecard.Cause is channel.Cause


def test_records_built_on_the_event_path_are_whole_and_equal_to_constructed_ones(
    sim: SimulatedCard, tc: Card
) -> None:
    """CallDetails and ChannelBlock are filled in without their __init__ on the hot path:
    every field is there, nothing else, and they compare like records built the usual way."""
    sim.network.route("5001", Answer(after=0.05, hold=0.1))
    channel = free(tc)
    assert channel.call("5001") is State.ANSWERED
    assert channel.wait_for_idle(5) is State.IDLE
    details = channel.details
    assert vars(details).keys() == {f.name for f in dataclasses.fields(CallDetails)}
    assert details == dataclasses.replace(details)
    assert details.answered is not None and details.ended is not None
    block = tc.device.read_channel(channel.span, channel.number)
    assert vars(block).keys() == {f.name for f in dataclasses.fields(ChannelBlock)}
    assert block == dataclasses.replace(block)
    assert (block.called, block.state) == ("5001", CardState.IDLE)


def test_no_response_card_t303_gives_timeout(sim: SimulatedCard, tc: Card) -> None:
    sim.network.route("5002", NoResponse())
    channel = free(tc)
    assert channel.call("5002", seconds_timeout=10) is State.IDLE
    assert channel.cause() is Cause.TIMEOUT
    assert channel.details.raw_cause == 102


def test_no_answer_network_t301_gives_noanswer() -> None:
    with simulated_card(network_timers={"T301": 0.3}) as sim, Card.open(sim.device_path) as card:
        sim.network.route("5003", NoAnswer())
        channel = free(card)
        assert channel.call("5003", seconds_timeout=10) is State.IDLE
        assert channel.cause() is Cause.NOANSWER
        assert channel.details.raw_cause == 19


def test_a_caller_waiting_on_its_call_hands_out_the_news_that_ends_it(
    sim: SimulatedCard, tc: Card
) -> None:
    """While call() waits on a ringing call, the event pump runs on the caller's thread: the
    clearing is drained and handed out there, not passed over from the event thread."""
    sim.network.route("4000", NoAnswer())
    channel = tc.channel(0, 1)
    handed_out_on: list[threading.Thread] = []
    tc.add_event_listener(
        lambda e: handed_out_on.append(threading.current_thread())
        if e.code == EventCode.CLEARED
        else None
    )
    for _ in range(3):
        handed_out_on.clear()
        caller = threading.Thread(target=channel.call, args=("4000", "", 10))
        caller.start()
        wait_for(lambda: channel.state() is State.RING_OUTGOING)
        time.sleep(0.7)  # past a waiting caller's next look at whether it can take over
        sim.network.clear(0, 1)
        caller.join(10)
        assert channel.cause() is Cause.NORMAL and channel.details.raw_cause == 16
        assert handed_out_on == [caller]


def test_a_drain_cut_short_on_a_callers_thread_loses_no_event(
    sim: SimulatedCard, tc: Card
) -> None:
    """A KeyboardInterrupt while the caller's thread hands out events (raised here by a
    listener, where Ctrl-C could land) leaves the rest of the batch undelivered; the event
    thread re-reads the channels, so the call still ends, with its cause. (The caller drains
    once it has taken over from the event thread: tried until it has, at most 5 times.)"""
    sim.network.route("4000", NoAnswer())
    channel = tc.channel(0, 1)
    callers: list[threading.Thread] = []
    interrupted: list[threading.Thread] = []

    def listener(event: Event) -> None:
        if event.code == EventCode.CLEARED and threading.current_thread() in callers:
            interrupted.append(threading.current_thread())
            raise KeyboardInterrupt

    tc.add_event_listener(listener)

    def place() -> None:
        with contextlib.suppress(KeyboardInterrupt):
            channel.call("4000", "", 10)

    while not interrupted and len(callers) < 5:
        caller = threading.Thread(target=place)
        callers.append(caller)
        caller.start()
        wait_for(lambda: channel.state() is State.RING_OUTGOING)
        time.sleep(0.7)  # past a waiting caller's look at whether it can take over
        sim.network.clear(0, 1)
        caller.join(10)
        wait_for(lambda: channel.state() is State.IDLE, 3, "the event thread re-read it")
        assert channel.cause() is Cause.NORMAL and channel.details.raw_cause == 16
    assert interrupted == [callers[-1]]


def test_the_network_keeps_a_bounded_history_of_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated card runs for days: the network keeps only its newest calls (an unbounded
    list once stretched the card's garbage collections past the host's time-out)."""
    monkeypatch.setattr(firmware_sim.network, "RECEIVED_KEPT", 10)
    with simulated_card() as sim, Card.open(sim.device_path) as card:
        channel = card.channel(0, 1)
        for _ in range(15):
            channel.call("3301")
        kept = sim.network.wait_received(15)
        assert len(kept) == 10 == len(sim.network.received)
        assert all(h.wait(5).cause == 17 for h in kept)


def test_the_event_thread_outlives_a_listener_that_raises_system_exit(
    sim: SimulatedCard, tc: Card
) -> None:
    """A listener's SystemExit on the event thread cuts its batch short, not the thread: the
    channels are re-read and the next calls still get their outcomes."""
    event_thread: list[threading.Thread] = []

    def listener(event: Event) -> None:
        if event.code == EventCode.CLEARED and threading.current_thread().name.startswith(
            "telecard events"
        ):
            event_thread.append(threading.current_thread())
            raise SystemExit

    tc.add_event_listener(listener)
    placed = sim.network.place_call("100", "200", span=0, timeslot=5)
    wait_for(lambda: tc.channel(0, 5).state() is State.CALL_INCOMING)
    placed.clear()  # the clearing goes to the event thread: no caller waits on channel 5
    wait_for(lambda: bool(event_thread), 3, "the event thread handed out the clearing")
    wait_for(lambda: tc.channel(0, 5).state() is State.IDLE, 3, "re-read after SystemExit")
    assert event_thread[0].is_alive()
    channel = tc.channel(0, 1)
    assert channel.call("3301") is State.IDLE and channel.cause() is Cause.BUSY


def test_malformed_cause_is_other_without_raw_cause(sim: SimulatedCard, tc: Card) -> None:
    sim.network.route("5004", RawCause(b"\x84", stage="alerting"))
    channel = free(tc)
    channel.call("5004", seconds_timeout=5)
    assert channel.state() is State.IDLE
    assert channel.cause() is Cause.OTHER
    assert channel.details.raw_cause is None
    assert channel.details.cause_ie == b"\x84"


def test_start_call_does_not_block_and_states_progress(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    assert channel.start_call("3303") in (State.CALL_OUTGOING, State.RING_OUTGOING)
    deadline = time.monotonic() + 5
    while channel.state() is not State.RING_OUTGOING and time.monotonic() < deadline:
        time.sleep(0.005)
    assert channel.state() is State.RING_OUTGOING
    assert channel.cause() is Cause.NORMAL
    with pytest.raises(telecard.InvalidStateError):
        channel.call("3301")
    assert channel.hang_up() is State.IDLE
    assert channel.cause() is Cause.NORMAL


def test_hang_up_on_idle_channel_is_safe(sim: SimulatedCard, tc: Card) -> None:
    channel = tc.channel(0, 7)
    assert channel.hang_up() is State.IDLE
    assert channel.cause() is Cause.NORMAL
    assert channel.details.raw_cause is None
    channel.call("3301")
    assert channel.hang_up() is State.IDLE
    assert channel.cause() is Cause.BUSY  # details persist until the next call
    assert len(sim.network.received) == 1


@pytest.mark.parametrize(
    "number",
    ["", "abc", "12a", "sip:alice@example.com", "sip:33.01@example.com", "sips:example.com",
     "mailto:3301@example.com", "tel:", "tel:+", "tel:;x=1", "1" * 33, "+3301", "33 01"],
)
def test_bad_numbers_are_value_errors_before_the_card(
    sim: SimulatedCard, tc: Card, number: str
) -> None:
    channel = free(tc)
    with pytest.raises(ValueError):
        channel.call(number)
    with pytest.raises(ValueError):
        channel.start_call("3301", call_from=number if number else "x")
    assert channel.state() is State.IDLE
    assert sim.network.received == []


def test_non_str_number_is_value_error(tc: Card) -> None:
    with pytest.raises(ValueError):
        free(tc).call(3301)  # type: ignore[arg-type]


def test_tel_uri(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    assert channel.call("tel:+33-01;phone-context=example.com", "tel:44.55") is State.IDLE
    assert channel.cause() is Cause.BUSY
    result = sim.network.received[-1].result
    assert (result.called, result.calling) == ("3301", "4455")


def test_bad_timeout_is_value_error(tc: Card) -> None:
    with pytest.raises(ValueError):
        free(tc).call("3301", seconds_timeout=-1)


# -- incoming calls --------------------------------------------------------------------------


def incoming(sim: SimulatedCard, card: Card, to: str = "100", from_: str = "200") -> CallChannel:
    sim.network.place_call(to, from_)
    channel = card.wait_for_incoming_call(5)
    assert channel is not None
    return channel


@pytest.mark.parametrize(
    ("cause", "raw"),
    [(Cause.NORMAL, None), (Cause.TIMEOUT, None), (Cause.OTHER, None), (None, 0), (None, 128)],
)
def test_bad_reject_is_value_error_and_sends_nothing(
    sim: SimulatedCard, tc: Card, cause: Cause | None, raw: int | None
) -> None:
    handle = sim.network.place_call("100")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    with pytest.raises(ValueError):
        channel.reject(cause, raw_cause=raw)
    time.sleep(0.05)
    assert channel.state() is State.CALL_INCOMING
    assert not handle.result.cleared
    channel.reject()
    assert handle.wait(5).cause == 21


def start_waiting(channel: CallChannel, result: list[State], seconds: float) -> threading.Thread:
    """A thread in channel.wait_for_incoming_call(seconds), appending what it returns to
    `result`; returns once the channel reads WAITING."""
    waiter = threading.Thread(
        target=lambda: result.append(channel.wait_for_incoming_call(seconds))
    )
    waiter.start()
    deadline = time.monotonic() + 2
    while channel.state() is not State.WAITING and time.monotonic() < deadline:
        time.sleep(0.005)
    assert channel.state() is State.WAITING
    return waiter


def test_channel_wait_for_incoming_call_reports_waiting(sim: SimulatedCard, tc: Card) -> None:
    channel = tc.channel(0, 1)
    result: list[State] = []
    waiter = start_waiting(channel, result, 5)
    sim.network.place_call("100", timeslot=1)
    waiter.join(5)
    assert result == [State.CALL_INCOMING]
    assert tc.wait_for_incoming_call(0.1) is None  # handed to the channel's waiter only
    channel.reject()


# -- failures --------------------------------------------------------------------------------


def test_firmware_reset_gives_error_and_card_recovers(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    result: list[State] = []
    caller = threading.Thread(
        target=lambda: result.append(channel.call("3303", seconds_timeout=30))
    )
    caller.start()
    deadline = time.monotonic() + 5
    while channel.state() is not State.RING_OUTGOING and time.monotonic() < deadline:
        time.sleep(0.005)
    sim.firmware.reset()
    caller.join(5)
    assert result == [State.IDLE]
    assert channel.cause() is Cause.ERROR
    assert channel.details.raw_cause is None
    # The card is usable again once it has rebooted.
    deadline = time.monotonic() + 5
    while not tc.spans[0].dchannel_up and time.monotonic() < deadline:
        time.sleep(0.01)
    assert channel.call("3301", seconds_timeout=5) is State.IDLE
    assert channel.cause() is Cause.BUSY


def test_card_layout_and_numbering(tc: Card) -> None:
    (span,) = tc.spans
    assert (span.index, span.line, span.role, span.dchannel_up) == (0, Line.E1, Role.TE, True)
    assert span.alarms == telecard.Alarm.NONE
    assert span.channels == (*range(1, 16), *range(17, 32))
    assert [c.number for c in tc.channels()] == list(span.channels)
    for bad in [(0, 0), (0, 16), (0, 32), (1, 1)]:
        with pytest.raises(ValueError):
            tc.channel(*bad)


def test_free_channel_hands_out_distinct_channels(tc: Card) -> None:
    got = [free(tc) for _ in range(30)]
    assert len({(c.span, c.number) for c in got}) == 30
    assert tc.free_channel() is None


# -- review regressions ----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [float("inf"), 1e12])
def test_huge_timeout_means_no_timeout(sim: SimulatedCard, tc: Card, timeout: float) -> None:
    # Validated up front, then used: once MAKE_CALL has gone out no OverflowError may follow.
    assert free(tc).call("3301", seconds_timeout=timeout) is State.IDLE
    channel = tc.channel(0, 9)
    assert channel.wait_for_idle(timeout) is State.IDLE
    handle = sim.network.place_call("100", timeslot=9)
    assert tc.wait_for_incoming_call(timeout) is channel
    handle.clear(16)
    assert channel.wait_for_idle(timeout) is State.IDLE


@pytest.mark.parametrize("timeout", [float("nan"), -1, "1", True])
def test_card_wait_for_incoming_call_checks_its_timeout(tc: Card, timeout: object) -> None:
    # NaN used to wait forever, "1" raised TypeError from deep inside.
    with pytest.raises(ValueError):
        tc.wait_for_incoming_call(timeout)  # type: ignore[arg-type]


def test_calls_up_when_the_card_is_opened_are_visible_and_can_be_cleared(
    sim: SimulatedCard,
) -> None:
    """A Card closed with keep_calls leaves calls as they are; whoever opens the card next
    must be able to see and clear them, not be handed their channels as free."""
    with Card.open(sim.device_path, keep_calls=True) as first:
        assert first.channel(0, 5).call("3302", "77") is State.ANSWERED
    with Card.open(sim.device_path) as card:
        channel = card.channel(0, 5)
        assert channel.state() is State.ANSWERED
        assert channel.cause() is Cause.NORMAL
        d = channel.details
        assert (d.direction, d.call_to, d.call_from) == ("outgoing", "3302", "77")
        assert channel not in [card.free_channel() for _ in range(29)]
        with pytest.raises(telecard.InvalidStateError):
            channel.call("3301")
        assert channel.hang_up() is State.IDLE
        assert (channel.cause(), channel.details.raw_cause) == (Cause.NORMAL, 16)
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)


def test_waiting_channel_is_not_free(sim: SimulatedCard, tc: Card) -> None:
    """WAITING is not IDLE: call() raises and free_channel() passes the channel over."""
    channel = tc.channel(0, 1)
    result: list[State] = []
    waiter = start_waiting(channel, result, 2)
    with pytest.raises(telecard.InvalidStateError, match="WAITING"):
        channel.call("3301")
    assert channel not in [tc.free_channel() for _ in range(29)]
    waiter.join(5)
    assert result == [State.IDLE]
    assert sim.network.received == []


def test_repr_names_the_device(sim: SimulatedCard, tc: Card) -> None:
    assert repr(tc) == f"<Card {sim.device_path} spans=1>"
    assert any(sim.device_path in t.name for t in threading.enumerate())
    tc.close()
    assert repr(tc) == f"<Card {sim.device_path} spans=1 closed>"


def test_event_thread_survives_an_unexpected_error(
    sim: SimulatedCard, tc: Card, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met while handling one event must not stop the event thread: every waiter
    would then sleep until its timeout, or for ever."""
    apply = CallChannel._apply
    failed = threading.Event()

    def fail_once(channel: CallChannel, update: object) -> bool:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected")
        return apply(channel, update)  # type: ignore[arg-type]

    monkeypatch.setattr(CallChannel, "_apply", fail_once)
    channel = free(tc)
    result: list[State] = []
    caller = threading.Thread(
        target=lambda: result.append(channel.call("3301", seconds_timeout=None)), daemon=True
    )
    caller.start()
    caller.join(5)
    assert failed.is_set()
    assert result == [State.IDLE]
    assert channel.cause() is Cause.BUSY
    assert any(sim.device_path in t.name for t in threading.enumerate())


def test_unclaimed_incoming_calls_do_not_pile_up(sim: SimulatedCard, tc: Card) -> None:
    """Incoming calls that ended before anyone asked for them are not kept for ever."""
    for _ in range(20):
        handle = sim.network.place_call("100")
        deadline = time.monotonic() + 5
        while not any(c.state() is State.CALL_INCOMING for c in tc.channels()):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        handle.clear(16)
        handle.wait(5)
    assert tc.calls_waiting <= 1


def test_close_during_a_command_waits_for_it_and_leaves_nothing_up(
    sim: SimulatedCard, tc: Card
) -> None:
    """close() while a MAKE_CALL waits for a card stalled past the driver's retries: the
    close waits for the call's fate (up to CLOSE_WAIT) and clears the call the card places
    once the stall ends (cause 16), rather than close at once with the watchdog turned off
    and leave that call up for good (review finding). The caller's call() ends either way."""
    sim.network.route("5000", firmware_sim.network.NoAnswer())
    channel = tc.channel(0, 4)
    outcome: list[object] = []

    def caller() -> None:
        try:
            outcome.append(channel.call("5000"))
        except BaseException as exc:
            outcome.append(exc)

    sim.faults.stall(2.5)  # MAKE_CALL's retries (1 s) run out while the card is stalled...
    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(0.2)
    tc.close()  # ...and the card is closed under it
    thread.join(10)
    assert len(outcome) == 1
    assert outcome[0] in (State.IDLE, State.ERROR) or isinstance(
        outcome[0], telecard.DeviceLostError
    ), repr(outcome[0])
    assert channel.state() is State.ERROR
    assert len(sim.network.received) == 1
    result = sim.network.received[0].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)


def test_an_interrupted_close_leaves_the_card_open_for_calls(
    sim: SimulatedCard, tc: Card, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() interrupted while clearing (KeyboardInterrupt): the card is still open, and
    calls go out again (review finding: every call was refused as "closing" for good)."""

    def interrupted(card: Card) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Card, "_clear_all", interrupted)
        with pytest.raises(KeyboardInterrupt):
            tc.close()
    assert tc.channel(0, 3).call("3302") is State.ANSWERED
    tc.close()
    assert sim.network.received[0].wait(5).cleared_by == "card"


def test_an_incoming_call_answered_while_the_card_closes_is_not_left_up(
    sim: SimulatedCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread takes and answers an incoming call once close() has chosen the
    channels it clears: close() leaves the card's watchdog on, which clears that call
    (review finding: the watchdog was turned off and the call stayed up)."""
    sim.network.route("5000", firmware_sim.network.NoAnswer())
    card = Card.open(sim.device_path, watchdog=1.0)
    card.channel(0, 2).start_call("5000")  # a call for close() to clear
    offered: list[firmware_sim.network.CallHandle] = []
    answered: list[State] = []
    release_quietly = telecard.card._release_quietly

    def clearing(channel: telecard.CallChannel) -> None:
        if not offered:
            offered.append(sim.network.place_call("100", timeslot=20))
            incoming = card.wait_for_incoming_call(3)
            assert incoming is not None
            answered.append(incoming.answer())
        release_quietly(channel)

    monkeypatch.setattr(telecard.card, "_release_quietly", clearing)
    card.close()
    assert answered == [State.ANSWERED]
    result = offered[0].wait(5)
    assert result.answered and result.cleared


def test_a_call_started_while_the_card_closes_is_refused(
    sim: SimulatedCard, tc: Card, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread starts a call once close() has chosen the channels it clears: the call
    is refused (DeviceLostError, "closing"), not placed on a channel the closing will not
    clear, with the watchdog then turned off (review finding)."""
    sim.network.route("5000", firmware_sim.network.NoAnswer())
    up = tc.channel(0, 2)
    up.start_call("5000")  # a call for close() to clear
    late = tc.channel(0, 1)
    outcome: list[object] = []
    release_quietly = telecard.card._release_quietly

    def clearing(channel: telecard.CallChannel) -> None:
        def caller() -> None:
            try:
                outcome.append(late.call("5000", seconds_timeout=5))
            except telecard.TelecardError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=caller)
        thread.start()
        thread.join(5)
        release_quietly(channel)

    monkeypatch.setattr(telecard.card, "_release_quietly", clearing)
    tc.close()
    assert len(outcome) == 1 and isinstance(outcome[0], telecard.DeviceLostError)
    assert "closing" in str(outcome[0])
    assert len(sim.network.received) == 1
    result = sim.network.received[0].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)
