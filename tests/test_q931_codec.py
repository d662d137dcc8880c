"""Q.931 codec: encodings against hand-assembled octets, decoding of malformed input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim import q931
from firmware_sim.regmap import LINE_E1, LINE_T1


def test_setup_round_trip() -> None:
    body = (bytes((q931.IE_SENDING_COMPLETE,))
            + q931.ie(q931.IE_BEARER_CAPABILITY, q931.bearer_capability(LINE_E1))
            + q931.ie(q931.IE_CHANNEL_ID, q931.channel_id(5))
            + q931.ie(q931.IE_CALLING_NUMBER, q931.number("5551234"))
            + q931.ie(q931.IE_CALLED_NUMBER, q931.number("100")))
    data = q931.header(q931.SETUP, 0x1234, False) + body
    assert data[:5] == bytes((0x08, 0x02, 0x12, 0x34, 0x05))
    assert q931.ie(q931.IE_CHANNEL_ID, q931.channel_id(5)) == bytes((0x18, 3, 0xA9, 0x83, 0x85))
    msg = q931.decode(data)
    assert msg is not None
    assert (msg.mt, msg.cr, msg.from_destination) == (q931.SETUP, 0x1234, False)
    assert msg.sending_complete
    assert q931.number_digits(msg.ies[q931.IE_CALLED_NUMBER]) == "100"
    assert q931.number_digits(msg.ies[q931.IE_CALLING_NUMBER]) == "5551234"
    assert q931.parse_channel_id(msg.ies[q931.IE_CHANNEL_ID]) == (True, 5)
    assert msg.ies[q931.IE_BEARER_CAPABILITY] == bytes((0x80, 0x90, 0xA3))
    assert not msg.unknown and not msg.invalid and not msg.required_unknown


def test_t1_bearer_is_mu_law_and_flag_bit() -> None:
    assert q931.bearer_capability(LINE_T1)[2] == 0xA2
    assert q931.header(q931.CONNECT, 1, True)[2] == 0x80


def test_cause_body_layout() -> None:
    assert q931.cause_body(17, 4) == bytes((0x84, 0x91))
    assert q931.cause_body(127, 10, b"\x01", 3) == bytes((0xEA, 0xFF, 0x01))
    assert q931.timer_cause("T303", 0) == bytes((0x80, 0xE6)) + b"303"
    f = q931.parse_cause(bytes((0x02, 0x83, 0x91)))  # octet 3a present (recommendation 3)
    assert f == q931.CauseFields(0, 2, 17, 3, b"")
    assert q931.parse_cause(b"") is None
    assert q931.parse_cause(b"\x84") == q931.CauseFields(0, 4, None, None, b"")


def test_truncated_and_invalid_cause_flagged() -> None:
    for body in (b"\x84", b"", b"\x04\x91", b"\x84\x11"):
        msg = q931.decode(q931.header(q931.DISCONNECT, 1, True) + q931.ie(q931.IE_CAUSE, body))
        assert msg is not None and q931.IE_CAUSE in msg.invalid, body
        assert msg.ies[q931.IE_CAUSE] == body


def test_ignored_inputs() -> None:
    assert q931.decode(b"") is None
    assert q931.decode(b"\x09\x02\x00\x01\x05") is None  # wrong protocol discriminator
    assert q931.decode(b"\x08\x01\x01\x05") is None  # 1-octet call reference on a PRI
    assert q931.decode(b"\x08\x02\x00") is None  # too short
    assert q931.decode(b"\x08\x02\x00\x01\x85") is None  # reserved message-type bit


def test_unknown_ies_classified() -> None:
    data = (q931.header(q931.ALERTING, 7, True) + q931.ie(0x05, b"\x01")  # comprehension req.
            + q931.ie(0x7F, b"\x00")  # unknown, comprehension not required
            + q931.ie(0x7D, b"\x91\x81")  # high-layer compatibility: tolerated
            + bytes((0x96,)) + q931.ie(0x08, b"\x01"))  # locking shift to codeset 6
    msg = q931.decode(data)
    assert msg is not None
    assert msg.required_unknown == [0x05]
    assert msg.unknown == [0x7F]
    assert q931.IE_CAUSE not in msg.ies  # the codeset-6 IE is not a cause


def test_truncated_ie_flagged() -> None:
    msg = q931.decode(q931.header(q931.SETUP, 1, False) + bytes((0x04, 5, 0x80)))
    assert msg is not None and msg.invalid == [0x04]


def test_channel_id_parsing() -> None:
    assert q931.parse_channel_id(bytes((0xA1, 0x83, 0x81))) == (False, 1)
    assert q931.parse_channel_id(bytes((0xA3,))) == (False, None)  # any channel
    assert q931.parse_channel_id(bytes((0x81, 0x83, 0x81))) is None  # basic-rate form
    assert q931.parse_channel_id(bytes((0xA9, 0x93, 0x81))) is None  # channel map
    assert q931.parse_channel_id(bytes((0xA9, 0x83))) is None


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_decoder_never_raises(data: bytes) -> None:
    msg = q931.decode(data)
    assert msg is None or isinstance(msg, q931.Message)


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 0x7F), st.binary(max_size=60))
def test_decoder_never_raises_on_valid_header(mt: int, tail: bytes) -> None:
    msg = q931.decode(q931.header(mt, 5, False) + tail)
    assert msg is not None and msg.mt == mt
