"""The simulated card, driven over its real pty with a small host-side link implementation."""

import errno
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim import SimulatedCard
from firmware_sim import regmap as rm
from firmware_sim.card import hook_signalling
from firmware_sim.firmware import call_on_loop
from tests.linkproto import Link, frame

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def card() -> Iterator[SimulatedCard]:
    """A card whose channels the tests drive through the register hooks (no Q.931)."""
    with SimulatedCard(signalling_factory=hook_signalling) as c:
        yield c


@pytest.fixture
def link(card: SimulatedCard) -> Iterator[Link]:
    with Link(card.device_path) as lk:
        assert lk.hello()[0] == rm.S_OK
        yield lk


def counters(link: Link) -> tuple[int, int, int, int]:
    """(frames, crc errors, discarded bytes, duplicates)"""
    return struct.unpack("<IIII", link.read(rm.REG_LINK_RX_FRAMES, 16))


def mbox_write(
    link: Link,
    ts: int,
    cmd: int,
    *,
    called: bytes = b"",
    calling: bytes = b"",
    cause: bytes = b"",
    span: int = 0,
) -> int:
    """One WRITE covering a whole mailbox, as a driver would issue a command."""
    block = mailbox(cmd, called=called, calling=calling, cause=cause)
    return link.write(rm.mbox_reg(span, ts, 0), block.ljust(rm.MBOX_STRIDE, b"\0"))


def chan(link: Link, ts: int, span: int = 0) -> bytes:
    return link.read(rm.chan_reg(span, ts, 0), rm.CHAN_STRIDE)


# --- handshake ---------------------------------------------------------------------------


def test_hello_reports_identity(card: SimulatedCard) -> None:
    with Link(card.device_path) as link:
        status, version, magic, boot_id = link.hello()
        assert (status, version, magic) == (rm.S_OK, rm.PROTO_VERSION, rm.MAGIC_VALUE)
        assert boot_id == link.u32(rm.REG_BOOT_ID) == card.firmware.boot_id != 0
        assert link.read(rm.REG_MAGIC, 4) == b"TCRD"


def test_requests_before_hello_get_not_ready(card: SimulatedCard) -> None:
    with Link(card.device_path) as link:
        assert link.read_status(rm.REG_MAGIC, 4) == (rm.S_NOT_READY, b"")
        assert link.write_u32(rm.REG_INT_MASK, 1) == rm.S_NOT_READY
        assert link.hello(0x0200)[0] == rm.S_BAD_VERSION
        assert link.read_status(rm.REG_MAGIC, 4)[0] == rm.S_NOT_READY
        assert link.hello(0x0107)[0] == rm.S_OK  # minor versions may differ
        assert link.u32(rm.REG_INT_MASK) == 0
        assert link.u32(rm.REG_MAGIC) == rm.MAGIC_VALUE


def test_bad_requests_get_their_status(link: Link) -> None:
    tag = link.next_tag()
    resp = link.request(struct.pack("<BBH", 0x33, tag, 0))
    assert resp == bytes((0x33 | rm.T_RESPONSE, tag, rm.S_UNKNOWN_TYPE))
    assert link.read_status(rm.REG_MAGIC, 0)[0] == rm.S_BAD_LENGTH
    assert link.read_status(rm.REG_MAGIC, rm.MAX_DATA + 1)[0] == rm.S_BAD_LENGTH
    assert link.read_status(rm.REG_SPACE_SIZE - 2, 4)[0] == rm.S_BAD_ADDRESS
    assert link.read_status(0xFFFFFFFF, 1)[0] == rm.S_BAD_ADDRESS
    assert link.write(rm.REG_SPACE_SIZE, b"\0") == rm.S_BAD_ADDRESS
    assert link.write(rm.REG_INT_MASK, b"") == rm.S_BAD_LENGTH
    assert link.write(rm.MBOX_BASE, bytes(rm.MAX_DATA + 1)) == rm.S_BAD_LENGTH
    short_read = link.request(struct.pack("<BBI", rm.T_READ, link.next_tag(), 0))
    assert short_read[2] == rm.S_BAD_LENGTH
    hello_tag = link.next_tag()
    assert link.request(bytes((rm.T_HELLO, hello_tag, 1)))[2] == rm.S_BAD_LENGTH


# --- registers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "channels", "dslot"), [("E1", 30, 16), ("T1", 23, 24)])
def test_identity_and_span_registers(line: str, channels: int, dslot: int) -> None:
    with SimulatedCard(3, line, role="NT") as card, Link(card.device_path) as link:
        link.hello()
        ident = link.read(0, 0x30)
        assert struct.unpack_from("<IHHHB", ident) == (
            rm.MAGIC_VALUE,
            0x0100,
            0x0100,
            rm.PROTO_VERSION,
            3,
        )
        assert ident[0x0B] == 0  # reserved
        assert ident[rm.REG_EVENT_POST : rm.REG_EVENT_POST + 4] == bytes(4)  # off after boot
        assert link.u32(rm.RING_SIZE) == rm.RING_ENTRIES
        for span in range(3):
            regs = link.read(rm.span_reg(span, 0), rm.SPAN_STRIDE)
            assert regs[rm.SPAN_LINE_TYPE] == (rm.LINE_E1 if line == "E1" else rm.LINE_T1)
            assert regs[rm.SPAN_ROLE] == rm.ROLE_NT
            assert regs[rm.SPAN_ALARMS] == 0
            assert regs[rm.SPAN_DCHANNEL] == rm.DCHAN_UP
            assert regs[rm.SPAN_NUM_CHANNELS] == channels
            assert regs[rm.SPAN_DCHANNEL_TIMESLOT] == dslot
        assert link.read(rm.span_reg(3, 0), rm.SPAN_STRIDE * 13) == bytes(rm.SPAN_STRIDE * 13)


def test_read_only_writes_are_refused_whole(link: Link) -> None:
    before = link.read(0, 0x30)
    assert link.write_u32(rm.REG_MAGIC, 0) == rm.S_READ_ONLY
    assert link.write_u32(rm.REG_LINK_RX_FRAMES, 0) == rm.S_READ_ONLY
    assert link.write(rm.span_reg(0, rm.SPAN_ALARMS), b"\x0f") == rm.S_READ_ONLY
    assert link.write_u32(rm.RING_HEAD, 5) == rm.S_READ_ONLY
    assert link.write(rm.RING_ENTRIES_BASE, bytes(8)) == rm.S_READ_ONLY
    assert link.write(rm.chan_reg(0, 1, 0), b"\x07") == rm.S_READ_ONLY
    assert link.write(rm.mbox_reg(0, 1, rm.MBOX_STATUS), b"\x02") == rm.S_READ_ONLY
    # INT_MASK and EVENT_POST are RW but LINK_RX_FRAMES is not: nothing changes.
    assert link.write(rm.REG_INT_MASK, b"\xff" * 16) == rm.S_READ_ONLY
    after = link.read(0, 0x30)
    assert after[:0x20] == before[:0x20]
    assert link.u32(rm.REG_INT_MASK) == link.u32(rm.REG_EVENT_POST) == 0


