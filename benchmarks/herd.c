/*
 * Thundering-herd benchmark of the C driver's host link (issue 12).
 *
 * N threads share one tc_handle and do register READs through the cdriver sources against a card in
 * another process: by default a tiny fake card forked here on a pty (it answers HELLO, READ,
 * WRITE and COMMAND at once, batching the answers to everything one read() brought in), or any
 * device given with -d (e.g. `python -m firmware_sim --spans 16 --link PATH`). For each N the
 * host process's CPU time (getrusage) and its voluntary + involuntary context switches are
 * divided by the transactions done, and printed beside the first N's figures.
 *
 *   herd [-d DEVICE] [-t TRANSACTIONS] [-p POOL_THREADS] [N ...]  (default N: 1 8 32 128 480)
 *
 * With -p, a last row runs TRANSACTIONS mailbox commands through a tc_pool of that many threads
 * instead, one thread submitting and reaping (as an event loop does), then stops the pool with
 * commands still in flight: every one must be reaped once.
 *
 * Build: gcc -std=c11 -O2 -pthread -Icdriver benchmarks/herd.c cdriver/{frame,link,device,
 *        cause,errors,pool}.c -o herd   (benchmarks/bench_herd.py does it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tc_internal.h"

/* --- the fake card (child process) ---------------------------------------------------- */

static uint8_t card_regs[TC_REG_SPACE_SIZE];
static uint8_t card_out[1 << 20];
static size_t card_out_len;

static void card_send(int fd, const uint8_t *body, size_t len)
{
    int n;

    if (card_out_len + 2 * (len + 2) + 2 > sizeof card_out) {
        if (write(fd, card_out, card_out_len) < 0)
            _exit(0);
        card_out_len = 0;
    }
    n = tc_frame_encode(body, len, card_out + card_out_len, sizeof card_out - card_out_len);
    if (n > 0)
        card_out_len += (size_t)n;
}

static void card_frame(void *ctx, const uint8_t *body, size_t len)
{
    int fd = *(int *)ctx;
    static uint8_t resp[TC_MAX_BODY];
    size_t rlen = 3;

    resp[0] = body[0] | TC_T_RESPONSE;
    resp[1] = body[1];
    resp[2] = TC_S_OK;
    if (body[0] == TC_T_HELLO && len == 4) {
        tc_put_le16(resp + 3, TC_PROTO_VERSION);
        tc_put_le32(resp + 5, TC_MAGIC_VALUE);
        tc_put_le32(resp + 9, 1);
        rlen = 13;
    } else if (body[0] == TC_T_READ && len == 8) {
        uint32_t addr = tc_le32(body + 2);
        uint16_t n = tc_le16(body + 6);
        if (n == 0 || n > TC_MAX_DATA || addr > (uint32_t)TC_REG_SPACE_SIZE - n) {
            resp[2] = TC_S_BAD_ADDRESS;
        } else {
            memcpy(resp + 3, card_regs + addr, n);
            rlen += n;
        }
    } else if (body[0] == TC_T_COMMAND) {
        /* the command's result (datasheet 4.3): STATUS, SEQ and STATE */
        resp[3] = TC_MB_DONE;
        tc_put_le32(resp + 4, 0);
        resp[8] = TC_ST_IDLE;
        rlen = 9;
    } else if (body[0] != TC_T_WRITE) {
        resp[2] = TC_S_UNKNOWN_TYPE;
    }
    card_send(fd, resp, rlen);
}

static void run_card(int fd)
{
    static uint8_t in[65536];
    struct tc_rx rx;
    tc_stats st;

    tc_put_le32(card_regs + TC_REG_MAGIC, TC_MAGIC_VALUE);
    tc_put_le16(card_regs + TC_REG_PROTO_VERSION, TC_PROTO_VERSION);
    card_regs[TC_REG_NUM_SPANS] = 16;
    tc_put_le32(card_regs + TC_REG_BOOT_ID, 1);
    tc_put_le32(card_regs + TC_RING_SIZE, TC_RING_ENTRIES);
    tc_rx_init(&rx);
    memset(&st, 0, sizeof st);
    for (;;) {
        ssize_t n = read(fd, in, sizeof in);
        if (n <= 0)
            _exit(0);
        tc_rx_feed(&rx, in, (size_t)n, &st, card_frame, &fd);
        if (card_out_len && write(fd, card_out, card_out_len) < 0)
            _exit(0);
        card_out_len = 0;
    }
}

static pid_t fork_card(char *path, size_t cap)
{
    struct termios t;
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    pid_t pid;

    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, path, cap) != 0)
        return -1;
    /* raw before the host opens the slave, so nothing is echoed or translated */
    if (tcgetattr(m, &t) < 0)
        return -1;
    cfmakeraw(&t);
    if (tcsetattr(m, TCSANOW, &t) < 0)
        return -1;
    pid = fork();
    if (pid == 0)
        run_card(m);
    close(m);
    return pid;
}

/* --- the herd (this process) ---------------------------------------------------------- */

struct herd {
    tc_handle *h;
    pthread_barrier_t start;
    atomic_long left;
    atomic_long failures;
};

static void *worker(void *arg)
{
    struct herd *hd = arg;
    uint8_t buf[4];

    pthread_barrier_wait(&hd->start);
    while (atomic_fetch_sub(&hd->left, 1) > 0) {
        if (tc_read(hd->h, TC_REG_MAGIC, buf, sizeof buf) != 0 || tc_le32(buf) != TC_MAGIC_VALUE)
            atomic_fetch_add(&hd->failures, 1);
    }
    return NULL;
}

/* -p: tx commands through a pool of `threads`, kept full from this thread; then stopped with
   more in flight. Returns the commands that failed or were not reaped exactly once. */
