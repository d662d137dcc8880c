"""Q.921 LAPD: establishment, I-frame numbering and acknowledgement, recovery, release."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from firmware_sim import lapd
from firmware_sim.dchannel import MemoryEnd, fcs, memory_link

T = {"T200": 0.05, "T203": 0.3}


class Wire:
    """Records what an entity sends; forwards it unless told to drop it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.forward: Callable[[bytes], None] | None = None
        self.drop: Callable[[bytes], bool] = lambda f: False

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.forward is not None and not self.drop(frame):
            asyncio.get_event_loop().call_soon(self.forward, frame)


class Pair:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.te_wire, self.nt_wire = Wire(), Wire()
        self.te_rx: list[bytes] = []
        self.nt_rx: list[bytes] = []
        self.te_links: list[bool] = []
        self.nt_links: list[bool] = []
        self.te = lapd.Lapd(loop, self.te_wire, network=False, on_data=self.te_rx.append,
                            on_link=self.te_links.append, timers=T)
        self.nt = lapd.Lapd(loop, self.nt_wire, network=True, on_data=self.nt_rx.append,
                            on_link=self.nt_links.append, timers=T)
        self.te_wire.forward = self.nt.receive
        self.nt_wire.forward = self.te.receive

    def run(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))


@pytest.fixture
def loop() -> asyncio.AbstractEventLoop:
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    lp.close()


