"""The seam between the card's register file and the D-channel signalling of each span.

The firmware (firmware.py) owns the registers; one SpanSignalling per span runs the call
control behind them. Both run on the card's asyncio loop thread, so neither takes locks.
"""

from typing import NamedTuple, Protocol

from firmware_sim import regmap as rm


class CallInfo(NamedTuple):
    """What a SETUP says beside the digits, as register values (datasheet 2.4, 2.5)."""

    called_plan: int = 0  # type of number << regmap.TON_SHIFT | numbering plan
    calling_plan: int = 0
    calling_pres: int = 0  # presentation << regmap.PRES_SHIFT | screening
    bearer: int = 0  # regmap.BEARER_*


PLAIN_CALL = CallInfo()
"""Unknown numbers, presentation allowed and not screened, speech: what older hosts sent."""

ALL_BEARERS = (1 << rm.BEARER_DIGITAL + 1) - 1
"""ACCEPT_BEARERS with every bearer code the card implements (datasheet 2.1)."""


class ChannelSink(Protocol):
    """What signalling reports to the firmware, which turns it into registers and events."""

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
        """Change the given channel registers (None: unchanged), bump the channel's
        sequence number, and push one event (default regmap.EV_STATE, arg = new state).

        A new call (state leaving IDLE) clears the cause registers unless `cause` is given,
        and its number and bearer registers unless `info` is.
        """

    def span_update(
        self, span: int, *, dchannel_up: bool | None = None, alarms: int | None = None
    ) -> None:
        """Change the span's D-channel state or layer-1 alarm bits and push EV_SPAN."""


class SpanSignalling(Protocol):
    """Call control of one span, driven by host mailbox commands."""

    #: The span's OVERLAP_DIGITS register (datasheet 2.7): the called number length that
    #: completes an incoming call in overlap receiving; 0 offers every SETUP at once.
    overlap_digits: int

    def start(self) -> None:
        """Bring the D-channel up (Q.921 establishment); called on the loop thread."""

    def stop(self) -> None:
        """Stop timers and release the D-channel transport; no further sink calls."""

    def accept_bearers(self, mask: int) -> None:
        """ACCEPT_BEARERS changed: offer incoming calls whose bearer code has its bit set."""

    def command(self, timeslot: int, cmd: int, called: str, calling: str, cause: bytes,
                info: CallInfo = PLAIN_CALL) -> int:
        """Act on a mailbox command (regmap.CMD_*) and return its status (regmap.MB_*);
        `info` is MAKE_CALL's numbering and bearer.

        Returns at once: MB_DONE means the command was accepted and its signalling sent;
        what follows (answer, clearing) reaches the host as channel_update events.
        RESERVE / UNRESERVE keep incoming calls off the channel or let them on again (the
        firmware keeps the OWNER register); they are valid in every state.
        """
