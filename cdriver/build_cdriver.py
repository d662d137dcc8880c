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

CDEF = """
typedef struct tc_handle tc_handle;
typedef struct { int timeout_ms; int retries; } tc_options;
typedef struct {
    uint32_t magic; uint16_t hw_version; uint16_t fw_version; uint16_t proto_version;
    uint8_t num_spans; uint32_t boot_id;
} tc_info;
typedef struct { uint8_t span; uint8_t channel; uint8_t code; uint8_t arg; uint32_t seq; } tc_event;
typedef struct {
    uint8_t coding_standard; uint8_t location; int16_t recommendation; uint8_t value;
    uint8_t diag_len; uint8_t diagnostic[32]; uint8_t raw_len; uint8_t raw[32];
} tc_cause;
typedef struct {
    uint64_t frames_tx; uint64_t frames_rx; uint64_t crc_errors; uint64_t discarded_bytes;
    uint64_t unexpected; uint64_t retries; uint64_t timeouts; uint64_t irqs;
} tc_stats;
typedef struct {
    uint8_t cmd; uint8_t called_len; uint8_t calling_len; uint8_t cause_len;
    char called[32]; char calling[32]; uint8_t cause[32];
} tc_command_args;

const char *tc_strerror(int code);
uint16_t tc_crc16(const uint8_t *data, size_t len);
int tc_frame_encode(const uint8_t *body, size_t body_len, uint8_t *out, size_t out_cap);
void tc_options_init(tc_options *opt);
int tc_open(const char *path, const tc_options *opt, tc_handle **out);
int tc_open_fd(int fd, const tc_options *opt, tc_handle **out);
void tc_close(tc_handle *h);
void tc_free(tc_handle *h);
int tc_handshake(tc_handle *h, tc_info *info);
void tc_get_info(tc_handle *h, tc_info *info);
void tc_get_stats(tc_handle *h, tc_stats *stats);
int tc_read(tc_handle *h, uint32_t addr, void *buf, size_t len);
int tc_write(tc_handle *h, uint32_t addr, const void *buf, size_t len);
int tc_wait_irq(tc_handle *h, int timeout_ms, uint32_t *status);
int tc_drain_events(tc_handle *h, tc_event *out, size_t max, uint32_t *flags_out);
int tc_cause_decode(const uint8_t *buf, size_t len, tc_cause *out);
long tc_cause_decode_bulk(const uint8_t *buf, size_t buf_len, const uint8_t *lens,
                          size_t count, tc_cause *out, int32_t *results);
int tc_channel_cause(tc_handle *h, unsigned span, unsigned ts, tc_cause *out,
                     uint8_t *source);
int tc_command(tc_handle *h, unsigned span, unsigned ts, const tc_command_args *args,
               int timeout_ms, uint8_t *status);
"""

_DEFINE = re.compile(r"^#define\s+(TC_[A-Z0-9_]+)\s+\S", re.MULTILINE)


def _defines(header: str) -> str:
    """`#define NAME ...` for every constant of a header, so that lib.NAME exists."""
    names = _DEFINE.findall((HERE / header).read_text())
    return "".join(f"#define {name} ...\n" for name in names)


def make_builder(absolute: bool = False) -> FFI:
    """The cffi builder. setuptools wants source paths relative to setup.py's directory;
    FFI.compile() changes into its tmpdir, so the in-place build needs absolute ones."""

    def path(p: Path) -> str:
        return str(p) if absolute else p.relative_to(HERE.parent).as_posix()

    builder = FFI()
    builder.cdef(_defines("telecard_regs.h") + _defines("telecard.h") + CDEF)
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