def test_int_status_w1c_and_mask(link: Link) -> None:
    assert link.u32(rm.REG_INT_STATUS) == rm.INT_RESET | rm.INT_EVENT
    assert link.write_u32(rm.REG_INT_STATUS, 0) == rm.S_OK
    assert link.u32(rm.REG_INT_STATUS) == rm.INT_RESET | rm.INT_EVENT
    # EVENT is a level: writing 1 does not clear it.
    assert link.write_u32(rm.REG_INT_STATUS, 0xFFFFFFFF) == rm.S_OK
    assert link.u32(rm.REG_INT_STATUS) == rm.INT_EVENT
    link.drain()
    assert link.u32(rm.REG_INT_STATUS) == 0
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_OVERFLOW) == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == rm.INT_OVERFLOW
    assert link.write(rm.REG_INT_MASK + 1, b"\x01") == rm.S_OK  # byte-wise RW
    assert link.u32(rm.REG_INT_MASK) == rm.INT_OVERFLOW | 0x100
    assert link.u32(rm.REG_CARD_CONTROL) == 0
    boot_id = link.u32(rm.REG_BOOT_ID)
    assert link.write_u32(rm.REG_CARD_CONTROL, 0xFFFFFFFE) == rm.S_OK  # no SOFT_RESET bit
    assert link.u32(rm.REG_CARD_CONTROL) == 0
    assert link.u32(rm.REG_BOOT_ID) == boot_id


def test_ring_tail_validation(card: SimulatedCard, link: Link) -> None:
    head, tail = struct.unpack("<II", link.read(rm.RING_HEAD, 8))
    assert (head, tail) == (2, 0)  # EV_RESET and the span's D-channel coming up
    assert link.write_u32(rm.RING_TAIL, 3) == rm.S_BAD_VALUE
    assert link.write_u32(rm.RING_TAIL, 0xFFFFFFFF) == rm.S_BAD_VALUE
    assert link.write_u32(rm.RING_TAIL, 1) == rm.S_OK
    assert link.write_u32(rm.RING_TAIL, 0) == rm.S_BAD_VALUE  # backwards
    assert link.write(rm.RING_TAIL, b"\x02") == rm.S_OK  # low byte only
    assert link.u32(rm.RING_TAIL) == 2
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_EVENT == 0
    # A refused TAIL write refuses the whole transfer, W1C bits included.
    card.firmware.push_event(0, 1, rm.EV_STATE, 1)
    data = struct.pack("<II", 9, 1)
    assert link.write(rm.RING_TAIL, data) == rm.S_BAD_VALUE
    assert link.u32(rm.RING_TAIL) == 2


def test_bulk_reads_and_mailbox_area_writes(link: Link) -> None:
    image = link.read(0, rm.MAX_DATA)
    assert len(image) == rm.MAX_DATA and image[:4] == b"TCRD"
    assert link.read(rm.REG_SPACE_SIZE - rm.MAX_DATA, rm.MAX_DATA) == bytes(rm.MAX_DATA)
    # A write over many mailboxes with CMD 0 stores parameters and leaves STATUS alone.
    data = bytes((i * 7 + 3) & 0xFF or 1 for i in range(rm.MAX_DATA))
    data = bytearray(data)
    for block in range(0, rm.MAX_DATA, rm.MBOX_STRIDE):
        data[block + rm.MBOX_CMD] = 0
    base = rm.mbox_reg(1, 0, 0)
    assert link.write(base, bytes(data)) == rm.S_OK
    back = link.read(base, rm.MAX_DATA)
    for block in range(0, rm.MAX_DATA, rm.MBOX_STRIDE):
        assert back[block + rm.MBOX_STATUS] == 0
        for off in (rm.MBOX_CAUSE_LEN, rm.MBOX_CALLED_LEN, rm.MBOX_CALLING):
            assert back[block + off] == data[block + off]
        assert back[block + 0x70 : block + 0x80] == bytes(16)  # reserved stays 0


# --- event ring --------------------------------------------------------------------------


def test_event_ring_fill_drain_and_overflow(card: SimulatedCard, link: Link) -> None:
    assert link.drain() == [(0xFF, 0xFF, rm.EV_RESET, 0, 0), (0, 0, rm.EV_SPAN, rm.DCHAN_UP, 1)]
    for i in range(rm.RING_ENTRIES + 5):
        card.firmware.push_event(0, 1 + i % 30, rm.EV_STATE, i & 0xFF)
    assert link.u32(rm.RING_HEAD) == 2 + rm.RING_ENTRIES
    assert link.u32(rm.RING_OVERFLOW) == 1
    assert link.u32(rm.RING_DROPPED) == 5
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_OVERFLOW
    events = link.drain()  # wraps: two reads
    assert len(events) == rm.RING_ENTRIES
    assert [e[3] for e in events] == [i & 0xFF for i in range(rm.RING_ENTRIES)]
    assert [e[4] for e in events[:2]] == [2, 3]  # seq of a raw event: RING_HEAD at write
    assert link.write_u32(rm.RING_OVERFLOW, 1) == rm.S_OK
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_OVERFLOW | rm.INT_RESET) == rm.S_OK
    assert link.u32(rm.RING_OVERFLOW) == 0
    assert link.u32(rm.REG_INT_STATUS) == 0
    assert link.u32(rm.RING_DROPPED) == 5
    card.firmware.push_event(0, 2, rm.EV_STATE, 7)
    assert link.drain() == [(0, 2, rm.EV_STATE, 7, 2 + rm.RING_ENTRIES)]


def test_set_channel_and_set_span_hooks(card: SimulatedCard, link: Link) -> None:
    link.drain()
    card.firmware.set_channel(
        0,
        5,
        state=rm.ST_IN_PRESENT,
        direction=rm.DIR_INCOMING,
        call_ref=0x8001,
        called="1234",
        calling="5678",
        event=rm.EV_INCOMING,
    )
    card.firmware.set_span(0, alarms=rm.ALARM_AIS, dchannel_up=False)
    regs = chan(link, 5)
    assert regs[rm.CHAN_STATE] == rm.ST_IN_PRESENT
    assert regs[rm.CHAN_DIRECTION] == rm.DIR_INCOMING
    assert struct.unpack_from("<HI", regs, rm.CHAN_CALL_REF) == (0x8001, 1)
    assert regs[rm.CHAN_CALLED : rm.CHAN_CALLED + regs[rm.CHAN_CALLED_LEN]] == b"1234"
    assert regs[rm.CHAN_CALLING : rm.CHAN_CALLING + regs[rm.CHAN_CALLING_LEN]] == b"5678"
    assert link.read(rm.span_reg(0, rm.SPAN_ALARMS), 2) == bytes((rm.ALARM_AIS, rm.DCHAN_DOWN))
    assert link.drain() == [
        (0, 5, rm.EV_INCOMING, rm.ST_IN_PRESENT, 1),
        (0, 0, rm.EV_SPAN, rm.DCHAN_DOWN, 3),
    ]
    with pytest.raises(ValueError):
        card.firmware.set_channel(0, 16, state=rm.ST_ACTIVE)  # the D-channel timeslot
    with pytest.raises(ValueError):
        card.firmware.set_channel(1, 1, state=rm.ST_ACTIVE)  # no such span


