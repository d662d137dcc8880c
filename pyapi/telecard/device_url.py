"""Device strings: a path, or a serial port with its baud rate as `PATH?baud=N`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs

MAX_BAUD = 2**31 - 1
"""The highest rate a Linux serial port can be asked for (termios2 keeps it in 32 bits)."""


@dataclass(frozen=True, slots=True)
class DeviceURL:
    """A parsed device string."""

    path: str
    baud: int | None = None  # None: use the path as it is (a pty, or a port set up already)


def parse_device(device: str | os.PathLike[str]) -> DeviceURL:
    """Split `device` into its path and options; ValueError for anything unknown."""
    if not isinstance(device, (str, os.PathLike)):
        raise TypeError(f"device must be a path or a device string, not {device!r}")
    device = os.fspath(device)
    if "\0" in device:
        raise ValueError(f"device {device!r} holds a NUL character")
    path, sep, query = device.partition("?")
    if not path:
        raise ValueError(f"no device path in {device!r}")
    if sep and not query:
        raise ValueError(f"nothing after '?' in {device!r} (options are ?baud=N)")
    if not sep:
        return DeviceURL(path)
    options = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    unknown = set(options) - {"baud"}
    if unknown:
        raise ValueError(f"unknown device option(s) {sorted(unknown)} in {device!r}")
    values = options.get("baud", [])
    if len(values) != 1 or not values[0].isdigit() or not 0 < int(values[0]) <= MAX_BAUD:
        raise ValueError(f"baud must be one integer from 1 to {MAX_BAUD} in {device!r}")
    return DeviceURL(path, int(values[0]))
