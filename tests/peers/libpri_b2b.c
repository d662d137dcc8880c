/*
 * libpri back to back: the reference for benchmarks/bench_signalling.py.
 *
 * usage: libpri_b2b SPANS SECONDS
 * Each span is a socketpair with a libpri CPE on one end and a libpri network on the other.
 * The CPE keeps a call attempt on each of the 30 E1 channels; the network refuses each SETUP
 * with CALL PROCEEDING and DISCONNECT cause 17 (libpri needs the CALL PROCEEDING before it
 * clears a fresh SETUP). Prints the call attempts per second completed over SECONDS, after a
 * 0.5 s warm-up.
 */
#include <libpri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>

#define MAX_SPANS 16

static struct pri *cpe[MAX_SPANS], *net[MAX_SPANS];
static int cpe_fd[MAX_SPANS], net_fd[MAX_SPANS];
static q931_call *calls[MAX_SPANS][32];
static long completed;

static double now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
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

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s SPANS SECONDS\n", argv[0]);
		return 2;
	}
	int spans = atoi(argv[1]);
	double seconds = atof(argv[2]);
	if (spans < 1 || spans > MAX_SPANS)
		return 2;
	int maxfd = 0;
	for (int s = 0; s < spans; s++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
			return 1;
		cpe_fd[s] = sv[0];
		net_fd[s] = sv[1];
		cpe[s] = pri_new(sv[0], PRI_CPE, PRI_SWITCH_EUROISDN_E1);
		net[s] = pri_new(sv[1], PRI_NETWORK, PRI_SWITCH_EUROISDN_E1);
		if (!cpe[s] || !net[s])
			return 1;
		if (sv[1] > maxfd)
			maxfd = sv[1];
	}
	double start = now(), measure_from = start + 0.5, end = measure_from + seconds;
	long at_start = -1;
	for (;;) {
		double t = now();
		if (at_start < 0 && t >= measure_from)
			at_start = completed;
		if (t >= end)
			break;
		fd_set rfds;
		FD_ZERO(&rfds);
		for (int s = 0; s < spans; s++) {
			FD_SET(cpe_fd[s], &rfds);
			FD_SET(net_fd[s], &rfds);
		}
		struct timeval tv = {0, 1000};
		int r = select(maxfd + 1, &rfds, NULL, NULL, &tv);
		t = now();
		for (int s = 0; s < spans; s++) {
			pri_event *e;
			if (r > 0 && FD_ISSET(cpe_fd[s], &rfds) && (e = pri_check_event(cpe[s])))
				cpe_event(s, e);
			if (r > 0 && FD_ISSET(net_fd[s], &rfds) && (e = pri_check_event(net[s])))
				net_event(s, e);
			run_timers(cpe[s], s, 1, t);
			run_timers(net[s], s, 0, t);
		}
	}
	printf("%.1f\n", (completed - at_start) / seconds);
	return 0;
}
