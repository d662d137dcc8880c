"""Whatever device path or argument the caller gives: a clear exception before any harm.

Opening refuses what is not a character device before a byte is written, calls a device that
does not answer the handshake "not a card" and leaves a tty as it found it; opening errors are
OSErrors, link time-outs TimeoutErrors; every argument is checked (ValueError naming it) before
it reaches the C driver or an allocation.
"""

from __future__ import annotations

import math
import os
import pty
import termios
from pathlib import Path

import pytest

import firmware_sim
from firmware_sim import regmap as rm
from telecard import (
    Card,
    CommandPendingError,
    Device,
    DeviceNotFoundError,
    DeviceOpenError,
    LinkTimeoutError,
    ProtocolError,
)
from telecard._cdriver import lib
from telecard.timeouts import wait_ms
from tests.linkproto import unframe


def test_a_regular_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "not-a-card"
    path.write_bytes(b"precious data")
    for device in (str(path), f"{path}?baud=9600"):
        with pytest.raises(DeviceOpenError, match="not a character device") as info:
            Device.open(device)
        assert isinstance(info.value, OSError)
    assert path.read_bytes() == b"precious data"


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(DeviceOpenError, match="not a character device"):
        Device.open(str(path))


def test_a_character_device_that_is_no_terminal_is_not_a_card() -> None:
    """A card's link is a serial port or a pty: /dev/null (or /dev/port, or a watchdog, which
    opening alone would arm) is refused from its sysfs class, before it is even opened."""
    for device in ("/dev/null", "/dev/zero", "/dev/null?baud=9600"):
        with pytest.raises(DeviceOpenError, match="not a card"):
            Device.open(device)
    assert lib.tc_check_device(b"/dev/null") == -lib.TC_ENOTTY
    assert lib.tc_check_device(b"/dev/ptmx") == 0  # a tty by its class


@pytest.mark.parametrize("device", ["/nonexistent", "/nonexistent?baud=9600"])
def test_a_missing_device_is_a_file_not_found_error(device: str) -> None:
    for opener in (Device.open, Card.open):
        with pytest.raises(FileNotFoundError) as info:
            opener(device)
        assert isinstance(info.value, DeviceNotFoundError)
        assert info.value.errno == 2


def test_a_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not a character device") as info:
        Device.open(str(tmp_path))
    assert isinstance(info.value, DeviceOpenError)


@pytest.mark.parametrize("options", ["", "?baud=9600"])
def test_a_tty_that_is_no_card_is_left_as_it_was(options: str) -> None:
    """A pty whose other end is not a card (a terminal, say): it gets the handshake and
    nothing more, then its settings back (also those pyserial changed for ?baud=), and it is
    not left exclusive."""
    master, slave = pty.openpty()
    try:
        name = os.ttyname(slave)
        before = termios.tcgetattr(slave)
        with pytest.raises(ProtocolError, match="not a card"):
            Device.open(name + options, timeout=0.05, retries=2)
        assert termios.tcgetattr(slave) == before
        os.close(os.open(name, os.O_RDWR | os.O_NOCTTY))  # TIOCEXCL is off again
        written = os.read(master, 65536).split(bytes((rm.FRAME_FLAG,)))
        bodies = [unframe(chunk) for chunk in written if chunk]
        assert len(bodies) == 3  # the first HELLO and its two resends
        assert all(b is not None and b[0] == rm.T_HELLO for b in bodies)
    finally:
        os.close(master)
        os.close(slave)


