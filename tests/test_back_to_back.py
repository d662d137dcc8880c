"""Two simulated cards cabled back to back (one TE, one NT), each driven through the API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from firmware_sim import SimulatedCard
from firmware_sim.isdn import back_to_back
from telecard import CallChannel, Card, Cause, Role, State


@pytest.fixture
def cards() -> Iterator[tuple[Card, Card]]:
    te_end, nt_end = back_to_back()
    with (
        SimulatedCard(role="TE", dchannels={0: te_end}) as te_sim,
        SimulatedCard(role="NT", dchannels={0: nt_end}) as nt_sim,
        Card.open(te_sim.device_path) as te,
        Card.open(nt_sim.device_path) as nt,
    ):
        deadline = time.monotonic() + 5
        while not (te.spans[0].dchannel_up and nt.spans[0].dchannel_up):
            assert time.monotonic() < deadline, "the cable's D-channel never came up"
            time.sleep(0.01)
        assert (te.spans[0].role, nt.spans[0].role) == (Role.TE, Role.NT)
        yield te, nt


def answer_next_call(card: Card, found: list[CallChannel]) -> None:
    channel = card.wait_for_incoming_call(seconds_timeout=5)
    assert channel is not None
    found.append(channel)
    channel.ring()
    channel.answer()


@pytest.mark.parametrize("direction", ["te-to-nt", "nt-to-te"])
def test_call_placed_on_one_card_arrives_on_the_other(
    cards: tuple[Card, Card], direction: str
) -> None:
    caller, callee = cards if direction == "te-to-nt" else cards[::-1]
    found: list[CallChannel] = []
    answerer = threading.Thread(target=answer_next_call, args=(callee, found))
    answerer.start()
    outgoing = caller.channel(0, 3)
    assert outgoing.call("7001", "7002", seconds_timeout=10) is State.ANSWERED
    answerer.join(10)
    (incoming,) = found
    assert incoming.number == 3  # the caller's exclusive channel choice
    assert (incoming.details.call_to, incoming.details.call_from) == ("7001", "7002")
    incoming.hang_up()
    assert outgoing.wait_for_idle(seconds_timeout=5) is State.IDLE
    assert outgoing.cause() is Cause.NORMAL
    assert outgoing.details.cause_source == "remote" and outgoing.details.raw_cause == 16


def test_reject_on_one_card_is_the_cause_on_the_other(cards: tuple[Card, Card]) -> None:
    te, nt = cards

    def reject() -> None:
        channel = nt.wait_for_incoming_call(seconds_timeout=5)
        assert channel is not None
        channel.reject(Cause.CONGESTION)

    rejecter = threading.Thread(target=reject)
    rejecter.start()
    channel = te.channel(0, 9)
    assert channel.call("7100", seconds_timeout=10) is State.IDLE
    rejecter.join(10)
    assert channel.cause() is Cause.CONGESTION
    assert channel.details.raw_cause == 42
