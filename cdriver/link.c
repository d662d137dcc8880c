/*
 * Host-link transactions (datasheet 4.3-4.5) shared by many threads on one handle.
 *
 * Leader/follower reading with targeted wake-ups: see the concurrency model in
 * tc_internal.h. Each request also respects the card's per-tag memory (datasheet 4.5): a
 * WRITE or COMMAND never goes out on a tag whose remembered request might equal it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "tc_internal.h"

#define SMALL_FRAME 1024

static void now_ts(struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
}

static void add_ms(struct timespec *ts, int ms)
{
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void tc_deadline_in(struct timespec *ts, int ms)
{
    now_ts(ts);
    add_ms(ts, ms);
}

/* *t lies at least ms in the past. */
static int older_than(const struct timespec *t, int ms)
{
    struct timespec due = *t;
    struct timespec now;

    add_ms(&due, ms);
    now_ts(&now);
    return now.tv_sec > due.tv_sec || (now.tv_sec == due.tv_sec && now.tv_nsec >= due.tv_nsec);
}

/* The earlier of *dl (NULL: never) and ms from now, in *out. */
static const struct timespec *sooner(const struct timespec *dl, int ms, struct timespec *out)
{
    tc_deadline_in(out, ms);
    if (dl && (dl->tv_sec < out->tv_sec ||
               (dl->tv_sec == out->tv_sec && dl->tv_nsec < out->tv_nsec)))
        *out = *dl;
    return out;
}

