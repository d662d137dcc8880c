"""Device: the low-level handle on one card, a thin typed layer over the C driver.

Every method may be called from several threads at once (the C driver releases the GIL and
serialises what needs it). Driver errors become the exceptions of telecard.errors; when the
card answers NOT_READY (it rebooted) the device handshakes again, so `info` carries the new
BOOT_ID, and CardResetError is raised.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import termios
import threading
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple

import serial  # type: ignore[import-untyped,unused-ignore]
import serial.tools.list_ports  # type: ignore[import-untyped,unused-ignore]

from ._cdriver import ffi, lib
from .cause_ie import CauseIE, cause_from_c
from .device_url import parse_device
from .errors import (
    CommandError,
    DeviceBusyError,
    DeviceLostError,
    DeviceOpenError,
    MalformedCauseError,
    TelecardError,
    error_class,
)
from .registers import BLOCK_LEN, CardState, ChannelBlock, Command, MailboxStatus, card_state
from .timeouts import check_timeout, wait_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CardInfo:
    """The card's identity registers (datasheet 2.1), read at the handshake: `boot_id` changes
    at every firmware boot."""

    magic: int
    hw_version: int
    fw_version: int
    proto_version: int
    boot_id: int
    num_spans: int


_MAILBOX_STATUSES: Final[dict[int, MailboxStatus]] = {m.value: m for m in MailboxStatus}


class CommandResult(NamedTuple):
    """A mailbox command's result: its status and the channel's registers right after it."""

    status: MailboxStatus
    state: CardState | None
    seq: int


class CallSetup(NamedTuple):
    """MAKE_CALL's fields beside the numbers, as `Device.command()` takes them: the called
    and calling numbering plans, the calling presentation and the bearer (zeros: the card's
    defaults)."""

    called_plan: int = 0
    calling_plan: int = 0
    calling_pres: int = 0
    bearer: int = 0


DEFAULT_SETUP: Final = CallSetup()
"""The card's defaults: what every command but MAKE_CALL carries."""


class Event(NamedTuple):
    """One entry of the card's event ring (datasheet 2.3): `code` an EventCode value, `arg`
    its argument, `seq` the channel's SEQ when the card wrote it."""

    span: int
    channel: int
    code: int
    arg: int
    seq: int
    # A posted INCOMING or CLEARED event's channel block (registers 0x00-0x6F) as it was
    # when the card wrote the event; empty when the event came from the ring.
    snapshot: bytes = b""


# tc_event as laid out in C: the four u8, u32 seq, u8 snap_len, snap[], padding.
_C_EVENT = struct.Struct(
    f"<4BIB{lib.TC_POST_SNAPSHOT_LEN}s{ffi.sizeof('tc_event') - 9 - lib.TC_POST_SNAPSHOT_LEN}x"
)


@dataclass(frozen=True, slots=True)
class LinkStats:
    """The host side's link counters (the card keeps its own in LINK_RX_* registers)."""

    frames_tx: int
    frames_rx: int
    crc_errors: int
    discarded_bytes: int
    unexpected: int
    retries: int
    timeouts: int
    irqs: int
    event_frames: int
    event_frames_bad: int
    events_dropped: int  # posted events the driver's queue had no room for
    event_queue_peak: int  # most posted events queued at once


def _message(code: int) -> str:
    text: bytes = ffi.string(lib.tc_strerror(code))
    return text.decode()


def raise_for(code: int, context: str = "", *, opening: bool = False) -> None:
    """Raise the exception for a negative driver code (nothing for 0 or more); `opening`:
    the code came from opening the device."""
    if code >= 0:
        return
    cls = error_class(code, lib, opening=opening)
    msg = f"{context}: {_message(code)}" if context else _message(code)
    raise cls(msg, code)


def _info_from_c(c: Any) -> CardInfo:
    return CardInfo(
        magic=int(c.magic),
        hw_version=int(c.hw_version),
        fw_version=int(c.fw_version),
        proto_version=int(c.proto_version),
        boot_id=int(c.boot_id),
        num_spans=int(c.num_spans),
    )


