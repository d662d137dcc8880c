"""Scenarios as data: a plan file (TOML) of routes and scheduled incoming calls.

A plan declares what the network emulator does with the card's calls and which calls it offers
the card, and when::

    default = { outcome = "Reject", cause = 1 }       # numbers without a route (optional)

    [routes]
    "3301" = "Busy"                                   # an outcome by name, defaults only
    "3302" = { outcome = "Answer", after = 0.5, hold = 10 }
    "3310" = ["Busy", { outcome = "Answer", after = 0.05 }]  # one per attempt, the last repeats

    [[calls]]                                         # offered to the card
    at = 2.0                                          # seconds after the card starts
    to = "2000"
    from = "0123456789"                               # optional, default ""
    span = 0                                          # optional, default 0
    timeslot = 31                                     # optional, default: any free channel
    hold = 5.0                                        # optional: network clears 5 s after answer
    exclusive = true                                  # optional: false only prefers `timeslot`

Outcomes are named as `firmware_sim.network.OUTCOMES` (and the control socket) names them
(Answer, NoAnswer, NoResponse, Reject, Busy, Congestion, RawCause) and take the parameters
those take; octets (a Reject's ``diagnostic``, a RawCause's ``octets``) are hex strings, and
a RawCause without ``octets`` clears without a cause IE. A call due while its span's D-channel
is down is offered as soon as the link comes up; calls are offered in the order of their ``at``.

`load` refuses a bad plan with `PlanError`, naming the file, the key (and the line when the TOML
itself is malformed) and the reason.
"""

from __future__ import annotations

import os
import re
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from firmware_sim import regmap as rm
from firmware_sim.card import LINES
from firmware_sim.network import Outcome, OutcomeError, check_seconds, make_outcome

__all__ = ["CallSchedule", "IncomingCall", "Plan", "PlanError", "demo_path", "load", "parse"]


