"""Channel ownership (RESERVE / UNRESERVE), the host watchdog, and clearing messages without a
usable cause (datasheet 2.4-2.6): in call control over the in-memory D-channel, and on the
simulated card through its registers."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest
from isdn_harness import Harness

from firmware_sim import SimulatedCard, q931
from firmware_sim import regmap as rm
from firmware_sim.network import Answer, CallHandle, CallResult, NoResponse
from tests.linkproto import Link
from tests.test_sim_hostlink import mbox_write

T44 = q931.cause_body(q931.CAUSE_CHANNEL_NOT_AVAILABLE, q931.LOC_USER)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.wait_link()
    yield harness
    harness.close()


def command(h: Harness, ts: int, cmd: int, called: str = "") -> int:
    return h.spans[0].command(ts, cmd, called, "", b"")


def ended(h: Harness, call: CallHandle) -> CallResult:
    """The network's view of a call once it has cleared (the harness loop runs here)."""
    h.run_until(lambda: call.result.cleared)
    return call.result


def incoming_events(h: Harness, ts: int) -> int:
    return sum(1 for e, _ in h.sink.chan(0, ts).events if e == rm.EV_INCOMING)


# --- reservation in call control ---------------------------------------------------------


def test_exclusive_setup_on_a_reserved_channel_is_refused_44(h: Harness) -> None:
    assert command(h, 7, rm.CMD_RESERVE) == rm.MB_DONE
    assert command(h, 7, rm.CMD_RESERVE) == rm.MB_DONE  # idempotent
    result = ended(h, h.network.place_call("2000", timeslot=7))
    assert (result.cause, result.cleared_by, result.answered) == (44, "card", False)
    assert incoming_events(h, 7) == 0
    assert command(h, 7, rm.CMD_UNRESERVE) == rm.MB_DONE
    again = h.network.place_call("2001", timeslot=7)  # offered once the host lets go
    h.run_until(lambda: h.sink.chan(0, 7).state == rm.ST_IN_PRESENT)
    assert again.result.timeslot == 7 and not again.result.cleared


def test_preferred_setup_on_a_reserved_channel_gets_the_highest_free_one(h: Harness) -> None:
    for ts in (31, 7):
        assert command(h, ts, rm.CMD_RESERVE) == rm.MB_DONE
    h.network.place_call("2000", timeslot=30)  # occupies 30: the hunt must skip it too
    h.run_until(lambda: h.sink.chan(0, 30).state == rm.ST_IN_PRESENT)
    call = h.network.place_call("2001", timeslot=7, exclusive=False)
    h.run_until(lambda: h.sink.chan(0, 29).state == rm.ST_IN_PRESENT)
    h.run(0.02)
    assert call.result.timeslot == 29 and not call.result.cleared  # the network moved it
    assert incoming_events(h, 7) == incoming_events(h, 31) == 0
    assert command(h, 29, rm.CMD_ANSWER) == rm.MB_DONE
    h.run_until(lambda: call.result.answered)


def test_preferred_setup_with_every_free_channel_reserved_is_refused_34(h: Harness) -> None:
    for ts in h.spans[0].cc.bearers:
        assert command(h, ts, rm.CMD_RESERVE) == rm.MB_DONE
    result = ended(h, h.network.place_call("2000", timeslot=3, exclusive=False))
    assert (result.cause, result.cleared_by) == (34, "card")
    assert not any(e == rm.EV_INCOMING for _, _, e, _ in h.sink.events)


def test_reserve_is_valid_during_a_call_and_changes_nothing_in_it(h: Harness) -> None:
    h.network.route("100", Answer())
    assert command(h, 4, rm.CMD_MAKE_CALL, "100") == rm.MB_DONE
    h.run_until(lambda: h.sink.chan(0, 4).state == rm.ST_ACTIVE)
    events = len(h.sink.events)
    assert command(h, 4, rm.CMD_RESERVE) == rm.MB_DONE
    assert command(h, 4, rm.CMD_UNRESERVE) == rm.MB_DONE
    assert command(h, 4, rm.CMD_UNRESERVE) == rm.MB_DONE
    assert command(h, 16, rm.CMD_RESERVE) == rm.MB_ERR_ARGUMENT  # the D-channel timeslot
    h.run(0.02)
    assert len(h.sink.events) == events and h.sink.chan(0, 4).state == rm.ST_ACTIVE


