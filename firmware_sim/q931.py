"""Q.931 message and information-element codec (ITU-T Q.931, ETSI EN 300 102-1).

Decoding never raises: input the standard says to ignore (§5.8.1-5.8.3.1) yields None, and
IE-level problems are listed on the decoded Message for call control to answer per §5.8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .regmap import BEARER_AUDIO_3K1, BEARER_DIGITAL, BEARER_SPEECH, LINE_E1

PROTOCOL_DISCRIMINATOR = 0x08

# Message types (Q.931 table 4-2)
ALERTING = 0x01
CALL_PROCEEDING = 0x02
PROGRESS = 0x03
SETUP = 0x05
CONNECT = 0x07
SETUP_ACKNOWLEDGE = 0x0D
CONNECT_ACKNOWLEDGE = 0x0F
DISCONNECT = 0x45
RESTART = 0x46
RELEASE = 0x4D
RESTART_ACKNOWLEDGE = 0x4E
RELEASE_COMPLETE = 0x5A
STATUS_ENQUIRY = 0x75
STATUS = 0x7D
INFORMATION = 0x7B

MESSAGE_NAMES: dict[int, str] = {
    ALERTING: "ALERTING",
    CALL_PROCEEDING: "CALL PROCEEDING",
    PROGRESS: "PROGRESS",
    SETUP: "SETUP",
    CONNECT: "CONNECT",
    SETUP_ACKNOWLEDGE: "SETUP ACKNOWLEDGE",
    CONNECT_ACKNOWLEDGE: "CONNECT ACKNOWLEDGE",
    DISCONNECT: "DISCONNECT",
    RESTART: "RESTART",
    RELEASE: "RELEASE",
    RESTART_ACKNOWLEDGE: "RESTART ACKNOWLEDGE",
    RELEASE_COMPLETE: "RELEASE COMPLETE",
    STATUS_ENQUIRY: "STATUS ENQUIRY",
    STATUS: "STATUS",
    INFORMATION: "INFORMATION",
}

# Information elements of codeset 0 (Q.931 table 4-3)
IE_BEARER_CAPABILITY = 0x04
IE_CAUSE = 0x08
IE_CALL_STATE = 0x14
IE_CHANNEL_ID = 0x18
IE_PROGRESS = 0x1E
IE_DISPLAY = 0x28
IE_CALLING_NUMBER = 0x6C
IE_CALLED_NUMBER = 0x70
IE_RESTART_INDICATOR = 0x79
IE_SENDING_COMPLETE = 0xA1  # single octet
SHIFT = 0x90  # single octet, high nibble; bit 4 set = non-locking

# Standard IEs this implementation accepts without acting on them (so they draw no cause 99).
_TOLERATED_IES = frozenset(
    {0x10, 0x1C, 0x20, 0x27, 0x29, 0x2C, 0x34, 0x40, 0x42, 0x4C, 0x4D, 0x6D, 0x71, 0x74,
     0x76, 0x78, 0x7C, 0x7D, 0x7E}
)

# IEs each message cannot do without (§5.8.6.1); RELEASE's cause is checked by call control
# since it is mandatory only in the first clearing message.
MANDATORY_IES: dict[int, tuple[int, ...]] = {
    SETUP: (IE_BEARER_CAPABILITY,),
    DISCONNECT: (IE_CAUSE,),
    PROGRESS: (IE_PROGRESS,),
    STATUS: (IE_CAUSE, IE_CALL_STATE),
    RESTART: (IE_RESTART_INDICATOR,),
    RESTART_ACKNOWLEDGE: (IE_RESTART_INDICATOR,),
}

# Cause values (Q.850) used by this package
CAUSE_UNALLOCATED = 1
CAUSE_NORMAL_CLEARING = 16
CAUSE_USER_BUSY = 17
CAUSE_NO_USER_RESPONDING = 18
CAUSE_NO_ANSWER = 19
CAUSE_INVALID_NUMBER_FORMAT = 28  # incomplete number (overlap receiving, T302)
CAUSE_DESTINATION_OUT_OF_ORDER = 27
CAUSE_RESPONSE_TO_STATUS_ENQUIRY = 30
CAUSE_NORMAL_UNSPECIFIED = 31
CAUSE_NO_CHANNEL = 34
CAUSE_TEMPORARY_FAILURE = 41
CAUSE_CONGESTION = 42
CAUSE_CHANNEL_NOT_AVAILABLE = 44
CAUSE_BEARER_NOT_AVAILABLE = 58
CAUSE_BEARER_NOT_IMPLEMENTED = 65
CAUSE_INCOMPATIBLE_DESTINATION = 88
CAUSE_INVALID_CALL_REFERENCE = 81
CAUSE_MANDATORY_IE_MISSING = 96
CAUSE_MESSAGE_TYPE_UNKNOWN = 97
CAUSE_IE_UNKNOWN = 99
CAUSE_INVALID_IE_CONTENTS = 100
CAUSE_WRONG_STATE = 101
CAUSE_TIMER_EXPIRY = 102

# Cause locations (Q.850)
LOC_USER = 0
LOC_PRIVATE_LOCAL = 1
LOC_PUBLIC_LOCAL = 2
LOC_PUBLIC_REMOTE = 4

# Progress descriptions
PI_NOT_END_TO_END_ISDN = 1
PI_INBAND = 8

# Restart indicator classes
RESTART_INDICATED_CHANNELS = 0
RESTART_SINGLE_INTERFACE = 6
RESTART_ALL_INTERFACES = 7

_HEADER_LEN = 5  # PD, CR length (2 on a PRI), 2 CR octets, message type


@dataclass(slots=True)
class Message:
    """A decoded Q.931 message; IE contents are the octets after the length octet."""

    mt: int
    cr: int  # call reference value, 15 bits
    from_destination: bool  # call reference flag: set by the side that received the SETUP
    ies: dict[int, bytes] = field(default_factory=dict)
    sending_complete: bool = False
    unknown: list[int] = field(default_factory=list)  # unrecognised, comprehension not needed
    required_unknown: list[int] = field(default_factory=list)  # unrecognised, must be understood
    invalid: list[int] = field(default_factory=list)  # recognised IEs whose contents are bad
    # Zero-length (dummy) call reference: cr is 0 but this is not the global call reference
    dummy_cr: bool = False


def decode(data: bytes) -> Message | None:
    """Decode one message; None when Q.931 §5.8.1-5.8.3.1 says to ignore it."""
    if len(data) < _HEADER_LEN - 1 or data[0] != PROTOCOL_DISCRIMINATOR:
        return None
    crlen = data[1]
    if crlen == 2:
        if len(data) < 5:
            return None
        cr = ((data[2] & 0x7F) << 8) | data[3]
        flag = data[2] & 0x80 != 0
        mt = data[4]
        pos = 5
    elif crlen == 0:  # dummy call reference (Q.932 procedures only), flagged as such
        cr, flag, mt, pos = 0, False, data[2], 3
    else:
        return None
    if mt & 0x80:  # message type octet bit 8 is reserved for extension
        return None
    msg = Message(mt, cr, flag, {}, False, [], [], [], crlen == 0)  # literals beat factories
    _decode_ies(data, pos, msg)
    return msg


def _decode_ies(data: bytes, pos: int, msg: Message) -> None:
    ies = msg.ies
    end = len(data)
    codeset = 0
    locked = 0
    while pos < end:
        ie = data[pos]
        if ie & 0x80:  # single-octet IE
            pos += 1
            if ie & 0xF0 == SHIFT:
                new = ie & 0x07
                if ie & 0x08:
                    codeset = new  # applies to the next IE only
                    continue
                codeset = locked = new
                continue
            if codeset == 0:
                if ie == IE_SENDING_COMPLETE:
                    msg.sending_complete = True
                elif ie & 0xF0 not in (0xA0, 0xB0, 0xD0):  # known single-octet classes
                    msg.unknown.append(ie)
            codeset = locked
            continue
        if pos + 1 >= end:
            msg.invalid.append(ie)  # IE truncated before its length octet
            return
        length = data[pos + 1]
        body = data[pos + 2 : pos + 2 + length]
        pos += 2 + length
        if len(body) < length:
            if codeset == 0:
                msg.invalid.append(ie)
                ies.setdefault(ie, body)
            return
        if codeset == 0:
            if ie in _VALIDATORS:
                if ie not in ies:
                    ies[ie] = body
                    if not _VALIDATORS[ie](body):
                        msg.invalid.append(ie)
            elif ie not in _TOLERATED_IES:
                if ie & 0xF0 == 0:
                    msg.required_unknown.append(ie)
                else:
                    msg.unknown.append(ie)
        codeset = locked


def _valid_cause(b: bytes) -> bool:
    if len(b) < 2:
        return False
    if b[0] & 0x80:
        return bool(b[1] & 0x80)
    return len(b) >= 3 and bool(b[1] & 0x80) and bool(b[2] & 0x80)


def _valid_number(b: bytes) -> bool:
    if not b:
        return False
    start = 1 if b[0] & 0x80 else 2
    return len(b) >= start and all(0x20 <= c < 0x7F for c in b[start:])


def _valid_channel_id(b: bytes) -> bool:
    return parse_channel_id(b) is not None


def _valid_nonempty(b: bytes) -> bool:
    return len(b) >= 1


def _valid_bearer(b: bytes) -> bool:
    return len(b) >= 2 and bool(b[0] & 0x80)


def _valid_progress(b: bytes) -> bool:
    return len(b) == 2 and bool(b[1] & 0x80)


def _valid_display(b: bytes) -> bool:
    return all(c < 0x80 for c in b)


_VALIDATORS = {
    IE_BEARER_CAPABILITY: _valid_bearer,
    IE_CAUSE: _valid_cause,
    IE_CALL_STATE: _valid_nonempty,
    IE_CHANNEL_ID: _valid_channel_id,
    IE_PROGRESS: _valid_progress,
    IE_DISPLAY: _valid_display,
    IE_CALLING_NUMBER: _valid_number,
    IE_CALLED_NUMBER: _valid_number,
    IE_RESTART_INDICATOR: _valid_nonempty,
}


# --- encoding ----------------------------------------------------------------------------


def header(mt: int, cr: int, from_destination: bool) -> bytes:
    """Message header with a 2-octet call reference (PRI)."""
    return bytes((PROTOCOL_DISCRIMINATOR, 2, (cr >> 8) | (0x80 if from_destination else 0),
                  cr & 0xFF, mt))


def global_header(mt: int) -> bytes:
    """Header with the global call reference (RESTART, RESTART ACK, STATUS on it)."""
    return bytes((PROTOCOL_DISCRIMINATOR, 2, 0, 0, mt))


def ie(ident: int, body: bytes) -> bytes:
    """One variable-length IE (at most 255 octets of contents)."""
    return bytes((ident, len(body))) + body


def cause_body(value: int, location: int, diagnostic: bytes = b"", coding_standard: int = 0,
               ) -> bytes:
    """Cause IE contents (octet 3 on) for a Q.850 value."""
    return bytes((0x80 | (coding_standard & 3) << 5 | (location & 0x0F), 0x80 | (value & 0x7F))
                 ) + diagnostic


def timer_cause(timer: str, location: int) -> bytes:
    """Cause 102 with the timer's number as its diagnostic (Q.850 §2.2.7.3)."""
    return cause_body(CAUSE_TIMER_EXPIRY, location, timer[1:].encode("ascii"))


