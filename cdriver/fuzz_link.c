/*
 * Fuzz harness for the receive path and the cause decoder; not part of the library.
 *
 * Each input is a configuration prefix and a byte stream. The stream goes through the
 * deframer into the response / IRQ / EVENTS filing twice: raw (garbage, bad CRCs, runts,
 * over-long frames), and cut into bodies that are framed with tc_frame_encode, which the
 * deframer must hand back unchanged. Queued posted events are then handed out and a ring
 * read committed over them. The stream also goes to tc_cause_decode.
 *
 * libFuzzer: clang -fsanitize=fuzzer,address,undefined -DTC_LIBFUZZER -Icdriver
 *            cdriver/fuzz_link.c cdriver/frame.c cdriver/cause.c cdriver/errors.c -pthread
 * Otherwise main(iterations, seed) runs that many deterministic random inputs
 * (tests/test_driver.py builds it with ASan and UBSan).
 */
#include "link.c"
#include "device.c"

#include <stdio.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "fuzz_link: %s:%d: %s\n", __FILE__, __LINE__, #c);     \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define MAX_BODIES 1024

struct run {
    tc_handle *h;
    uint8_t *bufs[TC_NUM_TAGS]; /* each exactly its slot's data_cap, so ASan sees overruns */
    const uint8_t *body[MAX_BODIES];
    size_t len[MAX_BODIES];
    size_t expected, got;
};

static void reset(struct run *r, const uint8_t *cfg)
{
    tc_handle *h = r->h;
    size_t cap = cfg[1] % 65;

    tc_rx_init(&h->rx);
    memset(h->slots, 0, sizeof h->slots);
    for (unsigned t = 1; t < TC_NUM_TAGS; t++) {
        free(r->bufs[t]);
        r->bufs[t] = NULL;
        if ((t * 37u + cfg[0]) % 3 == 0) {
            if (cap) {
                r->bufs[t] = malloc(cap);
                CHECK(r->bufs[t]);
            }
            h->slots[t].busy = 1;
            h->slots[t].req_type = (uint8_t)(1 + t % 3);
            h->slots[t].data = r->bufs[t];
            h->slots[t].data_cap = cap;
        }
    }
    h->ev_synced = cfg[2] & 1;
    h->ev_next = tc_le32(cfg + 3);
    h->q_first = tc_le32(cfg + 7);
    h->q_count = 0;
    h->need_ring = 0;
}

static void hand_out(tc_handle *h, uint32_t ring_start, uint32_t ring_take)
{
    tc_event out[70];

    CHECK(h->q_count <= TC_POSTQ_CAP);
    h->ev_next = h->q_first;
    h->ev_synced = 1;
    while (h->q_count) {
        uint32_t before = h->q_count;
        size_t n = take_posted(h, out, 70);
        CHECK(n > 0 && n <= 70 && h->q_count == before - n);
        for (size_t i = 0; i < n; i++)
            CHECK(out[i].snap_len == 0 || out[i].snap_len == TC_POST_SNAPSHOT_LEN);
    }
    memset(out, 0, sizeof out);
    commit_ring(h, out, ring_start, ring_take % 70);
    CHECK(h->q_count <= TC_POSTQ_CAP);
}

static void expect_body(void *ctx, const uint8_t *body, size_t len)
{
    struct run *r = ctx;

    CHECK(r->got < r->expected);
    CHECK(len == r->len[r->got] && memcmp(body, r->body[r->got], len) == 0);
    r->got++;
    file_frame(r->h, body, len);
}

static void one_input(struct run *r, const uint8_t *data, size_t size)
{
    tc_handle *h = r->h;
    const uint8_t *cfg = data;
    size_t chunk, wl = 0, cap, off = 0;
    uint8_t *wire;
    tc_cause cause;

    if (size < 12)
        return;
    data += 12;
    size -= 12;
    chunk = cfg[11] ? cfg[11] : 1;

    /* the cause decoder on a copy of exactly the given length */
    wire = malloc(size ? size : 1);
    CHECK(wire);
    memcpy(wire, data, size);
    if (tc_cause_decode(wire, size, &cause) == 0)
        CHECK(size >= 2 && size <= TC_CAUSE_MAX && cause.raw_len == size &&
              cause.diag_len < size);
    free(wire);

    /* raw stream */
    reset(r, cfg);
    for (size_t o = 0; o < size; o += chunk) {
        size_t n = size - o < chunk ? size - o : chunk;
        uint8_t *copy = malloc(n);
        CHECK(copy);
        memcpy(copy, data + o, n);
        tc_rx_feed(&h->rx, copy, n, &h->stats, file_frame, h);
        free(copy);
        CHECK(h->rx.len <= sizeof h->rx.buf);
    }
    hand_out(h, tc_le32(cfg + 3), (uint32_t)size);

    /* the same bytes as [u16 length][body]..., framed properly */
    reset(r, cfg);
    r->expected = r->got = 0;
    cap = 4 * size + 64;
    wire = malloc(cap);
    CHECK(wire);
    while (off + 2 <= size && r->expected < MAX_BODIES) {
        size_t len = (size_t)data[off] | (size_t)(data[off + 1] & 0x7F) << 8;
        int n;
        off += 2;
        if (len > size - off)
            len = size - off;
        n = tc_frame_encode(data + off, len, wire + wl, cap - wl);
        if (len > TC_MAX_BODY) {
            CHECK(n == -ENOSPC);
            off += len;
            continue;
        }
        CHECK(n > 0);
        if (len >= 2) { /* shorter ones are runts */
            r->body[r->expected] = data + off;
            r->len[r->expected++] = len;
        }
        off += len;
        wl += (size_t)n;
        if (cfg[2] & 2)
            wire[wl++] = TC_FRAME_FLAG; /* empty frames are ignored */
    }
    for (size_t o = 0; o < wl; o += chunk) {
        size_t n = wl - o < chunk ? wl - o : chunk;
        tc_rx_feed(&h->rx, wire + o, n, &h->stats, expect_body, r);
        CHECK(h->rx.len <= sizeof h->rx.buf);
    }
    CHECK(r->got == r->expected);
    free(wire);
    hand_out(h, tc_le32(cfg + 7), (uint32_t)wl);
}