/* Milliseconds left until *dl, rounded up; -1 when dl is NULL (forever). */
static int remaining_ms(const struct timespec *dl)
{
    struct timespec now;
    long long ms;

    if (!dl)
        return -1;
    now_ts(&now);
    ms = (long long)(dl->tv_sec - now.tv_sec) * 1000 + (dl->tv_nsec - now.tv_nsec + 999999) / 1000000;
    if (ms <= 0)
        return 0;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

void tc_options_init(tc_options *opt)
{
    opt->timeout_ms = TC_DEFAULT_TIMEOUT_MS;
    opt->retries = TC_DEFAULT_RETRIES;
    opt->observe = 0;
}

/* Intrusive circular lists with a sentinel head; an unlinked node points at itself. */
static void list_init(struct tc_list *l)
{
    l->prev = l->next = l;
}

static void list_add_tail(struct tc_list *head, struct tc_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static void list_del(struct tc_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

typedef int (*cond_fn)(tc_handle *h, const void *arg);

/* A thread blocked in wait_until (see the concurrency model in tc_internal.h). */
struct tc_waiter {
    pthread_cond_t cv;       /* only this thread waits on it */
    cond_fn cond;
    const void *arg;
    int promoted;            /* handed the reader role while asleep */
    int standby;             /* an event thread standing by (tc_wait_events' standby) */
    struct tc_list follower; /* in h->followers while asleep */
    struct tc_list irq;      /* in h->irq_waiters or h->standby while waiting for news */
};

#define WAITER_OF(node, field) \
    ((struct tc_waiter *)(void *)((char *)(node) - offsetof(struct tc_waiter, field)))

/* A request waiting for a tag, on its thread's stack. The thread that frees a tag assigns it
   to the oldest one and sends its first attempt for it, so the requester, asleep, wakes
   only when its response arrives (or its time is up). */
struct tc_pending {
    struct tc_list node;     /* in h->tag_queue until assigned */
    struct tc_waiter *w;
    uint8_t type;
    const uint8_t *payload;
    size_t plen;
    uint8_t *data;
    size_t data_cap;
    uint64_t hash;
    int assigned;            /* tag is ours */
    uint8_t tag;
    int scrub;               /* we must READ on the tag first (pick_tag) */
    int sending;             /* the assigner is writing our first attempt */
    int want_sent;           /* we wait for sending to end: signal us */
    int sent;                /* the first attempt went out: send_result, dl */
    int send_result;
    struct timespec dl;
};

#define PENDING_OF(link) \
    ((struct tc_pending *)(void *)((char *)(link) - offsetof(struct tc_pending, node)))

static int cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int r;

    if (pthread_condattr_init(&ca) != 0)
        return -ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    r = pthread_cond_init(cv, &ca) == 0 ? 0 : -ENOMEM;
    pthread_condattr_destroy(&ca);
    return r;
}

static int waiter_init(struct tc_waiter *w, cond_fn cond, const void *arg)
{
    w->cond = cond;
    w->arg = arg;
    w->promoted = 0;
    w->standby = 0;
    list_init(&w->follower);
    list_init(&w->irq);
    return cond_init_monotonic(&w->cv);
}

int tc_link_init(tc_handle *h, int fd, const tc_options *opt)
{
    memset(h, 0, sizeof *h);
    h->fd = fd;
    h->next_tag = 1;
    atomic_init(&h->command_number, 0);
    list_init(&h->followers);
    list_init(&h->irq_waiters);
    list_init(&h->standby);
    list_init(&h->tag_queue);
    if (opt)
        h->opt = *opt;
    else
        tc_options_init(&h->opt);
    if (h->opt.timeout_ms <= 0 || h->opt.retries < 0)
        return -EINVAL;
    tc_rx_init(&h->rx);
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    if (pthread_cond_init(&h->idle_cv, NULL) != 0)
        goto fail_pipe;
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        goto fail_idle_cv;
    if (pthread_mutex_init(&h->drain_mu, NULL) != 0)
        goto fail_mu;
    return 0;
fail_mu:
    pthread_mutex_destroy(&h->mu);
fail_idle_cv:
    pthread_cond_destroy(&h->idle_cv);
fail_pipe:
    close(h->wake[0]);
    close(h->wake[1]);
    return -ENOMEM;
}

void tc_link_destroy(tc_handle *h)
{
    pthread_mutex_destroy(&h->drain_mu);
    pthread_mutex_destroy(&h->mu);
    free(h->out.buf);
    free(h->out_spare.buf);
    pthread_cond_destroy(&h->idle_cv);
    close(h->wake[0]);
    close(h->wake[1]);
}

/* With mu held, on close or a lost device: every waiter re-checks and leaves. */
static void wake_all(tc_handle *h)
{
    for (struct tc_list *n = h->followers.next; n != &h->followers; n = n->next)
        pthread_cond_signal(&WAITER_OF(n, follower)->cv);
    for (struct tc_list *n = h->irq_waiters.next; n != &h->irq_waiters; n = n->next)
        pthread_cond_signal(&WAITER_OF(n, irq)->cv);
    for (struct tc_list *n = h->standby.next; n != &h->standby; n = n->next)
        pthread_cond_signal(&WAITER_OF(n, irq)->cv);
    for (struct tc_list *n = h->tag_queue.next; n != &h->tag_queue; n = n->next)
        pthread_cond_signal(&PENDING_OF(n)->w->cv);
    for (unsigned t = 1; t < TC_NUM_TAGS; t++)
        if (h->slots[t].waiter)
            pthread_cond_signal(&h->slots[t].waiter->cv);
    pthread_cond_broadcast(&h->idle_cv);
}

int tc_enter(tc_handle *h)
{
    int r = 0;

    pthread_mutex_lock(&h->mu);
    if (h->closing)
        r = -EBADF;
    else if (h->lost)
        r = h->lost;
    else
        h->users++;
    pthread_mutex_unlock(&h->mu);
    return r;
}

/* With mu held: wake the threads standing by (they look for themselves). */
static void wake_standby(tc_handle *h)
{
    for (struct tc_list *n = h->standby.next; n != &h->standby; n = n->next)
        pthread_cond_signal(&WAITER_OF(n, irq)->cv);
}

void tc_leave(tc_handle *h)
{
    pthread_mutex_lock(&h->mu);
    h->users--;
    if (h->closing && h->users == 0)
        pthread_cond_broadcast(&h->idle_cv);
    /* The last other thread leaves with nobody reading: a thread standing by that sleeps
       without its timer would leave the device unread until its deadline. */
    if (h->users == h->standing && !h->reader && !h->standby_armed)
        wake_standby(h);
    pthread_mutex_unlock(&h->mu);
}

void tc_close(tc_handle *h)
{
    pthread_mutex_lock(&h->mu);
    if (!h->closing) {
        h->closing = 1;
        /* a full pipe already wakes the reader, so a short write is fine */
        if (write(h->wake[1], "x", 1) < 0) {
        }
        wake_all(h);
    }
    while (h->users > 0)
        pthread_cond_wait(&h->idle_cv, &h->mu);
    if (!h->fd_closed) {
        /* a pty keeps TIOCEXCL while anyone holds it open; let the next opener in */
        if (isatty(h->fd))
            ioctl(h->fd, TIOCNXCL);
        close(h->fd);
        h->fd_closed = 1;
    }
    pthread_mutex_unlock(&h->mu);
}

void tc_free(tc_handle *h)
{
    if (!h)
        return;
    tc_close(h);
    tc_link_destroy(h);
    free(h);
}

void tc_get_stats(tc_handle *h, tc_stats *stats)
{
    pthread_mutex_lock(&h->mu);
    *stats = h->stats;
    pthread_mutex_unlock(&h->mu);
}

int tc_status_error(uint8_t status)
{
    switch (status) {
    case TC_S_OK:
        return 0;
    case TC_S_BAD_ADDRESS:
        return -TC_ES_BAD_ADDRESS;
    case TC_S_READ_ONLY:
        return -TC_ES_READ_ONLY;
    case TC_S_BAD_LENGTH:
        return -TC_ES_BAD_LENGTH;
    case TC_S_BAD_VERSION:
        return -TC_ES_BAD_VERSION;
    case TC_S_UNKNOWN_TYPE:
        return -TC_ES_UNKNOWN_TYPE;
    case TC_S_NOT_READY:
        return -TC_ENOTREADY;
    case TC_S_BAD_VALUE:
        return -TC_ES_BAD_VALUE;
    case TC_S_OBSERVER:
        return -TC_ES_OBSERVER;
    case TC_S_WRONG_PORT:
        return -TC_ES_WRONG_PORT;
    default:
        return -TC_ES_UNKNOWN;
    }
}

/* An EVENTS body (datasheet 4.4) whose every length is consistent: tag 0, u32 first
   index, u8 count 1-64, count x (entry, u8 n = 0 or 112, n octets), nothing after. */
static int events_well_formed(const uint8_t *body, size_t len)
{
    size_t pos = 7;

    if (len < pos || body[1] != 0 || body[6] < 1 || body[6] > TC_POST_MAX_ENTRIES)
        return 0;
    for (unsigned i = 0; i < body[6]; i++) {
        size_t n;
        if (len - pos < TC_EVENT_SIZE + 1)
            return 0;
        n = body[pos + TC_EVENT_SIZE];
        if (n != 0 && n != TC_POST_SNAPSHOT_LEN)
            return 0;
        pos += TC_EVENT_SIZE + 1;
        if (len - pos < n)
            return 0;
        pos += n;
    }
    return pos == len;
}

/* With mu held: an IRQ or EVENTS frame arrived that no waiter has taken yet. */
static int irq_untaken(const tc_handle *h)
{
    return h->irq_count != h->irq_seen;
}

/* With mu held: an IRQ or EVENTS frame was filed, or the newest waiter left without taking
   its interrupt. Only the newest waiter takes it (see irq_turn), so only it is woken. Threads
   standing by look for themselves (standby_turn) while news keeps coming, on a timer (armed),
   so a caller that drains its own call's events does not wake the event thread; one asleep
   without that timer is woken once to set it. */
static void wake_irq_waiters(tc_handle *h)
{
    if (h->irq_waiters.prev != &h->irq_waiters) {
        pthread_cond_signal(&WAITER_OF(h->irq_waiters.prev, irq)->cv);
        return;
    }
    if (!h->standby_armed)
        wake_standby(h);
}

/* With mu held: an IRQ or EVENTS frame carrying bits arrived. */
static void raise_irq(tc_handle *h, uint32_t bits)
{
    if (!irq_untaken(h))
        now_ts(&h->untaken_since);
    now_ts(&h->last_news);
    h->irq_count++;
    h->irq_bits |= bits;
    wake_irq_waiters(h);
}

/* With mu held: queue the posted events the host has not handed out yet. The queue holds one
   run of consecutive indices; an entry beyond its end (a lost frame) or a full queue (its
   entries counted as dropped) ends the filing, and the drain that reaches the gap reads the
   ring: events at most a ring behind RING_HEAD come from there, older ones are an overflow. */
static void file_events(tc_handle *h, const uint8_t *body, size_t len)
{
    const uint8_t *p = body + 7;
    uint32_t idx = tc_le32(body + 2);

    if (!events_well_formed(body, len)) {
        h->stats.event_frames_bad++;
        return;
    }
    h->stats.event_frames++;
    for (unsigned i = 0; i < body[6]; i++, idx++) {
        const uint8_t *e = p;
        uint8_t n = e[TC_EVENT_SIZE];
        tc_event *ev;

        p += TC_EVENT_SIZE + 1 + n;
        if (h->ev_synced && tc_idx_before(idx, h->ev_next))
            continue; /* handed out already (read from the ring) */
        if (h->q_count == 0) {
            h->q_first = idx;
        } else {
            uint32_t end = h->q_first + h->q_count;
            if (tc_idx_before(idx, end))
                continue;
            if (h->q_count == TC_POSTQ_CAP) {
                h->stats.events_dropped += body[6] - i;
                h->need_ring = 1;
                break;
            }
            if (idx != end) {
                h->need_ring = 1;
                break;
            }
        }
        ev = &h->postq[idx % TC_POSTQ_CAP];
        ev->span = e[0];
        ev->channel = e[1];
        ev->code = e[2];
        ev->arg = e[3];
        ev->seq = tc_le32(e + 4);
        ev->snap_len = n;
        memcpy(ev->snap, e + TC_EVENT_SIZE + 1, n);
        h->q_count++;
    }
    if (h->q_count > h->stats.event_queue_peak)
        h->stats.event_queue_peak = h->q_count;
    raise_irq(h, TC_INT_EVENT);
}

/* With mu held. While posting, EVENT only reaches an IRQ frame when the card repeats it
   (the host was slow to acknowledge, or an EVENTS frame was lost) or with another source;
   OVERFLOW is only learnt from the ring registers. Either way the ring is read once the
   queued events are handed out. With AUTO_ACK, TAIL follows the frames sent, so EVENT pending
   means frames still on their way, not lost ones (those show as a gap): reading the ring then
   could only take events in flight for lost ones. */
static void file_irq(tc_handle *h, uint32_t bits)
{
    uint32_t ring_bits = h->post_auto ? TC_INT_OVERFLOW : TC_INT_EVENT | TC_INT_OVERFLOW;

    h->stats.irqs++;
    if (h->post_on && (bits & ring_bits))
        h->need_ring = 1;
    raise_irq(h, bits);
}

/* Called by the deframer, with mu held, for every frame whose CRC is good. */
static void file_frame(void *ctx, const uint8_t *body, size_t len)
{
    tc_handle *h = ctx;
    uint8_t type = body[0], tag = body[1];
    struct tc_slot *s = &h->slots[tag];

    if (type == TC_T_IRQ) {
        if (tag != 0 || len != 6)
            h->stats.unexpected++;
        else
            file_irq(h, tc_le32(body + 2));
        return;
    }
    if (type == TC_T_EVENTS) {
        file_events(h, body, len);
        return;
    }
    if (!(type & TC_T_RESPONSE) || tag == 0 || !s->busy || s->done ||
        (type & (uint8_t)~TC_T_RESPONSE) != s->req_type) {
        h->stats.unexpected++;
        /* An answer to a copy already answered (or given up on) is the card working through
           older requests: it is not silent (card_busy_before). */
        if (type & TC_T_RESPONSE && tag != 0)
            now_ts(&h->last_response);
        return;
    }
    s->done = 1;
    /* Any attempt of the request may be the one answered; the card answers in order, so it
       has got at least as far as the first. */
    h->last_answered = s->first_sent_as;
    now_ts(&h->last_response);
    if (s->waiter)
        pthread_cond_signal(&s->waiter->cv);
    if (len < 3) {
        s->err = -TC_EBADRESP;
        return;
    }
    s->status = body[2];
    s->data_len = len - 3;
    if (s->data_len > s->data_cap)
        s->err = -TC_EBADRESP;
    else if (s->data_len)
        memcpy(s->data, body + 3, s->data_len);
}

/* Poll and read once (mu not held). >0 bytes in rdbuf, 0 nothing yet, <0 device lost. */
static int pump(tc_handle *h, int ms)
{
    struct pollfd p[2] = {{.fd = h->fd, .events = POLLIN}, {.fd = h->wake[0], .events = POLLIN}};
    ssize_t n;
    int r = poll(p, 2, ms);

    if (r < 0)
        return errno == EINTR ? 0 : -ENODEV;
    if (r == 0 || p[1].revents || !p[0].revents)
        return 0;
    n = read(h->fd, h->rdbuf, sizeof h->rdbuf);
    if (n > 0)
        return (int)n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR) &&
        !(p[0].revents & (POLLHUP | POLLERR | POLLNVAL)))
        return 0;
    return -ENODEV;
}