class PlanError(ValueError):
    """A plan file that cannot be used: `path`, the `key` at fault ("" for the whole file),
    the `line` when known, and the `reason`."""

    def __init__(self, path: str, key: str, reason: str, line: int | None = None) -> None:
        where = "".join(f"{part}: " for part in (path, f"line {line}" if line else "", key) if part)
        super().__init__(f"{where}{reason}")
        self.path = path
        self.key = key
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A call the plan offers the card `at` seconds after it starts."""

    at: float
    to: str
    from_: str = ""
    span: int = 0
    timeslot: int | None = None
    hold: float | None = None
    exclusive: bool = True


@dataclass(frozen=True, slots=True)
class Plan:
    """A loaded plan: `routes` (a tuple is a sequence, one outcome per attempt), the `default`
    outcome of unrouted numbers (None: the emulator's own), and `calls` ordered by `at`."""

    path: str
    routes: Mapping[str, Outcome | tuple[Outcome, ...]]
    calls: tuple[IncomingCall, ...] = ()
    default: Outcome | None = None

    def check(self, spans: int, line: str) -> None:
        """Refuse (PlanError) calls on a span or timeslot a card of that shape lacks."""
        bearers = rm.bearer_timeslots(LINES[line])
        for i, call in enumerate(self.calls):
            if call.span >= spans:
                raise PlanError(self.path, f"calls[{i}].span",
                                f"span {call.span}, but the card has 0-{spans - 1}")
            if call.timeslot is not None and call.timeslot not in bearers:
                raise PlanError(self.path, f"calls[{i}].timeslot",
                                f"{call.timeslot} is not a B-channel of {line}")

    def install(self, network: Network) -> None:
        """Route the plan's numbers (and set its default) on `network`, an emulator or a
        remote card's."""
        if self.default is not None:
            network.default = self.default
        for number, route in self.routes.items():
            network.route(number, route)

    def start(self, network: Network) -> CallSchedule:
        """Offer the plan's calls on `network`, timed from now; stop() the schedule to end it."""
        return CallSchedule(network, self.calls)


class Network(Protocol):
    """What a plan needs of a network emulator (local or `firmware_sim.remote`)."""

    default: Outcome

    def route(self, number: str, outcome: Outcome | Sequence[Outcome]) -> None: ...

    def place_call(self, to: str, from_: str = "", span: int = 0, hold: float | None = None,
                   timeslot: int | None = None, exclusive: bool = True) -> object: ...

    def link_up(self, span: int) -> bool: ...


class CallSchedule:
    """A thread offering a plan's calls at their times; `placed` holds their handles."""

    #: How often a call waiting for its span's D-channel looks again (seconds).
    POLL = 0.02

    def __init__(self, network: Network, calls: Sequence[IncomingCall]) -> None:
        self._network = network
        self._calls = tuple(calls)
        self._stop = threading.Event()
        self._start = time.monotonic()
        #: The handles of the calls offered so far, in order.
        self.placed: list[object] = []
        self._thread = threading.Thread(target=self._run, name="plan calls", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for call in self._calls:
            if self._stop.wait(max(0.0, self._start + call.at - time.monotonic())):
                return
            while not self._network.link_up(call.span):
                if self._stop.wait(self.POLL):
                    return
            self.placed.append(self._network.place_call(
                call.to, call.from_, call.span, call.hold, call.timeslot, call.exclusive))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every call is offered (or the schedule stopped); False on time-out."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Offer no more calls (those offered go on)."""
        self._stop.set()
        self._thread.join()


# --- reading ---------------------------------------------------------------------------------

Convert = Callable[[str, str, object], object]


def _number(path: str, key: str, value: object) -> float:
    try:  # finite: TOML has nan and inf, and a call at = inf would never come
        return check_seconds("", value)
    except (TypeError, ValueError) as exc:
        raise PlanError(path, key, str(exc)) from None


def _int(path: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(path, key, f"must be an integer, not {value!r}")
    return value


def _bool(path: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PlanError(path, key, f"must be true or false, not {value!r}")
    return value


def _str(path: str, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise PlanError(path, key, f"must be a string, not {value!r}")
    return value


def _digits(path: str, key: str, value: object) -> str:
    number = _str(path, key, value)
    if not number.isascii() or not number.isdigit():
        raise PlanError(path, key, f"must be a number of digits 0-9, not {value!r}")
    return number


def _calling(path: str, key: str, value: object) -> str:
    number = _str(path, key, value)
    if number and (not number.isascii() or not number.isdigit()):
        raise PlanError(path, key, f"must be a number of digits 0-9, not {value!r}")
    return number


def _outcome(path: str, key: str, value: object) -> Outcome:
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, dict):
        params = dict(value)
        name = params.pop("outcome", None)
        if name is None:
            raise PlanError(path, key, "an outcome table needs outcome = \"Answer\" (or another)")
        name = _str(path, f"{key}.outcome", name)
    else:
        raise PlanError(path, key, f"an outcome is a name or a table, not {value!r}")
    try:  # the vocabulary the control socket speaks too
        return make_outcome(name, params)
    except OutcomeError as exc:
        raise PlanError(path, key if exc.param is None else f"{key}.{exc.param}",
                        str(exc)) from None


def _route(path: str, key: str, value: object) -> Outcome | tuple[Outcome, ...]:
    if isinstance(value, list):
        if not value:
            raise PlanError(path, key, "a sequence needs at least one outcome")
        return tuple(_outcome(path, f"{key}[{i}]", step) for i, step in enumerate(value))
    return _outcome(path, key, value)


_CALL_KEYS: dict[str, Convert] = {
    "at": _number, "to": _digits, "from": _calling, "span": _int, "timeslot": _int,
    "hold": _number, "exclusive": _bool,
}


def _call(path: str, key: str, value: object) -> IncomingCall:
    if not isinstance(value, dict):
        raise PlanError(path, key, f"a call is a table ([[calls]]), not {value!r}")
    args: dict[str, Any] = {}
    for name, raw in value.items():
        if name not in _CALL_KEYS:
            raise PlanError(path, f"{key}.{name}",
                            f"unknown key; a call takes {', '.join(_CALL_KEYS)}")
        args["from_" if name == "from" else name] = _CALL_KEYS[name](path, f"{key}.{name}", raw)
    for name in ("at", "to"):
        if name not in args:
            raise PlanError(path, key, f"a call needs {name!r}")
    if args.get("span", 0) < 0:
        raise PlanError(path, f"{key}.span", f"must be 0 or more, not {args['span']}")
    return IncomingCall(**args)


def parse(text: str, path: str = "<plan>") -> Plan:
    """The plan in TOML `text` (`path` names it in errors); PlanError if it is bad."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib gives a position only in its message: "Invalid value (at line 3, column 7)"
        where = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc), re.DOTALL)
        if where is None:
            raise PlanError(path, "", f"not valid TOML: {exc}") from None
        raise PlanError(path, "", f"not valid TOML: {where[1]} (column {where[3]})",
                        int(where[2])) from None
    unknown = sorted(data.keys() - {"routes", "calls", "default"})
    if unknown:
        raise PlanError(path, unknown[0], "unknown key; a plan has routes, calls and default")
    routes_table = data.get("routes", {})
    if not isinstance(routes_table, dict):
        raise PlanError(path, "routes", "must be a table ([routes])")
    routes = {}
    for number, route in routes_table.items():
        key = f"routes.{number}"
        routes[_digits(path, key, number)] = _route(path, key, route)
    calls_list = data.get("calls", [])
    if not isinstance(calls_list, list):
        raise PlanError(path, "calls", "must be an array of tables ([[calls]])")
    calls = [_call(path, f"calls[{i}]", call) for i, call in enumerate(calls_list)]
    default = _outcome(path, "default", data["default"]) if "default" in data else None
    return Plan(path, routes, tuple(sorted(calls, key=lambda c: c.at)), default)


def load(path: str | os.PathLike[str]) -> Plan:
    """The plan in the file `path`; PlanError if it cannot be read or is bad."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise PlanError(name, "", f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise PlanError(name, "", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    return parse(text, name)


def demo_path() -> str:
    """The shipped demo plan's file (``firmware_sim/plans/demo.toml``)."""
    return str(resources.files("firmware_sim") / "plans" / "demo.toml")
