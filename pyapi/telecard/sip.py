"""Q.850 causes and SIP responses: the RFC 3398 mappings and the RFC 3326 Reason header.

A gateway between this card and SIP answers an INVITE the PSTN refused with the SIP status
`q850_to_sip()` gives for the clearing cause (RFC 3398 §7.2.4.1; `CallDetails.sip_status`), clears
a PSTN call with the cause `sip_to_q850()` gives for a SIP final response (§8.2.6.1;
`CallChannel.reject()` takes the status directly), and carries the cause itself both ways in a
``Reason: Q.850;cause=17;text="User busy"`` header (`reason_header()`, `parse_reason()`).

Each direction is one table, `Q850_TO_SIP` and `SIP_TO_Q850`, with the RFC's rows and its rules
for the values it does not list (`q850_to_sip()`, `sip_to_q850()`).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from . import q850

# RFC 3398 §7.2.4.1, Q.850 cause -> SIP status. Cause 16 has no row: it ends a dialog with BYE
# or CANCEL, and when a response to the INVITE is still due the normal class's default applies.
Q850_TO_SIP: Final[dict[int, int]] = {
    1: 404,
    2: 404,
    3: 404,
    17: 486,
    18: 408,
    19: 480,
    20: 480,
    21: 403,  # 603 when the cause location is the user
    22: 410,  # 301 with a diagnostic (the new number, for the Contact)
    23: 410,
    26: 404,
    27: 502,
    28: 484,
    29: 501,
    31: 480,
    34: 503,
    38: 503,
    41: 503,
    42: 503,
    47: 503,
    55: 403,
    57: 403,
    58: 503,
    65: 488,
    70: 488,
    79: 501,
    87: 403,
    88: 503,
    102: 504,
    111: 500,
    127: 500,
}

# A value the table does not list takes the response of its Q.850 class: the class is the
# value's upper three bits, and Q.931 and ISUP read a value they do not know as the
# "unspecified" value of its class. RFC 3398's table has the unspecified value of five classes;
# "service or option not available" (63) and "invalid message" (95) appear only as headings, so
# these two follow their class's own rows (58 -> 503) and the server-error rows of the classes
# after them (111, 127 -> 500).
CLASS_DEFAULT_SIP: Final[dict[int, int]] = {
    0: Q850_TO_SIP[31],  # normal event (0-15)
    1: Q850_TO_SIP[31],  # normal event (16-31)
    2: Q850_TO_SIP[47],  # resource unavailable
    3: 503,  # service or option not available
    4: Q850_TO_SIP[79],  # service or option not implemented
    5: 500,  # invalid message
    6: Q850_TO_SIP[111],  # protocol error
    7: Q850_TO_SIP[127],  # interworking
}

# RFC 3398 §8.2.6.1, SIP status -> Q.850 cause. 487 Request Terminated has no mapping (the
# request was cancelled), and 488 and 606 map "by Warning header", for which the RFC
# recommends 31 for most warning codes (65 when the warning speaks of an unavailable bearer
# capability): all three take the default.
SIP_TO_Q850: Final[dict[int, int]] = {
    400: 41,
    401: 21,
    402: 21,
    403: 21,
    404: 1,
    405: 63,
    406: 79,
    407: 21,
    408: 102,
    410: 22,
    413: 127,
    414: 127,
    415: 79,
    416: 127,
    420: 127,
    421: 127,
    423: 127,
    480: 18,
    481: 41,
    482: 25,
    483: 25,
    484: 28,
    485: 1,
    486: 17,
    500: 41,
    501: 79,
    502: 38,
    503: 41,
    504: 102,
    505: 127,
    513: 127,
    600: 17,
    603: 21,
    604: 1,
}

# RFC 3398 §8.2.6.1: any status it does not list maps to 31 "Normal, unspecified".
SIP_DEFAULT_Q850: Final = q850.NORMAL_UNSPECIFIED

_SIP_STATUS = re.compile(r"[1-6][0-9][0-9]")


def _check_cause(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError(f"a Q.850 cause value is an int 0-127, not {value!r}")


def q850_to_sip(value: int, location: int | None = None, diagnostic: bytes = b"") -> int:
    """The SIP final response for Q.850 cause `value` (RFC 3398 §7.2.4.1).

    21 *call rejected* at location 0 (the user) gives 603 Decline rather than 403, and 22
    *number changed* with a `diagnostic` (the new number) gives 301 Moved Permanently rather
    than 410, as the RFC's notes allow. A value without a row takes its class's response
    (`CLASS_DEFAULT_SIP`): 16 *normal call clearing*, which ends an answered call with BYE,
    gives 480 when an INVITE still waits for its answer. ValueError outside 0-127.
    """
    _check_cause(value)
    if value == 21 and location == q850.LOCATION_USER:
        return 603
    if value == 22 and diagnostic:
        return 301
    return Q850_TO_SIP.get(value, CLASS_DEFAULT_SIP[value >> 4])


def sip_status(status: int | str) -> int:
    """A SIP final failure status (400-699) as an int, from an int or a string of its three
    digits ("486"); ValueError for anything else."""
    if isinstance(status, str) and _SIP_STATUS.fullmatch(status):
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 699:
        raise ValueError(f"a SIP failure status is 400-699 (int or string), not {status!r}")
    return status


def sip_to_q850(status: int | str) -> int:
    """The Q.850 cause for SIP final response `status` (400-699, int or string; RFC 3398
    §8.2.6.1): a status without a row gives 31 (`SIP_DEFAULT_Q850`). ValueError for anything
    that is not a failure status."""
    return SIP_TO_Q850.get(sip_status(status), SIP_DEFAULT_Q850)


# -- RFC 3326 Reason header -------------------------------------------------------------------

PROTOCOL_Q850: Final = "Q.850"
PROTOCOL_SIP: Final = "SIP"


class Reason(NamedTuple):
    """One reason-value of a Reason header (RFC 3326 §2): the protocol as written ("Q.850",
    "SIP" or another token), its cause (None when absent) and text (None when absent)."""

    protocol: str
    cause: int | None
    text: str | None


# RFC 3261 §25.1: token, separators with optional whitespace around them (SWS), and a
# quoted-string whose quoted-pairs escape any character but CR and LF.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
_REASON = re.compile(
    rf"\s*(?P<protocol>{_TOKEN})"
    rf"(?P<params>(?:\s*;\s*{_TOKEN}(?:\s*=\s*(?:{_TOKEN}|{_QUOTED}))?)*)"
    r"\s*(?P<end>,|\Z)"
)
_PARAM = re.compile(rf"\s*;\s*(?P<name>{_TOKEN})(?:\s*=\s*(?P<value>{_TOKEN}|{_QUOTED}))?")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def reason_header(cause: int, text: str | None = None, *, protocol: str = PROTOCOL_Q850) -> str:
    """The value of a Reason header: ``Q.850;cause=17;text="User busy"``.

    For Q.850 the text defaults to the cause's Q.850 name (none for an unassigned value);
    `protocol` "SIP" carries a SIP status (100-699) instead, with no default text. ValueError
    for a cause out of the protocol's range or another protocol.
    """
    if protocol == PROTOCOL_Q850:
        _check_cause(cause)
        if text is None and q850.is_assigned(cause):
            text = q850.cause_name(cause)
    elif protocol == PROTOCOL_SIP:
        if isinstance(cause, bool) or not isinstance(cause, int) or not 100 <= cause <= 699:
            raise ValueError(f"a SIP status is an int 100-699, not {cause!r}")
    else:
        raise ValueError(f"protocol must be {PROTOCOL_Q850!r} or {PROTOCOL_SIP!r}: {protocol!r}")
    value = f"{protocol};cause={cause}"
    if text is None:
        return value
    if "\r" in text or "\n" in text:
        raise ValueError(f"a Reason text cannot hold a line break: {text!r}")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{value};text="{escaped}"'


def parse_reason(value: str) -> list[Reason]:
    """The reason-values of a Reason header's value, in order (RFC 3326 §2).

    Tolerant as the grammar allows: whitespace around ``;``, ``=`` and ``,``, parameters in any
    order, parameter and protocol names in any case (the protocol is returned as written),
    quoted-pairs in the text, unknown parameters ignored; a text given as a bare token is
    taken too. ValueError for anything else: no reason-value, a malformed one, a cause that is
    not decimal digits (or, for Q.850, not 0-127; for SIP, not 100-699), a parameter given
    twice, or two reason-values of one protocol (RFC 3326 §2 forbids them).
    """
    if not isinstance(value, str):
        raise ValueError(f"a Reason header value is a str, not {value!r}")
    reasons: list[Reason] = []
    pos = 0
    while True:
        match = _REASON.match(value, pos)
        if match is None:
            raise ValueError(f"not a Reason header value: {value!r}")
        reason = _reason(match["protocol"], match["params"], value)
        if any(r.protocol.upper() == reason.protocol.upper() for r in reasons):
            raise ValueError(f"two reasons of protocol {reason.protocol!r} in {value!r}")
        reasons.append(reason)
        if not match["end"]:
            return reasons
        pos = match.end()


def _reason(protocol: str, params: str, value: str) -> Reason:
    found: dict[str, str | None] = {}
    for param in _PARAM.finditer(params):
        name = param["name"].lower()
        if name in found:
            raise ValueError(f"parameter {name!r} given twice in {value!r}")
        found[name] = param["value"]
    cause: int | None = None
    raw_cause = found.get("cause")
    if "cause" in found:
        if raw_cause is None or not raw_cause.isdigit():
            raise ValueError(f"cause must be decimal digits in {value!r}")
        cause = int(raw_cause)
        upper = protocol.upper()
        if upper == PROTOCOL_Q850 and cause > 127:
            raise ValueError(f"a Q.850 cause is 0-127, not {cause} in {value!r}")
        if upper == PROTOCOL_SIP and not 100 <= cause <= 699:
            raise ValueError(f"a SIP status is 100-699, not {cause} in {value!r}")
    text = found.get("text")
    if text is not None and text.startswith('"'):
        text = _ESCAPED.sub(r"\1", text[1:-1])
    elif "text" in found and text is None:
        raise ValueError(f"text needs a value in {value!r}")
    return Reason(protocol, cause, text)
