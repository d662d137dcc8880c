/*
 * telecard host driver: the public C API.
 *
 * One tc_handle per card. Every function may be called from several threads at once on
 * the same handle (an event thread waiting for interrupts while callers read, write and
 * issue commands); tc_close() wakes every waiter and must not race with tc_free().
 * Errors are negative codes: -errno values or the TC_E* codes below; tc_strerror()
 * describes every one of them.
 */
#ifndef TELECARD_H
#define TELECARD_H

#include <stddef.h>
#include <stdint.h>

#include "telecard_regs.h"

/* Codes beyond the errno range; functions return them negated. */
#define TC_ERR_BASE 4096
#define TC_EBADMAGIC 4096        /* the card's MAGIC is wrong */
#define TC_EVERSION 4097         /* the card speaks another major protocol version */
#define TC_EBADRESP 4098         /* a response frame does not match its request */
#define TC_ENOTREADY 4099        /* the card rebooted and wants a new HELLO */
#define TC_EBADIDENT 4100        /* the identity registers hold impossible values */
#define TC_ES_BAD_ADDRESS 4101   /* card status BAD_ADDRESS */
#define TC_ES_READ_ONLY 4102     /* card status READ_ONLY */
#define TC_ES_BAD_LENGTH 4103    /* card status BAD_LENGTH */
#define TC_ES_BAD_VERSION 4104   /* card status BAD_VERSION */
#define TC_ES_UNKNOWN_TYPE 4105  /* card status UNKNOWN_TYPE */
#define TC_ES_BAD_VALUE 4106     /* card status BAD_VALUE */
#define TC_ES_UNKNOWN 4107       /* a status the datasheet does not define */
#define TC_EBADRING 4108         /* the event ring's HEAD/TAIL are inconsistent */
#define TC_ECAUSE_EMPTY 4110     /* cause IE: no octets */
#define TC_ECAUSE_SHORT 4111     /* cause IE: octet 4 (cause value) missing */
#define TC_ECAUSE_EXT 4112       /* cause IE: an extension bit is wrong */
#define TC_ECAUSE_LONG 4113      /* cause IE: more than TC_CAUSE_MAX octets */
#define TC_EMB_STATE 4120        /* mailbox 0x81: command not valid in the channel state */
#define TC_EMB_ARGUMENT 4121     /* mailbox 0x82: bad number, cause or length */
#define TC_EMB_NO_LINK 4122      /* mailbox 0x83: D-channel down */
#define TC_EMB_UNKNOWN 4123      /* mailbox 0x84: unknown command */
#define TC_EMB_BUSY 4124         /* mailbox 0x85: a command is already pending */
#define TC_EMB_OTHER 4125        /* mailbox: an undefined error status */
#define TC_ENOTCHR 4126          /* not a character device: refused before a byte was written */
#define TC_ENOCARD 4127          /* nothing answered the handshake (end of file or silence) */
#define TC_EMB_UNFINISHED 4128   /* a COMMAND answered idle or pending, which it never may */
#define TC_ENOTTY 4129           /* a character device that is not a terminal: not a card's link */
#define TC_ES_OBSERVER 4130      /* card status OBSERVER: a monitor port may not change the card */
#define TC_ES_WRONG_PORT 4131    /* card status WRONG_PORT (outside a HELLO) */
#define TC_ECONTROLPORT 4132     /* an observer open reached the card's control port */
#define TC_EMONITORPORT 4133     /* a controller open reached one of the card's monitor ports */
#define TC_ERR_LAST 4133

#define TC_DEFAULT_TIMEOUT_MS 250
#define TC_DEFAULT_RETRIES 3
/* Posted events a handle queues for tc_drain_events() (sizeof(tc_event) bytes each); more are
   counted in tc_stats.events_dropped and read from the ring or reported as an overflow. */
#define TC_EVENT_QUEUE_CAP 8192
/* Requests a handle keeps in flight to the card at once, however many threads call it; the
   others wait in the handle for a tag. */
#define TC_MAX_OUTSTANDING 127

/* Bits of *flags_out from tc_drain_events(). */
#define TC_DRAIN_OVERFLOW 0x1 /* the card dropped events: re-read every channel */
#define TC_DRAIN_MORE 0x2     /* max was reached; more events are waiting */

typedef struct tc_handle tc_handle;

typedef struct {
    int timeout_ms; /* per attempt */
    int retries;    /* resends of the identical frame after the first attempt */
    /* Open an observer session on a monitor port (datasheet 4.6): READs only, every event
       posted from the HELLO on, nothing ever written; the card refuses the rest (OBSERVER). */
    int observe;
} tc_options;

typedef struct {
    uint32_t magic;
    uint16_t hw_version;
    uint16_t fw_version;
    uint16_t proto_version;
    uint8_t num_spans;
    uint32_t boot_id;
} tc_info;

