"""Drive a standalone card (``python -m firmware_sim --control PATH``) from another process.

``RemoteCard.connect(PATH)`` gives ``.network``, ``.faults`` and ``.device_path`` with the
vocabulary of an embedded `firmware_sim.SimulatedCard`, so a test drives either the same way::

    with RemoteCard.connect("/tmp/card.ctl") as sim:
        sim.network.route("3301", [Busy(), Answer()])
        handle = sim.network.place_call("2000", from_="0123")
        handle.wait(until="answered")

Routes cross the socket as outcomes or sequences of outcomes; a route function cannot (it
would have to run in the card's process), so route() refuses one with TypeError.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from firmware_sim import q931
from firmware_sim.control import (
    ERRORS,
    decode_outcome,
    decode_result,
    decode_route,
    encode_outcome,
    encode_route,
)
from firmware_sim.network import CallResult, Outcome

__all__ = [
    "ControlRefused",
    "RemoteCallHandle",
    "RemoteCard",
    "RemoteError",
    "RemoteFaults",
    "RemoteNetwork",
    "SpanState",
]


class RemoteError(RuntimeError):
    """The card failed a request in a way that has no exception of its own here."""


class ControlRefused(ConnectionError):
    """The card refused this controller (it has one already, or the peer is another user)."""


_RAISED: dict[str, type[Exception]] = {e.__name__: e for e in ERRORS}


class _Connection:
    """One request at a time on the socket; threads of the controller take turns."""

    def __init__(self, path: str, timeout: float) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._reader = self._sock.makefile("rb")
        self._lock = threading.Lock()
        self._broken = False
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            # Whoever else could bind `path` (a shared directory) would see our requests.
            creds = self._sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                raise ControlRefused(f"{path}: served by uid {uid}, not this user's")
            self.hello = self._receive()
            if "refused" in self.hello:
                raise ControlRefused(f"{path}: {self.hello['refused']}")
        except BaseException:
            self.close()
            raise
        self._sock.settimeout(None)  # a wait takes as long as its own timeout says

    def _receive(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise ConnectionError("the card closed its control socket")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, op: str, **args: Any) -> Any:
        data = json.dumps({"op": op, **args}, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._broken:
                raise ConnectionError("the control session is closed")
            try:
                self._sock.sendall(data)
                answer = self._receive()
            except BaseException:
                # Interrupted between request and answer (Ctrl-C in a long wait, a lost
                # card): the answer may still come and would be read as the next one's.
                self.close()
                raise
        if answer.get("ok"):
            return answer.get("result")
        raise _RAISED.get(answer.get("error", ""), RemoteError)(answer.get("message", answer))

    def close(self) -> None:
        self._broken = True
        self._reader.close()
        self._sock.close()


class RemoteCallHandle:
    """A call seen from the network of a remote card (see `firmware_sim.network.CallHandle`)."""

    def __init__(self, connection: _Connection, call_id: int, result: CallResult) -> None:
        self._conn = connection
        #: The card's id for this call (stable for the session).
        self.id = call_id
        self._last = result

    @property
    def result(self) -> CallResult:
        """The call as it stands now."""
        self._last = decode_result(self._conn.request("result", call=self.id))
        return self._last

    def wait(
        self, timeout: float = 5.0, until: Literal["alerted", "answered", "cleared"] = "cleared"
    ) -> CallResult:
        """Block until the call reached `until` (or ended); TimeoutError otherwise."""
        self._last = decode_result(
            self._conn.request("wait", call=self.id, timeout=timeout, until=until)
        )
        return self._last

    def clear(
        self, cause: int = q931.CAUSE_NORMAL_CLEARING, location: int = q931.LOC_PUBLIC_REMOTE
    ) -> None:
        """Clear the call from the network side."""
        self._conn.request("clear_call", call=self.id, cause=cause, location=location)

    def __repr__(self) -> str:
        return f"<RemoteCallHandle {self.id} {self._last}>"


class RemoteNetwork:
    """The network emulator of a remote card (see `firmware_sim.network.NetworkEmulator`)."""

    def __init__(self, connection: _Connection) -> None:
        self._conn = connection

    def _handle(self, call: dict[str, Any]) -> RemoteCallHandle:
        return RemoteCallHandle(self._conn, call["call"], decode_result(call["result"]))

    def route(self, number: str, outcome: Outcome | Sequence[Outcome]) -> None:
        """Decide what happens to calls to `number`: one outcome, or a sequence of them (one
        per attempt, the last repeating). TypeError for a function: it cannot cross."""
        self._conn.request("route", number=number, outcome=encode_route(outcome))

    def unroute(self, number: str) -> None:
        """Forget the route of `number`: its calls get `default` again."""
        self._conn.request("unroute", number=number)

    def lookup(self, number: str) -> Outcome | tuple[Outcome, ...]:
        """The route of `number` (a sequence as a tuple), or `default`."""
        route = decode_route(self._conn.request("lookup", number=number))
        return tuple(route) if isinstance(route, list) else route

    def attempts(self, number: str) -> int:
        """How many calls to `number` its route has had."""
        count: int = self._conn.request("attempts", number=number)
        return count

    @property
    def default(self) -> Outcome:
        """The outcome of numbers without a route."""
        return decode_outcome(self._conn.request("get_default"))

    @default.setter
    def default(self, outcome: Outcome) -> None:
        self._conn.request("set_default", outcome=encode_outcome(outcome))

    def place_call(
        self,
        to: str,
        from_: str = "",
        span: int = 0,
        hold: float | None = None,
        timeslot: int | None = None,
        exclusive: bool = True,
        overlap: int | None = None,
        sending_complete: bool = True,
    ) -> RemoteCallHandle:
        """Offer a call to the card (see `NetworkEmulator.place_call`)."""
        return self._handle(
            self._conn.request(
                "place_call", to=to, span=span, hold=hold, timeslot=timeslot,
                exclusive=exclusive, overlap=overlap, sending_complete=sending_complete,
                **{"from": from_},
            )
        )

    def clear(
        self,
        span: int,
        timeslot: int,
        cause: int = q931.CAUSE_NORMAL_CLEARING,
        location: int = q931.LOC_PUBLIC_REMOTE,
    ) -> None:
        """Clear whatever call the network has on that channel."""
        self._conn.request("clear", span=span, timeslot=timeslot, cause=cause, location=location)

    def restart(self, span: int, timeslot: int | None = None) -> None:
        """Send RESTART for one channel or the whole interface."""
        self._conn.request("restart", span=span, timeslot=timeslot)

    def status_enquiry(self, span: int, timeslot: int) -> None:
        """Send STATUS ENQUIRY for the network's call on that channel, if it has one."""
        self._conn.request("status_enquiry", span=span, timeslot=timeslot)

    def inject(self, span: int, payload: bytes) -> None:
        """Send raw Q.931 octets to the card."""
        self._conn.request("inject", span=span, payload=payload.hex())

    def link_up(self, span: int) -> bool:
        """Whether the D-channel of `span` is established, as the network sees it."""
        up: bool = self._conn.request("link_up", span=span)
        return up

    @property
    def received(self) -> list[RemoteCallHandle]:
        """Calls the card placed, oldest first (the newest the card keeps)."""
        return [self._handle(c) for c in self._conn.request("received")]

    def wait_received(self, count: int, timeout: float = 5.0) -> list[RemoteCallHandle]:
        """Block until the card has placed `count` calls in all; TimeoutError otherwise.
        Returns `received`."""
        calls = self._conn.request("wait_received", count=count, timeout=timeout)
        return [self._handle(c) for c in calls]


