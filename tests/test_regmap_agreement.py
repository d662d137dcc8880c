"""firmware_sim/regmap.py and cdriver/telecard_regs.h define the same constants."""

import re
from pathlib import Path

from firmware_sim import regmap
from telecard._cdriver import lib

HEADER = Path(__file__).resolve().parent.parent / "cdriver" / "telecard_regs.h"

# Constants whose C twin carries another unit, and how to convert the C value.
CONVERTED = {"IRQ_REPEAT_SECONDS": ("IRQ_REPEAT_MS", lambda ms: ms / 1000)}


def python_constants() -> dict[str, int | float]:
    return {
        name: value
        for name, value in vars(regmap).items()
        if name.isupper() and isinstance(value, int | float)
    }


def c_constants() -> dict[str, int]:
    names = re.findall(r"^#define\s+TC_([A-Z0-9_]+)\s+\S", HEADER.read_text(), re.MULTILINE)
    return {name: getattr(lib, f"TC_{name}") for name in names}


def test_every_python_constant_has_an_equal_c_twin() -> None:
    c = c_constants()
    mismatched = {}
    for name, value in python_constants().items():
        c_name, convert = CONVERTED.get(name, (name, lambda v: v))
        assert c_name in c, f"regmap.{name} has no TC_{c_name} in telecard_regs.h"
        if convert(c[c_name]) != value:
            mismatched[name] = (value, c[c_name])
    assert not mismatched


def test_every_c_constant_has_a_python_twin() -> None:
    py = python_constants()
    c_names = {CONVERTED[n][0] if n in CONVERTED else n for n in py}
    extra = set(c_constants()) - c_names
    assert not extra, f"only in telecard_regs.h: {sorted(extra)}"


def test_helpers_agree_with_the_strides() -> None:
    assert regmap.chan_reg(1, 5, regmap.CHAN_CAUSE) == (
        lib.TC_CHAN_BASE + (lib.TC_SLOTS_PER_SPAN + 5) * lib.TC_CHAN_STRIDE + lib.TC_CHAN_CAUSE
    )
    assert regmap.mbox_reg(15, 31, 0) + lib.TC_MBOX_STRIDE == lib.TC_REG_SPACE_SIZE