typedef struct {
    uint8_t span;
    uint8_t channel;
    uint8_t code;
    uint8_t arg;
    uint32_t seq;
    /* A posted INCOMING or CLEARED event carries its channel block (registers 0x00-0x6F)
       as it was when the card wrote the event; 0 bytes otherwise. */
    uint8_t snap_len;
    uint8_t snap[TC_POST_SNAPSHOT_LEN];
} tc_event;

typedef struct {
    uint8_t coding_standard;
    uint8_t location;
    int16_t recommendation; /* -1 when octet 3a is absent */
    uint8_t value;
    uint8_t diag_len;
    uint8_t diagnostic[TC_CAUSE_MAX];
    uint8_t raw_len;
    uint8_t raw[TC_CAUSE_MAX];
} tc_cause;

typedef struct {
    uint64_t frames_tx;       /* request frames written, retries included */
    uint64_t frames_rx;       /* good frames received */
    uint64_t crc_errors;      /* frames dropped for a bad CRC */
    uint64_t discarded_bytes; /* outside frames, in runts, over-long or aborted frames */
    uint64_t unexpected;      /* good frames nobody waited for (late, unknown tag or type) */
    uint64_t retries;         /* request frames resent */
    uint64_t timeouts;        /* requests given up after every retry */
    uint64_t irqs;            /* IRQ frames received */
    uint64_t event_frames;    /* EVENTS frames received */
    uint64_t event_frames_bad; /* EVENTS frames dropped as malformed */
    uint64_t events_dropped;  /* posted events not queued: the host's queue was full */
    uint64_t event_queue_peak; /* most posted events queued at once */
} tc_stats;

/* A mailbox command's parameters (datasheet 2.5). The number and bearer fields are MAKE_CALL's:
   *_plan = type of number << TC_TON_SHIFT | numbering plan, calling_pres = presentation <<
   TC_PRES_SHIFT | screening, bearer a TC_BEARER_ code; all 0 is the SETUP of older hosts. */
typedef struct {
    uint8_t cmd;
    uint8_t called_len;
    uint8_t calling_len;
    uint8_t cause_len;
    uint8_t called_plan;
    uint8_t calling_plan;
    uint8_t calling_pres;
    uint8_t bearer;
    char called[TC_NUMBER_MAX];
    char calling[TC_NUMBER_MAX];
    uint8_t cause[TC_CAUSE_MAX];
} tc_command_args;

/* What the card answered to a command (datasheet 4.3): its mailbox STATUS, and the channel's
   SEQ and STATE right after it acted. */
typedef struct {
    uint8_t status;
    uint8_t state;
    uint32_t seq;
} tc_command_result;

/* Error text for every code a tc_ function returns (and for -errno values). */
const char *tc_strerror(int code);

/* Pure helpers (exposed for tests and tools). */
uint16_t tc_crc16(const uint8_t *data, size_t len);
/* Escape body+CRC into out; returns the frame length or -ENOSPC. */
int tc_frame_encode(const uint8_t *body, size_t body_len, uint8_t *out, size_t out_cap);

void tc_options_init(tc_options *opt);

/* 0 when path may be a card's link, judged without opening it (opening alone arms some
   devices, a watchdog say): -TC_ENOTCHR for anything but a character device, -TC_ENOTTY for
   one the kernel files under another class than tty, -errno when it cannot be looked at. */
int tc_check_device(const char *path);
/* Open path (a tty is put in raw mode), lock it exclusively and run the HELLO handshake;
   tc_check_device first. With opt->observe, path is one of the card's monitor ports and the
   handle an observer (datasheet 4.6): -TC_ECONTROLPORT if it is the control port; writes and
   commands get -TC_ES_OBSERVER. Without it, a monitor port gives -TC_EMONITORPORT. */
int tc_open(const char *path, const tc_options *opt, tc_handle **out);
/* The same on an already open fd, which the handle owns from then on (closed on error). */
int tc_open_fd(int fd, const tc_options *opt, tc_handle **out);
/* Wake every waiter (they return -EBADF), wait until they are gone and close the fd.
   The handle stays valid for tc_ calls, which return -EBADF, until tc_free(). */
void tc_close(tc_handle *h);
/* Close if needed and release the memory; no other call may be in progress or follow. */
void tc_free(tc_handle *h);

/* HELLO again (after TC_ENOTREADY); *info gets the new identity. Returns 1 when BOOT_ID
   changed since the previous handshake, 0 when it did not. */
int tc_handshake(tc_handle *h, tc_info *info);
void tc_get_info(tc_handle *h, tc_info *info);
void tc_get_stats(tc_handle *h, tc_stats *stats);

/* Register ranges of any length; long ones are split into MAX_DATA transactions. */
int tc_read(tc_handle *h, uint32_t addr, void *buf, size_t len);
int tc_write(tc_handle *h, uint32_t addr, const void *buf, size_t len);

/* 1 when IRQ or EVENTS frames arrived since the previous call (*status: INT_STATUS &
   INT_MASK bits they carried, or-ed; EVENTS frames count as TC_INT_EVENT), 0 on timeout.
   timeout_ms < 0 waits forever. After a timeout the next tc_drain_events() reads the ring.
   Of several threads waiting at once, the one that began waiting last is woken and takes the
   news; the others go on waiting (a thread waiting for its own call's events is woken
   instead of an event thread that waits all the time). */
