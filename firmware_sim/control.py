"""The control socket of a standalone card: its network emulator, faults and state, served to
one controller at a time over a Unix domain socket in JSON lines (docs/control.rst).

The server has its own threads and uses only the card's thread-safe API (the emulator's
scripting methods, Faults, call_on_loop), so a controller waiting for a call never holds up the
card's loop.
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from firmware_sim import q931
from firmware_sim import regmap as rm
from firmware_sim.card import LINES, SimulatedCard
from firmware_sim.firmware import call_on_loop
from firmware_sim.network import (
    OUTCOMES,
    Answer,
    CallHandle,
    CallResult,
    NoAnswer,
    NoResponse,
    Outcome,
    OutcomeError,
    RawCause,
    Reject,
    check_int,
    check_seconds,
    is_outcome,
    make_outcome,
)

#: The protocol version a server announces in its greeting.
PROTOCOL = 1
#: Call handles the server keeps ids for, the newest (older ids answer "unknown call").
HANDLES_KEPT = 2000
#: The longest request line; a longer one is answered with a ProtocolError and skipped.
MAX_LINE = 1 << 20
#: The longest timeout a wait takes (seconds); a longer one is a ValueError.
MAX_TIMEOUT = 3600.0
#: How often a waiting op looks whether its controller has gone (seconds).
_WAIT_SLICE = 0.1

Json = dict[str, Any]


class ProtocolError(ValueError):
    """A request the server cannot read (bad JSON, unknown op, missing or wrong arguments)."""


class _ControllerGone(ConnectionError):
    """The controller hung up while its request was waiting: the session ends, unanswered."""


# --- the wire form of outcomes and results (shared with firmware_sim.remote) ----------------


def encode_outcome(outcome: Outcome) -> Json:
    """The JSON object of an outcome; a subclass goes as the outcome it is a kind of."""
    if isinstance(outcome, Reject):
        return {
            "type": "Reject",
            "cause": outcome.cause,
            "location": outcome.location,
            "diagnostic": outcome.diagnostic.hex(),
            "coding_standard": outcome.coding_standard,
            "stage": outcome.stage,
        }
    if isinstance(outcome, RawCause):
        octets = None if outcome.octets is None else outcome.octets.hex()
        return {"type": "RawCause", "octets": octets, "stage": outcome.stage}
    if isinstance(outcome, Answer):
        return {
            "type": "Answer",
            "after": outcome.after,
            "hold": outcome.hold,
            "overlap": outcome.overlap,
        }
    if isinstance(outcome, NoAnswer):
        return {"type": "NoAnswer"}
    if isinstance(outcome, NoResponse):
        return {"type": "NoResponse"}
    raise TypeError(f"{outcome!r} is not an outcome")


def decode_outcome(obj: object) -> Outcome:
    """The outcome a JSON object names (any name of network.OUTCOMES, octets in hex);
    ProtocolError if it names none or its parameters make none."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"an outcome is a JSON object, not {obj!r}")
    args = dict(obj)
    kind = args.pop("type", None)
    if kind not in OUTCOMES:
        raise ProtocolError(f"unknown outcome type {kind!r}; one of {', '.join(OUTCOMES)}")
    try:
        return make_outcome(kind, args)
    except OutcomeError as exc:
        raise ProtocolError(f"bad {kind} outcome {obj!r}: {exc}") from None


def encode_route(route: object) -> Json | list[Json]:
    """The JSON form of a route: an outcome's object, or a list of them for a sequence."""
    if isinstance(route, tuple | list):
        return [encode_outcome(step) for step in route]
    if is_outcome(route):
        return encode_outcome(route)
    raise TypeError(
        f"{route!r} cannot cross the control socket: a route there is an outcome or a "
        "sequence of outcomes (a route function runs only in the card's own process)"
    )


def decode_route(obj: object) -> Outcome | list[Outcome]:
    """The route a JSON value names: an outcome, or a list of outcomes (a sequence)."""
    if isinstance(obj, list):
        return [decode_outcome(step) for step in obj]
    return decode_outcome(obj)


def encode_result(result: CallResult) -> Json:
    """The JSON object of a call's result (cause_octets in hex)."""
    out = {f.name: getattr(result, f.name) for f in fields(CallResult)}
    octets = result.cause_octets
    out["cause_octets"] = None if octets is None else octets.hex()
    return out


