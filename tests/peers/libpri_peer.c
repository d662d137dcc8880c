/*
 * libpri as the network side of one EuroISDN E1 span, for telecard's tests.
 *
 * usage: libpri_peer FD   (FD: a connected SOCK_SEQPACKET socket carrying the D-channel)
 * stdin, one command a line:
 *   route NUMBER answer | alert | reject CAUSE    what to do with the card's calls to NUMBER
 *   route NUMBER glare                            offer a call (to 9999) on the same channel,
 *                                                 exclusive, then refuse the card's with 44
 *   call CHANNEL CALLED CALLING                   offer a call to the card
 *   callx CHANNEL CALLED CALLEDPLAN CALLING CALLINGPLAN CALLINGPRES TRANSCAP
 *                                                 the same with libpri's plan (TON << 4 | NPI),
 *                                                 presentation (PI << 5 | SI) and bearer transfer
 *                                                 capability; CALLING "-" for none
 *   overlap                                       overlap dialling on (pri_set_overlapdial):
 *                                                 a SETUP without Sending Complete to a number
 *                                                 with no route is acknowledged (SETUP ACK)
 *                                                 and its digits collected until one has a
 *                                                 route or Sending Complete comes
 *   dial CHANNEL FIRST REST                       offer a call overlap: FIRST in the SETUP
 *                                                 (no Sending Complete; "-" for none), then
 *                                                 after SETUP ACK each digit of REST in an
 *                                                 INFORMATION (pri_information)
 *   hangup CHANNEL CAUSE                          clear the call on CHANNEL
 *   reboot                                        start a fresh libpri on the same D-channel,
 *                                                 forgetting every call (it sends SABME)
 * stdout, one event a line: up, down, ring CH CALLED CALLING, then
 *   ringinfo CH CALLEDPLAN CALLINGPLAN CALLINGPRES TRANSCAP LAYER1, proceeding CH, ringing CH,
 *   answer CH, connect_ack CH, hangup_req CH CAUSE, hangup CH CAUSE, hangup_ack CH,
 *   restart CH (a RESTART for CH was received and acknowledged), ok, error TEXT,
 *   more CH DIGITS (SETUP ACK sent), info CH DIGITS COMPLETE (INFORMATION received),
 *   setup_ack CH
 */
#include <errno.h>
#include <libpri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_ROUTES 64
#define ACT_ANSWER 1
#define ACT_ALERT 2
#define ACT_REJECT 3
#define ACT_GLARE 4

static struct { char number[64]; int action; int cause; } routes[MAX_ROUTES];
static int nroutes;
static int overlapdial;
static q931_call *calls[32];
static char dialled[32][256];	/* overlap receiving: the number so far, per channel */
static char to_send[32][64];	/* overlap sending: the digits still to send, per channel */
static struct pri *pri;

/* A SETUP for `ch`, exclusive, to CALLED from CALLING (may be NULL) with the given plans,
   presentation and transfer capability, with Sending Complete when `complete`; the call or
   NULL. */
static q931_call *offer_with(int ch, const char *called, int calledplan, const char *calling,
			     int callingplan, int callingpres, int transcap, int complete)
{
	q931_call *call = pri_new_call(pri);
	struct pri_sr *sr = pri_sr_new();
	int voice = transcap == PRI_TRANS_CAP_SPEECH || transcap == PRI_TRANS_CAP_3_1K_AUDIO;
	pri_sr_set_channel(sr, ch, 1, 0);
	pri_sr_set_bearer(sr, transcap, voice ? PRI_LAYER_1_ALAW : 0);
	pri_sr_set_called(sr, (char *)called, calledplan, complete);
	if (calling)
		pri_sr_set_caller(sr, (char *)calling, NULL, callingplan, callingpres);
	if (call == NULL || pri_setup(pri, call, sr) != 0) {
		printf("error setup\n");
		call = NULL;
	}
	pri_sr_free(sr);
	return call;
}

static q931_call *offer(int ch, const char *called, const char *calling)
{
	return offer_with(ch, called, PRI_UNKNOWN, calling, PRI_UNKNOWN,
			  PRES_ALLOWED_USER_NUMBER_NOT_SCREENED, PRI_TRANS_CAP_SPEECH, 1);
}

/* The route of `number`, or -1 */
static int route_of(const char *number)
{
	int found = -1;
	for (int i = 0; i < nroutes; i++)
		if (strcmp(routes[i].number, number) == 0)
			found = i;
	return found;
}