static struct run *the_run(void)
{
    static struct run *r;

    if (!r) {
        r = calloc(1, sizeof *r);
        CHECK(r);
        r->h = calloc(1, sizeof *r->h);
        CHECK(r->h && tc_link_init(r->h, -1, NULL) == 0);
    }
    return r;
}

#ifdef TC_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one_input(the_run(), data, size);
    return 0;
}
#else
static uint64_t rnd(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* A plausible body: a response, an IRQ or an EVENTS frame, with a length prefix. */
static size_t gen_body(uint64_t *s, uint8_t *p, size_t room)
{
    static uint8_t b[TC_MAX_BODY + 64];
    size_t n = 0;

    switch (rnd(s) % 5) {
    case 4: /* around the longest body, both sides of it */
        b[n++] = (uint8_t)(0x80 | (1 + rnd(s) % 3));
        b[n++] = (uint8_t)rnd(s);
        for (size_t k = TC_MAX_BODY - 24 + rnd(s) % 32; k; k--)
            b[n++] = (uint8_t)rnd(s);
        break;
    case 0: /* response */
        b[n++] = (uint8_t)(0x80 | (1 + rnd(s) % 3));
        b[n++] = (uint8_t)rnd(s);
        for (size_t k = rnd(s) % 80; k; k--)
            b[n++] = (uint8_t)rnd(s);
        break;
    case 1: /* IRQ */
        b[n++] = TC_T_IRQ;
        b[n++] = rnd(s) % 8 ? 0 : (uint8_t)rnd(s);
        for (int k = 0; k < 4; k++)
            b[n++] = (uint8_t)rnd(s);
        break;
    default: { /* EVENTS, mostly consistent */
        unsigned count = 1 + (unsigned)(rnd(s) % TC_POST_MAX_ENTRIES);
        uint32_t first = (uint32_t)(rnd(s) % 8) - 4u;
        b[n++] = TC_T_EVENTS;
        b[n++] = 0;
        tc_put_le32(b + n, first);
        n += 4;
        b[n++] = (uint8_t)count;
        for (unsigned i = 0; i < count; i++) {
            unsigned snap = rnd(s) % 3 == 0 ? TC_POST_SNAPSHOT_LEN : 0;
            if (rnd(s) % 16 == 0)
                snap = (unsigned)(rnd(s) % 256);
            for (int k = 0; k < TC_EVENT_SIZE; k++)
                b[n++] = (uint8_t)rnd(s);
            b[n++] = (uint8_t)snap;
            for (unsigned k = 0; k < snap && n < sizeof b - 16; k++)
                b[n++] = (uint8_t)rnd(s);
        }
        if (rnd(s) % 4 == 0)
            n -= rnd(s) % n; /* truncated */
        break;
    }
    }
    if (rnd(s) % 4 == 0)
        b[rnd(s) % n] ^= (uint8_t)(1 + rnd(s) % 255);
    if (n + 2 > room)
        return 0;
    p[0] = (uint8_t)n;
    p[1] = (uint8_t)(n >> 8);
    memcpy(p + 2, b, n);
    return n + 2;
}

/* A run without flags: an over-long frame when it lands inside one. */
static size_t gen_long(uint64_t *s, uint8_t *p, size_t room)
{
    size_t n = TC_MAX_BODY - 8 + (size_t)(rnd(s) % 32);

    if (n > room)
        return 0;
    for (size_t k = 0; k < n; k++) {
        p[k] = (uint8_t)rnd(s);
        if (p[k] == TC_FRAME_FLAG)
            p[k] = 0;
    }
    return n;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 10000;
    uint64_t s = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
    static uint8_t in[1 << 16];
    struct run *r = the_run();

    s = s ? s : 1;
    for (long it = 0; it < iterations; it++) {
        size_t n = 12, want = (size_t)(rnd(&s) % (rnd(&s) % 8 == 0 ? sizeof in : 4096));
        for (size_t k = 0; k < 12; k++)
            in[k] = (uint8_t)rnd(&s);
        while (n < want) {
            size_t g = 0;
            uint64_t pick = rnd(&s) % 64;
            if (pick < 32)
                g = gen_body(&s, in + n, want - n);
            else if (pick == 32)
                g = gen_long(&s, in + n, want - n);
            if (g == 0) { /* raw bytes, flags and escapes among them */
                uint64_t v = rnd(&s);
                in[n++] = v % 5 == 0 ? TC_FRAME_FLAG : v % 7 == 0 ? TC_FRAME_ESCAPE
                                                                  : (uint8_t)(v >> 8);
            } else {
                n += g;
            }
        }
        one_input(r, in, n);
    }
    printf("fuzz_link: %ld inputs, %llu frames, %llu crc errors, %llu events frames, "
           "%llu bad\n",
           iterations, (unsigned long long)r->h->stats.frames_rx,
           (unsigned long long)r->h->stats.crc_errors,
           (unsigned long long)r->h->stats.event_frames,
           (unsigned long long)r->h->stats.event_frames_bad);
    for (unsigned t = 0; t < TC_NUM_TAGS; t++)
        free(r->bufs[t]);
    tc_link_destroy(r->h);
    free(r->h);
    free(r);
    return 0;
}
#endif
