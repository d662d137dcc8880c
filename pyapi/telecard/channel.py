"""CallChannel: one bearer channel of a span, driven like the UAS call channel.

Each channel keeps a record of its current or last call. Only the channel changes that record,
in `_apply`, which takes the channel's registers in the order of the card's SEQ numbers: from
the event pump (events and re-reads) and from the result of each mailbox command this host
sends, which the card tags with the SEQ it left the channel at. Events that arrive while a
command is in flight wait until its result is known, so every change lands in card order.

A channel obtained from `Card.free_channel()` or `Card.wait_for_incoming_call()`, or reserved
with `reserve()`, is owned: the card offers it no incoming call and no allocator hands it out
until its owner releases it (`release()`, or the end of a `with` block), so `cause()` and
`details` describe the owner's last call until the owner starts another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Final, NamedTuple, Protocol, TypeAlias, TypeVar

from . import q850, sip
from ._wake import WakingCondition
from .address import (
    NO_NUMBER,
    NUMBER_MAX,
    Number,
    bearer_from_register,
    check_bearer,
    from_registers,
    parse_number,
)
from .causes import Cause, encode_cause, reject_value
from .device import DEFAULT_SETUP, CallSetup, CommandResult
from .errors import (
    CommandError,
    DeviceLostError,
    InvalidStateError,
    LinkTimeoutError,
    ProtocolError,
    TelecardError,
)
from .registers import (
    Bearer,
    CardState,
    CauseSource,
    ChannelBlock,
    Command,
    Direction,
    MailboxStatus,
)
from .states import NO_CALL, NO_RECORD, STATE_OF_CARD, State
from .statistics import SpanCounters
from .timeouts import check_timeout, wait_time

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Clearing normally takes milliseconds; this bounds hang_up()/reject()/call()'s timeout
# clearing when the far end never completes it (the card's own T305/T308 then finish it), and
# how long a clearing command is retried through a link that does not answer: 60 s, as UAS
# waits for clearing.
CLEAR_WAIT: Final = 60.0
# CONNECT -> CONNECT ACKNOWLEDGE (the card's T313 is 4 s).
ANSWER_WAIT: Final = 10.0
# Between attempts to reach a card that stopped answering.
_RETRY_PAUSE: Final = 0.05

# Aliases: inside CallChannel, State and Cause name its class attributes.
_State: TypeAlias = State
_Cause: TypeAlias = Cause

_MORE_DIGITS = re.compile(r"[0-9*#]*")

_END_STATES: Final = frozenset({State.IDLE, State.ERROR})
_INCOMING_STATES: Final = frozenset({State.CALL_INCOMING, State.RING_INCOMING})
_REJECT_STATES: Final = _INCOMING_STATES | {State.ANSWERED}
_LINK_ERRORS: Final = (LinkTimeoutError, ProtocolError)
_OUT_OF_SERVICE: Final = "out of service (MAINTENANCE) until the card's RESTART for it completes"

@dataclass(frozen=True)
class CallDetails(q850.NamedCause):
    """What is known about a channel's current or last call; persists until the next call.

    Times are `time.time()` wall-clock seconds; `answered` is set once the call was connected,
    and stays set after it ended. The cause fields describe the cause IE of the first clearing
    message of the call, whichever side sent it (`cause_source` "remote" or "local"). When the
    far end's clearing message had no usable cause IE, `raw_cause` is 31 (Q.931 5.8.6.1) and
    `cause_ie` is empty. `raw_cause` is None while the call is up and when it ended without a
    clearing message (device lost, firmware reset).

    `called_number` and `calling_number` are `call_to` and `call_from` with their type of
    number and numbering plan, the calling number with its presentation and screening: an
    incoming call's as the far end sent them (a withheld number keeps its digits, marked
    RESTRICTED; no calling number at all is NOT_AVAILABLE), an outgoing call's as sent.
    `bearer` is the call's bearer capability.
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
    called_number: Number = NO_NUMBER
    calling_number: Number = NO_NUMBER
    bearer: Bearer = Bearer.SPEECH

    @property
    def sip_status(self) -> int | None:
        """The SIP final response for the clearing cause (RFC 3398 §7.2.4.1, with its notes on
        location and diagnostic: `telecard.sip.q850_to_sip`); None when raw_cause is None."""
        if self.raw_cause is None:
            return None
        return sip.q850_to_sip(self.raw_cause, self.cause_location, self.cause_diagnostic)


class ChannelHost(Protocol):
    """What a CallChannel needs from the card it belongs to."""

    def check_usable(self) -> None:
        """Raise DeviceLostError once the card is gone or closed."""

    def check_open(self) -> None:
        """check_usable(), and DeviceLostError from the moment the card starts closing: for
        a new call, which the closing would not see to clear."""

    def local_location(self, span: int) -> int:
        """The location of the card's own causes on `span`."""

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
        """Run a mailbox command (`setup`: MAKE_CALL's other fields); CommandError for a
        refusal."""

    def read_block(self, span: int, timeslot: int) -> ChannelBlock:
        """Read the channel's registers now."""

    def offer_incoming(self, channel: CallChannel, call_id: int) -> None:
        """Queue incoming call `call_id` on `channel` for Card.wait_for_incoming_call()."""

    def wait(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None
    ) -> bool:
        """`cond.wait_for(predicate, timeout)` (`cond` not held), bringing the card's news in
        meanwhile."""


class _Update(NamedTuple):
    """Registers for `_apply`: a state (and SEQ) alone, or a whole block."""

    state: CardState
    seq: int
    block: ChannelBlock | None
    incoming: bool  # an INCOMING event: a new call was offered


