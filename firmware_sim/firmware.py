"""The card's firmware: registers, event ring, interrupts, mailboxes and boot.

Everything here runs on the card's event loop thread. The public test hooks (set_channel,
push_event, set_span, reset) may be called from any thread: they hop onto the loop.
"""

import asyncio
import concurrent.futures
import logging
import os
import struct
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from firmware_sim import q931
from firmware_sim import regmap as rm
from firmware_sim.registers import Registers
from firmware_sim.signalling import (
    ALL_BEARERS,
    PLAIN_CALL,
    CallInfo,
    ChannelSink,
    SpanSignalling,
)

log = logging.getLogger(__name__)

HW_VERSION = 0x0100
FW_VERSION = 0x0100
CARD_EVENT = 0xFF  # span and channel of card-wide events
_M32 = 0xFFFFFFFF
_EVENT = struct.Struct("<BBBBI")
_DIGITS = frozenset(b"0123456789*#")
_COMMANDS = frozenset((rm.CMD_MAKE_CALL, rm.CMD_ALERT, rm.CMD_ANSWER, rm.CMD_RELEASE,
                       rm.CMD_RESERVE, rm.CMD_UNRESERVE, rm.CMD_MAKE_CALL_OVERLAP,
                       rm.CMD_SEND_DIGITS, rm.CMD_SEND_DIGITS_COMPLETE))
# Commands that carry CALLED (and CALLING), and the fewest CALLED digits each takes
_NUMBER_COMMANDS = {rm.CMD_MAKE_CALL: 1, rm.CMD_MAKE_CALL_OVERLAP: 0, rm.CMD_SEND_DIGITS: 1,
                    rm.CMD_SEND_DIGITS_COMPLETE: 0}
_OWNER_COMMANDS = {rm.CMD_RESERVE: rm.OWNER_HOST, rm.CMD_UNRESERVE: rm.OWNER_NONE}
_W1C_INT = rm.INT_OVERFLOW | rm.INT_RESET | rm.INT_WATCHDOG
_POST_BITS = rm.POST_ENABLE | rm.POST_AUTO_ACK
# The types of number and numbering plans of datasheet 2.4, as *_PLAN register values
_PLANS = frozenset(
    ton << rm.TON_SHIFT | npi
    for ton in (rm.TON_UNKNOWN, rm.TON_INTERNATIONAL, rm.TON_NATIONAL, rm.TON_NETWORK_SPECIFIC,
                rm.TON_SUBSCRIBER, rm.TON_ABBREVIATED)
    for npi in (rm.NPI_UNKNOWN, rm.NPI_E164, rm.NPI_X121, rm.NPI_F69, rm.NPI_NATIONAL,
                rm.NPI_PRIVATE)
)
_PRES_VALUES = frozenset(
    pres << rm.PRES_SHIFT | screen
    for pres in (rm.PRES_ALLOWED, rm.PRES_RESTRICTED, rm.PRES_NOT_AVAILABLE)
    for screen in range(rm.SCREEN_MASK + 1)
)
_SNAPSHOT_CODES = frozenset((rm.EV_INCOMING, rm.EV_CLEARED))
_NO_CALL_TO_CLEAR = frozenset((rm.ST_IDLE, rm.ST_CLEARING, rm.ST_MAINTENANCE))
# States that start no call: entering one keeps the last call's cause and numbers.
_NO_NEW_CALL = frozenset((rm.ST_IDLE, rm.ST_MAINTENANCE))
_SPANS_END = rm.SPAN_BASE + rm.MAX_SPANS * rm.SPAN_STRIDE
_NO_SNAPSHOT = b"\0"
_SNAPSHOT_LEN = bytes((rm.POST_SNAPSHOT_LEN,))
# regmap has no constant for it; the datasheet fixes 16 (E1) and 24 (T1).
_DCHANNEL_TIMESLOT = {rm.LINE_E1: 16, rm.LINE_T1: 24}
# Datasheet 2.6: the watchdog clears calls with cause 41, ITU-T coding, at the location of the
# card's own causes (user on a TE span, private network serving the local user on an NT span).
_WATCHDOG_CAUSE = {
    role: q931.cause_body(q931.CAUSE_TEMPORARY_FAILURE, location)
    for role, location in ((rm.ROLE_TE, q931.LOC_USER), (rm.ROLE_NT, q931.LOC_PRIVATE_LOCAL))
}

