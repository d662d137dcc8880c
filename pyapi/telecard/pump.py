"""The event pump: what brings the card's news to the channels.

It waits for the card's interrupts, drains the events through the C driver (the card posts
them, with a snapshot of the channel's registers for each incoming call and each clearing, so
the common path reads nothing), and hands each channel its registers through one entry point,
`CallChannel._apply`. Incoming calls that no thread waiting on their channel takes go to an
`IncomingCalls` queue.

The pump has a thread of its own, and it also runs on a caller's thread: a thread that waits
for news of its call (`call()`, `answer()`, `hang_up()`, ...) drains and hands out the card's
events itself while no other thread is doing so, and the driver wakes it rather than the
event thread, which stands by (it takes the news only while no caller waits for it). So a
call's outcome reaches its caller without a hand-over between threads. One thread at a time
drains and hands out, in ring order, whichever thread it is; listeners are called on it.

After an event-ring overflow or a link error the pump re-reads every channel; after a firmware
reset (BOOT_ID changed) every call in progress ends with Cause.ERROR; when the device is lost
every channel goes to State.ERROR and the listeners get a last event, LOST. The event thread's
idle check, every `IDLE_CHECK` seconds (a third of the watchdog's grace period when that is
shorter), also feeds the card's host watchdog and resends clears the card has not confirmed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from ._cdriver import lib
from ._wake import WakingCondition
from .channel import CallChannel, _Update
from .device import Device, Event
from .errors import CardResetError, DeviceLostError, LinkTimeoutError, ProtocolError, TelecardError
from .events import Event as TypedEvent
from .events import lost_event, typed_event
from .registers import BLOCK_LEN, CardState, ChannelBlock, EventCode, card_state

log = logging.getLogger(__name__)

IDLE_CHECK: Final = 0.5
"""The pump's longest wait for an interrupt; each idle wait ends with a look at the card,
which feeds its watchdog (the wait is a third of the watchdog's grace period instead when
that third is shorter)."""
_INT_SOURCES: Final = lib.TC_INT_EVENT | lib.TC_INT_OVERFLOW | lib.TC_INT_RESET
_SLOTS: Final[int] = lib.TC_SLOTS_PER_SPAN
_STRIDE: Final[int] = lib.TC_CHAN_STRIDE
_CHANNEL_EVENTS: Final = frozenset((EventCode.STATE, EventCode.INCOMING, EventCode.CLEARED))


@dataclass(frozen=True, slots=True)
class PumpStats:
    """What the event pump has handled since the Card opened."""

    events: int
    resyncs: int  # re-reads of every channel (after an overflow, a link error, a reset)
    ring_overflows: int  # drains that found events dropped by the card or the driver


class _Listener:
    """A listener as the pump holds it: `active` goes False at removal, so a removed
    listener is not called again, even by a hand-out already past it in the list."""

    __slots__ = ("callback", "ended", "active")

    def __init__(
        self, callback: Callable[[TypedEvent], None], ended: Callable[[], None] | None
    ) -> None:
        self.callback = callback
        self.ended = ended
        self.active = True


class IncomingCalls:
    """Incoming calls waiting for `Card.wait_for_incoming_call()`; each goes to one taker."""

    def __init__(self) -> None:
        self._cond = WakingCondition()
        self._calls: deque[tuple[CallChannel, int]] = deque()

    def offer(self, channel: CallChannel, call_id: int) -> None:
        """Queue the incoming call `call_id` of `channel` for a taker."""
        with self._cond:
            # Drop the calls that ended before anyone took them, or the queue grows for as
            # long as the application leaves wait_for_incoming_call() alone.
            self._calls = deque((c, i) for c, i in self._calls if c._incoming_waiting(i))
            self._calls.append((channel, call_id))
            self._cond.notify()

    def __len__(self) -> int:
        """Calls still waiting for a taker."""
        with self._cond:
            return sum(1 for c, i in self._calls if c._incoming_waiting(i))

    def take(self, timeout: float | None, check: Callable[[], None]) -> CallChannel | None:
        """The channel of the next call still waiting, now owned by the caller; None on
        timeout. `check` raises when the card can no longer be used."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                check()
                while not self._calls:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                    check()
                channel, call_id = self._calls.popleft()
            # Outside the lock: taking the call reserves its channel on the card.
            if channel._take_incoming(call_id):
                return channel

    def wake_all(self) -> None:
        """Wake every taker, to find the card gone (`check` raises)."""
        with self._cond:
            self._cond.notify_all()