class RemoteFaults:
    """Fault injection on a remote card (see `firmware_sim.faults.Faults`)."""

    def __init__(self, connection: _Connection) -> None:
        self._conn = connection

    def _fault(self, name: str, *args: object) -> None:
        self._conn.request("fault", fault=name, args=list(args))

    def corrupt(self, n: int = 1) -> None:
        """Flip a byte in each of the next n frames the card sends."""
        self._fault("corrupt", n)

    def drop(self, n: int = 1) -> None:
        """Lose the next n frames the card sends."""
        self._fault("drop", n)

    def drop_incoming(self, n: int = 1) -> None:
        """Lose the next n good frames the host sends."""
        self._fault("drop_incoming", n)

    def garbage(self, data: bytes) -> None:
        """Send raw bytes to the host, unframed."""
        self._fault("garbage", bytes(data).hex())

    def slow(self, seconds: float, n: int = 1) -> None:
        """Take the next n frames from the host one every `seconds`."""
        self._fault("slow", seconds, n)

    def stall(self, seconds: float) -> None:
        """Neither read requests nor send anything for `seconds`."""
        self._fault("stall", seconds)

    def vanish(self) -> None:
        """Close the pty master, as when a USB card is pulled."""
        self._fault("vanish")

    def reset(self) -> None:
        """Reboot the firmware."""
        self._fault("reset")


@dataclass(frozen=True, slots=True)
class SpanState:
    """A span as the card's registers and the network show it."""

    span: int
    dchannel_up: bool  # the card's SPAN_DCHANNEL register
    alarms: int  # the card's SPAN_ALARMS register (regmap.ALARM_* bits)
    network_link_up: bool  # the network's LAPD is in multiple-frame operation


class RemoteCard:
    """A standalone card's control session: the only controller until close()."""

    def __init__(self, connection: _Connection) -> None:
        self._conn = connection
        hello = connection.hello
        #: The pty the host opens.
        self.device_path: str = hello["device"]
        #: Spans, line ("E1"/"T1") and role ("TE"/"NT") of the card.
        self.spans: int = hello["spans"]
        self.line: str = hello["line"]
        self.role: str = hello["role"]
        #: The card's network emulator.
        self.network = RemoteNetwork(connection)
        #: Misbehaviour of the card's host link and firmware, on demand.
        self.faults = RemoteFaults(connection)

    @classmethod
    def connect(cls, path: str, timeout: float = 5.0) -> RemoteCard:
        """Open a control session on the socket `path`; ControlRefused if the card has a
        controller already (`timeout` bounds the connect and the greeting)."""
        return cls(_Connection(path, timeout))

    def span(self, span: int = 0) -> SpanState:
        """The state of `span`: D-channel register, alarms, and the network's link."""
        return SpanState(**self._conn.request("span", span=span))

    def close(self) -> None:
        """End the session (the card keeps running, and takes the next controller)."""
        self._conn.close()

    def __enter__(self) -> RemoteCard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