# --- mailboxes ---------------------------------------------------------------------------


def test_mailbox_call_lifecycle(card: SimulatedCard, link: Link) -> None:
    link.drain()
    assert mbox_write(link, 3, rm.CMD_MAKE_CALL, called=b"5551234", calling=b"*99#") == rm.S_OK
    # Status, CMD reset and event are all in place before the WRITE response.
    mbox = link.read(rm.mbox_reg(0, 3, 0), 2)
    assert mbox == bytes((rm.CMD_NONE, rm.MB_DONE))
    regs = chan(link, 3)
    assert regs[rm.CHAN_STATE] == rm.ST_OUT_SETUP
    assert regs[rm.CHAN_DIRECTION] == rm.DIR_OUTGOING
    assert regs[rm.CHAN_CALLED : rm.CHAN_CALLED + 7] == b"5551234"
    assert link.drain() == [
        (0, 3, rm.EV_STATE, rm.ST_OUT_SETUP, 1),
        (0, 3, rm.EV_COMMAND_DONE, rm.MB_DONE, 1),
    ]
    cause = bytes((0x80, 0x90, 0x01))
    assert mbox_write(link, 3, rm.CMD_RELEASE, cause=cause) == rm.S_OK
    regs = chan(link, 3)
    assert regs[rm.CHAN_STATE] == rm.ST_IDLE
    assert regs[rm.CHAN_CAUSE_LEN] == 3 and regs[rm.CHAN_CAUSE : rm.CHAN_CAUSE + 3] == cause
    assert regs[rm.CHAN_CAUSE_SOURCE] == rm.CAUSE_SRC_LOCAL
    assert link.drain() == [
        (0, 3, rm.EV_CLEARED, rm.ST_IDLE, 2),
        (0, 3, rm.EV_COMMAND_DONE, rm.MB_DONE, 2),
    ]
    # The next call on the channel starts with no cause recorded.
    card.firmware.set_channel(0, 3, state=rm.ST_IN_PRESENT, event=rm.EV_INCOMING)
    regs = chan(link, 3)
    assert regs[rm.CHAN_CAUSE_LEN] == 0 and regs[rm.CHAN_CAUSE_SOURCE] == rm.CAUSE_SRC_NONE
    assert mbox_write(link, 3, rm.CMD_ALERT) == rm.S_OK
    assert mbox_write(link, 3, rm.CMD_ANSWER) == rm.S_OK
    assert chan(link, 3)[rm.CHAN_STATE] == rm.ST_CONNECTING
    commands = card.firmware.signalling[0].commands  # type: ignore[attr-defined]
    assert [c.cmd for c in commands] == [
        rm.CMD_MAKE_CALL,
        rm.CMD_RELEASE,
        rm.CMD_ALERT,
        rm.CMD_ANSWER,
    ]
    assert commands[0].called == "5551234" and commands[0].calling == "*99#"
    assert commands[1].cause == cause


@pytest.mark.parametrize(
    ("ts", "cmd", "kwargs", "status"),
    [
        (1, 99, {}, rm.MB_ERR_UNKNOWN),
        (1, rm.CMD_MAKE_CALL, {"called": b""}, rm.MB_ERR_ARGUMENT),
        (1, rm.CMD_MAKE_CALL, {"called": b"12a4"}, rm.MB_ERR_ARGUMENT),
        (1, rm.CMD_MAKE_CALL, {"called": b"1", "calling": b"+1"}, rm.MB_ERR_ARGUMENT),
        (1, rm.CMD_RELEASE, {"cause": b"\x80"}, rm.MB_ERR_ARGUMENT),
        (16, rm.CMD_MAKE_CALL, {"called": b"1"}, rm.MB_ERR_ARGUMENT),
        (0, rm.CMD_MAKE_CALL, {"called": b"1"}, rm.MB_ERR_ARGUMENT),
        (1, rm.CMD_ALERT, {}, rm.MB_ERR_STATE),
        (1, rm.CMD_ANSWER, {}, rm.MB_ERR_STATE),
        (1, rm.CMD_RELEASE, {"cause": b"\x80\x90"}, rm.MB_ERR_STATE),
    ],
)
def test_mailbox_errors(
    link: Link, ts: int, cmd: int, kwargs: dict[str, bytes], status: int
) -> None:
    link.drain()
    assert mbox_write(link, ts, cmd, **kwargs) == rm.S_OK
    assert link.read(rm.mbox_reg(0, ts, 0), 2) == bytes((0, status))
    assert link.drain() == [(0, ts, rm.EV_COMMAND_DONE, status, 0)]
    assert chan(link, ts)[rm.CHAN_STATE] == rm.ST_IDLE


def test_mailbox_command_on_missing_span_and_dchannel_down(card: SimulatedCard, link: Link) -> None:
    link.drain()
    assert mbox_write(link, 1, rm.CMD_MAKE_CALL, called=b"1", span=2) == rm.S_OK
    card.firmware.set_span(0, dchannel_up=False)
    assert mbox_write(link, 1, rm.CMD_MAKE_CALL, called=b"1") == rm.S_OK
    events = link.drain()
    assert (2, 1, rm.EV_COMMAND_DONE, rm.MB_ERR_ARGUMENT, 0) in events
    assert events[-1] == (0, 1, rm.EV_COMMAND_DONE, rm.MB_ERR_NO_LINK, 0)


def test_parameters_written_after_cmd_byte_in_same_write_count(link: Link) -> None:
    """The card acts once the whole write is applied, wherever CMD sits in it."""
    link.drain()
    base = rm.mbox_reg(0, 7, 0)
    data = bytearray(0x60)
    data[rm.MBOX_CMD] = rm.CMD_MAKE_CALL
    data[rm.MBOX_CALLED_LEN] = 2
    data[rm.MBOX_CALLED : rm.MBOX_CALLED + 2] = b"42"
    assert link.write(base, bytes(data)) == rm.S_OK
    assert link.drain()[-1][3] == rm.MB_DONE
    # Two mailboxes in one write: both commands run.
    two = bytearray(rm.MBOX_STRIDE * 2)
    two[rm.MBOX_CMD] = rm.CMD_ALERT
    two[rm.MBOX_STRIDE + rm.MBOX_CMD] = rm.CMD_ANSWER
    assert link.write(rm.mbox_reg(0, 8, 0), bytes(two)) == rm.S_OK
    assert [e[1:4] for e in link.drain()] == [
        (8, rm.EV_COMMAND_DONE, rm.MB_ERR_STATE),
        (9, rm.EV_COMMAND_DONE, rm.MB_ERR_STATE),
    ]