@pytest.mark.parametrize("exclusive", [True, False])
def test_glare_on_a_reserved_channel(h: Harness, exclusive: bool) -> None:
    """Q.931 5.2.3.1: the network's SETUP wins the channel, so the card's call ends with 44;
    the network's call is then treated as any call naming a reserved channel."""
    h.network.route("100", Answer())
    assert command(h, 5, rm.CMD_RESERVE) == rm.MB_DONE
    theirs = h.network.place_call("4000", timeslot=5, exclusive=exclusive)
    assert command(h, 5, rm.CMD_MAKE_CALL, "100") == rm.MB_DONE  # both SETUPs cross
    h.run_until(lambda: h.sink.cleared(0, 5) == 1)
    assert h.sink.clearings[0] == (0, 5, T44, rm.CAUSE_SRC_LOCAL)
    if exclusive:
        result = ended(h, theirs)
        assert (result.cause, result.cleared_by) == (44, "card")
    else:
        h.run_until(lambda: h.sink.chan(0, 31).state == rm.ST_IN_PRESENT)
        h.run(0.02)
        assert theirs.result.timeslot == 31 and not theirs.result.cleared
    h.run(0.05)
    assert incoming_events(h, 5) == 0
    assert not h.network.received  # the card's SETUP was refused (44), never offered
    assert not any(c.orphan for c in h.spans[0].cc.calls.values())  # its RC 44 came


def test_incoming_calls_hunt_down_from_the_top(h: Harness) -> None:
    h.network.route("100", NoResponse())
    assert command(h, 31, rm.CMD_MAKE_CALL, "100") == rm.MB_DONE
    cc = h.spans[0].cc
    assert cc.free_timeslot() == 30
    cc.reserved.add(30)
    assert cc.free_timeslot() == 29


# --- clearing messages without a usable cause (Q.931 5.8.6.1) ----------------------------


def spy_sent_by_card(h: Harness) -> list[q931.Message]:
    got: list[q931.Message] = []
    lapd = h.network.entity(0).lapd
    original = lapd.on_data

    def spy(payload: bytes) -> None:
        msg = q931.decode(payload)
        if msg is not None:
            got.append(msg)
        original(payload)

    lapd.on_data = spy
    return got


@pytest.mark.parametrize("mt", [q931.DISCONNECT, q931.RELEASE, q931.RELEASE_COMPLETE])
@pytest.mark.parametrize("cause_ie", [b"", bytes((q931.IE_CAUSE, 0))], ids=["missing", "empty"])
def test_far_end_clearing_without_cause(h: Harness, mt: int, cause_ie: bytes) -> None:
    sent = spy_sent_by_card(h)
    h.network.route("100", Answer())
    assert command(h, 1, rm.CMD_MAKE_CALL, "100") == rm.MB_DONE
    h.run_until(lambda: h.sink.chan(0, 1).state == rm.ST_ACTIVE)
    cr = h.sink.chan(0, 1).call_ref
    h.network.inject(0, q931.header(mt, cr, True) + cause_ie)
    h.run_until(lambda: h.sink.cleared(0, 1) == 1)
    assert h.sink.clearings == [(0, 1, b"", rm.CAUSE_SRC_REMOTE)]
    answer = {q931.DISCONNECT: q931.RELEASE, q931.RELEASE: q931.RELEASE_COMPLETE}.get(mt)
    if answer is not None:
        replies = [m for m in sent if m.mt == answer]
        assert len(replies) == 1
        assert q931.parse_cause(replies[0].ies[q931.IE_CAUSE]) == q931.CauseFields(
            0, q931.LOC_USER, 96, None, bytes((q931.IE_CAUSE,)))


