/*
 * Opening a card, the handshake, register ranges, the event ring drain and mailboxes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tc_internal.h"

/* Take the device exclusively before touching its settings, so a second opener fails
   with -EBUSY and leaves the first one's line untouched. A tty's settings as found go to
   *saved (*is_tty set) once changed, for a failed open to put back. Anything but a character
   device is refused before a byte is written: a regular file would be overwritten. */
static int prepare_fd(int fd, struct termios *saved, int *is_tty)
{
    struct stat st;
    int fl = fcntl(fd, F_GETFL);

    *is_tty = 0;
    if (fl < 0 || fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISCHR(st.st_mode))
        return -TC_ENOTCHR;
    /* a card's link is a serial port or a pty (datasheet 1); a HELLO written to /dev/port or a
       watchdog device would do harm */
    if (!isatty(fd))
        return -TC_ENOTTY;
    if ((fl & O_ACCMODE) != O_RDWR)
        return -EBADF;
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    /* root bypasses TIOCEXCL, so the advisory lock is what really excludes */
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? -EBUSY : -errno;
    if (isatty(fd)) {
        struct termios t;
        if (tcgetattr(fd, saved) < 0)
            return -errno;
        t = *saved;
        cfmakeraw(&t);
        t.c_cflag |= CLOCAL | CREAD;
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        *is_tty = 1;
        if (tcsetattr(fd, TCSANOW, &t) < 0 || ioctl(fd, TIOCEXCL) < 0)
            return -errno;
        tcflush(fd, TCIFLUSH);
    }
    return 0;
}

/* A failed open leaves a tty as it found it: its settings, and open to others. */
static void restore_fd(int fd, const struct termios *saved, int is_tty)
{
    if (is_tty) {
        tcsetattr(fd, TCSANOW, saved);
        ioctl(fd, TIOCNXCL);
    }
    close(fd);
}

/* A controller needs a minor whose watchdog stays armed after it expired (1.4: a 1.3 card's
   disarmed itself, leaving up what a late request did), with ACCEPT_BEARERS and MAKE_CALL's
   plans, presentation and bearer (1.3: a 1.2 card refuses the one and ignores the others); an
   observer one with monitor ports (1.3); older cards are refused. */
#define CONTROLLER_MIN_MINOR 4
#define OBSERVER_MIN_MINOR 3
#define HELLO_RESP_LEN 10     /* status excluded: version, MAGIC, BOOT_ID */
#define HELLO_OBSERVER_LEN 14 /* ... and the index of the first event posted (datasheet 4.6) */

static int version_ok(const tc_handle *h, uint16_t card)
{
    unsigned minor = h->opt.observe ? OBSERVER_MIN_MINOR : CONTROLLER_MIN_MINOR;

    return card >> 8 == TC_PROTO_VERSION >> 8 && (card & 0xFFu) >= minor;
}

/* HELLO as a controller (two bytes, as 1.2 cards take it) or as an observer (the session byte;
   *first gets the index of the first event the card will post). */
static int hello(tc_handle *h, tc_info *info, uint32_t *first)
{
    uint8_t req[3], resp[HELLO_OBSERVER_LEN], id[16], ring[4];
    size_t n = 0, want = h->opt.observe ? HELLO_OBSERVER_LEN : HELLO_RESP_LEN;
    int r;

    tc_put_le16(req, TC_PROTO_VERSION);
    req[2] = TC_SESSION_OBSERVER;
    r = tc_transact(h, TC_T_HELLO, req, h->opt.observe ? 3 : 2, resp, sizeof resp, &n);
    if (r == -TC_ES_BAD_VERSION || (r == -TC_ES_BAD_LENGTH && h->opt.observe))
        return -TC_EVERSION; /* a 1.2 card takes no session byte */
    if (r == -TC_ES_WRONG_PORT)
        return h->opt.observe ? -TC_ECONTROLPORT : -TC_EMONITORPORT;
    if (r)
        return r;
    if (n != want)
        return -TC_EBADRESP;
    if (!version_ok(h, tc_le16(resp)))
        return -TC_EVERSION;
    *first = h->opt.observe ? tc_le32(resp + HELLO_RESP_LEN) : 0;
    if (tc_le32(resp + 2) != TC_MAGIC_VALUE)
        return -TC_EBADMAGIC;
    r = tc_read(h, TC_REG_MAGIC, id, sizeof id);
    if (r == 0)
        r = tc_read(h, TC_RING_SIZE, ring, sizeof ring);
    if (r)
        return r;
    info->magic = tc_le32(id + TC_REG_MAGIC);
    info->hw_version = tc_le16(id + TC_REG_HW_VERSION);
    info->fw_version = tc_le16(id + TC_REG_FW_VERSION);
    info->proto_version = tc_le16(id + TC_REG_PROTO_VERSION);
    info->num_spans = id[TC_REG_NUM_SPANS];
    info->boot_id = tc_le32(id + TC_REG_BOOT_ID);
    if (info->magic != TC_MAGIC_VALUE)
        return -TC_EBADMAGIC;
    if (!version_ok(h, info->proto_version))
        return -TC_EVERSION;
    if (info->num_spans < 1 || info->num_spans > TC_MAX_SPANS ||
        tc_le32(ring) != TC_RING_ENTRIES)
        return -TC_EBADIDENT;
    return 0;
}

