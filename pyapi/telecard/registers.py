"""The card's register values as enums, and the decoding of a channel's register block.

The values come from the C driver's header (`telecard._cdriver.lib`), so the datasheet's tables
live in one place; these enums are where the integers become names (datasheet sections 2.1-2.5).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from . import q850
from ._cdriver import lib
from .cause_ie import CauseIE, decode_cause
from .causes import Cause, normalise, normalise_value
from .errors import MalformedCauseError


class _Named(enum.IntEnum):
    def __str__(self) -> str:
        return self.name


class CardState(_Named):
    """A channel's STATE register."""

    IDLE = lib.TC_ST_IDLE
    OUT_SETUP = lib.TC_ST_OUT_SETUP
    OUT_PROCEEDING = lib.TC_ST_OUT_PROCEEDING
    OUT_ALERTING = lib.TC_ST_OUT_ALERTING
    IN_PRESENT = lib.TC_ST_IN_PRESENT
    IN_ALERTING = lib.TC_ST_IN_ALERTING
    CONNECTING = lib.TC_ST_CONNECTING
    ACTIVE = lib.TC_ST_ACTIVE
    CLEARING = lib.TC_ST_CLEARING
    MAINTENANCE = lib.TC_ST_MAINTENANCE
    OUT_OVERLAP = lib.TC_ST_OUT_OVERLAP
    IN_OVERLAP = lib.TC_ST_IN_OVERLAP


class EventCode(_Named):
    """The code of an event-ring entry."""

    STATE = lib.TC_EV_STATE
    INCOMING = lib.TC_EV_INCOMING
    CLEARED = lib.TC_EV_CLEARED
    COMMAND_DONE = lib.TC_EV_COMMAND_DONE
    SPAN = lib.TC_EV_SPAN
    RESET = lib.TC_EV_RESET
    WATCHDOG = lib.TC_EV_WATCHDOG


class Line(_Named):
    """A span's LINE_TYPE."""

    E1 = lib.TC_LINE_E1
    T1 = lib.TC_LINE_T1


class Role(_Named):
    """A span's ROLE: the user side (TE) or the network side (NT) of Q.931."""

    TE = lib.TC_ROLE_TE
    NT = lib.TC_ROLE_NT


class Direction(_Named):
    """A channel's DIRECTION register."""

    NONE = lib.TC_DIR_NONE
    OUTGOING = lib.TC_DIR_OUTGOING
    INCOMING = lib.TC_DIR_INCOMING


class CauseSource(_Named):
    """Who sent the recorded cause IE: the far end (REMOTE) or the card (LOCAL)."""

    NONE = lib.TC_CAUSE_SRC_NONE
    REMOTE = lib.TC_CAUSE_SRC_REMOTE
    LOCAL = lib.TC_CAUSE_SRC_LOCAL


class Command(_Named):
    """Mailbox command codes."""

    MAKE_CALL = lib.TC_CMD_MAKE_CALL
    ALERT = lib.TC_CMD_ALERT
    ANSWER = lib.TC_CMD_ANSWER
    RELEASE = lib.TC_CMD_RELEASE
    RESERVE = lib.TC_CMD_RESERVE
    UNRESERVE = lib.TC_CMD_UNRESERVE
    MAKE_CALL_OVERLAP = lib.TC_CMD_MAKE_CALL_OVERLAP
    SEND_DIGITS = lib.TC_CMD_SEND_DIGITS
    SEND_DIGITS_COMPLETE = lib.TC_CMD_SEND_DIGITS_COMPLETE


class MailboxStatus(_Named):
    """A mailbox STATUS: a command's result."""

    IDLE = lib.TC_MB_IDLE
    PENDING = lib.TC_MB_PENDING
    DONE = lib.TC_MB_DONE
    WRONG_STATE = lib.TC_MB_ERR_STATE
    BAD_ARGUMENT = lib.TC_MB_ERR_ARGUMENT
    NO_LINK = lib.TC_MB_ERR_NO_LINK
    UNKNOWN_COMMAND = lib.TC_MB_ERR_UNKNOWN
    BUSY = lib.TC_MB_ERR_BUSY


class TypeOfNumber(_Named):
    """A party number's type of number (Q.931 4.5.8)."""

    UNKNOWN = lib.TC_TON_UNKNOWN
    INTERNATIONAL = lib.TC_TON_INTERNATIONAL
    NATIONAL = lib.TC_TON_NATIONAL
    NETWORK_SPECIFIC = lib.TC_TON_NETWORK_SPECIFIC
    SUBSCRIBER = lib.TC_TON_SUBSCRIBER
    ABBREVIATED = lib.TC_TON_ABBREVIATED


class NumberingPlan(_Named):
    """A party number's numbering plan (Q.931 4.5.8); E164 is the ISDN/telephony plan."""

    UNKNOWN = lib.TC_NPI_UNKNOWN
    E164 = lib.TC_NPI_E164
    X121 = lib.TC_NPI_X121
    F69 = lib.TC_NPI_F69
    NATIONAL = lib.TC_NPI_NATIONAL
    PRIVATE = lib.TC_NPI_PRIVATE


class Presentation(_Named):
    """Whether the calling number may be shown to the called user (Q.931 4.5.10)."""

    ALLOWED = lib.TC_PRES_ALLOWED
    RESTRICTED = lib.TC_PRES_RESTRICTED
    NOT_AVAILABLE = lib.TC_PRES_NOT_AVAILABLE


