"""The cause normalisation table, the Q.850 names and the reject table."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telecard import q850
from telecard.cause_ie import decode_cause
from telecard.causes import (
    NORMALISATION,
    REJECT_VALUES,
    Cause,
    encode_cause,
    normalise,
    normalise_value,
    reject_value,
)

# The issue's table, written out independently of the implementation.
ISSUE_TABLE: dict[Cause, set[int]] = {
    Cause.NORMAL: {16, 26, 31},
    Cause.BUSY: {17},
    Cause.NOANSWER: {18, 19},
    Cause.UNOBTAINABLE: {1, 2, 3, 5, 20, 28},
    Cause.CHANGED: {22},
    Cause.OUTOFORDER: {27, 38, 41},
    Cause.BARRED: {52, 53, 54, 55},
    Cause.REJECTED: {21},
    Cause.NOCHANNELS: {6, 34, 44},
    Cause.CONGESTION: {42, 47},
    Cause.TIMEOUT: {102},
    Cause.FAILED: {
        4, *range(7, 12), 14, *range(23, 26), 29, 30, 33, 35, 37, 39, 40, 43, 45, 46,
        *range(49, 52), *range(56, 59), 62, 63, *range(65, 71), 79, *range(81, 94),
        *range(95, 102), 103, 110, 111, 127,
    },
}


def expected(value: int, coding_standard: int) -> Cause:
    if coding_standard != 0:
        return Cause.OTHER
    for cause, values in ISSUE_TABLE.items():
        if value in values:
            return cause
    return Cause.OTHER


def test_table_is_the_issue_table() -> None:
    assert {c: set(v) for c, v in NORMALISATION.items()} == ISSUE_TABLE


def test_derived_failed_row_is_exactly_the_issue_list() -> None:
    assert set(NORMALISATION[Cause.FAILED]) == ISSUE_TABLE[Cause.FAILED]


def test_rows_are_disjoint_and_every_assigned_value_is_in_one() -> None:
    seen: list[int] = [v for values in NORMALISATION.values() for v in values]
    assert len(seen) == len(set(seen))
    assert set(seen) == set(q850.CAUSE_NAMES)
    assert 0 not in q850.CAUSE_NAMES


def test_every_cause_but_error_and_other_has_values() -> None:
    assert set(NORMALISATION) == set(Cause) - {Cause.ERROR, Cause.OTHER}


def test_q850_names() -> None:
    assert q850.cause_name(17) == "User busy"
    assert q850.cause_name(102) == "Recovery on timer expiry"
    assert q850.cause_name(12) == "unassigned cause 12"
    assert q850.location_name(0) == "user"
    assert q850.location_name(10) == "network beyond interworking point"
    assert q850.location_name(6) == "reserved location 6"
    assert q850.coding_standard_name(3) == "network-specific"


@given(
    value=st.integers(0, 127),
    coding_standard=st.integers(0, 3),
    location=st.sampled_from(sorted(q850.LOCATION_NAMES)),
    diagnostic=st.binary(max_size=4),
)
def test_every_value_under_every_coding_standard(
    value: int, coding_standard: int, location: int, diagnostic: bytes
) -> None:
    octets = bytes((0x80 | coding_standard << 5 | location, 0x80 | value)) + diagnostic
    ie = decode_cause(octets)
    assert ie.value == value  # raw_cause is kept whatever the coding standard
    assert ie.coding_standard == coding_standard
    assert normalise(ie) is expected(value, coding_standard)
    assert normalise_value(value, coding_standard) is expected(value, coding_standard)


def test_no_cause_ie_is_other() -> None:
    assert normalise(None) is Cause.OTHER


@pytest.mark.parametrize(
    ("cause", "value"),
    [
        (Cause.BUSY, 17),
        (Cause.NOANSWER, 19),
        (Cause.UNOBTAINABLE, 1),
        (Cause.CHANGED, 22),
        (Cause.OUTOFORDER, 27),
        (Cause.BARRED, 54),
        (Cause.REJECTED, 21),
        (Cause.NOCHANNELS, 34),
        (Cause.CONGESTION, 42),
    ],
)
def test_reject_table(cause: Cause, value: int) -> None:
    assert REJECT_VALUES[cause] == value
    assert reject_value(cause) == value
    # What reject() sends reads back as the same Cause.
    assert normalise_value(value) is cause


def test_reject_defaults_and_raw_cause() -> None:
    assert reject_value() == 21
    assert reject_value(raw_cause=88) == 88
    assert reject_value(Cause.BUSY, raw_cause=3) == 3


@pytest.mark.parametrize(
    "cause", [Cause.NORMAL, Cause.TIMEOUT, Cause.ERROR, Cause.FAILED, Cause.OTHER, "BUSY", 17]
)
def test_reject_refuses_other_causes(cause: object) -> None:
    with pytest.raises(ValueError):
        reject_value(cause)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [0, 128, -1, 17.0, "17", True])
def test_reject_refuses_bad_raw_causes(raw: object) -> None:
    with pytest.raises(ValueError):
        reject_value(raw_cause=raw)  # type: ignore[arg-type]


def test_encode_cause() -> None:
    assert encode_cause(16, 0) == b"\x80\x90"
    assert encode_cause(102, 1, b"303") == b"\x81\xe6303"
    ie = decode_cause(encode_cause(54, 0))
    assert (ie.coding_standard, ie.location, ie.value) == (0, 0, 54)
