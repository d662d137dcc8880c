"""Card and Span: the open card, its spans, its call channels and its event thread.

Numbering: spans are numbered 0 ... N-1 as the card reports them; channels are numbered by their
timeslot, E1 1-15 and 17-31 (timeslot 16 is the D-channel), T1 1-23 (24 is the D-channel).

One event thread per card waits for the card's interrupts, drains the events through the
C driver (the card posts them, with a snapshot of the channel's registers for each incoming
call and each clearing, so the common path reads nothing) and hands each event to its
channel, which wakes the threads waiting on it. After an
event-ring overflow it re-reads every channel; after a firmware reset (BOOT_ID changed) every
call in progress ends with Cause.ERROR; when the device is lost every channel goes to
State.ERROR and every waiter wakes.
"""

from __future__ import annotations

import enum
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from . import q850
from ._cdriver import lib
from .cause_ie import CauseIE, decode_cause
from .causes import encode_cause
from .channel import CallChannel, _check_timeout, _wait_time
from .device import Device, Event
from .errors import (
    CardResetError,
    DeviceLostError,
    InvalidStateError,
    LinkTimeoutError,
    MalformedCauseError,
    ProtocolError,
    TelecardError,
)

log = logging.getLogger(__name__)

# How long free_channel() holds a channel for its caller before another caller may get it.
RESERVATION_SECONDS: Final = 2.0
# The event thread wakes at least this often to check that it should keep running.
_IRQ_WAIT: Final = 0.5
_INT_SOURCES: Final = lib.TC_INT_EVENT | lib.TC_INT_OVERFLOW | lib.TC_INT_RESET
_BLOCK_LEN: Final[int] = lib.TC_CHAN_CALLING + lib.TC_NUMBER_MAX
_SLOTS: Final[int] = lib.TC_SLOTS_PER_SPAN
_STRIDE: Final[int] = lib.TC_CHAN_STRIDE
_BLOCK_HEAD: Final = struct.Struct("<BBHIBB")
_CAUSE_SOURCES: Final = {lib.TC_CAUSE_SRC_REMOTE: "remote", lib.TC_CAUSE_SRC_LOCAL: "local"}
_LINES: Final = {lib.TC_LINE_E1: "E1", lib.TC_LINE_T1: "T1"}
_ROLES: Final = {lib.TC_ROLE_TE: "TE", lib.TC_ROLE_NT: "NT"}


class Alarm(enum.IntFlag):
    """Layer-1 alarms of a span."""

    NONE = 0
    LOS = lib.TC_ALARM_LOS
    AIS = lib.TC_ALARM_AIS
    RAI = lib.TC_ALARM_RAI
    LOF = lib.TC_ALARM_LOF


@dataclass(frozen=True)
class Span:
    """A snapshot of one span: `card.spans` reads the card afresh every time."""

    index: int
    line: str  # "E1" or "T1"
    role: str  # "TE" (user side) or "NT" (network side)
    alarms: Alarm
    dchannel_up: bool
    channels: tuple[int, ...]  # bearer channel numbers (timeslots)


@dataclass(frozen=True)
class ChannelBlock:
    """One channel's registers, decoded."""

    state: int
    direction: int
    call_ref: int
    seq: int
    cause_octets: bytes
    cause_source: str
    cause: CauseIE | None
    malformed_cause: bool
    called: str
    calling: str

    @classmethod
    def parse(cls, raw: bytes) -> ChannelBlock:
        state, direction, call_ref, seq, cause_len, source = _BLOCK_HEAD.unpack_from(raw)
        octets = bytes(raw[lib.TC_CHAN_CAUSE : lib.TC_CHAN_CAUSE + min(cause_len, 32)])
        cause: CauseIE | None = None
        malformed = False
        if octets:
            try:
                cause = decode_cause(octets)
            except MalformedCauseError:
                malformed = True
        called_len = min(raw[lib.TC_CHAN_CALLED_LEN], lib.TC_NUMBER_MAX)
        calling_len = min(raw[lib.TC_CHAN_CALLING_LEN], lib.TC_NUMBER_MAX)
        return cls(
            state=state,
            direction=direction,
            call_ref=call_ref,
            seq=seq,
            cause_octets=octets,
            cause_source=_CAUSE_SOURCES.get(source, ""),
            cause=cause,
            malformed_cause=malformed,
            called=_ia5(raw[lib.TC_CHAN_CALLED : lib.TC_CHAN_CALLED + called_len]),
            calling=_ia5(raw[lib.TC_CHAN_CALLING : lib.TC_CHAN_CALLING + calling_len]),
        )


def _ia5(raw: bytes) -> str:
    return raw.decode("ascii", "replace")