def test_release_answering_our_disconnect_needs_no_cause(h: Harness) -> None:
    sent = spy_sent_by_card(h)
    h.network.route("100", Answer())
    assert command(h, 1, rm.CMD_MAKE_CALL, "100") == rm.MB_DONE
    h.run_until(lambda: h.sink.chan(0, 1).state == rm.ST_ACTIVE)
    ours = q931.cause_body(16, q931.LOC_USER)
    assert h.spans[0].command(1, rm.CMD_RELEASE, "", "", ours) == rm.MB_DONE
    h.run_until(lambda: h.sink.cleared(0, 1) == 1)
    assert h.sink.clearings == [(0, 1, ours, rm.CAUSE_SRC_LOCAL)]
    assert [m.ies.get(q931.IE_CAUSE) for m in sent if m.mt == q931.RELEASE_COMPLETE] == [None]


# --- the card's registers over the host link ---------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatedCard]:
    with SimulatedCard() as card:
        card.network.route("100", Answer())
        yield card


def open_link(sim: SimulatedCard) -> Link:
    """A handshaken link to a card whose D-channel is up, with its event ring drained."""
    lk = Link(sim.device_path)
    assert lk.hello()[0] == rm.S_OK
    deadline = time.monotonic() + 5
    while lk.u8(rm.span_reg(0, rm.SPAN_DCHANNEL)) != rm.DCHAN_UP:
        assert time.monotonic() < deadline, "D-channel never came up"
        lk.recv_frame(0.02)
    lk.drain()
    return lk


@pytest.fixture
def link(sim: SimulatedCard) -> Iterator[Link]:
    with open_link(sim) as lk:
        yield lk


def owner_and_seq(link: Link, ts: int) -> tuple[int, int]:
    block = link.read(rm.chan_reg(0, ts, 0), 0x0C)
    return block[rm.CHAN_OWNER], struct.unpack_from("<I", block, rm.CHAN_SEQ)[0]


def wait_events(link: Link, want: int, count: int = 1) -> list[tuple[int, int, int, int, int]]:
    """Drain the ring until `count` events of code `want` have arrived; all events drained."""
    got: list[tuple[int, int, int, int, int]] = []
    deadline = time.monotonic() + 5
    while sum(1 for e in got if e[2] == want) < count:
        assert time.monotonic() < deadline, f"event {want} never came: {got}"
        link.recv_frame(0.02)
        got += link.drain()
    return got


def test_reserve_through_the_mailbox(link: Link) -> None:
    assert owner_and_seq(link, 3) == (rm.OWNER_NONE, 0)
    assert mbox_write(link, 3, rm.CMD_RESERVE) == rm.S_OK
    assert link.read(rm.mbox_reg(0, 3, 0), 2) == bytes((rm.CMD_NONE, rm.MB_DONE))
    assert owner_and_seq(link, 3) == (rm.OWNER_HOST, 1)
    assert mbox_write(link, 3, rm.CMD_RESERVE) == rm.S_OK  # idempotent: no change, no bump
    assert owner_and_seq(link, 3) == (rm.OWNER_HOST, 1)
    assert mbox_write(link, 16, rm.CMD_RESERVE) == rm.S_OK
    assert link.u8(rm.mbox_reg(0, 16, rm.MBOX_STATUS)) == rm.MB_ERR_ARGUMENT
    assert mbox_write(link, 3, rm.CMD_UNRESERVE) == rm.S_OK
    assert owner_and_seq(link, 3) == (rm.OWNER_NONE, 2)
    assert link.drain() == [  # COMMAND_DONE only, carrying the SEQ after the change
        (0, 3, rm.EV_COMMAND_DONE, rm.MB_DONE, 1),
        (0, 3, rm.EV_COMMAND_DONE, rm.MB_DONE, 1),
        (0, 16, rm.EV_COMMAND_DONE, rm.MB_ERR_ARGUMENT, 0),
        (0, 3, rm.EV_COMMAND_DONE, rm.MB_DONE, 2),
    ]