def test_establish_and_exchange(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    assert p.te.up and p.nt.up and p.te_links == [True] and p.nt_links == [True]
    # SABME from the user side is a command: C/R = 0, SAPI 0, TEI 0, P set
    assert p.te_wire.frames[0] == bytes((0x00, 0x01, 0x7F))
    assert p.nt_wire.frames[0] == bytes((0x00, 0x01, 0x73))  # UA response, F set
    for i in range(200):  # wraps the modulo-128 sequence numbers
        p.te.send(bytes((i,)))
    p.nt.send(b"back")
    p.run(0.1)
    assert p.nt_rx == [bytes((i,)) for i in range(200)]
    assert p.te_rx == [b"back"]
    assert p.te.va == p.te.vs == 200 % 128 and not p.te.sent


def test_window_is_seven(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.te_wire.drop = lambda f: True  # the peer hears nothing, so nothing gets acknowledged
    n0 = len(p.te_wire.frames)
    for i in range(20):
        p.te.send(bytes((i,)))
    i_frames = [f for f in p.te_wire.frames[n0:] if not f[2] & 1]
    assert len(i_frames) == 7
    assert [f[2] >> 1 for f in i_frames] == list(range(7))


def test_lost_frame_recovered_by_reject(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    dropped = []

    def drop_once(f: bytes) -> bool:
        if not f[2] & 1 and f[2] >> 1 == 1 and not dropped:
            dropped.append(f)
            return True
        return False

    p.te_wire.drop = drop_once
    for i in range(5):
        p.te.send(bytes((i,)))
    p.run(0.3)
    assert dropped
    assert p.nt_rx == [bytes((i,)) for i in range(5)]
    assert any(f[2] == lapd.REJ for f in p.nt_wire.frames)


def test_t200_retries_then_link_down_and_retry(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.te_wire.drop = lambda f: True
    p.nt_wire.drop = lambda f: True
    p.te.send(b"x")
    # T200, N200 enquiries, then N200 + 1 SABMEs unanswered before the link is released
    p.run(0.05 * 9 + 0.03)
    assert p.te_links == [True, False] and not p.te.up
    polls = [f for f in p.te_wire.frames if f[2] == lapd.RR and f[3] & 1]
    assert len(polls) >= lapd.DEFAULT_N200
    sabmes = [f for f in p.te_wire.frames[1:] if f[2] == lapd.SABME | lapd.PF_U]
    assert len(sabmes) == lapd.DEFAULT_N200 + 1
    p.te_wire.drop = lambda f: False
    p.nt_wire.drop = lambda f: False
    p.run(0.6)
    assert p.te.up and p.nt.up  # re-established


def test_t203_idle_poll(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.4)
    polls = [f for f in p.te_wire.frames + p.nt_wire.frames if f[2] == lapd.RR and f[3] & 1]
    assert polls and p.te.up and p.nt.up


def test_disc_and_dm(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.nt.release()
    p.run(0.02)
    assert not p.te.up and not p.nt.up and p.te_links == [True, False]
    n0 = len(p.te_wire.frames)
    p.te.receive(bytes((0x02, 0x01, lapd.DISC | lapd.PF_U)))  # DISC while released
    assert p.te_wire.frames[n0] == bytes((0x02, 0x01, lapd.DM | lapd.PF_U))


def test_frmr_and_bad_nr_reestablish(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.te.receive(bytes((0x02, 0x01, lapd.FRMR, 0, 0, 0, 0, 0)))  # FRMR response from network
    p.run(0.02)
    assert p.te.up and p.te.stats["reestablished"] == 1
    p.te.receive(bytes((0x02, 0x01, lapd.RR, 50 << 1)))  # N(R) acknowledging unsent frames
    p.run(0.02)
    assert p.te.up and p.te.stats["reestablished"] == 2
    # a data link reset, not a release: layer 3 never hears the link went down
    assert False not in p.te_links and p.te_links[-1] is True


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\x01\x01\x00", b"\x00\x00\x7f",
                                  b"\xfc\x01\x03", b"\x02\x01\xff",
                                  b"\x02\x01\x00\x00" + bytes(300)])
def test_junk_frames_do_not_crash(loop: asyncio.AbstractEventLoop, junk: bytes) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.te.receive(junk)
    p.run(0.3)
    assert p.te.up  # either ignored or re-established, never stuck


def test_memory_link_and_fcs(loop: asyncio.AbstractEventLoop) -> None:
    a, b = memory_link(loop)
    got: list[bytes] = []
    b.set_receiver(got.append)
    a.send(b"abc")
    assert got == []  # delivered on the next loop turn, not recursively
    loop.run_until_complete(asyncio.sleep(0))
    assert got == [b"abc"]
    # CRC-16/X.25 check value for "123456789" is 0x906E, sent low octet first
    assert fcs(b"123456789") == b"\x6e\x90"


def test_reply_i_frame_carries_the_acknowledgement(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.nt.on_data = lambda payload: p.nt.send(b"re:" + payload)  # layer 3 answers at once
    n0 = len(p.nt_wire.frames)
    p.te.send(b"x")
    p.run(0.02)
    assert p.te_rx == [b"re:x"] and not p.te.sent
    reply = p.nt_wire.frames[n0:]
    assert len(reply) == 1 and not reply[0][2] & 1  # the I-frame alone, no RR besides
    assert reply[0][3] >> 1 == 1  # its N(R) acknowledges the frame


def test_acknowledged_frame_leaves_t200_silent(loop: asyncio.AbstractEventLoop) -> None:
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    n0 = len(p.te_wire.frames)
    for i in range(3):
        p.te.send(bytes((i,)))
        p.run(0.01)
    p.run(0.1)  # two T200 periods after the last acknowledgement, well inside T203
    assert not [f for f in p.te_wire.frames[n0:] if f[2] == lapd.RR and f[3] & 1]
    assert p.te.state == lapd.ST_MULTIPLE_FRAME and not p.te.sent


def test_memory_link_delivers_an_exchange_in_order(loop: asyncio.AbstractEventLoop) -> None:
    a, b = memory_link(loop)
    log: list[tuple[str, int]] = []
    busy: list[str] = []

    def end(name: str, own: MemoryEnd) -> Callable[[bytes], None]:
        def receive(frame: bytes) -> None:
            assert not busy, "delivered from inside another delivery"
            busy.append(name)
            log.append((name, frame[0]))
            if frame[0] < 3:
                own.send(bytes((frame[0] + 1,)))  # answer across the cable
            busy.pop()
        return receive

    a.set_receiver(end("a", a))
    b.set_receiver(end("b", b))
    a.send(b"\x00")
    b.send(b"\x10")
    loop.run_until_complete(asyncio.sleep(0))
    assert log == [("b", 0), ("a", 0x10), ("a", 1), ("b", 2), ("a", 3)]


def test_memory_link_lets_other_callbacks_run(loop: asyncio.AbstractEventLoop) -> None:
    a, b = memory_link(loop)
    got: list[bytes] = []
    b.set_receiver(got.append)
    frames = [i.to_bytes(2, "big") for i in range(500)]
    for f in frames:
        a.send(f)
    seen: list[int] = []
    loop.call_soon(lambda: seen.append(len(got)))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert got == frames
    assert 0 < seen[0] < len(frames)  # a long backlog does not hold up the loop


# --- review: Q.921 SDL details -------------------------------------------------------------


def test_disc_while_awaiting_release_answered_and_waits_for_ua(
        loop: asyncio.AbstractEventLoop) -> None:
    """Q.921 SDL, state 6: a crossing DISC is answered with UA; the entity stays in state 6
    until the UA to its own DISC."""
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.te_wire.drop = lambda f: True  # our DISC crosses with the network's
    p.te.release()
    assert p.te.state == lapd.ST_AWAITING_RELEASE
    n0 = len(p.te_wire.frames)
    p.te.receive(bytes((0x02, 0x01, lapd.DISC | lapd.PF_U)))
    assert p.te_wire.frames[n0:] == [bytes((0x02, 0x01, lapd.UA | lapd.PF_U))]
    assert p.te.state == lapd.ST_AWAITING_RELEASE and p.te_links == [True]
    p.te.receive(bytes((0x00, 0x01, lapd.UA | lapd.PF_U)))  # the UA to our DISC
    assert p.te.state == lapd.ST_TEI_ASSIGNED and p.te_links == [True, False]


def test_response_i_frame_is_an_error_not_a_reset(loop: asyncio.AbstractEventLoop) -> None:
    """An I-frame is always a command: one with the response C/R is discarded (MDL error)
    without re-establishing the link."""
    p = Pair(loop)
    p.te.start()
    p.run(0.02)
    p.te.receive(bytes((0x00, 0x01, 0x00, 0x00)) + b"resp")  # from the network, C/R = 0
    p.run(0.02)
    assert p.te.state == lapd.ST_MULTIPLE_FRAME and p.te.stats["reestablished"] == 0
    assert p.te_rx == [] and p.te.vr == 0 and p.te.stats["discarded"] == 1
    assert p.te_links == [True]


@pytest.mark.parametrize(("frame", "answered"), [
    (bytes((0x02, 0x01, lapd.RR, 0x01)), True),  # RR command, P = 1
    (bytes((0x02, 0x01, lapd.REJ, 0x01)), True),
    (bytes((0x02, 0x01, 0x00, 0x01)) + b"x", True),  # I command, P = 1
    (bytes((0x02, 0x01, lapd.RR, 0x00)), False),  # P = 0: ignored
    (bytes((0x00, 0x01, lapd.RR, 0x01)), False),  # a response with F = 1: ignored
])
def test_tei_assigned_answers_polls_with_dm(loop: asyncio.AbstractEventLoop, frame: bytes,
                                            answered: bool) -> None:
    """Q.921 SDL, state 4 (TEI assigned): other commands with P = 1 get DM with F = 1."""
    p = Pair(loop)
    p.te.receive(frame)
    expected = [bytes((0x02, 0x01, lapd.DM | lapd.PF_U))] if answered else []
    assert p.te_wire.frames == expected and p.te.state == lapd.ST_TEI_ASSIGNED
