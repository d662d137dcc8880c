"""The card's events as the application sees them: typed `Event`s, and `EventReader`, the queue
that `Card.events()` feeds.

An `Event` is built from the driver's record (`telecard.device.Event`) as it is handed out, and
only while someone listens: with no listener the event pump builds none.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from . import device, q850
from ._cdriver import lib
from ._wake import WakingCondition
from .causes import Cause
from .registers import CardState, ChannelBlock, EventCode, MailboxStatus, card_state
from .states import NO_CALL
from .timeouts import check_timeout

log = logging.getLogger(__name__)

MAXSIZE: Final = 4096
"""Default bound of an EventReader's queue: every channel of a 16-span card (480) can report a
whole call (about 4 events each) twice over before the reader drops anything."""

_CODES: Final[dict[int, EventCode]] = {c.value: c for c in EventCode}
_STATUSES: Final[dict[int, MailboxStatus]] = {s.value: s for s in MailboxStatus}
_CARD_WIDE: Final = 0xFF  # span and channel of the card's own events
_WITH_STATE: Final = frozenset((EventCode.STATE, EventCode.INCOMING, EventCode.CLEARED))


class HostEventCode(enum.IntEnum):
    """The code of an event the host reports itself. The card's event codes (`EventCode`,
    datasheet 2.3) are one octet; these start at 0x100, so no card code is ever one of them."""

    LOST = 0x100
    """The card's device is gone (unplugged, closed by the other side, the link beyond
    recovery): the last event every listener and reader receives, once."""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Event(q850.NamedCause):
    """One event of the card, typed: what `Card.add_event_listener()` listeners and
    `Card.events()` readers receive.

    `code` is the card's `EventCode`, or a `HostEventCode` for what the host itself reports
    (LOST: the card's device is gone; `seq` and `arg` 0).
    `span` is None for the card-wide events (RESET, WATCHDOG, LOST), `channel` also for SPAN
    events.
    `seq` is the channel's SEQ after the change (datasheet 2.3) and `arg` the raw argument,
    which the typed fields decode: `card_state` (STATE, INCOMING, CLEARED; None for a value
    the datasheet does not define), `status` (COMMAND_DONE), `dchannel_up` (SPAN).
    `registers` are the channel's registers at the event (INCOMING and CLEARED), None when
    they were no longer to be had (a later call had begun when the event was handed out).
    A CLEARED event carries the clearing's `cause`, its Q.850 `raw_cause` and
    `cause_location` as `CallChannel.cause()` and `CallDetails` record them (None when
    unknown). `timestamp` is the `time.time()` at which the host handed the event out.
    """

    code: EventCode | HostEventCode
    span: int | None
    channel: int | None
    seq: int
    arg: int
    timestamp: float
    card_state: CardState | None = None
    status: MailboxStatus | None = None
    dchannel_up: bool | None = None
    registers: ChannelBlock | None = None
    cause: Cause | None = None
    raw_cause: int | None = None
    cause_location: int | None = None


def typed_event(raw: device.Event, block: ChannelBlock | None) -> Event | None:
    """The Event for a driver-level event; `block`: the channel's registers the event pump
    took for it (None: none taken, a posted snapshot is decoded here). None for a code the
    datasheet does not define."""
    code = _CODES.get(raw.code)
    if code is None:
        return None
    span: int | None = raw.span
    channel: int | None = raw.channel
    if span == _CARD_WIDE:
        span = channel = None
    elif code is EventCode.SPAN:
        channel = None
    now = time.time()
    if code in _WITH_STATE:
        state = card_state(raw.arg)
        if block is None and raw.snapshot:
            block = ChannelBlock.parse(raw.snapshot)
        # Registers read after the event may belong to a later call: handed out only when
        # they are the event's (the INCOMING call's SEQ; the channel IDLE after CLEARED).
        if code is EventCode.INCOMING and block is not None and block.seq == raw.seq:
            return Event(code, span, channel, raw.seq, raw.arg, now, state, registers=block)
        if code is EventCode.CLEARED and block is not None and block.state in NO_CALL:
            cause, value = block.clearing_outcome()
            location = None if block.cause is None else block.cause.location
            return Event(
                code,
                span,
                channel,
                raw.seq,
                raw.arg,
                now,
                state,
                registers=block,
                cause=cause,
                raw_cause=value,
                cause_location=location,
            )
        return Event(code, span, channel, raw.seq, raw.arg, now, state)
    if code is EventCode.COMMAND_DONE:
        return Event(code, span, channel, raw.seq, raw.arg, now, status=_STATUSES.get(raw.arg))
    if code is EventCode.SPAN:
        return Event(
            code, span, channel, raw.seq, raw.arg, now, dchannel_up=raw.arg == lib.TC_DCHAN_UP
        )
    return Event(code, span, channel, raw.seq, raw.arg, now)


def lost_event() -> Event:
    """The LOST event: the card's device has gone."""
    return Event(HostEventCode.LOST, None, None, 0, 0, time.time())


class EventReader:
    """A bounded queue of the card's events, for a thread that takes them in its own time
    (python-can's BufferedReader is the model). Obtain one from `Card.events()`.

    The event pump never waits for a reader: when `maxsize` events are queued, newer events are
    dropped and counted in `dropped` (a WARNING is logged when dropping starts); the LOST event
    is queued even then. Iterating yields events until none has come for the reader's `timeout`
    (None: no limit), the reader is closed, or the card is closed or lost (a lost card's last
    event is LOST); the reader then closes itself. A context manager:
    leaving the `with` block closes it. The card holds a reader weakly, so one dropped without
    being closed stops being fed at the card's next event.
    """

    def __init__(self, timeout: float | None, maxsize: int, detach: Callable[[], None]) -> None:
        """Use `Card.events()`; `detach` stops the card from feeding this reader."""
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an int of at least 1, not {maxsize!r}")
        self._timeout = check_timeout(timeout, "timeout")
        self._maxsize = maxsize
        self._detach = detach
        self._cond = WakingCondition()
        self._queue: deque[Event] = deque()
        self._dropped = 0
        self._dropping = False
        self._ended = False  # no more events will come: closed, or the card gone
        self._closed = False

    def __repr__(self) -> str:
        return f"<EventReader queued={len(self._queue)} dropped={self._dropped}>"

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full."""
        return self._dropped

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to `timeout` seconds (None: as long as it takes); None
        on timeout, or once the reader has ended and its queue is empty."""
        wait = check_timeout(timeout, "timeout")
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._ended, wait):
                return None
            if not self._queue:
                return None
            if len(self._queue) == 1:
                self._dropping = False  # caught up: warn again if it falls behind again
            return self._queue.popleft()

    def __iter__(self) -> Iterator[Event]:
        """Events until `timeout` passes without one or the reader ends; then closes it."""
        try:
            while (event := self.get(self._timeout)) is not None:
                yield event
        finally:
            self.close()

    def close(self) -> None:
        """Stop taking events (those queued can still be read with `get()`)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        # Outside the lock: a hand-out under way may be waiting for it in _put.
        try:
            self._detach()
        finally:
            # Even if detaching failed (the card had let the reader go): a get() waiting for
            # the next event must not wait forever.
            self._end()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _put(self, event: Event) -> None:
        """The listener the card calls: queue `event`, or drop it when the queue is full."""
        with self._cond:
            if self._closed:
                return  # a hand-out that began before close(): nothing more is taken
            if len(self._queue) >= self._maxsize and event.code is not HostEventCode.LOST:
                self._dropped += 1
                if not self._dropping:
                    self._dropping = True
                    log.warning(
                        "event reader full (%d events): dropping events until it is read",
                        self._maxsize,
                    )
                return
            self._queue.append(event)
            self._cond.notify()

    def _end(self) -> None:
        """No more events will come: waiting readers return what is queued, then None."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()