# --- interrupts --------------------------------------------------------------------------


def irq_frames(link: Link, seconds: float) -> list[tuple[float, int]]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        body = link.recv_frame(left)
        if body is not None and body[0] == rm.T_IRQ:
            assert body[1] == 0
            out.append((time.monotonic(), struct.unpack_from("<I", body, 2)[0]))
    return out


def test_irq_frames_and_repeat(card: SimulatedCard, link: Link) -> None:
    assert irq_frames(link, 0.1) == []  # INT_MASK is 0 after boot
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_EVENT | rm.INT_RESET) == rm.S_OK
    frames = irq_frames(link, 0.33)
    assert {v for _, v in frames} == {rm.INT_EVENT | rm.INT_RESET}
    assert 5 <= len(frames) <= 8, frames
    gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:], strict=False)]
    assert all(0.035 < g < 0.1 for g in gaps), gaps
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_RESET) == rm.S_OK
    link.drain()
    link.irqs.clear()
    assert irq_frames(link, 0.12) == []
    # A new event: the IRQ goes out at once, after the response of the write that caused it.
    t0 = time.monotonic()
    assert mbox_write(link, 1, rm.CMD_ALERT) == rm.S_OK
    frames = irq_frames(link, 0.02)
    assert link.irqs == [] and frames and frames[0][1] == rm.INT_EVENT
    assert frames[0][0] - t0 < 0.02


def test_irq_sent_when_a_bit_is_gained(card: SimulatedCard, link: Link) -> None:
    assert link.write_u32(rm.REG_INT_MASK, 0xFFFFFFFF) == rm.S_OK
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_RESET) == rm.S_OK
    link.drain()
    irq_frames(link, 0.06)
    for _ in range(rm.RING_ENTRIES):
        card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    first = irq_frames(link, 0.01)
    assert first and first[0][1] == rm.INT_EVENT
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    gained = irq_frames(link, 0.01)
    assert gained and gained[0][1] == rm.INT_EVENT | rm.INT_OVERFLOW


# --- event posting (datasheet 3.1) ---------------------------------------------------------

_EVENTS_HEAD = struct.Struct("<BBIB")


def next_events(link: Link, timeout: float = 1.0) -> tuple[int, list[tuple[bytes, bytes]]] | None:
    """The next EVENTS frame, checked field by field against datasheet 4.4:
    (first ring index, [(8-byte entry, snapshot)]). IRQ frames met go to link.irqs."""
    deadline = time.monotonic() + timeout
    while (body := link.recv_frame(max(0.0, deadline - time.monotonic()))) is not None:
        if body[0] == rm.T_IRQ:
            link.irqs.append(struct.unpack_from("<I", body, 2)[0])
            continue
        kind, tag, first, count = _EVENTS_HEAD.unpack_from(body)
        assert (kind, tag) == (rm.T_EVENTS, 0)
        assert 1 <= count <= rm.POST_MAX_ENTRIES
        pos, entries = _EVENTS_HEAD.size, []
        for _ in range(count):
            entry, n = body[pos : pos + rm.EVENT_SIZE], body[pos + rm.EVENT_SIZE]
            assert n in (0, rm.POST_SNAPSHOT_LEN)
            pos += rm.EVENT_SIZE + 1
            entries.append((entry, body[pos : pos + n]))
            pos += n
        assert pos == len(body)
        return first, entries
    return None


def ring_entry(link: Link, index: int) -> bytes:
    return link.read(rm.RING_ENTRIES_BASE + index % rm.RING_ENTRIES * rm.EVENT_SIZE, 8)


def push_in_one_step(card: SimulatedCard, count: int) -> None:
    def push() -> None:
        for i in range(count):
            card.firmware._push_event(0, 2, rm.EV_STATE, i & 0xFF)

    call_on_loop(card.loop, push)


def test_event_post_register(card: SimulatedCard, link: Link) -> None:
    assert link.u32(rm.REG_EVENT_POST) == 0
    card.firmware.push_event(0, 1, rm.EV_STATE, 1)
    assert next_events(link, 0.1) is None  # off after boot
    assert link.write_u32(rm.REG_EVENT_POST, 0xFFFFFFFF) == rm.S_OK
    assert link.u32(rm.REG_EVENT_POST) == rm.POST_ENABLE | rm.POST_AUTO_ACK  # others read 0
    assert link.write(rm.REG_EVENT_POST, b"\0") == rm.S_OK  # byte-wise RW
    assert link.u32(rm.REG_EVENT_POST) == 0
    card.firmware.push_event(0, 1, rm.EV_STATE, 2)
    assert next_events(link, 0.1) is None
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE) == rm.S_OK
    card.firmware.push_event(0, 1, rm.EV_STATE, 3)
    assert next_events(link) is not None
    card.firmware.reset()
    assert link.hello()[0] == rm.S_OK
    assert link.u32(rm.REG_EVENT_POST) == 0
    card.firmware.push_event(0, 1, rm.EV_STATE, 4)
    assert next_events(link, 0.1) is None


def test_events_frame_format_and_snapshots(card: SimulatedCard, link: Link) -> None:
    link.drain()
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE) == rm.S_OK
    head = link.u32(rm.RING_HEAD)
    fw = card.firmware
    fw.set_channel(0, 5, state=rm.ST_IN_PRESENT, direction=rm.DIR_INCOMING, call_ref=0x8003,
                   called="1234", calling="5678", event=rm.EV_INCOMING)
    first, entries = next_events(link) or (None, [])
    assert first == head and len(entries) == 1
    entry, snap = entries[0]
    assert entry == ring_entry(link, head)
    assert entry == struct.pack("<BBBBI", 0, 5, rm.EV_INCOMING, rm.ST_IN_PRESENT, 1)
    assert snap == chan(link, 5)[: rm.POST_SNAPSHOT_LEN]

    def clear_then_next_call() -> None:
        fw.channel_update(0, 5, state=rm.ST_IDLE, cause=b"\x82\x90", cause_source=1,
                          event=rm.EV_CLEARED)
        fw.channel_update(0, 5, state=rm.ST_OUT_SETUP, direction=rm.DIR_OUTGOING, called="9")

    call_on_loop(card.loop, clear_then_next_call)
    first, entries = next_events(link) or (None, [])
    assert first == head + 1 and len(entries) == 2  # one firmware step, one frame
    (cleared, snap), (state, no_snap) = entries
    assert cleared == struct.pack("<BBBBI", 0, 5, rm.EV_CLEARED, rm.ST_IDLE, 2)
    assert state == struct.pack("<BBBBI", 0, 5, rm.EV_STATE, rm.ST_OUT_SETUP, 3)
    assert no_snap == b""
    # The snapshot is the block when CLEARED was written; the registers moved on since.
    assert snap[rm.CHAN_STATE] == rm.ST_IDLE and snap[rm.CHAN_CAUSE_LEN] == 2
    assert snap[rm.CHAN_CAUSE : rm.CHAN_CAUSE + 2] == b"\x82\x90"
    assert snap[rm.CHAN_CALLED : rm.CHAN_CALLED + 4] == b"1234"
    regs = chan(link, 5)
    assert regs[rm.CHAN_CAUSE_LEN] == 0 and regs[rm.CHAN_CALLED : rm.CHAN_CALLED + 2] == b"9\0"
    assert [ring_entry(link, head + 1), ring_entry(link, head + 2)] == [cleared, state]


