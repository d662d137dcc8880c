"""The network emulator: the far end of every span that is not handed to an external D-channel.

Each span's far end is a real Q.931 entity (callcontrol.CallControl, network side when the card
is TE, user side when the card is NT) over its own LAPD, cabled to the card in memory. Tests
script it from any thread: `route()` decides what happens to the card's calls and
`place_call()` offers calls to the card.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias, TypeGuard

from . import q931
from .callcontrol import (
    P_ACTIVE,
    P_IN_ALERT,
    P_IN_OVERLAP,
    P_OUT_ALERT,
    P_OUT_OVERLAP,
    Call,
    CallControl,
)
from .dchannel import MemoryEnd, memory_link
from .firmware import on_loop_thread
from .q931 import Message
from .regmap import CAUSE_SRC_LOCAL, ROLE_NT, ROLE_TE
from .signalling import PLAIN_CALL, CallInfo

#: How far a refused call gets before it is cleared (see `Reject`).
Stage = Literal["setup", "proceeding", "alerting", "inband"]
_STAGES = ("setup", "proceeding", "alerting", "inband")
#: The longest diagnostic a Reject carries: a cause IE holds at most 255 octets, 2 of them
#: the coding/location and value octets.
MAX_DIAGNOSTIC = 253
RECEIVED_KEPT = 1000
"""The default `history` of NetworkEmulator: how many of the calls the card placed `received`
keeps, the newest (a standalone card keeps fewer: `python -m firmware_sim --history N`)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Alert, connect `after` seconds later; clear with cause 16 `hold` seconds after that."""

    after: float = 0.0
    hold: float | None = None
    overlap: bool = False  # send SETUP ACKNOWLEDGE before CALL PROCEEDING

    def __post_init__(self) -> None:
        check_seconds("after", self.after)
        if self.hold is not None:
            check_seconds("hold", self.hold)
        if not isinstance(self.overlap, bool):
            raise TypeError(f"overlap must be true or false, not {self.overlap!r}")


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """Alert and never connect (the network's T301 eventually clears with cause 19)."""


@dataclass(frozen=True, slots=True)
class NoResponse:
    """Ignore the SETUP entirely, so the caller's T303 runs out."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse with any Q.850 cause. `stage` is how far the call gets first: "setup" answers the
    SETUP with RELEASE COMPLETE; "proceeding", "alerting" and "inband" (PROGRESS with in-band
    information) send those messages and then DISCONNECT."""

    cause: int
    location: int = q931.LOC_PUBLIC_REMOTE
    diagnostic: bytes = b""
    coding_standard: int = 0
    stage: Stage = "setup"

    def __post_init__(self) -> None:
        check_int("cause", self.cause, 127)
        check_int("location", self.location, 15)
        check_int("coding_standard", self.coding_standard, 3)
        if not isinstance(self.diagnostic, bytes):
            raise TypeError(f"diagnostic must be bytes, not {self.diagnostic!r}")
        if len(self.diagnostic) > MAX_DIAGNOSTIC:
            raise ValueError(f"a diagnostic is at most {MAX_DIAGNOSTIC} octets, "
                             f"not {len(self.diagnostic)}")
        _check_stage(self.stage)

    def body(self) -> bytes:
        """The cause IE contents this outcome clears with."""
        return q931.cause_body(self.cause, self.location, self.diagnostic, self.coding_standard)


@dataclass(frozen=True, slots=True)
class RawCause:
    """Clear with these cause-IE contents exactly (malformed, truncated, non-ITU: anything);
    None sends the clearing message without a cause IE at all."""

    octets: bytes | None
    stage: Stage = "setup"

    def __post_init__(self) -> None:
        if self.octets is not None and not isinstance(self.octets, bytes):
            raise TypeError(f"octets must be bytes or None, not {self.octets!r}")
        if len(self.octets or b"") > 255:
            raise ValueError("cause contents are at most 255 octets")
        _check_stage(self.stage)


def check_seconds(name: str, value: object, limit: float = math.inf) -> float:
    """`value` as seconds: a finite real number 0..`limit`; TypeError or ValueError else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}".strip())
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}".strip())
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, not {value!r}".strip())
    if value > limit:
        raise ValueError(f"{name} must be at most {limit}, not {value!r}".strip())
    return float(value)


def check_int(name: str, value: object, high: int, low: int = 0) -> int:
    """`value` as an int low..high (a bool is not one); TypeError or ValueError else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}".strip())
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is not {low}-{high}".strip())
    return value


