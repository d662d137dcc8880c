"""Numbering plans, calling presentation/screening and bearer capability against libpri, both
ways: the card's SETUP as libpri decodes it, and libpri's SETUP as the card records or refuses it.

libpri reports a number's plan as type of number << 4 | numbering plan and the presentation as
presentation << 5 | screening, which are the card's register values (datasheet 2.4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from libpri_process import LibpriProcess, build, needs_libpri
from test_libpri import Peer
from test_libpri_api import expect

from firmware_sim import SimulatedCard
from firmware_sim import regmap as rm
from firmware_sim.regmap import CMD_MAKE_CALL, MB_DONE, ST_IN_PRESENT
from firmware_sim.signalling import PLAIN_CALL, CallInfo
from telecard import (
    Bearer,
    Card,
    Cause,
    Number,
    NumberingPlan,
    Presentation,
    Screening,
    State,
    TypeOfNumber,
)

pytestmark = needs_libpri

# libpri's values (libpri.h): transfer capabilities and user layer 1 G.711 A-law
SPEECH, DIGITAL, AUDIO_3K1, VIDEO = 0x00, 0x08, 0x10, 0x18
ALAW = 0x23
NO_LAYER1 = -1  # libpri's layer1 when the bearer capability has no octet 5
TRANSCAP = {rm.BEARER_SPEECH: SPEECH, rm.BEARER_AUDIO_3K1: AUDIO_3K1, rm.BEARER_DIGITAL: DIGITAL}
RESTRICTED_PASSED = rm.PRES_RESTRICTED << rm.PRES_SHIFT | rm.SCREEN_USER_PASSED
RESTRICTED_NETWORK = rm.PRES_RESTRICTED << rm.PRES_SHIFT | rm.SCREEN_NETWORK
NOT_AVAILABLE = rm.PRES_NOT_AVAILABLE << rm.PRES_SHIFT | rm.SCREEN_NETWORK


@pytest.fixture(scope="module")
def peer_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("libpri"))


@pytest.fixture
def peer(peer_exe: Path) -> Iterator[Peer]:
    p = Peer(peer_exe)
    try:
        p.expect("up")
        p.h.wait_link()
        yield p
    finally:
        p.close()


@pytest.mark.parametrize(
    ("calling", "info"),
    [
        ("2000", PLAIN_CALL),
        ("2079460000", CallInfo(0x11, 0x21, RESTRICTED_PASSED, rm.BEARER_AUDIO_3K1)),
        ("5551234", CallInfo(0x29, 0x49, RESTRICTED_NETWORK, rm.BEARER_DIGITAL)),
        ("", CallInfo(0x21, 0x00, rm.PRES_RESTRICTED << rm.PRES_SHIFT, rm.BEARER_SPEECH)),
    ],
)
def test_libpri_decodes_the_cards_setup(peer: Peer, calling: str, info: CallInfo) -> None:
    peer.send("route 100 reject 17")
    peer.expect("ok")
    assert peer.sig.command(3, CMD_MAKE_CALL, "100", calling, b"", info) == MB_DONE
    assert peer.expect("ring ") == f"ring 3 100 {calling or '-'}"
    layer1 = NO_LAYER1 if info.bearer == rm.BEARER_DIGITAL else ALAW
    assert peer.expect("ringinfo ").split()[2:] == [
        str(info.called_plan), str(info.calling_plan), str(info.calling_pres),
        str(TRANSCAP[info.bearer]), str(layer1),
    ]
    peer.h.run_until(lambda: peer.sink.cleared(0, 3) == 1)


@pytest.mark.parametrize(
    ("calling", "calling_plan", "pres", "transcap", "expected"),
    [
        ("4420794600", 0x11, RESTRICTED_NETWORK, AUDIO_3K1,
         CallInfo(0x21, 0x11, RESTRICTED_NETWORK, rm.BEARER_AUDIO_3K1)),
        ("5551234", 0x49, RESTRICTED_PASSED, SPEECH,
         CallInfo(0x21, 0x49, RESTRICTED_PASSED, rm.BEARER_SPEECH)),
        ("-", 0, 0, DIGITAL, CallInfo(0x21, 0, rm.PRES_NOT_AVAILABLE << rm.PRES_SHIFT,
                                      rm.BEARER_DIGITAL)),
    ],
)
def test_card_records_libpris_setup(peer: Peer, calling: str, calling_plan: int, pres: int,
                                    transcap: int, expected: CallInfo) -> None:
    peer.send(f"callx 5 3000 {0x21} {calling} {calling_plan} {pres} {transcap}")
    peer.h.run_until(lambda: peer.sink.chan(0, 5).state == ST_IN_PRESENT)
    ch = peer.sink.chan(0, 5)
    assert (ch.called, ch.calling) == ("3000", "" if calling == "-" else calling)
    assert ch.info == expected


@pytest.mark.parametrize(("transcap", "cause"), [(VIDEO, 65), (DIGITAL, 88)])
def test_card_refuses_a_bearer_it_does_not_take(peer: Peer, transcap: int, cause: int) -> None:
    peer.sig.accept_bearers(1 << rm.BEARER_SPEECH | 1 << rm.BEARER_AUDIO_3K1)
    peer.send(f"callx 6 3000 0 4000 0 0 {transcap}")
    assert peer.expect("hangup 6") == f"hangup 6 {cause}"
    assert peer.sink.chan(0, 6).events == []  # never offered to the host
    peer.send(f"callx 7 3000 0 4000 0 0 {AUDIO_3K1}")
    peer.h.run_until(lambda: peer.sink.chan(0, 7).state == ST_IN_PRESENT)


def test_whole_stack_against_libpri(peer_exe: Path) -> None:
    """telecard API -> C driver -> simulated card <-> libpri, a call each way."""
    lib = LibpriProcess(peer_exe)
    try:
        with SimulatedCard(dchannels={0: lib.card_sock}) as sim, Card.open(
            sim.device_path, bearers={Bearer.SPEECH, Bearer.AUDIO_3K1, Bearer.DIGITAL}
        ) as card:
            expect(lib, "up")
            wait_for(lambda: card.spans[0].dchannel_up)
            lib.send("route 442079460000 reject 17")
            expect(lib, "ok")
            withheld = Number("5551234", TypeOfNumber.SUBSCRIBER, NumberingPlan.E164,
                              Presentation.RESTRICTED, Screening.USER_PASSED)
            with card.free_channel() as channel:
                state = channel.call("sip:+44-20-7946-0000@gw;user=phone", withheld,
                                     bearer=Bearer.DIGITAL)
                assert state is State.IDLE and channel.cause() is Cause.BUSY
            assert expect(lib, "ringinfo").split()[2:] == [
                str(0x11), str(0x41), str(RESTRICTED_PASSED), str(DIGITAL), str(NO_LAYER1)]
            lib.send(f"callx 9 3000 {0x41} 4420794600 {0x11} {NOT_AVAILABLE} {AUDIO_3K1}")
            channel = card.wait_for_incoming_call(5)
            assert channel is not None
            with channel:
                details = channel.details
                assert details.called_number == Number("3000", TypeOfNumber.SUBSCRIBER,
                                                       NumberingPlan.E164)
                assert details.calling_number == Number(
                    "4420794600", TypeOfNumber.INTERNATIONAL, NumberingPlan.E164,
                    Presentation.NOT_AVAILABLE, Screening.NETWORK)
                assert details.bearer is Bearer.AUDIO_3K1
    finally:
        lib.close()