/* The called number is complete: act on its route. */
static void route_call(q931_call *call, int ch, const char *number)
{
	int r = route_of(number);
	int action = r < 0 ? ACT_REJECT : routes[r].action;
	int cause = r < 0 ? PRI_CAUSE_UNALLOCATED : routes[r].cause;
	if (action == ACT_GLARE) {
		/* the network's own call takes the channel first, as if the two SETUPs crossed */
		q931_call *ours = offer(ch, "9999", NULL);
		if (ours && ch > 0 && ch < 32)
			calls[ch] = ours;
		pri_hangup(pri, call, PRI_CAUSE_REQUESTED_CHAN_UNAVAIL);
		return;
	}
	calls[ch] = call;
	pri_proceeding(pri, call, ch, 0);
	if (action == ACT_ANSWER) {
		pri_acknowledge(pri, call, ch, 0);
		pri_answer(pri, call, ch, 0);
	} else if (action == ACT_ALERT) {
		pri_acknowledge(pri, call, ch, 0);
	} else {
		pri_hangup(pri, call, cause);
	}
}

static void handle_ring(pri_event *e, int ch)
{
	printf("ring %d %s %s\n", ch, e->ring.callednum[0] ? e->ring.callednum : "-",
	       e->ring.callingnum[0] ? e->ring.callingnum : "-");
	printf("ringinfo %d %d %d %d %d %d\n", ch, e->ring.calledplan, e->ring.callingplan,
	       e->ring.callingpres, e->ring.ctype, e->ring.layer1);
	if (overlapdial && !e->ring.complete && route_of(e->ring.callednum) < 0 && ch > 0 &&
	    ch < 32) {
		snprintf(dialled[ch], sizeof dialled[ch], "%s", e->ring.callednum);
		calls[ch] = e->ring.call;
		pri_need_more_info(pri, e->ring.call, ch, 0);
		printf("more %d %s\n", ch, dialled[ch][0] ? dialled[ch] : "-");
		return;
	}
	route_call(e->ring.call, ch, e->ring.callednum);
}

static void handle_info(pri_event *e, int ch)
{
	if (ch <= 0 || ch >= 32)
		return;
	size_t used = strlen(dialled[ch]);
	snprintf(dialled[ch] + used, sizeof dialled[ch] - used, "%s", e->ring.callednum);
	printf("info %d %s %d\n", ch, dialled[ch], e->ring.complete);
	if (e->ring.complete || route_of(dialled[ch]) >= 0)
		route_call(e->ring.call, ch, dialled[ch]);
}

static void handle_setup_ack(pri_event *e, int ch)
{
	printf("setup_ack %d\n", ch);
	if (ch <= 0 || ch >= 32)
		return;
	for (const char *d = to_send[ch]; *d; d++)
		pri_information(pri, e->setup_ack.call, *d);
	to_send[ch][0] = 0;
}

static void handle_event(pri_event *e)
{
	int ch;
	switch (e->e) {
	case PRI_EVENT_DCHAN_UP: printf("up\n"); break;
	case PRI_EVENT_DCHAN_DOWN: printf("down\n"); break;
	case PRI_EVENT_RING: handle_ring(e, e->ring.channel & 0xFF); break;
	case PRI_EVENT_INFO_RECEIVED: handle_info(e, e->ring.channel & 0xFF); break;
	case PRI_EVENT_SETUP_ACK: handle_setup_ack(e, e->setup_ack.channel & 0xFF); break;
	case PRI_EVENT_PROCEEDING: printf("proceeding %d\n", e->proceeding.channel & 0xFF); break;
	case PRI_EVENT_RINGING: printf("ringing %d\n", e->ringing.channel & 0xFF); break;
	case PRI_EVENT_ANSWER: printf("answer %d\n", e->answer.channel & 0xFF); break;
	case PRI_EVENT_CONNECT_ACK: printf("connect_ack %d\n", e->connect_ack.channel & 0xFF); break;
	case PRI_EVENT_HANGUP_REQ:
		ch = e->hangup.channel & 0xFF;
		printf("hangup_req %d %d\n", ch, e->hangup.cause);
		pri_hangup(pri, e->hangup.call, e->hangup.cause);
		break;
	case PRI_EVENT_HANGUP:
		ch = e->hangup.channel & 0xFF;
		printf("hangup %d %d\n", ch, e->hangup.cause);
		pri_hangup(pri, e->hangup.call, e->hangup.cause);
		if (ch < 32)
			calls[ch] = NULL;
		break;
	case PRI_EVENT_RESTART: printf("restart %d\n", e->restart.channel & 0xFF); break;
	case PRI_EVENT_HANGUP_ACK:
		ch = e->hangup.channel & 0xFF;
		printf("hangup_ack %d\n", ch);
		if (ch < 32)
			calls[ch] = NULL;
		break;
	default: break;
	}
}