def _check_stage(stage: object) -> None:
    if stage not in _STAGES:
        raise ValueError(f"stage {stage!r} is not one of {', '.join(_STAGES)}")


def Busy(stage: Stage = "setup") -> Reject:  # noqa: N802 - reads as an outcome class
    """User busy: cause 17 from the remote user's network."""
    return Reject(q931.CAUSE_USER_BUSY, q931.LOC_PUBLIC_REMOTE, stage=stage)


def Congestion(stage: Stage = "setup") -> Reject:  # noqa: N802
    """Switching equipment congestion: cause 42 from the local network."""
    return Reject(q931.CAUSE_CONGESTION, q931.LOC_PUBLIC_LOCAL, stage=stage)


def _hex(value: object) -> bytes:
    try:
        return bytes.fromhex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"must be hex octets, not {value!r}") from None


def _hex_or_none(value: object) -> bytes | None:
    return None if value is None else _hex(value)


def _seconds(value: object) -> float:
    return check_seconds("", value)


def _seconds_or_none(value: object) -> float | None:
    return None if value is None else _seconds(value)


def _integer(value: object) -> int:
    return check_int("", value, 1 << 31)  # the outcome checks the range, naming it


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, not {value!r}")
    return value


def _same(value: object) -> object:
    return value  # the outcome's own __post_init__ checks it


@dataclass(frozen=True)
class OutcomeKind:
    """One outcome name of the shared vocabulary (plan files and the control socket): what
    builds it, how each parameter is read from its text form (octets as hex), the required
    ones, and the defaults the text form fills in."""

    build: Callable[..., Outcome]
    params: dict[str, Callable[[object], object]]
    required: frozenset[str] = frozenset()
    defaults: tuple[tuple[str, object], ...] = ()


#: The outcome names of plan files and the control socket.
OUTCOMES: dict[str, OutcomeKind] = {}