def test_hello_releases_reservations_but_keeps_calls(sim: SimulatedCard, link: Link) -> None:
    assert mbox_write(link, 2, rm.CMD_MAKE_CALL, called=b"100") == rm.S_OK
    for ts in (2, 9):
        assert mbox_write(link, ts, rm.CMD_RESERVE) == rm.S_OK
    wait_events(link, rm.EV_STATE, 4)  # OUT_SETUP, PROCEEDING, ALERTING, ACTIVE
    assert link.u8(rm.chan_reg(0, 2, rm.CHAN_STATE)) == rm.ST_ACTIVE
    seq = owner_and_seq(link, 2)[1]
    assert link.hello()[0] == rm.S_OK
    assert owner_and_seq(link, 2) == (rm.OWNER_NONE, seq + 1)
    assert owner_and_seq(link, 9) == (rm.OWNER_NONE, 2)
    assert link.u8(rm.chan_reg(0, 2, rm.CHAN_STATE)) == rm.ST_ACTIVE
    assert not sim.network.received[0].result.cleared
    call = sim.network.place_call("2000", timeslot=9)  # offered again after the HELLO
    wait_events(link, rm.EV_INCOMING)
    assert call.result.timeslot == 9 and not call.result.cleared


def test_watchdog_register_limits(link: Link) -> None:
    assert link.u32(rm.REG_HOST_WATCHDOG) == 0
    assert link.write_u32(rm.REG_HOST_WATCHDOG, rm.HOST_WATCHDOG_MAX + 1) == rm.S_BAD_VALUE
    assert link.u32(rm.REG_HOST_WATCHDOG) == 0
    assert link.write(rm.REG_HOST_WATCHDOG + 2, b"\x10\x00") == rm.S_BAD_VALUE  # 0x100000
    assert link.write_u32(rm.REG_HOST_WATCHDOG, rm.HOST_WATCHDOG_MAX) == rm.S_OK
    assert link.u32(rm.REG_HOST_WATCHDOG) == rm.HOST_WATCHDOG_MAX
    assert link.write(rm.REG_HOST_WATCHDOG + 1, b"\x00\x00\x00") == rm.S_OK  # byte-wise
    assert link.u32(rm.REG_HOST_WATCHDOG) == rm.HOST_WATCHDOG_MAX & 0xFF
    assert link.write_u32(rm.REG_HOST_WATCHDOG, 0) == rm.S_OK


def test_watchdog_fed_by_requests_does_not_fire(link: Link) -> None:
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_WATCHDOG) == rm.S_OK
    assert link.write_u32(rm.REG_HOST_WATCHDOG, 150) == rm.S_OK
    end = time.monotonic() + 0.6  # four grace periods, fed every 30 ms
    while time.monotonic() < end:
        assert link.u32(rm.REG_INT_STATUS) & rm.INT_WATCHDOG == 0
        link.recv_frame(0.03)
    assert link.u32(rm.REG_HOST_WATCHDOG) == 150
    assert rm.EV_WATCHDOG not in [e[2] for e in link.drain()]
    # Silent from now on: the watchdog fires (an IRQ frame carries its bit)
    started = time.monotonic()
    irq = link.recv_frame(2.0)
    assert irq is not None and irq[0] == rm.T_IRQ
    assert struct.unpack_from("<I", irq, 2)[0] == rm.INT_WATCHDOG
    assert 0.1 <= time.monotonic() - started < 1.0


