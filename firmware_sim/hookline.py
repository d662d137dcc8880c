"""Stand-in call control used until the ISDN stack is plugged in.

It checks each mailbox command against the datasheet's "valid in" column, records it and
applies the obvious state change at once, with no Q.931 behind it.
"""

import asyncio
from typing import NamedTuple, Protocol

from firmware_sim import regmap as rm
from firmware_sim.signalling import PLAIN_CALL, CallInfo, ChannelSink

# The datasheet's mailbox table: the channel states each command is valid in.
_VALID_IN: dict[int, frozenset[int]] = {
    rm.CMD_MAKE_CALL: frozenset({rm.ST_IDLE}),
    rm.CMD_MAKE_CALL_OVERLAP: frozenset({rm.ST_IDLE}),
    rm.CMD_SEND_DIGITS: frozenset({rm.ST_OUT_SETUP, rm.ST_OUT_OVERLAP}),
    rm.CMD_SEND_DIGITS_COMPLETE: frozenset({rm.ST_OUT_SETUP, rm.ST_OUT_OVERLAP}),
    rm.CMD_ALERT: frozenset({rm.ST_IN_PRESENT}),
    rm.CMD_ANSWER: frozenset({rm.ST_IN_PRESENT, rm.ST_IN_ALERTING}),
    rm.CMD_RELEASE: frozenset(range(rm.ST_OUT_SETUP, rm.ST_CLEARING + 1)),
    rm.CMD_RESERVE: frozenset(range(rm.ST_IDLE, rm.ST_MAINTENANCE + 1)),
    rm.CMD_UNRESERVE: frozenset(range(rm.ST_IDLE, rm.ST_MAINTENANCE + 1)),
}
# Commands that need no D-channel: RELEASE clears locally, the others signal nothing.
_NO_LINK_NEEDED = frozenset((rm.CMD_RELEASE, rm.CMD_RESERVE, rm.CMD_UNRESERVE))
_CREF_MASK = 0x7FFF


class Command(NamedTuple):
    timeslot: int
    cmd: int
    called: str
    calling: str
    cause: bytes
    info: CallInfo = PLAIN_CALL


class StateSink(ChannelSink, Protocol):
    """A ChannelSink that can also be asked about the current state (the Firmware)."""

    def channel_state(self, span: int, timeslot: int) -> int: ...

    def dchannel_up(self, span: int) -> bool: ...


class HookSignalling:
    """A SpanSignalling whose D-channel is always up and whose far end never speaks."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sink: StateSink, span: int, line: int, role: int
    ) -> None:
        self.sink = sink
        self.span = span
        self.commands: list[Command] = []
        self._cref = 0
        self.overlap_digits = 0  # no SETUP ever arrives here

    def start(self) -> None:
        self.sink.span_update(self.span, dchannel_up=True)

    def stop(self) -> None:
        """Nothing runs in the background."""

    def accept_bearers(self, mask: int) -> None:
        """No calls come in."""

    def command(self, timeslot: int, cmd: int, called: str, calling: str, cause: bytes,
                info: CallInfo = PLAIN_CALL) -> int:
        self.commands.append(Command(timeslot, cmd, called, calling, cause, info))
        if self.sink.channel_state(self.span, timeslot) not in _VALID_IN[cmd]:
            return rm.MB_ERR_STATE
        if cmd not in _NO_LINK_NEEDED and not self.sink.dchannel_up(self.span):
            return rm.MB_ERR_NO_LINK
        sink, span = self.sink, self.span
        if cmd == rm.CMD_MAKE_CALL or cmd == rm.CMD_MAKE_CALL_OVERLAP:
            self._cref = self._cref % _CREF_MASK + 1
            sink.channel_update(
                span,
                timeslot,
                state=rm.ST_OUT_SETUP,
                direction=rm.DIR_OUTGOING,
                call_ref=self._cref,
                called=called,
                calling=calling,
                info=info,
            )
        elif cmd == rm.CMD_ALERT:
            sink.channel_update(span, timeslot, state=rm.ST_IN_ALERTING)
        elif cmd == rm.CMD_ANSWER:
            sink.channel_update(span, timeslot, state=rm.ST_CONNECTING)
        elif cmd == rm.CMD_RELEASE:
            sink.channel_update(
                span,
                timeslot,
                state=rm.ST_IDLE,
                cause=cause,
                cause_source=rm.CAUSE_SRC_LOCAL,
                event=rm.EV_CLEARED,
            )
        return rm.MB_DONE