/* With mu held, by the thread that holds the reader role and stops reading: pass the role
   to the oldest sleeping follower still waiting for something, or free it. */
static void hand_off(tc_handle *h)
{
    for (struct tc_list *n = h->followers.next; n != &h->followers; n = n->next) {
        struct tc_waiter *w = WAITER_OF(n, follower);
        if (!w->cond(h, w->arg)) {
            list_del(n);
            w->promoted = 1;
            pthread_cond_signal(&w->cv);
            return;
        }
    }
    h->reader = 0;
    now_ts(&h->reader_freed);
}

/* With mu held: a thread other than those standing by is inside the driver. */
static int others_inside(const tc_handle *h)
{
    return h->users > h->standing;
}

/* With mu held: w may take the free reader role. One standing by leaves the device to the
   threads that came for their own answers, and reads only once nobody else is inside or
   nobody has read for TC_STANDBY_DEFER_MS. */
static int may_read(const tc_handle *h, const struct tc_waiter *w)
{
    return !h->reader &&
           (!w->standby || !others_inside(h) || older_than(&h->reader_freed, TC_STANDBY_DEFER_MS));
}

/* With mu held: wait until w->cond holds (0), the deadline passes (-ETIMEDOUT), the handle
   closes (-EBADF) or the device is lost, reading the device whenever the reader role is
   free or handed over. */