def test_events_frames_per_step_and_at_most_64(card: SimulatedCard, link: Link) -> None:
    link.drain()
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE) == rm.S_OK
    head = link.u32(rm.RING_HEAD)
    push_in_one_step(card, 130)
    frames = [next_events(link) for _ in range(3)]
    assert [(f[0], len(f[1])) for f in frames if f] == [
        (head, 64),
        (head + 64, 64),
        (head + 128, 2),
    ]
    args = [entry[3] for f in frames if f for entry, _ in f[1]]
    assert args == list(range(130))
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    assert [(f[0], len(f[1])) for f in (next_events(link), next_events(link)) if f] == [
        (head + 130, 1),
        (head + 131, 1),
    ]
    assert next_events(link, 0.02) is None


def test_events_frame_replaces_the_event_irq(card: SimulatedCard, link: Link) -> None:
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_RESET) == rm.S_OK
    link.drain()
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_EVENT | rm.INT_OVERFLOW) == rm.S_OK
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE) == rm.S_OK
    assert irq_frames(link, 0.06) == []
    t0 = time.monotonic()
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    assert next_events(link, 0.04) is not None
    assert link.irqs == []
    # Unacknowledged, EVENT stays pending and the 50 ms repeat goes out as an IRQ frame.
    repeats = irq_frames(link, 0.1)
    assert repeats and repeats[0][1] == rm.INT_EVENT and repeats[0][0] - t0 > 0.035
    link.drain()
    irq_frames(link, 0.01)
    assert irq_frames(link, 0.08) == []
    # OVERFLOW is not replaced: its IRQ frame comes with the EVENTS frames.
    link.irqs.clear()
    push_in_one_step(card, rm.RING_ENTRIES + 1)
    posted = 0
    while (frame_ := next_events(link, 0.2)) is not None:
        posted += len(frame_[1])
    assert posted == rm.RING_ENTRIES  # the dropped event is not posted
    assert link.irqs[:1] == [rm.INT_EVENT | rm.INT_OVERFLOW]
    # EVENT raised by unmasking it, with no event written: nothing to stand in for the IRQ.
    link.drain()
    assert link.write_u32(rm.REG_INT_STATUS, rm.INT_OVERFLOW) == rm.S_OK
    assert link.write_u32(rm.REG_INT_MASK, 0) == rm.S_OK
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    assert next_events(link) is not None
    link.irqs.clear()
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_EVENT) == rm.S_OK
    assert [v for _, v in irq_frames(link, 0.02)] == [rm.INT_EVENT]
    assert link.irqs == []


def test_auto_ack_consumes_events_as_their_frames_are_sent(
    card: SimulatedCard, link: Link
) -> None:
    link.drain()
    tail = link.u32(rm.RING_TAIL)
    # AUTO_ACK alone posts nothing and consumes nothing.
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_AUTO_ACK) == rm.S_OK
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    assert next_events(link, 0.05) is None
    assert link.u32(rm.RING_TAIL) == tail
    link.drain()
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)  # in the ring before posting begins
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_EVENT
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE | rm.POST_AUTO_ACK) == rm.S_OK
    head = link.u32(rm.RING_HEAD)
    assert link.u32(rm.RING_TAIL) == head  # consumed by setting AUTO_ACK
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_EVENT == 0
    push_in_one_step(card, 3)
    assert next_events(link) is not None
    assert (link.u32(rm.RING_HEAD), link.u32(rm.RING_TAIL)) == (head + 3, head + 3)
    assert link.u32(rm.REG_INT_STATUS) & rm.INT_EVENT == 0
    # A host writing TAIL is not needed, but still allowed (within [TAIL, HEAD]).
    assert link.write_u32(rm.RING_TAIL, head + 3) == rm.S_OK
    assert link.write_u32(rm.RING_TAIL, head) == rm.S_BAD_VALUE


def test_auto_ack_a_step_that_fills_the_ring_sends_its_frames_early(
    card: SimulatedCard, link: Link
) -> None:
    link.drain()
    assert link.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE | rm.POST_AUTO_ACK) == rm.S_OK
    head = link.u32(rm.RING_HEAD)
    count = rm.RING_ENTRIES + 100
    push_in_one_step(card, count)
    firsts, args = [], []
    while len(args) < count and (frame_ := next_events(link)) is not None:
        firsts.append(frame_[0])
        args += [entry[3] for entry, _ in frame_[1]]
    assert args == [i & 0xFF for i in range(count)]
    assert firsts == list(range(head, head + count, rm.POST_MAX_ENTRIES))
    assert link.u32(rm.RING_DROPPED) == 0
    assert link.u32(rm.RING_TAIL) == link.u32(rm.RING_HEAD) == head + count
    # The newest 1,024 stay readable after TAIL passed them.
    assert ring_entry(link, head + count - rm.RING_ENTRIES)[3] == (count - rm.RING_ENTRIES) & 0xFF


# --- link robustness ---------------------------------------------------------------------


def test_garbage_runts_bad_crc_and_overlong_frames_are_counted(link: Link) -> None:
    frames0, crc0, disc0, _ = counters(link)
    link.send_raw(b"noise without flags")  # inside the frame the last flag opened
    link.send_raw(b"\x7e\x01\x02\x7e")  # runt
    good = frame(struct.pack("<BBIH", rm.T_READ, 77, rm.REG_MAGIC, 4))
    bad = bytearray(good)
    bad[3] ^= 0x40
    link.send_raw(bytes(bad))
    link.send_raw(b"\x7e" + b"\x11" * 40000 + b"\x7e")  # over-long
    link.send_raw(b"\x7e\x02\x05\x7d\x7e")  # dangling escape
    frames1, crc1, disc1, _ = counters(link)
    assert frames1 == frames0 + 1  # only the counters READ itself
    assert crc1 - crc0 == 2  # the noise became a frame with a bad CRC, and the bad one
    assert disc1 - disc0 == 2 + 40000 + 3
    assert link.u32(rm.REG_MAGIC) == rm.MAGIC_VALUE


