"""Q.931 basic call control for one PRI span, user side (TE) or network side (NT).

`CallControl` is the protocol entity; it reports to a `CallListener`. `CardSignalling` is the
card's listener: it turns host mailbox commands into calls and calls into register updates
(it implements signalling.SpanSignalling). The network emulator is another listener.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from . import q931
from .dchannel import Receiver
from .lapd import DEFAULT_TIMERS as LAPD_TIMER_DEFAULTS
from .lapd import Lapd
from .q931 import (
    ALERTING,
    CALL_PROCEEDING,
    CONNECT,
    CONNECT_ACKNOWLEDGE,
    DISCONNECT,
    IE_CALL_STATE,
    IE_CALLED_NUMBER,
    IE_CALLING_NUMBER,
    IE_CAUSE,
    IE_CHANNEL_ID,
    IE_PROGRESS,
    IE_RESTART_INDICATOR,
    INFORMATION,
    MANDATORY_IES,
    PROGRESS,
    RELEASE,
    RELEASE_COMPLETE,
    RESTART,
    RESTART_ACKNOWLEDGE,
    SETUP,
    SETUP_ACKNOWLEDGE,
    STATUS,
    STATUS_ENQUIRY,
    Message,
)
from .regmap import (
    BEARER_SPEECH,
    CAUSE_MAX,
    CAUSE_SRC_LOCAL,
    CAUSE_SRC_NONE,
    CAUSE_SRC_REMOTE,
    CMD_ALERT,
    CMD_ANSWER,
    CMD_MAKE_CALL,
    CMD_MAKE_CALL_OVERLAP,
    CMD_RELEASE,
    CMD_RESERVE,
    CMD_SEND_DIGITS,
    CMD_SEND_DIGITS_COMPLETE,
    CMD_UNRESERVE,
    DIR_INCOMING,
    DIR_OUTGOING,
    EV_CLEARED,
    EV_INCOMING,
    MB_DONE,
    MB_ERR_ARGUMENT,
    MB_ERR_NO_LINK,
    MB_ERR_STATE,
    MB_ERR_UNKNOWN,
    NUMBER_MAX,
    PRES_NOT_AVAILABLE,
    PRES_SHIFT,
    ROLE_NT,
    ROLE_TE,
    ST_ACTIVE,
    ST_CLEARING,
    ST_CONNECTING,
    ST_IDLE,
    ST_IN_ALERTING,
    ST_IN_OVERLAP,
    ST_IN_PRESENT,
    ST_MAINTENANCE,
    ST_OUT_ALERTING,
    ST_OUT_OVERLAP,
    ST_OUT_PROCEEDING,
    ST_OUT_SETUP,
    bearer_timeslots,
)
from .signalling import ALL_BEARERS, PLAIN_CALL, CallInfo, ChannelSink

# Q.931 timers in seconds, (user side, network side): the defaults of Q.931 tables 9-2 and 9-1
# (None: that side does not run the timer). T309 may be 6-90 s on either side and T310 30-120 s
# on the user side: the card takes 90 s and 30 s. T304 is 20 s on the network side (provisional
# in table 9-1); only the network runs T306 (DISCONNECT with in-band information, §5.3.4.1) and
# only the user T313. T302 (overlap receiving) is 15 s on both sides (10-15 s on the network
# side). docs/datasheet.md section 5 shows this table (checked by test).
TIMERS: dict[str, tuple[float | None, float | None]] = {
    "T301": (180.0, 180.0),
    "T302": (15.0, 15.0),
    "T303": (4.0, 4.0),
    "T304": (30.0, 20.0),
    "T305": (30.0, 30.0),
    "T306": (None, 30.0),
    "T308": (4.0, 4.0),
    "T309": (90.0, 90.0),
    "T310": (30.0, 10.0),
    "T313": (4.0, None),
    "T316": (120.0, 120.0),
    "T322": (4.0, 4.0),
}
# RESTART messages sent for one restart before the sender gives up (Q.931 §5.5.1: a default
# limit of two consecutive unacknowledged attempts); the channels stay out of service.
N316 = 2
# STATUS ENQUIRY messages sent for one enquiry before the call is cleared with cause 41 (Q.931
# §5.8.10: on T322 expiry it may be sent again, an implementation's number of times).
N322 = 2
# Timers that run beside a call's single Q.931 timer, each on its own loop handle.
_OWN_HANDLE = frozenset({"T309", "T316", "T322"})

# Call phases, numbered as the user-side Q.931 states of the local end (0 = null).
P_NULL = 0
P_OUT_INIT = 1
P_OUT_OVERLAP = 2
P_OUT_PROC = 3
P_OUT_ALERT = 4
P_IN_PRESENT = 6
P_IN_ALERT = 7
P_IN_CONNECT = 8
P_IN_PROC = 9
P_ACTIVE = 10
P_DISC_SENT = 11
P_DISC_RCVD = 12
P_REL_SENT = 19
P_IN_OVERLAP = 25  # SETUP ACKNOWLEDGE sent: overlap receiving (U25; N2 on the network side)
_CLEARING = frozenset({P_DISC_SENT, P_DISC_RCVD, P_REL_SENT})
_OUT_EARLY = frozenset({P_OUT_INIT, P_OUT_OVERLAP, P_OUT_PROC})
_OUT_ANY = frozenset({P_OUT_INIT, P_OUT_OVERLAP, P_OUT_PROC, P_OUT_ALERT})
_IN_UNANSWERED = frozenset({P_IN_PRESENT, P_IN_OVERLAP, P_IN_PROC, P_IN_ALERT})
# Where Q.931 does not allow INFORMATION from the far end (§5.8.4: STATUS cause 101): before
# any answer to the SETUP (U1/N1 of the far end's call present, U6) and in release request.
_NO_INFORMATION = frozenset({P_OUT_INIT, P_IN_PRESENT, P_REL_SENT})
# The network side's state numbers for the same phases (N-states of Q.931 §2.1.2): the network
# end of an outgoing call is N6/N25/N9/N7, of an incoming one N1/N2/N3/N4; the side that sent
# DISCONNECT is U11 but N12, the side that received it U12 but N11.
_NT_STATE = {1: 6, 2: 25, 3: 9, 4: 7, 6: 1, 7: 4, 8: 10, 9: 3, 10: 10, 11: 12, 12: 11, 19: 19,
             25: 2}

# Register state for each phase
_PHASE_ST = {
    P_OUT_INIT: ST_OUT_SETUP, P_OUT_OVERLAP: ST_OUT_PROCEEDING, P_OUT_PROC: ST_OUT_PROCEEDING,
    P_OUT_ALERT: ST_OUT_ALERTING, P_IN_PRESENT: ST_IN_PRESENT, P_IN_PROC: ST_IN_PRESENT,
    P_IN_ALERT: ST_IN_ALERTING, P_IN_CONNECT: ST_CONNECTING, P_ACTIVE: ST_ACTIVE,
    P_DISC_SENT: ST_CLEARING, P_DISC_RCVD: ST_CLEARING, P_REL_SENT: ST_CLEARING,
    P_IN_OVERLAP: ST_IN_OVERLAP,
}

CAUSE_CHANNEL_NONEXISTENT = 82
CAUSE_CHANNEL_UNACCEPTABLE = 6
_MT = tuple(bytes((i,)) for i in range(256))
_SENDING_COMPLETE = bytes((q931.IE_SENDING_COMPLETE,))
_DIGITS = frozenset("0123456789*#")


class Call:
    """One call reference: its channel, phase, running timer and first clearing cause."""

    __slots__ = (
        "key", "cr", "outgoing", "phase", "timeslot", "called", "calling", "cause",
        "cause_source", "timer", "retries", "disc_cause", "t309", "t322", "enquiries", "prefix",
        "setup", "orphan", "reported", "ctx", "exclusive", "info", "overlap", "complete",
        "pending",
    )

    def __init__(self, key: int, outgoing: bool, timeslot: int, phase: int) -> None:
        self.key = key  # call reference value, bit 15 set when the far end allocated it
        self.cr = key & 0x7FFF
        self.outgoing = outgoing
        self.phase = phase
        self.timeslot = timeslot
        self.called = ""
        self.calling = ""
        self.cause: bytes | None = None
        self.cause_source = CAUSE_SRC_NONE
        self.timer: _TimerEntry | None = None  # the running Q.931 timer (one at a time)
        self.retries = 0
        self.disc_cause = b""
        self.t309: asyncio.TimerHandle | None = None
        self.t322: asyncio.TimerHandle | None = None  # a STATUS ENQUIRY awaits its STATUS
        self.enquiries = 0  # STATUS ENQUIRY messages sent for it
        # Header up to the message type; the call reference flag marks the destination side.
        self.prefix = bytes((q931.PROTOCOL_DISCRIMINATOR, 2,
                             (self.cr >> 8) | (0 if outgoing else 0x80), self.cr & 0xFF))
        self.setup = b""
        self.orphan = False  # lost channel glare: cleared for the host, awaiting the far end
        self.reported = -1
        self.ctx: Any = None
        self.exclusive = True  # our SETUP named its channel exclusive (else preferred)
        self.info = PLAIN_CALL  # the SETUP's numbering plans, presentation and bearer
        self.overlap = False  # our SETUP had no Sending Complete: overlap sending
        self.complete = False  # ... and Sending Complete has been given since
        # Digits (and Sending Complete) given before the SETUP ACKNOWLEDGE: sent with it
        self.pending: tuple[str, bool] | None = None


# (deadline, call, queue): a started timer; it is running while call.timer is this entry.
_TimerEntry = tuple[float, Call, "_TimerQueue"]


class _TimerQueue:
    """The running Q.931 timers of one name (T303, T305 ...) of one entity.

    Timers of one name all last the same, so deadlines come in start order: a FIFO served by a
    single loop timer replaces a loop TimerHandle per start and a cancel per stop (nearly every
    timer is stopped early). Stopping only marks the entry stale; stale entries are skipped at
    the head, and compacted away before they outnumber the live ones.
    """

    __slots__ = ("loop", "name", "duration", "on_expiry", "entries", "live", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, duration: float,
                 on_expiry: Callable[[Call, str], None]) -> None:
        self.loop = loop
        self.name = name
        self.duration = duration
        self.on_expiry = on_expiry
        self.entries: deque[_TimerEntry] = deque()
        self.live = 0
        self.handle: asyncio.TimerHandle | None = None

    def start(self, call: Call) -> None:
        """Start this timer for a call whose timer is stopped."""
        if len(self.entries) > 2 * self.live + 64:
            self._compact()
        entry = (self.loop.time() + self.duration, call, self)
        call.timer = entry
        self.entries.append(entry)
        self.live += 1
        if self.handle is None:
            self.handle = self.loop.call_at(self.entries[0][0], self._fire)

    def _compact(self) -> None:
        if self.handle is not None:
            self.handle.cancel()  # the head may change; start() re-arms for the new one
            self.handle = None
        self.entries = deque(e for e in self.entries if e[1].timer is e)

    def _fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        while self.entries:
            entry = self.entries[0]
            call = entry[1]
            if call.timer is not entry:
                self.entries.popleft()
            elif entry[0] > now:
                if self.handle is None:  # on_expiry may have started one of ours already
                    self.handle = self.loop.call_at(entry[0], self._fire)
                return
            else:
                self.entries.popleft()
                call.timer = None
                self.live -= 1
                self.on_expiry(call, self.name)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.entries.clear()
        self.live = 0


def _stop_call_timer(call: Call) -> None:
    entry = call.timer
    if entry is not None:
        call.timer = None
        entry[2].live -= 1


class CallListener(Protocol):
    """The user of a CallControl: the card's firmware seam or the network emulator."""

    def on_link(self, up: bool) -> None: ...

    def on_maintenance(self, timeslot: int, out_of_service: bool) -> None:
        """The channel left service (no call may use it) or returned to it."""

    def on_incoming(self, call: Call, msg: Message) -> None:
        """A SETUP was accepted on call.timeslot; answer it with proceeding/alert/answer/clear."""

    def on_state(self, call: Call) -> None:
        """call.phase changed (establishment, answer or clearing in progress)."""

    def on_cleared(self, call: Call) -> None:
        """The call is gone; call.cause/call.cause_source say why (first clearing cause)."""

    def on_digits(self, call: Call, sending_complete: bool, expired: bool) -> None:
        """Overlap receiving: INFORMATION added digits to call.called (`sending_complete`: it
        carried Sending Complete), or T302 `expired`; complete the call with proceeding() or
        clear it, or wait for more (T302 runs again)."""


