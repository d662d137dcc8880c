"""Exceptions raised by telecard, and the mapping from the C driver's error codes."""

from __future__ import annotations

import errno

# Driver codes below this are errno values; from it on, the driver's own (telecard.h).
_ERRNO_LIMIT = 4096


class TelecardError(Exception):
    """Base of every telecard error; `code` is the driver's negative error code, if any.

    The errors that are also standard OSErrors (opening a device, link timeouts) carry the
    errno in `errno` as well, so `except OSError` and `except TimeoutError` work."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _set_errno(exc: OSError, code: int | None) -> None:
    """Give `exc` the errno of a negative driver `code` that is one."""
    if code is not None and 0 < -code < _ERRNO_LIMIT:
        exc.errno = -code


class DeviceOpenError(TelecardError, OSError):
    """The device could not be opened: it does not exist, is not a character device, or
    is not accessible."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message, code)
        _set_errno(self, code)


class DeviceNotFoundError(DeviceOpenError, FileNotFoundError):
    """No such device."""


class DevicePermissionError(DeviceOpenError, PermissionError):
    """The device may not be opened for reading and writing by this process."""


class DeviceBusyError(DeviceOpenError):
    """Another process or handle has the device open."""


class WrongPortError(DeviceOpenError):
    """The device is the card's other kind of port (datasheet 4.6): its control port opened to
    observe, or one of its read-only monitor ports opened to drive the card."""


class ObserverError(TelecardError, PermissionError):
    """The card refused a request that would change it: the handle is an observer (opened with
    `observe=True`, on a monitor port), which may only read (datasheet 4.6)."""


class DeviceLostError(TelecardError):
    """The device hung up or failed; the handle is unusable and must be reopened."""


class LinkTimeoutError(TelecardError, TimeoutError):
    """The card did not answer a request after every retry."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message, code)
        _set_errno(self, code)


class ProtocolError(TelecardError):
    """The card is not one we can drive, or it answered with an unexpected status."""


class CardResetError(TelecardError):
    """The card rebooted (BOOT_ID changed or it answers NOT_READY): handshake again."""


class MalformedCauseError(TelecardError, ValueError):
    """A cause information element that does not follow Q.931; `raw` holds its octets."""

    def __init__(self, message: str, code: int | None = None, raw: bytes = b"") -> None:
        super().__init__(message, code)
        self.raw = raw


class CommandPendingError(ProtocolError):
    """The card answered a command as still pending (or never run), which a COMMAND response
    never may (datasheet 4.3): the card is faulty, and the command's fate is unknown."""


class CommandError(TelecardError):
    """The card refused a mailbox command; `status` is the mailbox STATUS (0x81-0x85)."""

    def __init__(self, message: str, code: int | None = None, status: int = 0) -> None:
        super().__init__(message, code)
        self.status = status


class InvalidStateError(TelecardError):
    """An operation that the object's current state does not allow."""


_ERRNO_CLASSES: dict[int, type[TelecardError]] = {
    errno.EBUSY: DeviceBusyError,
    errno.ENODEV: DeviceLostError,
    errno.ETIMEDOUT: LinkTimeoutError,
    errno.EBADF: InvalidStateError,
    errno.ENOENT: DeviceNotFoundError,
    errno.ENOTDIR: DeviceNotFoundError,
    errno.EACCES: DevicePermissionError,
    errno.EPERM: DevicePermissionError,
}


def error_class(code: int, lib: object, *, opening: bool = False) -> type[TelecardError]:
    """The exception class for a negative driver code; `lib` is the cffi library.
    `opening`: the code came from opening the device, where any other errno is an
    OSError of the open (a directory, a device without a driver...)."""
    e = -code

    def tc(name: str) -> int:
        value: int = getattr(lib, name)
        return value

    if e in _ERRNO_CLASSES:
        return _ERRNO_CLASSES[e]
    if (opening and 0 < e < _ERRNO_LIMIT) or e in (tc("TC_ENOTCHR"), tc("TC_ENOTTY")):
        return DeviceOpenError
    if e in (tc("TC_ECONTROLPORT"), tc("TC_EMONITORPORT")):
        return WrongPortError
    if e == tc("TC_ES_OBSERVER"):
        return ObserverError
    if e == tc("TC_EMB_UNFINISHED"):
        return CommandPendingError
    if e in (tc("TC_ENOTREADY"),):
        return CardResetError
    if tc("TC_ECAUSE_EMPTY") <= e <= tc("TC_ECAUSE_LONG"):
        return MalformedCauseError
    if tc("TC_EMB_STATE") <= e <= tc("TC_EMB_OTHER"):
        return CommandError
    if tc("TC_ERR_BASE") <= e <= tc("TC_ERR_LAST"):
        return ProtocolError
    return TelecardError
