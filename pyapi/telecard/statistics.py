"""Per-span call statistics for operators: seizures, outcomes by Cause and Q.850 value, and the
ITU-T E.425 ratios ASR and NER, over the Card's life and over a sliding window.

Definitions (docs/api.rst repeats them):

- A *seizure* (an attempt) is a call record opened on a channel by this Card: an outgoing call
  the card placed for MAKE_CALL, or an incoming call the card offered. A MAKE_CALL the card
  refused opens none; nor does a call that was already up when the Card opened (adopted).
- Its *outcome* is counted when its record closes, with the Cause and raw Q.850 value that
  `CallChannel.cause()` and `CallDetails.raw_cause` report. A call ended by a lost or reset
  card is an ERROR outcome with no value; the outgoing call that loses a glare is an outgoing
  seizure ending with cause 44 (or OTHER when the incoming call was seen first), and the
  incoming call that won it is an incoming seizure of its own.
- ASR = answered seizures / seizures; NER = (answered seizures + seizures ending with a value
  of USER_DETERMINED) / seizures. Both are over seizures whose outcome is known (calls still up
  are in `attempts` only), and None when there is none.
- The window holds the outcomes of the last WINDOW seconds (15 minutes) in whole steps of
  WINDOW / WINDOW_STEPS (one minute) of the clock: the current step and the 14 before it, in a
  ring of WINDOW_STEPS counters, so memory stays bounded whatever the call rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from .causes import Cause

USER_DETERMINED: Final = frozenset(
    {
        17,  # user busy
        18,  # no user responding: ring no answer, the terminal never alerted
        19,  # no answer from user (user alerted): ring no answer
        20,  # subscriber absent: terminal unavailable (detached, unreachable)
        21,  # call rejected: terminal reject
        27,  # destination out of order: terminal unavailable (its access is down)
    }
)
"""The Q.850 values E.425 counts as delivered calls in NER: the called user's (or terminal's)
behaviour, not the network's, failed the call."""

WINDOW: Final = 900.0
"""Length of the sliding window, in seconds (15 minutes)."""
WINDOW_STEPS: Final = 15
"""The window moves in steps of WINDOW / WINDOW_STEPS seconds (one minute)."""

_DIRECTIONS: Final = ("incoming", "outgoing")


@dataclass(frozen=True)
class Outcomes:
    """Seizures whose outcome is known, and the ratios E.425 draws from them."""

    seizures: int
    answered: int
    effective: int  # answered, or failed by the called user (USER_DETERMINED)

    @property
    def asr(self) -> float | None:
        """Answer-seizure ratio, answered / seizures (None without seizures)."""
        return self.answered / self.seizures if self.seizures else None

    @property
    def ner(self) -> float | None:
        """Network effectiveness ratio, effective / seizures (None without seizures)."""
        return self.effective / self.seizures if self.seizures else None


@dataclass(frozen=True)
class CallStatistics:
    """One direction's (or both directions') seizures and how they ended."""

    attempts: int  # seizures, calls still up included
    life: Outcomes  # since the Card opened
    window: Outcomes  # over the sliding window (WINDOW)
    causes: Mapping[Cause, int]  # outcomes by Cause
    q850: Mapping[int, int]  # outcomes by raw Q.850 value (those ended without one: none)


@dataclass(frozen=True)
class SpanStatistics:
    """A span's statistics by direction (`span` None: the whole card's)."""

    span: int | None
    incoming: CallStatistics
    outgoing: CallStatistics
    total: CallStatistics


@dataclass(frozen=True)
class CardStatistics:
    """Every span's statistics and the card's totals, as `Card.statistics()` returns them."""

    spans: tuple[SpanStatistics, ...]
    total: SpanStatistics
    window: float  # seconds


# An outcome as the counters key it: direction index (0 incoming, 1 outgoing), Cause, raw
# Q.850 value, answered. Every figure is a sum over these, so a close is one increment.
_Key = tuple[int, Cause, "int | None", bool]


