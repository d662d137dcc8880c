"""Issue 10 points 1-3: addresses (digits, tel:, sip:), type of number and numbering plan,
calling presentation and screening, bearer capability, in both directions and at every layer."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free, subprocess_env, wait_for
from isdn_harness import Harness

import telecard
from firmware_sim import SimulatedCard, q931
from firmware_sim import regmap as rm
from firmware_sim.network import Busy
from firmware_sim.pcap import PcapWriter
from firmware_sim.regmap import CMD_MAKE_CALL, LINE_E1, LINE_T1, MB_DONE, ST_IDLE
from firmware_sim.signalling import PLAIN_CALL, CallInfo
from telecard import (
    Bearer,
    CallSetup,
    Card,
    Cause,
    Number,
    NumberingPlan,
    Presentation,
    Screening,
    State,
    TypeOfNumber,
)
from telecard.address import from_registers, parse_number
from telecard.cli import ExitStatus

INTL = (TypeOfNumber.INTERNATIONAL, NumberingPlan.E164)
UNKNOWN = (TypeOfNumber.UNKNOWN, NumberingPlan.UNKNOWN)
RESTRICTED_NETWORK = rm.PRES_RESTRICTED << rm.PRES_SHIFT | rm.SCREEN_NETWORK
NOT_AVAILABLE = rm.PRES_NOT_AVAILABLE << rm.PRES_SHIFT


# -- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "digits", "kind"),
    [
        ("3301", "3301", UNKNOWN),
        ("*31#", "*31#", UNKNOWN),
        ("tel:+44-20-7946-0000", "442079460000", INTL),
        ("TEL:+1(212)555.1212;ext=7", "12125551212", INTL),
        ("tel:7042;phone-context=example.com", "7042", UNKNOWN),
        ("tel:%2331", "#31", UNKNOWN),
        ("sip:3301@127.0.0.1:5060;user=phone", "3301", UNKNOWN),  # UAS's own example
        ("sip:+1-212-555-1212:secret@gw.example.com;user=phone", "12125551212", INTL),
        ("sip:+44.20;isub=12@gw;transport=tcp;USER=PHONE?subject=x", "4420", INTL),
        ("sips:3301@gw.example.com", "3301", UNKNOWN),
        ("sip:+4420794600@gw.example.com", "4420794600", INTL),
    ],
)
def test_address_forms(address: str, digits: str, kind: tuple[TypeOfNumber, NumberingPlan]) -> None:
    number = parse_number(address, "call_to")
    assert (number.digits, number.type, number.plan) == (digits, *kind)
    assert number.presentation is Presentation.ALLOWED
    assert number.screening is Screening.USER_NOT_SCREENED
    assert str(number) == ("+" if kind == INTL else "") + digits


@pytest.mark.parametrize(
    "address",
    ["", "+3301", "33 01", "tel:", "tel:+", "tel:33a", "tel:++33", "sip:alice@example.com",
     "sip:33.01@example.com", "sip:example.com", "sip:@example.com", "sip:+@gw;user=phone",
     "sips:3301", "mailto:3301@example.com", "http://3301", "1" * 33, "tel:+" + "1" * 33,
     "\u0663\u0663"],
)
def test_bad_addresses_are_value_errors(address: str) -> None:
    with pytest.raises(ValueError, match="call_to"):
        parse_number(address, "call_to")


def test_a_str_subclass_of_digits_is_digits() -> None:
    """A str subclass (a StrEnum member, numpy.str_) holding digits is taken as the digits."""

    class Digits(str):
        pass

    number = parse_number(Digits("3301"), "call_to")
    assert number == Number("3301") and type(number.digits) is str
    assert parse_number(Digits(""), "call_from", allow_empty=True) == Number("")
    assert parse_number(Digits("tel:+44-3301"), "call_to") == Number("443301", *INTL)


def test_number_validates_and_converts() -> None:
    number = Number("5551234", 2, 9, 1, 3)  # type: ignore[arg-type]
    assert (number.type, number.plan) == (TypeOfNumber.NATIONAL, NumberingPlan.PRIVATE)
    assert (number.presentation, number.screening) == (Presentation.RESTRICTED, Screening.NETWORK)
    assert (number.plan_register, number.pres_register) == (0x29, RESTRICTED_NETWORK)
    plain = parse_number("1", "x")
    assert Number("1") == plain and hash(Number("1")) == hash(plain)
    for bad in ({"digits": "+1"}, {"digits": "1" * 33}, {"digits": 1}, {"type": 5},
                {"plan": 2}, {"presentation": 3}, {"screening": True}, {"type": "NATIONAL"}):
        with pytest.raises(ValueError):
            Number(**{"digits": "1", **bad})  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        number.digits = "2"  # type: ignore[misc]


def test_registers_decode_to_numbers() -> None:
    calling = from_registers("77", 0x21, RESTRICTED_NETWORK | rm.BEARER_DIGITAL << rm.BEARER_SHIFT)
    assert calling == Number("77", TypeOfNumber.NATIONAL, NumberingPlan.E164,
                             Presentation.RESTRICTED, Screening.NETWORK)
    # values the datasheet does not list (a newer card's) read as unknown / allowed
    odd = from_registers("1", 0x5F, 3 << rm.PRES_SHIFT)
    assert (odd.type, odd.plan, odd.presentation) == (*UNKNOWN, Presentation.ALLOWED)


# -- Q.931 codec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bearer", "line", "octets"),
    [
        (rm.BEARER_SPEECH, LINE_E1, b"\x80\x90\xa3"),
        (rm.BEARER_SPEECH, LINE_T1, b"\x80\x90\xa2"),
        (rm.BEARER_AUDIO_3K1, LINE_E1, b"\x90\x90\xa3"),
        (rm.BEARER_AUDIO_3K1, LINE_T1, b"\x90\x90\xa2"),
        (rm.BEARER_DIGITAL, LINE_E1, b"\x88\x90"),
    ],
)
def test_bearer_capability_octets(bearer: int, line: int, octets: bytes) -> None:
    assert q931.bearer_capability(line, bearer) == octets
    assert q931.parse_bearer(octets) == bearer


@pytest.mark.parametrize(
    "octets",
    [b"\x89\x90", b"\x98\x90", b"\x91\x90\xa3", b"\xa0\x90\xa3", b"\x80\xa0\xa3", b"\x88\x10\x81",
     b"\x80\x93"],
)
def test_bearers_the_card_does_not_implement(octets: bytes) -> None:
    assert q931.parse_bearer(octets) is None


def test_party_number_octets() -> None:
    assert q931.number("44", 0x11) == b"\x9144"
    assert q931.number("", 0x21, RESTRICTED_NETWORK) == b"\x21\xa3"
    assert q931.number_plan(b"\x21\xa3") == (0x21, RESTRICTED_NETWORK)
    assert q931.number_plan(b"\x9144") == (0x11, None)


# -- the simulated card through the API ----------------------------------------------------


def test_uas_example_verbatim(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    state = channel.call('sip:3301@127.0.0.1:5060;user=phone')
    assert state is State.IDLE and channel.cause() is Cause.BUSY
    result = sim.network.received[-1].result
    # no Calling party number IE: the network side records it as not available
    assert (result.called, result.info) == ("3301", CallInfo(calling_pres=NOT_AVAILABLE))
    assert channel.details.called_number == Number("3301")
    assert channel.details.bearer is Bearer.SPEECH


def test_outgoing_numbers_presentation_and_bearer(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    withheld = Number("2079460000", TypeOfNumber.NATIONAL, NumberingPlan.E164,
                      Presentation.RESTRICTED, Screening.USER_PASSED)
    assert channel.call("tel:+44-3301", withheld, bearer=Bearer.AUDIO_3K1) is State.IDLE
    result = sim.network.received[-1].result
    assert (result.called, result.calling) == ("443301", "2079460000")
    assert result.info == CallInfo(0x11, 0x21, rm.PRES_RESTRICTED << rm.PRES_SHIFT | 1,
                                   rm.BEARER_AUDIO_3K1)
    details = channel.details
    assert (details.call_to, details.call_from) == ("443301", "2079460000")
    assert details.called_number == Number("443301", *INTL)
    assert details.calling_number == withheld and details.bearer is Bearer.AUDIO_3K1


def test_withheld_call_without_digits_and_digital_bearer(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    hidden = Number("", presentation=Presentation.RESTRICTED)
    assert channel.call("sips:3301@gw", hidden, bearer=Bearer.DIGITAL) is State.IDLE
    result = sim.network.received[-1].result
    assert result.calling == "" and result.info == CallInfo(
        0, 0, rm.PRES_RESTRICTED << rm.PRES_SHIFT, rm.BEARER_DIGITAL)


def test_bad_arguments_never_reach_the_card(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    for call_to, call_from, bearer in [
        (Number("3301", presentation=Presentation.RESTRICTED), "", Bearer.SPEECH),
        (Number(""), "", Bearer.SPEECH),
        ("3301", "sip:bob@example.com", Bearer.SPEECH),
        ("3301", "", 3),
        ("3301", "", "speech"),
        ("3301", "", True),
    ]:
        with pytest.raises(ValueError):
            channel.call(call_to, call_from, bearer=bearer)  # type: ignore[arg-type]
    assert channel.state() is State.IDLE and sim.network.received == []
    with pytest.raises(ValueError):
        Card.open(sim.device_path, bearers=["speech"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Card.open(sim.device_path, bearers=Bearer.SPEECH)  # type: ignore[arg-type]


def test_the_card_checks_make_call_fields(tc: Card) -> None:
    dev = tc._dev
    # a type of number (5) and a plan (2) the datasheet does not list: the card refuses them
    for setup in (
        CallSetup(called_plan=0x51),
        CallSetup(calling_plan=0x02),
        CallSetup(calling_pres=0x60),
    ):
        with pytest.raises(telecard.CommandError) as info:
            dev.command(0, 1, telecard.Command.MAKE_CALL, called="3301", setup=setup)
        assert info.value.status == telecard.MailboxStatus.BAD_ARGUMENT
    # bits no register has: refused before the driver
    for setup in (CallSetup(called_plan=0x80), CallSetup(calling_pres=0x04), CallSetup(bearer=3)):
        with pytest.raises(ValueError):
            dev.command(0, 1, telecard.Command.MAKE_CALL, called="3301", setup=setup)


def test_accept_bearers_register(sim: SimulatedCard) -> None:
    with Card.open(sim.device_path) as card:
        read = card._dev.read(rm.REG_ACCEPT_BEARERS, 4)
        assert int.from_bytes(read, "little") == rm.ACCEPT_BEARERS_BOOT
        with pytest.raises(telecard.TelecardError):
            card._dev.write(rm.REG_ACCEPT_BEARERS, (8).to_bytes(4, "little"))
    with Card.open(sim.device_path, bearers={Bearer.DIGITAL}) as card:
        assert int.from_bytes(card._dev.read(rm.REG_ACCEPT_BEARERS, 4), "little") == 4
    # an iterator is read once: Card.open checks it, and the card gets what it named
    with Card.open(sim.device_path, bearers=iter([Bearer.SPEECH, Bearer.DIGITAL])) as card:
        assert int.from_bytes(card._dev.read(rm.REG_ACCEPT_BEARERS, 4), "little") == 5


def test_accepted_bearers_survive_a_card_reset(sim: SimulatedCard) -> None:
    with Card.open(sim.device_path, bearers={Bearer.SPEECH, Bearer.DIGITAL}) as card:
        boot_id = card._dev.info.boot_id
        sim.firmware.reset()  # back to the boot value, 0x03
        wait_for(lambda: card._dev.info.boot_id != boot_id and card.spans[0].dchannel_up)
        wait_for(lambda: card._dev.read(rm.REG_ACCEPT_BEARERS, 4) == b"\x05\0\0\0")
        sim.network.place_call("3000", "1", info=CallInfo(bearer=rm.BEARER_DIGITAL))
        with incoming(card) as channel:
            assert channel.details.bearer is Bearer.DIGITAL


def incoming(card: Card) -> telecard.CallChannel:
    channel = card.wait_for_incoming_call(5)
    assert channel is not None, "no incoming call"
    return channel


def test_incoming_withheld_number_is_delivered_marked(sim: SimulatedCard, tc: Card) -> None:
    info = CallInfo(0x21, 0x11, RESTRICTED_NETWORK, rm.BEARER_AUDIO_3K1)
    sim.network.place_call("3000", "4420794600", info=info)
    with incoming(tc) as channel:
        details = channel.details
        assert details.call_from == "4420794600"
        assert details.calling_number == Number("4420794600", *INTL, Presentation.RESTRICTED,
                                                Screening.NETWORK)
        assert details.called_number == Number("3000", TypeOfNumber.NATIONAL, NumberingPlan.E164)
        assert details.bearer is Bearer.AUDIO_3K1


def test_incoming_without_calling_number_is_not_available(sim: SimulatedCard, tc: Card) -> None:
    sim.network.place_call("3000")
    with incoming(tc) as channel:
        assert channel.details.calling_number == Number("", presentation=Presentation.NOT_AVAILABLE)
        assert channel.details.called_number == Number("3000")
        assert channel.details.bearer is Bearer.SPEECH


def test_unaccepted_bearer_refused_88_and_never_offered(sim: SimulatedCard, tc: Card) -> None:
    digital = CallInfo(bearer=rm.BEARER_DIGITAL)
    call = sim.network.place_call("3000", "1", info=digital)
    wait_for(lambda: call.result.cleared)
    assert (call.result.cause, call.result.cleared_by) == (88, "card")
    assert tc.wait_for_incoming_call(0.05) is None


def test_accepted_digital_call_is_offered(sim: SimulatedCard) -> None:
    with Card.open(sim.device_path, bearers={Bearer.DIGITAL}) as card:
        sim.network.place_call("3000", "1", info=CallInfo(bearer=rm.BEARER_DIGITAL))
        with incoming(card) as channel:
            assert channel.details.bearer is Bearer.DIGITAL
        voice = sim.network.place_call("3000", "1")
        wait_for(lambda: voice.result.cleared)
        assert voice.result.cause == 88


def test_nt_card_refuses_unaccepted_bearer_with_58() -> None:
    with SimulatedCard(role="NT") as sim, Card.open(sim.device_path):
        call = sim.network.place_call("3000", "1", info=CallInfo(bearer=rm.BEARER_DIGITAL))
        wait_for(lambda: call.result.cleared)
        assert call.result.cause == 58


# -- the command line ----------------------------------------------------------------------


def test_cli_call_with_sip_address_presentation_and_bearer() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telecard.cli", "call", "--json", "-q",
         "sip:3301@127.0.0.1:5060;user=phone", "--from", "tel:+44-20-7946-0000",
         "--presentation", "restricted", "--screening", "network", "--bearer", "audio-3k1"],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )
    assert result.returncode == ExitStatus.BUSY, result.stderr
    record = json.loads(result.stdout)
    assert record["called_number"] == {"digits": "3301", "type": "UNKNOWN", "plan": "UNKNOWN",
                                       "presentation": "ALLOWED",
                                       "screening": "USER_NOT_SCREENED"}
    assert record["calling_number"] == {"digits": "442079460000", "type": "INTERNATIONAL",
                                        "plan": "E164", "presentation": "RESTRICTED",
                                        "screening": "NETWORK"}
    assert record["bearer"] == "AUDIO_3K1"


def test_cli_rejects_a_bad_presentation_and_address() -> None:
    for args in (["3301", "--presentation", "hidden"], ["sip:bob@x", "--bearer", "speech"]):
        result = subprocess.run(
            [sys.executable, "-m", "telecard.cli", "call", *args],
            capture_output=True, text=True, env=subprocess_env(), timeout=60,
        )
        assert result.returncode == ExitStatus.USAGE, result.stderr


# -- tshark --------------------------------------------------------------------------------

TSHARK = shutil.which("tshark")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if TSHARK is None:
        pytest.skip("tshark is not installed")
    path = tmp_path_factory.mktemp("numbers") / "numbers.pcapng"
    pcap = PcapWriter(path)
    h = Harness(pcap=pcap)
    try:
        h.wait_link()
        h.network.route("100", Busy())
        sig = h.spans[0]
        for ts, (calling, info) in enumerate(OUTGOING, start=1):
            assert sig.command(ts, CMD_MAKE_CALL, "100", calling, b"", info) == MB_DONE
        h.run_until(lambda: all(h.sink.cleared(0, ts) for ts in range(1, len(OUTGOING) + 1)))
        sig.accept_bearers(0b011)
        calls = [h.network.place_call("7000", calling, timeslot=20 + i, info=info)
                 for i, (calling, info) in enumerate(INCOMING)]
        h.run_until(lambda: all(h.sink.chan(0, 20 + i).state != ST_IDLE or c.result.cleared
                                for i, c in enumerate(calls)))
    finally:
        h.close()
        pcap.close()
    yield path


OUTGOING = [
    ("", PLAIN_CALL),
    ("2079460000", CallInfo(0x11, 0x21, rm.PRES_RESTRICTED << rm.PRES_SHIFT | 1,
                            rm.BEARER_AUDIO_3K1)),
    ("", CallInfo(0x41, 0, rm.PRES_RESTRICTED << rm.PRES_SHIFT, rm.BEARER_DIGITAL)),
]
INCOMING = [
    ("5551234", CallInfo(0x29, 0x11, RESTRICTED_NETWORK, rm.BEARER_SPEECH)),
    ("5551235", CallInfo(0, 0, rm.PRES_NOT_AVAILABLE << rm.PRES_SHIFT | 3, rm.BEARER_DIGITAL)),
]


def tshark_fields(path: Path, *names: str, mt: int = q931.SETUP) -> list[list[str]]:
    """The fields of every message of type `mt` (every occurrence, comma-separated)."""
    cmd = [TSHARK or "tshark", "-r", str(path), "-Y", f"q931.message_type == {mt}", "-T", "fields",
           "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for n in names:
        cmd += ["-e", n]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines()]


def test_tshark_decodes_the_setups(capture: Path) -> None:
    rows = tshark_fields(capture, "q931.information_transfer_capability", "q931.transfer_mode",
                         "q931.information_transfer_rate", "q931.uil1", "q931.number_type",
                         "q931.numbering_plan", "q931.presentation_ind", "q931.screening_ind",
                         "q931.calling_party_number.digits", "q931.called_party_number.digits")
    # capability, mode, rate, layer 1 (G.711 A-law), types and plans (calling number first,
    # when sent), presentation, screening, digits: OUTGOING then INCOMING, as Q.931 codes them
    assert rows == [
        ["0x00", "0x00", "0x10", "0x03", "0x00", "0x00", "", "", "", "100"],
        ["0x10", "0x00", "0x10", "0x03", "0x02,0x01", "0x01,0x01", "0x01", "0x01", "2079460000",
         "100"],
        ["0x08", "0x00", "0x10", "", "0x00,0x04", "0x00,0x01", "0x01", "0x00", "", "100"],
        ["0x00", "0x00", "0x10", "0x03", "0x01,0x02", "0x01,0x09", "0x01", "0x03", "5551234",
         "7000"],
        ["0x08", "0x00", "0x10", "", "0x00,0x00", "0x00,0x00", "0x02", "0x03", "5551235", "7000"],
    ]
    # the digital call the card does not accept: RELEASE COMPLETE, incompatible destination
    refusals = tshark_fields(capture, "q931.cause_value", mt=0x5A)
    assert ["88"] in refusals


def test_tshark_finds_nothing_wrong(capture: Path) -> None:
    out = subprocess.run([TSHARK or "tshark", "-r", str(capture), "-q", "-z", "expert"],
                         check=True, capture_output=True, text=True).stdout
    assert "Malformed" not in out and "Warning" not in out and "Error" not in out, out
