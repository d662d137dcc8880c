"""Behaviour both faces share: each test runs through the threaded API (`Card`) and through
telecard.aio (its loop in debug mode, failing the test on a slow callback), driven by the
same blocking calls (see aio_faces)."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import telecard
import telecard.aio
from firmware_sim import SimulatedCard
from firmware_sim.network import Answer, Busy, Congestion, NoAnswer, Reject
from telecard import Cause, State
from tests.aio_faces import Face, open_face
from tests.conftest import free

LOC_USER = 0
LOC_PUBLIC_LOCAL = 2
LOC_PUBLIC_REMOTE = 4


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest, sim: SimulatedCard) -> Iterator[Face]:
    """A card on `sim`, driven through the threaded or the asyncio face."""
    opened = open_face(request.param, sim.device_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def tc(face: Face) -> Any:
    """The face's card (conftest's `tc`, through either face)."""
    return face.card


# (outcome routed for the number, Cause, raw cause, location, who sent it)
OUTCOMES = [
    (Busy(), Cause.BUSY, 17, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(26), Cause.NORMAL, 26, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(31, stage="alerting"), Cause.NORMAL, 31, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(19, stage="alerting"), Cause.NOANSWER, 19, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(18, stage="proceeding"), Cause.NOANSWER, 18, LOC_PUBLIC_REMOTE, "remote"),
    (None, Cause.UNOBTAINABLE, 1, LOC_PUBLIC_LOCAL, "remote"),  # unrouted
    (Reject(28, location=3), Cause.UNOBTAINABLE, 28, 3, "remote"),
    (Reject(22), Cause.CHANGED, 22, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(27), Cause.OUTOFORDER, 27, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(41, stage="inband"), Cause.OUTOFORDER, 41, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(54), Cause.BARRED, 54, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(21), Cause.REJECTED, 21, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(34), Cause.NOCHANNELS, 34, LOC_PUBLIC_REMOTE, "remote"),
    (Congestion(), Cause.CONGESTION, 42, LOC_PUBLIC_LOCAL, "remote"),
    (Reject(47), Cause.CONGESTION, 47, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(102, diagnostic=b"301"), Cause.TIMEOUT, 102, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(111), Cause.FAILED, 111, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(4, stage="alerting"), Cause.FAILED, 4, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(0), Cause.OTHER, 0, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(77), Cause.OTHER, 77, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(17, coding_standard=2), Cause.OTHER, 17, LOC_PUBLIC_REMOTE, "remote"),
    (Reject(16, coding_standard=3), Cause.OTHER, 16, LOC_PUBLIC_REMOTE, "remote"),
]


@pytest.mark.parametrize(
    ("outcome", "cause", "raw", "location", "source"),
    OUTCOMES,
    ids=[f"{c.name}-{r}-cs{getattr(o, 'coding_standard', 0)}" for o, c, r, _, _ in OUTCOMES],
)
def test_every_network_cause(
    sim: SimulatedCard,
    tc: Any,
    outcome: Reject | None,
    cause: Cause,
    raw: int,
    location: int,
    source: str,
) -> None:
    if outcome is not None:
        sim.network.route("5000", outcome)
    channel = free(tc)
    assert channel.cause() is Cause.NORMAL
    state = channel.call("5000", "6000", seconds_timeout=5)
    assert state is State.IDLE
    assert channel.state() is State.IDLE
    assert channel.cause() is cause
    d = channel.details
    assert (d.raw_cause, d.cause_location, d.cause_source) == (raw, location, source)
    assert (d.call_to, d.call_from, d.direction) == ("5000", "6000", "outgoing")
    assert d.started is not None and d.ended is not None and d.answered is None
    if outcome is not None:
        assert d.cause_coding_standard == outcome.coding_standard
        assert d.cause_diagnostic == outcome.diagnostic


def test_answered_then_network_clears_normal(sim: SimulatedCard, tc: Any) -> None:
    sim.network.route("5001", Answer(after=0.05, hold=0.1))
    channel = free(tc)
    assert channel.call("5001") is State.ANSWERED
    assert channel.cause() is Cause.NORMAL  # NORMAL while a call is up
    assert channel.details.answered is not None
    assert channel.wait_for_idle(5) is State.IDLE
    assert channel.cause() is Cause.NORMAL
    assert (channel.details.raw_cause, channel.details.cause_source) == (16, "remote")


def test_hang_up_answered_call_sends_normal(sim: SimulatedCard, tc: Any) -> None:
    channel = free(tc)
    assert channel.call("3302") is State.ANSWERED
    assert channel.hang_up() is State.IDLE
    assert channel.cause() is Cause.NORMAL
    d = channel.details
    assert (d.raw_cause, d.cause_location, d.cause_source) == (16, LOC_USER, "local")
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)


def test_call_timeout_clears_with_102(sim: SimulatedCard, tc: Any) -> None:
    channel = free(tc)
    started = time.monotonic()
    assert channel.call("3303", seconds_timeout=0.3) is State.IDLE
    assert 0.3 <= time.monotonic() - started < 3
    assert channel.cause() is Cause.TIMEOUT
    assert (channel.details.raw_cause, channel.details.cause_source) == (102, "local")
    result = sim.network.received[-1].wait(5)
    assert result.alerted and not result.answered
    assert (result.cleared_by, result.cause, result.location) == ("card", 102, LOC_USER)


def test_incoming_call_rung_and_answered(sim: SimulatedCard, tc: Any) -> None:
    handle = sim.network.place_call("100", "200")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    assert channel.state() is State.CALL_INCOMING
    d = channel.details
    assert (d.direction, d.call_to, d.call_from) == ("incoming", "100", "200")
    assert channel.ring() is State.RING_INCOMING
    assert handle.wait(5, until="alerted").alerted
    assert channel.answer() is State.ANSWERED
    assert handle.wait(5, until="answered").answered
    handle.clear(16)
    assert channel.wait_for_idle(5) is State.IDLE
    assert channel.cause() is Cause.NORMAL
    assert (channel.details.raw_cause, channel.details.cause_source) == (16, "remote")


def test_incoming_answered_then_hung_up(sim: SimulatedCard, tc: Any) -> None:
    handle = sim.network.place_call("100")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    assert channel.answer() is State.ANSWERED
    assert channel.hang_up() is State.IDLE
    assert (handle.wait(5).cleared_by, handle.result.cause) == ("card", 16)


REJECTS = [
    (None, None, 21, Cause.REJECTED),
    (Cause.BUSY, None, 17, Cause.BUSY),
    (Cause.NOANSWER, None, 19, Cause.NOANSWER),
    (Cause.UNOBTAINABLE, None, 1, Cause.UNOBTAINABLE),
    (Cause.CHANGED, None, 22, Cause.CHANGED),
    (Cause.OUTOFORDER, None, 27, Cause.OUTOFORDER),
    (Cause.BARRED, None, 54, Cause.BARRED),
    (Cause.REJECTED, None, 21, Cause.REJECTED),
    (Cause.NOCHANNELS, None, 34, Cause.NOCHANNELS),
    (Cause.CONGESTION, None, 42, Cause.CONGESTION),
    (None, 88, 88, Cause.FAILED),
    (Cause.BUSY, 3, 3, Cause.UNOBTAINABLE),
]


@pytest.mark.parametrize("ring_first", [False, True])
@pytest.mark.parametrize(("cause", "raw", "sent", "expected"), REJECTS)
def test_incoming_rejected(
    sim: SimulatedCard,
    tc: Any,
    cause: Cause | None,
    raw: int | None,
    sent: int,
    expected: Cause,
    ring_first: bool,
) -> None:
    handle = sim.network.place_call("100", "200")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    if ring_first:
        channel.ring()
        handle.wait(5, until="alerted")
    assert channel.reject(cause, raw_cause=raw) is State.IDLE
    assert channel.cause() is expected
    d = channel.details
    assert (d.raw_cause, d.cause_location, d.cause_source) == (sent, LOC_USER, "local")
    result = handle.wait(5)
    assert (result.cleared_by, result.cause, result.location) == ("card", sent, LOC_USER)


def test_caller_clears_before_answer(sim: SimulatedCard, tc: Any) -> None:
    handle = sim.network.place_call("100")
    channel = tc.wait_for_incoming_call(5)
    assert channel is not None
    channel.ring()
    handle.clear(16)
    assert channel.wait_for_idle(5) is State.IDLE
    assert channel.cause() is Cause.NORMAL
    with pytest.raises(telecard.InvalidStateError):
        channel.answer()


def test_wait_for_incoming_call_times_out(tc: Any) -> None:
    started = time.monotonic()
    assert tc.wait_for_incoming_call(0.2) is None
    assert time.monotonic() - started >= 0.2


def test_device_lost_gives_error(sim: SimulatedCard, tc: Any) -> None:
    channel = free(tc)
    idle = tc.channel(0, 31)
    result: list[State] = []
    caller = threading.Thread(
        target=lambda: result.append(channel.call("3303", seconds_timeout=30))
    )
    caller.start()
    deadline = time.monotonic() + 5
    while channel.state() is not State.RING_OUTGOING and time.monotonic() < deadline:
        time.sleep(0.005)
    sim.faults.vanish()
    caller.join(5)
    assert result == [State.ERROR]
    assert channel.state() is State.ERROR and channel.cause() is Cause.ERROR
    assert channel.details.raw_cause is None
    assert idle.state() is State.ERROR
    with pytest.raises(telecard.DeviceLostError):
        idle.call("3301")
    with pytest.raises(telecard.DeviceLostError):
        tc.wait_for_incoming_call(0.1)


def test_free_channel_hunts_ascending_and_reserves_on_the_card(face: Face, tc: Any) -> None:
    first, second = free(tc), free(tc)
    assert (first.number, second.number) == (1, 2)
    assert first.owned and face.sync.device.read_channel(0, 1).owned
    first.release()
    assert not first.owned and not face.sync.device.read_channel(0, 1).owned
    assert free(tc) is first  # the lowest free channel again
    second.release()


def test_with_block_releases_and_clears(sim: SimulatedCard, tc: Any) -> None:
    with free(tc) as channel:
        assert channel.call("3302") is State.ANSWERED
    assert not channel.owned and channel.state() is State.IDLE
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)


def test_reserved_channel_refuses_an_exclusive_setup_with_44(
    sim: SimulatedCard, tc: Any
) -> None:
    channel = tc.channel(0, 7)
    channel.reserve()
    handle = sim.network.place_call("100", timeslot=7)
    result = handle.wait(5)
    assert (result.cleared_by, result.cause) == ("card", 44)
    assert tc.wait_for_incoming_call(0.2) is None
    channel.release()
    handle = sim.network.place_call("100", timeslot=7)
    taken = tc.wait_for_incoming_call(5)
    assert taken is channel and taken.owned
    assert taken.answer() is State.ANSWERED
    taken.release()
    assert handle.wait(5).cause == 16


def test_answered_and_cleared_before_call_returns(sim: SimulatedCard, tc: Any) -> None:
    """Answered, then cleared by the network at once: IDLE with `answered` set, or ANSWERED
    and then IDLE; either way the call is reported as answered and NORMAL."""
    sim.network.route("5000", Answer(hold=0))
    for _ in range(20):
        with free(tc) as channel:
            state = channel.call("5000")
            if state is State.ANSWERED:
                state = channel.wait_for_idle(5)
            assert state is State.IDLE
            d = channel.details
            assert d.answered is not None and d.ended is not None and d.answered <= d.ended
            assert (channel.cause(), d.raw_cause, d.cause_source) == (Cause.NORMAL, 16, "remote")


def test_close_clears_every_call(sim: SimulatedCard, face: Face) -> None:
    card = face.card
    free(card).call("3302")
    offered = sim.network.place_call("100")
    incoming = card.wait_for_incoming_call(5)
    assert incoming is not None and incoming.answer() is State.ANSWERED
    face.close()
    results = [h.wait(5) for h in (*sim.network.received, offered)]
    assert [(r.cleared_by, r.cause) for r in results] == [("card", 16), ("card", 16)]


def test_the_async_channel_offers_every_public_name_of_the_threaded_one() -> None:
    public = {name for name in dir(telecard.CallChannel) if not name.startswith("_")}
    assert public - set(dir(telecard.aio.AsyncCallChannel)) == set()


def test_overlap_sending_then_waiting_for_the_answer(sim: SimulatedCard, tc: Any) -> None:
    sim.network.route("0301234", Answer())
    channel = free(tc)
    assert channel.start_call("03", "42", sending_complete=False) is State.CALL_OUTGOING
    channel.send_digits("012")
    channel.send_digits("34", sending_complete=True)
    assert channel.wait_for_answer(10) is State.ANSWERED
    assert channel.details.call_to == channel.details.called_number.digits == "0301234"
    assert sim.network.received[-1].result.called == "0301234"
    assert channel.hang_up() is State.IDLE


def test_aio_open_takes_the_arguments_of_card_open() -> None:
    """aio.open repeats Card.open's keywords (typed, for the reader): none may go missing."""
    threaded = inspect.signature(telecard.Card.open).parameters
    asyncio_face = dict(inspect.signature(telecard.aio.open).parameters)
    del asyncio_face["workers"]
    assert [(p.name, p.default) for p in asyncio_face.values()] == [
        (p.name, p.default) for p in threaded.values()
    ]