int tc_handshake(tc_handle *h, tc_info *info)
{
    tc_info fresh;
    uint32_t first = 0;
    int r = tc_enter(h);

    if (r)
        return r;
    r = hello(h, &fresh, &first);
    if (r == 0) {
        pthread_mutex_lock(&h->mu);
        r = h->have_info && h->info.boot_id != fresh.boot_id;
        h->info = fresh;
        h->have_info = 1;
        /* HELLO discards frames the card had not sent yet: EVENTS frames may be lost */
        h->need_ring = 1;
        if (r) {
            /* a new ring, and EVENT_POST is 0 after boot */
            h->post_on = 0;
            h->post_auto = 0;
            h->ev_synced = 0;
            h->ev_gen++;
            h->q_count = 0;
        }
        if (h->opt.observe) {
            /* every event from first on is posted to this session; RING_TAIL is the
               controller's, so nothing is acknowledged, as with AUTO_ACK */
            h->post_on = 1;
            h->post_auto = 1;
            h->ev_synced = 1;
            h->ev_next = h->ev_acked = first;
            h->ev_gen++;
            h->q_count = 0;
        }
        pthread_mutex_unlock(&h->mu);
        if (info)
            *info = fresh;
    }
    tc_leave(h);
    return r;
}

void tc_get_info(tc_handle *h, tc_info *info)
{
    pthread_mutex_lock(&h->mu);
    *info = h->info;
    pthread_mutex_unlock(&h->mu);
}

int tc_open_fd(int fd, const tc_options *opt, tc_handle **out)
{
    struct termios saved;
    tc_handle *h;
    int is_tty, r;

    *out = NULL;
    r = prepare_fd(fd, &saved, &is_tty);
    if (r) {
        restore_fd(fd, &saved, is_tty);
        return r;
    }
    h = malloc(sizeof *h);
    if (!h) {
        restore_fd(fd, &saved, is_tty);
        return -ENOMEM;
    }
    r = tc_link_init(h, fd, opt);
    if (r) {
        free(h);
        restore_fd(fd, &saved, is_tty);
        return r;
    }
    r = tc_handshake(h, NULL);
    if (r < 0) {
        /* end of file or silence at the first HELLO: whatever this is, it is not a card */
        if (r == -ENODEV || r == -ETIMEDOUT)
            r = -TC_ENOCARD;
        h->fd_closed = 1; /* restore_fd closes it, after putting the tty back */
        tc_free(h);
        restore_fd(fd, &saved, is_tty);
        return r;
    }
    *out = h;
    return 0;
}

int tc_check_device(const char *path)
{
    struct stat st;
    char link[64], target[256];
    ssize_t n;
    const char *class;

    if (!path)
        return -EINVAL;
    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISCHR(st.st_mode))
        return -TC_ENOTCHR;
    /* sysfs names each registered character device's class; pty slaves are not there, and
       prepare_fd's isatty() judges those once open */
    snprintf(link, sizeof link, "/sys/dev/char/%u:%u/subsystem", major(st.st_rdev),
             minor(st.st_rdev));
    n = readlink(link, target, sizeof target - 1);
    if (n < 0)
        return 0;
    target[n] = '\0';
    class = strrchr(target, '/');
    class = class ? class + 1 : target;
    return strcmp(class, "tty") == 0 ? 0 : -TC_ENOTTY;
}

int tc_open(const char *path, const tc_options *opt, tc_handle **out)
{
    int fd, r = tc_check_device(path);

    *out = NULL;
    if (r)
        return r;
    fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    return tc_open_fd(fd, opt, out);
}

