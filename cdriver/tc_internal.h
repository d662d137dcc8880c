/*
 * Internals shared by the driver's translation units; not part of the public API.
 */
#ifndef TC_INTERNAL_H
#define TC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "telecard.h"

/* TC_MAX_OUTSTANDING (telecard.h) of the tags carry requests at once; the rest stay free so
   that a WRITE or COMMAND can find one whose remembered request differs from it (datasheet
   4.5). */
#define TC_NUM_TAGS 256
/* Hashes of requests the card may still remember on a tag (datasheet 4.5): one after a
   response, one more for each request given up on since; beyond this many, the tag is
   TC_TAG_UNKNOWN until a response on it. */
#define TC_TAG_MEMORY 4
#define TC_TAG_UNKNOWN 0xFF
/* How long a thread standing by (the event thread) leaves the device and the card's news to
   the other threads inside the driver before it reads or takes them itself: long enough to
   span a caller's hop from its response to its own drain, short beside any Q.931 timer. */
#define TC_STANDBY_DEFER_MS 2
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

/*
 * Concurrency model (link.c)
 *
 * Locks. mu guards every field of the handle and its slots except where noted; drain_mu
 * makes event drains one at a time (taken before mu, never while holding it). A request
 * runs under mu from start to end, releasing it only to write, read or sleep.
 *
 * Writing (combining). Frames are appended to the output queue under mu; the thread that
 * finds nobody writing (writing = 0) becomes the writer and writes the whole queue, its
 * frame and those others append meanwhile, with mu released; the others do not wait.
 *
 * Who waits on what. Every thread that blocks inside the link sleeps on a condition
 * variable of its own: struct tc_waiter, on its stack, holding the private cv, the
 * condition it waits for and its list links. Nobody else ever waits on that cv, so a
 * signal wakes exactly the thread it is meant for.
 *   - A thread waiting for the response on its tag: slot.waiter points at it.
 *   - A thread in tc_wait_irq or tc_wait_events: on the irq_waiters list; standing by
 *     (tc_wait_events' standby), on the standby list.
 *   - Either kind, while asleep, is also on the followers list (FIFO): it is willing to
 *     read the device. Threads standing by are not followers (see Standing by).
 *   - A thread waiting for a free tag: on the tag_queue list (FIFO), with its request.
 *   - tc_close waits on idle_cv for users to reach 0.
 *
 * Reading (leader/follower). At most one thread, the reader (reader = 1), polls and reads
 * fd, with mu released, up to its own deadline; then it files every frame under mu. A
 * waiter that finds the role free takes it. The reader keeps the role as long as its own
 * condition is unmet and its deadline not passed; when it ends its wait for any reason it
 * hands the role straight to the first follower whose condition is still unmet (promoted =
 * 1, taken off the followers list, its cv signalled), or frees the role if there is none.
 *
 * Who wakes whom.
 *   - A filed response signals the cv of its slot's waiter, and no one else.
 *   - A filed IRQ or EVENTS frame signals the newest thread on irq_waiters, the only one
 *     whose condition it meets (irq_turn: an interrupt not taken; events_turn: or events
 *     not drained), or, with irq_waiters empty, the threads on standby unless their timer
 *     is armed (below); one that leaves with the interrupt untaken signals the next. A
 *     drain that hands out every posted event takes an interrupt that announced only them.
 *   - Freeing a tag assigns it to the oldest request on tag_queue, and the freeing thread
 *     sends that request's first attempt itself: the requester, asleep, joins the
 *     followers and is woken by its response (or its own timer, or the reader hand-off),
 *     never just to be told it has a tag. If nobody is reading then, the role is handed
 *     to a follower.
 *   - The reader ending its wait signals one follower (the hand-off above).
 *   - tc_close (closing) and a lost device (lost) signal every waiter of every kind; the
 *     close also writes to the wake pipe so that a reader blocked in poll() returns.
 * Standing by (the event thread). It is the reader and the taker of news of last resort:
 * a caller whose response arrives with its call's events drains them itself a moment
 * later, and waking the event thread for them would cost both threads a switch. So while
 * other threads are inside the driver (users > standing) it takes the reader role only
 * once nobody has held it for TC_STANDBY_DEFER_MS, gives the role up after reading, and
 * takes an interrupt only once it has gone untaken that long (standby_turn); with nobody
 * else inside it reads and takes news at once. While news keeps coming it sleeps on a
 * TC_STANDBY_DEFER_MS timer (standby_armed) rather than being signalled for each frame.
 * Deadlines are CLOCK_MONOTONIC timedwaits on the private cv (or the reader's poll
 * timeout); a reader whose time is up still takes one look at fd without waiting.
 */
struct tc_list {
    struct tc_list *prev, *next;
};

/* Bytes queued for fd. */
struct tc_out {
    uint8_t *buf;
    size_t len;
    size_t cap;
};

struct tc_waiter;

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
    struct tc_waiter *waiter; /* the owner, while it sleeps for the response */
    uint64_t sent_as;    /* requests_sent when its latest attempt was queued */
    uint64_t first_sent_as; /* ... and when its first attempt was */
    /* what the card may remember on this tag: hashes of WRITE / COMMAND requests */
    uint8_t mem_n;       /* 0..TC_TAG_MEMORY, or TC_TAG_UNKNOWN */
    uint64_t mem[TC_TAG_MEMORY];
};

struct tc_handle {
    int fd;
    int wake[2];                 /* pipe that interrupts the reader's poll at close */
    pthread_mutex_t mu;          /* everything below unless noted */
    pthread_cond_t idle_cv;      /* tc_close waiting for users to leave */
    pthread_mutex_t drain_mu;    /* one event drain at a time */
    int reader;                  /* some thread owns the fd's read side */
    int writing;                 /* some thread is writing the output queue */
    struct tc_out out;           /* frames to write, in order */
    struct tc_out out_spare;     /* the buffer being written, or a spare one */
    struct tc_list followers;    /* sleeping waiters willing to read, oldest first */
    struct tc_list irq_waiters;  /* threads in tc_wait_irq and tc_wait_events, oldest first */
    struct tc_list standby;      /* threads in tc_wait_events standing by */
    struct tc_list tag_queue;    /* requests waiting for a free tag, oldest first */
    int closing;
    int fd_closed;
    int lost;                    /* 0, or the error every call returns from now on */
    unsigned users;
    unsigned standing;           /* users waiting in tc_wait_events standing by */
    struct timespec reader_freed; /* when the reader role was last left free */
    struct timespec untaken_since; /* when irq_count last moved past irq_seen */
    struct timespec last_news;   /* when the latest IRQ or EVENTS frame was filed */
    int standby_armed;           /* a thread standing by sleeps on its TC_STANDBY_DEFER_MS timer */
    unsigned next_tag;
    uint64_t requests_sent;      /* request frames queued for the card, resends included */
    struct timespec last_request; /* when the latest of them was queued (CLOCK_MONOTONIC) */
    uint64_t last_answered;      /* sent_as of the request the latest response answered */
    struct timespec last_response; /* when that response arrived (CLOCK_MONOTONIC) */
    atomic_uint command_number;  /* the next COMMAND's request number (datasheet 4.3) */
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
/* *ts = CLOCK_MONOTONIC now + ms, for the timed waits on condition variables set to it. */
void tc_deadline_in(struct timespec *ts, int ms);

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
