/*
 * The Q.931 cause information element (section 4.5.12), from octet 3 on.
 *
 * The decoder is a pure function over a byte buffer so that it can be fuzzed; the card
 * copies received octets unchanged, so everything it is given may be malformed.
 */
#include <errno.h>
#include <string.h>

#include "tc_internal.h"

#define EXT 0x80

int tc_cause_decode(const uint8_t *buf, size_t len, tc_cause *out)
{
    size_t pos = 1;

    memset(out, 0, sizeof *out);
    out->recommendation = -1;
    if (len > TC_CAUSE_MAX)
        return -TC_ECAUSE_LONG;
    out->raw_len = (uint8_t)len;
    if (len)
        memcpy(out->raw, buf, len);
    if (len == 0)
        return -TC_ECAUSE_EMPTY;
    out->coding_standard = (buf[0] >> 5) & 3;
    out->location = buf[0] & 0x0F;
    if (!(buf[0] & EXT)) {
        /* octet 3a follows and must be the last octet of its group */
        if (len < 2)
            return -TC_ECAUSE_SHORT;
        if (!(buf[1] & EXT))
            return -TC_ECAUSE_EXT;
        out->recommendation = buf[1] & 0x7F;
        pos = 2;
    }
    if (len <= pos)
        return -TC_ECAUSE_SHORT;
    if (!(buf[pos] & EXT))
        return -TC_ECAUSE_EXT;
    out->value = buf[pos] & 0x7F;
    out->diag_len = (uint8_t)(len - pos - 1);
    memcpy(out->diagnostic, buf + pos + 1, out->diag_len);
    return 0;
}

long tc_cause_decode_bulk(const uint8_t *buf, size_t buf_len, const uint8_t *lens,
                          size_t count, tc_cause *out, int32_t *results)
{
    size_t off = 0;
    long ok = 0;

    for (size_t i = 0; i < count; i++) {
        if (lens[i] > buf_len - off)
            return -EINVAL;
        results[i] = tc_cause_decode(buf + off, lens[i], &out[i]);
        ok += results[i] == 0;
        off += lens[i];
    }
    return ok;
}

int tc_channel_cause(tc_handle *h, unsigned span, unsigned ts, tc_cause *out,
                     uint8_t *source)
{
    /* CAUSE_LEN, CAUSE_SOURCE, reserved, CAUSE in one read */
    uint8_t regs[TC_CHAN_CAUSE + TC_CAUSE_MAX - TC_CHAN_CAUSE_LEN];
    uint32_t base;
    int r;

    if (span >= TC_MAX_SPANS || ts >= TC_SLOTS_PER_SPAN)
        return -EINVAL;
    base = TC_CHAN_BASE + (span * TC_SLOTS_PER_SPAN + ts) * TC_CHAN_STRIDE;
    r = tc_read(h, base + TC_CHAN_CAUSE_LEN, regs, sizeof regs);
    if (r)
        return r;
    if (source)
        *source = regs[TC_CHAN_CAUSE_SOURCE - TC_CHAN_CAUSE_LEN];
    if (regs[0] == 0) {
        memset(out, 0, sizeof *out);
        out->recommendation = -1;
        return 0;
    }
    if (regs[0] > TC_CAUSE_MAX) {
        tc_cause_decode(regs + TC_CHAN_CAUSE - TC_CHAN_CAUSE_LEN, TC_CAUSE_MAX, out);
        return -TC_ECAUSE_LONG;
    }
    r = tc_cause_decode(regs + TC_CHAN_CAUSE - TC_CHAN_CAUSE_LEN, regs[0], out);
    return r ? r : 1;
}