def test_watchdog_expiry_clears_an_answered_call_with_41(sim: SimulatedCard, link: Link) -> None:
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_WATCHDOG) == rm.S_OK
    assert mbox_write(link, 6, rm.CMD_MAKE_CALL, called=b"100") == rm.S_OK
    assert mbox_write(link, 6, rm.CMD_RESERVE) == rm.S_OK
    assert mbox_write(link, 20, rm.CMD_RESERVE) == rm.S_OK
    wait_events(link, rm.EV_STATE, 4)
    network_side = sim.network.wait_received(1)[0]
    assert network_side.result.answered
    assert link.write_u32(rm.REG_HOST_WATCHDOG, 100) == rm.S_OK
    result = network_side.wait(5)  # the host says nothing more until the network saw it
    assert (result.cleared_by, result.cause, result.location, result.coding_standard) == (
        "card", 41, q931.LOC_USER, 0)
    irq = link.recv_frame(1.0)
    assert irq is not None and irq[0] == rm.T_IRQ
    assert struct.unpack_from("<I", irq, 2)[0] == rm.INT_WATCHDOG
    events = wait_events(link, rm.EV_CLEARED)
    codes = [(e[0], e[1], e[2], e[3]) for e in events]
    watchdog = (0xFF, 0xFF, rm.EV_WATCHDOG, 0)
    assert codes.count(watchdog) == 1
    assert codes.index(watchdog) < codes.index((0, 6, rm.EV_STATE, rm.ST_CLEARING))
    assert link.u32(rm.REG_HOST_WATCHDOG) == 100  # still armed (1.4)
    assert link.write_u32(rm.REG_HOST_WATCHDOG, 0) == rm.S_OK  # the checks below are not timed
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_WATCHDOG
    block = link.read(rm.chan_reg(0, 6, 0), 0x0E)
    assert block[rm.CHAN_STATE] == rm.ST_IDLE
    assert block[rm.CHAN_OWNER] == rm.OWNER_NONE
    assert (block[rm.CHAN_CAUSE_LEN], block[rm.CHAN_CAUSE_SOURCE]) == (2, rm.CAUSE_SRC_LOCAL)
    assert block[rm.CHAN_CAUSE : rm.CHAN_CAUSE + 2] == q931.cause_body(41, q931.LOC_USER)
    assert owner_and_seq(link, 20)[0] == rm.OWNER_NONE
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_WATCHDOG) == rm.S_OK  # W1C
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_WATCHDOG == 0


def test_a_request_after_the_expiry_is_cleared_by_the_next_one(
    sim: SimulatedCard, link: Link
) -> None:
    """Datasheet 2.6 (1.4): the watchdog stays armed after it expired. A request that reaches
    the card afterwards (one a gone host sent before it went) starts the count again, and the
    next expiry clears the call it placed and frees the channel it reserved."""
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_WATCHDOG) == rm.S_OK
    # A second is far longer than the late requests below take, one after the other.
    assert link.write_u32(rm.REG_HOST_WATCHDOG, 1000) == rm.S_OK
    irq = link.recv_frame(3.0)  # silent: it expires with nothing to clear
    assert irq is not None and irq[0] == rm.T_IRQ
    assert struct.unpack_from("<I", irq, 2)[0] == rm.INT_WATCHDOG
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_WATCHDOG) == rm.S_OK  # W1C
    assert mbox_write(link, 6, rm.CMD_RESERVE) == rm.S_OK  # the late requests
    assert mbox_write(link, 6, rm.CMD_MAKE_CALL, called=b"100") == rm.S_OK
    network_side = sim.network.wait_received(1)[0]
    result = network_side.wait(5)  # silent again: the next expiry
    assert (result.cleared_by, result.cause) == ("card", 41)
    events = wait_events(link, rm.EV_CLEARED)
    assert [e[2] for e in events].count(rm.EV_WATCHDOG) == 2  # both expiries
    assert owner_and_seq(link, 6)[0] == rm.OWNER_NONE
    assert link.u32(rm.REG_HOST_WATCHDOG) == 1000


def test_watchdog_location_on_the_network_side() -> None:
    with SimulatedCard(role="NT") as sim, open_link(sim) as link:
        call = sim.network.place_call("2000", timeslot=3)
        wait_events(link, rm.EV_INCOMING)
        assert link.write_u32(rm.REG_HOST_WATCHDOG, 50) == rm.S_OK
        result = call.wait(5)
        assert (result.cleared_by, result.cause, result.location) == (
            "card", 41, q931.LOC_PRIVATE_LOCAL)


def test_reboot_disarms_the_watchdog_and_frees_channels(sim: SimulatedCard, link: Link) -> None:
    assert mbox_write(link, 4, rm.CMD_RESERVE) == rm.S_OK
    assert link.write_u32(rm.REG_HOST_WATCHDOG, 100) == rm.S_OK
    assert link.write_u32(rm.REG_CARD_CONTROL, rm.CTRL_SOFT_RESET) == rm.S_OK
    assert link.hello()[0] == rm.S_OK
    assert link.u32(rm.REG_HOST_WATCHDOG) == 0
    assert owner_and_seq(link, 4) == (rm.OWNER_NONE, 0)
    link.recv_frame(0.3)  # three periods of the old setting: its timer went with the reboot
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_WATCHDOG == 0
