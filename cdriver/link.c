/*
 * Host-link transactions (datasheet 4.3-4.5) shared by many threads on one handle.
 *
 * Leader/follower: whichever waiting thread finds nobody reading becomes the reader. It
 * polls the fd up to its own deadline, files each response into the slot of its tag and
 * each IRQ into the handle, then gives up the role and broadcasts; everyone re-checks
 * its own condition and the next one still waiting takes over. Other waiters sleep on
 * the condvar with their own deadline. Frame writes are serialised by write_mu.
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

#define SMALL_FRAME 640

static void now_ts(struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
}

static void deadline_in(struct timespec *ts, int ms)
{
    now_ts(ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
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
}

int tc_link_init(tc_handle *h, int fd, const tc_options *opt)
{
    pthread_condattr_t ca;

    memset(h, 0, sizeof *h);
    h->fd = fd;
    h->next_tag = 1;
    if (opt)
        h->opt = *opt;
    else
        tc_options_init(&h->opt);
    if (h->opt.timeout_ms <= 0 || h->opt.retries < 0)
        return -EINVAL;
    tc_rx_init(&h->rx);
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_pipe;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&h->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail_pipe;
    }
    pthread_condattr_destroy(&ca);
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        goto fail_cv;
    if (pthread_mutex_init(&h->write_mu, NULL) != 0)
        goto fail_mu;
    if (pthread_mutex_init(&h->drain_mu, NULL) != 0)
        goto fail_wmu;
    return 0;
fail_wmu:
    pthread_mutex_destroy(&h->write_mu);
fail_mu:
    pthread_mutex_destroy(&h->mu);
fail_cv:
    pthread_cond_destroy(&h->cv);
fail_pipe:
    close(h->wake[0]);
    close(h->wake[1]);
    return -ENOMEM;
}

void tc_link_destroy(tc_handle *h)
{
    pthread_mutex_destroy(&h->drain_mu);
    pthread_mutex_destroy(&h->write_mu);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    close(h->wake[0]);
    close(h->wake[1]);
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

void tc_leave(tc_handle *h)
{
    pthread_mutex_lock(&h->mu);
    h->users--;
    if (h->closing && h->users == 0)
        pthread_cond_broadcast(&h->cv);
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
        pthread_cond_broadcast(&h->cv);
    }
    while (h->users > 0)
        pthread_cond_wait(&h->cv, &h->mu);
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
    h->irq_count++;
    h->irq_bits |= TC_INT_EVENT;
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
    h->irq_count++;
    h->irq_bits |= bits;
    if (h->post_on && (bits & ring_bits))
        h->need_ring = 1;
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
        return;
    }
    s->done = 1;
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

typedef int (*cond_fn)(tc_handle *h, const void *arg);

/* With mu held: wait until cond(h, arg) holds (0), the deadline passes (-ETIMEDOUT),
   the handle closes (-EBADF) or the device is lost. With may_read, takes the reader role
   when it is free; conditions that other threads (not frames) make true must not, since
   the reader only wakes for data. */
static int wait_until(tc_handle *h, cond_fn cond, const void *arg, const struct timespec *dl,
                      int may_read)
{
    int looked = 0;

    for (;;) {
        int ms;
        if (cond(h, arg))
            return 0;
        if (h->lost)
            return h->lost;
        if (h->closing)
            return -EBADF;
        ms = remaining_ms(dl);
        /* Out of time, but a would-be reader first takes one look without waiting: frames
           may sit unread in the fd when nobody was reading (a zero timeout, or a wait that
           ended as data came in). */
        if (ms == 0 && (looked || !may_read || h->reader))
            return -ETIMEDOUT;
        if (may_read && !h->reader) {
            int n;
            looked = ms == 0;
            h->reader = 1;
            pthread_mutex_unlock(&h->mu);
            n = pump(h, ms);
            pthread_mutex_lock(&h->mu);
            if (n > 0)
                tc_rx_feed(&h->rx, h->rdbuf, (size_t)n, &h->stats, file_frame, h);
            else if (n < 0 && !h->closing)
                h->lost = n;
            h->reader = 0;
            pthread_cond_broadcast(&h->cv);
        } else if (dl) {
            pthread_cond_timedwait(&h->cv, &h->mu, dl);
        } else {
            pthread_cond_wait(&h->cv, &h->mu);
        }
    }
}

static int slot_done(tc_handle *h, const void *arg)
{
    return h->slots[*(const uint8_t *)arg].done;
}

static int tag_free(tc_handle *h, const void *arg)
{
    (void)arg;
    return h->tags_busy < TC_MAX_OUTSTANDING;
}

