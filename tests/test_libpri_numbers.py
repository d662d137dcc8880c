"""Numbering plans, calling presentation/screening and bearer capability against libpri, both
ways: the card's SETUP as libpri decodes it, and libpri's SETUP as the card records or refuses it.

libpri reports a number's plan as type of number << 4 | numbering plan and the presentation as
presentation << 5 | screening, which are the card's register values (datasheet 2.4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libpri_process import build, needs_libpri
from test_libpri import Peer

from firmware_sim import regmap as rm
from firmware_sim.regmap import CMD_MAKE_CALL, MB_DONE, ST_IN_PRESENT
from firmware_sim.signalling import PLAIN_CALL, CallInfo

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
