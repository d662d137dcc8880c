"""The Q.931 cause information element, decoded by the C driver's pure decoder."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ._cdriver import ffi, lib
from .errors import MalformedCauseError

CODING_ITU_T = 0
CODING_ISO_IEC = 1
CODING_NATIONAL = 2
CODING_NETWORK = 3


@dataclass(frozen=True, slots=True)
class CauseIE:
    """A cause IE from octet 3 on: fields as Q.931 section 4.5.12 names them."""

    coding_standard: int
    location: int
    recommendation: int | None  # present only with octet 3a
    value: int
    diagnostic: bytes
    raw: bytes

    @property
    def cause_class(self) -> int:
        """Q.850 class: value >> 4 (0-1 normal, 2 resource unavailable, ...)."""
        return self.value >> 4


def cause_from_c(c: Any) -> CauseIE:
    """A CauseIE from a filled tc_cause."""
    return CauseIE(
        coding_standard=int(c.coding_standard),
        location=int(c.location),
        recommendation=None if c.recommendation < 0 else int(c.recommendation),
        value=int(c.value),
        diagnostic=bytes(ffi.buffer(c.diagnostic, c.diag_len)),
        raw=bytes(ffi.buffer(c.raw, c.raw_len)),
    )


def decode_cause(octets: bytes) -> CauseIE:
    """Decode cause IE contents (octet 3 onwards); MalformedCauseError when malformed."""
    return _decode(bytes(octets))


@functools.lru_cache(maxsize=256)
def _decode(data: bytes) -> CauseIE:
    # A card clears most calls with a handful of distinct causes: each is decoded once.
    c = ffi.new("tc_cause *")
    rc = lib.tc_cause_decode(data, len(data), c)
    if rc:
        msg = ffi.string(lib.tc_strerror(rc)).decode()
        raise MalformedCauseError(f"{msg}: {data.hex()}", rc, data)
    return cause_from_c(c)
