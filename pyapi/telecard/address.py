"""Party numbers: digits, `tel:` and `sip:`/`sips:` URIs, and `Number` with its type and plan.

A call's `call_to` and `call_from` may be

- digits (0-9, `*`, `#`; 1-32 of them): type and plan *unknown*;
- a `tel:` URI (RFC 3966): visual separators (`-.()`) and parameters are dropped; a global
  number (`tel:+44...`) goes out as an *international* number of the ISDN/telephony plan
  (E.164) without its `+`, a local one as *unknown*;
- a `sip:` or `sips:` URI whose user part is a telephone number (RFC 3261 19.1.6): with
  `;user=phone` the user part follows the `tel:` rules, without it the user part must be
  digits, optionally after a `+` (global, as above); host, port and other parameters are
  dropped;
- a `Number`, which sets type, plan, and for the calling number presentation and screening.

Anything else is a ValueError, raised before anything reaches the card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from ._cdriver import lib
from .registers import Bearer, NumberingPlan, Presentation, Screening, TypeOfNumber

__all__ = ["Number", "parse_number"]

NUMBER_MAX: Final[int] = lib.TC_NUMBER_MAX
"""The most digits a number carries (the card's CALLED and CALLING registers)."""
_DIGITS: Final = re.compile(rf"[0-9*#]{{1,{NUMBER_MAX}}}")
_DIGITS_OR_NONE: Final = re.compile(rf"[0-9*#]{{0,{NUMBER_MAX}}}")
_VISUAL: Final = re.compile(r"[-.()]")
_SIP_DIGITS: Final = re.compile(r"\+?[0-9*#]+")
_FORMS: Final = (
    "1-32 digits (0-9, *, #), a tel: URI, or a sip:/sips: URI whose user part is a telephone"
    " number"
)


@dataclass(frozen=True)
class Number:
    """A party number with its type of number and numbering plan (Q.931 4.5.8) and, for the
    calling number, its presentation and screening (4.5.10).

    `digits`: 0-32 of 0-9, `*`, `#` (no `+`: an international number says so by its type);
    empty only for a calling number whose presentation alone is sent. The other fields take
    the enums or their integer values. `plan_register` and `pres_register` are type and plan,
    presentation and screening as the card's CALLED_PLAN/CALLING_PLAN and CALLING_PRES
    registers hold them (datasheet 2.4, 2.5).
    """

    digits: str
    type: TypeOfNumber = TypeOfNumber.UNKNOWN
    plan: NumberingPlan = NumberingPlan.UNKNOWN
    presentation: Presentation = Presentation.ALLOWED
    screening: Screening = Screening.USER_NOT_SCREENED

    def __post_init__(self) -> None:
        if not isinstance(self.digits, str) or not _DIGITS_OR_NONE.fullmatch(self.digits):
            raise ValueError(f"Number digits must be 0-32 of 0-9, *, #, not {self.digits!r}")
        for name, enum_type in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Number {name} must be a {enum_type.__name__}, not {value!r}")
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                raise ValueError(f"Number {name}: {value!r} is no {enum_type.__name__}") from None
        object.__setattr__(self, "plan_register", _plan_register(self.type, self.plan))
        object.__setattr__(
            self, "pres_register", _pres_register(self.presentation, self.screening)
        )

    def __str__(self) -> str:
        """`+` and the digits for an international E.164 number, else the digits."""
        if self.type is TypeOfNumber.INTERNATIONAL and self.plan is NumberingPlan.E164:
            return f"+{self.digits}"
        return self.digits

    plan_register: int = field(default=0, init=False, repr=False, compare=False)
    pres_register: int = field(default=0, init=False, repr=False, compare=False)


def _plan_register(type_: int, plan: int) -> int:
    return type_ << lib.TC_TON_SHIFT | plan


def _pres_register(presentation: int, screening: int) -> int:
    return presentation << lib.TC_PRES_SHIFT | screening


_FIELDS: Final = (
    ("type", TypeOfNumber),
    ("plan", NumberingPlan),
    ("presentation", Presentation),
    ("screening", Screening),
)
_TYPES: Final = {t.value: t for t in TypeOfNumber}
_PLANS: Final = {p.value: p for p in NumberingPlan}
_PRESENTATIONS: Final = {p.value: p for p in Presentation}
_SCREENINGS: Final = {s.value: s for s in Screening}
_BEARERS: Final = {b.value: b for b in Bearer}


def _trusted(
    digits: str,
    type: TypeOfNumber = TypeOfNumber.UNKNOWN,  # noqa: A002 - the field's name
    plan: NumberingPlan = NumberingPlan.UNKNOWN,
    presentation: Presentation = Presentation.ALLOWED,
    screening: Screening = Screening.USER_NOT_SCREENED,
) -> Number:
    """A Number from values already checked, without __init__'s checks (every call makes
    two)."""
    number = object.__new__(Number)
    number.__dict__.update(
        digits=digits,
        type=type,
        plan=plan,
        presentation=presentation,
        screening=screening,
        plan_register=_plan_register(type, plan),
        pres_register=_pres_register(presentation, screening),
    )
    return number


NO_NUMBER: Final = _trusted("")
_PLAIN: Final = {name: value for name, value in NO_NUMBER.__dict__.items() if name != "digits"}
"""The number of a call that has none (and of the record before any call)."""


def parse_number(number: object, what: str, *, allow_empty: bool = False) -> Number:
    """The Number for digits, a `tel:`/`sip:`/`sips:` URI or a Number (see the module doc);
    ValueError otherwise. `allow_empty`: "" (no number) is accepted, as for a calling number.
    """
    if type(number) is str:
        if _DIGITS.fullmatch(number):  # plain digits, as most calls give them
            number_ = object.__new__(Number)
            number_.__dict__.update(_PLAIN, digits=number)
            return number_
        if not number and allow_empty:
            return NO_NUMBER
    elif isinstance(number, Number):
        if not number.digits and not allow_empty:
            raise ValueError(f"{what}: {number!r} has no digits")
        return number
    elif not isinstance(number, str):
        raise ValueError(f"{what} must be a Number or a str ({_FORMS}), not {number!r}")
    else:  # a str subclass (a StrEnum member, numpy.str_): its plain value
        return parse_number(str.__str__(number), what, allow_empty=allow_empty)
    scheme, _, rest = number.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        digits = rest.split(";", 1)[0]
        phone = True
    elif scheme in ("sip", "sips"):
        digits, phone = _sip_user(rest, what, number)
    else:
        raise ValueError(f"{what}: {number!r} is not {_FORMS}")
    digits = unquote(digits)
    if phone:
        digits = _VISUAL.sub("", digits)
    elif not _SIP_DIGITS.fullmatch(digits):
        raise ValueError(
            f"{what}: the user part of {number!r} is not a telephone number (digits, or a tel:"
            f" number with ;user=phone); {what} takes {_FORMS}"
        )
    international = digits.startswith("+")
    if international:
        digits = digits[1:]
    if not _DIGITS.fullmatch(digits):
        raise ValueError(f"{what}: {number!r} does not hold {_FORMS}")
    if international:
        return _trusted(digits, TypeOfNumber.INTERNATIONAL, NumberingPlan.E164)
    return _trusted(digits)


def _sip_user(rest: str, what: str, uri: str) -> tuple[str, bool]:
    """(the user part, whether ;user=phone is given) of a SIP URI after its scheme."""
    rest = rest.split("?", 1)[0]
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or not userinfo:
        raise ValueError(f"{what}: {uri!r} has no user part; {what} takes {_FORMS}")
    user = userinfo.split(":", 1)[0]  # a password follows the colon
    params = hostpart.split(";")[1:]
    phone = any(p.lower() == "user=phone" for p in params)
    if phone:
        user = user.split(";", 1)[0]  # telephone-subscriber parameters (;isub=, ;postd=)
    return user, phone


def from_registers(digits: str, plan: int, pres_bearer: int = 0) -> Number:
    """The Number a channel block records (datasheet 2.4); values the datasheet does not list
    (a newer card's) read as unknown."""
    return _trusted(
        digits,
        _TYPES.get(plan >> lib.TC_TON_SHIFT, TypeOfNumber.UNKNOWN),
        _PLANS.get(plan & lib.TC_NPI_MASK, NumberingPlan.UNKNOWN),
        _PRESENTATIONS.get(
            (pres_bearer & lib.TC_PRES_MASK) >> lib.TC_PRES_SHIFT, Presentation.ALLOWED
        ),
        _SCREENINGS[pres_bearer & lib.TC_SCREEN_MASK],
    )


def bearer_from_register(pres_bearer: int) -> Bearer:
    """The Bearer of a PRES_BEARER register; SPEECH for a code the datasheet does not list."""
    return _BEARERS.get((pres_bearer & lib.TC_BEARER_MASK) >> lib.TC_BEARER_SHIFT, Bearer.SPEECH)


def check_bearer(bearer: object) -> Bearer:
    """A Bearer (or its value); ValueError otherwise."""
    if type(bearer) is Bearer:
        return bearer
    if isinstance(bearer, bool) or not isinstance(bearer, int) or bearer not in _BEARERS:
        raise ValueError(f"bearer must be a telecard.Bearer, not {bearer!r}")
    return _BEARERS[bearer]