/* Write a whole frame before the deadline (mu not held). */
static int send_frame(tc_handle *h, const uint8_t *frame, size_t len, const struct timespec *dl)
{
    size_t off = 0;
    int r = 0;

    pthread_mutex_lock(&h->write_mu);
    while (off < len) {
        ssize_t n = write(h->fd, frame + off, len - off);
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
    pthread_mutex_unlock(&h->write_mu);
    return r;
}

/* With mu held and fewer than TC_MAX_OUTSTANDING tags busy: the next free tag in order. */
static uint8_t pick_tag(tc_handle *h)
{
    unsigned t = h->next_tag;

    while (h->slots[t].busy)
        t = t % (TC_NUM_TAGS - 1) + 1;
    h->next_tag = t % (TC_NUM_TAGS - 1) + 1;
    return (uint8_t)t;
}

/* Send one request on a reserved tag and wait for its response, retrying the identical
   frame. The response payload's first byte lands in slot->status, the rest in data. */
static int run_on_tag(tc_handle *h, uint8_t tag, uint8_t type, const uint8_t *payload,
                      size_t plen, uint8_t *data, size_t data_cap)
{
    struct tc_slot *s = &h->slots[tag];
    uint8_t small_frame[SMALL_FRAME], small_body[SMALL_FRAME / 2 - 4];
    uint8_t *frame = small_frame, *body = small_body;
    size_t body_len = plen + 2, cap = 2 * (body_len + 2) + 2;
    int flen, r = -ETIMEDOUT;

    if (body_len > sizeof small_body || cap > sizeof small_frame) {
        frame = malloc(cap + body_len);
        if (!frame)
            return -ENOMEM;
        body = frame + cap;
    }
    body[0] = type;
    body[1] = tag;
    if (plen)
        memcpy(body + 2, payload, plen);
    flen = tc_frame_encode(body, body_len, frame, cap);

    pthread_mutex_lock(&h->mu);
    s->done = 0;
    s->err = 0;
    s->req_type = type;
    s->data = data;
    s->data_cap = data_cap;
    s->data_len = 0;
    pthread_mutex_unlock(&h->mu);

    for (int attempt = 0; flen > 0 && attempt <= h->opt.retries; attempt++) {
        struct timespec dl;
        int w;

        deadline_in(&dl, h->opt.timeout_ms);
        w = send_frame(h, frame, (size_t)flen, &dl);
        pthread_mutex_lock(&h->mu);
        h->stats.frames_tx++;
        if (attempt > 0)
            h->stats.retries++;
        if (w == -ENODEV && !h->closing && !h->lost)
            h->lost = w;
        r = w == 0 ? wait_until(h, slot_done, &tag, &dl, 1) : w;
        pthread_mutex_unlock(&h->mu);
        if (r != -ETIMEDOUT)
            break;
    }
    if (flen < 0)
        r = flen;
    pthread_mutex_lock(&h->mu);
    if (r == 0)
        r = s->err;
    else if (r == -ETIMEDOUT)
        h->stats.timeouts++;
    /* a late response to an abandoned request is counted as unexpected, never filed */
    s->done = 1;
    s->data = NULL;
    s->data_cap = 0;
    pthread_mutex_unlock(&h->mu);
    if (frame != small_frame)
        free(frame);
    return r;
}

int tc_transact(tc_handle *h, uint8_t type, const uint8_t *payload, size_t plen,
                uint8_t *data, size_t data_cap, size_t *data_len)
{
    uint8_t tag = 0;
    int r;

    pthread_mutex_lock(&h->mu);
    r = wait_until(h, tag_free, NULL, NULL, 0);
    if (r == 0) {
        tag = pick_tag(h);
        h->slots[tag].busy = 1;
        h->tags_busy++;
    }
    pthread_mutex_unlock(&h->mu);
    if (r)
        return r;

    r = run_on_tag(h, tag, type, payload, plen, data, data_cap);
    pthread_mutex_lock(&h->mu);
    if (r == 0) {
        if (data_len)
            *data_len = h->slots[tag].data_len;
        r = tc_status_error(h->slots[tag].status);
    }
    h->slots[tag].busy = 0;
    h->tags_busy--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return r;
}

static int irq_after(tc_handle *h, const void *arg)
{
    return h->irq_count != *(const uint64_t *)arg;
}

uint64_t tc_irq_count(tc_handle *h)
{
    uint64_t n;

    pthread_mutex_lock(&h->mu);
    n = h->irq_count;
    pthread_mutex_unlock(&h->mu);
    return n;
}

int tc_wait_irq_after(tc_handle *h, uint64_t seen, int timeout_ms, uint64_t *now_count)
{
    struct timespec dl;
    int r;

    if (timeout_ms >= 0)
        deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&h->mu);
    r = wait_until(h, irq_after, &seen, timeout_ms >= 0 ? &dl : NULL, 1);
    *now_count = h->irq_count;
    pthread_mutex_unlock(&h->mu);
    return r;
}

int tc_wait_irq(tc_handle *h, int timeout_ms, uint32_t *status)
{
    struct timespec dl;
    int r = tc_enter(h);

    if (r)
        return r;
    if (timeout_ms >= 0)
        deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&h->mu);
    r = wait_until(h, irq_after, &h->irq_seen, timeout_ms >= 0 ? &dl : NULL, 1);
    if (r == 0) {
        h->irq_seen = h->irq_count;
        if (status)
            *status = h->irq_bits;
        h->irq_bits = 0;
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