def test_a_link_timeout_is_a_timeout_error(sim: firmware_sim.SimulatedCard) -> None:
    with Device.open(sim.device_path, timeout=0.05, retries=1) as dev:
        sim.faults.stall(0.5)
        with pytest.raises(TimeoutError) as info:
            dev.read(rm.REG_BOOT_ID, 4)
    assert isinstance(info.value, LinkTimeoutError)
    assert info.value.errno == 110


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": 1e308}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"retries": 10**12}, "retries"),
        ({"retries": True}, "retries"),
    ],
)
def test_open_options_are_checked(
    sim: firmware_sim.SimulatedCard, options: dict[str, float], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        Device.open(sim.device_path, **options)


@pytest.mark.parametrize("baud", ["0", "99999999999999999999", "-5", "9600&baud=9600", "x"])
def test_a_bad_baud_rate_is_a_value_error(baud: str) -> None:
    with pytest.raises(ValueError, match="baud"):
        Device.open(f"/dev/ttyS0?baud={baud}")


def test_device_strings_are_checked(sim: firmware_sim.SimulatedCard) -> None:
    with pytest.raises(TypeError, match="device"):
        Card.open(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        Device.open("/dev/null\x00junk")
    with pytest.raises(ValueError, match="nothing after"):
        Device.open("/dev/null?")
    with Device.open(Path(sim.device_path)) as dev:  # a path object is a path
        assert dev.read(rm.REG_BOOT_ID, 4)


def test_arguments_are_checked_before_they_reach_the_driver(
    sim: firmware_sim.SimulatedCard,
) -> None:
    """Each a ValueError naming the argument: never an OverflowError from cffi, nor a
    MemoryError from allocating what the range check would have refused."""
    with Device.open(sim.device_path) as dev:
        checks = [
            (lambda: dev.read(0, 2**36), "n"),
            (lambda: dev.read(-1, 4), "addr"),
            (lambda: dev.read(2**40, 4), "addr"),
            (lambda: dev.write(lib.TC_REG_SPACE_SIZE, b"\0"), "addr"),
            (lambda: dev.write(0, 2**40), "data"),
            (lambda: dev.write(0, 5), "data"),
            (lambda: dev.write(0, "text"), "data"),
            (lambda: dev.command(0, 1, rm.CMD_MAKE_CALL, called=123), "called"),
            (lambda: dev.command(0, 1, rm.CMD_MAKE_CALL, called="\u00e9"), "called"),
            (lambda: dev.command(0, 1, rm.CMD_MAKE_CALL, called="1", calling=1), "calling"),
            (lambda: dev.command(0, 1, rm.CMD_RELEASE, cause="ab"), "cause"),
            (lambda: dev.wait_irq(math.nan), "timeout"),
            (lambda: dev.wait_irq(-1), "timeout"),
            (lambda: dev.wait_events(math.nan), "timeout"),
            (lambda: dev.drain_events(max=2**40), "max"),
            (lambda: dev.drain_events(max=0), "max"),
            (lambda: dev.read_channel(2**40, 1), "span"),
            (lambda: dev.channel_cause(0, -1), "ts"),
            (lambda: dev.command(0, 2**40, rm.CMD_RESERVE), "ts"),
        ]
        for call, name in checks:
            with pytest.raises(ValueError, match=name):
                call()
        # The device is still usable after all of them.
        assert dev.read(rm.REG_BOOT_ID, 4)


def test_a_wait_longer_than_the_driver_can_count_waits_without_a_limit() -> None:
    assert wait_ms(None) == -1
    assert wait_ms(math.inf) == -1
    assert wait_ms(1e308) == -1
    assert wait_ms(3600.0) == 3_600_000
    assert wait_ms(0.0) == 0


def test_a_command_answered_as_still_pending_has_its_own_error(
    sim: firmware_sim.SimulatedCard,
) -> None:
    """A COMMAND's response always carries the command's result (datasheet 4.3); a card that
    answers STATUS 1 (pending) is broken, and says so rather than "did not answer"."""
    with Device.open(sim.device_path) as dev:
        sim.firmware.host_command = lambda block, data: (rm.MB_PENDING, 0, 0)
        with pytest.raises(CommandPendingError, match="pending") as info:
            dev.command(0, 1, rm.CMD_RESERVE)
    assert isinstance(info.value, ProtocolError)