@dataclass(frozen=True, slots=True)
class CauseFields:
    """The parts of a cause IE body; value None when the body is too short to hold one."""

    coding_standard: int
    location: int
    value: int | None
    recommendation: int | None
    diagnostic: bytes


def parse_cause(body: bytes) -> CauseFields | None:
    """Split a cause IE body; None for an empty body."""
    if not body:
        return None
    o3 = body[0]
    pos = 1
    rec = None
    if not o3 & 0x80 and len(body) > 1:
        rec = body[1] & 0x7F
        pos = 2
    value = body[pos] & 0x7F if len(body) > pos else None
    return CauseFields((o3 >> 5) & 3, o3 & 0x0F, value, rec, body[pos + 1 :])


# Information transfer capability (bearer capability octet 3, bits 5-1) of each bearer code
_TRANSFER_CAPABILITY = {BEARER_SPEECH: 0x00, BEARER_AUDIO_3K1: 0x10, BEARER_DIGITAL: 0x08}
_BEARER_OF_CAPABILITY = {itc: code for code, itc in _TRANSFER_CAPABILITY.items()}
_CIRCUIT_64K = 0x90  # octet 4: extension, circuit mode, 64 kbit/s


def bearer_capability(line: int, bearer: int = BEARER_SPEECH) -> bytes:
    """Bearer capability contents for a bearer code: ITU-T coding, circuit mode 64 kbit/s;
    speech and 3.1 kHz audio add layer 1 G.711 A-law on E1, mu-law on T1."""
    body = bytes((0x80 | _TRANSFER_CAPABILITY[bearer], _CIRCUIT_64K))
    if bearer == BEARER_DIGITAL:
        return body
    return body + (b"\xa3" if line == LINE_E1 else b"\xa2")