int tc_wait_irq(tc_handle *h, int timeout_ms, uint32_t *status);

/* tc_wait_irq(), and also 1 at once while posted events wait to be drained, even when another
   thread took their interrupt: for threads that take turns draining, so none sleeps on events
   the one that took the interrupt left to it. With standby set, the caller takes only an
   interrupt, and only while no thread waits in tc_wait_irq() or tc_wait_events() without
   it: an event thread standing by for the callers that drain for themselves. While other
   threads are inside the driver it leaves news to them for a couple of milliseconds
   (TC_STANDBY_DEFER_MS), so a caller that drains its own call's events right after the
   response that brought them does not wake it. */
int tc_wait_events(tc_handle *h, int timeout_ms, int standby, uint32_t *status);

/* Set EVENT_POST (datasheet 3.1) to mode: 0 (off), TC_POST_ENABLE (posted events acknowledged
   by later tc_drain_events() calls) or TC_POST_ENABLE | TC_POST_AUTO_ACK (the card acknowledges
   as it sends them; the host's queue holds the backlog, so a slow drainer costs no event).
   Other modes: -EINVAL. A card reset clears it: set it again after tc_handshake() reports a
   new BOOT_ID. */
int tc_set_event_post(tc_handle *h, unsigned mode);

/* Up to max events, each once and in ring order; returns the count. Posted events (their
   frames received by tc_wait_irq() or any transaction) are returned without a register
   access and, without AUTO_ACK, acknowledged (RING_TAIL) by a later call. A call that hands
   out the last posted event also takes an interrupt that announced only events. Without posting, or
   when posted events may be missing, the ring is read per datasheet 2.3; missing events the
   ring no longer holds are reported as TC_DRAIN_OVERFLOW. */
int tc_drain_events(tc_handle *h, tc_event *out, size_t max, uint32_t *flags_out);

/* Pure cause IE decoder: 0 or -TC_ECAUSE_*. */
int tc_cause_decode(const uint8_t *buf, size_t len, tc_cause *out);
/* Decode count IEs packed back to back in buf (lengths in lens); results[i] gets each
   decoder result. Returns how many decoded, or -EINVAL when lens overrun buf_len. */
long tc_cause_decode_bulk(const uint8_t *buf, size_t buf_len, const uint8_t *lens,
                          size_t count, tc_cause *out, int32_t *results);
/* Read a channel's cause registers: 1 and *out filled when a cause is recorded, 0 when
   none, or a negative code (a malformed IE gives -TC_ECAUSE_* with out->raw filled). */
int tc_channel_cause(tc_handle *h, unsigned span, unsigned ts, tc_cause *out,
                     uint8_t *source);

/* Run a mailbox command in one COMMAND request (datasheet 4.3), which the card answers with
   the command's result: 0 when STATUS is DONE, -TC_EMB_* for an error status. *out (may be
   NULL) gets the card's answer (all 0 when there was none). The request is bounded by the
   handle's timeout and retries. */
int tc_command(tc_handle *h, unsigned span, unsigned ts, const tc_command_args *args,
               tc_command_result *out);

/* Mailbox commands run on the driver's own threads, for a host that must not block on the
   link (an event loop): tc_pool_submit() queues a command and returns at once; a thread of the
   pool runs it as tc_command() does, and tc_pool_reap() hands its result back, tagged with the
   caller's token. Up to `threads` (1 to TC_MAX_OUTSTANDING) threads, started as the work needs
   them; up to TC_POOL_JOBS commands queued, running or unreaped at once. The handle must
   outlive the pool; tc_close() on it ends the commands running (they fail with -EBADF). */
#define TC_POOL_JOBS 1024
typedef struct tc_pool tc_pool;
typedef struct {
    uint64_t token;
    int rc; /* tc_command()'s */
    tc_command_result result;
} tc_pool_done;
int tc_pool_new(tc_handle *h, unsigned threads, tc_pool **out);
/* 0, or -EAGAIN when TC_POOL_JOBS jobs are held or no thread could be started, -EBADF once
   the pool is stopping. */
int tc_pool_submit(tc_pool *p, uint64_t token, unsigned span, unsigned ts,
                   const tc_command_args *args);
/* Up to max results, oldest first, waiting up to timeout_ms (< 0: forever) for the first;
   0 on timeout, -EBADF once the pool is stopping and every command submitted has been
   reaped. One reaping thread at a time. */
long tc_pool_reap(tc_pool *p, tc_pool_done *out, size_t max, int timeout_ms);
/* Refuse new commands and wake the reaper: those queued end with -EBADF unrun, those running
   finish (at once after tc_close()); all are still reaped. */
void tc_pool_stop(tc_pool *p);
/* tc_pool_stop(), wait for the pool's threads to end and release it; no tc_pool_ call may be
   in progress or follow. */
void tc_pool_free(tc_pool *p);

#endif
