/*
 * Host-link framing (datasheet 4.2): CRC-16/CCITT-FALSE, byte stuffing, and the
 * receive-side deframer that resynchronises on 0x7E after any garbage.
 */
#include <errno.h>
#include <string.h>

#include "tc_internal.h"

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) a byte at a time: every frame in and out
   passes through here, and the bitwise loop was a measurable share of the host's CPU. */
static uint16_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint16_t crc = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        crc_table[i] = crc;
    }
}

uint16_t tc_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFF;

    pthread_once(&crc_once, crc_table_init);
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[(uint8_t)(crc >> 8) ^ data[i]]);
    return crc;
}

static int put_escaped(uint8_t *out, size_t cap, size_t *pos, uint8_t byte)
{
    if (byte == TC_FRAME_FLAG || byte == TC_FRAME_ESCAPE) {
        if (*pos + 2 > cap)
            return -ENOSPC;
        out[(*pos)++] = TC_FRAME_ESCAPE;
        out[(*pos)++] = byte ^ TC_FRAME_ESCAPE_XOR;
    } else {
        if (*pos + 1 > cap)
            return -ENOSPC;
        out[(*pos)++] = byte;
    }
    return 0;
}

int tc_frame_encode(const uint8_t *body, size_t body_len, uint8_t *out, size_t out_cap)
{
    size_t pos = 0;
    uint16_t crc = tc_crc16(body, body_len);
    uint8_t tail[2] = {(uint8_t)(crc >> 8), (uint8_t)crc};

    if (body_len > TC_MAX_BODY || out_cap < 2)
        return -ENOSPC;
    out[pos++] = TC_FRAME_FLAG;
    for (size_t i = 0; i < body_len; i++)
        if (put_escaped(out, out_cap, &pos, body[i]) < 0)
            return -ENOSPC;
    for (size_t i = 0; i < 2; i++)
        if (put_escaped(out, out_cap, &pos, tail[i]) < 0)
            return -ENOSPC;
    if (pos + 1 > out_cap)
        return -ENOSPC;
    out[pos++] = TC_FRAME_FLAG;
    return (int)pos;
}

void tc_rx_init(struct tc_rx *rx)
{
    rx->in_frame = 0;
    rx->escaped = 0;
    rx->overlong = 0;
    rx->len = 0;
    rx->dropped = 0;
}

static void end_frame(struct tc_rx *rx, tc_stats *st, tc_frame_fn fn, void *ctx)
{
    if (rx->overlong || rx->escaped) {
        /* over-long, or aborted by a flag right after an escape */
        st->discarded_bytes += rx->len + rx->dropped + (size_t)rx->escaped;
    } else if (rx->len < 4) {
        st->discarded_bytes += rx->len;
    } else {
        uint16_t got = (uint16_t)(rx->buf[rx->len - 2] << 8 | rx->buf[rx->len - 1]);
        if (tc_crc16(rx->buf, rx->len - 2) != got) {
            st->crc_errors++;
        } else {
            st->frames_rx++;
            fn(ctx, rx->buf, rx->len - 2);
        }
    }
    rx->len = 0;
    rx->dropped = 0;
    rx->escaped = 0;
    rx->overlong = 0;
}

void tc_rx_feed(struct tc_rx *rx, const uint8_t *data, size_t n, tc_stats *st,
                tc_frame_fn fn, void *ctx)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = data[i];
        if (!rx->in_frame) {
            if (c == TC_FRAME_FLAG)
                rx->in_frame = 1;
            else
                st->discarded_bytes++;
            continue;
        }
        if (c == TC_FRAME_FLAG) {
            /* two flags in a row are an empty frame: ignored; a closing flag also opens */
            if (rx->len || rx->dropped || rx->escaped)
                end_frame(rx, st, fn, ctx);
            continue;
        }
        if (c == TC_FRAME_ESCAPE && !rx->escaped) {
            rx->escaped = 1;
            continue;
        }
        if (rx->escaped) {
            c ^= TC_FRAME_ESCAPE_XOR;
            rx->escaped = 0;
        }
        if (rx->len < sizeof rx->buf) {
            rx->buf[rx->len++] = c;
        } else {
            rx->overlong = 1;
            rx->dropped++;
        }
    }
}
