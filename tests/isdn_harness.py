"""Shared test harness for the ISDN signalling: a recording firmware sink on a real loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_sim import q931
from firmware_sim.callcontrol import CardSignalling
from firmware_sim.isdn import build_span_signalling
from firmware_sim.network import NetworkEmulator
from firmware_sim.pcap import PcapWriter
from firmware_sim.regmap import (
    CAUSE_SRC_NONE,
    DIR_NONE,
    EV_CLEARED,
    EV_STATE,
    LINE_E1,
    ROLE_TE,
    ST_IDLE,
    ST_MAINTENANCE,
)
from firmware_sim.signalling import PLAIN_CALL, CallInfo

FAST_TIMERS = {"T200": 0.2, "T203": 2.0}


@dataclass
class Channel:
    """The registers of one channel, as the firmware would hold them."""

    state: int = ST_IDLE
    direction: int = DIR_NONE
    call_ref: int = 0
    called: str = ""
    calling: str = ""
    cause: bytes = b""
    cause_source: int = CAUSE_SRC_NONE
    info: CallInfo = PLAIN_CALL
    events: list[tuple[int, int]] = field(default_factory=list)  # (event, state)


class RecordingSink:
    """A ChannelSink that keeps registers and the event stream, like the firmware does."""

    def __init__(self) -> None:
        self.channels: dict[tuple[int, int], Channel] = {}
        self.events: list[tuple[int, int, int, int]] = []  # span, timeslot, event, state
        self.dchannel: dict[int, bool] = {}
        self.span_events: list[tuple[int, bool | None]] = []
        self.clearings: list[tuple[int, int, bytes, int]] = []  # span, slot, cause, source
        self.on_update: Callable[[int, int, Channel, int], None] | None = None

    def chan(self, span: int, timeslot: int) -> Channel:
        return self.channels.setdefault((span, timeslot), Channel())

    def channel_update(self, span: int, timeslot: int, *, state: int | None = None,
                       direction: int | None = None, call_ref: int | None = None,
                       called: str | None = None, calling: str | None = None,
                       cause: bytes | None = None, cause_source: int | None = None,
                       event: int | None = None, info: CallInfo | None = None) -> None:
        ch = self.chan(span, timeslot)
        if state is not None:
            if ch.state == ST_IDLE and state not in (ST_IDLE, ST_MAINTENANCE) and cause is None:
                ch.cause, ch.cause_source = b"", CAUSE_SRC_NONE
            ch.state = state
        for name, value in (("direction", direction), ("call_ref", call_ref),
                            ("called", called), ("calling", calling), ("cause", cause),
                            ("cause_source", cause_source), ("info", info)):
            if value is not None:
                setattr(ch, name, value)
        ev = EV_STATE if event is None else event
        if ev == EV_CLEARED:
            self.clearings.append((span, timeslot, ch.cause, ch.cause_source))
        ch.events.append((ev, ch.state))
        self.events.append((span, timeslot, ev, ch.state))
        if self.on_update is not None:
            self.on_update(span, timeslot, ch, ev)

    def span_update(self, span: int, *, dchannel_up: bool | None = None,
                    alarms: int | None = None) -> None:
        if dchannel_up is not None:
            self.dchannel[span] = dchannel_up
        self.span_events.append((span, dchannel_up))

    def cleared(self, span: int, timeslot: int) -> int:
        return sum(1 for e in self.chan(span, timeslot).events if e[0] == EV_CLEARED)


class Harness:
    """Card spans cabled to the network emulator (or to sockets), on one loop in this thread."""

    def __init__(self, *, role: int = ROLE_TE, line: int = LINE_E1, spans: int = 1,
                 timers: dict[str, float] | None = None,
                 net_timers: dict[str, float] | None = None, pcap: PcapWriter | None = None,
                 sockets: dict[int, Any] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self.sink = RecordingSink()
        self.network = NetworkEmulator(timers={**FAST_TIMERS, **(net_timers or {})})
        self.spans: list[CardSignalling] = []
        for s in range(spans):
            sock = (sockets or {}).get(s)
            self.spans.append(build_span_signalling(
                self.loop, self.sink, s, line, role,
                network=None if sock is not None else self.network, dchannel_socket=sock,
                pcap=pcap, timers={**FAST_TIMERS, **(timers or {})}))
        for sig in self.spans:
            sig.start()

    def run_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run the loop until predicate() holds; AssertionError on timeout."""
        async def poll() -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if predicate():
                    return True
                await asyncio.sleep(0.001)
            return predicate()

        assert self.loop.run_until_complete(poll()), f"condition not met within {timeout} s"

    def run(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def wait_link(self, span: int = 0) -> None:
        self.run_until(lambda: self.sink.dchannel.get(span, False))

    def close(self) -> None:
        for sig in self.spans:
            sig.stop()
        self.network.stop()
        self.run(0.01)
        self.loop.close()


def cause_value(body: bytes) -> int | None:
    fields = q931.parse_cause(body)
    return fields.value if fields else None
