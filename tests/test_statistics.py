"""Card.statistics(): seizures and outcomes by direction, Cause and Q.850 value, and E.425's
ASR and NER, over the Card's life and its sliding window, on the simulated card (demo plan)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from firmware_sim import SimulatedCard, regmap
from telecard import Card, CardStatistics, Cause, Outcomes, State, TelecardError
from telecard import cli as telecard_cli
from telecard.statistics import WINDOW, WINDOW_STEPS
from tests.conftest import free


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def card(sim: SimulatedCard, clock: Clock) -> Iterator[Card]:
    with Card.open(sim.device_path, clock=clock) as card:
        yield card


def call(card: Card, number: str) -> None:
    with free(card) as channel:
        if channel.call(number) is State.ANSWERED:
            channel.hang_up()


def incoming(card: Card, sim: SimulatedCard, *, answer: bool) -> None:
    sim.network.place_call("2000", "3000", hold=0.05)
    channel = card.wait_for_incoming_call(5)
    assert channel is not None
    with channel:
        if answer:
            assert channel.answer() is State.ANSWERED
            assert channel.wait_for_idle(5) is State.IDLE  # the network clears after `hold`
        else:
            channel.reject(Cause.REJECTED)


def scripted_mix(card: Card, sim: SimulatedCard) -> None:
    """Outgoing: 2 answered, 3 busy, 1 congestion, 1 unallocated; incoming: 1 answered, 1
    rejected by this host (cause 21)."""
    for number in ("3302", "3301", "3302", "3301", "3304", "3301", "9999"):
        call(card, number)
    incoming(card, sim, answer=True)
    incoming(card, sim, answer=False)


def test_a_scripted_mix_gives_its_asr_and_ner(card: Card, sim: SimulatedCard) -> None:
    scripted_mix(card, sim)
    stats = card.statistics()
    assert isinstance(stats, CardStatistics) and stats.window == WINDOW
    (span,) = stats.spans
    assert span.span == 0 and stats.total.span is None

    out = span.outgoing
    assert out.attempts == 7
    # Effective: the answered calls and the busy ones (17); 42 and 1 are the network's.
    assert out.life == out.window == Outcomes(seizures=7, answered=2, effective=5)
    assert (out.life.asr, out.life.ner) == (2 / 7, 5 / 7)
    assert out.causes == {Cause.NORMAL: 2, Cause.BUSY: 3, Cause.CONGESTION: 1,
                          Cause.UNOBTAINABLE: 1}
    assert out.q850 == {1: 1, 16: 2, 17: 3, 42: 1}

    inc = span.incoming
    assert inc.attempts == 2
    assert inc.life == Outcomes(seizures=2, answered=1, effective=2)  # 21: a terminal reject
    assert inc.causes == {Cause.NORMAL: 1, Cause.REJECTED: 1}
    assert inc.q850 == {16: 1, 21: 1}

    both = span.total
    assert (both.attempts, both.life) == (9, Outcomes(seizures=9, answered=3, effective=7))
    assert (both.life.asr, both.life.ner) == (1 / 3, 7 / 9)
    assert both.q850 == {1: 1, 16: 3, 17: 3, 21: 1, 42: 1}
    assert stats.total.total == both and stats.total.incoming == inc


def test_calls_still_up_are_attempts_without_an_outcome(card: Card) -> None:
    with free(card) as channel:
        assert channel.call("3302") is State.ANSWERED
        up = card.statistics().total.outgoing
        assert (up.attempts, up.life.seizures, up.life.asr) == (1, 0, None)
    done = card.statistics().total.outgoing
    assert (done.attempts, done.life) == (1, Outcomes(seizures=1, answered=1, effective=1))


def test_a_refused_make_call_is_no_seizure(card: Card, sim: SimulatedCard) -> None:
    # The card itself refuses MAKE_CALL (a number the API rejects never reaches the card).
    command = sim.firmware.host_command

    def refusing(block: int, data: bytes) -> tuple[int, int, int]:
        if data[regmap.MBOX_CMD] == regmap.CMD_MAKE_CALL:
            return regmap.MB_ERR_STATE, 0, 0
        return command(block, data)

    sim.firmware.host_command = refusing  # type: ignore[method-assign]
    with free(card) as channel, pytest.raises(TelecardError, match="MAKE_CALL"):
        channel.call("3302")
    out = card.statistics().total.outgoing
    assert (out.attempts, out.life.seizures, out.window.seizures) == (0, 0, 0)


def test_the_window_drops_old_calls(card: Card, clock: Clock) -> None:
    step = WINDOW / WINDOW_STEPS
    clock.now = 100 * step  # the start of a step
    call(card, "3301")  # busy: effective, not answered
    clock.now += WINDOW / 2
    call(card, "3302")  # answered
    stats = card.statistics().total.outgoing
    assert stats.window == stats.life == Outcomes(seizures=2, answered=1, effective=2)

    clock.now = 100 * step + WINDOW  # the busy call's step has left the window
    stats = card.statistics().total.outgoing
    assert stats.window == Outcomes(seizures=1, answered=1, effective=1)
    assert stats.life == Outcomes(seizures=2, answered=1, effective=2)

    clock.now += WINDOW  # and so has the answered one's
    call(card, "3304")  # a step slot used again starts from nothing
    stats = card.statistics().total.outgoing
    assert stats.window == Outcomes(seizures=1, answered=0, effective=0)
    assert (stats.window.asr, stats.window.ner) == (0.0, 0.0)
    assert stats.life == Outcomes(seizures=3, answered=1, effective=2)

    clock.now += 10 * WINDOW
    assert card.statistics().total.outgoing.window.asr is None


def test_a_lost_card_ends_its_calls_with_error(card: Card, sim: SimulatedCard) -> None:
    channel = free(card)
    assert channel.call("3302") is State.ANSWERED
    sim.faults.vanish()
    assert channel.wait_for_idle(5) is State.ERROR
    out = card.statistics().spans[0].outgoing
    assert out.causes == {Cause.ERROR: 1} and out.q850 == {}
    assert out.life == Outcomes(seizures=1, answered=1, effective=1)  # it was answered


def test_status_json_shows_the_statistics(
    card: Card, sim: SimulatedCard, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripted_mix(card, sim)

    @contextlib.contextmanager
    def this_card(device: str | None, **kwargs: bool) -> Iterator[Card]:
        yield card

    monkeypatch.setattr(telecard_cli, "open_card", this_card)
    assert telecard_cli.main(["status", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["statistics"]
    assert stats["window"] == WINDOW
    (span,) = stats["spans"]
    assert span["outgoing"]["life"] == {
        "seizures": 7, "answered": 2, "effective": 5, "asr": 2 / 7, "ner": 5 / 7
    }
    assert span["outgoing"]["causes"] == {
        "NORMAL": 2, "BUSY": 3, "CONGESTION": 1, "UNOBTAINABLE": 1
    }
    assert span["outgoing"]["q850"] == {"1": 1, "16": 2, "17": 3, "42": 1}
    assert span["incoming"]["attempts"] == 2
    assert stats["total"]["span"] is None
    assert stats["total"]["total"]["life"]["ner"] == 7 / 9

    assert telecard_cli.main(["status"]) == 0
    text = capsys.readouterr().out
    assert "  outgoing: 7 attempt(s), 7 ended; ASR 28.6% NER 71.4%;" in text
    assert "    causes NORMAL 2, BUSY 3, CONGESTION 1, UNOBTAINABLE 1; Q.850 1: 1, 16: 2," in text