class EventPump:
    """Owns the event thread of one card: sequencing, resync, reset and loss."""

    def __init__(
        self,
        device: Device,
        channels: Mapping[tuple[int, int], CallChannel],
        incoming: IncomingCalls,
        *,
        watchdog_ms: int,
        accept_bearers: int = lib.TC_ACCEPT_BEARERS_BOOT,
    ) -> None:
        """`accept_bearers`: the card's ACCEPT_BEARERS, written after every boot as the
        watchdog is."""
        self._dev = device
        self._channels = channels
        self._order = tuple(channels.values())
        self._incoming = incoming
        self._watchdog_ms = watchdog_ms
        # The longest wait in the driver; an observer feeds no watchdog.
        self._quiet = IDLE_CHECK if device.observer else _longest_wait(watchdog_ms)
        self._idle_at = time.monotonic()  # the event thread's latest idle check
        self._accept_bearers = accept_bearers
        self._overlap_digits: dict[int, int] = {}  # span -> OVERLAP_DIGITS this host set
        self._listeners: list[_Listener] = []  # replaced, never changed: read without a lock
        self._lock = threading.Lock()
        self._draining = threading.Lock()  # held by the thread draining and handing out
        self._losing = threading.Lock()  # held while the channels are told the card is gone
        self._interrupted = False  # a caller's drain was cut short: re-read the channels
        self._boot_id = device.info.boot_id
        self._stopping = False
        self._lost = False
        self._ended = False  # the listeners have been told that no more events will come
        self._events = self._resyncs = self._overflows = 0
        self._thread = threading.Thread(
            target=self._run, name=f"telecard events {device.path}", daemon=True
        )

    def start(self) -> None:
        """Set the card up for this host (interrupts, posting, watchdog), bring every channel
        in line with the registers, and start the thread."""
        self._set_up_card()
        self._resync_all()
        self._thread.start()

    def stop(self) -> None:
        """End the thread and close the device (which wakes the thread at once)."""
        with self._lock:
            self._stopping = True
        self._dev.close()
        # get_ident(), not current_thread(): that would register a caller that threading did
        # not start (telecard.aio's closing thread) for good, one entry per card closed.
        if threading.get_ident() != self._thread.ident and self._thread.is_alive():
            self._thread.join()
        self._end_listeners(closing=True)

    @property
    def lost(self) -> bool:
        """The device was lost: no more events will come."""
        return self._lost

    @property
    def stats(self) -> PumpStats:
        """What the pump has handled so far."""
        return PumpStats(self._events, self._resyncs, self._overflows)

    def add_listener(
        self, listener: Callable[[TypedEvent], None], ended: Callable[[], None] | None = None
    ) -> None:
        """Hand every event to `listener` from now on; `ended()` is called when no more will
        come (at once if the listeners have been told so already, after LOST when the card
        was lost: a listener added late still learns why nothing comes)."""
        entry = _Listener(listener, ended)
        with self._lock:
            gone = self._ended
            lost = self._lost
            self._listeners = [*self._listeners, entry]
        if gone:
            self._tell_ended([entry], lost)

    def remove_listener(self, listener: Callable[[TypedEvent], None]) -> None:
        """Stop handing events to `listener` (its first registration, if several); ValueError
        if it was not added. Once this returns it is not called again, but a call already
        under way on another thread may still be running: this never waits for it, since the
        listener may be waiting for something the caller holds."""
        with self._lock:
            for entry in self._listeners:
                if entry.callback == listener:
                    break
            else:
                raise ValueError(f"{listener!r} is not an event listener of this card")
            self._listeners = [e for e in self._listeners if e is not entry]
            entry.active = False

    def _end_listeners(self, *, closing: bool = False) -> None:
        """No more events will be handed out: hand a lost card's listeners the LOST event, then
        tell those that asked to know (once, whichever comes first: loss or stop). `closing`:
        from stop(), which leaves a lost card's to device_lost() (the closing thread holds the
        card's close lock, which a listener closing the card at LOST would wait for)."""
        with self._lock:
            if self._ended or (closing and self._lost):
                return
            self._ended = True
            entries = self._listeners
            lost = self._lost
        self._tell_ended(entries, lost)

    @classmethod
    def _tell_ended(cls, entries: list[_Listener], lost: bool) -> None:
        """Hand `entries` LOST if the card was `lost`, then call their `ended`."""
        try:
            if lost:
                cls._deliver(lost_event(), entries)
        finally:
            # Even past a listener's SystemExit, say: a reader left untold waits for ever.
            for entry in entries:
                if entry.ended is not None:
                    entry.ended()

    def _end_listeners_after_drain(self) -> None:
        """_end_listeners() once the thread draining now has finished."""
        with self._draining:
            self._end_listeners()

    def set_watchdog(self, ms: int) -> None:
        """Arm (or with 0 disarm) the card's host watchdog; kept across card resets."""
        self._watchdog_ms = ms
        self._quiet = _longest_wait(ms)
        self._dev.write(lib.TC_REG_HOST_WATCHDOG, ms.to_bytes(4, "little"))

    def set_overlap_digits(self, span: int, digits: int) -> None:
        """Write the span's OVERLAP_DIGITS; kept across card resets, as the watchdog is."""
        self._overlap_digits[span] = digits
        self._dev.write(_overlap_register(span), bytes((digits,)))

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping and not self._lost:
            try:
                self._guarded(self._wait_and_drain)
            except BaseException:  # SystemExit from a listener, say: not the end of the card
                log.exception("event thread: a step was cut short; re-reading the channels")
                self._interrupted = True

    def _wait_and_drain(self) -> None:
        if self._interrupted:
            self._interrupted = False
            self._resync_all()
        woke = self._dev.wait_events(self._quiet, standby=True) is not None
        now = time.monotonic()
        due = now - self._idle_at >= self._quiet
        if not woke:
            self._idle_at = now
            self._idle()
            # A caller draining meanwhile looks at the card itself (its waits time out too).
            if not self._draining.acquire(blocking=False):
                return
        elif not self._draining.acquire(timeout=self._quiet):
            return  # a caller drains; its waits in the driver see these events too
        try:
            self._drain()
        finally:
            self._draining.release()
        if woke and due:
            # News all along: the retries go too, after the news and without waiting for a
            # channel whose command is out (it may be waiting out a stalled link).
            self._idle_at = now
            self._idle(waiting=False)

    def wait(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None
    ) -> bool:
        """`cond.wait_for(predicate, timeout)`, but while no other thread drains, this one
        waits in the driver for the card's news and hands it out itself (see the module
        doc). `predicate` is called with `cond` held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        draining = False
        try:
            while True:
                if not draining and not (self._stopping or self._lost):
                    draining = self._draining.acquire(blocking=False)
                if draining:
                    self._guarded(self._drain)
                with cond:
                    if predicate():
                        return True
                    # Only the thread draining looks at the card; the others wait for it.
                    step = _next_wait(deadline, self._quiet if draining else IDLE_CHECK)
                    if step is None:
                        return False
                    if not draining:
                        cond.wait(step)  # whoever drains hands the news over
                        continue
                if self._stopping or self._lost:
                    self._draining.release()
                    draining = False
                else:
                    self._guarded(functools.partial(self._dev.wait_events, step))
        except BaseException:
            if draining:
                # KeyboardInterrupt, say, mid-drain: events taken from the driver may not
                # have reached their channels; the event thread re-reads them all.
                self._interrupted = True
            raise
        finally:
            if draining:
                self._draining.release()

    def hand_out_pending(self) -> None:
        """Hand out the events queued now, on this thread, unless another is handing them
        out: for a thread just back from the driver with no call of its own to wait for (the
        asyncio face's command threads), so that the event thread need not wake for them."""
        if self._stopping or self._lost or not self._draining.acquire(blocking=False):
            return
        try:
            self._guarded(self._drain)
        except BaseException:
            self._interrupted = True  # cut short mid-drain: the event thread re-reads
            raise
        finally:
            self._draining.release()

    def _guarded(self, step: Callable[[], object]) -> None:
        """Run a pump step; what goes wrong in it is the pump's to handle, on any thread."""
        try:
            step()
        except DeviceLostError:
            if not self._stopping:
                self.device_lost()
        except CardResetError:
            self.card_reset()
        except (ProtocolError, LinkTimeoutError) as exc:
            if self._stopping:
                return
            log.warning("event pump: %s; re-reading the channels", exc)
            self._safe_resync_all()
        except Exception:
            # A bug met handling an event: the pump must keep going (every waiter depends
            # on it), and the channels must catch up with what was missed.
            if self._stopping:
                return
            log.exception("event pump: unexpected error; re-reading the channels")
            time.sleep(0.01)
            self._safe_resync_all()

    def _drain(self) -> None:
        """With _draining held: hand out every event queued."""
        while not self._stopping:
            events, overflow = self._dev.drain_events()
            if overflow:
                self._overflows += 1  # counted with _draining held
                log.warning("the card or the driver dropped events; re-reading the channels")
                self._resync_all()
            for event in events:
                self._dispatch(event)
            if not events:
                return

    def _idle(self, *, waiting: bool = True) -> None:
        """Nothing happened for the longest wait, or news came all along: clears and
        UNRESERVEs the card has not confirmed are sent again, and RESERVEs it dropped (after
        a wait that timed out, the drain that follows also asks the card, feeding its
        watchdog). `waiting` False: channels with a command out are left for next time."""
        for channel in self._order:
            if channel._pending() and (waiting or not channel._command_lock.locked()):
                channel._retry_pending()

    def _dispatch(self, event: Event) -> None:
        self._events += 1  # counted with _draining held
        code = event.code
        channel = None
        block = None
        if code in _CHANNEL_EVENTS:
            channel = self._channels.get((event.span, event.channel))
            if channel is not None and (code != EventCode.STATE or event.arg == CardState.IDLE):
                # INCOMING, CLEARED (or a STATE change to IDLE): the registers at the event
                # hold what the channel needs. A posted event carries them; else read them now.
                block = (
                    ChannelBlock.parse(event.snapshot)
                    if event.snapshot
                    else self._read_block(channel)
                )
        if self._listeners:  # typed events are built only for someone
            self._hand_out(event, block)
        if code == EventCode.SPAN and log.isEnabledFor(logging.INFO):
            up = event.arg == lib.TC_DCHAN_UP
            log.info("span %d: D-channel %s", event.span, "up" if up else "down")
        elif code == EventCode.WATCHDOG:
            self._watchdog_expired()
        if code == EventCode.RESET:
            self.card_reset()
            return
        if channel is None:
            return
        if block is None:
            state = card_state(event.arg)
            if state is not None:
                channel._apply(_Update(state, event.seq, None, False))
            return
        if block.state is None:
            return
        incoming = code == EventCode.INCOMING and block.seq == event.seq
        channel._apply(_Update(block.state, block.seq, block, incoming))

    def _watchdog_expired(self) -> None:
        """The card's watchdog expired though this host lives on (the link stalled, say): it
        cleared the calls, whose CLEARED events follow, and dropped every reservation. A
        thread of its own reserves again the channels their callers still own (the idle
        check goes on where the link fails), so the card offers them no more incoming
        calls."""
        whose = "its controller's" if self._dev.observer else "this host's"
        log.warning("the card's host watchdog expired: it cleared %s calls", whose)
        owned = [c for c in self._order if c._reservation_dropped()]
        if owned:
            try:
                threading.Thread(
                    target=_reserve_again,
                    args=(owned,),
                    name=f"telecard reserve {self._dev.path}",
                    daemon=True,
                ).start()
            except RuntimeError:  # no thread to be had: the idle check sends them
                log.warning("no thread to reserve the channels again: the idle check will")

    def _hand_out(self, event: Event, block: ChannelBlock | None) -> None:
        typed = typed_event(event, block)
        if typed is None:
            log.warning("event code %d is not in the datasheet: not handed out", event.code)
            return
        self._deliver(typed, self._listeners)

    @staticmethod
    def _deliver(typed: TypedEvent, entries: list[_Listener]) -> None:
        # No lock is held across a listener: one that waits for a thread removing it (or
        # for anything that thread holds) would otherwise hang the hand-out for good.
        for entry in entries:
            if not entry.active:
                continue  # removed by a listener called before it, or by another thread
            try:
                entry.callback(typed)
            except Exception:
                log.exception("event listener %r failed", entry.callback)

    # -- resync, reset, loss --------------------------------------------------------------

    def _read_block(self, channel: CallChannel) -> ChannelBlock:
        return self._dev.read_channel(channel.span, channel.number)

    def _resync_all(self) -> None:
        with self._lock:  # close() re-reads too, from its own thread
            self._resyncs += 1
        # One read covers every channel block of every span.
        spans = 1 + max(span for span, _ in self._channels)
        raw = self._dev.read(lib.TC_CHAN_BASE, spans * _SLOTS * _STRIDE)
        for channel in self._order:
            offset = (channel.span * _SLOTS + channel.number) * _STRIDE
            block = ChannelBlock.parse(raw[offset : offset + BLOCK_LEN])
            if block.state is not None:
                channel._apply(_Update(block.state, block.seq, block, False))

    def resync(self) -> None:
        """Bring every channel in line with the card's registers now (from any thread)."""
        self._safe_resync_all()

    def _safe_resync_all(self) -> None:
        try:
            self._resync_all()
        except DeviceLostError:
            self.device_lost()
        except TelecardError as exc:
            log.warning("re-reading the channels failed: %s", exc)
            time.sleep(0.01)

    def card_reset(self) -> None:
        """The firmware rebooted: every call in progress and every reservation is gone."""
        boot_id = self._dev.info.boot_id
        with self._lock:
            if boot_id == self._boot_id or self._stopping:
                return
            old, self._boot_id = self._boot_id, boot_id
        log.info(
            "card reset (boot id %#010x, was %#010x): every call in progress ended",
            boot_id,
            old,
        )
        for channel in self._order:
            channel._fail(lost=False)
        try:
            self._set_up_card()
            if self._dev.observer:
                # Events reach an observer from its new HELLO on (datasheet 4.6): the calls
                # the controller made since the boot are in the registers only.
                self._resync_all()
        except TelecardError as exc:
            log.warning("setting the card up again after a reset failed: %s", exc)

    def device_lost(self) -> None:
        """The device has gone: every channel goes to State.ERROR (once). Whichever thread
        learns it, this returns only once every channel shows it: a call that raised
        DeviceLostError finds its channel in ERROR."""
        with self._losing:
            if self._lost:
                return
            log.warning("the device %s was lost", self._dev.path)
            for channel in self._order:
                channel._fail(lost=True)
            # Only now: a thread that sees `lost` (check_usable) may rely on every channel
            # showing it.
            with self._lock:
                self._lost = True
        self._incoming.wake_all()
        # LOST reaches the listeners as any event does, from the one thread handing out: the
        # event thread when none is, else a thread of its own once the drain under way is done
        # (never an application's thread: it may hold locks a LOST listener needs).
        if threading.get_ident() == self._thread.ident and self._draining.acquire(blocking=False):
            try:
                self._end_listeners()
            finally:
                self._draining.release()
        else:
            threading.Thread(
                target=self._end_listeners_after_drain,
                name=f"telecard lost {self._dev.path}",
                daemon=True,
            ).start()

    def _set_up_card(self) -> None:
        """Interrupts, event posting, the watchdog, the bearers accepted and the overlap
        receiving rules set, all back to their boot values after every boot."""
        if self._dev.observer:
            return  # the controller's to set; an observer's events come unasked (4.6)
        # INT_STATUS (W1C: acknowledge a boot) and INT_MASK are adjacent: one write.
        assert lib.TC_REG_INT_MASK == lib.TC_REG_INT_STATUS + 4
        self._dev.write(
            lib.TC_REG_INT_STATUS,
            lib.TC_INT_RESET.to_bytes(4, "little") + _INT_SOURCES.to_bytes(4, "little"),
        )
        self._dev.set_event_post(True)
        self._dev.write(lib.TC_REG_HOST_WATCHDOG, self._watchdog_ms.to_bytes(4, "little"))
        self._dev.write(lib.TC_REG_ACCEPT_BEARERS, self._accept_bearers.to_bytes(4, "little"))
        for span, digits in list(self._overlap_digits.items()):
            self._dev.write(_overlap_register(span), bytes((digits,)))


def _reserve_again(channels: list[CallChannel]) -> None:
    for channel in channels:
        try:
            channel._reserve_again()
        except TelecardError:
            pass  # still to be reserved: the idle check sends it again


def _overlap_register(span: int) -> int:
    return lib.TC_SPAN_BASE + span * lib.TC_SPAN_STRIDE + lib.TC_SPAN_OVERLAP_DIGITS


def _longest_wait(watchdog_ms: int) -> float:
    """IDLE_CHECK, or a third of the watchdog's grace period when that is shorter: a host
    waiting for news looks at the card (feeding the watchdog) three times a period."""
    return min(IDLE_CHECK, watchdog_ms / 3000) if watchdog_ms else IDLE_CHECK


def _next_wait(deadline: float | None, longest: float) -> float | None:
    """How long to wait in the driver before looking again (at most `longest`); None once
    `deadline` passed."""
    if deadline is None:
        return longest
    remaining = deadline - time.monotonic()
    return None if remaining <= 0 else min(remaining, longest)