static int wait_until(tc_handle *h, struct tc_waiter *w, const struct timespec *dl)
{
    int looked = 0, reading = 0, r;

    for (;;) {
        int ms;
        if (w->promoted) {
            w->promoted = 0;
            reading = 1;
        }
        if (w->cond(h, w->arg)) {
            r = 0;
            break;
        }
        if (h->lost) {
            r = h->lost;
            break;
        }
        if (h->closing) {
            r = -EBADF;
            break;
        }
        if (reading && w->standby && others_inside(h)) {
            hand_off(h);
            reading = 0;
        }
        if (!reading && may_read(h, w)) {
            h->reader = 1;
            reading = 1;
        }
        ms = remaining_ms(dl);
        /* Out of time, but a reader first takes one look without waiting: frames may sit
           unread in the fd when nobody was reading (a zero timeout, or a wait that ended as
           data came in). */
        if (ms == 0 && (looked || !reading)) {
            r = -ETIMEDOUT;
            break;
        }
        if (reading) {
            int n;
            looked = ms == 0;
            pthread_mutex_unlock(&h->mu);
            n = pump(h, ms);
            pthread_mutex_lock(&h->mu);
            if (n > 0) {
                tc_rx_feed(&h->rx, h->rdbuf, (size_t)n, &h->stats, file_frame, h);
            } else if (n < 0 && !h->closing && !h->lost) {
                h->lost = n;
                wake_all(h);
            }
            continue;
        }
        if (w->standby) {
            /* Not a follower. While news or requests keep coming it looks again every
               TC_STANDBY_DEFER_MS (standby_turn, may_read); once the card is quiet it sleeps
               until news comes, the last other thread leaves (tc_leave) or its deadline. */
            struct timespec until;
            h->standby_armed = irq_untaken(h) ||
                               !older_than(&h->last_news, TC_STANDBY_DEFER_MS) ||
                               !older_than(&h->reader_freed, TC_STANDBY_DEFER_MS);
            if (h->standby_armed)
                pthread_cond_timedwait(&w->cv, &h->mu, sooner(dl, TC_STANDBY_DEFER_MS, &until));
            else if (dl)
                pthread_cond_timedwait(&w->cv, &h->mu, dl);
            else
                pthread_cond_wait(&w->cv, &h->mu);
            h->standby_armed = 0;
            continue;
        }
        list_add_tail(&h->followers, &w->follower);
        if (dl)
            pthread_cond_timedwait(&w->cv, &h->mu, dl);
        else
            pthread_cond_wait(&w->cv, &h->mu);
        list_del(&w->follower);
    }
    if (reading)
        hand_off(h);
    return r;
}