def test_frames_split_and_batched_across_writes(link: Link) -> None:
    reqs = [struct.pack("<BBIH", rm.T_READ, 200 + i, rm.REG_MAGIC, 4) for i in range(3)]
    stream = b"".join(frame(r) for r in reqs)
    for i in range(0, len(stream), 5):
        link.send_raw(stream[i : i + 5])
        time.sleep(0.001)
    for i in range(3):
        assert link.response(200 + i) == bytes((rm.T_READ | 0x80, 200 + i, 0)) + b"TCRD"
    # Flags shared between frames and escaped bytes in address and data.
    batch = b"\x7e".join(frame(r)[1:-1] for r in reqs)
    link.send_raw(b"\x7e" + batch + b"\x7e")
    assert all(link.response(200 + i) is not None for i in range(3))
    assert link.write_u32(rm.REG_INT_MASK, 0x7E7D7E7D) == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == 0x7E7D7E7D


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    noise=st.lists(
        st.binary(max_size=300) | st.sampled_from([b"\x7e", b"\x7d", b"\x7e\x7d"]), max_size=8
    )
)
def test_random_bytes_never_stop_the_card(link: Link, noise: list[bytes]) -> None:
    link.send_raw(b"".join(noise))
    # A flag closes whatever the noise left open; the request after it must be answered.
    tag = link.next_tag()
    link.send_raw(b"\x7e")
    resp = link.request(struct.pack("<BBIH", rm.T_READ, tag, rm.REG_MAGIC, 4), timeout=2.0)
    assert resp[2:] == b"\x00TCRD"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bodies=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 0x10, 0x82, 0xFF]),
            st.integers(0, 255),
            st.binary(max_size=40),
        ),
        max_size=6,
    )
)
def test_random_well_framed_requests_never_stop_the_card(
    card: SimulatedCard, bodies: list[tuple[int, int, bytes]]
) -> None:
    with Link(card.device_path) as link:
        for kind, tag, payload in bodies:
            link.send(bytes((kind, tag)) + payload)
        # Answers to those may still arrive after the HELLO's flush: give it a tag of its own.
        link.tag = min(set(range(1, 256)) - {tag for _, tag, _ in bodies}) - 1
        assert link.hello()[0] == rm.S_OK  # random WRITEs may have reset the card
        assert link.u32(rm.REG_MAGIC) == rm.MAGIC_VALUE


# --- retries and the per-tag memory (datasheet 4.5) ---------------------------------------


def test_retried_write_acts_once(link: Link) -> None:
    link.drain()
    body = bytearray(rm.MBOX_STRIDE)
    body[rm.MBOX_CMD] = rm.CMD_MAKE_CALL
    body[rm.MBOX_CALLED_LEN] = 1
    body[rm.MBOX_CALLED] = ord("9")
    req = struct.pack("<BBI", rm.T_WRITE, 42, rm.mbox_reg(0, 4, 0)) + bytes(body)
    first = link.request(req)
    again = link.request(req)
    assert first == again == bytes((rm.T_WRITE | 0x80, 42, rm.S_OK))
    assert counters(link)[3] == 1
    assert [e[2] for e in link.drain()] == [rm.EV_STATE, rm.EV_COMMAND_DONE]
    # The same tag with a different request is a new request.
    req2 = struct.pack("<BBI", rm.T_WRITE, 42, rm.REG_INT_MASK) + b"\x01"
    assert link.request(req2)[2] == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == 1


def test_tag_reuse_after_a_full_cycle_is_not_a_retry(card: SimulatedCard, link: Link) -> None:
    """A host cycling tags 1-255 repeats identical reads; they must get fresh data."""
    link.tag = 0
    values = []
    for _ in range(2):
        for _ in range(255):
            values.append(link.u32(rm.RING_HEAD))
        card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    assert values[0] + 1 == values[255]
    assert counters(link)[3] == 0


def mask_write(tag: int, value: int) -> bytes:
    return struct.pack("<BBII", rm.T_WRITE, tag, rm.REG_INT_MASK, value)


def test_a_tag_remembers_its_last_write_until_a_different_request(link: Link) -> None:
    """Datasheet 4.5: however many requests go by on other tags, a byte-identical WRITE on
    the tag is a retry; any different request on the tag ends the memory."""
    first = link.request(mask_write(42, 1))
    assert first == bytes((rm.T_WRITE | 0x80, 42, rm.S_OK))
    assert link.write_u32(rm.REG_INT_MASK, 2) == rm.S_OK  # on tag 1, not 42
    others = [t for t in range(1, 256) if t != 42]
    for i in range(300):  # more than the 1.0 card's window of 128
        tag = others[i % len(others)]
        assert link.request(struct.pack("<BBIH", rm.T_READ, tag, rm.REG_MAGIC, 4))[3:] == b"TCRD"
    assert link.request(mask_write(42, 1)) == first  # answered from memory ...
    assert link.u32(rm.REG_INT_MASK) == 2  # ... and not executed
    assert counters(link)[3] == 1
    # A different request on the tag is executed and replaces the memory.
    assert link.request(mask_write(42, 3))[2] == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == 3
    assert link.request(mask_write(42, 1))[2] == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == 1
    # So does a READ on the tag: the same WRITE afterwards is new.
    assert link.write_u32(rm.REG_INT_MASK, 5) == rm.S_OK
    assert link.request(struct.pack("<BBIH", rm.T_READ, 42, rm.REG_MAGIC, 4))[3:] == b"TCRD"
    assert link.request(mask_write(42, 1))[2] == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == 1
    assert counters(link)[3] == 1


def test_reads_are_never_answered_from_memory(card: SimulatedCard, link: Link) -> None:
    req = struct.pack("<BBIH", rm.T_READ, 99, rm.RING_HEAD, 4)
    assert link.request(req)[3:] == b"\x02\0\0\0"
    card.firmware.push_event(0, 1, rm.EV_STATE, 0)
    assert link.request(req)[3:] == b"\x03\0\0\0"  # executed again: the current value
    assert counters(link)[3] == 0


def test_hello_empties_every_tags_memory(link: Link) -> None:
    assert link.request(mask_write(50, 1))[2] == rm.S_OK
    assert link.write_u32(rm.REG_INT_MASK, 2) == rm.S_OK
    assert link.request(mask_write(50, 1))[2] == rm.S_OK  # a retry: not executed
    assert link.u32(rm.REG_INT_MASK) == 2
    assert link.hello()[0] == rm.S_OK
    assert link.request(mask_write(50, 1))[2] == rm.S_OK  # new after the HELLO
    assert link.u32(rm.REG_INT_MASK) == 1
    assert counters(link)[3] == 1


def test_a_reboot_empties_the_memory(card: SimulatedCard, link: Link) -> None:
    assert link.request(mask_write(60, 1))[2] == rm.S_OK
    card.faults.reset()
    assert link.hello()[0] == rm.S_OK
    assert link.request(mask_write(60, 1))[2] == rm.S_OK
    assert link.u32(rm.REG_INT_MASK) == 1
    assert counters(link)[3] == 0