class SpanCounters:
    """The counters of one span, which its channels update as call records open and close.

    `clock` gives the monotonic seconds the window follows (`time.monotonic`; tests pass their
    own). Each update is O(1): a few increments under this span's lock. Outcomes are counted
    by (direction, Cause, Q.850 value, answered), of which there are a bounded number.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._attempts = [0, 0]  # by direction index: incoming, outgoing
        self._life: dict[_Key, int] = {}
        # A ring of steps: [step number, the outcomes of that step].
        self._ring: list[tuple[int, dict[_Key, int]]] = [(-1, {}) for _ in range(WINDOW_STEPS)]

    def opened(self, incoming: bool) -> None:
        """A seizure: a call record opened."""
        with self._lock:
            self._attempts[not incoming] += 1

    def closed(self, incoming: bool, cause: Cause, raw: int | None, answered: bool) -> None:
        """A seizure's record closed with `cause` (raw value `raw`); `answered` if it was."""
        key = (0 if incoming else 1, cause, raw, answered)
        step = int(self._clock() // _STEP)
        with self._lock:
            life = self._life
            life[key] = life.get(key, 0) + 1
            at, counts = self._ring[step % WINDOW_STEPS]
            if at != step:
                counts = {}
                self._ring[step % WINDOW_STEPS] = (step, counts)
            counts[key] = counts.get(key, 0) + 1

    def snapshot(self, span: int) -> SpanStatistics:
        """The counters now, as span `span`'s statistics."""
        step = int(self._clock() // _STEP)
        with self._lock:
            attempts = list(self._attempts)
            life = dict(self._life)
            window: dict[_Key, int] = {}
            for at, counts in self._ring:
                if step - WINDOW_STEPS < at <= step:
                    for key, n in counts.items():
                        window[key] = window.get(key, 0) + n
        incoming, outgoing = (_direction(attempts[d], life, window, d) for d in (0, 1))
        return SpanStatistics(span, incoming, outgoing, _sum((incoming, outgoing)))


_STEP: Final = WINDOW / WINDOW_STEPS


def _outcomes(counts: dict[_Key, int], d: int) -> Outcomes:
    """Direction `d`'s seizures, answered and effective (E.425) among `counts`."""
    seizures = answered = effective = 0
    for (direction, _, raw, was_answered), n in counts.items():
        if direction == d:
            seizures += n
            answered += n if was_answered else 0
            effective += n if was_answered or raw in USER_DETERMINED else 0
    return Outcomes(seizures, answered, effective)


def _direction(
    attempts: int, life: dict[_Key, int], window: dict[_Key, int], d: int
) -> CallStatistics:
    """Direction `d`'s statistics from the outcome counts over life and the window."""
    causes: dict[Cause, int] = {}
    values: dict[int, int] = {}
    for (direction, cause, raw, _), n in life.items():
        if direction == d:
            causes[cause] = causes.get(cause, 0) + n
            if raw is not None:
                values[raw] = values.get(raw, 0) + n
    return CallStatistics(
        attempts,
        _outcomes(life, d),
        _outcomes(window, d),
        MappingProxyType(causes),
        MappingProxyType(dict(sorted(values.items()))),
    )


def card_statistics(spans: tuple[SpanStatistics, ...]) -> CardStatistics:
    """The card's statistics from its spans', with the totals over them."""
    total = SpanStatistics(
        None,
        _sum(s.incoming for s in spans),
        _sum(s.outgoing for s in spans),
        _sum(s.total for s in spans),
    )
    return CardStatistics(spans, total, WINDOW)


def _sum(parts: Iterable[CallStatistics]) -> CallStatistics:
    """The statistics of `parts` added up (Q.850 values in order)."""
    attempts = 0
    life = [0, 0, 0]
    window = [0, 0, 0]
    causes: dict[Cause, int] = {}
    values: dict[int, int] = {}
    for part in parts:
        attempts += part.attempts
        for into, outcomes in ((life, part.life), (window, part.window)):
            into[0] += outcomes.seizures
            into[1] += outcomes.answered
            into[2] += outcomes.effective
        for cause, n in part.causes.items():
            causes[cause] = causes.get(cause, 0) + n
        for value, n in part.q850.items():
            values[value] = values.get(value, 0) + n
    return CallStatistics(
        attempts,
        Outcomes(*life),
        Outcomes(*window),
        MappingProxyType(causes),
        MappingProxyType(dict(sorted(values.items()))),
    )