class _Placing(NamedTuple):
    """MAKE_CALL as `_placing()` prepared it: the command, the call record it opens and its
    fields."""

    cmd: Command
    details: CallDetails
    called: str
    calling: str
    setup: CallSetup


_DIRECTIONS: Final = {d: "" if d is Direction.NONE else d.name.lower() for d in Direction}
_SOURCES: Final = {s: "" if s is CauseSource.NONE else s.name.lower() for s in CauseSource}



class CallChannel:
    """One bearer channel: place, answer, reject and clear calls on it.

    Obtain channels from `Card.free_channel()`, `Card.wait_for_incoming_call()` or
    `Card.channel()`; the numbers are the span (0-based) and the timeslot (E1 1-15 and 17-31,
    T1 1-23). Every method may be called from any thread. `CallChannel.State` and
    `CallChannel.Cause` are `telecard.State` and `telecard.Cause`, as UAS spells them.
    """

    State: ClassVar[type[State]] = State
    Cause: ClassVar[type[Cause]] = Cause

    def __init__(
        self, host: ChannelHost, span: int, timeslot: int, counters: SpanCounters | None = None
    ) -> None:
        """`counters`: the span's statistics, which the card shares among its channels."""
        self._host = host
        self._counters = SpanCounters() if counters is None else counters
        self.span: Final = span
        self.number: Final = timeslot
        self._lock = threading.Lock()
        self._cond = WakingCondition(self._lock)
        self._command_lock = threading.Lock()
        self._state = State.IDLE
        self._cause = Cause.NORMAL
        self._blank = CallDetails(span, timeslot)  # the record before any call
        self._details = self._blank
        self._live = False  # a call record is open
        self._seizure = False  # the open record counts in the statistics (a seizure)
        self._call_id = 0  # bumped for every call record
        self._seq: int | None = None  # SEQ of the newest registers applied
        self._out_of_service = False  # the card holds the channel in MAINTENANCE
        self._in_flight = False  # a command's result is awaited: hold updates back
        self._seq_sent: int | None = None  # SEQ as the latest command went out
        self._held: list[_Update] = []
        self._owned = False
        self._claimed = False  # reserve() under way
        self._waiters = 0  # threads in wait_for_incoming_call()
        self._handed_out = 0  # incoming calls handed to a channel waiter
        self._clear_pending: int | None = None  # cause value of a clear the card has not taken
        self._opened: tuple[CallDetails, int] | None = None  # the record MAKE_CALL last opened
        self._unreserve_pending = False  # an UNRESERVE the card has not confirmed
        self._unreserve_asks = 0  # UNRESERVEs asked for (_ask_unreserve)
        self._reserve_lost = False  # the card dropped the reservation: RESERVE it again

    def __repr__(self) -> str:
        owned = " owned" if self._owned else ""
        return f"<CallChannel {self._name()} {self.state().name}{owned}>"

    def __enter__(self) -> CallChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.release()
            return
        try:  # the body's exception is the one to see; the event pump finishes the release
            self.release()
        except TelecardError as failed:
            log.warning("%s: release after %r failed: %s", self._name(), exc, failed)

    def _name(self) -> str:
        return f"span {self.span} channel {self.number}"

    # -- reading --------------------------------------------------------------------------

    @property
    def in_service(self) -> bool:
        """False while the card holds the channel out of service (MAINTENANCE): after a
        clearing the far end never confirmed, until a RESTART for the channel completes
        (Q.931 5.3.4.3, 5.5; datasheet 2.4). Its state() is IDLE meanwhile, and call() is
        refused."""
        with self._lock:
            return not self._out_of_service

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

    @property
    def owned(self) -> bool:
        """Whether the channel is reserved for a caller of this Card (see the module doc)."""
        with self._lock:
            return self._owned

    # -- ownership ------------------------------------------------------------------------

    def reserve(self) -> None:
        """Reserve this IDLE channel for the caller: the card offers it no incoming call and
        `Card.free_channel()` skips it until `release()`. InvalidStateError when the channel
        is busy or already owned."""
        if not self._try_reserve():
            raise InvalidStateError(f"{self._name()} is not free to reserve")

    def release(self) -> None:
        """Give the channel up: clear any call still on it, then end the reservation.

        Safe to call more than once, on a channel that is not owned, and on a lost card (whose
        reservations are gone with it).
        """
        try:
            self.hang_up()
            with self._lock:
                if not self._owned:
                    return
                self._owned = False
                self._reserve_lost = False
                self._ask_unreserve()
            self._unreserve()
        except DeviceLostError:
            self._forget_ownership()

    def _forget_ownership(self) -> None:
        """The reservation ended with the card's session (lost, or closed under the owner)."""
        with self._lock:
            self._owned = False
            self._reserve_lost = False
            self._unreserve_pending = False

    def _ask_unreserve(self) -> None:
        """Lock held: the card is to get an UNRESERVE (_unreserve_again). The channel is not
        free until it has: a RESERVE of another caller must not go before it (_free())."""
        self._unreserve_pending = True
        self._unreserve_asks += 1

    def _unreserve(self) -> None:
        """The UNRESERVE asked for, sent again through a stalled link until the card takes
        it; after CLEAR_WAIT the event pump goes on trying and LinkTimeoutError is raised."""
        self._until_answered(self._unreserve_again)

    def _try_reserve(self) -> bool:
        """Reserve the channel if it is free; False when it is busy (here or on the card)."""
        with self._lock:
            self._host.check_usable()
            if not self._free():
                return False
            self._claimed = True
        try:
            try:
                idle = self._command(Command.RESERVE).state is CardState.IDLE
            except _LINK_ERRORS:
                # Whether the card took the RESERVE is unknown: a read that comes back was
                # sent after it, so the registers say.
                block = self._until_answered(self._read_registers)
                if not block.owned:
                    return False
                idle = block.state is CardState.IDLE
            with self._lock:
                if idle and not self._live:
                    self._owned = True
                    return True
        finally:
            with self._lock:
                self._claimed = False
        # A call reached the card before the reservation did: it is not ours to take.
        with self._lock:
            self._ask_unreserve()
        self._unreserve()
        return False

    def _free(self) -> bool:
        """Lock held: IDLE, no call, nobody owns or waits on it."""
        return (
            self._state is State.IDLE
            and not self._live
            and not self._owned
            and not self._claimed
            and not self._waiters
            and not self._in_flight
            and not self._unreserve_pending
        )

    def _take_incoming(self, call_id: int) -> bool:
        """Make the caller the owner of incoming call `call_id` if it still waits for one."""
        with self._lock:
            if not self._holds_call(call_id) or self._owned:
                return False
            self._owned = True
        try:
            self._command(Command.RESERVE)
        except CommandError:
            pass
        return True

    # -- placing calls --------------------------------------------------------------------

    def call(
        self,
        call_to: str | Number,
        call_from: str | Number = "",
        seconds_timeout: float | None = 120,
        *,
        bearer: Bearer = Bearer.SPEECH,
    ) -> _State:
        """Place a call and wait until it is answered or cleared, or the timeout passes.

        `call_to` and `call_from` are digits, `tel:` or `sip:` URIs, or `telecard.Number`s
        (which also set the calling number's presentation: withheld is RESTRICTED); see
        `telecard.address`. `bearer`: the call's bearer capability.

        On timeout the call is cleared towards the network with cause 102 (recovery on timer
        expiry) and cause() gives TIMEOUT. Returns ANSWERED while the call is up; IDLE once it
        has ended (cause() says why; `details.answered` is set if it was answered first, even
        when it cleared before call() returned); ERROR when the card was lost.
        """
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        return self._await_answer(self._start(call_to, call_from, bearer), timeout)

    def wait_for_answer(self, seconds_timeout: float | None = 120) -> _State:
        """Wait until the call placed with start_call() is answered or ends, as call() does:
        on timeout it is cleared with cause 102 and cause() gives TIMEOUT. Returns ANSWERED,
        IDLE once it ended (at once when no call is up) or ERROR."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        return self._await_answer(self._placed_call(), timeout)

    def _placed_call(self) -> int:
        """The id of the call wait_for_answer() waits on: the placed one, or the last."""
        with self._lock:
            if self._live and self._details.direction != "outgoing":
                raise InvalidStateError(f"{self._name()} holds an incoming call, not a placed one")
            return self._call_id

    def _await_answer(self, call_id: int, timeout: float | None) -> _State:
        done = self._host.wait(self._cond, lambda: self._settled(call_id), timeout)
        if not done:
            self._clear(call_id, q850.RECOVERY_ON_TIMER_EXPIRY)
        return self._state_of(call_id)

    def start_call(
        self,
        call_to: str | Number,
        call_from: str | Number = "",
        *,
        bearer: Bearer = Bearer.SPEECH,
        sending_complete: bool = True,
    ) -> _State:
        """Place a call as call() does and return at once (CALL_OUTGOING, or the state it
        already reached).

        `sending_complete=False` dials overlap (Q.931 5.1.3): `call_to` is the number so far
        (it may be empty), the SETUP goes without Sending Complete, and send_digits() gives the
        rest; the network may also find the number complete before (CALL_OUTGOING goes on).
        """
        self._start(call_to, call_from, bearer, overlap=not sending_complete)
        return self.state()

    def send_digits(self, digits: str, sending_complete: bool = False) -> _State:
        """Send more of the number of a call placed with ``start_call(...,
        sending_complete=False)``, in an INFORMATION message; `sending_complete` ends the
        number (`digits` may then be empty). Digits given before the network acknowledged the
        SETUP wait on the card and go with its SETUP ACKNOWLEDGE. `details.call_to` grows with
        them. Returns the state.

        ValueError for anything but digits 0-9, * and # or a number beyond 32 digits;
        InvalidStateError when the call is not dialling: placed with the number complete,
        Sending Complete given, proceeding (the network found the number complete) or ended.
        LinkTimeoutError when the link failed and the card did not take the digits (its
        registers are read to know): sending them again dials them once.
        """
        if not isinstance(digits, str) or not _MORE_DIGITS.fullmatch(digits):
            raise ValueError(f"digits must be a str of 0-9, * and #, not {digits!r}")
        if not digits and not sending_complete:
            raise ValueError("send_digits() needs digits or sending_complete")
        with self._lock:
            self._require(frozenset({State.CALL_OUTGOING}), "send_digits()")
            call_id = self._call_id
            number = self._details.call_to + digits
            if len(number) > NUMBER_MAX:
                raise ValueError(f"{number} is longer than {NUMBER_MAX} digits")
        cmd = Command.SEND_DIGITS_COMPLETE if sending_complete else Command.SEND_DIGITS
        try:
            result = self._command(cmd, called=digits, call_id=call_id)
        except CommandError as exc:
            if exc.status != MailboxStatus.WRONG_STATE:
                raise
            result = CommandResult(MailboxStatus.WRONG_STATE, None, 0)
        except _LINK_ERRORS:
            # Whether the card took the digits is unknown: its CALLED, which grows with the
            # digits it takes, says. Taken, they must not be sent again; otherwise the error
            # stands and sending them again is safe.
            block = self._until_answered(self._read_registers)
            if not digits or block.direction is not Direction.OUTGOING or block.called != number:
                raise
            result = CommandResult(MailboxStatus.DONE, block.state, block.seq)
        if result.status != MailboxStatus.DONE:
            raise InvalidStateError(f"{self._name()}: the call is not dialling (overlap sending)")
        with self._lock:
            if self._call_id == call_id:
                d = self._details
                self._details = _replace(
                    d,
                    call_to=number,
                    called_number=dataclasses.replace(d.called_number, digits=number),
                )
        return self._state_of(call_id)

    def _start(
        self, call_to: object, call_from: object, bearer: object, *, overlap: bool = False
    ) -> int:
        with self._lock:  # at once, not after another thread's command on the channel
            self._check_placeable()
        # The command lock is held from the checks until the call's fate is known, through
        # the registers' reading after a link failure: a hang_up() or close() waiting for it
        # then finds the call, and no other command moves the SEQ MAKE_CALL went out at
        # (_reconcile).
        with self._command_lock:
            placing = self._placing(call_to, call_from, bearer, overlap)
            try:
                self._command(
                    placing.cmd,
                    called=placing.called,
                    calling=placing.calling,
                    setup=placing.setup,
                    opens=placing.details,
                    locked=True,
                )
            except (CommandError, *_LINK_ERRORS) as exc:
                return self._placed(placing, exc)
            return self._placed(placing, None)

    def _placing(
        self, call_to: object, call_from: object, bearer: object, overlap: bool
    ) -> _Placing:
        """The first half of placing a call, the command lock held: the arguments checked,
        and the channel."""
        called = parse_number(call_to, "call_to", allow_empty=overlap)
        if called.pres_register:  # not ALLOWED, USER_NOT_SCREENED
            raise ValueError("call_to: presentation and screening belong to the calling number")
        calling = parse_number(call_from, "call_from", allow_empty=True)
        bearer = check_bearer(bearer)
        with self._lock:
            self._check_placeable()
        details = _replace(
            self._blank,
            direction="outgoing",
            call_to=called.digits,
            call_from=calling.digits,
            started=time.time(),
            called_number=called,
            calling_number=calling,
            bearer=bearer,
        )
        return _Placing(
            Command.MAKE_CALL_OVERLAP if overlap else Command.MAKE_CALL,
            details,
            called.digits,
            calling.digits,
            CallSetup(called.plan_register, calling.plan_register, calling.pres_register, bearer),
        )

    def _check_placeable(self) -> None:
        """Lock held: raise unless a call may be placed on the channel now."""
        self._host.check_open()
        if self._live or self._state is not State.IDLE or self._waiters:
            state = State.WAITING if self._waiters else self._state
            raise InvalidStateError(f"call() needs an IDLE channel; {self._name()} is {state.name}")
        if self._out_of_service:
            raise InvalidStateError(f"{self._name()} is {_OUT_OF_SERVICE}")

    def _placed(self, placing: _Placing, failure: TelecardError | None) -> int:
        """The second half, once MAKE_CALL is back (`failure`: what it raised), with the
        command lock still held: the id of the call it placed."""
        if isinstance(failure, CommandError) and failure.status == MailboxStatus.WRONG_STATE:
            why = (
                _OUT_OF_SERVICE
                if not self.in_service
                else f"the card refused {placing.cmd.name}"
            )
            raise InvalidStateError(f"{self._name()}: {why}") from failure
        if isinstance(failure, _LINK_ERRORS):
            # Whether the card placed the call is unknown: its registers say. A call it did
            # place is ours, and goes on; otherwise the error stands.
            if not self._reconcile(placing.details):
                raise failure
        elif failure is not None:
            raise failure
        with self._lock:
            if self._opened is not None and self._opened[0] is placing.details:
                return self._opened[1]
        # No record opened: the card was lost or closed while MAKE_CALL ran (ERROR).
        self._host.check_usable()
        raise DeviceLostError(f"{self._name()}: the card was lost while placing the call")

    # -- incoming calls -------------------------------------------------------------------

    def wait_for_incoming_call(self, seconds_timeout: float | None = None) -> _State:
        """Wait for an incoming call on this channel (state WAITING meanwhile).

        Returns CALL_INCOMING (or the state the call reached), or IDLE on timeout.
        """
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        handed = self._start_waiting()
        try:
            self._host.wait(self._cond, lambda: self._handed_to(handed), timeout)
        finally:
            state = self._stop_waiting()
        return state

    def _start_waiting(self) -> int:
        """Count a waiter for an incoming call; returns the hand-out count to wait past."""
        with self._cond:
            self._host.check_usable()
            if self._state is not State.IDLE or self._live:
                raise InvalidStateError(f"{self._name()} already holds a call")
            if self._owned:
                raise InvalidStateError(
                    f"{self._name()} is reserved, so the card offers it no incoming call"
                )
            self._waiters += 1
            return self._handed_out

    def _handed_to(self, handed: int) -> bool:
        """Lock held: a call was handed to the waiters since `handed`, or the card is gone."""
        return self._handed_out != handed or self._state is State.ERROR

    def _stop_waiting(self) -> _State:
        with self._cond:
            self._waiters -= 1
            return self._state

    def ring(self, seconds_ringtime: float = 0) -> _State:
        """Send ALERTING for an incoming call, then wait up to `seconds_ringtime` seconds
        (returning early when the caller clears). Returns the state."""
        ringtime = check_timeout(seconds_ringtime, "seconds_ringtime")
        call_id = self._alert()
        # The card reports IN_ALERTING as an event just after the command completes.
        self._host.wait(self._cond, lambda: self._alerted(call_id), ANSWER_WAIT)
        if ringtime:
            self._host.wait(self._cond, lambda: self._rung(call_id), wait_time(ringtime))
        return self._state_of(call_id)

    def _alert(self) -> int:
        """ring()'s command: ALERT for an incoming call not alerted yet; returns its id."""
        with self._lock:
            self._require(_INCOMING_STATES, "ring()")
            call_id = self._call_id
            alert = self._state is State.CALL_INCOMING
        if alert:
            self._command_in_call(call_id, Command.ALERT)
        return call_id

    def _rung(self, call_id: int) -> bool:
        """Lock held: call `call_id` has ended, while ringing (or the card is gone)."""
        return self._call_id != call_id or self._state in _END_STATES

    def _alerted(self, call_id: int) -> bool:
        """Lock held: call `call_id` is past CALL_INCOMING (or gone)."""
        return self._call_id != call_id or self._state is not State.CALL_INCOMING

    def answer(self) -> _State:
        """Answer an incoming call; returns ANSWERED, or IDLE/ERROR when it ended first."""
        call_id = self._answer()
        self._host.wait(self._cond, lambda: self._settled(call_id), ANSWER_WAIT)
        return self._state_of(call_id)

    def _answer(self) -> int:
        """answer()'s command; returns the id of the call answered."""
        with self._lock:
            self._require(_INCOMING_STATES, "answer()")
            call_id = self._call_id
        self._command_in_call(call_id, Command.ANSWER)
        return call_id

    def reject(self, cause: _Cause | None = None, raw_cause: int | str | None = None) -> _State:
        """Refuse an incoming call not yet answered, or release a connected (ANSWERED) call,
        with `cause` (default REJECTED); returns the state once cleared.

        `raw_cause` sends a Q.850 value (an int 1-127) instead, or the Q.850 value for a SIP
        failure status (400-699, an int or a string such as "486", through RFC 3398
        §8.2.6.1: `telecard.sip.sip_to_q850`). A bad value is a ValueError before anything
        reaches the card. The card sends DISCONNECT in both cases: Q.931 §5.3.2 allows RELEASE
        COMPLETE only as the first answer to a SETUP, and the card has sent CALL PROCEEDING.
        """
        value = reject_value(cause, raw_cause)
        call_id = self._rejectable()
        self._clear(call_id, value)
        return self._state_of(call_id)

    def _rejectable(self) -> int:
        """The id of the call reject() may refuse (incoming) or release (answered)."""
        with self._lock:
            self._require(_REJECT_STATES, "reject()")
            return self._call_id

    # -- clearing -------------------------------------------------------------------------

    def hang_up(self) -> _State:
        """Clear the call with NORMAL (cause 16) and wait until the channel is IDLE.

        Safe on an idle channel, where it does nothing. DeviceLostError once the card is lost
        or closed.
        """
        call_id = self._to_hang_up()
        if call_id is None:
            with self._lock:
                return self._state
        self._clear(call_id, q850.NORMAL_CALL_CLEARING)
        return self._state_of(call_id)

    def _to_hang_up(self) -> int | None:
        """The id of the call hang_up() clears; None when the channel holds none."""
        # A call being placed has no record until MAKE_CALL's result: let it land first, or
        # the call it opens would be left up (SIGINT in `telecard call` just after dialling).
        with self._command_lock:
            pass
        with self._lock:
            if self._state is State.ERROR:
                self._host.check_usable()
            return self._call_id if self._live else None

    def wait_for_idle(self, seconds_timeout: float | None = 60) -> _State:
        """Wait until the channel's call has ended; returns the state (IDLE unless timed out)."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        self._host.wait(self._cond, self._idle, timeout)
        with self._lock:
            return self._state

    def _idle(self) -> bool:
        """Lock held: no call on the channel."""
        return not self._live

    # -- internals: commands --------------------------------------------------------------

    def _require(self, states: frozenset[_State], what: str) -> None:
        self._host.check_usable()
        if self._state not in states:
            raise InvalidStateError(f"{what} is not valid in state {self._state.name}")

    def _state_of(self, call_id: int) -> _State:
        """The state of call `call_id`: IDLE once a later call has taken the channel."""
        with self._lock:
            if self._call_id != call_id and self._state is not State.ERROR:
                return State.IDLE
            return self._state

    def _clear(self, call_id: int, value: int) -> None:
        """Clear call `call_id` with cause `value` and wait until it has ended.

        A RELEASE the card did not confirm (the link stalled) is sent again until it does, the
        call ends, the card is lost or CLEAR_WAIT passes; until then the call stays up here,
        as it is on the card. LinkTimeoutError after CLEAR_WAIT: the event pump goes on
        trying (`_retry_clear`).
        """
        deadline = self._release(call_id, value)
        ended = self._host.wait(
            self._cond, lambda: self._gone(call_id), max(0.0, deadline - time.monotonic())
        )
        if not ended:
            self._resync()

    def _release(self, call_id: int, value: int) -> float:
        """_clear()'s command: RELEASE until the card takes it; returns the deadline for the
        call's end."""
        deadline = time.monotonic() + CLEAR_WAIT
        cause_ie = encode_cause(value, self._host.local_location(self.span))
        with self._lock:
            if self._call_id == call_id and self._live:
                self._clear_pending = value
        self._until_answered(
            lambda: self._command_in_call(call_id, Command.RELEASE, cause=cause_ie)
        )
        return deadline

    def _settled(self, call_id: int) -> bool:
        """Lock held: call `call_id` was answered or has ended."""
        return (
            self._call_id != call_id
            or self._state in _END_STATES
            or self._state is State.ANSWERED
        )

    def _gone(self, call_id: int) -> bool:
        """Lock held: call `call_id`'s record is closed."""
        return self._call_id != call_id or not self._live

    def _retry_pending(self) -> None:
        """Send again a clear or an UNRESERVE the card has not confirmed, and a RESERVE the
        card dropped (the event pump calls this when the card is quiet, and after its
        watchdog expired)."""
        with self._lock:
            value, call_id, unreserve = self._clear_pending, self._call_id, self._unreserve_pending
        if value is not None or unreserve:
            log.warning(
                "%s: sending %s again: the card has not confirmed it",
                self._name(),
                "RELEASE" if value is not None else "UNRESERVE",
            )
        try:
            if value is not None:
                cause_ie = encode_cause(value, self._host.local_location(self.span))
                self._command_in_call(call_id, Command.RELEASE, cause=cause_ie)
            if unreserve:
                self._unreserve_again()
            self._reserve_again()
        except TelecardError:
            pass

    def _reservation_dropped(self) -> bool:
        """The card dropped every reservation though this host lives on (its watchdog
        expired, datasheet 2.6): True when this channel is owned, to be reserved again
        (_reserve_again(), and _retry_pending() until the card takes it)."""
        with self._lock:
            self._reserve_lost = self._owned
            return self._owned

    def _reserve_again(self) -> None:
        """RESERVE a channel the card dropped, while its caller still owns it. The command
        lock orders it with release()'s UNRESERVE: whichever goes second decides. A card
        reset meanwhile (which ends ownership without a command) gets the RESERVE undone."""
        with self._command_lock:
            with self._lock:
                if not (self._reserve_lost and self._owned):
                    return
            self._command(Command.RESERVE, locked=True)
            with self._lock:
                self._reserve_lost = False
                if self._owned:
                    return
                self._ask_unreserve()  # sent again by the idle check if this fails
            self._unreserve_again(locked=True)

    def _unreserve_again(self, *, locked: bool = False) -> None:
        """Send the UNRESERVE asked for, unless another one has already gone (the one
        sender at a time holds the command lock) or a caller owns the channel again (an
        incoming call taken meanwhile): a stale one would undo a new owner's RESERVE.
        `locked`: the command lock is held already."""
        with contextlib.nullcontext() if locked else self._command_lock:
            with self._lock:
                if not self._unreserve_pending or self._owned:
                    self._unreserve_pending = False
                    return
                asked = self._unreserve_asks
            self._command(Command.UNRESERVE, locked=True)
            with self._lock:
                if self._unreserve_asks == asked:  # none asked for since: this one serves
                    self._unreserve_pending = False

    def _command_in_call(self, call_id: int, cmd: Command, *, cause: bytes = b"") -> None:
        """Run a command for call `call_id`; a refusal because the call moved on is fine."""
        with self._lock:
            if self._call_id != call_id or not self._live:
                return
        try:
            self._command(cmd, cause=cause, call_id=call_id)
        except CommandError as exc:
            if exc.status != MailboxStatus.WRONG_STATE:
                raise
            # The call cleared (or changed state) under us: the registers say what happened.
            self._resync()

    def _command(
        self,
        cmd: Command,
        *,
        called: str = "",
        calling: str = "",
        cause: bytes = b"",
        setup: CallSetup = DEFAULT_SETUP,
        call_id: int | None = None,
        opens: CallDetails | None = None,
        locked: bool = False,
    ) -> CommandResult:
        """Run a mailbox command; updates that arrive meanwhile wait for its result, which
        is applied at its place in the SEQ order (`setup`: MAKE_CALL's called and calling
        plans, calling presentation and bearer; `opens`: the call record MAKE_CALL opens;
        `locked`: the caller holds `_command_lock` already)."""
        with contextlib.nullcontext() if locked else self._command_lock:
            refused = self._command_begin(call_id)
            if refused is not None:
                return refused
            result: CommandResult | None = None
            try:
                result = self._host.command(
                    self.span,
                    self.number,
                    cmd,
                    called=called,
                    calling=calling,
                    cause=cause,
                    setup=setup,
                )
                return result
            finally:
                self._command_end(cmd, result, opens)

    def _command_begin(self, call_id: int | None) -> CommandResult | None:
        """`_command_lock` held, before the command goes out: updates are held back from
        now on; a WRONG_STATE result when call `call_id` (if given) has already ended."""
        with self._lock:
            if call_id is not None and (self._call_id != call_id or not self._live):
                return CommandResult(MailboxStatus.WRONG_STATE, None, self._seq or 0)
            self._in_flight = True
            self._seq_sent = self._seq
        return None

    def _command_end(
        self, cmd: Command, result: CommandResult | None, opens: CallDetails | None
    ) -> None:
        """`_command_lock` held, once the command is back (`result`: None when it failed):
        the updates held back meanwhile applied in SEQ order around its result."""
        offers = []
        with self._lock:
            if result is not None and cmd is Command.RELEASE:
                self._clear_pending = None
            self._in_flight = False
            held, self._held = self._held, []
            done = result is not None and result.status == MailboxStatus.DONE
            for update in held:
                if done and result is not None and opens and update.seq >= result.seq:
                    self._open_outgoing(opens, result.seq, result.state)
                    opens = None
                if self._apply_locked(update):
                    offers.append(self._call_id)
            if done and result is not None and opens:
                self._open_outgoing(opens, result.seq, result.state)
        for call_id in offers:
            self._host.offer_incoming(self, call_id)

    def _open_outgoing(self, details: CallDetails, seq: int, state: CardState | None) -> None:
        """Lock held: the card placed the call; at SEQ `seq` it was in `state`."""
        if self._state is State.ERROR:
            return
        if self._live:
            self._end(Cause.OTHER)
        self._open(State.CALL_OUTGOING, details, seizure=True)
        self._opened = (details, self._call_id)
        if state is not None:
            self._set_state(state)  # the call may be further on already (answered, say)
        if self._seq is None or _newer(seq, self._seq):
            self._seq = seq

    def _reconcile(self, details: CallDetails) -> bool:
        """After a MAKE_CALL whose fate is unknown: read the registers until the card answers
        (or CLEAR_WAIT passes); True, with the call's record open, when the card placed it
        (and closed with its cause when it has already ended)."""
        # SEQ as MAKE_CALL went out, not now: the updates held back meanwhile, applied once it
        # failed, may be the call's own.
        with self._lock:
            before = self._seq_sent
        while True:
            block = self._until_answered(self._read_registers)
            if block.state is None:
                return False
            with self._lock:
                if self._seq is not None and _newer(self._seq, block.seq):
                    # The pump applied newer registers meanwhile (the call's clearing,
                    # say): a record opened from these would never see its end.
                    continue
                placed = (
                    before is None or _newer(block.seq, before)
                ) and block.direction is Direction.OUTGOING
                if not placed:
                    self._apply_locked(_Update(block.state, block.seq, block, False))
                elif block.state in NO_CALL:
                    self._open_outgoing(details, block.seq, None)
                    self._end_with(block)
                else:
                    self._open_outgoing(details, block.seq, block.state)
                return placed

    def _read_registers(self) -> ChannelBlock:
        return self._host.read_block(self.span, self.number)

    def _until_answered(self, request: Callable[[], _T]) -> _T:
        """`request()`, again while the link fails, until CLEAR_WAIT has passed."""
        deadline = time.monotonic() + CLEAR_WAIT
        failed = False
        while True:
            try:
                return request()
            except _LINK_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise
                if not failed:
                    log.warning(
                        "%s: %s; trying again for up to %g s", self._name(), exc, CLEAR_WAIT
                    )
                    failed = True
                time.sleep(_RETRY_PAUSE)

    def _resync(self) -> None:
        try:
            block = self._host.read_block(self.span, self.number)
        except TelecardError:
            return
        if block.state is not None:
            self._apply(_Update(block.state, block.seq, block, False))

    # -- internals: the one place a call's record changes ---------------------------------

    def _apply(self, update: _Update) -> None:
        """Take registers from the card (the event pump's one entry point). An incoming call
        that no thread waiting on this channel takes goes to the card's queue."""
        with self._lock:
            if self._in_flight:
                self._held.append(update)
                return
            offer = self._apply_locked(update)
            call_id = self._call_id
        if offer:
            self._host.offer_incoming(self, call_id)

    def _apply_locked(self, update: _Update) -> bool:
        """Lock held: take registers; True when they offer a call nobody here took."""
        if self._seq is not None and not _newer(update.seq, self._seq):
            return False
        self._seq = update.seq
        if self._state is State.ERROR:
            return False
        self._out_of_service = update.state is CardState.MAINTENANCE
        block = update.block
        if block is not None and self._owned and not block.owned:
            # The card dropped the reservation, its WATCHDOG event missed (an overflow, say):
            # the idle check reserves the channel again.
            self._reserve_lost = True
        if update.state in NO_CALL:
            if self._live and block is not None:
                self._end_with(block)
            elif self._live:
                self._end(Cause.OTHER)
            return False
        if block is None:
            self._set_state(update.state)
            return False
        direction = _DIRECTIONS[block.direction]
        same = self._live and direction in ("", self._details.direction)
        if self._live and (update.incoming or not same):
            # The call we knew ended and another began before we saw it: its cause is gone.
            self._end(Cause.OTHER)
        if self._live:
            self._set_state(update.state)
            return False
        if update.state in NO_RECORD:
            return False
        state = STATE_OF_CARD[update.state]
        offered = state in _INCOMING_STATES and block.direction is Direction.INCOMING
        self._open(
            state,
            CallDetails(
                self.span,
                self.number,
                direction,
                call_to=block.called,
                call_from=block.calling,
                call_reference=block.call_ref,
                started=time.time() if update.incoming else None,
                called_number=from_registers(block.called, block.called_plan),
                calling_number=from_registers(block.calling, block.calling_plan, block.pres_bearer),
                bearer=bearer_from_register(block.pres_bearer),
            ),
            seizure=offered,
        )
        if not offered:
            # A call up before this Card opened: shown, to be hung up.
            log.info(
                "%s: adopted %s call to %s from %s, %s",
                self._name(),
                f"an {direction}" if direction else "a",
                block.called or "-",
                block.calling or "-",
                state,
            )
            return False
        if self._waiters:
            self._handed_out += 1
            self._cond.notify_all()  # what the waiters wait for (_handed_to)
            return False
        return True

    def _set_state(self, card_state: CardState) -> None:
        if not self._live or card_state in NO_RECORD:
            return
        state = STATE_OF_CARD[card_state]
        if state is self._state:
            return
        if state is State.ANSWERED and self._details.answered is None:
            self._details = _replace(self._details, answered=time.time())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s -> %s", self._name(), self._state, state)
        self._state = state
        self._cond.notify_all()

    def _end_with(self, block: ChannelBlock) -> None:
        """Close the record with the cause registers of the clearing."""
        d = self._details
        if block.called != d.call_to and block.called and d.call_to.startswith(block.called):
            # Digits send_digits() gave before the far end took the number as complete were
            # never sent (datasheet 2.7): the record keeps the number the network got.
            self._details = _replace(
                d,
                call_to=block.called,
                called_number=dataclasses.replace(d.called_number, digits=block.called),
            )
        source = _SOURCES[block.cause_source]
        cause, value = block.clearing_outcome()
        ie = block.cause
        if log.isEnabledFor(logging.DEBUG):
            _log_cause(self._name(), block, cause, value)
        if ie is not None:
            self._end(
                cause,
                value,
                ie.location,
                ie.coding_standard,
                bytes(ie.diagnostic),
                source,
                block.cause_octets,
                block.call_ref,
            )
        else:
            octets = block.cause_octets
            self._end(cause, value, source=source, octets=octets, call_ref=block.call_ref)

    def _open(self, state: _State, details: CallDetails, *, seizure: bool) -> None:
        """Lock held: open a call record; a `seizure` (placed or offered here, not adopted)
        is counted in the span's statistics."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: %s -> %s, %s call to %s from %s",
                self._name(),
                self._state,
                state,
                details.direction or "a",
                details.call_to or "-",
                details.call_from or "-",
            )
        self._call_id += 1
        self._live = True
        self._seizure = seizure
        if seizure:
            self._counters.opened(details.direction == "incoming")
        self._state = state
        self._cause = Cause.NORMAL
        self._details = details
        self._cond.notify_all()

    def _end(
        self,
        cause: _Cause,
        raw_cause: int | None = None,
        location: int | None = None,
        coding_standard: int | None = None,
        diagnostic: bytes = b"",
        source: str = "",
        octets: bytes = b"",
        call_ref: int | None = None,
    ) -> None:
        """Lock held: close the call record with `cause` and the cause IE's fields."""
        self._live = False
        self._clear_pending = None
        if cause is not Cause.ERROR and log.isEnabledFor(logging.DEBUG):  # _fail logs its own
            log.debug("%s: %s -> IDLE, cause %s", self._name(), self._state, cause)
        if self._state is not State.ERROR:
            self._state = State.IDLE
        self._cause = cause
        d = self._details
        if self._seizure:
            self._seizure = False
            self._counters.closed(
                d.direction == "incoming", cause, raw_cause, d.answered is not None
            )
        self._details = _replace(
            d,
            call_reference=call_ref if d.call_reference is None else d.call_reference,
            raw_cause=raw_cause,
            cause_location=location,
            cause_coding_standard=coding_standard,
            cause_diagnostic=diagnostic,
            cause_source=source,
            cause_ie=octets,
            ended=time.time(),
        )
        self._cond.notify_all()

    def _fail(self, *, lost: bool) -> None:
        """The card reset (`lost` False: reservations are gone too) or is gone: any call ends
        with ERROR."""
        with self._lock:
            if self._live and log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s: %s -> %s, cause ERROR: the card was %s",
                    self._name(),
                    self._state,
                    "ERROR" if lost else "IDLE",
                    "lost" if lost else "reset",
                )
            if lost:
                self._state = State.ERROR
            else:
                self._seq = None  # SEQ restarts at boot
                self._out_of_service = False
                self._owned = False
                self._reserve_lost = False
            if self._live:
                self._end(Cause.ERROR)
            elif lost:
                self._cause = Cause.ERROR
            self._cond.notify_all()

    def _holds_call(self, call_id: int) -> bool:
        """Lock held: incoming call `call_id` is still waiting to be answered or rejected."""
        return self._call_id == call_id and self._live and self._state in _INCOMING_STATES

    def _incoming_waiting(self, call_id: int) -> bool:
        with self._lock:
            return self._holds_call(call_id)

    def _pending(self) -> bool:
        """A clear or an UNRESERVE waits for the card to confirm it, or a RESERVE the card
        dropped is to be sent again."""
        with self._lock:
            return self._clear_pending is not None or self._unreserve_pending or self._reserve_lost

    def _live_call(self) -> bool:
        with self._lock:
            return self._live


