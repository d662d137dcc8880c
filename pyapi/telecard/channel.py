"""CallChannel: one bearer channel of a span, driven like the UAS call channel.

A channel's state moves on events the card's event thread delivers (see card.py); the
application threads that call methods here only send mailbox commands and wait. Each channel
has one lock with a condition (state, details, waiters) and one command lock that keeps
mailbox commands on the channel in order.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, TypeAlias

from . import q850
from ._cdriver import lib
from .causes import Cause, encode_cause, normalise, reject_value
from .errors import CommandError, InvalidStateError
from .states import CARD_CLEARING, CARD_STATES, State

if TYPE_CHECKING:
    from .card import Card, ChannelBlock

# Clearing normally takes milliseconds; this bounds hang_up()/reject()/call()'s timeout
# clearing when the far end never completes it (the card's own T305/T308 then finish it).
CLEAR_WAIT: Final = 45.0
# CONNECT -> CONNECT ACKNOWLEDGE (the card's T313 is 4 s).
ANSWER_WAIT: Final = 10.0

# Aliases: inside CallChannel, State and Cause name its class attributes.
_State: TypeAlias = State
_Cause: TypeAlias = Cause

_DIGITS = re.compile(r"[0-9*#]{1,32}")
_TEL_VISUAL = re.compile(r"[-.()]")

_DIRECTIONS: Final = {lib.TC_DIR_OUTGOING: "outgoing", lib.TC_DIR_INCOMING: "incoming"}
_END_STATES: Final = frozenset({State.IDLE, State.ERROR})
_INCOMING_STATES: Final = frozenset({State.CALL_INCOMING, State.RING_INCOMING})


def parse_number(number: object, what: str, *, allow_empty: bool = False) -> str:
    """Digits for the card from digits or a `tel:` URI (RFC 3966); ValueError otherwise.

    The URI's parameters (`;phone-context=...`), visual separators and a global number's
    leading `+` are dropped: the card carries digits only.
    """
    if not isinstance(number, str):
        raise ValueError(f"{what} must be a str of digits or a tel: URI, not {number!r}")
    digits = number
    if number[:4].lower() == "tel:":
        digits = _TEL_VISUAL.sub("", number[4:].split(";", 1)[0])
        if digits.startswith("+"):
            digits = digits[1:]
        if not digits:
            raise ValueError(f"{what}: {number!r} is a tel: URI without a number")
    if digits == "" and allow_empty:
        return ""
    if not _DIGITS.fullmatch(digits):
        raise ValueError(
            f"{what}: {number!r} is not 1-32 digits (0-9, *, #) or a tel: URI of them"
        )
    return digits


def _check_timeout(seconds: float | None, what: str) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        raise ValueError(f"{what} must be a number of seconds or None, not {seconds!r}")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, not {seconds}")
    return float(seconds)


def _wait_time(seconds: float | None) -> float | None:
    """A checked timeout as Condition.wait() takes it: None (no limit) for inf and for values
    past what the platform can wait (which would raise OverflowError)."""
    return None if seconds is None or seconds >= threading.TIMEOUT_MAX else seconds


@dataclass(frozen=True)
class CallDetails:
    """What is known about a channel's current or last call; persists until the next call.

    Times are `time.time()` wall-clock seconds. The cause fields describe the cause IE of the
    first clearing message of the call, whichever side sent it (`cause_source` "remote" or
    "local"); `raw_cause` is None when the call ended without one (device lost, firmware
    reset) or is still up.
    """

    span: int
    channel: int
    direction: str = ""  # "outgoing", "incoming", or "" before the first call
    call_to: str = ""
    call_from: str = ""
    call_reference: int | None = None
    raw_cause: int | None = None
    cause_location: int | None = None
    cause_coding_standard: int | None = None
    cause_diagnostic: bytes = b""
    cause_source: str = ""  # "remote", "local" or ""
    cause_ie: bytes = b""  # the cause IE octets as the card recorded them
    started: float | None = None
    answered: float | None = None
    ended: float | None = None

    @property
    def raw_cause_name(self) -> str:
        """Q.850 name of raw_cause ("" when there is none)."""
        return "" if self.raw_cause is None else q850.cause_name(self.raw_cause)

    @property
    def cause_location_name(self) -> str:
        """Q.850 name of cause_location ("" when there is none)."""
        return "" if self.cause_location is None else q850.location_name(self.cause_location)


class CallChannel:
    """One bearer channel: place, answer, reject and clear calls on it.

    Obtain channels from `Card.channel()`, `Card.free_channel()` or
    `Card.wait_for_incoming_call()`; the numbers are the span (0-based) and the timeslot
    (E1 1-15 and 17-31, T1 1-23). Every method may be called from any thread.
    """

    State: ClassVar[type[State]] = State
    Cause: ClassVar[type[Cause]] = Cause

    def __init__(self, card: Card, span: int, timeslot: int) -> None:
        self._card = card
        self.span: Final = span
        self.number: Final = timeslot
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._command_lock = threading.Lock()
        self._state = State.IDLE
        self._cause = Cause.NORMAL
        self._details = CallDetails(span, timeslot)
        self._live = False  # a call record is open
        self._call_id = 0  # bumped for every call record
        self._waiters = 0  # threads in wait_for_incoming_call()
        self._handed_out = 0  # incoming calls handed to a channel waiter
        self._reserved_until = 0.0

    def __repr__(self) -> str:
        return f"<CallChannel {self._name()} {self.state().name}>"

    def _name(self) -> str:
        return f"span {self.span} channel {self.number}"

    # -- reading --------------------------------------------------------------------------

    def state(self) -> _State:
        """The channel's state; WAITING while a thread waits here for an incoming call."""
        with self._lock:
            if self._state is State.IDLE and self._waiters:
                return State.WAITING
            return self._state

    def cause(self) -> _Cause:
        """NORMAL while a call is up; after it clears, why it cleared."""
        with self._lock:
            return self._cause

    @property
    def details(self) -> CallDetails:
        """Details of the current or last call (a frozen snapshot)."""
        with self._lock:
            return self._details

    @property
    def Details(self) -> CallDetails:  # noqa: N802 - the UAS name
        """The same as `details`, under the UAS name."""
        return self.details

    # -- placing calls --------------------------------------------------------------------

    def call(
        self, call_to: str, call_from: str = "", seconds_timeout: float | None = 120
    ) -> _State:
        """Place a call and wait until it is answered or cleared, or the timeout passes.

        On timeout the call is cleared towards the network with cause 102 (recovery on timer
        expiry) and cause() gives TIMEOUT. Returns the state: ANSWERED, or IDLE when the call
        ended (cause() says why), or ERROR when the card was lost.
        """
        timeout = _wait_time(_check_timeout(seconds_timeout, "seconds_timeout"))
        call_id = self._start(call_to, call_from)
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._call_id != call_id
                or self._state in _END_STATES
                or self._state is State.ANSWERED,
                timeout,
            )
        if not done:
            self._clear(call_id, q850.RECOVERY_ON_TIMER_EXPIRY)
        return self._state_of(call_id)

    def start_call(self, call_to: str, call_from: str = "") -> _State:
        """Place a call and return at once (CALL_OUTGOING, or the state it already reached)."""
        self._start(call_to, call_from)
        return self.state()

    def _start(self, call_to: str, call_from: str) -> int:
        called = parse_number(call_to, "call_to")
        calling = parse_number(call_from, "call_from", allow_empty=True)
        with self._lock:
            self._card.check_usable()
            if self._state is not State.IDLE or self._live or self._waiters:
                state = State.WAITING if self._waiters and not self._live else self._state
                raise InvalidStateError(
                    f"call() needs an IDLE channel; {self._name()} is {state.name}"
                )
            previous = (self._details, self._cause)
            call_id = self._open(
                State.CALL_OUTGOING,
                CallDetails(
                    self.span, self.number, "outgoing", called, calling, started=time.time()
                ),
            )
        try:
            self._command(lib.TC_CMD_MAKE_CALL, called=called, calling=calling)
        except CommandError as exc:
            with self._cond:
                # The card refused: no call existed, unless an incoming call took the channel.
                if self._call_id == call_id and self._live:
                    self._live = False
                    self._state = State.IDLE
                    self._details, self._cause = previous
                    self._cond.notify_all()
            if exc.status == lib.TC_MB_ERR_STATE:
                raise InvalidStateError(f"{self._name()}: the card refused MAKE_CALL") from exc
            raise
        return call_id

    # -- incoming calls -------------------------------------------------------------------

    def wait_for_incoming_call(self, seconds_timeout: float | None = None) -> _State:
        """Wait for an incoming call on this channel (state WAITING meanwhile).

        Returns CALL_INCOMING (or the state the call reached), or IDLE on timeout.
        """
        timeout = _wait_time(_check_timeout(seconds_timeout, "seconds_timeout"))
        with self._cond:
            self._card.check_usable()
            if self._state is not State.IDLE:
                raise InvalidStateError(f"{self._name()} already holds a call")
            handed = self._handed_out
            self._waiters += 1
            try:
                self._cond.wait_for(
                    lambda: self._handed_out != handed or self._state is State.ERROR, timeout
                )
            finally:
                self._waiters -= 1
            return self._state

    def ring(self, seconds_ringtime: float = 0) -> _State:
        """Send ALERTING for an incoming call, then wait up to `seconds_ringtime` seconds
        (returning early when the caller clears). Returns the state."""
        ringtime = _check_timeout(seconds_ringtime, "seconds_ringtime")
        with self._lock:
            self._require(_INCOMING_STATES, "ring()")
            call_id = self._call_id
            alert = self._state is State.CALL_INCOMING
        if alert:
            self._command_in_call(call_id, lib.TC_CMD_ALERT)
        with self._cond:
            # The card reports IN_ALERTING as an event just after the command completes.
            self._cond.wait_for(
                lambda: self._call_id != call_id or self._state is not State.CALL_INCOMING,
                ANSWER_WAIT,
            )
            if ringtime:
                self._cond.wait_for(
                    lambda: self._call_id != call_id or self._state in _END_STATES,
                    _wait_time(ringtime),
                )
        return self._state_of(call_id)

    def answer(self) -> _State:
        """Answer an incoming call; returns ANSWERED, or IDLE/ERROR when it ended first."""
        with self._lock:
            self._require(_INCOMING_STATES, "answer()")
            call_id = self._call_id
        self._command_in_call(call_id, lib.TC_CMD_ANSWER)
        with self._cond:
            self._cond.wait_for(
                lambda: self._call_id != call_id
                or self._state in _END_STATES
                or self._state is State.ANSWERED,
                ANSWER_WAIT,
            )
        return self._state_of(call_id)

    def reject(self, cause: _Cause | None = None, raw_cause: int | None = None) -> _State:
        """Refuse an incoming call that has not been answered (default cause REJECTED).

        Sends RELEASE COMPLETE, or DISCONNECT once the call was alerted with ring().
        `raw_cause` (1-127) sends that value instead. Returns the state once cleared.
        """
        value = reject_value(cause, raw_cause)
        with self._lock:
            self._require(_INCOMING_STATES, "reject()")
            call_id = self._call_id
        self._clear(call_id, value)
        return self._state_of(call_id)

    # -- clearing -------------------------------------------------------------------------

    def hang_up(self) -> _State:
        """Clear the call with NORMAL (cause 16) and wait until the channel is IDLE.

        Safe on an idle channel, where it does nothing.
        """
        with self._lock:
            if not self._live:
                return self._state
            call_id = self._call_id
        self._clear(call_id, q850.NORMAL_CALL_CLEARING)
        return self._state_of(call_id)

    def wait_for_idle(self, seconds_timeout: float | None = 60) -> _State:
        """Wait until the channel's call has ended; returns the state (IDLE unless timed out)."""
        timeout = _wait_time(_check_timeout(seconds_timeout, "seconds_timeout"))
        with self._cond:
            self._cond.wait_for(lambda: not self._live, timeout)
            return self._state

    # -- internals: commands --------------------------------------------------------------

    def _require(self, states: frozenset[_State], what: str) -> None:
        self._card.check_usable()
        if self._state not in states:
            raise InvalidStateError(f"{what} is not valid in state {self._state.name}")

    def _state_of(self, call_id: int) -> _State:
        """The state of call `call_id`: IDLE once a later call has taken the channel."""
        with self._lock:
            if self._call_id != call_id and self._state is not State.ERROR:
                return State.IDLE
            return self._state

    def _clear(self, call_id: int, value: int) -> None:
        """Send RELEASE with cause `value` for call `call_id` and wait until it has ended."""
        cause_ie = encode_cause(value, self._card.local_location(self.span))
        self._command_in_call(call_id, lib.TC_CMD_RELEASE, cause=cause_ie)
        with self._cond:
            ended = self._cond.wait_for(
                lambda: self._call_id != call_id or not self._live, CLEAR_WAIT
            )
        if not ended:
            self._card.resync(self)

    def _command_in_call(self, call_id: int, cmd: int, *, cause: bytes = b"") -> None:
        """Run a command for call `call_id`; a refusal because the call moved on is fine."""
        try:
            self._command(cmd, cause=cause, call_id=call_id)
        except CommandError as exc:
            if exc.status != lib.TC_MB_ERR_STATE:
                raise
            # The call cleared (or changed state) under us: the registers say what happened.
            self._card.resync(self)

    def _command(
        self,
        cmd: int,
        *,
        called: str = "",
        calling: str = "",
        cause: bytes = b"",
        call_id: int | None = None,
    ) -> None:
        with self._command_lock:
            if call_id is not None:
                with self._lock:
                    if self._call_id != call_id or not self._live:
                        return
            self._card.command(self, cmd, called=called, calling=calling, cause=cause)

    # -- internals: called by the card's event thread -------------------------------------

    def _open(self, state: _State, details: CallDetails) -> int:
        """Open a call record (lock held)."""
        self._call_id += 1
        self._live = True
        self._state = state
        self._cause = Cause.NORMAL
        self._details = details
        self._reserved_until = 0.0
        self._cond.notify_all()
        return self._call_id

    def _end(self, cause: _Cause, **details: object) -> None:
        """Close the call record with `cause` (lock held)."""
        self._live = False
        if self._state is not State.ERROR:
            self._state = State.IDLE
        self._cause = cause
        self._details = dataclasses.replace(self._details, ended=time.time(), **details)  # type: ignore[arg-type]
        self._cond.notify_all()

    def on_state(self, card_state: int) -> None:
        """The card reports a new state for the call (not IDLE: see on_cleared)."""
        with self._lock:
            if not self._live or card_state == CARD_CLEARING:
                return
            state = CARD_STATES.get(card_state)
            if state is None or state is State.IDLE:
                return
            if state is State.ANSWERED and self._details.answered is None:
                self._details = dataclasses.replace(self._details, answered=time.time())
            self._state = state
            self._cond.notify_all()

    def on_incoming(self, block: ChannelBlock) -> bool:
        """A call arrived; returns True when a thread waiting on this channel takes it."""
        with self._lock:
            if self._state is State.ERROR:
                return True
            self._open(
                CARD_STATES.get(block.state, State.CALL_INCOMING),
                CallDetails(
                    self.span,
                    self.number,
                    "incoming",
                    call_to=block.called,
                    call_from=block.calling,
                    call_reference=block.call_ref,
                    started=time.time(),
                ),
            )
            if self._waiters:
                self._handed_out += 1
                return True
            return False

    def on_adopt(self, block: ChannelBlock) -> None:
        """The registers show a call this channel has no record of (one left up by whoever had
        the card open before, say): open a record for it, so it shows and can be cleared."""
        state = CARD_STATES.get(block.state)
        if state is None or state is State.IDLE:
            return  # CLEARING: the card ends it by itself
        with self._lock:
            if self._live or self._state is State.ERROR:
                return
            self._open(
                state,
                CallDetails(
                    self.span,
                    self.number,
                    _DIRECTIONS.get(block.direction, ""),
                    call_to=block.called,
                    call_from=block.calling,
                    call_reference=block.call_ref,
                ),
            )

    def on_cleared(self, block: ChannelBlock | None) -> None:
        """The call cleared; `block` holds the cause registers (None: the cause is lost)."""
        with self._lock:
            if not self._live:
                return
            if block is None:
                self._end(Cause.OTHER)
                return
            if self._details.call_reference is None:
                self._details = dataclasses.replace(self._details, call_reference=block.call_ref)
            ie = block.cause
            if ie is None:
                self._end(
                    Cause.OTHER if block.malformed_cause else normalise(None),
                    cause_ie=block.cause_octets,
                    cause_source=block.cause_source,
                )
                return
            self._end(
                normalise(ie),
                raw_cause=ie.value,
                cause_location=ie.location,
                cause_coding_standard=ie.coding_standard,
                cause_diagnostic=bytes(ie.diagnostic),
                cause_source=block.cause_source,
                cause_ie=block.cause_octets,
            )

    def on_failure(self, *, lost: bool) -> None:
        """The card reset (`lost` False) or is gone: any call ends with ERROR."""
        with self._lock:
            if lost:
                self._state = State.ERROR
            if self._live:
                self._end(Cause.ERROR)
            elif lost:
                self._cause = Cause.ERROR
            self._cond.notify_all()

    def reserve(self, until: float, now: float) -> bool:
        """Claim an idle channel for free_channel() until `until` (monotonic)."""
        with self._lock:
            if (
                self._live
                or self._state is not State.IDLE
                or self._waiters
                or self._reserved_until > now
            ):
                return False
            self._reserved_until = until
            return True

    def same_call(self, block: ChannelBlock) -> bool:
        """Whether the registers in `block` describe the live call (by direction)."""
        with self._lock:
            direction = _DIRECTIONS.get(block.direction, "")
            return not self._live or direction == "" or direction == self._details.direction

    def is_live(self) -> bool:
        with self._lock:
            return self._live

    def call_id(self) -> int:
        with self._lock:
            return self._call_id

    def holds_call(self, call_id: int) -> bool:
        """True while incoming call `call_id` is still waiting to be answered or rejected."""
        with self._lock:
            return self._call_id == call_id and self._live and self._state in _INCOMING_STATES

