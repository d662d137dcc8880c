"""telecard: drive PRI/E1 ISDN telephony cards from Python.

    with telecard.Card.open("/dev/ttyUSB0") as card:
        channel = card.free_channel()
        state = channel.call("3301")
        if state != channel.State.ANSWERED:
            if channel.cause() == channel.Cause.BUSY:
                print("Busy, try again")
"""

from .card import Alarm, Card, Span
from .cause_ie import CauseIE, decode_cause
from .causes import Cause
from .channel import CallChannel, CallDetails
from .device import CardInfo, Device, Event, list_devices
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
from .states import State

__all__ = [
    "Alarm",
    "CallChannel",
    "CallDetails",
    "Card",
    "CardInfo",
    "CardResetError",
    "Cause",
    "CauseIE",
    "CommandError",
    "Device",
    "DeviceBusyError",
    "DeviceLostError",
    "Event",
    "InvalidStateError",
    "LinkTimeoutError",
    "MalformedCauseError",
    "ProtocolError",
    "Span",
    "State",
    "TelecardError",
    "decode_cause",
    "list_devices",
]
