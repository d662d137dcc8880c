"""Why a call ended: the `Cause` enum and the one normalisation table from Q.850 values.

The table (`NORMALISATION`) is the product's contract; `telecard causes` prints it.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

from . import q850, sip


class Cause(enum.Enum):
    """Normalised reason a call ended (the UAS call channel's causes)."""

    # Members are singletons compared by identity: the identity hash is right, and in C
    # (Enum's own hashes the name in Python; these key dicts on every call's path).
    __hash__ = object.__hash__

    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    NORMAL = "NORMAL"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    UNOBTAINABLE = "UNOBTAINABLE"
    CHANGED = "CHANGED"
    OUTOFORDER = "OUTOFORDER"
    BARRED = "BARRED"
    REJECTED = "REJECTED"
    NOCHANNELS = "NOCHANNELS"
    CONGESTION = "CONGESTION"
    FAILED = "FAILED"
    OTHER = "OTHER"

    def __str__(self) -> str:
        return self.value


_EXPLICIT: Final[dict[Cause, tuple[int, ...]]] = {
    Cause.NORMAL: (16, 26, 31),
    Cause.BUSY: (17,),
    Cause.NOANSWER: (18, 19),
    Cause.UNOBTAINABLE: (1, 2, 3, 5, 20, 28),
    Cause.CHANGED: (22,),
    Cause.OUTOFORDER: (27, 38, 41),
    Cause.BARRED: (52, 53, 54, 55),
    Cause.REJECTED: (21,),
    Cause.NOCHANNELS: (6, 34, 44),
    Cause.CONGESTION: (42, 47),
    Cause.TIMEOUT: (102,),
}

# FAILED is every other assigned value; OTHER (0, unassigned values, non-ITU-T coding) and
# ERROR (no cause IE: the device or firmware failed) come from no value.
NORMALISATION: Final[dict[Cause, tuple[int, ...]]] = {
    **_EXPLICIT,
    Cause.FAILED: tuple(
        v for v in sorted(q850.CAUSE_NAMES) if not any(v in vs for vs in _EXPLICIT.values())
    ),
}

_BY_VALUE: Final[dict[int, Cause]] = {v: c for c, vs in NORMALISATION.items() for v in vs}

# The Causes no cause value normalises to, and what gives them instead.
WITHOUT_VALUE: Final[dict[Cause, str]] = {
    Cause.OTHER: "0, every unassigned value, any non-ITU-T coding standard",
    Cause.ERROR: "no cause IE: device lost, firmware reset, card protocol error",
}

# What reject() may send: the value carried for each allowed Cause.
REJECT_VALUES: Final[dict[Cause, int]] = {
    Cause.BUSY: 17,
    Cause.NOANSWER: 19,
    Cause.UNOBTAINABLE: 1,
    Cause.CHANGED: 22,
    Cause.OUTOFORDER: 27,
    Cause.BARRED: 54,
    Cause.REJECTED: 21,
    Cause.NOCHANNELS: 34,
    Cause.CONGESTION: 42,
}


class CauseLike(Protocol):
    """The parts of a decoded cause IE that normalisation reads."""

    @property
    def coding_standard(self) -> int: ...

    @property
    def value(self) -> int: ...


def normalise_value(value: int, coding_standard: int = q850.CODING_ITU_T) -> Cause:
    """The Cause for a cause value under a coding standard (only ITU-T values are known)."""
    if coding_standard != q850.CODING_ITU_T:
        return Cause.OTHER
    return _BY_VALUE.get(value, Cause.OTHER)


def normalise(cause_ie: CauseLike | None) -> Cause:
    """The Cause for a decoded cause IE; OTHER when there is none to classify."""
    if cause_ie is None:
        return Cause.OTHER
    return normalise_value(cause_ie.value, cause_ie.coding_standard)


def reject_value(cause: Cause | None = None, raw_cause: int | str | None = None) -> int:
    """The cause value reject() sends; ValueError for anything the table does not allow.

    `raw_cause` is a Q.850 value (an int 1-127) sent as it is, or a SIP failure status (400-699,
    an int or a string such as "486") sent as the Q.850 value RFC 3398 maps it to
    (`telecard.sip.sip_to_q850`); the two ranges do not overlap. Both arguments are checked
    even when both are given; `raw_cause` then wins.
    """
    if cause is not None and (not isinstance(cause, Cause) or cause not in REJECT_VALUES):
        allowed = ", ".join(c.name for c in REJECT_VALUES)
        raise ValueError(f"reject() cannot send {cause!r}; allowed causes: {allowed}")
    if raw_cause is not None:
        if isinstance(raw_cause, int) and not isinstance(raw_cause, bool) and 1 <= raw_cause <= 127:
            return raw_cause
        try:
            return sip.sip_to_q850(raw_cause)
        except ValueError:
            raise ValueError(
                "raw_cause must be a Q.850 value (an int 1-127) or a SIP failure status"
                f" (400-699, an int or a string), not {raw_cause!r}"
            ) from None
    return REJECT_VALUES[cause if cause is not None else Cause.REJECTED]


def encode_cause(value: int, location: int, diagnostic: bytes = b"") -> bytes:
    """Cause IE contents from octet 3 on, ITU-T coded, as the card's mailbox takes them."""
    if not 0 <= value <= 127 or not 0 <= location <= 15:
        raise ValueError(f"cause value {value} / location {location} out of range")
    return bytes((0x80 | location, 0x80 | value)) + diagnostic