class Screening(_Named):
    """Who vouches for the calling number (Q.931 4.5.10)."""

    USER_NOT_SCREENED = lib.TC_SCREEN_USER_NOT_SCREENED
    USER_PASSED = lib.TC_SCREEN_USER_PASSED
    USER_FAILED = lib.TC_SCREEN_USER_FAILED
    NETWORK = lib.TC_SCREEN_NETWORK


class Bearer(_Named):
    """A call's bearer capability (Q.931 4.5.5): SPEECH, 3.1 kHz AUDIO_3K1 (fax, modems) or
    64 kbit/s unrestricted DIGITAL information."""

    SPEECH = lib.TC_BEARER_SPEECH
    AUDIO_3K1 = lib.TC_BEARER_AUDIO_3K1
    DIGITAL = lib.TC_BEARER_DIGITAL


class Alarm(enum.IntFlag):
    """Layer-1 alarms of a span."""

    NONE = 0
    LOS = lib.TC_ALARM_LOS
    AIS = lib.TC_ALARM_AIS
    RAI = lib.TC_ALARM_RAI
    LOF = lib.TC_ALARM_LOF


BLOCK_LEN: Final[int] = lib.TC_CHAN_CALLING + lib.TC_NUMBER_MAX
"""Bytes of a channel block that ChannelBlock decodes (0x00-0x6F, as posted snapshots carry)."""
_HEAD: Final = struct.Struct("<BBHIBBB")



_CARD_STATES: Final[dict[int, CardState]] = {s.value: s for s in CardState}
_DIRECTIONS: Final[dict[int, Direction]] = {d.value: d for d in Direction}
_SOURCES: Final[dict[int, CauseSource]] = {s.value: s for s in CauseSource}


def card_state(value: int) -> CardState | None:
    """The CardState of a STATE register value; None for one the datasheet does not define."""
    return _CARD_STATES.get(value)


@dataclass(frozen=True)
class ChannelBlock:
    """One channel's registers (datasheet 2.4), decoded.

    `state` is None for a value the datasheet does not define (a newer card): the host then
    leaves the channel as it was. A cause IE that does not follow Q.931 keeps its octets with
    `cause` None and `malformed_cause` set.
    """

    state: CardState | None
    direction: Direction
    call_ref: int
    seq: int
    owned: bool
    cause_octets: bytes
    cause_source: CauseSource
    cause: CauseIE | None
    malformed_cause: bool
    called: str
    calling: str
    called_plan: int  # CALLED_PLAN: type of number << 4 | numbering plan
    calling_plan: int
    pres_bearer: int  # PRES_BEARER: calling presentation and screening, bearer code

    @classmethod
    def parse(cls, raw: bytes) -> ChannelBlock:
        """Decode a channel block: at least `BLOCK_LEN` bytes from the channel's base."""
        state, direction, call_ref, seq, cause_len, source, owner = _HEAD.unpack_from(raw)
        octets = bytes(raw[lib.TC_CHAN_CAUSE : lib.TC_CHAN_CAUSE + min(cause_len, 32)])
        cause: CauseIE | None = None
        malformed = False
        if octets:
            try:
                cause = decode_cause(octets)
            except MalformedCauseError:
                malformed = True
        called_len = min(raw[lib.TC_CHAN_CALLED_LEN], lib.TC_NUMBER_MAX)
        calling_len = min(raw[lib.TC_CHAN_CALLING_LEN], lib.TC_NUMBER_MAX)
        # Filled in without the generated __init__, which sets each field of a frozen
        # dataclass through object.__setattr__: every call's clearing builds a block.
        block = object.__new__(cls)
        block.__dict__.update(
            state=_CARD_STATES.get(state),
            direction=_DIRECTIONS.get(direction, Direction.NONE),
            call_ref=call_ref,
            seq=seq,
            owned=owner == lib.TC_OWNER_HOST,
            cause_octets=octets,
            cause_source=_SOURCES.get(source, CauseSource.NONE),
            cause=cause,
            malformed_cause=malformed,
            called=raw[lib.TC_CHAN_CALLED : lib.TC_CHAN_CALLED + called_len].decode(
                "ascii", "replace"
            ),
            calling=raw[lib.TC_CHAN_CALLING : lib.TC_CHAN_CALLING + calling_len].decode(
                "ascii", "replace"
            ),
            called_plan=raw[lib.TC_CHAN_CALLED_PLAN],
            calling_plan=raw[lib.TC_CHAN_CALLING_PLAN],
            pres_bearer=raw[lib.TC_CHAN_PRES_BEARER],
        )
        return block

    def clearing_outcome(self) -> tuple[Cause, int | None]:
        """The Cause and raw Q.850 value of the clearing these registers record: the cause
        IE's; cause 31 when the far end cleared without one (Q.931 5.8.6.1); OTHER with no
        value for a malformed IE or none from the card itself."""
        ie = self.cause
        if ie is not None:
            return normalise(ie), ie.value
        if not self.cause_octets and self.cause_source is CauseSource.REMOTE:
            return normalise_value(q850.NORMAL_UNSPECIFIED), q850.NORMAL_UNSPECIFIED
        return Cause.OTHER, None