/* Write buf to fd before the deadline (mu not held); *done gets the bytes written. */
static int write_out(tc_handle *h, const uint8_t *buf, size_t len, size_t *done,
                     const struct timespec *dl)
{
    size_t off = 0;
    int r = 0;

    while (off < len) {
        ssize_t n = write(h->fd, buf + off, len - off);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd p[2] = {{.fd = h->fd, .events = POLLOUT},
                                  {.fd = h->wake[0], .events = POLLIN}};
            int ms = remaining_ms(dl);
            if (ms == 0) {
                r = -ETIMEDOUT;
                break;
            }
            if (poll(p, 2, ms) < 0 && errno != EINTR) {
                r = -ENODEV;
                break;
            }
            if (p[1].revents) {
                r = -EBADF;
                break;
            }
            if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) {
                r = -ENODEV;
                break;
            }
        } else {
            r = -ENODEV;
            break;
        }
    }
    *done = off;
    return r;
}

/* With mu held: room for n more bytes in the output queue. */
static int out_reserve(struct tc_out *o, size_t n)
{
    if (o->cap - o->len < n) {
        size_t cap = o->cap ? o->cap : 4096;
        uint8_t *p;
        while (cap - o->len < n)
            cap *= 2;
        p = realloc(o->buf, cap);
        if (!p)
            return -ENOMEM;
        o->buf = p;
        o->cap = cap;
    }
    return 0;
}

/* With mu held: queue a frame for fd. The thread that finds nobody writing becomes the
   writer: it writes everything queued, its own frame and those others add meanwhile, in
   order, with mu released, until the queue is empty or its deadline passes; the others
   return at once. What a writer could not write stays at the head of the queue. */
static int queue_frame(tc_handle *h, const uint8_t *frame, size_t len, const struct timespec *dl)
{
    int r = out_reserve(&h->out, len);

    if (r)
        return r;
    memcpy(h->out.buf + h->out.len, frame, len);
    h->out.len += len;
    if (h->writing)
        return 0;
    h->writing = 1;
    while (r == 0 && h->out.len) {
        struct tc_out mine = h->out;
        size_t done;
        /* others append to the spare buffer while this one is written */
        h->out = h->out_spare;
        h->out.len = 0;
        pthread_mutex_unlock(&h->mu);
        r = write_out(h, mine.buf, mine.len, &done, dl);
        pthread_mutex_lock(&h->mu);
        if (done < mine.len) {
            /* the unwritten rest goes back in front of what was added meanwhile */
            size_t rest = mine.len - done, added = h->out.len;
            memmove(mine.buf, mine.buf + done, rest);
            mine.len = rest;
            if (out_reserve(&mine, added) == 0) {
                memcpy(mine.buf + rest, h->out.buf, added);
                mine.len += added;
            } else {
                r = -ENOMEM;
            }
            h->out_spare = h->out;
            h->out = mine;
        } else {
            h->out_spare = mine;
        }
        h->out_spare.len = 0;
    }
    h->writing = 0;
    return r;
}

/* FNV-1a over a request's type and payload: its identity on a tag (datasheet 4.5). A
   collision only makes the host skip a tag it could have used. */
static uint64_t request_hash(uint8_t type, const uint8_t *payload, size_t plen)
{
    uint64_t x = 0xcbf29ce484222325ull;

    x = (x ^ type) * 0x100000001b3ull;
    for (size_t i = 0; i < plen; i++)
        x = (x ^ payload[i]) * 0x100000001b3ull;
    return x;
}

/* The card remembers WRITE and COMMAND requests, and nothing that changes nothing. */
static int remembered_type(uint8_t type)
{
    return type != TC_T_READ && type != TC_T_HELLO;
}

/* With mu held: the card cannot take a request with this hash on the tag for a retry. */
static int tag_accepts(const struct tc_slot *s, uint64_t hash)
{
    if (s->mem_n == TC_TAG_UNKNOWN)
        return 0;
    for (unsigned i = 0; i < s->mem_n; i++)
        if (s->mem[i] == hash)
            return 0;
    return 1;
}