# The driver's per-response wait and resend count (it multiplies them, in int milliseconds).
_MAX_TIMEOUT = 60.0
_MAX_RETRIES = 100


def _options(timeout: float, retries: int, observe: bool = False) -> Any:
    seconds = check_timeout(timeout, "timeout")
    if seconds is None or not 0 < seconds <= _MAX_TIMEOUT:
        raise ValueError(f"timeout must be more than 0 and at most {_MAX_TIMEOUT} s, not {timeout}")
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise ValueError(f"retries must be an int, not {retries!r}")
    if not 0 <= retries <= _MAX_RETRIES:
        raise ValueError(f"retries must be 0 to {_MAX_RETRIES}, not {retries}")
    opt = ffi.new("tc_options *")
    opt.timeout_ms = max(1, round(seconds * 1000))
    opt.retries = retries
    opt.observe = int(observe)
    return opt


def monitor_port_paths(path: str) -> list[str]:
    """The monitor ports found beside the control port `path` (datasheet 4.6: PATH.monitor1,
    PATH.monitor2, ... up to the first missing), in order."""
    found = []
    for port in range(1, lib.TC_MAX_MONITOR_PORTS + 1):
        candidate = f"{path}.monitor{port}"
        if not os.path.lexists(candidate):
            break
        found.append(candidate)
    return found


# Why an open was refused as busy, and what to do about it.
_BUSY_HINT: Final = (
    "; a card takes one controller at a time: to watch it beside its controller open it with"
    " observe=True (`telecard monitor` and `telecard status` do)"
)
_NO_MONITOR_HINT: Final = (
    "; no monitor port beside it (PATH.monitor1 ...): observe through one of the card's"
    " monitor ports (`python -m firmware_sim --link PATH` makes them)"
)


# The most events one drain hands out (the driver's posted queue holds no more).
_MAX_DRAIN: Final = lib.TC_EVENT_QUEUE_CAP


_NUMBER_MAX: Final[int] = lib.TC_NUMBER_MAX
_DRAIN_OVERFLOW: Final[int] = lib.TC_DRAIN_OVERFLOW
_CAUSE_MAX: Final[int] = lib.TC_CAUSE_MAX
_PRES_BITS: Final[int] = lib.TC_PRES_MASK | lib.TC_SCREEN_MASK
_BEARER_CODES: Final = frozenset(range(lib.TC_BEARER_DIGITAL + 1))


def _digits(name: str, number: str) -> bytes:
    if not isinstance(number, str) or not number.isascii():
        raise ValueError(f"{name} must be a str of ASCII digits, not {number!r}")
    data = number.encode("ascii")
    if len(data) > _NUMBER_MAX:
        raise ValueError(f"{name} number longer than {_NUMBER_MAX} digits")
    return data