SignallingFactory = Callable[
    [asyncio.AbstractEventLoop, ChannelSink, int, int, int], SpanSignalling
]
"""(loop, sink, span, line: regmap.LINE_*, role: regmap.ROLE_*) -> SpanSignalling"""

T = TypeVar("T")


def on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """The calling thread is the one running `loop`."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_on_loop(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run fn on the loop's thread and return its result (directly when already there)."""
    if on_loop_thread(loop):
        return fn(*args, **kwargs)
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the calling thread
            future.set_exception(exc)

    loop.call_soon_threadsafe(run)
    return future.result(timeout=10)


class HostPort(Protocol):
    """What the firmware needs from the host link (the control port or a monitor port)."""

    ready: bool  # a session is open (HELLO answered OK since the last boot)

    def send_irq(self, pending: int) -> None:
        """Send an IRQ frame carrying INT_STATUS & INT_MASK."""

    def send_events(self, first: int, entries: list[bytes]) -> None:
        """Send one EVENTS frame: ring index `first`, then each entry with its snapshot."""

    def on_boot(self) -> None:
        """The firmware booted: forget the session, the per-tag memory and the counters."""


class Firmware:
    """The card's firmware; implements signalling.ChannelSink for every span."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spans: int,
        line: int,
        role: int,
        signalling_factory: SignallingFactory,
    ) -> None:
        self.loop = loop
        self.spans = spans
        self.line = line
        self.role = role
        self.regs = Registers()
        self.link: HostPort | None = None
        #: The monitor ports (datasheet 4.6): each gets every event while its session is open.
        self.monitors: list[HostPort] = []
        self.boot_id = 0
        self.bearers = frozenset(rm.bearer_timeslots(line))
        self._head = 0
        self._tail = 0
        self._dropped = 0
        self._sticky = 0  # INT_STATUS W1C bits
        self._int_status = 0
        self._mask = 0
        self._irq_last = 0
        self._irq_timer: asyncio.TimerHandle | None = None
        self._post = False  # EVENT_POST.POST_ENABLE
        self._auto_ack = False  # EVENT_POST.AUTO_ACK, with POST_ENABLE
        self._posted: list[bytes] = []  # entries (with snapshot) written in this loop step
        self._posted_first = 0  # ring index of _posted[0]
        self._post_scheduled = False
        self._running = False
        self._watchdog_ms = 0  # HOST_WATCHDOG
        self._last_request = 0.0  # loop time of the last request from the host
        self._watchdog_timer: asyncio.TimerHandle | None = None
        self._signalling_factory = signalling_factory
        self.signalling: list[SpanSignalling] = []

    # --- boot -------------------------------------------------------------------------

    def boot(self) -> None:
        """(Re)boot: fresh BOOT_ID and registers, EV_RESET, signalling restarted."""
        if self._running:
            for sig in self.signalling:
                sig.stop()
            self._running = False
        if self._irq_timer is not None:
            self._irq_timer.cancel()
            self._irq_timer = None
        self._disarm_watchdog()  # the cleared registers hold HOST_WATCHDOG 0 and no OWNER
        regs = self.regs
        regs.clear()
        boot_id = self.boot_id
        while boot_id in (0, self.boot_id):
            boot_id = int.from_bytes(os.urandom(4), "little")
        self.boot_id = boot_id
        regs.set_u32(rm.REG_MAGIC, rm.MAGIC_VALUE)
        regs.set_u16(rm.REG_HW_VERSION, HW_VERSION)
        regs.set_u16(rm.REG_FW_VERSION, FW_VERSION)
        regs.set_u16(rm.REG_PROTO_VERSION, rm.PROTO_VERSION)
        regs.set_u8(rm.REG_NUM_SPANS, self.spans)
        regs.set_u32(rm.REG_BOOT_ID, boot_id)
        regs.set_u32(rm.RING_SIZE, rm.RING_ENTRIES)
        regs.set_u8(rm.REG_MONITOR_PORTS, len(self.monitors))
        regs.set_u32(rm.REG_ACCEPT_BEARERS, rm.ACCEPT_BEARERS_BOOT)
        for span in range(self.spans):
            regs.set_u8(rm.span_reg(span, rm.SPAN_LINE_TYPE), self.line)
            regs.set_u8(rm.span_reg(span, rm.SPAN_ROLE), self.role)
            regs.set_u8(rm.span_reg(span, rm.SPAN_NUM_CHANNELS), len(self.bearers))
            regs.set_u8(rm.span_reg(span, rm.SPAN_DCHANNEL_TIMESLOT), _DCHANNEL_TIMESLOT[self.line])
        self._head = self._tail = self._dropped = 0
        self._sticky = rm.INT_RESET
        self._int_status = 0  # what the cleared registers hold
        self._mask = 0
        self._irq_last = 0
        self._post = self._auto_ack = False
        self._posted = []
        if self.link is not None:
            self.link.on_boot()
        for monitor in self.monitors:
            monitor.on_boot()
        self._push_event(CARD_EVENT, CARD_EVENT, rm.EV_RESET, 0)
        self._running = True
        # A reboot starts each span's signalling afresh, as a real firmware reset would.
        self.signalling = [
            self._signalling_factory(self.loop, self, span, self.line, self.role)
            for span in range(self.spans)
        ]
        for sig in self.signalling:
            sig.accept_bearers(rm.ACCEPT_BEARERS_BOOT)
            sig.start()

    def shutdown(self) -> None:
        """Stop signalling and timers (the card is closing)."""
        if self._running:
            self._running = False
            for sig in self.signalling:
                sig.stop()
        if self._irq_timer is not None:
            self._irq_timer.cancel()
            self._irq_timer = None
        self._disarm_watchdog()

    # --- host session and watchdog ------------------------------------------------------

    def host_alive(self) -> None:
        """A request frame with a good CRC arrived: feed the watchdog (hot path: timer work only
        for the first request after an expiry, which starts the count again)."""
        self._last_request = self.loop.time()
        if self._watchdog_ms and self._watchdog_timer is None:
            self._watchdog_timer = self.loop.call_at(
                self._last_request + self._watchdog_ms / 1000, self._watchdog_check
            )

    @property
    def ring_head(self) -> int:
        """RING_HEAD: the index of the next event the card writes."""
        return self._head

    def host_session(self) -> None:
        """A HELLO opened a new host session, which owns no channel yet."""
        self._release_reservations()

    def _set_watchdog(self, ms: int) -> None:
        self._watchdog_ms = ms
        self.regs.set_u32(rm.REG_HOST_WATCHDOG, ms)
        if self._watchdog_timer is not None:
            self._watchdog_timer.cancel()
            self._watchdog_timer = None
        if ms:
            self._watchdog_timer = self.loop.call_at(
                self._last_request + ms / 1000, self._watchdog_check
            )

    def _disarm_watchdog(self) -> None:
        if self._watchdog_timer is not None:
            self._watchdog_timer.cancel()
            self._watchdog_timer = None
        self._watchdog_ms = 0

    def _watchdog_check(self) -> None:
        # One timer per grace period at most: requests only stamp _last_request, and the timer
        # moves itself to the stamped deadline until a whole period passes without one.
        deadline = self._last_request + self._watchdog_ms / 1000
        if deadline > self.loop.time():
            self._watchdog_timer = self.loop.call_at(deadline, self._watchdog_check)
            return
        self._watchdog_timer = None
        self._watchdog_expired()

    def _watchdog_expired(self) -> None:
        """Datasheet 2.6: the host is gone; free its channels, tell it, clear calls. The
        watchdog stays armed without a timer until the next request (host_alive)."""
        self._release_reservations()
        self._sticky |= rm.INT_WATCHDOG
        self._push_event(CARD_EVENT, CARD_EVENT, rm.EV_WATCHDOG, 0)
        cause = _WATCHDOG_CAUSE[self.role]
        mem = self.regs.mem
        for span, sig in enumerate(self.signalling):
            for ts in sorted(self.bearers):
                if mem[rm.chan_reg(span, ts, rm.CHAN_STATE)] not in _NO_CALL_TO_CLEAR:
                    sig.command(ts, rm.CMD_RELEASE, "", "", cause)

    def _release_reservations(self) -> None:
        mem = self.regs.mem
        for span in range(self.spans):
            for ts in self.bearers:
                if mem[rm.chan_reg(span, ts, rm.CHAN_OWNER)] != rm.OWNER_NONE:
                    self._set_owner(span, ts, rm.CMD_UNRESERVE)

    def _set_owner(self, span: int, timeslot: int, cmd: int) -> int:
        """RESERVE or UNRESERVE: tell the span's signalling, then OWNER and SEQ on a change."""
        status = self.signalling[span].command(timeslot, cmd, "", "", b"")
        base = rm.chan_reg(span, timeslot, 0)
        owner = _OWNER_COMMANDS[cmd]
        if status == rm.MB_DONE and self.regs.mem[base + rm.CHAN_OWNER] != owner:
            self.regs.set_u8(base + rm.CHAN_OWNER, owner)
            self.regs.set_u32(base + rm.CHAN_SEQ, (self.regs.u32(base + rm.CHAN_SEQ) + 1) & _M32)
        return status

    # --- events and interrupts --------------------------------------------------------

    def _push_event(
        self, span: int, channel: int, code: int, arg: int, seq: int | None = None
    ) -> None:
        head = self._head
        if (head - self._tail) & _M32 >= rm.RING_ENTRIES and self._auto_ack and self._posted:
            # Sending what this step has posted so far consumes it (datasheet 3.1).
            self._flush_posted()
        if (head - self._tail) & _M32 >= rm.RING_ENTRIES:
            self._dropped = (self._dropped + 1) & _M32
            self.regs.set_u32(rm.RING_DROPPED, self._dropped)
            self.regs.set_u32(rm.RING_OVERFLOW, 1)
            self._sticky |= rm.INT_OVERFLOW
            self._update_int()
            return
        mem = self.regs.mem
        at = rm.RING_ENTRIES_BASE + (head % rm.RING_ENTRIES) * rm.EVENT_SIZE
        _EVENT.pack_into(mem, at, span, channel, code, arg, head if seq is None else seq)
        self._head = (head + 1) & _M32
        self.regs.set_u32(rm.RING_HEAD, self._head)
        if self._post or self.monitors and any(m.ready for m in self.monitors):
            self._post_event(head, bytes(mem[at : at + rm.EVENT_SIZE]), span, channel, code)
        self._update_int(self._post)

    def _post_event(self, index: int, entry: bytes, span: int, channel: int, code: int) -> None:
        """Queue a ring entry for this loop step's EVENTS frames (datasheet 3.1)."""
        if code in _SNAPSHOT_CODES and span < rm.MAX_SPANS and channel < rm.SLOTS_PER_SPAN:
            # The registers as they stand now: a later change must not reach the host as
            # this event's cause or numbers.
            block = rm.chan_reg(span, channel, 0)
            entry += _SNAPSHOT_LEN + self.regs.mem[block : block + rm.POST_SNAPSHOT_LEN]
        else:
            entry += _NO_SNAPSHOT
        if not self._posted:
            self._posted_first = index
        self._posted.append(entry)
        if not self._post_scheduled:
            self._post_scheduled = True
            self.loop.call_soon(self._flush_posted)

    def _flush_posted(self) -> None:
        self._post_scheduled = False
        posted, first = self._posted, self._posted_first
        self._posted = []
        if not posted:
            return
        # POST_ENABLE is the controller's; its observers get the events whatever it says.
        ports = [m for m in self.monitors if m.ready]
        if self._post and self.link is not None:
            ports.insert(0, self.link)
        for port in ports:
            for i in range(0, len(posted), rm.POST_MAX_ENTRIES):
                port.send_events((first + i) & _M32, posted[i : i + rm.POST_MAX_ENTRIES])
        if self._auto_ack:
            end = (first + len(posted)) & _M32
            # Never backwards: the host may have written TAIL past these itself.
            if (end - self._tail) & _M32 <= (self._head - self._tail) & _M32:
                self._tail = end
                self.regs.set_u32(rm.RING_TAIL, end)
                self._update_int()

    def _update_int(self, posted: bool = False) -> None:
        """Follow INT_STATUS and send IRQ frames; `posted`: an event just went to the
        EVENTS frames, which stand in for the IRQ that EVENT alone would send."""
        status = self._sticky | (rm.INT_EVENT if self._head != self._tail else 0)
        if status != self._int_status:
            self._int_status = status
            self.regs.set_u32(rm.REG_INT_STATUS, status)
        pending = status & self._mask
        last = self._irq_last
        self._irq_last = pending
        if not pending:
            if self._irq_timer is not None:
                self._irq_timer.cancel()
                self._irq_timer = None
            return
        if pending & ~last:
            if self._irq_timer is not None:
                self._irq_timer.cancel()
            self._irq_timer = self.loop.call_later(rm.IRQ_REPEAT_SECONDS, self._irq_repeat)
            if self.link is not None and not (posted and pending & ~last == rm.INT_EVENT):
                self.link.send_irq(pending)
        elif self._irq_timer is None:
            self._irq_timer = self.loop.call_later(rm.IRQ_REPEAT_SECONDS, self._irq_repeat)

    def _irq_repeat(self) -> None:
        pending = self._int_status & self._mask
        if not pending:
            self._irq_timer = None
            return
        self._irq_timer = self.loop.call_later(rm.IRQ_REPEAT_SECONDS, self._irq_repeat)
        if self.link is not None:
            self.link.send_irq(pending)

    def irq_pending(self) -> int:
        """INT_STATUS & INT_MASK now."""
        return self._int_status & self._mask

    # --- host access ------------------------------------------------------------------

    def host_write(self, addr: int, data: bytes) -> int:
        """Apply a host WRITE (length already checked) and return its status (regmap.S_*)."""
        status = self.regs.check_write(addr, len(data))
        if status != rm.S_OK:
            return status
        if addr >= rm.MBOX_BASE:
            self._write_mailbox(addr, data)
            return rm.S_OK
        return self._write_control(addr, data)

    def _write_control(self, addr: int, data: bytes) -> int:
        overlap: list[tuple[int, int]] = []
        if addr < _SPANS_END:  # the only writable span register: OVERLAP_DIGITS (2.7)
            for i in range(len(data)):
                span, offset = divmod(addr + i - rm.SPAN_BASE, rm.SPAN_STRIDE)
                if offset == rm.SPAN_OVERLAP_DIGITS and span >= 0:
                    if span >= self.spans or data[i] > rm.NUMBER_MAX:
                        return rm.S_BAD_VALUE
                    overlap.append((span, data[i]))
        tail = _overlay(rm.RING_TAIL, addr, data)
        new_tail = self._tail
        if tail is not None:
            value, mask = tail
            new_tail = (self._tail & ~mask) | value
            if (new_tail - self._tail) & _M32 > (self._head - self._tail) & _M32:
                return rm.S_BAD_VALUE
        watchdog = _overlay(rm.REG_HOST_WATCHDOG, addr, data)
        if watchdog is not None:
            value, mask = watchdog
            new_watchdog = (self._watchdog_ms & ~mask) | value
            if new_watchdog > rm.HOST_WATCHDOG_MAX:
                return rm.S_BAD_VALUE
        bearers = _overlay(rm.REG_ACCEPT_BEARERS, addr, data)
        new_bearers = 0
        if bearers is not None:
            value, mask = bearers
            new_bearers = (self.regs.u32(rm.REG_ACCEPT_BEARERS) & ~mask) | value
            if new_bearers & ~ALL_BEARERS:
                return rm.S_BAD_VALUE
        written = _overlay(rm.REG_INT_STATUS, addr, data)
        if written is not None:
            self._sticky &= ~(written[0] & _W1C_INT)
        written = _overlay(rm.RING_OVERFLOW, addr, data)
        if written is not None and written[0] & 1:
            self.regs.set_u32(rm.RING_OVERFLOW, 0)
        written = _overlay(rm.REG_INT_MASK, addr, data)
        if written is not None:
            value, mask = written
            self._mask = (self._mask & ~mask) | value
            self.regs.set_u32(rm.REG_INT_MASK, self._mask)
        written = _overlay(rm.REG_EVENT_POST, addr, data)
        if written is not None:
            if self._posted:
                # Queued with posting as it was: they go to the controller (or not) by it.
                self._flush_posted()
            value, mask = written
            post = ((self.regs.u32(rm.REG_EVENT_POST) & ~mask) | value) & _POST_BITS
            self._post = bool(post & rm.POST_ENABLE)
            acking, self._auto_ack = self._auto_ack, post == _POST_BITS
            self.regs.set_u32(rm.REG_EVENT_POST, post)
            if self._auto_ack and not acking:
                # Datasheet 3.1: the events already in the ring are consumed with it.
                self._tail = self._head
                self.regs.set_u32(rm.RING_TAIL, self._head)
                self._update_int()
        if tail is not None:
            self._tail = new_tail
            self.regs.set_u32(rm.RING_TAIL, new_tail)
        if watchdog is not None:
            self._set_watchdog(new_watchdog)
        if bearers is not None:
            self.regs.set_u32(rm.REG_ACCEPT_BEARERS, new_bearers)
            for sig in self.signalling:
                sig.accept_bearers(new_bearers)
        for span, digits in overlap:
            self.regs.set_u8(rm.span_reg(span, rm.SPAN_OVERLAP_DIGITS), digits)
            self.signalling[span].overlap_digits = digits
        self._update_int()
        written = _overlay(rm.REG_CARD_CONTROL, addr, data)
        if written is not None and written[0] & rm.CTRL_SOFT_RESET:
            self.boot()
        return rm.S_OK

    def host_command(self, block: int, data: bytes) -> tuple[int, int, int]:
        """Apply a host COMMAND (block index and lengths already checked; CMD not 0) and
        return (the command's mailbox status, the channel's SEQ and STATE after it)."""
        base = rm.MBOX_BASE + block * rm.MBOX_STRIDE
        self.regs.write_mailbox(base, data)
        span, timeslot = divmod(block, rm.SLOTS_PER_SPAN)
        status = self._run_command(span, timeslot, base, report=False)
        chan = rm.chan_reg(span, timeslot, 0)
        return status, self.regs.u32(chan + rm.CHAN_SEQ), self.regs.u8(chan + rm.CHAN_STATE)

    def _write_mailbox(self, addr: int, data: bytes) -> None:
        self.regs.write_mailbox(addr, data)
        mem = self.regs.mem
        first = -(-(addr - rm.MBOX_BASE) // rm.MBOX_STRIDE)
        last = (addr + len(data) - 1 - rm.MBOX_BASE) // rm.MBOX_STRIDE
        for block in range(first, last + 1):
            base = rm.MBOX_BASE + block * rm.MBOX_STRIDE
            if mem[base + rm.MBOX_CMD]:
                self._run_command(block // rm.SLOTS_PER_SPAN, block % rm.SLOTS_PER_SPAN, base)

    def _run_command(self, span: int, timeslot: int, base: int, *, report: bool = True) -> int:
        """Run the mailbox's command and return its status; `report`: push the COMMAND_DONE
        event (a COMMAND request's response carries the result instead)."""
        mem = self.regs.mem
        seq = self.regs.u32(rm.chan_reg(span, timeslot, rm.CHAN_SEQ))
        if mem[base + rm.MBOX_STATUS] == rm.MB_PENDING:
            mem[base + rm.MBOX_CMD] = rm.CMD_NONE
            if report:
                self._push_event(span, timeslot, rm.EV_COMMAND_DONE, rm.MB_ERR_BUSY, seq)
            return rm.MB_ERR_BUSY
        mem[base + rm.MBOX_STATUS] = rm.MB_PENDING
        try:
            status = self._execute(span, timeslot, base)
        except Exception:
            log.exception("signalling failed on span %d timeslot %d", span, timeslot)
            status = rm.MB_ERR_STATE
        mem[base + rm.MBOX_STATUS] = status
        mem[base + rm.MBOX_CMD] = rm.CMD_NONE
        if report:
            seq = self.regs.u32(rm.chan_reg(span, timeslot, rm.CHAN_SEQ))
            self._push_event(span, timeslot, rm.EV_COMMAND_DONE, status, seq)
        return status

    def _execute(self, span: int, timeslot: int, base: int) -> int:
        mem = self.regs.mem
        cmd = mem[base + rm.MBOX_CMD]
        if cmd not in _COMMANDS:
            return rm.MB_ERR_UNKNOWN
        called = calling = ""
        cause = b""
        info = PLAIN_CALL
        if cmd in _NUMBER_COMMANDS:
            called_len = mem[base + rm.MBOX_CALLED_LEN]
            calling_len = mem[base + rm.MBOX_CALLING_LEN]
            if (not _NUMBER_COMMANDS[cmd] <= called_len <= rm.NUMBER_MAX
                    or calling_len > rm.NUMBER_MAX):
                return rm.MB_ERR_ARGUMENT
            called_b = bytes(mem[base + rm.MBOX_CALLED : base + rm.MBOX_CALLED + called_len])
            calling_b = bytes(mem[base + rm.MBOX_CALLING : base + rm.MBOX_CALLING + calling_len])
            if not _DIGITS.issuperset(called_b) or not _DIGITS.issuperset(calling_b):
                return rm.MB_ERR_ARGUMENT
            called = called_b.decode("ascii")
            calling = calling_b.decode("ascii")
            info = CallInfo(*mem[base + rm.MBOX_CALLED_PLAN : base + rm.MBOX_BEARER + 1])
            if (info.called_plan not in _PLANS or info.calling_plan not in _PLANS
                    or info.calling_pres not in _PRES_VALUES or info.bearer > rm.BEARER_DIGITAL):
                return rm.MB_ERR_ARGUMENT
        elif cmd == rm.CMD_RELEASE:
            cause_len = mem[base + rm.MBOX_CAUSE_LEN]
            if not 2 <= cause_len <= rm.CAUSE_MAX:
                return rm.MB_ERR_ARGUMENT
            cause = bytes(mem[base + rm.MBOX_CAUSE : base + rm.MBOX_CAUSE + cause_len])
        if span >= self.spans or timeslot not in self.bearers:
            return rm.MB_ERR_ARGUMENT
        if cmd in _OWNER_COMMANDS:
            return self._set_owner(span, timeslot, cmd)
        return self.signalling[span].command(timeslot, cmd, called, calling, cause, info)

    # --- ChannelSink ------------------------------------------------------------------

    def channel_update(
        self,
        span: int,
        timeslot: int,
        *,
        state: int | None = None,
        direction: int | None = None,
        call_ref: int | None = None,
        called: str | None = None,
        calling: str | None = None,
        cause: bytes | None = None,
        cause_source: int | None = None,
        event: int | None = None,
        info: CallInfo | None = None,
    ) -> None:
        """Change channel registers, bump SEQ and push one event (see ChannelSink).

        A new call (state leaving IDLE) also forgets the previous call's cause and numbers
        unless new ones are given, so the host never sees them attached to the new call.
        """
        self._check_channel(span, timeslot)
        regs = self.regs
        base = rm.chan_reg(span, timeslot, 0)
        # What the far end sent may be longer than the registers; the datasheet says the card
        # keeps the first octets rather than losing the call over it.
        called_b = None if called is None else called.encode("ascii", "replace")[: rm.NUMBER_MAX]
        calling_b = (
            None if calling is None else calling.encode("ascii", "replace")[: rm.NUMBER_MAX]
        )
        if cause is not None:
            cause = cause[: rm.CAUSE_MAX]
        if state is not None:
            if regs.mem[base + rm.CHAN_STATE] == rm.ST_IDLE and state not in _NO_NEW_CALL:
                if cause is None:
                    regs.set_u8(base + rm.CHAN_CAUSE_LEN, 0)
                    regs.set_u8(base + rm.CHAN_CAUSE_SOURCE, rm.CAUSE_SRC_NONE)
                    regs.set_bytes(base + rm.CHAN_CAUSE, b"", rm.CAUSE_MAX)
                called_b = b"" if called_b is None else called_b
                calling_b = b"" if calling_b is None else calling_b
                info = PLAIN_CALL if info is None else info
            regs.set_u8(base + rm.CHAN_STATE, state)
        if direction is not None:
            regs.set_u8(base + rm.CHAN_DIRECTION, direction)
        if call_ref is not None:
            regs.set_u16(base + rm.CHAN_CALL_REF, call_ref)
        if called_b is not None:
            regs.set_u8(base + rm.CHAN_CALLED_LEN, len(called_b))
            regs.set_bytes(base + rm.CHAN_CALLED, called_b, rm.NUMBER_MAX)
        if calling_b is not None:
            regs.set_u8(base + rm.CHAN_CALLING_LEN, len(calling_b))
            regs.set_bytes(base + rm.CHAN_CALLING, calling_b, rm.NUMBER_MAX)
        if info is not None:
            mem = regs.mem
            mem[base + rm.CHAN_PRES_BEARER] = info.calling_pres | info.bearer << rm.BEARER_SHIFT
            mem[base + rm.CHAN_CALLED_PLAN] = info.called_plan
            mem[base + rm.CHAN_CALLING_PLAN] = info.calling_plan
        if cause is not None:
            regs.set_u8(base + rm.CHAN_CAUSE_LEN, len(cause))
            regs.set_bytes(base + rm.CHAN_CAUSE, cause, rm.CAUSE_MAX)
        if cause_source is not None:
            regs.set_u8(base + rm.CHAN_CAUSE_SOURCE, cause_source)
        seq = (regs.u32(base + rm.CHAN_SEQ) + 1) & _M32
        regs.set_u32(base + rm.CHAN_SEQ, seq)
        self._push_event(
            span,
            timeslot,
            rm.EV_STATE if event is None else event,
            regs.mem[base + rm.CHAN_STATE],
            seq,
        )

    def span_update(
        self, span: int, *, dchannel_up: bool | None = None, alarms: int | None = None
    ) -> None:
        """Change the span's D-channel state or alarm bits and push EV_SPAN."""
        if not 0 <= span < self.spans:
            raise ValueError(f"no span {span}")
        if dchannel_up is not None:
            self.regs.set_u8(
                rm.span_reg(span, rm.SPAN_DCHANNEL), rm.DCHAN_UP if dchannel_up else rm.DCHAN_DOWN
            )
        if alarms is not None:
            self.regs.set_u8(rm.span_reg(span, rm.SPAN_ALARMS), alarms)
        self._push_event(span, 0, rm.EV_SPAN, self.regs.u8(rm.span_reg(span, rm.SPAN_DCHANNEL)))

    def channel_state(self, span: int, timeslot: int) -> int:
        return self.regs.mem[rm.chan_reg(span, timeslot, rm.CHAN_STATE)]

    def dchannel_up(self, span: int) -> bool:
        return self.regs.mem[rm.span_reg(span, rm.SPAN_DCHANNEL)] == rm.DCHAN_UP

    def _check_channel(self, span: int, timeslot: int) -> None:
        if not 0 <= span < self.spans or timeslot not in self.bearers:
            raise ValueError(f"span {span} timeslot {timeslot} is not a bearer channel")

    # --- test hooks (any thread) ------------------------------------------------------

    def set_channel(self, span: int, timeslot: int, **fields: Any) -> None:
        """channel_update from any thread."""
        call_on_loop(self.loop, self.channel_update, span, timeslot, **fields)

    def push_event(self, span: int, channel: int, code: int, arg: int) -> None:
        """Push a raw event into the ring from any thread (seq: RING_HEAD at write)."""
        call_on_loop(self.loop, self._push_event, span, channel, code, arg)

    def set_span(
        self, span: int, *, alarms: int | None = None, dchannel_up: bool | None = None
    ) -> None:
        """span_update from any thread."""
        call_on_loop(self.loop, self.span_update, span, alarms=alarms, dchannel_up=dchannel_up)

    def reset(self) -> None:
        """Reboot the firmware from any thread (as a power cycle of the card would)."""
        call_on_loop(self.loop, self.boot)


def _overlay(reg: int, addr: int, data: bytes) -> tuple[int, int] | None:
    """The bytes of a write that land in the u32 at `reg`: (value, byte mask), or None."""
    lo = max(reg, addr)
    hi = min(reg + 4, addr + len(data))
    if lo >= hi:
        return None
    value = mask = 0
    for a in range(lo, hi):
        shift = (a - reg) * 8
        value |= data[a - addr] << shift
        mask |= 0xFF << shift
    return value, mask
