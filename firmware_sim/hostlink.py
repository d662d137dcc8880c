"""The host link (datasheet section 4) served on the master side of a pseudo-terminal.

Runs on the card's event loop thread. The master fd is non-blocking; frames the host does not
read wait in an outgoing buffer, so a silent host never blocks the firmware. The control port
serves the controller; each monitor port (datasheet 4.6) serves one read-only observer.
"""

import asyncio
import os
import struct
import termios
from binascii import crc_hqx
from collections import deque

from firmware_sim import regmap as rm
from firmware_sim.firmware import Firmware

FLAG = bytes((rm.FRAME_FLAG,))
ESC = bytes((rm.FRAME_ESCAPE,))
_ESC_FLAG = bytes((rm.FRAME_ESCAPE, rm.FRAME_FLAG ^ rm.FRAME_ESCAPE_XOR))
_ESC_ESC = bytes((rm.FRAME_ESCAPE, rm.FRAME_ESCAPE ^ rm.FRAME_ESCAPE_XOR))
_MAX_FRAME = rm.MAX_BODY + 2  # unescaped body + CRC
_MAX_RAW = 2 * _MAX_FRAME  # the most an escaped frame can take on the wire
_MIN_FRAME = 4
OUT_LIMIT = 1 << 20  # outgoing bytes kept for a host that does not read; more are dropped
# A monitor port's bounded buffer for events (datasheet 4.6): EVENTS frames that would take its
# output past it are counted, not sent. Responses still go (the observer's requests bound them).
MONITOR_OUT_LIMIT = 64 << 10
# Requests that change nothing are executed again when resent rather than remembered, so a host
# may repeat an identical READ on a tag as often as it likes (datasheet 4.5).
_NOT_REMEMBERED = frozenset((rm.T_HELLO, rm.T_READ))

# Payload fields are little-endian like the registers; only the CRC is big-endian.
_HELLO_RESP = struct.Struct("<BBBHII")
_HELLO_REQ = struct.Struct("<H")
_HELLO_OBSERVER_LEN = 5  # type, tag, u16 version, u8 session (since 1.3)
_SESSION_FIRST = struct.Struct("<I")
_READ_REQ = struct.Struct("<IH")
_ADDR = struct.Struct("<I")
_BLOCK = struct.Struct("<H")
_COMMAND_RESP = struct.Struct("<BBBBIB")
_IRQ = struct.Struct("<BBI")
_EVENTS = struct.Struct("<BBIB")
_CRC = struct.Struct(">H")
_T_HELLO_RESP = rm.T_HELLO | rm.T_RESPONSE
_T_READ_RESP = rm.T_READ | rm.T_RESPONSE
_T_WRITE_RESP = rm.T_WRITE | rm.T_RESPONSE
_T_COMMAND_RESP = rm.T_COMMAND | rm.T_RESPONSE
_LINK_REGS_END = rm.REG_MONITOR_DROPPED + 4  # the port's own registers end here (4.6)
_M32 = 0xFFFFFFFF


def escape(content: bytes) -> bytes:
    return content.replace(ESC, _ESC_ESC).replace(FLAG, _ESC_FLAG)


def unescape(raw: bytes) -> bytes | None:
    """Undo the escaping of a frame's contents; None when an escape byte is dangling."""
    parts = raw.split(ESC)
    out = bytearray(parts[0])
    for part in parts[1:]:
        if not part:
            return None
        out.append(part[0] ^ rm.FRAME_ESCAPE_XOR)
        out += part[1:]
    return bytes(out)


def encode(body: bytes) -> bytes:
    """A complete frame on the wire for `body`."""
    return FLAG + escape(body + _CRC.pack(crc_hqx(body, 0xFFFF))) + FLAG


