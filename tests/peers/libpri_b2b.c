/*
 * libpri back to back: the reference for benchmarks/bench_signalling.py.
 *
 * usage: libpri_b2b SPANS SECONDS socket|memory
 * Each span is a libpri CPE and a libpri network cabled together, either by an AF_UNIX
 * SOCK_SEQPACKET socketpair (one frame plus 2 FCS octets a packet, served by select()) or by
 * an in-memory queue per direction (libpri's I/O callbacks, no system calls).
 * The CPE keeps a call attempt on each of the 30 E1 channels; the network refuses each SETUP
 * with CALL PROCEEDING and DISCONNECT cause 17 (libpri needs the CALL PROCEEDING before it
 * clears a fresh SETUP). After a 0.5 s warm-up, over SECONDS, prints one line:
 *   CALLS_PER_SECOND FRAMES_PER_CALL SYSCALLS_PER_CALL
 * (frames counted in both directions; system calls: select, read and write).
 */
#include <errno.h>
#include <libpri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_SPANS 16
#define QUEUE_LEN 256 /* frames in flight one way; LAPD's window is 7 */
#define FRAME_MAX 512

struct queue {
	unsigned head, tail; /* tail - head frames queued */
	int len[QUEUE_LEN];
	unsigned char data[QUEUE_LEN][FRAME_MAX];
};

/* One end of a span: its fd (socket mode) or the queue it reads (memory mode). */
struct end {
	int fd;
	struct queue *in, *out;
};

static struct pri *cpe[MAX_SPANS], *net[MAX_SPANS];
static struct end cpe_end[MAX_SPANS], net_end[MAX_SPANS];
static struct queue queues[MAX_SPANS][2];
static q931_call *calls[MAX_SPANS][32];
static long completed, frames, syscalls, overruns;

static double now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

static int fd_read(struct pri *p, void *buf, int buflen)
{
	struct end *e = pri_get_userdata(p);
	syscalls++;
	return (int)read(e->fd, buf, (size_t)buflen);
}

static int fd_write(struct pri *p, void *buf, int buflen)
{
	struct end *e = pri_get_userdata(p);
	syscalls++;
	frames++;
	return (int)write(e->fd, buf, (size_t)buflen);
}

static int mem_read(struct pri *p, void *buf, int buflen)
{
	struct queue *q = ((struct end *)pri_get_userdata(p))->in;
	if (q->head == q->tail) {
		errno = EAGAIN;
		return -1;
	}
	unsigned slot = q->head % QUEUE_LEN;
	int n = q->len[slot] < buflen ? q->len[slot] : buflen;
	memcpy(buf, q->data[slot], (size_t)n);
	q->head++;
	return n;
}

static int mem_write(struct pri *p, void *buf, int buflen)
{
	struct queue *q = ((struct end *)pri_get_userdata(p))->out;
	frames++;
	if (q->tail - q->head >= QUEUE_LEN || buflen < 0 || buflen > FRAME_MAX) {
		overruns++; /* dropped, as a full line would: LAPD retransmits */
		return buflen;
	}
	unsigned slot = q->tail % QUEUE_LEN;
	memcpy(q->data[slot], buf, (size_t)buflen);
	q->len[slot] = buflen;
	q->tail++;
	return buflen;
}

static void dial(int span, int ch)
{
	q931_call *call = pri_new_call(cpe[span]);
	struct pri_sr *sr = pri_sr_new();
	pri_sr_set_channel(sr, ch, 1, 0);
	pri_sr_set_bearer(sr, PRI_TRANS_CAP_SPEECH, PRI_LAYER_1_ALAW);
	pri_sr_set_called(sr, "200", PRI_UNKNOWN, 1);
	pri_sr_set_caller(sr, "100", NULL, PRI_UNKNOWN, PRES_ALLOWED_USER_NUMBER_NOT_SCREENED);
	calls[span][ch] = call;
	pri_setup(cpe[span], call, sr);
	pri_sr_free(sr);
}

static int channel_of(int span, q931_call *call)
{
	for (int ch = 1; ch < 32; ch++)
		if (calls[span][ch] == call)
			return ch;
	return -1;
}

static void cpe_event(int span, pri_event *e)
{
	int ch;
	switch (e->e) {
	case PRI_EVENT_DCHAN_UP:
		for (ch = 1; ch < 32; ch++)
			if (ch != 16)
				dial(span, ch);
		break;
	case PRI_EVENT_HANGUP_REQ:
		pri_hangup(cpe[span], e->hangup.call, e->hangup.cause);
		break;
	case PRI_EVENT_HANGUP:
	case PRI_EVENT_HANGUP_ACK:
		ch = channel_of(span, e->hangup.call);
		if (e->e == PRI_EVENT_HANGUP)
			pri_hangup(cpe[span], e->hangup.call, e->hangup.cause);
		if (ch > 0) {
			calls[span][ch] = NULL;
			completed++;
			dial(span, ch);
		}
		break;
	default: break;
	}
}

