"""Names of Q.850 cause values, locations and coding standards (the one table of them).

`CAUSE_NAMES` holds every cause value a Q.931 peer can assign: the ITU-T Q.850 values with their
Q.850 names, plus the values Q.850 leaves to older or national use that are still met on PRI
lines (Q.931 (1988) and ANSI T1.607), marked `# national` below with the name Wireshark uses.
A value missing from the table (0 and the gaps) is unassigned.
"""

from typing import Final

CAUSE_NAMES: Final[dict[int, str]] = {
    1: "Unallocated (unassigned) number",
    2: "No route to specified transit network",
    3: "No route to destination",
    4: "Send special information tone",
    5: "Misdialled trunk prefix",
    6: "Channel unacceptable",
    7: "Call awarded and being delivered in an established channel",
    8: "Preemption",
    9: "Preemption - circuit reserved for reuse",
    10: "Prefix 1 dialed but not required",  # national
    11: "More digits received than allowed, call is proceeding",  # national
    14: "QoR: ported number",
    16: "Normal call clearing",
    17: "User busy",
    18: "No user responding",
    19: "No answer from user (user alerted)",
    20: "Subscriber absent",
    21: "Call rejected",
    22: "Number changed",
    23: "Redirection to new destination",
    24: "Call rejected due to feature at the destination",
    25: "Exchange routing error",
    26: "Non-selected user clearing",
    27: "Destination out of order",
    28: "Invalid number format (address incomplete)",
    29: "Facility rejected",
    30: "Response to STATUS ENQUIRY",
    31: "Normal, unspecified",
    33: "Circuit out of order",  # national
    34: "No circuit/channel available",
    35: "Destination unattainable",  # national
    37: "Degraded service",  # national
    38: "Network out of order",
    39: "Permanent frame mode connection out of service",
    40: "Permanent frame mode connection operational",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    43: "Access information discarded",
    44: "Requested circuit/channel not available",
    45: "Pre-empted",  # national
    46: "Precedence call blocked",
    47: "Resource unavailable, unspecified",
    49: "Quality of service not available",
    50: "Requested facility not subscribed",
    51: "Reverse charging not allowed",  # national
    52: "Outgoing calls barred",  # national
    53: "Outgoing calls barred within CUG",
    54: "Incoming calls barred",  # national
    55: "Incoming calls barred within CUG",
    56: "Call waiting not subscribed",  # national
    57: "Bearer capability not authorized",
    58: "Bearer capability not presently available",
    62: "Inconsistency in designated outgoing access information and subscriber class",
    63: "Service or option not available, unspecified",
    65: "Bearer capability not implemented",
    66: "Channel type not implemented",
    67: "Transit network selection not implemented",  # national
    68: "Message not implemented",  # national
    69: "Requested facility not implemented",
    70: "Only restricted digital information bearer capability is available",
    79: "Service or option not implemented, unspecified",
    81: "Invalid call reference value",
    82: "Identified channel does not exist",
    83: "A suspended call exists, but this call identity does not",
    84: "Call identity in use",
    85: "No call suspended",
    86: "Call having the requested call identity has been cleared",
    87: "User not member of CUG",
    88: "Incompatible destination",
    89: "Non-existent abbreviated address entry",  # national
    90: "Non-existent CUG",
    91: "Invalid transit network selection",
    92: "Invalid facility parameter",  # national
    93: "Mandatory information element is missing",  # national
    95: "Invalid message, unspecified",
    96: "Mandatory information element is missing",
    97: "Message type non-existent or not implemented",
    98: "Message not compatible with call state or message type non-existent or not implemented",
    99: "Information element / parameter non-existent or not implemented",
    100: "Invalid information element contents",
    101: "Message not compatible with call state",
    102: "Recovery on timer expiry",
    103: "Parameter non-existent or not implemented - passed on",
    110: "Message with unrecognized parameter discarded",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
}

LOCATION_NAMES: Final[dict[int, str]] = {
    0: "user",
    1: "private network serving the local user",
    2: "public network serving the local user",
    3: "transit network",
    4: "public network serving the remote user",
    5: "private network serving the remote user",
    7: "international network",
    10: "network beyond interworking point",
}

CODING_STANDARD_NAMES: Final[dict[int, str]] = {
    0: "ITU-T",
    1: "ISO/IEC",
    2: "national",
    3: "network-specific",
}

CODING_ITU_T: Final = 0

LOCATION_USER: Final = 0
LOCATION_PRIVATE_LOCAL: Final = 1

RECOVERY_ON_TIMER_EXPIRY: Final = 102
NORMAL_CALL_CLEARING: Final = 16
NORMAL_UNSPECIFIED: Final = 31
TEMPORARY_FAILURE: Final = 41


def is_assigned(value: int) -> bool:
    """True when `value` is an assigned cause value (see the module docstring)."""
    return value in CAUSE_NAMES


def cause_name(value: int) -> str:
    """The Q.850 name of a cause value, or "unassigned cause N"."""
    return CAUSE_NAMES.get(value, f"unassigned cause {value}")


def location_name(location: int) -> str:
    """The Q.850 name of a location code, or "reserved location N"."""
    return LOCATION_NAMES.get(location, f"reserved location {location}")


def coding_standard_name(coding_standard: int) -> str:
    """The name of a cause IE coding standard (0-3)."""
    return CODING_STANDARD_NAMES.get(coding_standard, f"coding standard {coding_standard}")


class NamedCause:
    """The Q.850 names of a record's `raw_cause` and `cause_location` (a mixin for the records
    that carry both: CallDetails, Event)."""

    __slots__ = ()
    raw_cause: int | None
    cause_location: int | None

    @property
    def raw_cause_name(self) -> str:
        """Q.850 name of raw_cause ("" when there is none)."""
        return "" if self.raw_cause is None else cause_name(self.raw_cause)

    @property
    def cause_location_name(self) -> str:
        """Q.850 name of cause_location ("" when there is none)."""
        return "" if self.cause_location is None else location_name(self.cause_location)