def decode_result(obj: Json) -> CallResult:
    """The CallResult of its JSON object."""
    values = dict(obj)
    octets = values.get("cause_octets")
    values["cause_octets"] = None if octets is None else bytes.fromhex(octets)
    return CallResult(**values)


# --- the server --------------------------------------------------------------------------------


class ControlServer:
    """Serve `card` on the Unix domain socket `path` (mode 0600) until close().

    One controller at a time: while one is connected, another connection is answered with a
    refusal naming the controller and closed. Peers of another user are refused too (the mode
    already keeps them out; the peer credentials check closes the gap where a directory is
    shared). An existing live control socket at `path` is an error; a stale one is replaced.
    """

    def __init__(self, card: SimulatedCard, path: str | os.PathLike[str]) -> None:
        self.card = card
        self.path = os.path.abspath(os.fspath(path))
        self._handles: OrderedDict[int, CallHandle] = OrderedDict()
        self._ids: dict[CallHandle, int] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._controller: socket.socket | None = None
        self._controller_pid: int | None = None
        self._closed = False
        self._conn: socket.socket | None = None  # the controller of the request in hand
        self._listener = self._bind()
        self._ino = os.stat(self.path).st_ino
        self._ops: dict[str, Callable[[Json], object]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_op_")
        }
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"control {self.path}", daemon=True
        )
        self._thread.start()

    def _bind(self) -> socket.socket:
        path = self.path
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise FileExistsError(f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                pass  # stale: its server is gone, so the rename below replaces it
            else:
                raise FileExistsError(f"{path}: another card's control socket is live")
            finally:
                probe.close()
        # Bound in a private directory and given mode 0600 there, then renamed into place: no
        # moment when another user can reach it, and no process-wide umask change.
        private = tempfile.mkdtemp(prefix=".control-", dir=os.path.dirname(path))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            staged = os.path.join(private, "s")
            listener.bind(staged)
            os.chmod(staged, 0o600)
            os.rename(staged, path)
            listener.listen(4)
        except BaseException:
            listener.close()
            raise
        finally:
            try:
                os.unlink(os.path.join(private, "s"))
            except FileNotFoundError:
                pass
            os.rmdir(private)
        return listener

    def close(self) -> None:
        """Stop serving: the controller is disconnected and the socket file removed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            controller = self._controller
        try:  # only if it is still ours: a later card may have replaced it
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        if controller is not None:
            try:
                controller.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            pid, uid, _gid = _peer(conn)
            refusal = None
            with self._lock:
                if self._closed:
                    refusal = "the card is shutting down"
                elif uid != os.getuid():
                    refusal = f"uid {uid} is not the card's owner"
                elif self._controller is not None:
                    refusal = f"the card already has a controller (pid {self._controller_pid})"
                else:
                    self._controller, self._controller_pid = conn, pid
            if refusal is not None:
                try:
                    _send(conn, {"refused": refusal})
                except OSError:
                    pass  # it left without waiting for the answer
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name=f"controller {pid}", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        card = self.card
        try:
            _send(conn, {
                "hello": "firmware_sim",
                "protocol": PROTOCOL,
                "device": card.device_path,
                "spans": card.spans,
                "line": card.line,
                "role": card.role,
            })
            with conn.makefile("rb") as reader:
                while True:
                    line = reader.readline(MAX_LINE)
                    if not line:
                        return
                    if not line.endswith(b"\n") and len(line) >= MAX_LINE:
                        # The rest of this line is no request: skip it, answering once, so
                        # the next answer goes with the next request.
                        while line and not line.endswith(b"\n"):
                            line = reader.readline(MAX_LINE)
                        _send(conn, _error(ProtocolError(
                            f"a request line is at most {MAX_LINE} bytes")))
                        continue
                    _send(conn, self._answer(line, conn))
        except OSError:
            return  # the controller went away
        finally:
            with self._lock:
                self._controller = self._controller_pid = None
            conn.close()

    def _answer(self, line: bytes, conn: socket.socket | None = None) -> Json:
        self._conn = conn
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise ProtocolError('a request is a JSON object with an "op"')
            op = self._ops.get(request["op"])
            if op is None:
                raise ProtocolError(f"unknown op {request['op']!r}")
            return {"ok": True, "result": op(request)}
        except _ControllerGone:
            raise
        except Exception as exc:  # answered, so one bad request does not end the session
            if isinstance(exc, json.JSONDecodeError):
                exc = ProtocolError(f"not JSON: {exc}")
            return _error(exc)

    def _waiting(self, timeout: float, step: Callable[[float], Any]) -> Any:
        """step(slice) until it returns, in short slices up to `timeout`: between them a
        controller that hung up ends the wait (and its session), so it frees the card."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return step(max(0.0, min(left, _WAIT_SLICE)))
            except TimeoutError:
                if left <= _WAIT_SLICE:
                    raise
            conn = self._conn
            if conn is not None and _hung_up(conn):
                raise _ControllerGone("the controller hung up during a wait")

    # --- call ids ------------------------------------------------------------------------

    def _id(self, handle: CallHandle) -> int:
        with self._lock:
            call_id = self._ids.get(handle)
            if call_id is None:
                call_id = self._next_id
                self._next_id += 1
                self._ids[handle] = call_id
                self._handles[call_id] = handle
                if len(self._handles) > HANDLES_KEPT:
                    _, old = self._handles.popitem(last=False)
                    del self._ids[old]
            return call_id

    def _handle(self, request: Json) -> CallHandle:
        call_id = request["call"]
        with self._lock:
            handle = self._handles.get(call_id)
        if handle is None:
            raise KeyError(f"unknown call {call_id!r}")
        return handle

    def _call(self, handle: CallHandle) -> Json:
        return {"call": self._id(handle), "result": encode_result(handle.result)}

    def _span(self, request: Json) -> int:
        span = request.get("span", 0)
        if not isinstance(span, int) or not 0 <= span < self.card.spans:
            raise ValueError(f"span {span!r} is not 0-{self.card.spans - 1}")
        return span

    def _timeslot(self, request: Json, key: str = "timeslot", optional: bool = False) -> Any:
        timeslot = request.get(key) if optional else request[key]
        if timeslot is None and optional:
            return None
        bearers = rm.bearer_timeslots(LINES[self.card.line])
        check_int(key, timeslot, bearers[-1], bearers[0])
        if timeslot not in bearers:
            raise ValueError(f"{key} {timeslot} is not a B-channel of {self.card.line}")
        return timeslot

    # --- ops: each takes the request and returns the JSON "result" -----------------------

    def _op_route(self, request: Json) -> None:
        self.card.network.route(_text(request, "number"), decode_route(request["outcome"]))

    def _op_unroute(self, request: Json) -> None:
        self.card.network.unroute(_text(request, "number"))

    def _op_lookup(self, request: Json) -> object:
        return encode_route(self.card.network.lookup(_text(request, "number")))

    def _op_attempts(self, request: Json) -> int:
        return self.card.network.attempts(_text(request, "number"))

    def _op_get_default(self, request: Json) -> Json:
        return encode_outcome(self.card.network.default)

    def _op_set_default(self, request: Json) -> None:
        self.card.network.default = decode_outcome(request["outcome"])

    def _op_place_call(self, request: Json) -> Json:
        to = _text(request, "to")
        from_ = request.get("from", "")
        if not isinstance(from_, str):
            raise TypeError(f"from must be a string, not {from_!r}")
        for key, number in (("to", to), ("from", from_)):
            if not number.isascii() or not number.isdigit():
                if number or key == "to":
                    raise ValueError(f"{key} must be digits 0-9, not {number!r}")
        hold = request.get("hold")
        exclusive = request.get("exclusive", True)
        sending_complete = request.get("sending_complete", True)
        for key, flag in (("exclusive", exclusive), ("sending_complete", sending_complete)):
            if not isinstance(flag, bool):
                raise TypeError(f"{key} must be true or false, not {flag!r}")
        handle = self.card.network.place_call(
            to,
            from_,
            self._span(request),
            hold=None if hold is None else check_seconds("hold", hold),
            timeslot=self._timeslot(request, optional=True),
            exclusive=exclusive,
            overlap=request.get("overlap"),
            sending_complete=sending_complete,
        )
        return self._call(handle)

    def _op_result(self, request: Json) -> Json:
        return encode_result(self._handle(request).result)

    def _op_wait(self, request: Json) -> Json:
        until = request.get("until", "cleared")
        if until not in ("alerted", "answered", "cleared"):
            raise ValueError(f"until {until!r} is not alerted, answered or cleared")
        timeout = _timeout(request)
        handle = self._handle(request)
        try:
            result = self._waiting(timeout, lambda t: handle.wait(t, until))
        except TimeoutError:
            raise TimeoutError(
                f"call not {until} within {timeout} s: {handle.result}") from None
        return encode_result(result)

    def _op_clear_call(self, request: Json) -> None:
        self._handle(request).clear(*_cause(request))

    def _op_clear(self, request: Json) -> None:
        self.card.network.clear(self._span(request), self._timeslot(request), *_cause(request))

    def _op_restart(self, request: Json) -> None:
        self.card.network.restart(self._span(request), self._timeslot(request, optional=True))

    def _op_status_enquiry(self, request: Json) -> None:
        self.card.network.status_enquiry(self._span(request), self._timeslot(request))

    def _op_inject(self, request: Json) -> None:
        self.card.network.inject(self._span(request), bytes.fromhex(request["payload"]))

    def _op_received(self, request: Json) -> list[Json]:
        return [self._call(h) for h in self.card.network.received]

    def _op_wait_received(self, request: Json) -> list[Json]:
        count = check_int("count", request["count"], 1 << 62)
        timeout = _timeout(request)
        network = self.card.network
        handles = self._waiting(timeout, lambda t: network.wait_received(count, t))
        return [self._call(h) for h in handles]

    def _op_link_up(self, request: Json) -> bool:
        return self.card.network.link_up(self._span(request))

    def _op_span(self, request: Json) -> Json:
        span = self._span(request)
        firmware = self.card.firmware

        def read() -> tuple[bool, int]:
            return firmware.dchannel_up(span), firmware.regs.u8(
                rm.span_reg(span, rm.SPAN_ALARMS)
            )

        dchannel_up, alarms = call_on_loop(self.card.loop, read)
        return {
            "span": span,
            "dchannel_up": dchannel_up,
            "alarms": alarms,
            "network_link_up": self.card.network.link_up(span),
        }

    def _op_fault(self, request: Json) -> None:
        name = _text(request, "fault")
        args = list(request.get("args", []))
        if name not in _FAULTS:
            raise ValueError(f"unknown fault {name!r}; the faults are {', '.join(_FAULTS)}")
        if name == "garbage":
            args = [bytes.fromhex(_text({"octets": args[0] if args else None}, "octets"))]
        else:  # seconds (slow's and stall's first) bounded like a wait's timeout, then counts
            seconds = 1 if name in ("slow", "stall") else 0
            args = [check_seconds(f"{name} seconds", a, MAX_TIMEOUT) if i < seconds
                    else check_int(f"{name} count", a, 1 << 31) for i, a in enumerate(args)]
        getattr(self.card.faults, name)(*args)


_FAULTS = ("corrupt", "drop", "drop_incoming", "garbage", "slow", "stall", "vanish", "reset")
#: The exceptions a client re-raises as themselves, most specific first.
ERRORS: tuple[type[Exception], ...] = (ProtocolError, TimeoutError, KeyError, ValueError, TypeError)


def _text(request: Json, key: str) -> str:
    value = request[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def _cause(request: Json) -> tuple[int, int]:
    return (
        check_int("cause", request.get("cause", q931.CAUSE_NORMAL_CLEARING), 127),
        check_int("location", request.get("location", q931.LOC_PUBLIC_REMOTE), 15),
    )


def _timeout(request: Json) -> float:
    return check_seconds("timeout", request.get("timeout", 5.0), MAX_TIMEOUT)


def _error(exc: Exception) -> Json:
    kind = next((k.__name__ for k in ERRORS if isinstance(exc, k)), "Error")
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return {"ok": False, "error": kind, "message": str(message)}


def _hung_up(conn: socket.socket) -> bool:
    """The controller closed its end (EOF or error waiting), without consuming anything."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def _send(conn: socket.socket, message: object) -> None:
    conn.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