/* Registers ---------------------------------------------------------------------------- */

static int read_chunk(tc_handle *h, uint32_t addr, uint8_t *buf, size_t len)
{
    uint8_t req[6];
    size_t n = 0;
    int r;

    tc_put_le32(req, addr);
    tc_put_le16(req + 4, (uint16_t)len);
    r = tc_transact(h, TC_T_READ, req, sizeof req, buf, len, &n);
    if (r == 0 && n != len)
        r = -TC_EBADRESP;
    return r;
}

static int write_chunk(tc_handle *h, uint32_t addr, const uint8_t *data, size_t len)
{
    uint8_t small[4 + 256], *req = small;
    size_t n = 0;
    int r;

    if (len > sizeof small - 4) {
        req = malloc(4 + len);
        if (!req)
            return -ENOMEM;
    }
    tc_put_le32(req, addr);
    memcpy(req + 4, data, len);
    r = tc_transact(h, TC_T_WRITE, req, 4 + len, NULL, 0, &n);
    if (req != small)
        free(req);
    return r;
}

static int check_range(uint32_t addr, size_t len)
{
    return len <= TC_REG_SPACE_SIZE && addr <= TC_REG_SPACE_SIZE - len ? 0 : -EINVAL;
}

int tc_read(tc_handle *h, uint32_t addr, void *buf, size_t len)
{
    uint8_t *p = buf;
    int r = check_range(addr, len);

    if (r == 0)
        r = tc_enter(h);
    if (r)
        return r;
    while (r == 0 && len) {
        size_t n = len < TC_MAX_DATA ? len : TC_MAX_DATA;
        r = read_chunk(h, addr, p, n);
        addr += (uint32_t)n;
        p += n;
        len -= n;
    }
    tc_leave(h);
    return r;
}

int tc_write(tc_handle *h, uint32_t addr, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    int r = check_range(addr, len);

    if (r == 0)
        r = tc_enter(h);
    if (r)
        return r;
    while (r == 0 && len) {
        size_t n = len < TC_MAX_DATA ? len : TC_MAX_DATA;
        r = write_chunk(h, addr, p, n);
        addr += (uint32_t)n;
        p += n;
        len -= n;
    }
    tc_leave(h);
    return r;
}

/* Event ring --------------------------------------------------------------------------- */

/* With drain_mu held: take the card's TAIL as the next event to hand out unless already in step
   with the ring. AUTO_ACK moves TAIL past events this host has not seen, so it must know where it
   stands before enabling it. */
static int sync_to_tail(tc_handle *h)
{
    uint8_t ctl[8];
    unsigned gen;
    int synced, r;

    pthread_mutex_lock(&h->mu);
    synced = h->ev_synced;
    gen = h->ev_gen;
    pthread_mutex_unlock(&h->mu);
    if (synced)
        return 0;
    r = read_chunk(h, TC_RING_HEAD, ctl, sizeof ctl);
    if (r)
        return r;
    pthread_mutex_lock(&h->mu);
    if (gen == h->ev_gen && !h->ev_synced) {
        h->ev_next = h->ev_acked = tc_le32(ctl + 4);
        h->ev_synced = 1;
    }
    pthread_mutex_unlock(&h->mu);
    return 0;
}