/* With mu held and fewer than TC_MAX_OUTSTANDING tags busy: the next free tag in order
   that accepts the request; when none does, the next free tag with *scrub set (a READ on
   it must first end what the card remembers there). */
static uint8_t pick_tag(tc_handle *h, int remembered, uint64_t hash, int *scrub)
{
    unsigned t = h->next_tag, first_free = 0;

    *scrub = 0;
    for (unsigned i = 0; i < TC_NUM_TAGS - 1; i++, t = t % (TC_NUM_TAGS - 1) + 1) {
        if (h->slots[t].busy)
            continue;
        if (!remembered || tag_accepts(&h->slots[t], hash))
            break;
        if (!first_free)
            first_free = t;
    }
    if (h->slots[t].busy || (remembered && !tag_accepts(&h->slots[t], hash))) {
        t = first_free;
        *scrub = 1;
    }
    h->next_tag = t % (TC_NUM_TAGS - 1) + 1;
    return (uint8_t)t;
}

/* With mu held, after a request on the tag: what the card may now remember there. */
static void note_memory(struct tc_slot *s, uint8_t type, uint64_t hash, int answered)
{
    if (answered) {
        /* the card received it, and nothing after it on this tag */
        s->mem_n = remembered_type(type) ? 1 : 0;
        s->mem[0] = hash;
    } else if (remembered_type(type) && s->mem_n != TC_TAG_UNKNOWN) {
        /* it may or may not have arrived: both it and what was there before are possible */
        if (s->mem_n < TC_TAG_MEMORY)
            s->mem[s->mem_n++] = hash;
        else
            s->mem_n = TC_TAG_UNKNOWN;
    }
}

static int slot_done(tc_handle *h, const void *arg)
{
    return h->slots[*(const uint8_t *)arg].done;
}

/* A request frame: encoded into small, or into a heap buffer when it does not fit. */
struct wire {
    uint8_t *frame;
    int len;
    uint8_t small[SMALL_FRAME];
};

static int wire_encode(struct wire *wb, uint8_t tag, uint8_t type, const uint8_t *payload,
                       size_t plen)
{
    size_t body_len = plen + 2, cap = 2 * (body_len + 2) + 2;
    uint8_t *body;

    wb->frame = wb->small;
    wb->len = -1;
    if (cap + body_len > sizeof wb->small) {
        wb->frame = malloc(cap + body_len);
        if (!wb->frame)
            return -ENOMEM;
    }
    body = wb->frame + cap;
    body[0] = type;
    body[1] = tag;
    if (plen)
        memcpy(body + 2, payload, plen);
    wb->len = tc_frame_encode(body, body_len, wb->frame, cap);
    return wb->len < 0 ? wb->len : 0;
}

static void wire_free(struct wire *wb)
{
    if (wb->frame != wb->small)
        free(wb->frame);
    wb->frame = wb->small;
}

/* With mu held: the tag is ready for a response to this request. */
static void arm_slot(struct tc_slot *s, uint8_t type, uint8_t *data, size_t data_cap)
{
    s->done = 0;
    s->err = 0;
    s->req_type = type;
    s->data = data;
    s->data_cap = data_cap;
    s->data_len = 0;
}

/* With mu held: the request on s has waited its time-out, but the card's latest response,
   less than a time-out ago, answered a request sent before it: the card, which answers in
   order, is still working its way to this one. Then *dl becomes a time-out after that
   response (datasheet 4.5). Had it answered a later request, this one was lost. */
static int card_busy_before(tc_handle *h, const struct tc_slot *s, struct timespec *dl)
{
    if (h->last_answered >= s->sent_as)
        return 0;
    *dl = h->last_response;
    add_ms(dl, h->opt.timeout_ms);
    return remaining_ms(dl) > 0;
}

/* With mu held: wait for the response on the tag until dl (later while the card is busy
   with requests sent before it). */
static int wait_slot(tc_handle *h, struct tc_waiter *w, struct tc_slot *s,
                     const struct timespec *dl)
{
    struct timespec until = *dl;
    int r;

    s->waiter = w;
    do
        r = wait_until(h, w, &until);
    while (r == -ETIMEDOUT && card_busy_before(h, s, &until));
    s->waiter = NULL;
    return r;
}

/* With mu held, after a frame write failed with wr. */
static void note_write_error(tc_handle *h, int wr)
{
    if (wr == -ENODEV && !h->closing && !h->lost) {
        h->lost = wr;
        wake_all(h);
    }
}

/* With mu held, a request frame about to be queued: its number among those sent, and its
   response deadline in *dl, read off the clock with last_request (once for both). */
static uint64_t request_out(tc_handle *h, struct timespec *dl)
{
    now_ts(&h->last_request);
    *dl = h->last_request;
    add_ms(dl, h->opt.timeout_ms);
    return ++h->requests_sent;
}

/* With mu held (released while writing and waiting): send one request on a reserved tag
   and wait for its response, retrying the identical frame; w waits for slot_done on that
   tag. When p says so, its first attempt is already out. The response payload's first
   byte lands in slot->status, the rest in data. */