static long pool_run(tc_handle *h, unsigned threads, long tx)
{
    static tc_pool_done done[TC_POOL_JOBS];
    static unsigned char seen[TC_POOL_JOBS * 8];
    tc_command_args args = {.cmd = TC_CMD_ALERT};
    long submitted = 0, reaped = 0, failures = 0, n;
    uint64_t token;
    tc_pool *p;

    if (tc_pool_new(h, threads, &p) != 0)
        return tx;
    while (reaped < tx) {
        while (submitted < tx &&
               tc_pool_submit(p, (uint64_t)submitted, 0, 1 + (unsigned)(submitted % 15), &args) == 0)
            submitted++;
        n = tc_pool_reap(p, done, TC_POOL_JOBS, 1000);
        if (n <= 0)
            return failures + tx - reaped;
        for (long i = 0; i < n; i++)
            failures += done[i].rc != 0;
        reaped += n;
    }
    /* stopped with commands in flight: each still comes back once, then -EBADF */
    memset(seen, 0, sizeof seen);
    for (token = 0; token < sizeof seen && tc_pool_submit(p, token, 0, 1, &args) == 0; token++)
        ;
    tc_pool_stop(p);
    if (tc_pool_submit(p, token, 0, 1, &args) != -EBADF)
        failures++;
    while ((n = tc_pool_reap(p, done, TC_POOL_JOBS, 5000)) > 0)
        for (long i = 0; i < n; i++)
            failures += done[i].token >= token || seen[done[i].token]++;
    for (uint64_t t = 0; t < token; t++)
        failures += seen[t] != 1;
    failures += n != -EBADF;
    tc_pool_free(p);
    return failures;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const int defaults[] = {1, 8, 32, 128, 480};
    char path[256] = "";
    long tx = 20000;
    int counts[64], ncounts = 0, opt, pool_threads = 0;
    double base_cpu = 0, base_cs = 0;
    pid_t card = 0;
    tc_handle *h;
    int r;

    while ((opt = getopt(argc, argv, "d:t:p:")) != -1) {
        if (opt == 'd')
            snprintf(path, sizeof path, "%s", optarg);
        else if (opt == 't')
            tx = atol(optarg);
        else if (opt == 'p')
            pool_threads = atoi(optarg);
        else
            return 2;
    }
    for (int i = optind; i < argc && ncounts < 64; i++)
        counts[ncounts++] = atoi(argv[i]);
    if (!ncounts)
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
            counts[ncounts++] = defaults[i];
    if (!path[0]) {
        card = fork_card(path, sizeof path);
        if (card < 0) {
            perror("herd: fake card");
            return 1;
        }
    }
    r = tc_open(path, NULL, &h);
    if (r) {
        fprintf(stderr, "herd: open %s: %s\n", path, tc_strerror(r));
        return 1;
    }
    printf("%7s %10s %12s %9s %12s %9s %9s\n", "threads", "tx/s", "cpu us/tx", "x base",
           "ctxsw/tx", "x base", "failures");
    for (int c = 0; c < ncounts; c++) {
        int n = counts[c] > 0 ? counts[c] : 1;
        pthread_t *th = calloc((size_t)n, sizeof *th);
        struct herd hd = {.h = h};
        struct rusage r0, r1;
        double t0, t1, cpu, cs;

        if (!th)
            return 1;
        atomic_init(&hd.left, tx);
        atomic_init(&hd.failures, 0);
        pthread_barrier_init(&hd.start, NULL, (unsigned)n + 1);
        for (int i = 0; i < n; i++)
            if (pthread_create(&th[i], NULL, worker, &hd) != 0) {
                fprintf(stderr, "herd: cannot start %d threads\n", n);
                return 1;
            }
        getrusage(RUSAGE_SELF, &r0);
        t0 = now_s();
        pthread_barrier_wait(&hd.start);
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        t1 = now_s();
        getrusage(RUSAGE_SELF, &r1);
        cpu = (tv_s(r1.ru_utime) + tv_s(r1.ru_stime) - tv_s(r0.ru_utime) - tv_s(r0.ru_stime)) /
              (double)tx * 1e6;
        cs = (double)(r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw) / (double)tx;
        if (c == 0) {
            base_cpu = cpu;
            base_cs = cs;
        }
        printf("%7d %10.0f %12.2f %9.2f %12.2f %9.2f %9ld\n", n, (double)tx / (t1 - t0), cpu,
               cpu / base_cpu, cs, base_cs > 0 ? cs / base_cs : 0.0, atomic_load(&hd.failures));
        fflush(stdout);
        pthread_barrier_destroy(&hd.start);
        free(th);
    }
    if (pool_threads > 0) {
        struct rusage r0, r1;
        double t0, t1;
        long failures;

        getrusage(RUSAGE_SELF, &r0);
        t0 = now_s();
        failures = pool_run(h, (unsigned)pool_threads, tx);
        t1 = now_s();
        getrusage(RUSAGE_SELF, &r1);
        double cpu = (tv_s(r1.ru_utime) + tv_s(r1.ru_stime) - tv_s(r0.ru_utime) -
                      tv_s(r0.ru_stime)) / (double)tx * 1e6;
        double cs = (double)(r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw) / (double)tx;

        printf("pool %2d %10.0f %12.2f %9.2f %12.2f %9.2f %9ld\n", pool_threads,
               (double)tx / (t1 - t0), cpu, base_cpu > 0 ? cpu / base_cpu : 0.0, cs,
               base_cs > 0 ? cs / base_cs : 0.0, failures);
        if (failures)
            return 1;
    }
    tc_free(h);
    if (card > 0) {
        kill(card, SIGTERM);
        waitpid(card, NULL, 0);
    }
    return 0;
}
