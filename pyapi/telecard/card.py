"""Card and Span: the open card, its spans and its call channels.

Numbering: spans are numbered 0 ... N-1 as the card reports them; channels are numbered by their
timeslot, E1 1-15 and 17-31 (timeslot 16 is the D-channel), T1 1-23 (24 is the D-channel).

A Card leaves nothing up on the card when it goes: closing it (or leaving its `with` block,
normally or by an exception) clears every call still on its channels, unless it was opened with
`keep_calls=True`; a host that vanishes without closing has its calls cleared by the card's host
watchdog (datasheet 2.6) after `watchdog` seconds.

A Card opened with `observe=True` watches a card another process drives (datasheet 4.6): it
reads the channels, spans and events, and refuses everything that would change the card with
ObserverError; it arms no watchdog, reserves nothing and leaves every call as it is on close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from . import q850
from ._cdriver import lib
from .address import check_bearer
from .channel import CallChannel
from .device import DEFAULT_SETUP, CallSetup, CommandResult, Device
from .errors import (
    CardResetError,
    DeviceLostError,
    InvalidStateError,
    ObserverError,
    TelecardError,
)
from .events import MAXSIZE, Event, EventReader
from .pump import EventPump, IncomingCalls, PumpStats
from .registers import Alarm, Bearer, ChannelBlock, Command, Line, Role
from .statistics import CardStatistics, SpanCounters, card_statistics
from .timeouts import check_timeout, wait_time

log = logging.getLogger(__name__)

WATCHDOG: Final = 10.0
"""Default grace period of the card's host watchdog, in seconds."""
CLOSE_WAIT: Final = 10.0
"""How long close() waits for the calls it clears to end."""


@dataclass(frozen=True)
class Span:
    """A snapshot of one span: `card.spans` reads the card afresh every time."""

    index: int
    line: Line
    role: Role
    alarms: Alarm
    dchannel_up: bool
    channels: tuple[int, ...]  # bearer channel numbers (timeslots)


DEFAULT_BEARERS: Final = frozenset((Bearer.SPEECH, Bearer.AUDIO_3K1))
"""The incoming calls a Card takes unless told otherwise: voice (the card's boot value)."""


def _bearers(bearers: Iterable[Bearer]) -> frozenset[Bearer]:
    """The Bearers of a collection, read once (it may be an iterator); ValueError for anything
    else."""
    if isinstance(bearers, (str, bytes)) or not isinstance(bearers, Iterable):
        raise ValueError(f"bearers must be a collection of telecard.Bearer, not {bearers!r}")
    return frozenset(check_bearer(bearer) for bearer in bearers)


def _check_watchdog(watchdog: float | None) -> float | None:
    """The watchdog's grace period in seconds, or None (off); ValueError outside its range."""
    grace = check_timeout(watchdog, "watchdog")
    longest = lib.TC_HOST_WATCHDOG_MAX / 1000
    if grace is not None and not 0.1 <= grace <= longest:
        raise ValueError(f"watchdog must be 0.1-{longest:g} s or None, not {watchdog}")
    return grace