static int run_on_tag(tc_handle *h, struct tc_waiter *w, uint8_t tag, uint8_t type,
                      const uint8_t *payload, size_t plen, uint8_t *data, size_t data_cap,
                      const struct tc_pending *p)
{
    struct tc_slot *s = &h->slots[tag];
    struct wire wb = {.frame = NULL};
    uint64_t hash = request_hash(type, payload, plen);
    int r = -ETIMEDOUT, sent = 0, attempt = 0;

    if (p && p->sent) {
        sent = 1;
        attempt = 1;
        r = p->send_result == 0 ? wait_slot(h, w, s, &p->dl) : p->send_result;
    } else {
        arm_slot(s, type, data, data_cap);
    }
    for (; r == -ETIMEDOUT && attempt <= h->opt.retries; attempt++) {
        struct timespec dl;
        int wr;

        if (!wb.frame && (r = wire_encode(&wb, tag, type, payload, plen)) != 0)
            break;
        s->sent_as = request_out(h, &dl);
        if (!sent)
            s->first_sent_as = s->sent_as;
        wr = queue_frame(h, wb.frame, (size_t)wb.len, &dl);
        h->stats.frames_tx++;
        sent = 1;
        if (attempt > 0)
            h->stats.retries++;
        note_write_error(h, wr);
        r = wr == 0 ? wait_slot(h, w, s, &dl) : wr;
    }
    if (wb.frame)
        wire_free(&wb);
    if (sent)
        note_memory(s, type, hash, s->done);
    if (r == 0)
        r = s->err;
    else if (r == -ETIMEDOUT)
        h->stats.timeouts++;
    /* a late response to an abandoned request is counted as unexpected, never filed */
    s->done = 1;
    s->data = NULL;
    s->data_cap = 0;
    return r;
}

/* With mu held, a tag having been freed: hand free tags to queued requests, oldest first,
   sending each one's first attempt here (mu is released while writing, as queue_frame). */
static void assign_queued(tc_handle *h)
{
    while (h->tags_busy < TC_MAX_OUTSTANDING && h->tag_queue.next != &h->tag_queue) {
        struct tc_pending *p = PENDING_OF(h->tag_queue.next);
        struct tc_slot *s;
        struct wire wb;
        struct timespec dl;
        int scrub, wr;

        list_del(&p->node);
        p->tag = pick_tag(h, remembered_type(p->type), p->hash, &scrub);
        s = &h->slots[p->tag];
        s->busy = 1;
        h->tags_busy++;
        p->assigned = 1;
        p->scrub = scrub;
        if (scrub || h->closing || h->lost) {
            pthread_cond_signal(&p->w->cv);
            continue;
        }
        arm_slot(s, p->type, p->data, p->data_cap);
        s->waiter = p->w;
        p->sending = 1;
        wr = wire_encode(&wb, p->tag, p->type, p->payload, p->plen);
        s->sent_as = s->first_sent_as = request_out(h, &dl);
        if (wr == 0)
            wr = queue_frame(h, wb.frame, (size_t)wb.len, &dl);
        p->sent = wb.len > 0;
        wire_free(&wb);
        if (p->sent)
            h->stats.frames_tx++;
        note_write_error(h, wr);
        p->send_result = wr;
        p->dl = dl;
        p->sending = 0;
        if (p->want_sent || wr != 0 || !p->sent) {
            pthread_cond_signal(&p->w->cv);
            continue;
        }
        /* asleep, it now waits for its response like any follower; someone must read */
        list_add_tail(&h->followers, &p->w->follower);
        if (!h->reader) {
            h->reader = 1;
            hand_off(h);
        }
    }
}

/* With mu held: wait in the tag queue until a tag is assigned to p (0) or the handle
   closes or the device is lost. */
static int queue_for_tag(tc_handle *h, struct tc_pending *p)
{
    list_add_tail(&h->tag_queue, &p->node);
    for (;;) {
        struct timespec dl;
        if (p->assigned && !p->sending)
            return 0;
        if (!p->assigned && (h->closing || h->lost)) {
            list_del(&p->node);
            return h->closing ? -EBADF : h->lost;
        }
        if (p->assigned) {
            p->want_sent = 1;
            pthread_cond_wait(&p->w->cv, &h->mu);
            continue;
        }
        /* the first attempt's deadline is the assigner's: look again at the retry period */
        tc_deadline_in(&dl, h->opt.timeout_ms);
        pthread_cond_timedwait(&p->w->cv, &h->mu, &dl);
        list_del(&p->w->follower);
    }
}