class Card:
    """An open card: its spans and call channels. Use `Card.open()`; a context manager."""

    def __init__(self, device: Device) -> None:
        """Take over an open Device (closed with the card) and start the event thread."""
        self._dev = device
        self._lock = threading.Lock()
        # Held while channel registers are compared with (by SEQ) and applied to a channel:
        # the event thread and an application thread's resync() must not interleave.
        self._apply_lock = threading.RLock()
        self._incoming_cond = threading.Condition(self._lock)
        self._incoming: deque[tuple[CallChannel, int]] = deque()
        self._closed = False
        self._lost = False
        self._boot_id = device.info.boot_id
        self._cursor = 0
        self._listeners: list[Callable[[Event], None]] = []
        self._seq: dict[int, int] = {}  # block index -> SEQ of the newest state applied
        self._spans = self._read_span_layout()
        self._channels: dict[tuple[int, int], CallChannel] = {
            (span.index, ts): CallChannel(self, span.index, ts)
            for span in self._spans
            for ts in span.channels
        }
        self._order = tuple(self._channels.values())
        self._enable_interrupts()
        self._resync_all()
        self._thread = threading.Thread(
            target=self._run, name=f"telecard events {device.path}", daemon=True
        )
        self._thread.start()

    @classmethod
    def open(cls, device: str, *, timeout: float = 0.25, retries: int = 3) -> Card:
        """Open the card at `device` (a path, or `PATH?baud=N` for a serial port)."""
        dev = Device.open(device, timeout=timeout, retries=retries)
        try:
            return cls(dev)
        except BaseException:
            dev.close()
            raise

    def close(self) -> None:
        """Stop the event thread and close the device; calls in progress are left as they are
        (a Card opened on the device later shows them on their channels, to be hung up)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._incoming_cond.notify_all()
        self._dev.close()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        for channel in self._order:
            channel.on_failure(lost=True)

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
        closed = " closed" if self._closed else " lost" if self._lost else ""
        return f"<Card {self._dev.path} spans={len(self._spans)}{closed}>"

    # -- public ---------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """The card's device has gone (unplugged, closed by the other side): every channel
        is in State.ERROR and the Card can only be closed."""
        return self._lost

    @property
    def device(self) -> Device:
        """The low-level device handle."""
        return self._dev

    @property
    def spans(self) -> tuple[Span, ...]:
        """Every span, read from the card now."""
        self.check_usable()
        raw = self._dev.read(lib.TC_SPAN_BASE, lib.TC_SPAN_STRIDE * len(self._spans))
        result = []
        for layout in self._spans:
            base = layout.index * lib.TC_SPAN_STRIDE
            result.append(
                Span(
                    index=layout.index,
                    line=layout.line,
                    role=layout.role,
                    alarms=Alarm(raw[base + lib.TC_SPAN_ALARMS] & 0x0F),
                    dchannel_up=raw[base + lib.TC_SPAN_DCHANNEL] == lib.TC_DCHAN_UP,
                    channels=layout.channels,
                )
            )
        return tuple(result)

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
        """An IDLE channel (on `span`, if given), or None when every one is busy.

        The channel is held for the caller for RESERVATION_SECONDS (or until a call starts
        on it), so threads asking at the same time get different channels.
        """
        candidates = self.channels(span)
        self.check_usable()
        now = time.monotonic()
        with self._lock:
            start = self._cursor
            self._cursor += 1
        for i in range(len(candidates)):
            channel = candidates[(start + i) % len(candidates)]
            if channel.reserve(now + RESERVATION_SECONDS, now):
                return channel
        return None

    def wait_for_incoming_call(self, seconds_timeout: float | None = None) -> CallChannel | None:
        """The channel holding a new incoming call, or None on timeout.

        Each call is handed to one waiter; a call that cleared before anyone took it is
        skipped. Calls on channels where a thread waits with
        `CallChannel.wait_for_incoming_call()` go to that thread instead.
        """
        timeout = _wait_time(_check_timeout(seconds_timeout, "seconds_timeout"))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._incoming_cond:
            while True:
                self.check_usable()
                while self._incoming:
                    channel, call_id = self._incoming.popleft()
                    if channel.holds_call(call_id):
                        return channel
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._incoming_cond.wait(remaining)

    def add_event_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` on the event thread for every event the card reports
        (before the channels see it); for monitoring tools. It must not block."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

    # -- used by CallChannel --------------------------------------------------------------

    def check_usable(self) -> None:
        """Raise DeviceLostError once the device is gone or the card closed."""
        if self._lost:
            raise DeviceLostError("the card's device was lost")
        if self._closed:
            raise DeviceLostError("the card is closed")

    def local_location(self, span: int) -> int:
        """The location the card's own causes carry: user (TE) or private network (NT)."""
        if self._spans[span].role == "NT":
            return q850.LOCATION_PRIVATE_LOCAL
        return q850.LOCATION_USER

    def command(
        self, channel: CallChannel, cmd: int, *, called: str, calling: str, cause: bytes
    ) -> None:
        """Run a mailbox command for `channel`.

        CommandError is raised for a refusal; device failures end calls as the card requires
        (see the module docstring) and surface as DeviceLostError or CardResetError.
        """
        self.check_usable()
        try:
            self._dev.command(
                channel.span, channel.number, cmd, called=called, calling=calling, cause=cause
            )
        except InvalidStateError as exc:
            if self._closed:  # close() under a command in flight: say so, as check_usable() does
                raise DeviceLostError("the card is closed") from exc
            raise
        except DeviceLostError:
            self._on_lost()
            raise
        except CardResetError:
            self._on_reset()
            raise
        except (ProtocolError, LinkTimeoutError):
            # The command's fate is unknown: end the call as failed and make sure the card
            # does not keep it.
            channel.on_failure(lost=False)
            self._best_effort_release(channel)
            raise

    def resync(self, channel: CallChannel) -> None:
        """Re-read one channel's registers and bring the channel in line with them."""
        try:
            block = self._read_block(channel)
        except TelecardError:
            return
        # The event thread may have applied newer registers since the read: _apply_block
        # applies these only if they are newer still.
        self._apply_block(channel, block)

    # -- event thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            try:
                self._dev.wait_irq(_IRQ_WAIT)
                while not self._closed:
                    events, overflow = self._dev.drain_events()
                    if overflow:
                        self._resync_all()
                    for event in events:
                        self._dispatch(event)
                    if not events:
                        break
            except DeviceLostError:
                if not self._closed:
                    self._on_lost()
                return
            except CardResetError:
                self._on_reset()
            except (ProtocolError, LinkTimeoutError) as exc:
                if self._closed:
                    return
                log.warning("event thread: %s; re-reading the channels", exc)
                time.sleep(0.01)
                self._safe_resync_all()
            except TelecardError:
                if self._closed:
                    return
                log.exception("event thread")
                time.sleep(0.01)
            except Exception:
                # A bug met handling an event: the event thread must keep going (every waiter
                # depends on it), and the channels must catch up with what was missed.
                if self._closed:
                    return
                log.exception("event thread: unexpected error; re-reading the channels")
                time.sleep(0.01)
                self._safe_resync_all()

    def _dispatch(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed", listener)
        code = event.code
        if code == lib.TC_EV_RESET:
            self._on_reset()
            return
        if code == lib.TC_EV_COMMAND_DONE or code == lib.TC_EV_SPAN:
            return
        channel = self._channels.get((event.span, event.channel))
        if channel is None:
            return
        with self._apply_lock:
            self._dispatch_channel(channel, event)

    def _dispatch_channel(self, channel: CallChannel, event: Event) -> None:
        code = event.code
        if not self._advance(channel, event.seq):
            return  # older than registers already applied
        if code == lib.TC_EV_STATE and event.arg != lib.TC_ST_IDLE:
            channel.on_state(event.arg)
            return
        # INCOMING, CLEARED (or a STATE change to IDLE): the registers at the event hold what
        # we need. A posted event carries them; otherwise read them now.
        if event.snapshot:
            block = ChannelBlock.parse(event.snapshot)
        else:
            block = self._read_block(channel)
        if block.seq != event.seq:
            # The channel moved on since this event (a new call may already have replaced
            # numbers and cause): follow the registers instead.
            self._apply_block(channel, block)
        elif code == lib.TC_EV_INCOMING:
            self._incoming_call(channel, block)
        else:
            channel.on_cleared(block)

    def _incoming_call(self, channel: CallChannel, block: ChannelBlock) -> None:
        if channel.on_incoming(block):
            return
        with self._incoming_cond:
            # Drop the calls that ended before anyone took them, or the queue grows for as
            # long as the application leaves wait_for_incoming_call() alone.
            self._incoming = deque((c, i) for c, i in self._incoming if c.holds_call(i))
            self._incoming.append((channel, channel.call_id()))
            self._incoming_cond.notify()

    def _advance(self, channel: CallChannel, seq: int) -> bool:
        """Record that the channel's registers at `seq` were seen; False when not newer."""
        index = self._block_index(channel)
        with self._lock:
            last = self._seq.get(index)
            if last is not None and not 0 < (seq - last) & 0xFFFFFFFF < 0x80000000:
                return False
            self._seq[index] = seq
            return True

    def _apply_block(self, channel: CallChannel, block: ChannelBlock) -> None:
        """Make a channel agree with registers read outside the event stream (unless they are
        no newer than what the channel already shows)."""
        with self._apply_lock:
            if self._advance(channel, block.seq):
                self._apply_newer_block(channel, block)

    def _apply_newer_block(self, channel: CallChannel, block: ChannelBlock) -> None:
        live = channel.is_live()
        if live and block.state != lib.TC_ST_IDLE and not channel.same_call(block):
            # The call we knew ended and another began before we saw it: its cause is gone.
            channel.on_cleared(None)
            live = False
        if block.state == lib.TC_ST_IDLE:
            if live:
                channel.on_cleared(block)
        elif not live:
            if block.direction == lib.TC_DIR_INCOMING and block.state in (
                lib.TC_ST_IN_PRESENT,
                lib.TC_ST_IN_ALERTING,
            ):
                self._incoming_call(channel, block)
            else:
                channel.on_adopt(block)
        else:
            channel.on_state(block.state)

    def _resync_all(self) -> None:
        # One read covers every channel block of every span.
        size = len(self._spans) * _SLOTS * _STRIDE
        raw = self._dev.read(lib.TC_CHAN_BASE, size)
        for channel in self._order:
            offset = self._block_index(channel) * _STRIDE
            self._apply_block(channel, ChannelBlock.parse(raw[offset : offset + _BLOCK_LEN]))

    def _safe_resync_all(self) -> None:
        try:
            self._resync_all()
        except DeviceLostError:
            self._on_lost()
        except TelecardError as exc:
            log.warning("re-reading the channels failed: %s", exc)

    def _on_reset(self) -> None:
        """The firmware rebooted: every call in progress is gone."""
        boot_id = self._dev.info.boot_id
        with self._lock:
            if boot_id == self._boot_id and not self._closed:
                fresh = False
            else:
                fresh = True
                self._boot_id = boot_id
        if not fresh:
            return
        with self._lock:
            self._seq.clear()  # SEQ restarts at boot
        for channel in self._order:
            channel.on_failure(lost=False)
        try:
            self._enable_interrupts()
        except TelecardError as exc:
            log.warning("re-enabling interrupts and event posting after a reset failed: %s", exc)

    def _on_lost(self) -> None:
        with self._lock:
            self._lost = True
            self._incoming_cond.notify_all()
        for channel in self._order:
            channel.on_failure(lost=True)

    def _best_effort_release(self, channel: CallChannel) -> None:
        try:
            self._dev.command(
                channel.span,
                channel.number,
                lib.TC_CMD_RELEASE,
                cause=encode_cause(q850.TEMPORARY_FAILURE, self.local_location(channel.span)),
            )
        except TelecardError:
            pass

    # -- set-up ---------------------------------------------------------------------------

    def _enable_interrupts(self) -> None:
        """Interrupts and event posting, both off after every boot."""
        # INT_STATUS (W1C: acknowledge a boot) and INT_MASK are adjacent: one write.
        assert lib.TC_REG_INT_MASK == lib.TC_REG_INT_STATUS + 4
        self._dev.write(
            lib.TC_REG_INT_STATUS,
            lib.TC_INT_RESET.to_bytes(4, "little") + _INT_SOURCES.to_bytes(4, "little"),
        )
        self._dev.set_event_post(True)

    def _read_span_layout(self) -> tuple[Span, ...]:
        count = self._dev.info.num_spans
        raw = self._dev.read(lib.TC_SPAN_BASE, lib.TC_SPAN_STRIDE * count)
        spans = []
        for index in range(count):
            base = index * lib.TC_SPAN_STRIDE
            line = raw[base + lib.TC_SPAN_LINE_TYPE]
            d_slot = raw[base + lib.TC_SPAN_DCHANNEL_TIMESLOT]
            last = 31 if line == lib.TC_LINE_E1 else 23
            spans.append(
                Span(
                    index=index,
                    line=_LINES.get(line, f"line {line}"),
                    role=_ROLES.get(raw[base + lib.TC_SPAN_ROLE], "?"),
                    alarms=Alarm(raw[base + lib.TC_SPAN_ALARMS] & 0x0F),
                    dchannel_up=raw[base + lib.TC_SPAN_DCHANNEL] == lib.TC_DCHAN_UP,
                    channels=tuple(ts for ts in range(1, last + 1) if ts != d_slot),
                )
            )
        return tuple(spans)

    def _read_block(self, channel: CallChannel) -> ChannelBlock:
        addr = lib.TC_CHAN_BASE + self._block_index(channel) * _STRIDE
        return ChannelBlock.parse(self._dev.read(addr, _BLOCK_LEN))

    @staticmethod
    def _block_index(channel: CallChannel) -> int:
        return channel.span * _SLOTS + channel.number
