"""Exceptions raised by telecard, and the mapping from the C driver's error codes."""

from __future__ import annotations

import errno


class TelecardError(Exception):
    """Base of every telecard error; `code` is the driver's negative error code, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeviceBusyError(TelecardError):
    """Another process or handle has the device open."""


class DeviceLostError(TelecardError):
    """The device hung up or failed; the handle is unusable and must be reopened."""


class LinkTimeoutError(TelecardError):
    """The card did not answer a request after every retry."""


class ProtocolError(TelecardError):
    """The card is not one we can drive, or it answered with an unexpected status."""


class CardResetError(TelecardError):
    """The card rebooted (BOOT_ID changed or it answers NOT_READY): handshake again."""


class MalformedCauseError(TelecardError, ValueError):
    """A cause information element that does not follow Q.931; `raw` holds its octets."""

    def __init__(self, message: str, code: int | None = None, raw: bytes = b"") -> None:
        super().__init__(message, code)
        self.raw = raw


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
}


def error_class(code: int, lib: object) -> type[TelecardError]:
    """The exception class for a negative driver code; `lib` is the cffi library."""
    e = -code

    def tc(name: str) -> int:
        value: int = getattr(lib, name)
        return value

    if e in _ERRNO_CLASSES:
        return _ERRNO_CLASSES[e]
    if e in (tc("TC_ENOTREADY"),):
        return CardResetError
    if tc("TC_ECAUSE_EMPTY") <= e <= tc("TC_ECAUSE_LONG"):
        return MalformedCauseError
    if tc("TC_EMB_STATE") <= e <= tc("TC_EMB_OTHER"):
        return CommandError
    if tc("TC_ERR_BASE") <= e <= tc("TC_ERR_LAST"):
        return ProtocolError
    return TelecardError