int tc_transact(tc_handle *h, uint8_t type, const uint8_t *payload, size_t plen,
                uint8_t *data, size_t data_cap, size_t *data_len)
{
    struct tc_waiter w;
    struct tc_pending p = {.type = type, .payload = payload, .plen = plen, .data = data,
                           .data_cap = data_cap};
    uint8_t tag;
    int r;

    if (waiter_init(&w, slot_done, &p.tag) != 0)
        return -ENOMEM;
    p.w = &w;
    p.hash = request_hash(type, payload, plen);
    list_init(&p.node);
    pthread_mutex_lock(&h->mu);
    if (h->closing) {
        r = -EBADF;
    } else if (h->lost) {
        r = h->lost;
    } else if (h->tags_busy < TC_MAX_OUTSTANDING && h->tag_queue.next == &h->tag_queue) {
        p.tag = pick_tag(h, remembered_type(type), p.hash, &p.scrub);
        h->slots[p.tag].busy = 1;
        h->tags_busy++;
        r = 0;
    } else {
        r = queue_for_tag(h, &p);
    }
    tag = p.tag;
    if (r == 0 && p.scrub) {
        /* a READ ends the card's memory of the tag, whatever it answers */
        uint8_t req[6], one;
        tc_put_le32(req, TC_REG_MAGIC);
        tc_put_le16(req + 4, 1);
        r = run_on_tag(h, &w, tag, TC_T_READ, req, sizeof req, &one, sizeof one, NULL);
    }
    if (r == 0)
        r = run_on_tag(h, &w, tag, type, payload, plen, data, data_cap, &p);
    if (tag) {
        if (r == 0) {
            if (data_len)
                *data_len = h->slots[tag].data_len;
            r = tc_status_error(h->slots[tag].status);
        }
        h->slots[tag].busy = 0;
        h->tags_busy--;
        assign_queued(h);
    }
    pthread_mutex_unlock(&h->mu);
    pthread_cond_destroy(&w.cv);
    return r;
}

/* tc_wait_irq: an interrupt not taken yet, and this waiter is the newest: a thread that
   waits for the events of its own call while the event thread also waits takes them
   itself, and the event thread sleeps on. */
static int irq_turn(tc_handle *h, const void *arg)
{
    const struct tc_waiter *w = arg;

    return irq_untaken(h) && h->irq_waiters.prev == &w->irq;
}

/* tc_wait_events: the same, or posted events not drained yet. Queued events count even
   when another waiter took their interrupt, so a drainer that looked away between its
   drain and its wait does not sleep on them. */
static int events_turn(tc_handle *h, const void *arg)
{
    const struct tc_waiter *w = arg;

    return (irq_untaken(h) || h->q_count) && h->irq_waiters.prev == &w->irq;
}

/* tc_wait_events standing by: an interrupt not taken yet, no other thread waits for it, and
   either nobody else is inside the driver or it has gone untaken for TC_STANDBY_DEFER_MS (a
   caller that got its call's events with its response is about to drain them itself).
   Events whose interrupt another thread took are that thread's to drain. */
static int standby_turn(tc_handle *h, const void *arg)
{
    (void)arg;
    return irq_untaken(h) && h->irq_waiters.next == &h->irq_waiters &&
           (!others_inside(h) || older_than(&h->untaken_since, TC_STANDBY_DEFER_MS));
}

static int wait_irq(tc_handle *h, int timeout_ms, uint32_t *status, cond_fn turn,
                    struct tc_list *list)
{
    struct timespec dl;
    struct tc_waiter w;
    int r = tc_enter(h);

    if (r)
        return r;
    if (timeout_ms >= 0)
        tc_deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&h->mu);
    r = waiter_init(&w, turn, &w);
    if (r == 0) {
        w.standby = list == &h->standby;
        h->standing += (unsigned)w.standby;
        list_add_tail(list, &w.irq);
        r = wait_until(h, &w, timeout_ms >= 0 ? &dl : NULL);
        h->standing -= (unsigned)w.standby;
        if (r == 0) {
            h->irq_seen = h->irq_count;
            if (status)
                *status = h->irq_bits;
            h->irq_bits = 0;
        }
        list_del(&w.irq);
        pthread_cond_destroy(&w.cv);
        /* an interrupt we leave untaken is the next newest waiter's (events we leave
           undrained are this caller's to drain) */
        if (irq_untaken(h))
            wake_irq_waiters(h);
    }
    if (r == 0) {
        /* the card's watchdog hears only requests (datasheet 2.6): a host woken by news all
           along, that has sent the card nothing for as long as it would have waited, asks
           the card in its next drain as after an idle wait */
        if (timeout_ms >= 0 && older_than(&h->last_request, timeout_ms))
            h->need_ring = 1;
        r = 1;
    } else if (r == -ETIMEDOUT) {
        /* a card that went silent may have rebooted (posting and INT_MASK are off after
           boot): the drain that follows an idle wait asks the card */
        h->need_ring = 1;
        r = 0;
    }
    pthread_mutex_unlock(&h->mu);
    tc_leave(h);
    return r;
}

int tc_wait_irq(tc_handle *h, int timeout_ms, uint32_t *status)
{
    return wait_irq(h, timeout_ms, status, irq_turn, &h->irq_waiters);
}

int tc_wait_events(tc_handle *h, int timeout_ms, int standby, uint32_t *status)
{
    if (standby)
        return wait_irq(h, timeout_ms, status, standby_turn, &h->standby);
    return wait_irq(h, timeout_ms, status, events_turn, &h->irq_waiters);
}