@pytest.mark.parametrize("name", ["sync", "async"])
def test_a_call_whose_make_call_response_is_lost_is_found_on_the_card(
    sim: SimulatedCard, name: str
) -> None:
    """A frame the card sends after MAKE_CALL is lost (its response, or the events that came
    with it) on a link without retries: the call the card placed is the caller's all the same
    (its registers read back), and hang_up() clears it on the card (review finding: the
    updates held back during MAKE_CALL, applied before the registers were read, made the
    call look like an older one: LinkTimeoutError, the host IDLE, the call left up)."""
    face = open_face(name, sim.device_path, timeout=0.2, retries=0)
    try:
        channel = face.card.channel(0, 4)
        for attempt in range(4):
            sim.faults.drop(1)
            assert channel.start_call("3302") in (State.CALL_OUTGOING, State.ANSWERED)
            assert channel.wait_for_answer(5) is State.ANSWERED
            assert channel.hang_up() is State.IDLE
            result = sim.network.received[attempt].wait(5)
            assert (result.cleared_by, result.cause) == ("card", 16)
    finally:
        face.close()


@pytest.mark.parametrize("name", ["sync", "async"])
@pytest.mark.parametrize("clearing", ["hang_up", "close"])
def test_a_call_whose_make_call_failed_on_the_link_is_cleared(
    sim: SimulatedCard, name: str, clearing: str
) -> None:
    """MAKE_CALL's response lost on a link without retries, the channel hung up (or the card
    closed) while the caller waits: the call the card placed is found and cleared (cause 16),
    not left up (review finding: the clearing ran between MAKE_CALL's failure and the reading
    of the registers that finds the call, saw no call and, closing, turned the watchdog off)."""
    sim.network.route("5000", NoAnswer())
    face = open_face(name, sim.device_path, timeout=0.2, retries=0, watchdog=2.0)
    try:
        warm = face.card.channel(0, 2)  # the card's first call: frames the drop would hit
        assert warm.call("3302") is State.ANSWERED
        assert warm.hang_up() is State.IDLE
        channel = face.card.channel(0, 1)
        placed = len(sim.network.received)
        outcome: list[object] = []

        def caller() -> None:
            try:
                outcome.append(channel.call("5000", seconds_timeout=10))
            except telecard.TelecardError as exc:
                outcome.append(exc)

        sim.faults.drop(1)
        thread = threading.Thread(target=caller)
        thread.start()
        time.sleep(0.05)
        if clearing == "close":
            face.close()
        else:
            channel.hang_up()
        thread.join(10)
        assert outcome and not thread.is_alive()
        result = sim.network.received[placed].wait(1.5)  # before the watchdog's 2 s
        assert (result.cleared_by, result.cause) == ("card", 16)
    finally:
        face.close()
