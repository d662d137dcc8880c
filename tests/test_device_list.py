"""list_devices(): the serial ports (UART, USB-CDC) a card may be attached to."""

import os
import stat

from telecard import list_devices


def test_every_listed_device_is_a_character_device() -> None:
    devices = list_devices()
    assert devices == sorted(devices)
    for path in devices:
        assert stat.S_ISCHR(os.stat(path).st_mode), path