# --- COMMAND (datasheet 4.3) ---------------------------------------------------------------


def mailbox(cmd: int, *, called: bytes = b"", calling: bytes = b"", cause: bytes = b"") -> bytes:
    """The mailbox bytes 0x00-0x6F a COMMAND carries."""
    block = bytearray(rm.MBOX_COMMAND_MAX)
    block[rm.MBOX_CMD] = cmd
    block[rm.MBOX_CAUSE_LEN] = len(cause)
    block[rm.MBOX_CAUSE : rm.MBOX_CAUSE + len(cause)] = cause
    block[rm.MBOX_CALLED_LEN] = len(called)
    block[rm.MBOX_CALLING_LEN] = len(calling)
    block[rm.MBOX_CALLED : rm.MBOX_CALLED + len(called)] = called
    block[rm.MBOX_CALLING : rm.MBOX_CALLING + len(calling)] = calling
    return bytes(block)


def test_command_runs_and_answers_status_and_seq() -> None:
    block = 1 * rm.SLOTS_PER_SPAN + 3
    make_call = struct.pack("<BBH", rm.T_COMMAND, 7, block) + mailbox(
        rm.CMD_MAKE_CALL, called=b"5551234", calling=b"*99#"
    )
    with SimulatedCard(2, signalling_factory=hook_signalling) as two, Link(two.device_path) as lk:
        lk.hello()
        lk.drain()
        lk.tag = 100  # the requests below keep off tag 7
        resp = lk.request(make_call)
        assert resp == bytes((rm.T_COMMAND | 0x80, 7, rm.S_OK, rm.MB_DONE)) + struct.pack(
            "<IB", 1, rm.ST_OUT_SETUP
        )
        regs = chan(lk, 3, span=1)
        assert regs[rm.CHAN_STATE] == rm.ST_OUT_SETUP
        assert regs[rm.CHAN_CALLED : rm.CHAN_CALLED + 7] == b"5551234"
        # The mailbox as a WRITE of the same bytes would leave it; STATUS kept the result.
        assert lk.read(rm.mbox_reg(1, 3, 0), 2) == bytes((rm.CMD_NONE, rm.MB_DONE))
        # The response is the result: no COMMAND_DONE event, only what the command changed.
        assert lk.drain() == [(1, 3, rm.EV_STATE, rm.ST_OUT_SETUP, 1)]
        # The retry: the same answer, byte for byte, and nothing executed.
        assert lk.request(make_call) == resp
        assert counters(lk)[3] == 1
        assert lk.drain() == []
        commands = two.firmware.signalling[1].commands  # type: ignore[attr-defined]
        assert [(c.timeslot, c.cmd, c.called, c.calling) for c in commands] == [
            (3, rm.CMD_MAKE_CALL, "5551234", "*99#")
        ]
        # Only CMD: a short COMMAND; the SEQ follows the channel.
        release = mailbox(rm.CMD_RELEASE, cause=b"\x80\x90")
        assert lk.command(block, release) == bytes((rm.S_OK, rm.MB_DONE)) + struct.pack(
            "<IB", 2, rm.ST_IDLE
        )
        assert lk.command(block, bytes((rm.CMD_ALERT,))) == bytes(
            (rm.S_OK, rm.MB_ERR_STATE)
        ) + struct.pack("<IB", 2, rm.ST_IDLE)
        assert [e[2:4] for e in lk.drain()] == [(rm.EV_CLEARED, rm.ST_IDLE)]


def test_a_commands_request_number_only_sets_it_apart(link: Link) -> None:
    """Datasheet 4.3: bits 9-15 of the channel field number the request. The same command
    with another number, on the tag that remembers it, is a new request on the same channel;
    with the same number it is a retry."""
    block = 5  # span 0, timeslot 5
    alert = bytes((rm.CMD_ALERT,))  # refused on an idle channel, but run each time

    def command(number: int) -> bytes:
        field = block | number << rm.COMMAND_NUMBER_SHIFT
        return link.request(struct.pack("<BBH", rm.T_COMMAND, 60, field) + alert)

    first = command(0)
    assert first[2:4] == bytes((rm.S_OK, rm.MB_ERR_STATE))
    for number in (1, rm.COMMAND_NUMBERS - 1):
        assert command(number) == first  # the same answer: the same channel ...
        assert counters(link)[3] == 0  # ... and executed, not answered from memory
    assert command(rm.COMMAND_NUMBERS - 1) == first
    assert counters(link)[3] == 1  # now a retry


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"", rm.S_BAD_LENGTH),
        (b"\x01", rm.S_BAD_LENGTH),
        (b"\x01\x00", rm.S_BAD_LENGTH),  # a block index and no mailbox byte
        (b"\x01\x00" + bytes((rm.CMD_ALERT,)) + bytes(rm.MBOX_COMMAND_MAX), rm.S_BAD_LENGTH),
        (struct.pack("<H", 1) + bytes(rm.MBOX_COMMAND_MAX), rm.S_BAD_VALUE),  # CMD 0
    ],
)
def test_command_refusals_change_nothing(link: Link, payload: bytes, status: int) -> None:
    link.drain()
    tag = link.next_tag()
    resp = link.request(bytes((rm.T_COMMAND, tag)) + payload)
    assert resp == bytes((rm.T_COMMAND | 0x80, tag, status))
    assert link.drain() == []
    assert link.read(rm.mbox_reg(0, 1, 0), rm.MBOX_STRIDE) == bytes(rm.MBOX_STRIDE)


def test_command_before_hello_and_on_a_missing_span(card: SimulatedCard) -> None:
    with Link(card.device_path) as link:
        assert link.command(1, bytes((rm.CMD_ALERT,))) == bytes((rm.S_NOT_READY,))
        link.hello()
        link.drain()
        status = link.command(2 * rm.SLOTS_PER_SPAN + 1, mailbox(rm.CMD_MAKE_CALL, called=b"1"))
        assert status == bytes((rm.S_OK, rm.MB_ERR_ARGUMENT)) + bytes(5)
        assert link.command(1, bytes((99,))) == bytes((rm.S_OK, rm.MB_ERR_UNKNOWN)) + bytes(5)
        assert link.drain() == []  # the responses were the results


# --- faults ------------------------------------------------------------------------------


def test_fault_corrupt_then_retry_gets_cached_response(card: SimulatedCard, link: Link) -> None:
    card.faults.corrupt(1)
    req = struct.pack("<BBI", rm.T_WRITE, 9, rm.REG_INT_MASK) + b"\x02"
    link.send(req)
    assert link.response(9, timeout=0.2) is None
    assert link.bad_frames == 1
    assert link.request(req)[2] == rm.S_OK
    assert counters(link)[3] == 1


