"""cffi (API mode, out-of-line) build of the C driver into telecard._cdriver.

Used by setup.py's cffi_modules; `python cdriver/build_cdriver.py` builds the extension in
place under pyapi/telecard. Extra compiler flags come from TELECARD_CFLAGS (whitespace
separated), e.g. the sanitizer build; TELECARD_LDFLAGS is passed to the linker.
"""

import os
import re
import shlex
import shutil
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["frame.c", "link.c", "device.c", "cause.c", "errors.c"]

_DEFINE = re.compile(r"^#define\s+(TC_[A-Z0-9_]+)\s+\S")
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_SIZED_ARRAY = re.compile(r"\[TC_[A-Z0-9_]+\]")


def _cdef(header: str) -> str:
    """The header as cffi declarations: constants become `#define NAME ...` (so lib.NAME
    exists), other preprocessor lines go, and arrays sized by a constant become `[...]`."""
    lines = []
    for line in _COMMENT.sub("", (HERE / header).read_text()).splitlines():
        match = _DEFINE.match(line)
        if match:
            lines.append(f"#define {match.group(1)} ...")
        elif not line.lstrip().startswith("#"):
            lines.append(line)
    return _SIZED_ARRAY.sub("[...]", "\n".join(lines))


def make_builder(absolute: bool = False) -> FFI:
    """The cffi builder. setuptools wants source paths relative to setup.py's directory;
    FFI.compile() changes into its tmpdir, so the in-place build needs absolute ones."""

    def path(p: Path) -> str:
        return str(p) if absolute else p.relative_to(HERE.parent).as_posix()

    builder = FFI()
    builder.cdef(_cdef("telecard_regs.h") + _cdef("telecard.h"))
    builder.set_source(
        "telecard._cdriver",
        '#include "telecard.h"',
        sources=[path(HERE / name) for name in SOURCES],
        include_dirs=[path(HERE)],
        extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]
        + shlex.split(os.environ.get("TELECARD_CFLAGS", "")),
        extra_link_args=["-pthread"] + shlex.split(os.environ.get("TELECARD_LDFLAGS", "")),
    )
    return builder


ffibuilder = make_builder()


def build_inplace(
    package_dir: Path = HERE.parent / "pyapi" / "telecard",
    tmp: Path = HERE.parent / "build" / "cffi",
) -> Path:
    """Compile in tmp and copy the extension into package_dir (default: the sources)."""
    built = Path(make_builder(absolute=True).compile(tmpdir=str(tmp), verbose=False))
    target = package_dir / built.name
    shutil.copy2(built, target)
    return target


if __name__ == "__main__":
    print(build_inplace())