def _log_cause(name: str, block: ChannelBlock, cause: Cause, value: int | None) -> None:
    """DEBUG: the cause a clearing carried, with its Q.850 names."""
    sender = {CauseSource.REMOTE: "the network", CauseSource.LOCAL: "the card"}.get(
        block.cause_source, "nobody"
    )
    ie = block.cause
    if ie is not None:
        log.debug(
            "%s: cause %d (%s), location %d (%s), sent by %s -> %s",
            name,
            ie.value,
            q850.cause_name(ie.value),
            ie.location,
            q850.location_name(ie.location),
            sender,
            cause,
        )
    elif value is not None:
        log.debug("%s: clearing without a cause IE, sent by %s: taken as cause %d -> %s",
                  name, sender, value, cause)
    else:
        log.debug("%s: cause IE %s, sent by %s -> %s", name,
                  block.cause_octets.hex() or "absent", sender, cause)


def _replace(details: CallDetails, **changes: object) -> CallDetails:
    """dataclasses.replace(details, **changes) at a fraction of the cost: that runs the frozen
    dataclass's __init__, which sets each of its fifteen fields through object.__setattr__,
    and every call replaces its record two or three times."""
    new = object.__new__(CallDetails)
    new.__dict__.update(details.__dict__, **changes)
    return new


def _newer(seq: int, than: int) -> bool:
    """SEQ `seq` comes after `than` (free-running, modulo 2**32)."""
    return 0 < (seq - than) & 0xFFFFFFFF < 0x80000000