class Card:
    """An open card: its spans and call channels. Use `Card.open()`; a context manager."""

    def __init__(
        self,
        device: Device,
        *,
        keep_calls: bool = False,
        watchdog: float | None = WATCHDOG,
        clock: Callable[[], float] = time.monotonic,
        bearers: Iterable[Bearer] = DEFAULT_BEARERS,
    ) -> None:
        """Take over an open Device (closed with the card) and start the event pump.

        `clock`: the monotonic seconds the statistics' sliding window follows."""
        grace = _check_watchdog(watchdog)
        accept = sum(1 << bearer for bearer in _bearers(bearers))  # ACCEPT_BEARERS
        self._dev = device
        self._keep_calls = keep_calls
        self._closed = False
        self._closing = False  # close() under way: no new call
        self._close_lock = threading.Lock()
        self._spans = self._read_span_layout()
        if log.isEnabledFor(logging.INFO):
            info = device.info
            log.info(
                "%s: boot id %#010x, firmware %d.%d, %d span(s)",
                device.path,
                info.boot_id,
                info.fw_version >> 8,
                info.fw_version & 0xFF,
                info.num_spans,
            )
            for span in self._spans:
                up = "up" if span.dchannel_up else "down"
                log.info("span %d: %s %s, D-channel %s", span.index, span.line, span.role, up)
        self._counters = tuple(SpanCounters(clock) for _ in self._spans)
        self._channels: dict[tuple[int, int], CallChannel] = {
            (span.index, ts): CallChannel(self, span.index, ts, self._counters[span.index])
            for span in self._spans
            for ts in span.channels
        }
        self._order = tuple(self._channels.values())
        self._incoming = IncomingCalls()
        self._pump = EventPump(
            device,
            self._channels,
            self._incoming,
            watchdog_ms=0 if grace is None else round(grace * 1000),
            accept_bearers=accept,
        )
        self._pump.start()

    @classmethod
    def open(
        cls,
        device: str | os.PathLike[str],
        *,
        timeout: float = 0.25,
        retries: int = 3,
        keep_calls: bool = False,
        watchdog: float | None = WATCHDOG,
        clock: Callable[[], float] = time.monotonic,
        observe: bool = False,
        bearers: Iterable[Bearer] = DEFAULT_BEARERS,
    ) -> Card:
        """Open the card at `device` (a path, or `PATH?baud=N` for a serial port).

        `keep_calls`: close() leaves calls up for the next Card opened on the device to adopt
        (they show on their channels, to be hung up). `watchdog`: seconds after which the card
        clears this host's calls (cause 41) if it hears nothing from it; None turns it off.
        `clock`: the monotonic seconds `statistics()`'s sliding window follows (tests pass
        their own to move it). `observe`: watch the card beside the process that drives it,
        through one of its monitor ports (see Device.open); read-only, `keep_calls`,
        `watchdog` and `bearers` do not apply. `bearers`: the bearer capabilities of the
        incoming calls this application takes (default speech and 3.1 kHz audio); the card
        refuses the others without offering them (cause 88 on a TE span, 58 on an NT span;
        datasheet 2.4).
        """
        _check_watchdog(watchdog)  # before anything reaches the device
        bearers = _bearers(bearers)  # an iterator would be empty when __init__ reads it again
        dev = Device.open(device, timeout=timeout, retries=retries, observe=observe)
        try:
            return cls(
                dev, keep_calls=keep_calls, watchdog=watchdog, clock=clock, bearers=bearers
            )
        except BaseException:
            dev.close()
            raise

    def close(self) -> None:
        """Clear every call still up (unless opened with keep_calls), stop the event pump and
        close the device. The channels' reservations end with the device's session."""
        with self._close_lock:
            if self._closed:
                return
            self._closing = True
            # An observer leaves the card as it found it: the calls are the controller's.
            usable = not self._pump.lost and not self._dev.observer
            try:
                if usable and self._keep_calls:
                    kept = sum(1 for c in self._order if c._live_call())
                    log.info("%s: closing, %d call(s) left up", self._dev.path, kept)
                    self._pump.set_watchdog(0)
                elif usable:
                    self._clear_all()
            except TelecardError:
                pass
            except BaseException:  # interrupted (KeyboardInterrupt): still open, calls allowed
                self._closing = False
                raise
            self._closed = True
            self._incoming.wake_all()
            self._pump.stop()
            for channel in self._order:
                channel._fail(lost=True)

    def _clear_all(self) -> None:
        """Clear the calls on every channel at once, then release the reservations. The
        registers are read first, so a call the card holds is cleared even where this host
        lost track of it."""
        self._pump.resync()
        # A channel with a command out may be getting a call (MAKE_CALL): its release
        # waits for the command to land, then clears what it placed.
        busy = [
            c for c in self._order if c._live_call() or c.owned or c._command_lock.locked()
        ]
        threads = [
            threading.Thread(target=_release_quietly, args=(c,), daemon=True) for c in busy
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + CLOSE_WAIT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        # Only once nothing is left, on any channel (an incoming call may have been taken
        # meanwhile): otherwise the card's watchdog clears what remains.
        if not any(t.is_alive() for t in threads) and not any(
            c._live_call() for c in self._order
        ):
            self._pump.set_watchdog(0)

    def __enter__(self) -> Card:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = " closed" if self._closed else " lost" if self._pump.lost else ""
        return f"<Card {self._dev.path} spans={len(self._spans)}{closed}>"

    # -- public ---------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """The card's device has gone (unplugged, closed by the other side): every channel
        is in State.ERROR and the Card can only be closed."""
        return self._pump.lost

    @property
    def device(self) -> Device:
        """The low-level device handle."""
        return self._dev

    @property
    def stats(self) -> PumpStats:
        """Events handled and channel re-reads since the Card opened."""
        return self._pump.stats

    def statistics(self) -> CardStatistics:
        """Each span's call attempts and outcomes since this Card opened, by direction, Cause
        and Q.850 value, with ASR and NER (ITU-T E.425) over that time and over the last
        15 minutes, and the card's totals (see `telecard.statistics` for the definitions).
        Readable after the card is closed or lost."""
        return card_statistics(tuple(c.snapshot(i) for i, c in enumerate(self._counters)))

    @property
    def spans(self) -> tuple[Span, ...]:
        """Every span, read from the card now."""
        self.check_usable()
        raw = self._dev.read(lib.TC_SPAN_BASE, lib.TC_SPAN_STRIDE * len(self._spans))
        return tuple(
            _span_from(layout.index, raw[layout.index * lib.TC_SPAN_STRIDE :], layout.channels)
            for layout in self._spans
        )

    def channel(self, span: int, number: int) -> CallChannel:
        """The call channel on `span` (0-based) with timeslot `number`."""
        try:
            return self._channels[(span, number)]
        except (KeyError, TypeError):
            raise ValueError(
                f"span {span!r} channel {number!r} is not a bearer channel of this card"
            ) from None

    def channels(self, span: int | None = None) -> tuple[CallChannel, ...]:
        """Every call channel, or those of one span, in span and timeslot order."""
        if span is None:
            return self._order
        if span not in range(len(self._spans)):
            raise ValueError(f"no span {span!r} on this card")
        return tuple(c for c in self._order if c.span == span)

    def free_channel(self, span: int | None = None) -> CallChannel | None:
        """Reserve and return an IDLE channel (on `span`, if given), or None when none is free.

        The channel belongs to the caller until `channel.release()` (or the end of
        `with card.free_channel() as channel:`): no other free_channel() returns it and the
        card offers it no incoming call. Channels are hunted in ascending span and timeslot
        order; networks hunt descending, which keeps glare rare.
        """
        candidates = self.channels(span)
        self.check_usable()
        self._check_controller("free_channel()")
        for channel in candidates:
            if channel._try_reserve():
                return channel
        return None

    def wait_for_incoming_call(self, seconds_timeout: float | None = None) -> CallChannel | None:
        """The channel holding a new incoming call, owned by the caller; None on timeout.

        Each call is handed to one waiter, and its channel stays the caller's (no further
        call is offered on it) until `channel.release()`. A call that cleared before anyone
        took it is skipped. Calls on channels where a thread waits with
        `CallChannel.wait_for_incoming_call()` go to that thread instead.
        """
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        self._check_controller("wait_for_incoming_call()")
        return self._incoming.take(timeout, self.check_usable)

    @property
    def calls_waiting(self) -> int:
        """Incoming calls waiting for `wait_for_incoming_call()`."""
        return len(self._incoming)

    def add_event_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` for every event the card reports, in order and before the
        channels see it, and last, once, for `HostEventCode.LOST` when the card's device is
        lost; for monitoring tools. It runs on the thread handing the events out
        (the event thread, or a thread waiting for its call's news), one call at a time, and
        must not block: a listener that takes its time holds every call's news up (use
        `events()` to take events in a thread of one's own)."""
        self._pump.add_listener(listener)

    def remove_event_listener(self, listener: Callable[[Event], None]) -> None:
        """Stop calling `listener` (added with `add_event_listener`; ValueError if it was
        not). Once this returns it is not called again, except that a call already under way
        on another thread may still be running: this does not wait for it (as python-can's
        Notifier does not), so a listener waiting on a lock the caller holds cannot hang it."""
        self._pump.remove_listener(listener)

    def events(self, timeout: float | None = None, *, maxsize: int = MAXSIZE) -> EventReader:
        """A reader of the card's events from now on, queued for the caller to take in its
        own time: `for event in card.events(timeout=5):` ends after 5 s without an event, or
        when the card is closed, or lost (after a last event, `HostEventCode.LOST`; see
        EventReader). At most `maxsize` events wait in
        it; the event pump drops newer ones rather than wait (counted in `dropped`). The card
        holds the reader weakly: one dropped unclosed stops being fed at the next event::

            with card.events() as events:
                while (event := events.get(timeout=1)) is not None:
                    ...
        """
        reader = EventReader(timeout, maxsize, lambda: self._pump.remove_listener(feed))
        # Held weakly: a reader dropped without close() is pruned at the next event, not fed
        # (and typed events built for it) for the rest of the card's life.
        put = weakref.WeakMethod(reader._put)
        end = weakref.WeakMethod(reader._end)

        def feed(event: Event) -> None:
            method = put()
            if method is not None:
                method(event)
            else:
                with contextlib.suppress(ValueError):  # pruned meanwhile by another thread
                    self._pump.remove_listener(feed)

        def ended() -> None:
            method = end()
            if method is not None:
                method()

        self._pump.add_listener(feed, ended=ended)
        return reader

    # -- ChannelHost: what the channels use -----------------------------------------------

    def check_usable(self) -> None:
        """Raise DeviceLostError once the device is gone or the card closed."""
        if self._pump.lost:
            raise DeviceLostError("the card's device was lost")
        if self._closed:
            raise DeviceLostError("the card is closed")

    def check_open(self) -> None:
        """check_usable(), and DeviceLostError while close() is under way (see ChannelHost)."""
        self.check_usable()
        if self._closing:
            raise DeviceLostError("the card is closing")

    @property
    def observer(self) -> bool:
        """Opened with observe=True: this Card only watches (datasheet 4.6)."""
        return self._dev.observer

    def _check_controller(self, what: str) -> None:
        """ObserverError when this Card only watches the card."""
        if self._dev.observer:
            raise ObserverError(
                f"{what}: {self._dev.path} is open to observe (a monitor port): it cannot"
                " change the card; the process driving the card does that"
            )

    def set_overlap_digits(self, span: int, digits: int) -> None:
        """Overlap receiving on `span` (datasheet 2.7, Q.931 §5.2.4): an incoming SETUP without
        Sending Complete whose called number has fewer than `digits` digits is held by the card,
        which collects the rest (INFORMATION, T302), and offered once the number is complete:
        Sending Complete, `digits` digits, or T302 (15 s) without a digit. 0, the card's setting
        after boot, offers every call at once. Kept across card resets (set again after each)."""
        if type(span) is not int or not 0 <= span < len(self._spans):
            raise ValueError(f"span must be 0-{len(self._spans) - 1}, not {span!r}")
        if type(digits) is not int or not 0 <= digits <= lib.TC_NUMBER_MAX:
            raise ValueError(f"digits must be an int 0-{lib.TC_NUMBER_MAX}, not {digits!r}")
        self.check_usable()
        self._check_controller("set_overlap_digits()")
        try:
            self._pump.set_overlap_digits(span, digits)
        except TelecardError as exc:
            failure = self._failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    def local_location(self, span: int) -> int:
        """The location the card's own causes carry: user (TE) or private network (NT)."""
        if self._spans[span].role is Role.NT:
            return q850.LOCATION_PRIVATE_LOCAL
        return q850.LOCATION_USER

    def command(
        self,
        span: int,
        timeslot: int,
        cmd: Command,
        *,
        called: str,
        calling: str,
        cause: bytes,
        setup: CallSetup = DEFAULT_SETUP,
    ) -> CommandResult:
        """Run a mailbox command (see ChannelHost)."""
        self.check_usable()
        if self._dev.observer:  # checked first: the message is not built for every command
            self._check_controller(f"command {cmd.name} on {span}/{timeslot}")
        try:
            return self._dev.command(
                span,
                timeslot,
                cmd,
                called=called,
                calling=calling,
                cause=cause,
                setup=setup,
            )
        except TelecardError as exc:
            failure = self._failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    def read_block(self, span: int, timeslot: int) -> ChannelBlock:
        """Read one channel's registers now."""
        self.check_usable()
        try:
            return self._dev.read_channel(span, timeslot)
        except TelecardError as exc:
            failure = self._failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    def offer_incoming(self, channel: CallChannel, call_id: int) -> None:
        """Queue an incoming call for wait_for_incoming_call() (see ChannelHost); an
        observer's are the controller's to take."""
        if not self._dev.observer:
            self._incoming.offer(channel, call_id)

    def wait(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None
    ) -> bool:
        """Wait for news of a call (see ChannelHost and the event pump)."""
        return self._pump.wait(cond, predicate, timeout)

    def _failure(self, exc: TelecardError) -> TelecardError:
        """What a channel's device access that failed with `exc` raises: DeviceLostError
        when the card was closed under it (as check_usable() would report), else `exc`."""
        return DeviceLostError("the card is closed") if self._device_error(exc) else exc

    def _device_error(self, exc: TelecardError) -> bool:
        """A channel's device access failed: the pump learns of a lost or reset card at once.
        True when the card was closed under the access (to be reported as check_usable()
        would)."""
        if isinstance(exc, DeviceLostError):
            self._pump.device_lost()
        elif isinstance(exc, CardResetError):
            self._pump.card_reset()
        return isinstance(exc, InvalidStateError) and self._closed

    # -- set-up ---------------------------------------------------------------------------

    def _read_span_layout(self) -> tuple[Span, ...]:
        count = self._dev.info.num_spans
        raw = self._dev.read(lib.TC_SPAN_BASE, lib.TC_SPAN_STRIDE * count)
        spans = []
        for index in range(count):
            regs = raw[index * lib.TC_SPAN_STRIDE :]
            d_slot = regs[lib.TC_SPAN_DCHANNEL_TIMESLOT]
            last = 31 if regs[lib.TC_SPAN_LINE_TYPE] == Line.E1 else 23
            spans.append(
                _span_from(index, regs, tuple(ts for ts in range(1, last + 1) if ts != d_slot))
            )
        return tuple(spans)


def _span_from(index: int, regs: bytes, channels: tuple[int, ...]) -> Span:
    return Span(
        index=index,
        line=Line(regs[lib.TC_SPAN_LINE_TYPE]),
        role=Role(regs[lib.TC_SPAN_ROLE]),
        alarms=Alarm(regs[lib.TC_SPAN_ALARMS] & 0x0F),
        dchannel_up=regs[lib.TC_SPAN_DCHANNEL] == lib.TC_DCHAN_UP,
        channels=channels,
    )


def _release_quietly(channel: CallChannel) -> None:
    try:
        channel.release()
    except TelecardError:
        pass
