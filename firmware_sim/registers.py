"""The card's register space: storage, typed access and the per-byte host write rules."""

import struct

from firmware_sim import regmap as rm

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")

# Per-byte host write classes (section 2 of the datasheet).
NO_WRITE = 0  # RO or reserved: a write covering it is refused whole
CONTROL = 1  # a card-wide or ring register with write side effects (Firmware applies it)
MBOX_RW = 2  # mailbox parameter or CMD byte
MBOX_KEEP = 3  # mailbox STATUS or reserved byte: ignored inside a wider mailbox write

_CONTROL_REGS = (
    rm.REG_INT_STATUS,
    rm.REG_INT_MASK,
    rm.REG_CARD_CONTROL,
    rm.REG_EVENT_POST,
    rm.RING_TAIL,
    rm.RING_OVERFLOW,
    rm.REG_HOST_WATCHDOG,
    rm.REG_ACCEPT_BEARERS,
)
_MBOX_FIELDS = (
    (rm.MBOX_CMD, 1),
    (rm.MBOX_CAUSE_LEN, 1),
    (rm.MBOX_CAUSE, rm.CAUSE_MAX),
    (rm.MBOX_CALLED_LEN, 1),
    (rm.MBOX_CALLING_LEN, 1),
    (rm.MBOX_CALLED_PLAN, 1),
    (rm.MBOX_CALLING_PLAN, 1),
    (rm.MBOX_CALLING_PRES, 1),
    (rm.MBOX_BEARER, 1),
    (rm.MBOX_CALLED, rm.NUMBER_MAX),
    (rm.MBOX_CALLING, rm.NUMBER_MAX),
)


def _build_access() -> tuple[bytes, bytes]:
    access = bytearray(rm.REG_SPACE_SIZE)
    for reg in _CONTROL_REGS:
        access[reg : reg + 4] = bytes((CONTROL,)) * 4
    for span in range(rm.MAX_SPANS):
        access[rm.span_reg(span, rm.SPAN_OVERLAP_DIGITS)] = CONTROL
    block = bytearray((MBOX_KEEP,)) * rm.MBOX_STRIDE
    for offset, size in _MBOX_FIELDS:
        block[offset : offset + size] = bytes((MBOX_RW,)) * size
    access[rm.MBOX_BASE :] = bytes(block) * (rm.MAX_SPANS * rm.SLOTS_PER_SPAN)
    to_mask = bytes(0xFF if kind == MBOX_KEEP else 0 for kind in range(256))
    return bytes(access), bytes(access.translate(to_mask))


ACCESS, _KEEP_MASK = _build_access()


class Registers:
    """The little-endian register space as one bytearray, plus the host write rules.

    Side effects of writes (W1C, ring TAIL, reset, mailbox commands) belong to Firmware;
    this class only stores bytes and classifies host writes.
    """

    __slots__ = ("mem",)

    def __init__(self) -> None:
        self.mem = bytearray(rm.REG_SPACE_SIZE)

    def clear(self) -> None:
        self.mem[:] = bytes(rm.REG_SPACE_SIZE)

    def u8(self, addr: int) -> int:
        return self.mem[addr]

    def u16(self, addr: int) -> int:
        value: int = U16.unpack_from(self.mem, addr)[0]
        return value

    def u32(self, addr: int) -> int:
        value: int = U32.unpack_from(self.mem, addr)[0]
        return value

    def set_u8(self, addr: int, value: int) -> None:
        self.mem[addr] = value

    def set_u16(self, addr: int, value: int) -> None:
        U16.pack_into(self.mem, addr, value)

    def set_u32(self, addr: int, value: int) -> None:
        U32.pack_into(self.mem, addr, value)

    def set_bytes(self, addr: int, data: bytes, size: int) -> None:
        """Store `data` in a field of `size` bytes, zero-padding the rest."""
        self.mem[addr : addr + size] = data.ljust(size, b"\0")

    def check_write(self, addr: int, length: int) -> int:
        """The status a host write of `length` bytes at `addr` gets on access grounds alone."""
        end = addr + length
        if addr < 0 or end > rm.REG_SPACE_SIZE:
            return rm.S_BAD_ADDRESS
        kinds = ACCESS[addr:end]
        if addr >= rm.MBOX_BASE:
            # A write touching only STATUS/reserved bytes is a write to RO space.
            return rm.S_OK if MBOX_RW in kinds else rm.S_READ_ONLY
        if NO_WRITE in kinds or MBOX_RW in kinds or MBOX_KEEP in kinds:
            return rm.S_READ_ONLY
        return rm.S_OK

    def write_mailbox(self, addr: int, data: bytes) -> None:
        """Apply a checked mailbox-area write, leaving STATUS and reserved bytes unchanged."""
        end = addr + len(data)
        keep = int.from_bytes(_KEEP_MASK[addr:end], "little")
        if not keep:
            self.mem[addr:end] = data
            return
        old = int.from_bytes(self.mem[addr:end], "little")
        new = (old & keep) | (int.from_bytes(data, "little") & ~keep)
        self.mem[addr:end] = new.to_bytes(end - addr, "little")