static void net_event(int span, pri_event *e)
{
	switch (e->e) {
	case PRI_EVENT_RING:
		pri_proceeding(net[span], e->ring.call, e->ring.channel, 0);
		pri_hangup(net[span], e->ring.call, PRI_CAUSE_USER_BUSY);
		break;
	case PRI_EVENT_HANGUP:
		pri_hangup(net[span], e->hangup.call, e->hangup.cause);
		break;
	default: break;
	}
}

static void run_timers(struct pri *p, int span, int is_cpe, double t)
{
	struct timeval *next = pri_schedule_next(p);
	if (next && next->tv_sec + next->tv_usec / 1e6 <= t) {
		pri_event *e = pri_schedule_run(p);
		if (e)
			(is_cpe ? cpe_event : net_event)(span, e);
	}
}

/* One pass over every span; returns 0 on a select() failure. */
static int socket_pass(int spans, int maxfd)
{
	fd_set rfds;
	FD_ZERO(&rfds);
	for (int s = 0; s < spans; s++) {
		FD_SET(cpe_end[s].fd, &rfds);
		FD_SET(net_end[s].fd, &rfds);
	}
	struct timeval tv = {0, 1000};
	syscalls++;
	int r = select(maxfd + 1, &rfds, NULL, NULL, &tv);
	if (r < 0 && errno != EINTR)
		return 0;
	double t = now();
	for (int s = 0; s < spans; s++) {
		pri_event *e;
		if (r > 0 && FD_ISSET(cpe_end[s].fd, &rfds) && (e = pri_check_event(cpe[s])))
			cpe_event(s, e);
		if (r > 0 && FD_ISSET(net_end[s].fd, &rfds) && (e = pri_check_event(net[s])))
			net_event(s, e);
		run_timers(cpe[s], s, 1, t);
		run_timers(net[s], s, 0, t);
	}
	return 1;
}

static void memory_pass(int spans)
{
	double t = now();
	for (int s = 0; s < spans; s++) {
		pri_event *e;
		if (cpe_end[s].in->head != cpe_end[s].in->tail && (e = pri_check_event(cpe[s])))
			cpe_event(s, e);
		if (net_end[s].in->head != net_end[s].in->tail && (e = pri_check_event(net[s])))
			net_event(s, e);
		run_timers(cpe[s], s, 1, t);
		run_timers(net[s], s, 0, t);
	}
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[3], "socket") != 0 && strcmp(argv[3], "memory") != 0)) {
		fprintf(stderr, "usage: %s SPANS SECONDS socket|memory\n", argv[0]);
		return 2;
	}
	int spans = atoi(argv[1]);
	double seconds = atof(argv[2]);
	int memory = strcmp(argv[3], "memory") == 0;
	if (spans < 1 || spans > MAX_SPANS || !(seconds > 0))
		return 2;
	pri_io_cb rd = memory ? mem_read : fd_read, wr = memory ? mem_write : fd_write;
	int maxfd = 0;
	for (int s = 0; s < spans; s++) {
		int sv[2] = {-1, -1};
		if (!memory && socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
			return 1;
		cpe_end[s] = (struct end){sv[0], &queues[s][0], &queues[s][1]};
		net_end[s] = (struct end){sv[1], &queues[s][1], &queues[s][0]};
		cpe[s] = pri_new_cb(sv[0], PRI_CPE, PRI_SWITCH_EUROISDN_E1, rd, wr, &cpe_end[s]);
		net[s] = pri_new_cb(sv[1], PRI_NETWORK, PRI_SWITCH_EUROISDN_E1, rd, wr, &net_end[s]);
		if (!cpe[s] || !net[s])
			return 1;
		if (sv[1] > maxfd)
			maxfd = sv[1];
	}
	double start = now(), measure_from = start + 0.5, end = measure_from + seconds;
	long calls0 = -1, frames0 = 0, syscalls0 = 0;
	for (;;) {
		double t = now();
		if (calls0 < 0 && t >= measure_from) {
			calls0 = completed;
			frames0 = frames;
			syscalls0 = syscalls;
		}
		if (t >= end)
			break;
		if (memory)
			memory_pass(spans);
		else if (!socket_pass(spans, maxfd))
			return 1;
	}
	long n = completed - calls0;
	if (n <= 0)
		return 1;
	printf("%.1f %.2f %.2f\n", n / seconds, (double)(frames - frames0) / (double)n,
	       (double)(syscalls - syscalls0) / (double)n);
	if (overruns)
		fprintf(stderr, "libpri_b2b: %ld frames dropped on full queues\n", overruns);
	return 0;
}