def _register_range(addr: int, n: int) -> None:
    """ValueError unless [addr, addr + n) lies in the register space (before any allocation)."""
    for name, value in (("addr", addr), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, not {value!r}")
    if addr < 0 or n < 0 or addr + n > lib.TC_REG_SPACE_SIZE:
        raise ValueError(
            f"addr {addr:#x} n {n} is outside the register space (0 to {lib.TC_REG_SPACE_SIZE:#x})"
        )


_MAX_SPANS: Final[int] = lib.TC_MAX_SPANS
_SLOTS: Final[int] = lib.TC_SLOTS_PER_SPAN


def _channel(span: int, ts: int) -> None:
    """ValueError unless span and ts name a channel block (datasheet 2.4)."""
    # type() is int: bool (an int subclass) is refused with the rest.
    if type(span) is int and type(ts) is int and 0 <= span < _MAX_SPANS and 0 <= ts < _SLOTS:
        return
    for name, value, limit in (("span", span, _MAX_SPANS), ("ts", ts, _SLOTS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise ValueError(f"{name} must be an int from 0 to {limit - 1}, not {value!r}")


def _command_args(
    span: int, ts: int, cmd: int, called: str, calling: str, cause: bytes, setup: CallSetup
) -> Any:
    """A tc_command_args for `Device.command()`'s arguments; ValueError for what the card
    could not be sent."""
    _channel(span, ts)
    # CMD 0 is no command; codes the card does not know are its to refuse (0x84)
    if isinstance(cmd, bool) or not isinstance(cmd, int) or not 0 < cmd <= 0xFF:
        raise ValueError(f"cmd must be a command code from 1 to 255, not {cmd!r}")
    called_b, calling_b = _digits("called", called), _digits("calling", calling)
    if not isinstance(cause, (bytes, bytearray)):
        raise ValueError(f"cause must be bytes (cause IE octets), not {cause!r}")
    if len(cause) > _CAUSE_MAX:
        raise ValueError(f"cause longer than {_CAUSE_MAX} octets")
    called_plan, calling_plan, calling_pres, bearer = setup
    # negative values have every high bit set
    if (
        (called_plan | calling_plan) >> 7
        or calling_pres & ~_PRES_BITS
        or bearer not in _BEARER_CODES
    ):
        raise ValueError(
            f"bad MAKE_CALL fields: plans {called_plan!r}/{calling_plan!r}, presentation "
            f"{calling_pres!r}, bearer {bearer!r}"
        )
    args = ffi.new(
        "tc_command_args *",
        {
            "cmd": cmd,
            "called_len": len(called_b),
            "calling_len": len(calling_b),
            "cause_len": len(cause),
            "called_plan": called_plan,
            "calling_plan": calling_plan,
            "calling_pres": calling_pres,
            "bearer": bearer,
            "called": called_b,
            "calling": calling_b,
        },
    )
    if cause:
        ffi.memmove(args.cause, bytes(cause), len(cause))
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "span %d channel %d: command %s (called %s, calling %s, cause %s)",
            span,
            ts,
            _command_name(cmd),
            called or "-",
            calling or "-",
            bytes(cause).hex() or "-",
        )
    return args


class Device:
    """An open card: registers, interrupts, the event ring, cause registers and mailboxes."""

    def __init__(self, handle: Any, path: str, *, observer: bool = False) -> None:
        """Wrap a tc_handle ** from tc_open; use Device.open()."""
        self._h = ffi.gc(handle, lib.tc_free)
        self.path = path
        #: Opened on a monitor port with observe=True: reads only (datasheet 4.6).
        self.observer = observer
        self._handshake_lock = threading.RLock()
        self._handshakes = 0
        self._drain_lock = threading.Lock()
        self._drain_buf = ffi.new("tc_event[]", 1024)
        self._drain_flags = ffi.new("uint32_t *")
        self._pools: weakref.WeakSet[CommandPool] = weakref.WeakSet()
        info = ffi.new("tc_info *")
        lib.tc_get_info(self._h, info)
        self._info = _info_from_c(info)

    def __repr__(self) -> str:
        return f"<Device {self.path} boot_id={self._info.boot_id:#010x}>"

    @classmethod
    def open(
        cls,
        device: str | os.PathLike[str],
        *,
        timeout: float = 0.25,
        retries: int = 3,
        observe: bool = False,
    ) -> Device:
        """Open `device` (a path, or `PATH?baud=N` for a serial port) and handshake.

        `timeout` is the wait for each response and `retries` the number of resends.
        `observe`: open an observer session (datasheet 4.6) on the first free monitor port
        beside the control port `device` (PATH.monitor1, ...), or on `device` itself when it has
        none (a monitor port's own path): reads and events only, while another process drives
        the card; anything that would change the card raises ObserverError.
        """
        url = parse_device(device)
        opt = _options(timeout, retries, observe)
        out = ffi.new("tc_handle **")
        ports = monitor_port_paths(url.path) if observe else []
        rc = -errno.EBUSY
        for path in ports or [url.path]:
            rc = _open_port(path, url.baud, opt, out)
            if rc != -errno.EBUSY:
                break
        if rc == -errno.EBUSY:
            if len(ports) > 1:
                where = f"every monitor port beside it ({', '.join(ports)}) is in use"
                raise DeviceBusyError(f"cannot open {url.path}: {where}", rc)
            hint = _BUSY_HINT if not observe else "" if ports else _NO_MONITOR_HINT
            raise DeviceBusyError(f"cannot open {path}: {_message(rc)}{hint}", rc)
        raise_for(rc, f"cannot open {path}", opening=True)
        dev = cls(out[0], path, observer=observe)
        log.info(
            "opened %s%s (boot id %#010x)", path, " to observe" if observe else "",
            dev.info.boot_id,
        )
        return dev

    def close(self) -> None:
        """Close the device; threads blocked in it get InvalidStateError, and the command
        pools stop once their commands are reaped."""
        lib.tc_close(self._h)
        for pool in self._pools:
            pool.stop()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def info(self) -> CardInfo:
        """The identity the latest handshake read (a new BOOT_ID after a card reset)."""
        return self._info

    def _check(self, session: int, rc: int, context: str = "") -> int:
        """Raise for a driver error. `session` is the handshake count read before the
        request went out (callers pass self._handshakes first, so it is evaluated first)."""
        if rc == -lib.TC_ENOTREADY:
            self._rehandshake(session)
        raise_for(rc, context)
        return rc

    def _rehandshake(self, session: int) -> None:
        # Every request in flight when the card rebooted comes back NOT_READY. One HELLO
        # serves them all: a second one would empty the card's retry cache under requests
        # sent since the first, and a retried write among them would act twice.
        with self._handshake_lock:
            if self._handshakes != session:
                return
            log.info("%s: the card rebooted (NOT_READY): handshaking again", self.path)
            try:
                self.handshake()
            except TelecardError as exc:
                log.warning("%s: handshake after a reboot failed: %s", self.path, exc)

    def handshake(self) -> CardInfo:
        """HELLO again (after a card reset) and refresh `info`."""
        with self._handshake_lock:
            info = ffi.new("tc_info *")
            raise_for(lib.tc_handshake(self._h, info), "handshake")
            self._info = _info_from_c(info)
            self._handshakes += 1
            return self._info

    def read(self, addr: int, n: int) -> bytes:
        """Read `n` register bytes from `addr`."""
        _register_range(addr, n)
        buf = ffi.new("uint8_t[]", n)
        self._check(self._handshakes, lib.tc_read(self._h, addr, buf, n), f"read 0x{addr:05x}+{n}")
        return bytes(ffi.buffer(buf, n))

    def write(self, addr: int, data: bytes) -> None:
        """Write `data` to the registers at `addr`."""
        if isinstance(data, (int, str)) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        _register_range(addr, len(data))
        self._check(
            self._handshakes, lib.tc_write(self._h, addr, data, len(data)), f"write 0x{addr:05x}"
        )

    def wait_irq(self, timeout: float | None) -> int | None:
        """The interrupt bits seen since the previous call, or None after `timeout` s. Of
        several threads waiting, the one that began last takes an interrupt."""
        status = ffi.new("uint32_t *")
        session = self._handshakes
        ms = wait_ms(check_timeout(timeout, "timeout"))
        return self._bits(session, lib.tc_wait_irq(self._h, ms, status), status)

    def wait_events(self, timeout: float | None, *, standby: bool = False) -> int | None:
        """`wait_irq()`, but also at once while posted events wait to be drained (whoever
        took their interrupt): for threads that take turns draining. `standby`: only while
        no other thread waits for the card's news (an event thread standing by)."""
        status = ffi.new("uint32_t *")
        session = self._handshakes
        ms = wait_ms(check_timeout(timeout, "timeout"))
        rc = lib.tc_wait_events(self._h, ms, int(standby), status)
        return self._bits(session, rc, status)

    def _bits(self, session: int, rc: int, status: Any) -> int | None:
        """A wait's interrupt bits, None when it timed out (rc 0); raises for an error."""
        return int(status[0]) if self._check(session, rc) > 0 else None

    def set_event_post(self, on: bool = True, *, auto_ack: bool = True) -> None:
        """Have the card post its events in EVENTS frames (datasheet 3.1), or stop it.

        With `auto_ack` the card counts them consumed as it sends them, so a slow event thread
        never makes it drop events; without, the driver acknowledges them as they are drained.
        A card reset turns posting off; set it again after CardResetError.
        """
        mode = lib.TC_POST_ENABLE | (lib.TC_POST_AUTO_ACK if auto_ack else 0) if on else 0
        self._check(self._handshakes, lib.tc_set_event_post(self._h, mode), "EVENT_POST")

    def drain_events(self, max: int = 1024) -> tuple[list[Event], bool]:
        """Take up to `max` events (posted ones first, without a register access) in ring
        order; the flag says the card dropped events."""
        if isinstance(max, bool) or not isinstance(max, int) or not 1 <= max <= _MAX_DRAIN:
            raise ValueError(f"max must be an int from 1 to {_MAX_DRAIN}, not {max!r}")
        # One buffer for every drain (allocating and zeroing 127 KB each time cost more than
        # the drain itself); the lock keeps concurrent drains out of each other's events.
        with self._drain_lock:
            if len(self._drain_buf) < max:
                self._drain_buf = ffi.new("tc_event[]", max)
            out, flags = self._drain_buf, self._drain_flags
            n = self._check(
                self._handshakes, lib.tc_drain_events(self._h, out, max, flags), "drain events"
            )
            if not n:
                return [], bool(flags[0] & _DRAIN_OVERFLOW)
            make = Event._make  # a third of the time of Event(...) for a thousand events
            events = [
                make((span, channel, code, arg, seq, snap[:snap_len] if snap_len else b""))
                for span, channel, code, arg, seq, snap_len, snap in _C_EVENT.iter_unpack(
                    ffi.buffer(out, n * _C_EVENT.size)
                )
            ]
            return events, bool(flags[0] & _DRAIN_OVERFLOW)

    def read_channel(self, span: int, ts: int) -> ChannelBlock:
        """Read and decode one channel's registers (datasheet 2.4)."""
        _channel(span, ts)
        addr = lib.TC_CHAN_BASE + (span * lib.TC_SLOTS_PER_SPAN + ts) * lib.TC_CHAN_STRIDE
        return ChannelBlock.parse(self.read(addr, BLOCK_LEN))

    def channel_cause(self, span: int, ts: int) -> CauseIE | None:
        """The cause recorded on a channel, None when none is (MalformedCauseError if bad)."""
        _channel(span, ts)
        c = ffi.new("tc_cause *")
        session = self._handshakes
        rc = lib.tc_channel_cause(self._h, span, ts, c, ffi.NULL)
        if rc < 0 and error_class(rc, lib) is MalformedCauseError:
            raw = bytes(ffi.buffer(c.raw, c.raw_len))
            raise MalformedCauseError(f"{_message(rc)}: {raw.hex()}", rc, raw)
        self._check(session, rc, f"cause of {span}/{ts}")
        return cause_from_c(c) if rc > 0 else None

    def command(
        self,
        span: int,
        ts: int,
        cmd: Command,
        *,
        called: str = "",
        calling: str = "",
        cause: bytes = b"",
        setup: CallSetup = DEFAULT_SETUP,
    ) -> CommandResult:
        """Run a mailbox command; its result carries the channel's state and SEQ right after
        it (CommandError on a refusal). MAKE_CALL's `setup` fields (plans: type of number << 4
        | numbering plan; presentation << 5 | screening; bearer) are register values
        (datasheet 2.5); ValueError for bits they cannot have."""
        args = _command_args(span, ts, cmd, called, calling, cause, setup)
        result = ffi.new("tc_command_result *")
        session = self._handshakes
        rc = lib.tc_command(self._h, span, ts, args, result)
        return self._command_outcome(session, span, ts, cmd, rc, result)

    def _command_outcome(
        self, session: int, span: int, ts: int, cmd: Command, rc: int, result: Any
    ) -> CommandResult:
        """tc_command()'s `rc` and `result` as `command()` returns or raises them."""
        if rc < 0:
            if log.isEnabledFor(logging.DEBUG):
                name = _command_name(cmd)
                log.debug("span %d channel %d: %s failed: %s", span, ts, name, _message(rc))
            if error_class(rc, lib) is CommandError:
                raise CommandError(
                    f"command {cmd} on {span}/{ts}: {_message(rc)}", rc, int(result.status)
                )
            self._check(session, rc, f"command {cmd} on {span}/{ts}")
        done = CommandResult(
            _MAILBOX_STATUSES.get(result.status, MailboxStatus.IDLE),
            card_state(result.state),
            result.seq,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "span %d channel %d: %s %s, channel %s at seq %d",
                span,
                ts,
                _command_name(cmd),
                done.status,
                done.state,
                done.seq,
            )
        return done

    def command_pool(self, threads: int) -> CommandPool:
        """Commands run on `threads` of the driver's own threads (see CommandPool); closing
        the device stops the pool."""
        if type(threads) is not int or not 1 <= threads <= lib.TC_MAX_OUTSTANDING:
            raise ValueError(
                f"threads must be an int from 1 to {lib.TC_MAX_OUTSTANDING}, not {threads!r}"
            )
        pool = CommandPool(self, threads)
        self._pools.add(pool)
        return pool

    @property
    def stats(self) -> LinkStats:
        """The driver's link counters since the device was opened."""
        s = ffi.new("tc_stats *")
        lib.tc_get_stats(self._h, s)
        return LinkStats(
            frames_tx=int(s.frames_tx),
            frames_rx=int(s.frames_rx),
            crc_errors=int(s.crc_errors),
            discarded_bytes=int(s.discarded_bytes),
            unexpected=int(s.unexpected),
            retries=int(s.retries),
            timeouts=int(s.timeouts),
            irqs=int(s.irqs),
            event_frames=int(s.event_frames),
            event_frames_bad=int(s.event_frames_bad),
            events_dropped=int(s.events_dropped),
            event_queue_peak=int(s.event_queue_peak),
        )


def _open_port(path: str, baud: int | None, opt: Any, out: Any) -> int:
    """tc_open `path` (through pyserial at `baud`, if given): 0 or the driver's error code."""
    if baud is None:
        rc: int = lib.tc_open(os.fsencode(path), opt, out)
        return rc
    raise_for(lib.tc_check_device(os.fsencode(path)), f"cannot open {path}", opening=True)
    found = _tty_settings(path)
    try:
        fd = _open_serial(path, baud)
    except DeviceBusyError:
        return -errno.EBUSY
    rc = lib.tc_open_fd(fd, opt, out)
    if rc < 0 and found is not None:
        # the driver put back what pyserial had set; this is what the port had
        _set_tty(path, found)
    return rc


def _command_name(cmd: int) -> str:
    """A mailbox command's datasheet name, or its code in hex for one it does not define."""
    try:
        return Command(cmd).name
    except ValueError:
        return f"{cmd:#04x}"


def _open_serial(path: str, baud: int) -> int:
    """Open and configure a serial port with pyserial; return a dup of its fd (locked)."""
    try:
        port = serial.Serial(path, baudrate=baud, exclusive=True)
    except (ValueError, OverflowError) as exc:  # pyserial's, for a rate the port cannot take
        raise ValueError(f"baud {baud} is not a rate {path} can be set to: {exc}") from exc
    except serial.SerialException as exc:
        if "exclusively lock" in str(exc):
            raise DeviceBusyError(f"cannot open {path}: device busy") from exc
        raise _open_error(exc.errno, f"cannot open {path}: {exc}") from exc
    try:
        # the flock belongs to the open file description, which the dup shares
        return os.dup(port.fileno())
    finally:
        port.close()


def _tty_settings(path: str) -> list[Any] | None:
    """A tty's settings as found (None if it is no tty or cannot be opened: the open that
    follows reports why)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return termios.tcgetattr(fd) if os.isatty(fd) else None
    finally:
        os.close(fd)


def _set_tty(path: str, settings: list[Any]) -> None:
    """Put back a tty's settings (as _tty_settings found them); best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            termios.tcsetattr(fd, termios.TCSANOW, settings)
        finally:
            os.close(fd)


def _open_error(err: int | None, message: str) -> TelecardError:
    """The error for pyserial's failure to open, classed as the driver's own open errors."""
    if not err:
        return DeviceOpenError(message)
    return error_class(-err, lib, opening=True)(message, -err)


def list_devices() -> list[str]:
    """Serial ports that may have a card attached (UART or USB-CDC)."""
    return sorted(p.device for p in serial.tools.list_ports.comports())


class CommandPool:
    """Mailbox commands run on the driver's own threads (tc_pool), for a caller that must
    not block on the link, an event loop: `submit()` returns at once and one thread
    `reap()`s the results in batches. The pool's threads never take the GIL. Obtain one
    from `Device.command_pool()`."""

    def __init__(self, device: Device, threads: int) -> None:
        out = ffi.new("tc_pool **")
        handle = device._h
        raise_for(lib.tc_pool_new(handle, threads, out), "command pool")
        self._dev = device
        # The finalizer holds the handle: it must outlive the pool, whose threads may still
        # be running queued commands on it, whatever order the two are collected in.
        self._p = ffi.gc(out[0], lambda pool, _handle=handle: lib.tc_pool_free(pool))
        self._done = ffi.new("tc_pool_done[]", lib.TC_POOL_JOBS)
        self._sent: dict[int, tuple[int, int, int, Command]] = {}  # token: session, span, ts, cmd

    def submit(
        self,
        token: int,
        span: int,
        ts: int,
        cmd: Command,
        *,
        called: str = "",
        calling: str = "",
        cause: bytes = b"",
        setup: CallSetup = DEFAULT_SETUP,
    ) -> bool:
        """Queue `Device.command()`'s command, its result to come from `reap()` under
        `token` (unique among those not yet reaped); False when the pool is full (run it
        some other way). ValueError as command(); DeviceLostError once the pool stops."""
        args = _command_args(span, ts, cmd, called, calling, cause, setup)
        self._sent[token] = (self._dev._handshakes, span, ts, cmd)
        rc = lib.tc_pool_submit(self._p, token, span, ts, args)
        if rc == 0:
            return True
        del self._sent[token]
        if rc == -errno.EAGAIN:
            return False
        if rc == -errno.EBADF:
            raise DeviceLostError("the card is closed")
        raise_for(rc, "command pool")
        return False

    def reap(self, timeout: float | None) -> list[tuple[int, CommandResult | TelecardError]] | None:
        """The results ready, waiting up to `timeout` seconds for the first (the only thread
        to call it): (token, what command() would return or raise) each; None once the pool
        has stopped and everything submitted has been reaped."""
        n = lib.tc_pool_reap(self._p, self._done, lib.TC_POOL_JOBS, wait_ms(timeout))
        if n < 0:
            return None
        reaped: list[tuple[int, CommandResult | TelecardError]] = []
        for i in range(n):
            done = self._done[i]
            session, span, ts, cmd = self._sent.pop(done.token)
            try:
                outcome: CommandResult | TelecardError = self._dev._command_outcome(
                    session, span, ts, cmd, done.rc, done.result
                )
            except TelecardError as exc:
                outcome = exc
            reaped.append((done.token, outcome))
        return reaped

    def stop(self) -> None:
        """Refuse new commands; `reap()` returns None once those submitted are reaped."""
        lib.tc_pool_stop(self._p)