class HostLink:
    """Serves HELLO/READ/WRITE/COMMAND on the pty master and sends IRQ and EVENTS frames;
    the HostPort of Firmware. `port` 0 is the control port; n >= 1 is monitor port n, which
    serves observer sessions: READ only, every event posted, bounded output (datasheet 4.6).

    Fault counters (corrupt_tx, drop_tx, drop_rx, slow_frames) are set by Faults.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        master_fd: int,
        slave_fd: int,
        firmware: Firmware,
        port: int = 0,
    ) -> None:
        self.loop = loop
        self.fw = firmware
        self.port = port
        self._session_first = 0  # monitor port: ring index of the first event posted to it
        self.monitor_dropped = 0  # monitor port: events not posted since its HELLO (unread)
        self._fd = master_fd
        self._slave_fd = slave_fd  # held open so the pty survives the host closing it
        self._mem = firmware.regs.mem
        self._rx = b""
        self._in_frame = False
        self._out = bytearray()
        self._writing = False
        self._flush_scheduled = False
        self._reading = False
        self._stalled_until = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._irq_deferred = False
        self.ready = False
        # tag -> (the last WRITE or COMMAND received on it, the response sent)
        self._memory: dict[int, tuple[bytes, bytes]] = {}
        self.rx_frames = 0
        self.rx_crc_errors = 0
        self.rx_discarded = 0
        self.rx_duplicates = 0
        self.corrupt_tx = 0
        self.drop_tx = 0
        self.drop_rx = 0
        self.slow_frames = 0  # the next frames received are taken one every slow_interval
        self.slow_interval = 0.0
        self._backlog: deque[bytes] = deque()
        self._backlog_timer: asyncio.TimerHandle | None = None
        os.set_blocking(master_fd, False)

    def start(self) -> None:
        self._resume_reading()

    def close(self) -> None:
        """Close both pty fds: the host sees EIO / POLLHUP."""
        if self._fd < 0:
            return
        self._go_quiet()
        self._stall_timer = None
        os.close(self._fd)
        os.close(self._slave_fd)
        self._fd = self._slave_fd = -1
        self._out.clear()

    # --- HostPort -----------------------------------------------------------------------

    def on_boot(self) -> None:
        self.ready = False
        self._memory.clear()
        self.rx_frames = self.rx_crc_errors = self.rx_discarded = self.rx_duplicates = 0
        self.monitor_dropped = 0

    def send_irq(self, pending: int) -> None:
        if self._busy:
            # The response being built goes first; the IRQ follows it.
            self._irq_deferred = True
            return
        self._send(_IRQ.pack(rm.T_IRQ, 0, pending))

    def send_events(self, first: int, entries: list[bytes]) -> None:
        if self.port:
            # An observer gets the events from its HELLO on, while its buffer has room.
            if not self.ready:
                return
            skip = (self._session_first - first) & _M32
            if skip < len(entries):
                first, entries = (first + skip) & _M32, entries[skip:]
            elif skip <= _M32 >> 1:
                return
            size = 2 * (_EVENTS.size + sum(map(len, entries)) + _CRC.size) + 2
            if len(self._out) + size > MONITOR_OUT_LIMIT:
                self.monitor_dropped += len(entries)
                return
        # Not deferred like IRQ: an EVENTS frame may go ahead of a response being built.
        response_waiting = self._flush_scheduled
        self._send(_EVENTS.pack(rm.T_EVENTS, 0, first, len(entries)) + b"".join(entries))
        if not response_waiting:
            # Nothing of this step waits to go with it: out now, not a loop step later.
            self._flush_step()

    # --- receiving ----------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._reading and self._fd >= 0:
            self.loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            # EIO: no slave open (cannot happen while we hold one); stop rather than spin.
            self._pause_reading()
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Process bytes received from the host."""
        parts = data.split(FLAG)
        last = parts.pop()
        if parts:
            first = parts[0]
            if self._in_frame:
                parts[0] = self._rx + first if self._rx else first
            else:
                self.rx_discarded += len(first)
                parts[0] = b""
            self._rx = b""
            self._in_frame = True
            for raw in parts:
                if raw:
                    self._frame(raw)
        if self._in_frame:
            rx = self._rx + last if self._rx else last
            if len(rx) > _MAX_RAW:
                self.rx_discarded += len(rx)
                self._rx = b""
                self._in_frame = False
            else:
                self._rx = rx
        else:
            self.rx_discarded += len(last)

    def _frame(self, raw: bytes) -> None:
        if self._backlog or self.slow_frames:
            self._backlog.append(raw)
            if self._backlog_timer is None:
                self._backlog_timer = self.loop.call_later(self.slow_interval, self._answer_one)
            return
        self._frame_now(raw)

    def _answer_one(self) -> None:
        """The slow fault: take the oldest frame held back, and the next one in a while."""
        self._backlog_timer = None
        self.slow_frames = max(0, self.slow_frames - 1)
        self._frame_now(self._backlog.popleft())
        if self._backlog:
            delay = self.slow_interval if self.slow_frames else 0.0
            self._backlog_timer = self.loop.call_later(delay, self._answer_one)

    def _frame_now(self, raw: bytes) -> None:
        body = unescape(raw) if ESC in raw else raw
        if body is None or not _MIN_FRAME <= len(body) <= _MAX_FRAME:
            self.rx_discarded += len(raw)
            return
        if crc_hqx(body, 0xFFFF):
            self.rx_crc_errors += 1
            return
        if self.drop_rx:
            self.drop_rx -= 1
            return
        self.rx_frames += 1
        request = body[:-2]
        if self.port:
            self._send(self._observe(request))
            return
        tag = request[1]
        if request[0] == rm.T_HELLO and _session(request) == rm.SESSION_OBSERVER:
            # Changes nothing and feeds no watchdog: observers never take the control port.
            self._send(_HELLO_RESP.pack(_T_HELLO_RESP, tag, rm.S_WRONG_PORT, rm.PROTO_VERSION,
                                        rm.MAGIC_VALUE, self.fw.boot_id))
            return
        self.fw.host_alive()
        if request[0] == rm.T_HELLO:
            # Never from memory: a new session's HELLO may repeat the last one byte for
            # byte, and it must still empty the memory (datasheet 4.5).
            self._send(self._hello(request))
            return
        remembered = self._memory.pop(tag, None)
        if remembered is not None and remembered[0] == request:
            self.rx_duplicates += 1
            self._memory[tag] = remembered
            self._send(remembered[1])
            return
        self._busy = True
        try:
            response = self._execute(request)
        finally:
            self._busy = False
        if request[0] not in _NOT_REMEMBERED:
            self._memory[tag] = (request, response)
        self._send(response)
        if self._irq_deferred:
            self._irq_deferred = False
            pending = self.fw.irq_pending()
            if pending:
                self._send(_IRQ.pack(rm.T_IRQ, 0, pending))

    def _execute(self, request: bytes) -> bytes:
        kind = request[0]
        tag = request[1]
        if kind == rm.T_READ:
            if not self.ready:
                return bytes((_T_READ_RESP, tag, rm.S_NOT_READY))
            if len(request) != 8:
                return bytes((_T_READ_RESP, tag, rm.S_BAD_LENGTH))
            addr, length = _READ_REQ.unpack_from(request, 2)
            if not 1 <= length <= rm.MAX_DATA:
                return bytes((_T_READ_RESP, tag, rm.S_BAD_LENGTH))
            end = addr + length
            if end > rm.REG_SPACE_SIZE:
                return bytes((_T_READ_RESP, tag, rm.S_BAD_ADDRESS))
            if addr < _LINK_REGS_END:
                self._store_counters()
            return bytes((_T_READ_RESP, tag, rm.S_OK)) + self._mem[addr:end]
        if kind == rm.T_WRITE:
            if not self.ready:
                return bytes((_T_WRITE_RESP, tag, rm.S_NOT_READY))
            length = len(request) - 6
            if not 1 <= length <= rm.MAX_DATA:
                return bytes((_T_WRITE_RESP, tag, rm.S_BAD_LENGTH))
            addr = _ADDR.unpack_from(request, 2)[0]
            status = self.fw.host_write(addr, request[6:])
            return bytes((_T_WRITE_RESP, tag, status))
        if kind == rm.T_COMMAND:
            return self._command(request)
        return bytes((kind | rm.T_RESPONSE, tag, rm.S_UNKNOWN_TYPE))

    def _command(self, request: bytes) -> bytes:
        tag = request[1]
        if not self.ready:
            return bytes((_T_COMMAND_RESP, tag, rm.S_NOT_READY))
        data = request[4:]
        if not 1 <= len(data) <= rm.MBOX_COMMAND_MAX:
            return bytes((_T_COMMAND_RESP, tag, rm.S_BAD_LENGTH))
        # The request number above the block index only makes the request distinct (4.5).
        block = _BLOCK.unpack_from(request, 2)[0] & rm.COMMAND_BLOCK_MASK
        if data[rm.MBOX_CMD] == rm.CMD_NONE:
            return bytes((_T_COMMAND_RESP, tag, rm.S_BAD_VALUE))
        status, seq, state = self.fw.host_command(block, data)
        return _COMMAND_RESP.pack(_T_COMMAND_RESP, tag, rm.S_OK, status, seq, state)

    def _observe(self, request: bytes) -> bytes:
        """A monitor port's answer (datasheet 4.6): READ served, nothing that could change the
        card executed, nothing remembered."""
        kind, tag = request[0], request[1]
        if kind == rm.T_READ:
            return self._execute(request)
        if kind in (rm.T_WRITE, rm.T_COMMAND):
            return bytes((kind | rm.T_RESPONSE, tag, rm.S_OBSERVER))
        if kind != rm.T_HELLO:
            return bytes((kind | rm.T_RESPONSE, tag, rm.S_UNKNOWN_TYPE))
        status = _hello_status(request)
        if status == rm.S_OK and _session(request) != rm.SESSION_OBSERVER:
            status = rm.S_WRONG_PORT  # a controller, on a monitor port: nothing changes
        response = _HELLO_RESP.pack(
            _T_HELLO_RESP, tag, status, rm.PROTO_VERSION, rm.MAGIC_VALUE, self.fw.boot_id
        )
        if status != rm.S_OK:
            return response
        self._flush_output()
        self.ready = True
        self.monitor_dropped = 0
        self._session_first = self.fw.ring_head
        return response + _SESSION_FIRST.pack(self._session_first)

    def _hello(self, request: bytes) -> bytes:
        # A HELLO opens a new session: drop what an earlier session left unread and the
        # per-tag memory, so a restarted host reusing tags is never answered from it.
        self._memory.clear()
        self._flush_output()
        status = _hello_status(request)  # an observer's HELLO never gets here (_frame_now)
        if status == rm.S_OK:
            self.ready = True
            self.fw.host_session()
        return _HELLO_RESP.pack(
            _T_HELLO_RESP, request[1], status, rm.PROTO_VERSION, rm.MAGIC_VALUE, self.fw.boot_id
        )

    def _store_counters(self) -> None:
        regs = self.fw.regs
        regs.set_u32(rm.REG_LINK_RX_FRAMES, self.rx_frames & 0xFFFFFFFF)
        regs.set_u32(rm.REG_LINK_RX_CRC_ERRORS, self.rx_crc_errors & 0xFFFFFFFF)
        regs.set_u32(rm.REG_LINK_RX_DISCARDED, self.rx_discarded & 0xFFFFFFFF)
        regs.set_u32(rm.REG_LINK_RX_DUPLICATES, self.rx_duplicates & 0xFFFFFFFF)
        regs.set_u8(rm.REG_LINK_PORT, self.port)
        regs.set_u32(rm.REG_MONITOR_DROPPED, self.monitor_dropped & _M32)

    # --- sending ------------------------------------------------------------------------

    def _send(self, body: bytes) -> None:
        if self.drop_tx:
            self.drop_tx -= 1
            return
        content = body + _CRC.pack(crc_hqx(body, 0xFFFF))
        if self.corrupt_tx:
            self.corrupt_tx -= 1
            flipped = bytearray(content)
            flipped[len(flipped) // 2] ^= 0x01
            content = bytes(flipped)
        self.transmit(FLAG + escape(content) + FLAG)

    def transmit(self, wire: bytes) -> None:
        """Queue raw bytes for the host; they go out in one write with every other frame
        of this loop step (a response and the EVENTS frame of what its request changed
        reach the host together, and wake it once)."""
        if self._fd < 0 or len(self._out) + len(wire) > OUT_LIMIT:
            return
        self._out += wire
        if not (self._flush_scheduled or self._writing or self._stalled_until):
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_step)

    def _flush_step(self) -> None:
        self._flush_scheduled = False
        if self._out and not (self._writing or self._stalled_until) and self._fd >= 0:
            self._on_writable()
            if self._out:
                self._start_writing()

    def _start_writing(self) -> None:
        if not self._writing and not self._stalled_until and self._fd >= 0:
            self.loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        try:
            written = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._out)  # the pty is gone: nobody will read these bytes
        del self._out[:written]
        if not self._out and self._writing:
            self.loop.remove_writer(self._fd)
            self._writing = False

    def _flush_output(self) -> None:
        self._out.clear()
        if self._writing:
            self.loop.remove_writer(self._fd)
            self._writing = False
        termios.tcflush(self._slave_fd, termios.TCIFLUSH)

    # --- faults -------------------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        """Neither read nor answer for `seconds` (extends a stall in progress)."""
        if self._fd < 0:
            return
        until = self.loop.time() + seconds
        if until <= self._stalled_until:
            return
        self._stalled_until = until
        self._go_quiet()
        self._stall_timer = self.loop.call_at(until, self._unstall)

    def _go_quiet(self) -> None:
        """Stop reading, writing and any stall timer (output stays queued)."""
        self._pause_reading()
        if self._writing:
            self.loop.remove_writer(self._fd)
            self._writing = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()

    def _unstall(self) -> None:
        self._stall_timer = None
        self._stalled_until = 0.0
        if self._fd < 0:
            return
        if self._out:
            self._start_writing()
        self._resume_reading()


def _session(hello: bytes) -> int:
    """The session a HELLO asks for: its optional session byte (since 1.3), else controller."""
    return hello[4] if len(hello) == _HELLO_OBSERVER_LEN else rm.SESSION_CONTROLLER


def _hello_status(hello: bytes) -> int:
    """A HELLO's length, version and session byte checked: S_OK or the refusal."""
    if len(hello) not in (_HELLO_OBSERVER_LEN - 1, _HELLO_OBSERVER_LEN):
        return rm.S_BAD_LENGTH
    if _HELLO_REQ.unpack_from(hello, 2)[0] >> 8 != rm.PROTO_VERSION >> 8:
        return rm.S_BAD_VERSION
    if _session(hello) not in (rm.SESSION_CONTROLLER, rm.SESSION_OBSERVER):
        return rm.S_BAD_VALUE
    return rm.S_OK
