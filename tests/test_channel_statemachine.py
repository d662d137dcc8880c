"""Channels driven in random order (calls, answers, rejects, hang-ups, far-end clears)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from firmware_sim.demo_plan import simulated_card
from telecard import CallChannel, Card, Cause, InvalidStateError, State

TIMESLOTS = (1, 2, 3)
NUMBERS = ("3301", "3302", "3303", "3304", "9999")
# Once a call has ended, its Cause can only be one of the outcomes these operations produce.
POSSIBLE = {
    Cause.NORMAL, Cause.BUSY, Cause.CONGESTION, Cause.UNOBTAINABLE, Cause.TIMEOUT,
    Cause.REJECTED, Cause.NOANSWER,
}


class Channels(RuleBasedStateMachine):
    @initialize()
    def open_card(self) -> None:
        self.sim = simulated_card()
        self.card = Card.open(self.sim.device_path)
        # call identity (channel, started) -> (cause, raw cause) once ended
        self.endings: dict[tuple[int, float], tuple[Cause, int | None]] = {}

    def teardown(self) -> None:
        if not hasattr(self, "card"):
            return
        try:
            for ts in TIMESLOTS:
                channel = self.card.channel(0, ts)
                # Never stuck: every call can be cleared and the channel comes back to IDLE.
                assert channel.hang_up() is State.IDLE
                assert channel.wait_for_idle(5) is State.IDLE
            self.check_causes()
        finally:
            self.card.close()
            self.sim.close()

    def ch(self, ts: int) -> CallChannel:
        return self.card.channel(0, ts)

    @rule(ts=st.sampled_from(TIMESLOTS), number=st.sampled_from(NUMBERS))
    def start_call(self, ts: int, number: str) -> None:
        channel = self.ch(ts)
        if channel.state() is State.IDLE:
            try:
                channel.start_call(number)
            except InvalidStateError:
                pass  # an incoming call took the channel first
        else:
            try:
                channel.call(number)
            except InvalidStateError:
                return
            raise AssertionError("call() on a busy channel did not raise")

    @rule(ts=st.sampled_from(TIMESLOTS), number=st.sampled_from(NUMBERS))
    def blocking_call(self, ts: int, number: str) -> None:
        channel = self.ch(ts)
        try:
            state = channel.call(number, seconds_timeout=0.2)
        except InvalidStateError:
            return
        assert state in (State.ANSWERED, State.IDLE)
        if state is State.IDLE:
            assert channel.cause() in POSSIBLE | {Cause.OTHER}

    @rule(ts=st.sampled_from(TIMESLOTS))
    def incoming(self, ts: int) -> None:
        self.sim.network.place_call("100", "200", timeslot=ts)

    @rule(ts=st.sampled_from(TIMESLOTS), ring=st.booleans())
    def answer(self, ts: int, ring: bool) -> None:
        channel = self.ch(ts)
        try:
            if ring:
                channel.ring()
            state = channel.answer()
        except InvalidStateError:
            return
        assert state in (State.ANSWERED, State.IDLE)

    @rule(ts=st.sampled_from(TIMESLOTS), cause=st.sampled_from([None, Cause.BUSY]))
    def reject(self, ts: int, cause: Cause | None) -> None:
        channel = self.ch(ts)
        try:
            state = channel.reject(cause)
        except InvalidStateError:
            return
        assert state is State.IDLE

    @rule(ts=st.sampled_from(TIMESLOTS))
    def hang_up(self, ts: int) -> None:
        assert self.ch(ts).hang_up() is State.IDLE

    @rule(ts=st.sampled_from(TIMESLOTS))
    def far_end_clears(self, ts: int) -> None:
        self.sim.network.clear(0, ts)

    @precondition(lambda self: hasattr(self, "card"))
    @invariant()
    def states_are_states(self) -> None:
        for ts in TIMESLOTS:
            assert isinstance(self.ch(ts).state(), State)
            assert self.ch(ts).state() is not State.ERROR

    @precondition(lambda self: hasattr(self, "card"))
    @invariant()
    def one_clearing_cause_per_call(self) -> None:
        self.check_causes()

    def check_causes(self) -> None:
        for ts in TIMESLOTS:
            channel = self.ch(ts)
            with channel._lock:  # state, cause and details of one moment
                state, cause, d = channel._state, channel._cause, channel._details
            if d.started is None:
                continue
            if state is not State.IDLE:
                assert cause is Cause.NORMAL and d.ended is None
                continue
            assert d.ended is not None
            # Even when the next call has already reset the cause registers: the card posts
            # each clearing with a snapshot of them.
            assert cause in POSSIBLE and d.raw_cause is not None
            key = (ts, d.started)
            ending = (cause, d.raw_cause)
            assert self.endings.setdefault(key, ending) == ending


Channels.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestChannels = Channels.TestCase
