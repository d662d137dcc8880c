"""telecard: drive PRI/E1 ISDN telephony cards from Python.

    with telecard.Card.open("/dev/ttyUSB0") as card:
        channel = card.free_channel()
        state = channel.call("3301")
        if state != channel.State.ANSWERED:
            if channel.cause() == channel.Cause.BUSY:
                print("Busy, try again")

`__version__` is the version of the installed distribution this package was imported from, or
"0+unknown" from a source tree (a checkout on sys.path, even with another copy installed, or an
editable install, whose code may have moved on from its metadata).

Logging goes to the `telecard` logger and those under it (`telecard.card`, `telecard.channel`,
`telecard.device`, `telecard.events`, `telecard.pump`), which have only a NullHandler: the
application configures logging.

`telecard.metrics` (not imported here; it needs the extra ``telecard[metrics]``) exposes a card's
statistics to Prometheus.
"""

import logging

from .address import Number
from .card import Card, Span
from .cause_ie import CauseIE, decode_cause
from .causes import Cause
from .channel import CallChannel, CallDetails
from .device import CallSetup, CardInfo, CommandResult, Device, LinkStats, list_devices
from .errors import (
    CardResetError,
    CommandError,
    CommandPendingError,
    DeviceBusyError,
    DeviceLostError,
    DeviceNotFoundError,
    DeviceOpenError,
    DevicePermissionError,
    InvalidStateError,
    LinkTimeoutError,
    MalformedCauseError,
    ObserverError,
    ProtocolError,
    TelecardError,
    WrongPortError,
)
from .events import Event, EventReader, HostEventCode
from .pump import PumpStats
from .registers import (
    Alarm,
    Bearer,
    CardState,
    CauseSource,
    ChannelBlock,
    Command,
    Direction,
    EventCode,
    Line,
    MailboxStatus,
    NumberingPlan,
    Presentation,
    Role,
    Screening,
    TypeOfNumber,
)
from .states import State
from .statistics import CallStatistics, CardStatistics, Outcomes, SpanStatistics

logging.getLogger(__name__).addHandler(logging.NullHandler())


def _version() -> str:
    """The version of the installed distribution whose RECORD lists this very file. The first
    telecard metadata on sys.path may be another copy's, or a source tree's egg-info."""
    from importlib import metadata
    from pathlib import Path

    here = Path(__file__).resolve()
    for dist in metadata.distributions(name="telecard"):
        if dist.read_text("RECORD") is None:
            continue
        for file in dist.files or ():
            if file.name == here.name and Path(str(dist.locate_file(file))).resolve() == here:
                return dist.version
    return "0+unknown"


__version__ = _version()

__all__ = [
    "Alarm",
    "Bearer",
    "CallChannel",
    "CallDetails",
    "CallSetup",
    "CallStatistics",
    "Card",
    "CardInfo",
    "CardResetError",
    "CardStatistics",
    "CardState",
    "Cause",
    "CauseIE",
    "CauseSource",
    "ChannelBlock",
    "Command",
    "CommandResult",
    "CommandError",
    "CommandPendingError",
    "Device",
    "DeviceBusyError",
    "DeviceLostError",
    "DeviceNotFoundError",
    "DeviceOpenError",
    "DevicePermissionError",
    "Direction",
    "Event",
    "EventCode",
    "EventReader",
    "HostEventCode",
    "InvalidStateError",
    "Line",
    "LinkStats",
    "LinkTimeoutError",
    "MailboxStatus",
    "MalformedCauseError",
    "Number",
    "NumberingPlan",
    "ObserverError",
    "Outcomes",
    "ProtocolError",
    "Presentation",
    "PumpStats",
    "Role",
    "Screening",
    "Span",
    "SpanStatistics",
    "State",
    "TelecardError",
    "TypeOfNumber",
    "WrongPortError",
    "decode_cause",
    "list_devices",
]
