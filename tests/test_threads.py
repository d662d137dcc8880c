"""Many channels used from many threads at once, outgoing and incoming together."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.demo_plan import simulated_card
from firmware_sim.network import Answer
from telecard import CallChannel, Card, Cause, State

EXPECTED = {"3301": Cause.BUSY, "3304": Cause.CONGESTION, "9999": Cause.UNOBTAINABLE}


@pytest.fixture
def sim() -> Iterator[SimulatedCard]:
    with simulated_card(spans=2) as card:
        card.network.route("3305", Answer(hold=0.02))
        yield card


def test_thread_per_channel(sim: SimulatedCard) -> None:
    """A thread per channel (the common server pattern), 50 channels, 8 calls each."""
    errors: list[BaseException] = []
    outcomes: list[tuple[str, State, Cause, int | None]] = []
    lock = threading.Lock()
    numbers = ["3301", "3302", "3304", "9999", "3305"]

    def worker(channel: CallChannel, index: int) -> None:
        try:
            channel.reserve()
            with channel:
                for i in range(8):
                    number = numbers[(index + i) % len(numbers)]
                    state = channel.call(number, call_from=str(index), seconds_timeout=10)
                    if number == "3302":
                        assert state is State.ANSWERED
                        state = channel.hang_up()
                    elif number == "3305":
                        # Answered, then cleared by the network at once: ANSWERED while it
                        # is up, or already IDLE (answered, then cleared) when call() returns.
                        assert state in (State.ANSWERED, State.IDLE)
                        if state is State.ANSWERED:
                            state = channel.wait_for_idle(10)
                        assert channel.details.answered is not None
                    d = channel.details
                    with lock:
                        outcomes.append((number, state, channel.cause(), d.raw_cause))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with Card.open(sim.device_path) as card:
        channels = [c for c in card.channels() if c.number not in (29, 30, 31)][:50]
        threads = [
            threading.Thread(target=worker, args=(c, i)) for i, c in enumerate(channels)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(outcomes) == 50 * 8
        for number, state, cause, raw in outcomes:
            assert state is State.IDLE
            if number in ("3302", "3305"):
                assert (cause, raw) == (Cause.NORMAL, 16)
            else:
                assert cause is EXPECTED[number]
        assert all(c.state() is State.IDLE and not c.owned for c in card.channels())


def test_incoming_and_outgoing_from_many_threads(sim: SimulatedCard) -> None:
    """Acceptor threads share card.wait_for_incoming_call() while callers place calls."""
    incoming = 28  # span 0 has 30 channels
    handled: list[tuple[int, int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    with Card.open(sim.device_path) as card:

        def acceptor(index: int) -> None:
            try:
                while not stop.is_set():
                    channel = card.wait_for_incoming_call(0.1)
                    if channel is None:
                        continue
                    with channel:  # the taker owns the channel until it releases it
                        assert channel.owned
                        who = channel.details.call_from
                        if int(who) % 2:
                            assert channel.reject(Cause.BUSY) is State.IDLE
                        else:
                            assert channel.answer() is State.ANSWERED
                            assert channel.hang_up() is State.IDLE
                    with lock:
                        handled.append((channel.span, channel.number, who))
            except BaseException as exc:
                errors.append(exc)

        def caller(channel: CallChannel) -> None:
            try:
                for _ in range(5):
                    channel.call("3301", seconds_timeout=10)
                    assert channel.cause() is Cause.BUSY
            except BaseException as exc:
                errors.append(exc)

        acceptors = [threading.Thread(target=acceptor, args=(i,)) for i in range(6)]
        callers = [threading.Thread(target=caller, args=(c,)) for c in card.channels(1)[:10]]
        for t in acceptors + callers:
            t.start()
        # A channel each: hunting, the network would reuse a channel as soon as its own side
        # is idle, which an acceptor may still own (44), or the card may not have freed (6).
        slots = [c.number for c in card.channels(0)]
        handles = [
            sim.network.place_call("100", str(i), span=0, timeslot=slots[i])
            for i in range(incoming)
        ]
        results = [h.wait(20) for h in handles]
        for t in callers:
            t.join(30)
        stop.set()
        for t in acceptors:
            t.join(10)
        assert errors == []
        assert not any(c.owned for c in card.channels())
        taken = sorted(int(w) for _, _, w in handled)
        assert taken == list(range(incoming)), [
            (i, results[i]) for i in range(incoming) if i not in taken
        ]
        for i, result in enumerate(results):
            assert result.cleared and result.error is None
            if i % 2:
                assert (result.answered, result.cause) == (False, 17)
            else:
                assert (result.answered, result.cause) == (True, 16)