class OutcomeError(ValueError):
    """Parameters that make no outcome; `param` is the one at fault (None: the whole)."""

    def __init__(self, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.param = param


def make_outcome(name: str, params: dict[str, Any]) -> Outcome:
    """The outcome `name` (a key of OUTCOMES) with its parameters in text form; OutcomeError
    naming the fault otherwise."""
    kind = OUTCOMES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise OutcomeError(f"unknown outcome {name!r}; one of {', '.join(OUTCOMES)}")
    kwargs: dict[str, Any] = dict(kind.defaults)
    for param, raw in params.items():
        convert = kind.params.get(param)
        if convert is None:
            known = ", ".join(kind.params) or "none"
            raise OutcomeError(f"{name} takes no {param!r} (takes: {known})", param)
        try:
            kwargs[param] = convert(raw)
        except (TypeError, ValueError) as exc:
            raise OutcomeError(f"{param}: {exc}", param) from None
    missing = sorted(kind.required - params.keys())
    if missing:
        raise OutcomeError(f"{name} needs {', '.join(missing)}")
    try:
        return kind.build(**kwargs)
    except (TypeError, ValueError) as exc:
        raise OutcomeError(str(exc)) from None


#: What the network does with one call to a number (subclasses count as their base class).
Outcome = Answer | NoAnswer | NoResponse | Reject | RawCause
_OUTCOME_TYPES = (Answer, NoAnswer, NoResponse, Reject, RawCause)
#: A callable route: (called, calling, attempt) -> the outcome of that call.
RouteFunction: TypeAlias = Callable[[str, str, int], Outcome]
#: What `NetworkEmulator.route` takes: one outcome for every call, a sequence (one per attempt,
#: the last repeating), or a function of (called, calling, attempt).
Route: TypeAlias = Outcome | Sequence[Outcome] | RouteFunction
#: The outcome of a number without a route: cause 1 (unallocated number) from the local network.
UNROUTED = Reject(q931.CAUSE_UNALLOCATED, q931.LOC_PUBLIC_LOCAL)
#: What a call gets when its route function raises or returns something that is not an
#: outcome: cause 41 (temporary failure) from the local network.
ROUTE_FAILED = Reject(q931.CAUSE_TEMPORARY_FAILURE, q931.LOC_PUBLIC_LOCAL)

OUTCOMES.update({
    "Answer": OutcomeKind(
        Answer, {"after": _seconds, "hold": _seconds_or_none, "overlap": _flag}),
    "NoAnswer": OutcomeKind(NoAnswer, {}),
    "NoResponse": OutcomeKind(NoResponse, {}),
    "Reject": OutcomeKind(
        Reject,
        {"cause": _integer, "location": _integer, "diagnostic": _hex,
         "coding_standard": _integer,
         "stage": _same},
        frozenset({"cause"}),
    ),
    "Busy": OutcomeKind(Busy, {"stage": _same}),
    "Congestion": OutcomeKind(Congestion, {"stage": _same}),
    # without octets: the clearing message has no cause IE at all
    "RawCause": OutcomeKind(RawCause, {"octets": _hex_or_none, "stage": _same},
                            defaults=(("octets", None),)),
})

_log = logging.getLogger(__name__)


def is_outcome(value: object) -> TypeGuard[Outcome]:
    """`value` is an outcome: an instance of Answer, NoAnswer, NoResponse, Reject or RawCause
    (or of a subclass of one)."""
    return isinstance(value, _OUTCOME_TYPES)


class _Routing:
    """One number's route and how many calls it has had since it was set (its attempts)."""

    __slots__ = ("route", "attempts")

    def __init__(self, route: Outcome | tuple[Outcome, ...] | RouteFunction) -> None:
        self.route = route
        self.attempts = 0


def _checked_route(route: Route) -> Outcome | tuple[Outcome, ...] | RouteFunction:
    """`route` as stored: a sequence becomes a tuple, so later changes to the caller's list
    cannot reach a route in use."""
    if is_outcome(route):
        return route
    if isinstance(route, Sequence) and not isinstance(route, (str, bytes)):
        steps = tuple(route)
        if not steps:
            raise ValueError("a sequence route needs at least one outcome")
        for step in steps:
            if not is_outcome(step):
                raise TypeError(f"{step!r} in a sequence route is not an outcome")
        return steps
    if callable(route):
        return route
    raise TypeError(f"{route!r} is not an outcome, a sequence of outcomes or a callable")


@dataclass(frozen=True, slots=True)
class CallResult:
    """What became of one call between the card and the network."""

    span: int
    timeslot: int | None
    called: str
    calling: str
    alerted: bool = False
    answered: bool = False
    cleared: bool = False
    cleared_by: str | None = None  # "card" or "network": who sent the first clearing message
    cause: int | None = None
    location: int | None = None
    coding_standard: int | None = None
    cause_octets: bytes | None = None
    error: str | None = None  # the network could not place the call at all
    info: CallInfo = PLAIN_CALL  # the SETUP's numbering plans, presentation and bearer


_RESULT_FIELDS = tuple(f.name for f in fields(CallResult))


class CallHandle:
    """A call seen from the network; its result is updated on the loop, read from any thread."""

    def __init__(self, emulator: NetworkEmulator, span: int, called: str, calling: str,
                 timeslot: int | None = None, info: CallInfo = PLAIN_CALL) -> None:
        self._emulator = emulator
        self._cond = threading.Condition()
        self._result = CallResult(span, timeslot, called, calling, info=info)
        self.call: Call | None = None  # touched on the loop thread only
        self.hold: float | None = None
        self.exclusive = True
        # Overlap sending towards the card: the digits the SETUP left out, and whether the
        # last INFORMATION carries Sending Complete
        self.rest = ""
        self.sending_complete = True
        self._timer: asyncio.TimerHandle | None = None

    @property
    def result(self) -> CallResult:
        """The call as it stands now (a frozen snapshot)."""
        with self._cond:
            return self._result

    def wait(self, timeout: float = 5.0,
             until: Literal["alerted", "answered", "cleared"] = "cleared") -> CallResult:
        """Block until the call reached `until` (or ended); TimeoutError otherwise."""
        def done() -> bool:
            r = self._result
            return bool(getattr(r, until) or r.cleared or r.error)

        with self._cond:
            if not self._cond.wait_for(done, timeout):
                raise TimeoutError(f"call not {until} within {timeout} s: {self._result}")
            return self._result

    def clear(self, cause: int = q931.CAUSE_NORMAL_CLEARING,
              location: int = q931.LOC_PUBLIC_REMOTE) -> None:
        """Clear the call from the network side (thread-safe)."""
        self._emulator._threadsafe(self._clear, q931.cause_body(cause, location))

    def _clear(self, body: bytes) -> None:
        call = self.call
        if call is not None and call.ctx is self:
            span = self._emulator._spans[self._result.span]
            span.cc.disconnect(call, body)

    def _update(self, **changes: object) -> None:
        with self._cond:
            r = self._result
            # dataclasses.replace() without its per-call field introspection (it sits between
            # the network's RELEASE and the RELEASE COMPLETE reaching the card)
            values = [changes[n] if n in changes else getattr(r, n) for n in _RESULT_FIELDS]
            self._result = CallResult(*values)  # type: ignore[arg-type]
            self._cond.notify_all()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _EmulatedSpan:
    """The far end of one span: a Q.931 entity plus the scripted behaviour of the network."""

    def __init__(self, emulator: NetworkEmulator, loop: asyncio.AbstractEventLoop, span: int,
                 line: int, role: int, end: MemoryEnd) -> None:
        self.emulator = emulator
        self.loop = loop
        self.span = span
        location = q931.LOC_PUBLIC_LOCAL if role == ROLE_NT else q931.LOC_USER
        self.cc = CallControl(loop, end, role=role, line=line, listener=self,
                              timers=emulator.timers, location=location)

    # CallListener
    def on_link(self, up: bool) -> None:
        pass

    def on_maintenance(self, timeslot: int, out_of_service: bool) -> None:
        pass

    def on_incoming(self, call: Call, msg: Message) -> None:
        if not msg.sending_complete and not self.emulator.routed(call.called):
            # Overlap receiving: collect digits until Sending Complete, a number with a
            # route, or T302 expiry
            self.cc.setup_ack(call)
            return
        self._route(call)

    def on_digits(self, call: Call, sending_complete: bool, expired: bool) -> None:
        if sending_complete or self.emulator.routed(call.called):
            self._route(call)
        elif expired:  # dialling stopped short of any routed number (Q.931 §5.1.3)
            self.cc.disconnect(call, q931.cause_body(q931.CAUSE_INVALID_NUMBER_FORMAT,
                                                     q931.LOC_PUBLIC_LOCAL))

    def _route(self, call: Call) -> None:
        """The called number is complete: route the call."""
        emulator = self.emulator
        outcome, error = emulator._next_outcome(call.called, call.calling)
        handle: CallHandle | None = None
        if emulator.keep_history or (isinstance(outcome, Answer) and outcome.hold is not None):
            handle = CallHandle(emulator, self.span, call.called, call.calling, call.timeslot,
                                call.info)
            handle.call = call
            call.ctx = handle
            if error is not None:
                handle._update(error=error)
            if emulator.keep_history:
                emulator._record(handle)
        cc = self.cc
        # isinstance, not type(): a subclass of an outcome is that outcome
        if isinstance(outcome, Reject):
            self._refuse(call, outcome.body(), outcome.stage)
        elif isinstance(outcome, RawCause):
            self._refuse(call, outcome.octets, outcome.stage)
        elif isinstance(outcome, Answer):
            if outcome.overlap:
                cc.setup_ack(call)
            cc.proceeding(call)
            cc.alert(call)
            if handle is not None:
                handle.hold = outcome.hold
            if outcome.after > 0:
                self.loop.call_later(outcome.after, self._answer, call)
            else:
                self._answer(call)
        elif isinstance(outcome, NoAnswer):
            cc.proceeding(call)
            cc.alert(call)
        else:
            cc.discard(call)

    def _answer(self, call: Call) -> None:
        self.cc.answer(call)

    def _refuse(self, call: Call, body: bytes | None, stage: str) -> None:
        cc = self.cc
        if stage == "setup":
            if call.phase == P_IN_OVERLAP:  # after SETUP ACKNOWLEDGE only DISCONNECT clears
                cc.disconnect(call, body)
            else:
                cc.release_complete(call, body)
            return
        cc.proceeding(call)
        if stage == "alerting":
            cc.alert(call)
        elif stage == "inband":
            cc.progress(call, q931.PI_INBAND)
            cc.disconnect(call, body, progress=q931.PI_INBAND)
            return
        cc.disconnect(call, body)

    def on_state(self, call: Call) -> None:
        handle = call.ctx
        if handle is None:
            return
        if handle._result.timeslot != call.timeslot:  # the card chose another channel
            handle._update(timeslot=call.timeslot)
        if call.phase == P_OUT_OVERLAP:
            self._send_rest(call, handle)
        elif call.phase == P_OUT_ALERT:
            handle._update(alerted=True)
        elif call.phase == P_ACTIVE:
            handle._update(answered=True)
            if handle.hold is not None:
                handle._timer = self.loop.call_later(
                    handle.hold, handle._clear, q931.cause_body(q931.CAUSE_NORMAL_CLEARING,
                                                                q931.LOC_PUBLIC_REMOTE))
        elif call.phase == P_IN_ALERT:
            handle._update(alerted=True)

    def _send_rest(self, call: Call, handle: CallHandle) -> None:
        """The card acknowledged an overlap SETUP: the rest of the number, a digit at a time."""
        rest, handle.rest = handle.rest, ""
        complete = handle.sending_complete
        if not rest:
            if complete:
                self.cc.information(call, "", True)
            return
        for i, digit in enumerate(rest):
            self.cc.information(call, digit, complete and i == len(rest) - 1)

    def on_cleared(self, call: Call) -> None:
        handle = call.ctx
        if handle is None:
            return
        handle._cancel_timer()
        fields = q931.parse_cause(call.cause or b"")
        handle._update(
            cleared=True,
            cleared_by="network" if call.cause_source == CAUSE_SRC_LOCAL else "card",
            cause=fields.value if fields else None,
            location=fields.location if fields else None,
            coding_standard=fields.coding_standard if fields else None,
            cause_octets=call.cause,
        )

    def place(self, handle: CallHandle, timeslot: int | None) -> None:
        cc = self.cc
        r = handle.result
        ts = timeslot if timeslot is not None else cc.free_timeslot()
        if not cc.link_up:
            handle._update(error="D-channel down")
            return
        overlap = len(r.called) - len(handle.rest)
        call = (cc.make_call(ts, r.called[:overlap], r.calling, exclusive=handle.exclusive,
                             info=r.info,
                             sending_complete=overlap == len(r.called) and handle.sending_complete)
                if ts is not None else None)
        if call is None:
            handle._update(error=f"no free channel (asked for {timeslot})")
            return
        call.ctx = handle
        handle.call = call
        handle._update(timeslot=ts)


class NetworkEmulator:
    """The far end of every emulated span; route() and place_call() work from any thread.

    `history` (default RECEIVED_KEPT) bounds `received`, the calls the card placed: the newest
    `history` of them are kept, 0 keeps none while `wait_received` still counts them.
    `keep_history=False` records no calls at all (and `wait_received` then never returns).
    """

    def __init__(self, *, timers: dict[str, float] | None = None,
                 keep_history: bool = True, history: int | None = None) -> None:
        self.timers = dict(timers or {})
        self.keep_history = keep_history
        self._routes: dict[str, _Routing] = {}
        self._lock = threading.Lock()
        self._spans: dict[int, _EmulatedSpan] = {}
        # Bounded: a simulated card runs for days, and a growing heap stretches its garbage
        # collections past the host's 250 ms time-out.
        self._received: deque[CallHandle] = deque(
            maxlen=RECEIVED_KEPT if history is None else history)
        self._received_total = 0
        self._received_cond = threading.Condition(self._lock)
        self.default: Outcome = UNROUTED

    # --- scripting (any thread) ---------------------------------------------------------

    def route(self, number: str, outcome: Route) -> None:
        """Decide what happens to calls to `number` (effective immediately).

        `outcome` is one outcome for every call; or a sequence of outcomes, one per attempt,
        the last repeating (``[Busy(), Answer()]``: busy once, then answered every time); or a
        function ``(called, calling, attempt) -> outcome``, called on the card's thread for
        each call (it must not block). Attempts count the calls to `number` since this
        route() from 1. A function that raises or returns no outcome costs its call
        `ROUTE_FAILED`, with the reason in the call's `CallResult.error`.
        """
        routing = _Routing(_checked_route(outcome))
        with self._lock:
            self._routes[number] = routing

    def unroute(self, number: str) -> None:
        """Forget the route of `number`: its calls get `default` again."""
        with self._lock:
            self._routes.pop(number, None)

    def routed(self, number: str) -> bool:
        """Whether `number` has a route: an overlap call to it is complete."""
        with self._lock:
            return number in self._routes

    def lookup(self, number: str) -> Outcome | tuple[Outcome, ...] | RouteFunction:
        """The route of `number` as route() stored it (a sequence as a tuple), or `default`."""
        with self._lock:
            routing = self._routes.get(number)
            return self.default if routing is None else routing.route

    def attempts(self, number: str) -> int:
        """How many calls to `number` its route has had (0 without a route)."""
        with self._lock:
            routing = self._routes.get(number)
            return 0 if routing is None else routing.attempts

    def place_call(self, to: str, from_: str = "", span: int = 0, hold: float | None = None,
                   timeslot: int | None = None, exclusive: bool = True,
                   info: CallInfo = PLAIN_CALL, overlap: int | None = None,
                   sending_complete: bool = True) -> CallHandle:
        """Offer a call to the card; `hold`: seconds after answer before the network clears.

        The SETUP names `timeslot` (default: the highest free channel, as networks hunt
        downwards) exclusive, or only preferred with `exclusive=False`, so the card may answer
        on another channel (the handle's result then shows that one). `info`: the numbering
        plans, calling presentation and bearer it carries (a calling number is sent when
        `from_` or the presentation is given).

        `overlap` dials overlap: the SETUP carries only the first `overlap` digits of `to` and
        no Sending Complete; once the card answers SETUP ACKNOWLEDGE the others follow, one per
        INFORMATION. The last message carries Sending Complete unless `sending_complete` is
        False: then the card's length rule or T302 ends the number (datasheet 2.7).
        """
        es = self._spans[span]
        if overlap is not None:
            check_int("overlap", overlap, len(to))
        handle = CallHandle(self, span, to, from_, timeslot, info)
        handle.hold = hold
        handle.exclusive = exclusive
        if overlap is not None:
            handle.rest = to[overlap:]
            handle.sending_complete = sending_complete
        elif not sending_complete:
            raise ValueError("sending_complete=False needs overlap")
        es.loop.call_soon_threadsafe(es.place, handle, timeslot)
        return handle

    def clear(self, span: int, timeslot: int, cause: int = q931.CAUSE_NORMAL_CLEARING,
              location: int = q931.LOC_PUBLIC_REMOTE) -> None:
        """Clear whatever call the network has on that channel (at once on the card's
        thread, from another thread soon after)."""
        es = self._spans[span]
        body = q931.cause_body(cause, location)

        def clear() -> None:
            call = es.cc.channels.get(timeslot)
            if call is not None:
                es.cc.disconnect(call, body)

        if on_loop_thread(es.loop):
            clear()
        else:
            es.loop.call_soon_threadsafe(clear)

    def restart(self, span: int, timeslot: int | None = None) -> None:
        """Send RESTART for one channel or the whole interface."""
        es = self._spans[span]
        es.loop.call_soon_threadsafe(es.cc.restart, timeslot)

    def status_enquiry(self, span: int, timeslot: int) -> None:
        """Send STATUS ENQUIRY for the network's call on that channel, if it has one."""
        es = self._spans[span]

        def enquire() -> None:
            call = es.cc.channels.get(timeslot)
            if call is not None:
                es.cc.status_enquiry(call)

        es.loop.call_soon_threadsafe(enquire)

    def inject(self, span: int, payload: bytes) -> None:
        """Send raw Q.931 octets to the card (error-handling tests)."""
        es = self._spans[span]
        es.loop.call_soon_threadsafe(es.cc.send_raw, payload)

    def link_up(self, span: int) -> bool:
        """Whether the D-channel (LAPD multiple-frame operation) of `span` is established."""
        es = self._spans.get(span)
        return es is not None and es.cc.link_up

    @property
    def received(self) -> list[CallHandle]:
        """Calls the card placed, oldest first: the newest `history` of them."""
        with self._lock:
            return list(self._received)

    @property
    def history(self) -> int:
        """How many calls `received` keeps at most (the newest); settable, 0 keeps none."""
        return self._received.maxlen or 0

    @history.setter
    def history(self, maxlen: int) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0:
            raise ValueError(f"history must be an int >= 0, not {maxlen!r}")
        with self._lock:
            self._received = deque(self._received, maxlen=maxlen)

    def wait_received(self, count: int, timeout: float = 5.0) -> list[CallHandle]:
        """Block until the card has placed `count` calls in all; TimeoutError otherwise.
        Returns `received`."""
        with self._received_cond:
            if not self._received_cond.wait_for(
                lambda: self._received_total >= count, timeout
            ):
                raise TimeoutError(f"{self._received_total} of {count} calls arrived")
            return list(self._received)

    # --- wiring (loop thread) -----------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, span: int, line: int,
               card_role: int) -> MemoryEnd:
        """Create the far end of `span` and return the card's end of the cable."""
        card_end, far_end = memory_link(loop)
        role = ROLE_TE if card_role == ROLE_NT else ROLE_NT
        previous = self._spans.get(span)
        if previous is not None:  # the card rebooted: its old far end goes with its old link
            previous.cc.stop()
        self._spans[span] = _EmulatedSpan(self, loop, span, line, role, far_end)
        return card_end

    def entity(self, span: int) -> CallControl:
        """The far end's Q.931 entity (loop thread only)."""
        return self._spans[span].cc

    def stop(self) -> None:
        """Silence every far end (loop thread)."""
        for es in self._spans.values():
            es.cc.stop()

    def _next_outcome(self, called: str, calling: str) -> tuple[Outcome, str | None]:
        """The outcome of a call to `called`, counted as an attempt; and why the route
        failed, if it did (loop thread)."""
        with self._lock:
            routing = self._routes.get(called)
            if routing is None:
                return self.default, None
            routing.attempts += 1
            attempt = routing.attempts
            route = routing.route
        if isinstance(route, tuple):
            return route[min(attempt, len(route)) - 1], None
        if not callable(route):  # outcomes are not callable
            return route, None
        try:  # outside the lock: the function may route() or unroute() itself
            outcome = route(called, calling, attempt)
        except Exception as exc:  # a broken test script must not take the card down
            _log.exception("route function for %s failed", called)
            return ROUTE_FAILED, f"route function for {called} raised {exc!r}"
        if not is_outcome(outcome):
            return ROUTE_FAILED, f"route function for {called} returned {outcome!r}"
        return outcome, None

    def _record(self, handle: CallHandle) -> None:
        with self._received_cond:
            self._received.append(handle)
            self._received_total += 1
            self._received_cond.notify_all()

    def _threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        loop = next(iter(self._spans.values())).loop
        loop.call_soon_threadsafe(fn, *args)