int tc_set_event_post(tc_handle *h, unsigned mode)
{
    uint8_t v[4];
    int r;

    if (mode != 0 && mode != TC_POST_ENABLE && mode != (TC_POST_ENABLE | TC_POST_AUTO_ACK))
        return -EINVAL;
    r = tc_enter(h);
    if (r)
        return r;
    pthread_mutex_lock(&h->drain_mu);
    if (mode & TC_POST_AUTO_ACK)
        r = sync_to_tail(h);
    tc_put_le32(v, mode);
    if (r == 0)
        r = write_chunk(h, TC_REG_EVENT_POST, v, sizeof v);
    if (r == 0) {
        pthread_mutex_lock(&h->mu);
        h->post_on = mode != 0;
        h->post_auto = (mode & TC_POST_AUTO_ACK) != 0;
        /* events written before posting began are only in the ring */
        h->need_ring = 1;
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_unlock(&h->drain_mu);
    tc_leave(h);
    return r;
}

/* With mu held: hand out queued posted events when they follow the last one handed out. */
static size_t take_posted(tc_handle *h, tc_event *out, size_t max)
{
    size_t n = 0;

    if (!h->ev_synced || h->q_first != h->ev_next)
        return 0;
    while (n < max && h->q_count) {
        out[n++] = h->postq[h->q_first % TC_POSTQ_CAP];
        h->q_first++;
        h->q_count--;
    }
    h->ev_next += (uint32_t)n;
    return n;
}

/* With mu held: out[0..take) were read from the ring at start and are handed out now. A
   posted copy that already arrived lends them its snapshot; older posted events go. */
static void commit_ring(tc_handle *h, tc_event *out, uint32_t start, uint32_t take)
{
    uint32_t skip;

    for (uint32_t i = 0; i < take && h->q_count; i++) {
        const tc_event *q;
        uint32_t idx = start + i;
        if (tc_idx_before(idx, h->q_first) || !tc_idx_before(idx, h->q_first + h->q_count))
            continue;
        q = &h->postq[idx % TC_POSTQ_CAP];
        if (q->span == out[i].span && q->channel == out[i].channel && q->code == out[i].code &&
            q->arg == out[i].arg && q->seq == out[i].seq && q->snap_len) {
            out[i].snap_len = q->snap_len;
            memcpy(out[i].snap, q->snap, q->snap_len);
        }
    }
    h->ev_next = start + take;
    h->ev_acked = h->ev_next;
    h->ev_synced = 1;
    if (h->q_count && tc_idx_before(h->q_first, h->ev_next)) {
        skip = h->ev_next - h->q_first;
        h->q_count = skip < h->q_count ? h->q_count - skip : 0;
        h->q_first = h->ev_next;
    }
}

/* The datasheet 2.3 procedure, from the first event not yet handed out. Entries HEAD-1024 ..
   HEAD-1 are readable whether TAIL has passed them or not: posted events handed out but not yet
   acknowledged lie between TAIL and ev_next, and AUTO_ACK moves TAIL past events this host may
   have missed. Older ones are lost, which is reported as an overflow. */
static int read_ring(tc_handle *h, tc_event *out, size_t max, uint32_t *flags)
{
    uint8_t ctl[12], ents[TC_RING_ENTRIES * TC_EVENT_SIZE], wr[8];
    uint32_t head, tail, start, avail, take, idx, first, next, end;
    unsigned gen;
    int synced, auto_ack, ovf, lost = 0, ack;
    int r = read_chunk(h, TC_RING_HEAD, ctl, sizeof ctl);

    if (r)
        return r;
    head = tc_le32(ctl);
    tail = tc_le32(ctl + 4);
    /* RING_OVERFLOW is the controller's to clear: an observer learns of its own losses from
       the gaps in the indices (datasheet 4.6) */
    ovf = !h->opt.observe && (ctl[8] & 1);
    if (head - tail > TC_RING_ENTRIES)
        return -TC_EBADRING;
    pthread_mutex_lock(&h->mu);
    gen = h->ev_gen;
    synced = h->ev_synced;
    next = h->ev_next;
    auto_ack = h->post_auto;
    pthread_mutex_unlock(&h->mu);
    if (!synced) {
        start = tail;
    } else if (head - next <= TC_RING_ENTRIES) {
        start = next;
    } else {
        lost = 1;
        start = auto_ack ? head : tail;
    }
    avail = head - start;
    take = avail < max ? avail : (uint32_t)max;
    idx = start % TC_RING_ENTRIES;
    first = take < TC_RING_ENTRIES - idx ? take : TC_RING_ENTRIES - idx;
    if (first)
        r = read_chunk(h, TC_RING_ENTRIES_BASE + idx * TC_EVENT_SIZE, ents,
                       (size_t)first * TC_EVENT_SIZE);
    if (r == 0 && take > first)
        r = read_chunk(h, TC_RING_ENTRIES_BASE, ents + (size_t)first * TC_EVENT_SIZE,
                       (size_t)(take - first) * TC_EVENT_SIZE);
    /* Entries TAIL has passed may have been overwritten while they were read: HEAD again. */
    if (r == 0 && take && (auto_ack || tc_idx_before(start, tail))) {
        uint8_t now[4];
        r = read_chunk(h, TC_RING_HEAD, now, sizeof now);
        if (r == 0 && tc_le32(now) - start > TC_RING_ENTRIES) {
            lost = 1;
            start = tc_le32(now);
            avail = take = 0;
        }
    }
    if (r)
        return r;
    for (uint32_t i = 0; i < take; i++) {
        const uint8_t *e = ents + (size_t)i * TC_EVENT_SIZE;
        out[i].span = e[0];
        out[i].channel = e[1];
        out[i].code = e[2];
        out[i].arg = e[3];
        out[i].seq = tc_le32(e + 4);
        out[i].snap_len = 0;
    }
    *flags = (take < avail ? TC_DRAIN_MORE : 0) | (ovf || lost ? TC_DRAIN_OVERFLOW : 0);
    /* Without AUTO_ACK, TAIL and, after an overflow, the W1C overflow bit in one write; never
       backwards (AUTO_ACK, since turned off, may have left TAIL ahead). */
    end = start + take;
    ack = !auto_ack && end != tail && end - tail <= head - tail;
    if (ack) {
        tc_put_le32(wr, end);
        tc_put_le32(wr + 4, (uint32_t)ovf);
        r = write_chunk(h, TC_RING_TAIL, wr, ovf ? 8 : 4);
    } else if (ovf) {
        tc_put_le32(wr, 1);
        r = write_chunk(h, TC_RING_OVERFLOW, wr, 4);
    }
    if (r == 0 && ovf) {
        tc_put_le32(wr, TC_INT_OVERFLOW);
        r = write_chunk(h, TC_REG_INT_STATUS, wr, 4);
    }
    if (r)
        return r;
    pthread_mutex_lock(&h->mu);
    if (gen == h->ev_gen)
        commit_ring(h, out, start, take);
    pthread_mutex_unlock(&h->mu);
    return (int)take;
}

/* With mu held: every event the card has written is handed out or queued in order. */
static int posted_complete(const tc_handle *h)
{
    return h->post_on && h->ev_synced && !h->need_ring && h->q_count == 0;
}

static int drain(tc_handle *h, tc_event *out, size_t max, uint32_t *flags)
{
    uint32_t ack;
    size_t n;
    int r, ready, do_ack;

    pthread_mutex_lock(&h->mu);
    ready = h->ev_synced && h->q_count && h->q_first == h->ev_next;
    ack = h->ev_next;
    /* Acknowledge what earlier calls handed out once nothing is waiting to be handed out
       (off the latency path), or before the unacknowledged half-fill the ring; a ring
       read acknowledges by itself, and with AUTO_ACK the card does. */
    do_ack = !h->post_auto && (ready || posted_complete(h)) && h->ev_acked != ack &&
             (!ready || ack - h->ev_acked >= TC_RING_ENTRIES / 2);
    pthread_mutex_unlock(&h->mu);
    if (do_ack) {
        uint8_t wr[4];
        tc_put_le32(wr, ack);
        r = write_chunk(h, TC_RING_TAIL, wr, sizeof wr);
        if (r && r != -TC_ES_BAD_VALUE)
            return r;
        pthread_mutex_lock(&h->mu);
        /* refused: TAIL is already past ack (AUTO_ACK, since turned off, moved it) or the card
           is not where this host thinks; a ring read from ev_next finds out which */
        if (r)
            h->need_ring = 1;
        h->ev_acked = ack;
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_lock(&h->mu);
    n = take_posted(h, out, max);
    if (n || posted_complete(h)) {
        *flags = h->q_count && h->q_first == h->ev_next ? TC_DRAIN_MORE : 0;
        /* Everything posted is handed out: an interrupt that announced only these events is
           taken, or the event thread standing by would wake to find them gone. */
        if (posted_complete(h) && !(h->irq_bits & ~(uint32_t)TC_INT_EVENT)) {
            h->irq_seen = h->irq_count;
            h->irq_bits = 0;
        }
        pthread_mutex_unlock(&h->mu);
        return (int)n;
    }
    h->need_ring = 0;
    pthread_mutex_unlock(&h->mu);
    return read_ring(h, out, max, flags);
}

int tc_drain_events(tc_handle *h, tc_event *out, size_t max, uint32_t *flags_out)
{
    uint32_t flags = 0;
    int r;

    if (!out && max)
        return -EINVAL;
    r = tc_enter(h);
    if (r)
        return r;
    pthread_mutex_lock(&h->drain_mu);
    r = drain(h, out, max, &flags);
    pthread_mutex_unlock(&h->drain_mu);
    tc_leave(h);
    if (flags_out)
        *flags_out = flags;
    return r;
}

/* Mailboxes ---------------------------------------------------------------------------- */

static int mb_error(uint8_t status)
{
    switch (status) {
    case TC_MB_DONE:
        return 0;
    case TC_MB_ERR_STATE:
        return -TC_EMB_STATE;
    case TC_MB_ERR_ARGUMENT:
        return -TC_EMB_ARGUMENT;
    case TC_MB_ERR_NO_LINK:
        return -TC_EMB_NO_LINK;
    case TC_MB_ERR_UNKNOWN:
        return -TC_EMB_UNKNOWN;
    case TC_MB_ERR_BUSY:
        return -TC_EMB_BUSY;
    default:
        return -TC_EMB_OTHER;
    }
}

int tc_command(tc_handle *h, unsigned span, unsigned ts, const tc_command_args *a,
               tc_command_result *out)
{
    uint8_t req[2 + TC_MBOX_COMMAND_MAX], resp[6];
    uint8_t *mb = req + 2;
    size_t len = TC_MBOX_CMD + 1, n = 0;
    unsigned number;
    int r;

    if (out)
        memset(out, 0, sizeof *out);
    /* CMD 0 is no command: the card refuses it (BAD_VALUE) */
    if (span >= TC_MAX_SPANS || ts >= TC_SLOTS_PER_SPAN || !a ||
        a->cmd == TC_CMD_NONE || a->called_len > TC_NUMBER_MAX ||
        a->calling_len > TC_NUMBER_MAX || a->cause_len > TC_CAUSE_MAX ||
        (a->called_plan | a->calling_plan) & 0x80 ||
        a->calling_pres & ~(TC_PRES_MASK | TC_SCREEN_MASK) || a->bearer > TC_BEARER_DIGITAL)
        return -EINVAL;
    r = tc_enter(h);
    if (r)
        return r;
    /* one COMMAND request: the mailbox bytes in, the command's STATUS out (datasheet 4.3).
       Numbered in turn, a command repeated on one channel differs from its earlier copies, so
       pick_tag need not end a tag's memory of them with an extra READ (datasheet 4.5). */
    number = atomic_fetch_add_explicit(&h->command_number, 1, memory_order_relaxed) %
             TC_COMMAND_NUMBERS;
    tc_put_le16(req, (uint16_t)((span * TC_SLOTS_PER_SPAN + ts) |
                                number << TC_COMMAND_NUMBER_SHIFT));
    memset(mb, 0, TC_MBOX_COMMAND_MAX);
    mb[TC_MBOX_CMD] = a->cmd;
    mb[TC_MBOX_CAUSE_LEN] = a->cause_len;
    memcpy(mb + TC_MBOX_CAUSE, a->cause, a->cause_len);
    mb[TC_MBOX_CALLED_LEN] = a->called_len;
    mb[TC_MBOX_CALLING_LEN] = a->calling_len;
    mb[TC_MBOX_CALLED_PLAN] = a->called_plan;
    mb[TC_MBOX_CALLING_PLAN] = a->calling_plan;
    mb[TC_MBOX_CALLING_PRES] = a->calling_pres;
    mb[TC_MBOX_BEARER] = a->bearer;
    memcpy(mb + TC_MBOX_CALLED, a->called, a->called_len);
    memcpy(mb + TC_MBOX_CALLING, a->calling, a->calling_len);
    /* commands without parameters need only CMD; the others get every field, so nothing
       is left over from an earlier command */
    if (a->cause_len || a->called_len || a->calling_len || a->cmd == TC_CMD_MAKE_CALL ||
        a->cmd == TC_CMD_RELEASE || a->cmd == TC_CMD_MAKE_CALL_OVERLAP ||
        a->cmd == TC_CMD_SEND_DIGITS || a->cmd == TC_CMD_SEND_DIGITS_COMPLETE)
        len = TC_MBOX_COMMAND_MAX;
    r = tc_transact(h, TC_T_COMMAND, req, 2 + len, resp, sizeof resp, &n);
    if (r == 0 && n != sizeof resp)
        r = -TC_EBADRESP;
    else if (r == 0 && (resp[0] == TC_MB_IDLE || resp[0] == TC_MB_PENDING))
        r = -TC_EMB_UNFINISHED;
    if (r == 0) {
        if (out) {
            out->status = resp[0];
            out->seq = tc_le32(resp + 1);
            out->state = resp[5];
        }
        r = mb_error(resp[0]);
    }
    tc_leave(h);
    return r;
}
