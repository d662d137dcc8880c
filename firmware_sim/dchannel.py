"""D-channel transports: an in-memory cable on one loop, and a SOCK_SEQPACKET socket carrying
one HDLC frame plus 2 FCS octets per packet (the DAHDI/libpri convention)."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable

from .pcap import PcapWriter

Receiver = Callable[[bytes], None]


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def fcs(frame: bytes) -> bytes:
    """CRC-16/X.25 frame check sequence, low octet first as transmitted."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in frame:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    crc ^= 0xFFFF
    return bytes((crc & 0xFF, crc >> 8))


class Tap:
    """Copies every frame of one span end to a capture file, from that end's point of view."""

    __slots__ = ("pcap", "network_side", "span")

    def __init__(self, pcap: PcapWriter, network_side: bool, span: int = 0) -> None:
        self.pcap = pcap
        self.network_side = network_side
        self.span = span

    def __call__(self, frame: bytes, sent: bool) -> None:
        self.pcap.write(frame, sent=sent, network_side=self.network_side, span=self.span)


# Frames a cable delivers in one loop callback before letting other callbacks and I/O run.
_CABLE_BATCH = 64


class _Cable:
    """The frames in flight on one in-memory cable, both directions, in the order sent.

    A whole exchange (DISCONNECT, RELEASE, RELEASE COMPLETE ...) is delivered within one loop
    callback instead of costing a loop iteration per frame; each frame is still handled only
    after its sender's handler has returned, never recursively.
    """

    __slots__ = ("loop", "frames", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.frames: deque[tuple[MemoryEnd, bytes]] = deque()
        self.pending = False  # a drain is scheduled or running: new frames need no callback

    def post(self, end: MemoryEnd, frame: bytes) -> None:
        self.frames.append((end, frame))
        if not self.pending:
            self.pending = True
            self.loop.call_soon(self.drain)

    def drain(self) -> None:
        frames = self.frames
        try:
            for _ in range(_CABLE_BATCH):
                if not frames:
                    break
                end, frame = frames.popleft()
                end._deliver(frame)
        finally:
            if frames:
                self.loop.call_soon(self.drain)
            else:
                self.pending = False


class MemoryEnd:
    """One end of an in-memory D-channel cable; frames arrive from a later loop callback."""

    __slots__ = ("cable", "peer", "receiver", "tap", "closed")

    def __init__(self, cable: _Cable) -> None:
        self.cable = cable
        self.peer: MemoryEnd | None = None
        self.receiver: Receiver | None = None
        self.tap: Tap | None = None
        self.closed = False

    def set_receiver(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def send(self, frame: bytes) -> None:
        peer = self.peer
        if self.closed or peer is None or peer.closed:
            return
        if self.tap is not None:
            self.tap(frame, True)
        self.cable.post(peer, frame)

    def _deliver(self, frame: bytes) -> None:
        if self.closed or self.receiver is None:
            return
        if self.tap is not None:
            self.tap(frame, False)
        self.receiver(frame)

    def close(self) -> None:
        self.closed = True


def memory_link(loop: asyncio.AbstractEventLoop) -> tuple[MemoryEnd, MemoryEnd]:
    """A cable between two D-channel ends on the same loop."""
    cable = _Cable(loop)
    a, b = MemoryEnd(cable), MemoryEnd(cable)
    a.peer, b.peer = b, a
    return a, b


class SeqpacketTransport:
    """D-channel over a connected SOCK_SEQPACKET (or SOCK_DGRAM) socket.

    Sends a real FCS; on receipt strips the last 2 octets without insisting on a valid FCS,
    because libpri writes zeros there (`bad_fcs` counts them).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 tap: Tap | None = None) -> None:
        self.loop = loop
        self.sock = sock
        self.tap = tap
        self.receiver: Receiver | None = None
        self.bad_fcs = 0
        self.dropped = 0
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def set_receiver(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.tap is not None:
            self.tap(frame, True)
        try:
            self.sock.send(frame + fcs(frame))
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # LAPD recovers the frame by retransmission
        except OSError:
            self.dropped += 1

    def _readable(self) -> None:
        for _ in range(64):
            try:
                packet = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._detach()
                return
            if not packet:
                self._detach()  # peer closed: LAPD notices through T200/T203
                return
            if len(packet) < 3 + 2:
                self.dropped += 1
                continue
            frame = packet[:-2]
            if packet[-2:] != fcs(frame):
                self.bad_fcs += 1
            if self.tap is not None:
                self.tap(frame, False)
            if self.receiver is not None:
                self.receiver(frame)
            if self.closed:
                return

    def _detach(self) -> None:
        if not self.closed:
            self.loop.remove_reader(self.sock.fileno())
            self.closed = True

    def close(self) -> None:
        """Stop reading; the socket stays open for its owner (a rebooted card reuses it)."""
        self._detach()


def connect_seqpacket(path: str) -> socket.socket:
    """Connect to a listening SOCK_SEQPACKET Unix socket (the --dchannel SPAN=PATH option)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    sock.setblocking(False)
    return sock


def back_to_back() -> tuple[socket.socket, socket.socket]:
    """A cable between two simulated cards: hand one end to each as `dchannels={span: sock}`."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.setblocking(False)
    return a, b