static void command(char *line)
{
	char a[64] = "", b[64] = "", c[64] = "", d[64] = "", e[64] = "", f[64] = "", g[64] = "",
	     h[64] = "";
	int n = sscanf(line, "%63s %63s %63s %63s %63s %63s %63s %63s", a, b, c, d, e, f, g, h);
	if (n == 8 && strcmp(a, "callx") == 0) {
		int ch = atoi(b);
		q931_call *call = offer_with(ch, c, (int)strtol(d, NULL, 0),
					     strcmp(e, "-") == 0 ? NULL : e, (int)strtol(f, NULL, 0),
					     (int)strtol(g, NULL, 0), (int)strtol(h, NULL, 0), 1);
		if (call && ch > 0 && ch < 32)
			calls[ch] = call;
	} else if (n >= 3 && strcmp(a, "route") == 0 && nroutes < MAX_ROUTES) {
		snprintf(routes[nroutes].number, sizeof routes[nroutes].number, "%s", b);
		routes[nroutes].action = strcmp(c, "answer") == 0 ? ACT_ANSWER
			: strcmp(c, "alert") == 0 ? ACT_ALERT
			: strcmp(c, "glare") == 0 ? ACT_GLARE : ACT_REJECT;
		routes[nroutes].cause = n == 4 ? atoi(d) : PRI_CAUSE_UNALLOCATED;
		nroutes++;
		printf("ok\n");
	} else if ((n == 3 || n == 4) && strcmp(a, "call") == 0) {
		int ch = atoi(b);
		q931_call *call = offer(ch, c, n == 4 ? d : NULL);
		if (call && ch > 0 && ch < 32)
			calls[ch] = call;
	} else if (n == 1 && strcmp(a, "overlap") == 0) {
		overlapdial = 1;
		pri_set_overlapdial(pri, 1);
		printf("ok\n");
	} else if (n == 4 && strcmp(a, "dial") == 0) {
		int ch = atoi(b);
		if (ch <= 0 || ch >= 32) {
			printf("error channel\n");
			return;
		}
		snprintf(to_send[ch], sizeof to_send[ch], "%s", d);
		q931_call *call = offer_with(ch, strcmp(c, "-") == 0 ? "" : c, PRI_UNKNOWN, NULL,
					     PRI_UNKNOWN, PRES_ALLOWED_USER_NUMBER_NOT_SCREENED,
					     PRI_TRANS_CAP_SPEECH, 0);
		if (call)
			calls[ch] = call;
	} else if (n == 3 && strcmp(a, "hangup") == 0) {
		int ch = atoi(b);
		if (ch > 0 && ch < 32 && calls[ch] != NULL)
			pri_hangup(pri, calls[ch], atoi(c));
		else
			printf("error no call on %d\n", ch);
	} else if (n == 1 && strcmp(a, "reboot") == 0) {
		/* the old instance is abandoned, never freed: a rebooted switch keeps nothing */
		struct pri *fresh = pri_new(pri_fd(pri), PRI_NETWORK, PRI_SWITCH_EUROISDN_E1);
		if (fresh == NULL) {
			printf("error reboot\n");
			return;
		}
		pri = fresh;
		memset(calls, 0, sizeof calls);
		printf("ok\n");
	} else {
		printf("error bad command\n");
	}
}

int main(int argc, char **argv)
{
	char buf[4096];
	size_t used = 0;
	if (argc != 2) {
		fprintf(stderr, "usage: %s FD\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	pri = pri_new(atoi(argv[1]), PRI_NETWORK, PRI_SWITCH_EUROISDN_E1);
	if (pri == NULL) {
		fprintf(stderr, "pri_new failed\n");
		return 1;
	}
	for (;;) {
		int fd = atoi(argv[1]);
		fd_set rfds;
		struct timeval *next = pri_schedule_next(pri), now, tv = {1, 0};
		FD_ZERO(&rfds);
		FD_SET(fd, &rfds);
		FD_SET(0, &rfds);
		if (next) {
			gettimeofday(&now, NULL);
			long us = (next->tv_sec - now.tv_sec) * 1000000L + (next->tv_usec - now.tv_usec);
			if (us < 0)
				us = 0;
			tv.tv_sec = us / 1000000L;
			tv.tv_usec = us % 1000000L;
		}
		int r = select(fd + 1, &rfds, NULL, NULL, &tv);
		if (r < 0 && errno != EINTR)
			return 1;
		pri_event *e = NULL;
		if (r > 0 && FD_ISSET(fd, &rfds))
			e = pri_check_event(pri);
		else if (r == 0)
			e = pri_schedule_run(pri);
		if (e)
			handle_event(e);
		if (r > 0 && FD_ISSET(0, &rfds)) {
			ssize_t got = read(0, buf + used, sizeof buf - 1 - used);
			if (got <= 0)
				return 0;
			used += (size_t)got;
			buf[used] = 0;
			char *start = buf, *nl;
			while ((nl = strchr(start, '\n')) != NULL) {
				*nl = 0;
				command(start);
				start = nl + 1;
			}
			used = strlen(start);
			memmove(buf, start, used);
		}
	}
}
