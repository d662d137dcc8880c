"""A small host-side implementation of the card's host link, for tests."""

import os
import select
import struct
import time
from binascii import crc_hqx

from firmware_sim import regmap as rm

FLAG = bytes((rm.FRAME_FLAG,))
ESC = bytes((rm.FRAME_ESCAPE,))


def frame(body: bytes) -> bytes:
    content = body + struct.pack(">H", crc_hqx(body, 0xFFFF))
    content = content.replace(ESC, b"\x7d\x5d").replace(FLAG, b"\x7d\x5e")
    return FLAG + content + FLAG


def unframe(raw: bytes) -> bytes | None:
    """The body of one frame's escaped contents, or None if its CRC is bad."""
    out = bytearray()
    it = iter(raw)
    for b in it:
        out.append(next(it) ^ 0x20 if b == rm.FRAME_ESCAPE else b)
    if len(out) < 4 or crc_hqx(bytes(out), 0xFFFF):
        return None
    return bytes(out[:-2])


class Link:
    """Blocking host side of the link over the pty slave.

    Its write() and command() follow the host rule of datasheet 4.5: never a WRITE or COMMAND
    on a tag whose last request was byte-identical (that would be taken for a retry)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._buf = b""
        self.irqs: list[int] = []
        self.bad_frames = 0
        self.tag = 0
        self._sent: dict[int, bytes] = {}  # tag -> the last request sent on it

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_tag(self) -> int:
        self.tag = self.tag % 255 + 1
        return self.tag

    def send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[n:]

    def fresh_tag(self, kind: int, payload: bytes) -> int:
        """The next tag on which (kind, payload) is a new request, not a retry."""
        while True:
            tag = self.next_tag()
            if self._sent.get(tag) != bytes((kind, tag)) + payload:
                return tag

    def send(self, body: bytes) -> None:
        self._sent[body[1]] = body
        self.send_raw(frame(body))

    def recv_frame(self, timeout: float = 1.0) -> bytes | None:
        """The next good frame's body (IRQ frames included), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while FLAG in self._buf:
                raw, _, rest = self._buf.partition(FLAG)
                self._buf = rest
                if raw:
                    body = unframe(raw)
                    if body is None:
                        self.bad_frames += 1
                        continue
                    return body
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    self._buf += os.read(self.fd, 65536)
                except BlockingIOError:  # the card flushed unread output at a HELLO
                    pass

    def response(self, tag: int, timeout: float = 1.0) -> bytes | None:
        """The next response with `tag`; IRQ frames met on the way go to self.irqs."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if body is None:
                return None
            if body[0] == rm.T_IRQ:
                self.irqs.append(struct.unpack_from("<I", body, 2)[0])
            elif body[1] == tag:
                return body

    def request(self, body: bytes, timeout: float = 1.0) -> bytes:
        self.send(body)
        resp = self.response(body[1], timeout)
        assert resp is not None, f"no response to {body.hex()}"
        assert resp[0] == body[0] | rm.T_RESPONSE
        return resp

    def hello(self, version: int = rm.PROTO_VERSION) -> tuple[int, int, int, int]:
        """(status, card version, magic, boot id)"""
        resp = self.request(struct.pack("<BBH", rm.T_HELLO, self.next_tag(), version))
        status, ver, magic, boot = struct.unpack_from("<BHII", resp, 2)
        return status, ver, magic, boot

    def read_status(self, addr: int, length: int) -> tuple[int, bytes]:
        resp = self.request(struct.pack("<BBIH", rm.T_READ, self.next_tag(), addr, length))
        return resp[2], resp[3:]

    def read(self, addr: int, length: int) -> bytes:
        status, data = self.read_status(addr, length)
        assert status == rm.S_OK, f"READ {addr:#x}+{length}: status {status}"
        assert len(data) == length
        return data

    def u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def write(self, addr: int, data: bytes) -> int:
        payload = struct.pack("<I", addr) + data
        resp = self.request(bytes((rm.T_WRITE, self.fresh_tag(rm.T_WRITE, payload))) + payload)
        return resp[2]

    def command(self, block: int, mailbox: bytes) -> bytes:
        """A COMMAND request; the response payload (status, then STATUS and SEQ if OK)."""
        payload = struct.pack("<H", block) + mailbox
        tag = self.fresh_tag(rm.T_COMMAND, payload)
        return self.request(bytes((rm.T_COMMAND, tag)) + payload)[2:]

    def write_u32(self, addr: int, value: int) -> int:
        return self.write(addr, struct.pack("<I", value))

    def drain(self) -> list[tuple[int, int, int, int, int]]:
        """Drain the event ring per the datasheet; (span, channel, code, arg, seq) each."""
        head, tail = struct.unpack("<II", self.read(rm.RING_HEAD, 8))
        events: list[tuple[int, int, int, int, int]] = []
        n = tail
        while n != head:
            idx = n % rm.RING_ENTRIES
            count = min((head - n) & 0xFFFFFFFF, rm.RING_ENTRIES - idx)
            data = self.read(rm.RING_ENTRIES_BASE + idx * rm.EVENT_SIZE, count * rm.EVENT_SIZE)
            events.extend(struct.iter_unpack("<BBBBI", data))
            n = (n + count) & 0xFFFFFFFF
        assert self.write_u32(rm.RING_TAIL, head) == rm.S_OK
        return events
