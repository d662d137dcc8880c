/*
 * Internals shared by the driver's translation units; not part of the public API.
 */
#ifndef TC_INTERNAL_H
#define TC_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "telecard.h"

/* Largest body (type, tag, payload) a frame may carry, per datasheet 4.2. */
#define TC_NUM_TAGS 256
/* The card treats a request equal to one of its last 128 as a retry (datasheet 4.5); with at
   most 127 outstanding and tags cycled in order, a tag comes back only after 128 others. */
#define TC_MAX_OUTSTANDING 127
#define TC_NUM_CHANNELS (TC_MAX_SPANS * TC_SLOTS_PER_SPAN)
/* Posted events kept for tc_drain_events, in the slot of their ring index (a power of two, so
   slots follow the 2^32 wrap). With AUTO_ACK the card does not wait for the host, so this queue,
   not the ring, holds what the host has not handed out yet: sized for the closed-loop backlog of
   every channel of a 16-span card (see benchmarks/bench_events.py): 1 MiB. */
#define TC_POSTQ_CAP TC_EVENT_QUEUE_CAP
_Static_assert((TC_POSTQ_CAP & (TC_POSTQ_CAP - 1)) == 0, "queue slots follow the 2^32 wrap");

/* Receive-side deframer; fed raw bytes, it calls back once per frame with a good CRC. */
typedef void (*tc_frame_fn)(void *ctx, const uint8_t *body, size_t len);

struct tc_rx {
    int in_frame;
    int escaped;
    int overlong;
    size_t len;      /* bytes kept in buf */
    size_t dropped;  /* bytes of an over-long frame not kept */
    uint8_t buf[TC_MAX_BODY + 2];
};

void tc_rx_init(struct tc_rx *rx);
void tc_rx_feed(struct tc_rx *rx, const uint8_t *data, size_t n, tc_stats *st,
                tc_frame_fn fn, void *ctx);

/* One outstanding request per tag; the reader files the response straight into it. */
struct tc_slot {
    int busy;
    int done;
    int err;             /* 0 or a negative code set when filing */
    uint8_t req_type;
    uint8_t status;      /* first response payload byte */
    uint8_t *data;       /* caller's buffer for the rest of the payload */
    size_t data_cap;
    size_t data_len;
};

struct tc_handle {
    int fd;
    int wake[2];                 /* pipe that interrupts the reader's poll at close */
    pthread_mutex_t mu;          /* everything below unless noted */
    pthread_cond_t cv;
    pthread_mutex_t write_mu;    /* serialises frame writes on fd */
    pthread_mutex_t drain_mu;    /* one event drain at a time */
    int reader;                  /* some thread owns the fd's read side */
    int closing;
    int fd_closed;
    int lost;                    /* 0, or the error every call returns from now on */
    unsigned users;
    unsigned next_tag;
    unsigned tags_busy;
    struct tc_slot slots[TC_NUM_TAGS];
    uint64_t irq_count;
    uint64_t irq_seen;           /* irq_count at the previous tc_wait_irq() */
    uint32_t irq_bits;           /* IRQ payloads or-ed since the previous tc_wait_irq() */
    /* Event stream. ev_next and ev_acked change only under drain_mu (and mu). */
    int post_on;                 /* EVENT_POST.POST_ENABLE set through tc_set_event_post() */
    int post_auto;               /* ... and AUTO_ACK: the card advances RING_TAIL itself */
    int need_ring;               /* posted events may be missing: read the ring */
    int ev_synced;               /* ev_next and ev_acked are indices of this boot's ring */
    unsigned ev_gen;             /* bumped when the card rebooted */
    uint32_t ev_next;            /* ring index of the next event to hand out */
    uint32_t ev_acked;           /* RING_TAIL as last written */
    uint32_t q_first;            /* ring index of the oldest queued posted event */
    uint32_t q_count;            /* queued posted events: q_first, q_first + 1, ... */
    tc_event postq[TC_POSTQ_CAP];
    uint8_t cmd_busy[TC_NUM_CHANNELS];
    tc_stats stats;
    tc_options opt;
    tc_info info;
    int have_info;
    struct tc_rx rx;             /* reader only */
    uint8_t rdbuf[16384];        /* reader only */
};

/* link.c */
int tc_link_init(tc_handle *h, int fd, const tc_options *opt);
void tc_link_destroy(tc_handle *h);
int tc_enter(tc_handle *h);
void tc_leave(tc_handle *h);
int tc_transact(tc_handle *h, uint8_t type, const uint8_t *payload, size_t plen,
                uint8_t *data, size_t data_cap, size_t *data_len);
int tc_status_error(uint8_t status);
int tc_wait_irq_after(tc_handle *h, uint64_t seen, int timeout_ms, uint64_t *now_count);
uint64_t tc_irq_count(tc_handle *h);

/* a precedes b among free-running ring indices */
static inline int tc_idx_before(uint32_t a, uint32_t b)
{
    return (uint32_t)(a - b) >= 0x80000000u;
}

/* Little-endian helpers. */
static inline uint32_t tc_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t tc_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline void tc_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void tc_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

#endif
