"""CallChannel's one entry point, `_apply`, against a scripted card (the ChannelHost seam).

Registers reach a channel from the event pump and from the result of each mailbox command; the
channel applies them in the card's SEQ order whatever order they arrive in. Here the "card" is
a ChannelHost whose command() delivers events while the command is in flight, as the event
thread does in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from telecard import (
    CallChannel,
    CallSetup,
    Cause,
    CommandError,
    CommandResult,
    DeviceLostError,
    InvalidStateError,
    LinkTimeoutError,
    State,
)
from telecard.channel import _Update
from telecard.device import DEFAULT_SETUP
from telecard.registers import (
    BLOCK_LEN,
    CardState,
    CauseSource,
    ChannelBlock,
    Command,
    Direction,
    MailboxStatus,
)


def block(
    state: CardState,
    seq: int,
    direction: Direction = Direction.OUTGOING,
    cause: bytes = b"",
    source: CauseSource = CauseSource.NONE,
) -> ChannelBlock:
    raw = bytearray(BLOCK_LEN)
    raw[0], raw[1], raw[4:8] = state, direction, seq.to_bytes(4, "little")
    raw[8], raw[9], raw[0x0C : 0x0C + len(cause)] = len(cause), source, cause
    return ChannelBlock.parse(bytes(raw))


class Card:
    """A ChannelHost whose commands run `during` (delivering events) before answering."""

    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.offers: list[int] = []
        self.during: Callable[[], None] = lambda: None
        self.result = CommandResult(MailboxStatus.DONE, CardState.OUT_SETUP, 0)
        self.lost_reply = False  # the command acts, but its response never comes
        self.registers: ChannelBlock | None = None

    def check_usable(self) -> None:
        pass

    def check_open(self) -> None:
        pass

    def local_location(self, span: int) -> int:
        return 0

    def command(
        self,
        span: int,
        timeslot: int,
        cmd: Command,
        *,
        called: str,
        calling: str,
        cause: bytes,
        setup: CallSetup = DEFAULT_SETUP,
    ) -> CommandResult:
        self.sent.append(cmd)
        self.during()
        if self.lost_reply:
            raise LinkTimeoutError("the card did not answer")
        if self.result.status != MailboxStatus.DONE:  # as Device.command() reports a refusal
            raise CommandError("refused", None, self.result.status)
        return self.result

    def read_block(self, span: int, timeslot: int) -> ChannelBlock:
        assert self.registers is not None
        return self.registers

    def offer_incoming(self, channel: CallChannel, call_id: int) -> None:
        self.offers.append(call_id)

    def wait(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None
    ) -> bool:
        with cond:
            return cond.wait_for(predicate, timeout)


@pytest.fixture
def card() -> Card:
    return Card()


def test_a_card_lost_while_make_call_runs_is_device_lost(card: Card) -> None:
    """The card goes (closed, or its device lost) while MAKE_CALL is in flight: no call record
    opens, and start_call() says why instead of tripping over the missing record."""
    channel = CallChannel(card, 0, 1)
    card.during = lambda: channel._fail(lost=True)
    with pytest.raises(DeviceLostError):
        channel.start_call("3301")
    assert channel.state() is State.ERROR


def test_a_clearing_applied_while_reconciling_ends_the_reconciled_call(card: Card) -> None:
    """MAKE_CALL's response is lost; the registers read back show the call placed (seq 3),
    but the event pump applies its clearing (seq 4) before that read is looked at. The stale
    read is read again, and the call ends with its cause instead of staying CALL_OUTGOING."""
    channel = CallChannel(card, 0, 1)
    card.lost_reply = True
    placed = block(CardState.OUT_SETUP, 3)
    cleared = block(CardState.IDLE, 4, cause=b"\x84\x81", source=CauseSource.REMOTE)
    reads = [placed, cleared]

    def read_block(span: int, timeslot: int) -> ChannelBlock:
        got = reads.pop(0)
        if got is placed:  # the pump, meanwhile
            channel._apply(_Update(CardState.IDLE, 4, cleared, False))
        return got

    card.read_block = read_block  # type: ignore[method-assign]
    assert channel.start_call("9999") is State.IDLE
    assert (channel.cause(), channel.details.raw_cause) == (Cause.UNOBTAINABLE, 1)
    assert channel.details.direction == "outgoing" and not reads


def test_hang_up_while_make_call_is_in_flight_clears_the_call_being_placed(card: Card) -> None:
    """hang_up() from another thread (a signal handler's, say) while MAKE_CALL is on its way
    waits for the call's record to open, then clears it: nothing is left up on the card."""
    channel = CallChannel(card, 0, 1)
    hung: list[State] = []
    hanger = threading.Thread(target=lambda: hung.append(channel.hang_up()))
    cleared = block(CardState.IDLE, 3, cause=b"\x80\x90", source=CauseSource.LOCAL)

    def during() -> None:
        if card.sent[-1] is Command.MAKE_CALL:
            hanger.start()
            time.sleep(0.1)  # hang_up() arrives while the command is in flight
        else:
            channel._apply(_Update(CardState.IDLE, 3, cleared, False))

    card.during = during
    card.result = CommandResult(MailboxStatus.DONE, CardState.OUT_SETUP, 1)
    channel.start_call("3303")
    hanger.join(5)
    assert hung == [State.IDLE]
    assert card.sent == [Command.MAKE_CALL, Command.RELEASE]
    assert (channel.cause(), channel.details.raw_cause) == (Cause.NORMAL, 16)


def test_events_during_make_call_land_after_its_result(card: Card) -> None:
    """The network clears our new call (seq 9) before MAKE_CALL's response (seq 8) is back:
    the clearing ends our call, with its cause, instead of arriving to an empty channel."""
    channel = CallChannel(card, 0, 1)
    busy = block(CardState.IDLE, 9, cause=b"\x84\x91", source=CauseSource.REMOTE)
    card.during = lambda: channel._apply(_Update(CardState.IDLE, 9, busy, False))
    card.result = CommandResult(MailboxStatus.DONE, CardState.OUT_SETUP, 8)
    assert channel.start_call("3301") is State.IDLE
    assert (channel.cause(), channel.details.raw_cause) == (Cause.BUSY, 17)
    assert channel.details.direction == "outgoing"


def test_an_earlier_call_held_back_during_make_call_is_not_taken_for_ours(card: Card) -> None:
    """An incoming call that came and went (seq 5, 6) before MAKE_CALL acted (seq 7): applied
    first, in order, so it neither replaces our call nor takes its cause."""
    channel = CallChannel(card, 0, 1)
    offered = block(CardState.IN_PRESENT, 5, Direction.INCOMING)
    gone = block(CardState.IDLE, 6, Direction.INCOMING, b"\x80\x90", CauseSource.REMOTE)

    def deliver() -> None:
        channel._apply(_Update(CardState.IN_PRESENT, 5, offered, True))
        channel._apply(_Update(CardState.IDLE, 6, gone, False))
        channel._apply(_Update(CardState.OUT_PROCEEDING, 8, None, False))

    card.during = deliver
    card.result = CommandResult(MailboxStatus.DONE, CardState.OUT_SETUP, 7)
    assert channel.start_call("3302") is State.CALL_OUTGOING
    d = channel.details
    assert (d.direction, d.call_to, d.raw_cause) == ("outgoing", "3302", None)
    assert card.offers == [1]  # the incoming call was offered (it had ended by then)


def test_refused_make_call_releases_the_incoming_call_it_met(card: Card) -> None:
    """MAKE_CALL refused because a call arrived first: the held INCOMING is offered."""
    channel = CallChannel(card, 0, 1)
    offered = block(CardState.IN_PRESENT, 3, Direction.INCOMING)
    card.during = lambda: channel._apply(_Update(CardState.IN_PRESENT, 3, offered, True))
    card.result = CommandResult(MailboxStatus.WRONG_STATE, CardState.IN_PRESENT, 3)
    with pytest.raises(InvalidStateError):
        channel.start_call("3302")
    assert channel.state() is State.CALL_INCOMING
    assert channel.details.direction == "incoming"
    assert card.offers == [1]


def test_stale_registers_never_move_a_channel_back(card: Card) -> None:
    channel = CallChannel(card, 0, 1)
    channel._apply(_Update(CardState.IN_PRESENT, 10, block(CardState.IN_PRESENT, 10,
                                                           Direction.INCOMING), True))
    stale = block(CardState.IDLE, 9, Direction.INCOMING, b"\x80\x91", CauseSource.REMOTE)
    channel._apply(_Update(CardState.IDLE, 9, stale, False))
    assert channel.state() is State.CALL_INCOMING
    channel._apply(_Update(CardState.IDLE, 11, stale, False))
    assert channel.state() is State.IDLE and channel.details.raw_cause == 17


def test_seq_wraps(card: Card) -> None:
    channel = CallChannel(card, 0, 1)
    top = 0xFFFFFFFF
    channel._apply(_Update(CardState.IN_PRESENT, top, block(CardState.IN_PRESENT, top,
                                                            Direction.INCOMING), True))
    channel._apply(_Update(CardState.IN_ALERTING, 0, None, False))  # top + 1
    assert channel.state() is State.RING_INCOMING


def test_clearing_without_cause_is_31_and_with_malformed_cause_other(card: Card) -> None:
    channel = CallChannel(card, 0, 1)
    channel._apply(_Update(CardState.ACTIVE, 1, block(CardState.ACTIVE, 1), False))
    channel._apply(_Update(CardState.IDLE, 2, block(CardState.IDLE, 2,
                                                    source=CauseSource.REMOTE), False))
    assert (channel.cause(), channel.details.raw_cause, channel.details.cause_ie) == (
        Cause.NORMAL, 31, b"")
    channel._apply(_Update(CardState.ACTIVE, 3, block(CardState.ACTIVE, 3), False))
    channel._apply(_Update(CardState.IDLE, 4, block(CardState.IDLE, 4, cause=b"\x80",
                                                    source=CauseSource.REMOTE), False))
    assert (channel.cause(), channel.details.raw_cause) == (Cause.OTHER, None)
    assert channel.details.cause_ie == b"\x80"


def test_a_call_placed_through_a_lost_response_is_found_as_far_as_it_got(card: Card) -> None:
    """MAKE_CALL's response is lost; by the time the registers are read the far end has
    answered (seq 3). The call is ours, ANSWERED, and the older events change nothing."""
    channel = CallChannel(card, 0, 1)
    card.lost_reply = True
    card.registers = block(CardState.ACTIVE, 3)
    assert channel.start_call("3302") is State.ANSWERED
    assert channel.details.answered is not None
    for seq, state in ((1, CardState.OUT_SETUP), (2, CardState.OUT_ALERTING)):
        channel._apply(_Update(state, seq, None, False))
    assert channel.state() is State.ANSWERED


def test_a_lost_response_to_a_call_never_placed_raises(card: Card) -> None:
    channel = CallChannel(card, 0, 1)
    channel._apply(_Update(CardState.IDLE, 7, block(CardState.IDLE, 7), False))
    card.lost_reply = True
    card.registers = block(CardState.IDLE, 7)  # nothing changed on the card
    with pytest.raises(LinkTimeoutError):
        channel.start_call("3302")
    assert channel.state() is State.IDLE