def parse_bearer(b: bytes) -> int | None:
    """The bearer code of (validated) bearer capability contents; None for a bearer the card
    does not implement: another coding standard, capability, transfer mode or rate."""
    if b[0] & 0x60 or b[1] != _CIRCUIT_64K:
        return None
    return _BEARER_OF_CAPABILITY.get(b[0] & 0x1F)


def channel_id(timeslot: int, exclusive: bool = True) -> bytes:
    """Channel identification for one B-channel of a primary-rate interface."""
    return bytes((0xA1 | (0x08 if exclusive else 0), 0x83, 0x80 | timeslot))


def parse_channel_id(b: bytes) -> tuple[bool, int | None] | None:
    """(exclusive, channel number or None for 'any') or None when the contents are invalid."""
    if not b or not b[0] & 0x80:
        return None
    o3 = b[0]
    exclusive = bool(o3 & 0x08)
    if o3 & 0x40:  # explicit interface identifier: not used on a single PRI
        return None
    if not o3 & 0x20:  # basic-rate encoding: meaningless on a PRI
        return None
    selection = o3 & 0x03
    if o3 & 0x04:  # D-channel indicated
        return (exclusive, None) if selection == 0 else None
    if selection in (0, 3):  # no channel / any channel
        return exclusive, None
    if selection != 1 or len(b) < 3 or not b[1] & 0x80 or b[1] & 0x10:
        return None  # channel maps are not supported
    if b[1] & 0x0F != 3 or not b[2] & 0x80 or len(b) != 3:
        return None
    return exclusive, b[2] & 0x7F


def number(digits: str, plan: int = 0, pres: int | None = None) -> bytes:
    """Called/calling party number contents: octet 3 holds `plan` (type of number << 4 |
    numbering plan); a calling number's octet 3a holds `pres` (presentation << 5 |
    screening) when given."""
    if pres is None:
        return bytes((0x80 | plan,)) + digits.encode("ascii")
    return bytes((plan & 0x7F, 0x80 | pres)) + digits.encode("ascii")


def number_digits(b: bytes) -> str:
    """Digits of a (validated) party number IE."""
    start = 1 if b[0] & 0x80 else 2
    return b[start:].decode("ascii", "replace")


def number_plan(b: bytes) -> tuple[int, int | None]:
    """(type of number << 4 | numbering plan, presentation << 5 | screening or None without
    octet 3a) of a (validated) party number IE."""
    if b[0] & 0x80:
        return b[0] & 0x7F, None
    return b[0] & 0x7F, b[1] & 0x63


def progress(description: int, location: int) -> bytes:
    return bytes((0x80 | location, 0x80 | description))


def restart_indicator(cls: int) -> bytes:
    return bytes((0x80 | cls,))
