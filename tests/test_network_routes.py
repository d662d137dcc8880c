"""Routes that move: an outcome, a sequence (one per attempt, the last repeating) or a function
of (called, calling, attempt); subclasses of outcomes dispatch as their base class."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.network import (
    ROUTE_FAILED,
    Answer,
    Busy,
    Congestion,
    NoAnswer,
    Outcome,
    OutcomeError,
    RawCause,
    Reject,
    make_outcome,
)
from telecard import Card
from tests.conftest import free


@pytest.fixture
def sim() -> Iterator[SimulatedCard]:
    """A one-span E1 card with no routes (conftest's `tc` opens a Card on it)."""
    with SimulatedCard(timers={"T303": 0.2}) as card:
        yield card


def dial_until_answered(card: Card, number: str, tries: int) -> tuple[int, list[int]]:
    """A retrying dialer: the attempt that was answered, and the cause of each failed one."""
    causes = []
    for attempt in range(1, tries + 1):
        with free(card) as channel:
            if channel.call(number) == channel.State.ANSWERED:
                channel.hang_up()
                return attempt, causes
            causes.append(channel.details.raw_cause)
    raise AssertionError(f"never answered: {causes}")


def test_sequence_route_is_busy_once_then_answers(sim: SimulatedCard, tc: Card) -> None:
    sim.network.route("5000", [Busy(), Answer()])
    assert dial_until_answered(tc, "5000", 3) == (2, [17])
    # the last outcome repeats
    assert dial_until_answered(tc, "5000", 1) == (1, [])
    assert sim.network.attempts("5000") == 3
    results = [h.wait() for h in sim.network.wait_received(3)]
    assert [(r.answered, r.cause) for r in results] == [(False, 17), (True, 16), (True, 16)]


def test_route_again_starts_counting_again(sim: SimulatedCard, tc: Card) -> None:
    sim.network.route("5000", (Busy(), Answer()))
    assert dial_until_answered(tc, "5000", 3) == (2, [17])
    sim.network.route("5000", [Reject(34), Busy(), Answer()])
    assert dial_until_answered(tc, "5000", 3) == (3, [34, 17])


def test_sequence_is_copied(sim: SimulatedCard, tc: Card) -> None:
    steps: list[Outcome] = [Busy()]
    sim.network.route("5000", steps)
    steps[0] = Answer()
    assert sim.network.lookup("5000") == (Busy(),)


def test_callable_route_sees_called_calling_and_attempt(sim: SimulatedCard, tc: Card) -> None:
    seen = []

    def route(called: str, calling: str, attempt: int) -> Outcome:
        seen.append((called, calling, attempt))
        return Answer() if calling == "777" else Reject(21)

    sim.network.route("6000", route)
    with free(tc) as channel:
        assert channel.call("6000", "111") == channel.State.IDLE
        assert channel.details.raw_cause == 21
    with free(tc) as channel:
        assert channel.call("6000", "777") == channel.State.ANSWERED
        channel.hang_up()
    assert seen == [("6000", "111", 1), ("6000", "777", 2)]


def test_a_failing_route_function_costs_its_call_cause_41(sim: SimulatedCard, tc: Card) -> None:
    def broken(called: str, calling: str, attempt: int) -> Outcome:
        raise RuntimeError("script bug")

    sim.network.route("6001", broken)
    sim.network.route("6002", lambda called, calling, attempt: "busy")  # type: ignore[arg-type,return-value]
    for number in ("6001", "6002"):
        with free(tc) as channel:
            channel.call(number)
            assert channel.details.raw_cause == ROUTE_FAILED.cause
    first, second = (h.wait() for h in sim.network.wait_received(2))
    assert first.error is not None and "script bug" in first.error
    assert second.error is not None and "'busy'" in second.error
    assert sim.network.link_up(0)  # the card's loop survived


@dataclass(frozen=True, slots=True)
class Unobtainable(Reject):
    """A project's own outcome: a Reject with a fixed cause."""

    cause: int = 1


@dataclass(frozen=True, slots=True)
class SlowAnswer(Answer):
    """An Answer with another default delay."""

    after: float = 0.05


class Ringing(NoAnswer):
    """NoAnswer under another name."""


def test_subclasses_dispatch_as_their_base(sim: SimulatedCard, tc: Card) -> None:
    sim.network.route("7001", Unobtainable())
    sim.network.route("7002", SlowAnswer())
    sim.network.route("7003", [Ringing()])
    with free(tc) as channel:
        channel.call("7001")
        assert channel.details.raw_cause == 1
    with free(tc) as channel:
        assert channel.call("7002") == channel.State.ANSWERED
        channel.hang_up()
    with free(tc) as channel:
        channel.start_call("7003")
        (_, _, ringing) = sim.network.wait_received(3)
        assert ringing.wait(until="alerted").alerted
        channel.hang_up()
        result = ringing.wait()
    assert (result.answered, result.cleared_by) == (False, "card")


@pytest.mark.parametrize(
    ("route", "error"),
    [
        ([], ValueError),
        ([Busy(), "busy"], TypeError),
        ("busy", TypeError),
        (17, TypeError),
    ],
)
def test_bad_routes_are_refused(sim: SimulatedCard, route: object, error: type) -> None:
    with pytest.raises(error):
        sim.network.route("8000", route)  # type: ignore[arg-type]
    assert sim.network.lookup("8000") == sim.network.default


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: Answer(after=float("nan")), ValueError),
        (lambda: Answer(after=float("inf")), ValueError),
        (lambda: Answer(after=-1), ValueError),
        (lambda: Answer(after="1"), TypeError),  # type: ignore[arg-type]
        (lambda: Answer(hold=float("inf")), ValueError),
        (lambda: Answer(overlap=1), TypeError),  # type: ignore[arg-type]
        (lambda: Reject(128), ValueError),
        (lambda: Reject(17.0), TypeError),  # type: ignore[arg-type]
        (lambda: Reject(True), TypeError),
        (lambda: Reject(17, location=16), ValueError),
        (lambda: Reject(17, diagnostic="ab"), TypeError),  # type: ignore[arg-type]
        (lambda: Reject(17, diagnostic=bytes(254)), ValueError),
        (lambda: Reject(17, stage="ringing"), ValueError),  # type: ignore[arg-type]
        (lambda: RawCause("8190"), TypeError),  # type: ignore[arg-type]
        (lambda: RawCause(bytes(256)), ValueError),
    ],
)
def test_malformed_outcomes_are_refused_when_made(build: Any, error: type[Exception]) -> None:
    """Refused at construction, before a route hands them to the card's loop."""
    with pytest.raises(error):
        build()
    assert Reject(17, diagnostic=bytes(253)).body()[2:] == bytes(253)


def test_one_vocabulary_of_outcome_names() -> None:
    assert make_outcome("Busy", {}) == Busy()
    assert make_outcome("Congestion", {"stage": "alerting"}) == Congestion("alerting")
    assert make_outcome("Reject", {"cause": 17, "diagnostic": "0a"}) == Reject(17, diagnostic=b"\n")
    assert make_outcome("RawCause", {}) == RawCause(None)
    assert make_outcome("Answer", {"after": 1}) == Answer(after=1.0)
    with pytest.raises(OutcomeError) as info:
        make_outcome("Answer", {"after": float("nan")})
    assert info.value.param == "after"