def test_fault_drop_outgoing(card: SimulatedCard, link: Link) -> None:
    card.faults.drop(2)
    req = mask_write(10, 0x100)  # no IRQ source: only responses go out
    link.send(req)
    link.send(req)
    assert link.response(10, timeout=0.2) is None
    assert link.request(req)[2] == rm.S_OK
    assert counters(link)[3] == 2
    assert link.u32(rm.REG_INT_MASK) == 0x100


def test_fault_drop_incoming(card: SimulatedCard, link: Link) -> None:
    card.faults.drop_incoming(1)
    req = struct.pack("<BBI", rm.T_WRITE, 11, rm.REG_INT_MASK) + b"\x04"
    link.send(req)
    assert link.response(11, timeout=0.2) is None
    assert link.request(req)[2] == rm.S_OK
    assert counters(link)[3] == 0
    assert link.u32(rm.REG_INT_MASK) == 4


def test_fault_garbage(card: SimulatedCard, link: Link) -> None:
    card.faults.garbage(b"junk\x7e\x01\x7e")
    assert link.recv_frame(0.2) is None
    assert link.bad_frames == 2
    assert link.u32(rm.REG_MAGIC) == rm.MAGIC_VALUE


def test_fault_stall(card: SimulatedCard, link: Link) -> None:
    card.faults.stall(0.3)
    t0 = time.monotonic()
    link.send(struct.pack("<BBIH", rm.T_READ, 12, rm.REG_MAGIC, 4))
    resp = link.response(12, timeout=2.0)
    elapsed = time.monotonic() - t0
    assert resp is not None and resp[3:] == b"TCRD"
    assert 0.25 < elapsed < 1.0


def assert_hung_up(fd: int) -> None:
    """A hung-up tty: POLLHUP, reads at EOF (or EIO), writes fail with EIO."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(1000)
    assert events and events[0][1] & select.POLLHUP
    try:
        assert os.read(fd, 100) == b""
    except OSError as exc:
        assert exc.errno == errno.EIO
    with pytest.raises(OSError) as err:
        os.write(fd, b"\x7e")
    assert err.value.errno == errno.EIO


def test_fault_vanish(card: SimulatedCard, link: Link) -> None:
    card.faults.vanish()
    assert_hung_up(link.fd)


@pytest.mark.parametrize("how", ["faults", "soft_reset"])
def test_firmware_reset(card: SimulatedCard, link: Link, how: str) -> None:
    boot_id = link.u32(rm.REG_BOOT_ID)
    card.firmware.set_channel(0, 1, state=rm.ST_ACTIVE)
    assert link.write_u32(rm.REG_INT_MASK, rm.INT_EVENT) == rm.S_OK
    if how == "faults":
        card.faults.reset()
    else:
        assert link.write_u32(rm.REG_CARD_CONTROL, rm.CTRL_SOFT_RESET) == rm.S_OK
    assert link.read_status(rm.REG_MAGIC, 4) == (rm.S_NOT_READY, b"")
    status, _, _, new_boot_id = link.hello()
    assert status == rm.S_OK and new_boot_id != boot_id
    assert link.u32(rm.REG_BOOT_ID) == new_boot_id
    assert link.u32(rm.REG_INT_MASK) == 0
    assert link.u32(rm.REG_INT_STATUS) == rm.INT_RESET | rm.INT_EVENT
    assert chan(link, 1) == bytes(rm.CHAN_STRIDE)
    assert link.drain() == [(0xFF, 0xFF, rm.EV_RESET, 0, 0), (0, 0, rm.EV_SPAN, rm.DCHAN_UP, 1)]
    assert counters(link)[0] == 10  # counted since boot: the requests above and this one


def test_host_that_stops_reading_never_blocks_the_card(card: SimulatedCard) -> None:
    with Link(card.device_path) as link:
        link.hello()
        link.write_u32(rm.REG_INT_MASK, rm.INT_EVENT)
        req = struct.pack("<BBIH", rm.T_READ, 1, 0, rm.MAX_DATA)
        for i in range(100):  # 1.6 MB of responses nobody reads
            link.send(req[:1] + bytes((i + 1,)) + req[2:])
        t0 = time.monotonic()
        for i in range(50):
            card.firmware.push_event(0, 1, rm.EV_STATE, i)
        assert time.monotonic() - t0 < 1.0
    # Reopen: HELLO discards whatever the previous session left unread.
    with Link(card.device_path) as link:
        tag = link.next_tag()
        link.send(struct.pack("<BBH", rm.T_HELLO, tag, rm.PROTO_VERSION))
        first = link.recv_frame(1.0)
        while first is not None and first[0] == rm.T_IRQ:  # the 50 ms repeat may come first
            first = link.recv_frame(1.0)
        assert first is not None and first[:3] == bytes((rm.T_HELLO | 0x80, tag, rm.S_OK))
        assert link.u32(rm.RING_HEAD) == 52


# --- constructor and standalone ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spans": 0},
        {"spans": 17},
        {"spans": True},
        {"spans": "2"},
        {"line": "J1"},
        {"line": "e1"},
        {"role": "XX"},
    ],
)
def test_invalid_constructor_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimulatedCard(**kwargs)  # type: ignore[arg-type]


def test_close_hangs_up_and_is_idempotent() -> None:
    card = SimulatedCard(16, "T1")
    with Link(card.device_path) as link:
        link.hello()
        assert link.u8(rm.REG_NUM_SPANS) == 16
        card.close()
        card.close()
        assert not card._thread.is_alive()
        assert_hung_up(link.fd)


def test_standalone_module(tmp_path: Path) -> None:
    symlink = tmp_path / "tcard0"
    symlink.symlink_to("/nonexistent")  # an existing symlink is replaced
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_sim",
            "--spans",
            "2",
            "--line",
            "T1",
            "--role",
            "NT",
            "--link",
            str(symlink),
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/")
        assert os.readlink(symlink) == path
        with Link(str(symlink)) as link:
            assert link.hello()[0] == rm.S_OK
            assert link.u8(rm.REG_NUM_SPANS) == 2
            assert link.u8(rm.span_reg(1, rm.SPAN_ROLE)) == rm.ROLE_NT
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert not os.path.lexists(symlink)
    finally:
        proc.kill()
        proc.wait()


def test_standalone_module_exits_cleanly_on_sigint() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim"], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("/dev/pts/")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_new_sessions_identical_hello_empties_the_cache(card: SimulatedCard) -> None:
    """Two sessions that both start at tag 1 send byte-identical HELLOs and first reads."""
    state = rm.chan_reg(0, 1, rm.CHAN_STATE)
    with Link(card.device_path) as first:
        assert first.hello()[0] == rm.S_OK
        assert first.u8(state) == rm.ST_IDLE
    card.firmware.set_channel(0, 1, state=rm.ST_ACTIVE)
    with Link(card.device_path) as second:
        assert second.hello()[0] == rm.S_OK
        assert second.u8(state) == rm.ST_ACTIVE  # executed, not the first session's answer
