"""The whole stack against libpri: telecard API → C driver → simulated card ⇄ libpri (network).

The card's span 0 D-channel is handed to tests/peers/libpri_peer.c over a SOCK_SEQPACKET
socketpair, as `SimulatedCard(dchannels=...)` hands it to any external LAPD peer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from libpri_process import LibpriProcess, build, needs_libpri

from firmware_sim import SimulatedCard
from telecard import Card, Cause, State

pytestmark = needs_libpri


@pytest.fixture(scope="module")
def peer_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("libpri"))


@pytest.fixture
def lib(peer_exe: Path) -> Iterator[LibpriProcess]:
    process = LibpriProcess(peer_exe)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def card(lib: LibpriProcess) -> Iterator[Card]:
    # The card owns the socket from here on and closes it with itself.
    with SimulatedCard(dchannels={0: lib.card_sock}) as sim, Card.open(sim.device_path) as c:
        expect(lib, "up")
        deadline = time.monotonic() + 5
        while not c.spans[0].dchannel_up:
            assert time.monotonic() < deadline, "the D-channel to libpri never came up"
            time.sleep(0.01)
        yield c


def expect(lib: LibpriProcess, prefix: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while (line := lib.seen(prefix)) is None:
        assert time.monotonic() < deadline, f"libpri never said {prefix!r}: {lib.lines}"
        time.sleep(0.005)
    return line


@pytest.mark.parametrize(
    ("cause", "expected"),
    [(17, Cause.BUSY), (1, Cause.UNOBTAINABLE), (34, Cause.NOCHANNELS), (21, Cause.REJECTED)],
)
def test_libpri_clears_the_cards_call(
    lib: LibpriProcess, card: Card, cause: int, expected: Cause
) -> None:
    lib.send(f"route 3301 reject {cause}")
    expect(lib, "ok")
    channel = card.channel(0, 1)
    assert channel.call("3301", "2000", seconds_timeout=10) is State.IDLE
    assert channel.cause() is expected
    assert channel.details.raw_cause == cause
    assert channel.details.cause_location == 1  # libpri sends its causes with location 1
    assert channel.details.cause_source == "remote"
    assert expect(lib, "ring 1") == "ring 1 3301 2000"


def test_libpri_answers_and_the_card_hangs_up(lib: LibpriProcess, card: Card) -> None:
    lib.send("route 3302 answer")
    expect(lib, "ok")
    channel = card.channel(0, 2)
    assert channel.call("3302", seconds_timeout=10) is State.ANSWERED
    channel.hang_up()
    assert expect(lib, "hangup_req 2") == "hangup_req 2 16"
    assert channel.state() is State.IDLE and channel.cause() is Cause.NORMAL


def test_libpri_call_answered_then_cleared_by_libpri(lib: LibpriProcess, card: Card) -> None:
    lib.send("call 5 4000 5000")
    channel = card.wait_for_incoming_call(seconds_timeout=5)
    assert channel is not None and channel.number == 5
    assert (channel.details.call_to, channel.details.call_from) == ("4000", "5000")
    channel.ring()
    expect(lib, "ringing 5")
    assert channel.answer() is State.ANSWERED
    expect(lib, "answer 5")
    lib.send("hangup 5 16")
    assert channel.wait_for_idle(seconds_timeout=5) is State.IDLE
    assert channel.cause() is Cause.NORMAL and channel.details.raw_cause == 16


def test_libpri_call_rejected_by_the_card(lib: LibpriProcess, card: Card) -> None:
    lib.send("call 7 4001 5001")
    channel = card.wait_for_incoming_call(seconds_timeout=5)
    assert channel is not None
    channel.reject(Cause.BUSY)
    assert expect(lib, "hangup_req 7") == "hangup_req 7 17"  # a DISCONNECT, after CALL PROCEEDING
    assert channel.wait_for_idle(seconds_timeout=5) is State.IDLE
    assert channel.details.raw_cause == 17 and channel.details.cause_source == "local"
