"""telecard: drive PRI/E1 ISDN telephony cards from Python.

    with telecard.Card.open("/dev/ttyUSB0") as card:
        channel = card.free_channel()
        state = channel.call("3301")
        if state != channel.State.ANSWERED:
            if channel.cause() == channel.Cause.BUSY:
                print("Busy, try again")
"""

from .card import Card, Span
from .cause_ie import CauseIE, decode_cause
from .causes import Cause
from .channel import CallChannel, CallDetails
from .device import CardInfo, CommandResult, Device, Event, list_devices
from .errors import (
    CardResetError,
    CommandError,
    DeviceBusyError,
    DeviceLostError,
    InvalidStateError,
    LinkTimeoutError,
    MalformedCauseError,
    ProtocolError,
    TelecardError,
)
from .pump import PumpStats
from .registers import (
    Alarm,
    CardState,
    CauseSource,
    ChannelBlock,
    Command,
    Direction,
    EventCode,
    Line,
    MailboxStatus,
    Role,
)
from .states import State

__all__ = [
    "Alarm",
    "CallChannel",
    "CallDetails",
    "Card",
    "CardInfo",
    "CardResetError",
    "CardState",
    "Cause",
    "CauseIE",
    "CauseSource",
    "ChannelBlock",
    "Command",
    "CommandResult",
    "CommandError",
    "Device",
    "DeviceBusyError",
    "DeviceLostError",
    "Direction",
    "Event",
    "EventCode",
    "InvalidStateError",
    "Line",
    "LinkTimeoutError",
    "MailboxStatus",
    "MalformedCauseError",
    "ProtocolError",
    "PumpStats",
    "Role",
    "Span",
    "State",
    "TelecardError",
    "decode_cause",
    "list_devices",
]