class CallControl:
    """The Q.931 entity of one span end; all methods run on the loop thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: Any,
        *,
        role: int,
        line: int,
        listener: CallListener,
        timers: dict[str, float] | None = None,
        location: int | None = None,
        n200: int = 3,
    ) -> None:
        self.loop = loop
        self.role = role
        self.line = line
        self.listener = listener
        side = 1 if role == ROLE_NT else 0
        timers = timers or {}
        self.timers: dict[str, float] = {}
        for name, values in TIMERS.items():
            default = values[side]
            if default is not None:
                self.timers[name] = timers.get(name, default)
        self._timer_queues = {name: _TimerQueue(loop, name, v, self._expired)
                              for name, v in self.timers.items() if name not in _OWN_HANDLE}
        if location is None:
            location = q931.LOC_PRIVATE_LOCAL if role == ROLE_NT else q931.LOC_USER
        self.location = location
        self.bearers = bearer_timeslots(line)
        # Networks hunt for a channel from the top (the host hunts from the bottom).
        self._hunt_order = self.bearers[::-1]
        self.calls: dict[int, Call] = {}
        self.channels: dict[int, Call] = {}
        # Channels the local user keeps for its own calls: never given to an incoming call
        self.reserved: set[int] = set()
        # Channels out of service until a RESTART for them completes (Q.931 §5.3.4.3, §5.5)
        self.maintenance: set[int] = set()
        # This end's RESTARTs awaiting RESTART ACKNOWLEDGE, by channel (None: the interface):
        # the running T316 (None once N316 attempts failed) and the attempts made.
        self._restarts: dict[int | None, tuple[asyncio.TimerHandle | None, int]] = {}
        # Bit n: incoming calls with bearer code n are accepted (datasheet 2.1 ACCEPT_BEARERS)
        self.accepted_bearers = ALL_BEARERS
        self.link_up = False
        self._next_cr = 1
        self.transport = transport
        self.lapd = Lapd(
            loop, transport, network=role == ROLE_NT, on_data=self.receive,
            on_link=self._on_link,
            timers={k: timers[k] for k in LAPD_TIMER_DEFAULTS if k in timers}, n200=n200,
        )
        transport.set_receiver(self.lapd.receive)
        bc = q931.ie(q931.IE_BEARER_CAPABILITY, q931.bearer_capability(line))
        self._setup_prefix = {
            ts: _SENDING_COMPLETE + bc + q931.ie(IE_CHANNEL_ID, q931.channel_id(ts))
            for ts in self.bearers
        }
        self._chan_ie = {ts: q931.ie(IE_CHANNEL_ID, q931.channel_id(ts)) for ts in self.bearers}
        self._chan_body = {ts: q931.channel_id(ts) for ts in self.bearers}
        self._handlers = {
            CALL_PROCEEDING: self._rx_proceeding,
            SETUP_ACKNOWLEDGE: self._rx_setup_ack,
            ALERTING: self._rx_alerting,
            PROGRESS: self._rx_progress,
            CONNECT: self._rx_connect,
            CONNECT_ACKNOWLEDGE: self._rx_connect_ack,
            DISCONNECT: self._rx_disconnect,
            RELEASE: self._rx_release,
            RELEASE_COMPLETE: self._rx_release_complete,
            STATUS_ENQUIRY: self._rx_status_enquiry,
            STATUS: self._rx_status,
            INFORMATION: self._rx_information,
        }
        self.stats = {"ignored": 0, "status_sent": 0, "restarts_failed": 0}

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start Q.921 establishment from this end."""
        self.lapd.start()

    def stop(self) -> None:
        """Silence the entity: cancel every timer, forget every call, report nothing more."""
        self.lapd.stop()
        for call in self.calls.values():
            self._stop_timer(call)
            if call.t309 is not None:
                call.t309.cancel()
            self._stop_t322(call)
        for queue in self._timer_queues.values():
            queue.cancel()
        for handle, _ in self._restarts.values():
            if handle is not None:
                handle.cancel()
        self._restarts.clear()
        self.calls.clear()
        self.channels.clear()
        self.listener = _SilentListener()

    # --- requests from the local user ---------------------------------------------------

    def free_timeslot(self) -> int | None:
        """The highest channel with no call that is neither reserved nor out of service
        (datasheet 2.5: descending)."""
        for ts in self._hunt_order:
            if ts not in self.channels and ts not in self.reserved and ts not in self.maintenance:
                return ts
        return None

    def make_call(self, timeslot: int, called: str, calling: str = "", *,
                  exclusive: bool = True, info: CallInfo = PLAIN_CALL,
                  sending_complete: bool = True) -> Call | None:
        """Send SETUP naming `timeslot` exclusive (or preferred: the far end may choose another
        one) with the numbering and bearer of `info`; without `sending_complete` the number may
        go on in INFORMATION (overlap sending, information()). None when the link or channel
        is unavailable."""
        if (not self.link_up or timeslot in self.channels or timeslot in self.maintenance
                or timeslot not in self._setup_prefix):
            return None
        cr = self._alloc_cr()
        call = Call(cr, True, timeslot, P_OUT_INIT)
        call.called = called
        call.calling = calling
        call.exclusive = exclusive
        call.info = info
        call.overlap = not sending_complete
        if exclusive and info.bearer == BEARER_SPEECH:
            body = self._setup_prefix[timeslot]
        else:
            bc = q931.ie(q931.IE_BEARER_CAPABILITY, q931.bearer_capability(self.line, info.bearer))
            body = _SENDING_COMPLETE + bc + q931.ie(
                IE_CHANNEL_ID, q931.channel_id(timeslot, exclusive=exclusive))
        if call.overlap:
            body = body[len(_SENDING_COMPLETE):]
        if calling or info.calling_pres:
            body += q931.ie(IE_CALLING_NUMBER, q931.number(
                calling, info.calling_plan, info.calling_pres or None))
        if called or not call.overlap:
            body += q931.ie(IE_CALLED_NUMBER, q931.number(called, info.called_plan))
        call.setup = call.prefix + _MT[SETUP] + body
        self.calls[cr] = call
        self.channels[timeslot] = call
        self.lapd.send(call.setup)
        self._start_timer(call, "T303")
        return call

    def proceeding(self, call: Call) -> None:
        """CALL PROCEEDING for an incoming call; as the first response it names the channel."""
        if call.phase in (P_IN_PRESENT, P_IN_OVERLAP):
            body = self._chan_ie[call.timeslot] if call.phase == P_IN_PRESENT else b""
            self._stop_timer(call)  # T302: the number is complete
            call.phase = P_IN_PROC
            self._send(call, CALL_PROCEEDING, body)

    def setup_ack(self, call: Call) -> None:
        """SETUP ACKNOWLEDGE (overlap receiving) for an incoming call; T302 waits for the
        rest of the number (§5.2.4, §5.1.3 on the network side)."""
        if call.phase == P_IN_PRESENT:
            call.phase = P_IN_OVERLAP
            self._send(call, SETUP_ACKNOWLEDGE, self._chan_ie[call.timeslot])
            self._start_timer(call, "T302")

    def information(self, call: Call, digits: str, sending_complete: bool) -> bool:
        """Overlap sending: more of the called number (and Sending Complete) in INFORMATION,
        restarting T304. Before the SETUP ACKNOWLEDGE the digits wait and go with it. False
        outside overlap sending."""
        if not call.overlap or call.complete or call.phase not in (P_OUT_INIT, P_OUT_OVERLAP):
            return False
        call.called += digits
        call.complete = sending_complete
        if call.phase == P_OUT_INIT:
            old = call.pending[0] if call.pending else ""
            call.pending = (old + digits, sending_complete)
        else:
            self._send_information(call, digits, sending_complete)
        return True

    def _send_information(self, call: Call, digits: str, sending_complete: bool) -> None:
        body = _SENDING_COMPLETE if sending_complete else b""
        if digits:
            body += q931.ie(IE_CALLED_NUMBER, q931.number(digits, call.info.called_plan))
        self._send(call, INFORMATION, body)
        self._start_timer(call, "T304")

    def progress(self, call: Call, description: int = q931.PI_INBAND) -> None:
        self._send(call, PROGRESS, q931.ie(IE_PROGRESS, q931.progress(description,
                                                                      self.location)))

    def alert(self, call: Call) -> bool:
        if call.phase not in (P_IN_PRESENT, P_IN_OVERLAP, P_IN_PROC):
            return False
        body = self._chan_ie[call.timeslot] if call.phase == P_IN_PRESENT else b""
        if call.phase == P_IN_OVERLAP:
            self._stop_timer(call)
        call.phase = P_IN_ALERT
        self._send(call, ALERTING, body)
        if self.role == ROLE_NT:
            self._start_timer(call, "T301")  # the network times the called user's ringing
        self.listener.on_state(call)
        return True

    def answer(self, call: Call) -> bool:
        if call.phase not in _IN_UNANSWERED:
            return False
        body = self._chan_ie[call.timeslot] if call.phase == P_IN_PRESENT else b""
        self._stop_timer(call)
        self._send(call, CONNECT, body)
        if self.role == ROLE_TE:
            call.phase = P_IN_CONNECT
            self._start_timer(call, "T313")
        else:
            call.phase = P_ACTIVE  # the network side does not wait for CONNECT ACK
        self.listener.on_state(call)
        return True

    def disconnect(self, call: Call, cause: bytes | None, progress: int | None = None) -> bool:
        """First clearing step with DISCONNECT carrying `cause` unchanged (None: no cause IE,
        which only a test's far end sends)."""
        if call.phase in _CLEARING or call.phase == P_NULL:
            return False
        self._note_cause(call, cause or b"", CAUSE_SRC_LOCAL)
        body = b"" if cause is None else q931.ie(IE_CAUSE, cause)
        if progress is not None:
            body += q931.ie(IE_PROGRESS, q931.progress(progress, self.location))
        call.disc_cause = cause or b""
        call.phase = P_DISC_SENT
        self._send(call, DISCONNECT, body)
        # §5.3.4.1: the network gives a user listening to in-band tones T306, not T305
        inband = progress == q931.PI_INBAND and self.role == ROLE_NT
        self._start_timer(call, "T306" if inband else "T305")
        self.listener.on_state(call)
        return True

    def release_complete(self, call: Call, cause: bytes | None) -> bool:
        """Refuse an incoming call (or abandon one) with RELEASE COMPLETE carrying `cause`
        (None: no cause IE, which only a test's far end sends)."""
        if call.phase == P_NULL:
            return False
        self._note_cause(call, cause or b"", CAUSE_SRC_LOCAL)
        self._send(call, RELEASE_COMPLETE, b"" if cause is None else q931.ie(IE_CAUSE, cause))
        self._finish(call)
        return True

    def release_locally(self, call: Call, cause: bytes) -> None:
        """Clear without signalling (the D-channel is down)."""
        self._note_cause(call, cause, CAUSE_SRC_LOCAL)
        self._finish(call)

    def discard(self, call: Call) -> None:
        """Forget an incoming call without a word, as a switch that lost the SETUP would."""
        self._stop_timer(call)
        self.calls.pop(call.key, None)
        if self.channels.get(call.timeslot) is call:
            del self.channels[call.timeslot]
        call.phase = P_NULL

    def status_enquiry(self, call: Call) -> None:
        """Ask the far end for the call's state (§5.8.10): T322 runs until a STATUS answers
        (or the call clears); one enquiry at a time, so none while T322 runs."""
        if call.t322 is None:
            call.enquiries = 0
            self._send_enquiry(call)

    def restart(self, timeslot: int | None = None) -> None:
        """RESTART one channel (or the whole interface): calls on it clear with cause 41 and
        it stays out of service until RESTART ACKNOWLEDGE. On T316 expiry the RESTART goes
        again, N316 times in all; then the channel stays out of service until the next data
        link establishment sends it once more (Q.931 §5.5.1)."""
        self._clear_channels(timeslot)
        for ts in self.bearers if timeslot is None else (timeslot,):
            if ts not in self.maintenance:
                self.maintenance.add(ts)
                self.listener.on_maintenance(ts, True)
        self._send_restart(timeslot, 1)

    def send_raw(self, payload: bytes) -> bool:
        """Send arbitrary Q.931 octets (tests of the peer's error handling)."""
        return self.lapd.send(payload)

    # --- internals ----------------------------------------------------------------------

    def _send_restart(self, timeslot: int | None, attempt: int) -> None:
        handle, _ = self._restarts.get(timeslot, (None, 0))
        if handle is not None:
            handle.cancel()
        if timeslot is None:
            body = q931.ie(IE_RESTART_INDICATOR,
                           q931.restart_indicator(q931.RESTART_ALL_INTERFACES))
        else:
            body = self._chan_ie[timeslot] + q931.ie(
                IE_RESTART_INDICATOR, q931.restart_indicator(q931.RESTART_INDICATED_CHANNELS))
        self.lapd.send(q931.global_header(RESTART) + body)
        self._restarts[timeslot] = (
            self.loop.call_later(self.timers["T316"], self._t316_expired, timeslot), attempt)

    def _t316_expired(self, timeslot: int | None) -> None:
        _, attempt = self._restarts[timeslot]
        if attempt < N316:
            self._send_restart(timeslot, attempt + 1)
        else:
            self.stats["restarts_failed"] += 1
            self._restarts[timeslot] = (None, attempt)

    def _restarted(self, timeslot: int | None) -> None:
        """A restart of the channel (None: every channel) completed, by RESTART ACKNOWLEDGE
        for this end's RESTART or by the far end's RESTART: the channels are idle at both
        ends and return to service unless another restart still covers them."""
        if timeslot is None:
            for handle, _ in self._restarts.values():
                if handle is not None:
                    handle.cancel()
            self._restarts.clear()
        else:
            handle, _ = self._restarts.pop(timeslot, (None, 0))
            if handle is not None:
                handle.cancel()
            if None in self._restarts:
                return
        for ts in self.bearers if timeslot is None else (timeslot,):
            if ts in self.maintenance and ts not in self._restarts:
                self.maintenance.discard(ts)
                self.listener.on_maintenance(ts, False)

    def _alloc_cr(self) -> int:
        calls = self.calls
        cr = self._next_cr
        while cr in calls:
            cr = cr % 0x7FFF + 1
        self._next_cr = cr % 0x7FFF + 1
        return cr

    def _send(self, call: Call, mt: int, body: bytes) -> None:
        self.lapd.send(call.prefix + _MT[mt] + body)

    def _reply(self, msg: Message, mt: int, body: bytes) -> None:
        """Answer a message whose call reference is unknown here."""
        self.lapd.send(q931.header(mt, msg.cr, not msg.from_destination) + body)

    def _cause(self, value: int, diagnostic: bytes = b"") -> bytes:
        return q931.cause_body(value, self.location, diagnostic)

    def _q931_state(self, call: Call) -> int:
        return _NT_STATE.get(call.phase, 0) if self.role == ROLE_NT else call.phase

    def _status(self, call: Call, value: int, diagnostic: bytes = b"") -> None:
        self.stats["status_sent"] += 1
        self._send(call, STATUS, q931.ie(IE_CAUSE, self._cause(value, diagnostic))
                   + q931.ie(IE_CALL_STATE, bytes((self._q931_state(call),))))

    def _start_timer(self, call: Call, name: str) -> None:
        _stop_call_timer(call)
        self._timer_queues[name].start(call)

    def _stop_timer(self, call: Call) -> None:
        _stop_call_timer(call)
        call.retries = 0

    @staticmethod
    def _note_cause(call: Call, cause: bytes, source: int) -> None:
        if call.cause is None:
            call.cause = cause[:CAUSE_MAX]
            call.cause_source = source

    def _finish(self, call: Call) -> None:
        if call.phase == P_NULL:
            return
        self._stop_timer(call)
        if call.t309 is not None:
            call.t309.cancel()
            call.t309 = None
        self._stop_t322(call)
        call.phase = P_NULL
        self.calls.pop(call.key, None)
        if self.channels.get(call.timeslot) is call:
            del self.channels[call.timeslot]
        if not call.orphan:
            self.listener.on_cleared(call)

    def _send_release(self, call: Call, cause: bytes | None) -> None:
        call.phase = P_REL_SENT
        call.disc_cause = cause or b""
        self._send(call, RELEASE, q931.ie(IE_CAUSE, cause) if cause else b"")
        self._start_timer(call, "T308")
        self.listener.on_state(call)

    def _clear_channels(self, timeslot: int | None) -> None:
        for call in list(self.calls.values()):
            if timeslot is None or call.timeslot == timeslot:
                self.release_locally(call, self._cause(q931.CAUSE_TEMPORARY_FAILURE))

    def _expired(self, call: Call, name: str) -> None:
        if call.phase == P_NULL:
            return
        if name == "T303":
            if call.retries == 0:
                call.retries = 1
                self.lapd.send(call.setup)
                self._timer_queues[name].start(call)
                return
            self.release_complete(call, q931.timer_cause(name, self.location))
        elif name == "T305" or name == "T306":
            # §5.3.3/§5.3.4.1, table 9-1: RELEASE with the cause of the DISCONNECT
            self._send_release(call, call.disc_cause)
        elif name == "T308":
            if call.retries == 0:
                retry = call.disc_cause
                self._send(call, RELEASE, q931.ie(IE_CAUSE, retry) if retry else b"")
                self._timer_queues[name].start(call)
                call.retries = 1
                return
            # Q.931 §5.3.4.3: release the call reference; the channel is out of service until
            # a RESTART for it completes
            self._finish(call)
            self.restart(call.timeslot)
        elif name == "T302":
            self.listener.on_digits(call, False, True)
        elif name == "T301" and self.role == ROLE_NT and not call.outgoing:
            self.disconnect(call, self._cause(q931.CAUSE_NO_ANSWER))  # toward the caller
        else:  # T301, T304, T310, T313: clear with 102 naming the timer
            self.disconnect(call, q931.timer_cause(name, self.location))

    def _send_enquiry(self, call: Call) -> None:
        self._send(call, STATUS_ENQUIRY, b"")
        call.enquiries += 1
        call.t322 = self.loop.call_later(self.timers["T322"], self._t322_expired, call)

    def _stop_t322(self, call: Call) -> None:
        if call.t322 is not None:
            call.t322.cancel()
            call.t322 = None

    def _t322_expired(self, call: Call) -> None:
        """§5.8.10: no STATUS came; ask again, N322 times in all, then clear with cause 41.
        A call being cleared meanwhile just goes on clearing."""
        call.t322 = None
        if call.phase == P_NULL or call.phase in _CLEARING:
            return
        if call.enquiries < N322:
            self._send_enquiry(call)
        else:
            self.disconnect(call, self._cause(q931.CAUSE_TEMPORARY_FAILURE))

    def _t309_expired(self, call: Call) -> None:
        call.t309 = None
        self.release_locally(call, self._cause(q931.CAUSE_DESTINATION_OUT_OF_ORDER))

    def _on_link(self, up: bool) -> None:
        was = self.link_up
        self.link_up = up
        for call in self.calls.values():
            self._stop_t322(call)  # an enquiry outstanding went with the old link
        if up:
            for call in list(self.calls.values()):
                if call.t309 is not None:
                    # §5.8.9: the link is back before T309 ran out; verify the call's state
                    call.t309.cancel()
                    call.t309 = None
                    self.status_enquiry(call)
                elif was:
                    self._link_reset(call)
            for timeslot in list(self._restarts):
                self._send_restart(timeslot, 1)  # the old RESTART went with the old link
        else:
            for call in list(self.calls.values()):
                if call.phase == P_ACTIVE:
                    if call.t309 is None:
                        call.t309 = self.loop.call_later(self.timers["T309"],
                                                         self._t309_expired, call)
                else:
                    self.release_locally(call, self._cause(q931.CAUSE_TEMPORARY_FAILURE))
            # §5.8.9: ask for the link again (DL-ESTABLISH-REQUEST). A PRI's data link is
            # kept established permanently, so this end asks whether or not calls wait.
            self.lapd.establish()
        if was != up:
            self.listener.on_link(up)

    def _link_reset(self, call: Call) -> None:
        """§5.8.8, a data link reset (the link was up and is re-established): overlap calls
        clear with cause 41, calls being cleared go on, and the others are kept, their state
        audited with STATUS ENQUIRY: a far end that restarted and forgot them answers with
        call state 0 (or RELEASE COMPLETE) and they clear (§5.8.11)."""
        if call.phase in (P_OUT_OVERLAP, P_IN_OVERLAP):
            self.disconnect(call, self._cause(q931.CAUSE_TEMPORARY_FAILURE))
        elif call.phase not in _CLEARING and not call.orphan:
            self.status_enquiry(call)

    # --- received messages --------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """Handle one Q.931 message from the D-channel."""
        msg = q931.decode(payload)
        if msg is None:
            self.stats["ignored"] += 1  # §5.8.1-5.8.3.1: discard silently
            return
        if msg.cr == 0:
            if msg.dummy_cr:
                # The dummy call reference serves only Q.932 procedures, none of which this
                # entity offers; it is not the global call reference (Q.931 §4.3).
                self.stats["ignored"] += 1
                return
            self._rx_global(msg)
            return
        key = msg.cr if msg.from_destination else msg.cr | 0x8000
        call = self.calls.get(key)
        if call is None:
            self._rx_unknown_cr(msg)
            return
        mt = msg.mt
        if call.orphan:
            if mt != RELEASE_COMPLETE:
                self._send(call, RELEASE_COMPLETE, q931.ie(IE_CAUSE, call.cause or b""))
            self._finish(call)
            return
        handler = self._handlers.get(mt)
        if handler is None:
            if mt == SETUP:
                self.stats["ignored"] += 1  # §5.8.3.2 f: call reference already in use
            else:
                self._status(call, q931.CAUSE_MESSAGE_TYPE_UNKNOWN, _MT[mt])
            return
        err = self._mandatory_error(msg)
        handler(call, msg, err)
        if call.phase != P_NULL:
            self._report_optional_errors(call, msg)

    @staticmethod
    def _mandatory_error(msg: Message) -> tuple[int, bytes] | None:
        needed = MANDATORY_IES.get(msg.mt, ())
        if not needed and not msg.required_unknown:
            return None
        missing = [i for i in needed if i not in msg.ies] + msg.required_unknown
        if missing:
            return q931.CAUSE_MANDATORY_IE_MISSING, bytes(missing)
        bad = [i for i in needed if i in msg.invalid]
        if bad:
            return q931.CAUSE_INVALID_IE_CONTENTS, bytes(bad)
        return None

    def _report_optional_errors(self, call: Call, msg: Message) -> None:
        if msg.mt == STATUS:
            return  # never answer STATUS with STATUS: two entities could loop
        if not msg.invalid and not msg.unknown:
            return
        needed = MANDATORY_IES.get(msg.mt, ())
        bad = [i for i in msg.invalid if i not in needed and i != IE_CAUSE]
        if bad:
            self._status(call, q931.CAUSE_INVALID_IE_CONTENTS, bytes(bad))
        elif msg.unknown and msg.mt != DISCONNECT:  # DISCONNECT's went in the RELEASE
            self._status(call, q931.CAUSE_IE_UNKNOWN, bytes(msg.unknown))

    def _wrong_state(self, call: Call, msg: Message) -> None:
        self._status(call, q931.CAUSE_WRONG_STATE, _MT[msg.mt])

    def _channel_refused(self, call: Call, msg: Message) -> bool:
        """The first response to our SETUP must name the channel it asked for exclusively
        (§5.1.2); another one fails channel selection: RELEASE with cause 6 (§5.3.2 d)."""
        cid = msg.ies.get(IE_CHANNEL_ID)
        if cid is None or cid == self._chan_body[call.timeslot]:
            return False
        parsed = q931.parse_channel_id(cid)  # invalid contents draw STATUS 100 instead
        if parsed is None or parsed[1] is None or parsed[1] == call.timeslot:
            return False
        other = parsed[1]
        if not call.exclusive and other in self._chan_ie and other not in self.channels:
            # We only preferred the channel: the far end's choice stands (§5.1.2)
            del self.channels[call.timeslot]
            call.timeslot = other
            self.channels[other] = call
            return False
        self._stop_timer(call)
        cause = self._cause(CAUSE_CHANNEL_UNACCEPTABLE)
        self._note_cause(call, cause, CAUSE_SRC_LOCAL)
        self._send_release(call, cause)
        return True

    def _rx_global(self, msg: Message) -> None:
        mt = msg.mt
        reply_flag = not msg.from_destination
        if mt == RESTART:
            err = self._mandatory_error(msg)
            if err is not None:
                return self._status_global(*err, flag=reply_flag)
            cls = msg.ies[IE_RESTART_INDICATOR][0] & 0x07
            if cls not in (q931.RESTART_INDICATED_CHANNELS, q931.RESTART_SINGLE_INTERFACE,
                           q931.RESTART_ALL_INTERFACES):  # §4.5.25: the others are reserved
                return self._status_global(q931.CAUSE_INVALID_IE_CONTENTS,
                                           bytes((IE_RESTART_INDICATOR,)), flag=reply_flag)
            ts = None
            cid = msg.ies.get(IE_CHANNEL_ID)
            if cls == q931.RESTART_INDICATED_CHANNELS:
                if cid is None:  # §5.5.2: the channel must be identified for this class
                    return self._status_global(q931.CAUSE_MANDATORY_IE_MISSING,
                                               bytes((IE_CHANNEL_ID,)), flag=reply_flag)
                parsed = q931.parse_channel_id(cid)
                if parsed is None or parsed[1] not in self._chan_ie:
                    return self._status_global(q931.CAUSE_INVALID_IE_CONTENTS,
                                               bytes((IE_CHANNEL_ID,)), flag=reply_flag)
                ts = parsed[1]
            self._clear_channels(ts)
            self._restarted(ts)
            body = (q931.ie(IE_CHANNEL_ID, cid) if cid is not None and ts is not None else b"")
            body += q931.ie(IE_RESTART_INDICATOR, msg.ies[IE_RESTART_INDICATOR])
            self.lapd.send(bytes((q931.PROTOCOL_DISCRIMINATOR, 2, 0x80, 0,
                                  RESTART_ACKNOWLEDGE)) + body)
        elif mt == RESTART_ACKNOWLEDGE:
            self._rx_restart_ack(msg)
        elif mt == STATUS:
            return
        else:
            self._status_global(q931.CAUSE_INVALID_CALL_REFERENCE, flag=reply_flag)

    def _rx_restart_ack(self, msg: Message) -> None:
        """The far end restarted what this end's RESTART named; an acknowledgement of no
        pending RESTART (or a malformed one) is ignored."""
        ind = msg.ies.get(IE_RESTART_INDICATOR)
        key: int | None = None
        if not ind or IE_RESTART_INDICATOR in msg.invalid:
            key = -1
        elif ind[0] & 0x07 == q931.RESTART_INDICATED_CHANNELS:
            parsed = q931.parse_channel_id(msg.ies.get(IE_CHANNEL_ID, b""))
            key = -1 if parsed is None or parsed[1] is None else parsed[1]
        if key not in self._restarts:
            self.stats["ignored"] += 1
            return
        self._restarted(key)

    def _status_global(self, value: int, diagnostic: bytes = b"", *,
                       flag: bool = False) -> None:
        self.stats["status_sent"] += 1
        self.lapd.send(q931.header(STATUS, 0, flag)
                       + q931.ie(IE_CAUSE, self._cause(value, diagnostic))
                       + q931.ie(IE_CALL_STATE, b"\x00"))

    def _rx_unknown_cr(self, msg: Message) -> None:
        """Q.931 §5.8.3.2: messages for call references not in use here."""
        mt = msg.mt
        if mt == SETUP:
            if not msg.from_destination:
                self._rx_setup(msg)
            return
        if mt == RELEASE_COMPLETE:
            return
        if mt == STATUS:
            state = msg.ies.get(IE_CALL_STATE)
            if state and state[0] & 0x3F:
                self._reply(msg, RELEASE_COMPLETE,
                            q931.ie(IE_CAUSE, self._cause(q931.CAUSE_WRONG_STATE)))
            return
        if mt == STATUS_ENQUIRY:
            self._reply(msg, STATUS,
                        q931.ie(IE_CAUSE, self._cause(q931.CAUSE_RESPONSE_TO_STATUS_ENQUIRY))
                        + q931.ie(IE_CALL_STATE, b"\x00"))
            return
        self._reply(msg, RELEASE_COMPLETE,
                    q931.ie(IE_CAUSE, self._cause(q931.CAUSE_INVALID_CALL_REFERENCE)))

    def _rx_setup(self, msg: Message) -> None:
        err = self._mandatory_error(msg)
        if err is not None:
            self._reply(msg, RELEASE_COMPLETE, q931.ie(IE_CAUSE, self._cause(*err)))
            return
        ies = msg.ies
        bearer = q931.parse_bearer(ies[q931.IE_BEARER_CAPABILITY])
        if bearer is None or not self.accepted_bearers >> bearer & 1:
            # Not implemented (Q.850 65), or one this end does not take: the called user's
            # compatibility check fails (Q.931 5.2.2, 88), the network's service is not
            # available (5.1.5.1, 58). Datasheet 2.4.
            value = (q931.CAUSE_BEARER_NOT_IMPLEMENTED if bearer is None
                     else q931.CAUSE_INCOMPATIBLE_DESTINATION if self.role == ROLE_TE
                     else q931.CAUSE_BEARER_NOT_AVAILABLE)
            self._reply(msg, RELEASE_COMPLETE, q931.ie(IE_CAUSE, self._cause(value)))
            return
        exclusive, ts = False, None
        cid = ies.get(IE_CHANNEL_ID)
        if self.role == ROLE_TE and (cid is None or IE_CHANNEL_ID in msg.invalid):
            # Mandatory network-to-user on a PRI (Q.931 §3.1.14 note 5; §5.8.6.1/5.8.6.2)
            value = (q931.CAUSE_MANDATORY_IE_MISSING if cid is None
                     else q931.CAUSE_INVALID_IE_CONTENTS)
            self._reply(msg, RELEASE_COMPLETE,
                        q931.ie(IE_CAUSE, self._cause(value, bytes((IE_CHANNEL_ID,)))))
            return
        if cid is not None and IE_CHANNEL_ID not in msg.invalid:
            exclusive, ts = q931.parse_channel_id(cid) or (False, None)
        if ts is not None and ts not in self._chan_ie:
            self._reply(msg, RELEASE_COMPLETE, q931.ie(
                IE_CAUSE, self._cause(CAUSE_CHANNEL_NONEXISTENT, bytes((IE_CHANNEL_ID,)))))
            return
        if ts is not None and ts in self.channels:
            other = self.channels[ts]
            if (self.role == ROLE_TE and other.outgoing and other.phase == P_OUT_INIT):
                # Glare: the network's choice wins (Q.931 5.2.3.1); the network will refuse
                # our SETUP with cause 44, so hand the channel over now.
                other.orphan = True
                del self.channels[ts]
                self._note_cause(other, self._cause(q931.CAUSE_CHANNEL_NOT_AVAILABLE),
                                 CAUSE_SRC_LOCAL)
                self.listener.on_cleared(other)
            elif exclusive:
                self._reply(msg, RELEASE_COMPLETE,
                            q931.ie(IE_CAUSE, self._cause(q931.CAUSE_CHANNEL_NOT_AVAILABLE)))
                return
            else:
                ts = None
        if ts is not None and (ts in self.reserved or ts in self.maintenance):
            # A reserved channel belongs to one caller of the local user: another call never
            # gets it, not even the winner of a glare (datasheet 2.5); nor does a channel out
            # of service (§5.5.1: no call is accepted on it until its RESTART completes).
            if exclusive:
                self._reply(msg, RELEASE_COMPLETE,
                            q931.ie(IE_CAUSE, self._cause(q931.CAUSE_CHANNEL_NOT_AVAILABLE)))
                return
            ts = None
        if ts is None:
            ts = self.free_timeslot()
            if ts is None:
                self._reply(msg, RELEASE_COMPLETE,
                            q931.ie(IE_CAUSE, self._cause(q931.CAUSE_NO_CHANNEL)))
                return
        call = Call(msg.cr | 0x8000, False, ts, P_IN_PRESENT)
        called_plan = calling_plan = 0
        calling_pres = PRES_NOT_AVAILABLE << PRES_SHIFT
        called = ies.get(IE_CALLED_NUMBER)
        if called is not None and IE_CALLED_NUMBER not in msg.invalid:
            call.called = q931.number_digits(called)[:NUMBER_MAX]
            called_plan = q931.number_plan(called)[0]
        calling = ies.get(IE_CALLING_NUMBER)
        if calling is not None and IE_CALLING_NUMBER not in msg.invalid:
            call.calling = q931.number_digits(calling)[:NUMBER_MAX]
            calling_plan, pres = q931.number_plan(calling)
            calling_pres = pres or 0
        call.info = CallInfo(called_plan, calling_plan, calling_pres, bearer)
        self.calls[call.key] = call
        self.channels[ts] = call
        self.listener.on_incoming(call, msg)
        if call.phase != P_NULL:
            self._report_optional_errors(call, msg)

    def _rx_proceeding(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase not in (P_OUT_INIT, P_OUT_OVERLAP):
            return self._wrong_state(call, msg)
        if err is not None:  # §5.8.6: no action, no state change
            return self._status(call, *err)
        if call.phase == P_OUT_INIT and self._channel_refused(call, msg):
            return
        self._unsent_digits_dropped(call)
        call.phase = P_OUT_PROC
        self._start_timer(call, "T310")
        self.listener.on_state(call)

    @staticmethod
    def _unsent_digits_dropped(call: Call) -> None:
        """The far end took the number as complete without SETUP ACKNOWLEDGE (proceeding,
        alerting, progress or connect): digits the host gave for after it are never sent, so
        the called number is what the SETUP carried (datasheet 2.7)."""
        if call.phase == P_OUT_INIT and call.pending is not None:
            call.called = call.called[: len(call.called) - len(call.pending[0])]
            call.pending = None

    def _rx_setup_ack(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase != P_OUT_INIT:
            return self._wrong_state(call, msg)
        if err is not None:
            return self._status(call, *err)
        if self._channel_refused(call, msg):
            return
        call.phase = P_OUT_OVERLAP
        self._start_timer(call, "T304")
        self.listener.on_state(call)
        if call.pending is not None and call.phase == P_OUT_OVERLAP:
            digits, complete = call.pending
            call.pending = None
            self._send_information(call, digits, complete)

    def _rx_information(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase in _NO_INFORMATION:
            return self._wrong_state(call, msg)
        if err is not None:
            return self._status(call, *err)
        if call.phase != P_IN_OVERLAP:
            return  # keypad, display and the like: nothing the card acts on
        called = msg.ies.get(IE_CALLED_NUMBER)
        if called is not None and IE_CALLED_NUMBER not in msg.invalid:
            call.called = (call.called + q931.number_digits(called))[:NUMBER_MAX]
        self._start_timer(call, "T302")
        self.listener.on_digits(call, msg.sending_complete, False)

    def _rx_alerting(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase not in _OUT_EARLY:
            return self._wrong_state(call, msg)
        if err is not None:
            return self._status(call, *err)
        if call.phase == P_OUT_INIT and self._channel_refused(call, msg):
            return
        self._unsent_digits_dropped(call)
        call.phase = P_OUT_ALERT
        self._start_timer(call, "T301")
        self.listener.on_state(call)

    def _rx_progress(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if err is not None:
            return self._status(call, *err)
        if call.phase not in _OUT_ANY:  # e.g. the called side's states: §5.8.4, cause 101
            return self._wrong_state(call, msg)
        if call.phase in _OUT_EARLY:
            # T303/T304/T310 stop (§5.1.6): in-band information follows, the far end clears
            self._stop_timer(call)
            if call.phase == P_OUT_INIT:
                self._unsent_digits_dropped(call)
                call.phase = P_OUT_PROC
                self.listener.on_state(call)

    def _rx_connect(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase not in _OUT_ANY:
            return self._wrong_state(call, msg)
        if err is not None:
            return self._status(call, *err)
        if call.phase == P_OUT_INIT and self._channel_refused(call, msg):
            return
        self._unsent_digits_dropped(call)
        self._stop_timer(call)
        call.phase = P_ACTIVE
        self._send(call, CONNECT_ACKNOWLEDGE, b"")
        self.listener.on_state(call)

    def _rx_connect_ack(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if err is not None and call.phase in (P_IN_CONNECT, P_ACTIVE):
            self._status(call, *err)
        elif call.phase == P_IN_CONNECT:
            self._stop_timer(call)
            call.phase = P_ACTIVE
            self.listener.on_state(call)
        elif call.phase != P_ACTIVE:
            self._wrong_state(call, msg)

    def _rx_disconnect(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase == P_REL_SENT:
            return
        self._stop_timer(call)
        reply_cause = None
        cause = msg.ies.get(IE_CAUSE)
        if cause:
            self._note_cause(call, cause, CAUSE_SRC_REMOTE)
        else:
            # Missing, or empty (which counts as missing): acted on as cause 31 (§5.8.6.1); the
            # registers show a remote clearing with no octets, and the RELEASE says 96.
            self._note_cause(call, b"", CAUSE_SRC_REMOTE)
            err = (q931.CAUSE_MANDATORY_IE_MISSING, bytes((IE_CAUSE, *msg.required_unknown)))
        if err is not None:
            reply_cause = self._cause(*err)
            self._note_cause(call, reply_cause, CAUSE_SRC_LOCAL)
        elif msg.unknown:  # §5.8.7.1: reported in the RELEASE, not in a STATUS
            reply_cause = self._cause(q931.CAUSE_IE_UNKNOWN, bytes(msg.unknown))
        self._send_release(call, reply_cause)

    def _rx_release(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if call.phase == P_REL_SENT:
            self._finish(call)  # clear collision: both sent RELEASE, no RELEASE COMPLETE
            return
        cause = msg.ies.get(IE_CAUSE)
        body = b""
        if cause:
            self._note_cause(call, cause, CAUSE_SRC_REMOTE)
            if IE_CAUSE in msg.invalid:
                body = q931.ie(IE_CAUSE, self._cause(q931.CAUSE_INVALID_IE_CONTENTS,
                                                     bytes((IE_CAUSE,))))
        elif call.cause is None:
            # The first clearing message without a usable cause: as in _rx_disconnect
            self._note_cause(call, b"", CAUSE_SRC_REMOTE)
            body = q931.ie(IE_CAUSE, self._cause(q931.CAUSE_MANDATORY_IE_MISSING,
                                                 bytes((IE_CAUSE,))))
        self._send(call, RELEASE_COMPLETE, body)
        self._finish(call)

    def _rx_release_complete(self, call: Call, msg: Message,
                             err: tuple[int, bytes] | None) -> None:
        self._note_cause(call, msg.ies.get(IE_CAUSE, b""), CAUSE_SRC_REMOTE)
        self._finish(call)

    def _rx_status_enquiry(self, call: Call, msg: Message,
                           err: tuple[int, bytes] | None) -> None:
        self._status(call, q931.CAUSE_RESPONSE_TO_STATUS_ENQUIRY)

    def _rx_status(self, call: Call, msg: Message, err: tuple[int, bytes] | None) -> None:
        if err is not None:
            return
        cause = q931.parse_cause(msg.ies[IE_CAUSE])
        if cause is None or cause.value != q931.CAUSE_MESSAGE_TYPE_UNKNOWN:
            # §5.8.10: the answer to an enquiry (a STATUS with cause 97 says the far end does
            # not know STATUS ENQUIRY: T322 goes on timing)
            self._stop_t322(call)
        if msg.ies[IE_CALL_STATE][0] & 0x3F == 0:
            # The far end has no such call (§5.8.11): release it here too.
            self._note_cause(call, msg.ies[IE_CAUSE], CAUSE_SRC_REMOTE)
            self._finish(call)


class _SilentListener:
    def on_link(self, up: bool) -> None:
        pass

    def on_maintenance(self, timeslot: int, out_of_service: bool) -> None:
        pass

    def on_incoming(self, call: Call, msg: Message) -> None:
        pass

    def on_state(self, call: Call) -> None:
        pass

    def on_cleared(self, call: Call) -> None:
        pass

    def on_digits(self, call: Call, sending_complete: bool, expired: bool) -> None:
        pass


def valid_number(digits: str, *, allow_empty: bool) -> bool:
    """Digits the card will put in a party number IE."""
    if not digits:
        return allow_empty
    return len(digits) <= NUMBER_MAX and _DIGITS.issuperset(digits)


class _Unconnected:
    """A D-channel with nothing on the far end: frames vanish, the link never comes up."""

    def set_receiver(self, receiver: Receiver) -> None:
        pass

    def send(self, frame: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class CardSignalling:
    """The card's side of one span: SpanSignalling for the firmware, CallListener for Q.931."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: ChannelSink,
        span: int,
        line: int,
        role: int,
        transport: Any = None,
        *,
        timers: dict[str, float] | None = None,
    ) -> None:
        self.sink = sink
        self.span = span
        self.transport = transport if transport is not None else _Unconnected()
        self.cc = CallControl(loop, self.transport, role=role, line=line, listener=self,
                              timers=timers)
        self._stopped = False
        # OVERLAP_DIGITS (datasheet 2.7): the called number length that completes an
        # incoming call; 0 offers every SETUP at once
        self.overlap_digits = 0

    # SpanSignalling
    def start(self) -> None:
        self.cc.start()

    def stop(self) -> None:
        self._stopped = True
        self.cc.stop()
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def accept_bearers(self, mask: int) -> None:
        self.cc.accepted_bearers = mask

    def command(self, timeslot: int, cmd: int, called: str, calling: str, cause: bytes,
                info: CallInfo = PLAIN_CALL) -> int:
        cc = self.cc
        if cmd not in (CMD_MAKE_CALL, CMD_ALERT, CMD_ANSWER, CMD_RELEASE, CMD_RESERVE,
                       CMD_UNRESERVE, CMD_MAKE_CALL_OVERLAP, CMD_SEND_DIGITS,
                       CMD_SEND_DIGITS_COMPLETE):
            return MB_ERR_UNKNOWN
        if timeslot not in cc._chan_ie:
            return MB_ERR_ARGUMENT
        if cmd == CMD_RESERVE:
            cc.reserved.add(timeslot)
            return MB_DONE
        if cmd == CMD_UNRESERVE:
            cc.reserved.discard(timeslot)
            return MB_DONE
        call = cc.channels.get(timeslot)
        if cmd == CMD_MAKE_CALL or cmd == CMD_MAKE_CALL_OVERLAP:
            overlap = cmd == CMD_MAKE_CALL_OVERLAP
            if not valid_number(called, allow_empty=overlap) or not valid_number(
                    calling, allow_empty=True):
                return MB_ERR_ARGUMENT
            if call is not None or timeslot in cc.maintenance:
                return MB_ERR_STATE
            if not cc.link_up:
                return MB_ERR_NO_LINK
            new = cc.make_call(timeslot, called, calling, info=info,
                               sending_complete=not overlap)
            if new is None:
                return MB_ERR_NO_LINK
            new.reported = ST_OUT_SETUP
            self.sink.channel_update(self.span, timeslot, state=ST_OUT_SETUP,
                                     direction=DIR_OUTGOING, call_ref=new.key, called=called,
                                     calling=calling, info=info)
            return MB_DONE
        if cmd == CMD_SEND_DIGITS or cmd == CMD_SEND_DIGITS_COMPLETE:
            return self._send_digits(call, called, cmd == CMD_SEND_DIGITS_COMPLETE)
        if cmd == CMD_RELEASE:
            if not cause or len(cause) > CAUSE_MAX:
                return MB_ERR_ARGUMENT
            if call is None or call.phase in _CLEARING:
                return MB_ERR_STATE
            # The card answered the SETUP with CALL PROCEEDING, so even a call the host
            # refuses clears with DISCONNECT (Q.931 5.3.2), never a bare RELEASE COMPLETE.
            if not cc.link_up:
                cc.release_locally(call, cause)
            else:
                cc.disconnect(call, cause)
            return MB_DONE
        if call is None or call.outgoing or call.phase == P_IN_OVERLAP:
            return MB_ERR_STATE  # an incoming call is the host's once its number is complete
        if not cc.link_up:
            return MB_ERR_NO_LINK
        ok = cc.alert(call) if cmd == CMD_ALERT else cc.answer(call)
        return MB_DONE if ok else MB_ERR_STATE

    def _send_digits(self, call: Call | None, digits: str, complete: bool) -> int:
        if not valid_number(digits, allow_empty=complete):
            return MB_ERR_ARGUMENT
        if (call is None or not call.overlap or call.complete
                or call.phase not in (P_OUT_INIT, P_OUT_OVERLAP)):
            return MB_ERR_STATE
        if len(call.called) + len(digits) > NUMBER_MAX:
            return MB_ERR_ARGUMENT
        if not self.cc.link_up:
            return MB_ERR_NO_LINK
        self.cc.information(call, digits, complete)
        self.sink.channel_update(self.span, call.timeslot, called=call.called)
        return MB_DONE

    # CallListener
    def on_link(self, up: bool) -> None:
        self.sink.span_update(self.span, dchannel_up=up)

    def on_maintenance(self, timeslot: int, out_of_service: bool) -> None:
        self.sink.channel_update(self.span, timeslot,
                                 state=ST_MAINTENANCE if out_of_service else ST_IDLE)

    def on_incoming(self, call: Call, msg: Message) -> None:
        wanted = self.overlap_digits
        if msg.sending_complete or not wanted or len(call.called) >= wanted:
            self._offer(call)
            return
        self.cc.setup_ack(call)  # overlap receiving (datasheet 2.7)
        call.reported = ST_IN_OVERLAP
        self.sink.channel_update(self.span, call.timeslot, state=ST_IN_OVERLAP,
                                 direction=DIR_INCOMING, call_ref=call.key, called=call.called,
                                 calling=call.calling)

    def on_digits(self, call: Call, sending_complete: bool, expired: bool) -> None:
        if expired and not call.called:
            self.cc.disconnect(call, self.cc._cause(q931.CAUSE_INVALID_NUMBER_FORMAT))
        elif sending_complete or expired or len(call.called) >= self.overlap_digits:
            self._offer(call)

    def _offer(self, call: Call) -> None:
        """The number is complete: CALL PROCEEDING, and the host gets the call."""
        self.cc.proceeding(call)
        call.reported = ST_IN_PRESENT
        self.sink.channel_update(self.span, call.timeslot, state=ST_IN_PRESENT,
                                 direction=DIR_INCOMING, call_ref=call.key, called=call.called,
                                 calling=call.calling, event=EV_INCOMING, info=call.info)

    def on_state(self, call: Call) -> None:
        st = _PHASE_ST.get(call.phase, ST_IDLE)
        if call.phase == P_OUT_OVERLAP and call.overlap:
            st = ST_OUT_OVERLAP  # the host has digits to send (a MAKE_CALL call has none)
        if st != call.reported:
            call.reported = st
            if call.overlap and call.outgoing:  # its number may have been cut (unsent digits)
                self.sink.channel_update(self.span, call.timeslot, state=st, called=call.called)
            else:
                self.sink.channel_update(self.span, call.timeslot, state=st)

    def on_cleared(self, call: Call) -> None:
        self.sink.channel_update(self.span, call.timeslot, state=ST_IDLE,
                                 cause=call.cause if call.cause is not None else b"",
                                 cause_source=call.cause_source, event=EV_CLEARED)

