"""The C cause IE decoder on every well-formed shape, malformed input and arbitrary bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecard import CauseIE, MalformedCauseError, decode_cause
from telecard._cdriver import ffi, lib

LOCATIONS = (0, 1, 2, 3, 4, 5, 7, 10)
RECOMMENDATIONS = (0, 3, 4, 5)


def encode(coding: int, location: int, value: int, diag: bytes = b"", rec: int | None = None):
    octet3 = (coding << 5) | location
    if rec is None:
        return bytes((0x80 | octet3, 0x80 | value)) + diag
    return bytes((octet3, 0x80 | rec, 0x80 | value)) + diag


@pytest.mark.parametrize("coding", range(4))
@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("rec", (None, *RECOMMENDATIONS))
def test_every_coding_location_and_recommendation(coding: int, location: int, rec) -> None:
    raw = encode(coding, location, 16, rec=rec)
    assert decode_cause(raw) == CauseIE(coding, location, rec, 16, b"", raw)


@pytest.mark.parametrize("value", range(128))
def test_every_cause_value(value: int) -> None:
    assert decode_cause(encode(0, 2, value)).value == value


@pytest.mark.parametrize("rec", (None, 0))
def test_diagnostics_of_every_length_up_to_the_maximum(rec) -> None:
    header = len(encode(0, 0, 0, rec=rec))
    for n in range(lib.TC_CAUSE_MAX - header + 1):
        diag = bytes(range(0x30, 0x30 + n))
        cause = decode_cause(encode(0, 1, 102, diag, rec))
        assert cause.diagnostic == diag
        assert len(cause.raw) == header + n


def test_timer_diagnostic() -> None:
    cause = decode_cause(bytes((0x82, 0xE6)) + b"303")
    assert (cause.value, cause.cause_class, cause.diagnostic) == (102, 6, b"303")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "TC_ECAUSE_EMPTY"),
        (b"\x80", "TC_ECAUSE_SHORT"),  # octet 3 only
        (b"\x00", "TC_ECAUSE_SHORT"),  # octet 3 announcing 3a, nothing after
        (b"\x00\x80", "TC_ECAUSE_SHORT"),  # octets 3 and 3a, no octet 4
        (b"\x80\x10", "TC_ECAUSE_EXT"),  # octet 4 without its extension bit
        (b"\x00\x00\x90", "TC_ECAUSE_EXT"),  # octet 3a without its extension bit
        (b"\x00\x80\x10", "TC_ECAUSE_EXT"),  # octet 4 without its extension bit after 3a
        (b"\x80\x90" + bytes(31), "TC_ECAUSE_LONG"),  # 33 octets
    ],
)
def test_malformed(raw: bytes, code: str) -> None:
    with pytest.raises(MalformedCauseError) as info:
        decode_cause(raw)
    assert info.value.code == -getattr(lib, code)
    assert info.value.raw == raw
    assert isinstance(info.value, ValueError)


def reference(raw: bytes) -> CauseIE | None:
    """An independent reading of Q.931 4.5.12: None for malformed input."""
    if not 1 <= len(raw) <= 32:
        return None
    rec, pos = None, 1
    if not raw[0] & 0x80:
        if len(raw) < 2 or not raw[1] & 0x80:
            return None
        rec, pos = raw[1] & 0x7F, 2
    if len(raw) <= pos or not raw[pos] & 0x80:
        return None
    return CauseIE((raw[0] >> 5) & 3, raw[0] & 0x0F, rec, raw[pos] & 0x7F, raw[pos + 1 :], raw)


@settings(max_examples=3000)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_consistently_or_raise(raw: bytes) -> None:
    expected = reference(raw)
    if expected is None:
        with pytest.raises(MalformedCauseError):
            decode_cause(raw)
    else:
        assert decode_cause(raw) == expected


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=40), max_size=50))
def test_bulk_agrees_with_single(ies: list[bytes]) -> None:
    lens = [min(len(ie), 255) for ie in ies]
    buf = b"".join(ies)
    out = ffi.new("tc_cause[]", max(1, len(ies)))
    results = ffi.new("int32_t[]", max(1, len(ies)))
    ok = lib.tc_cause_decode_bulk(buf, len(buf), bytes(lens), len(ies), out, results)
    assert ok == sum(reference(ie) is not None for ie in ies)
    for i, ie in enumerate(ies):
        assert (results[i] == 0) == (reference(ie) is not None)


def test_bulk_refuses_lengths_beyond_the_buffer() -> None:
    out = ffi.new("tc_cause[]", 2)
    results = ffi.new("int32_t[]", 2)
    assert lib.tc_cause_decode_bulk(b"\x80\x90", 2, bytes((2, 1)), 2, out, results) < 0
