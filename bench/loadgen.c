/* SPDX-License-Identifier: MIT */
/*
 * loadgen: churns loopback TCP connections (connect, accept, close) as fast
 * as the machine allows, and reports its rate and how many TCP state changes
 * it caused on its own listening port, so a tracer's completeness can be
 * checked against an exact number.  Every thread makes its connections one
 * after the other, to one listener (PORT, any free one by default).
 *
 * Two shapes (-s):
 *
 * fin (default): the client closes first, then the server side closes once
 * it has read the client's FIN.  Every client socket ends in TIME-WAIT, so
 * past the first ~10,000 connections connect() has to search the local
 * ports for one whose time-wait socket it may reuse: on the development VM
 * (2 cores, Linux 6.18) that search (__inet_hash_connect) is about 70% of
 * the shape's CPU time and holds it near 15,000 connections/s, with 1 or 2
 * threads.
 *   client  CLOSED->SYN-SENT->ESTABLISHED->FIN-WAIT-1->FIN-WAIT-2->CLOSED
 *   server  LISTEN->SYN-RECEIVED->ESTABLISHED->CLOSE-WAIT->LAST-ACK->CLOSED
 *
 * busy: connect, accept, close the accepted socket, close the client, and
 * nothing else (no read, no wait), so each thread keeps one core 100% busy
 * and a tracer's CPU time comes out of the load's.  The server side closes
 * first, so the time-wait sockets are the server's and connect() finds a
 * port at once (50,000-100,000 connections/s on the same VM):
 *   client  CLOSED->SYN-SENT->ESTABLISHED->CLOSE-WAIT->LAST-ACK->CLOSED
 *   server  LISTEN->SYN-RECEIVED->ESTABLISHED->FIN-WAIT-1->FIN-WAIT-2->CLOSED
 * With several threads, a thread may accept another thread's connection and
 * its own client's peer is still open when it closes the client: that
 * connection closes client first (the fin shape's chains), or both ends at
 * once (each end ESTABLISHED->FIN-WAIT-1->CLOSING->CLOSED).  Measured with
 * both eventers over 200,000 connections, every close order makes 5
 * transitions per end.
 *
 * Either shape: exactly 10 transitions per connection, plus the listener's
 * own CLOSED->LISTEN and LISTEN->CLOSED.  The TIME-WAIT that follows is not
 * a transition of its own (the kernel reports FIN-WAIT-2->CLOSED or
 * CLOSING->CLOSED when it hands the connection to a time-wait socket).
 *
 * TIME-WAIT and local ports: a new connection needs a (client port, PORT)
 * pair no socket holds.  In busy, the time-wait sockets are mostly the
 * server's (PORT, client port), which a new SYN from that client port
 * replaces, so local ports do not run out (checked with 1,000,000
 * connections, 2 threads); the fin shape relies on the kernel letting
 * loopback connections reuse a client's time-wait port after a second
 * (net.ipv4.tcp_tw_reuse, 2 by default).  A connect() that finds no port
 * fails (EADDRNOTAVAIL): loadgen then stops with exit status 1, as the
 * count would no longer be exact (a failed connect() makes transitions of
 * its own).
 *
 * -N runs it in a network namespace of its own, its loopback brought up:
 * its time-wait sockets go with the namespace when it exits (the kernel
 * purges them), so each run starts from an empty time-wait table, as the
 * first run on a fresh host does, and the next run need not wait a minute
 * for them to expire.  The state changes are the same (loopback in any
 * namespace takes the same path, and a tracer sees every namespace); it then
 * also prints tw_overflow=N, how many of its closing sockets skipped
 * TIME-WAIT because the namespace's table was full.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_PER_CONNECTION 10
#define LISTENER_EVENTS 2

struct job {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	int family;
	int listener;
	bool busy;
	bool no_peer; /* accept() asks for no peer address (-a) */
	long per_thread; /* connections per thread, or 0 with a deadline */
	double deadline; /* CLOCK_MONOTONIC seconds, with per_thread == 0 */
	atomic_long done;
	atomic_int failed;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* -N: a network namespace of its own, with its loopback up (::1 comes with it). */
static void own_netns(void)
{
	struct ifreq ifr;
	int s;

	if (unshare(CLONE_NEWNET) != 0)
		die("unshare(CLONE_NEWNET) (-N needs CAP_SYS_ADMIN)");
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
	    ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		die("lo's flags");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		die("bringing lo up");
	close(s);
}

/*
 * The namespace's TcpExt TCPTimeWaitOverflow, or -1 if it cannot be read
 * (/proc/net/netstat: a line of names, then a line of their values).
 */
static long tw_overflows(void)
{
	char *keys = NULL, *values = NULL;
	size_t kcap = 0, vcap = 0;
	long v = -1;
	FILE *f = fopen("/proc/self/net/netstat", "r");

	if (!f)
		return -1;
	while (getline(&keys, &kcap, f) > 0 && getline(&values, &vcap, f) > 0) {
		if (strncmp(keys, "TcpExt:", 7) != 0)
			continue;
		char *ks, *vs, *k = strtok_r(keys, " \n", &ks), *val = strtok_r(values, " \n", &vs);
		for (; k && val; k = strtok_r(NULL, " \n", &ks), val = strtok_r(NULL, " \n", &vs))
			if (strcmp(k, "TCPTimeWaitOverflow") == 0)
				v = atol(val);
	}
	free(keys);
	free(values);
	fclose(f);
	return v;
}

/*
 * accept(), asking for the peer's address as servers do (nginx, Apache,
 * PostgreSQL, sshd, Go, Python, Rust), or for none with -a (as libuv does).
 */
static int accept_one(struct job *j)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);

	if (j->no_peer)
		return accept4(j->listener, NULL, NULL, SOCK_CLOEXEC);
	return accept4(j->listener, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
}

/* One connection of the fin shape, start to end; 0 or -1 (errno set). */
static int fin_connection(struct job *j)
{
	char buf[16];
	int c, s = -1;

	c = socket(j->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0)
		return -1;
	if (connect(c, (struct sockaddr *)&j->addr, j->addr_len) < 0)
		goto fail;
	s = accept_one(j);
	if (s < 0)
		goto fail;
	close(c); /* client first: FIN-WAIT-1 */
	c = -1;
	/* wait for the FIN of whichever client this is, then close: LAST-ACK */
	while (read(s, buf, sizeof(buf)) > 0)
		;
	close(s);
	return 0;
fail:
	if (c >= 0)
		close(c);
	if (s >= 0)
		close(s);
	return -1;
}

/* One connection of the busy shape: the server side closes first. */
static int busy_connection(struct job *j)
{
	int c, s;

	c = socket(j->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0)
		return -1;
	if (connect(c, (struct sockaddr *)&j->addr, j->addr_len) < 0) {
		close(c);
		return -1;
	}
	s = accept_one(j);
	if (s < 0) {
		close(c);
		return -1;
	}
	close(s);
	close(c);
	return 0;
}

static void *worker(void *arg)
{
	struct job *j = arg;

	for (long i = 0;; i++) {
		if (j->per_thread ? i >= j->per_thread : (i % 64 == 0 && now() >= j->deadline))
			break;
		if ((j->busy ? busy_connection(j) : fin_connection(j)) < 0) {
			int err = errno;

			if (atomic_fetch_add(&j->failed, 1) == 0)
				fprintf(stderr, "loadgen: connection failed: %s%s\n", strerror(err),
					err == EADDRNOTAVAIL ? " (no free local port: too many "
							       "sockets in TIME-WAIT? see "
							       "net.ipv4.tcp_tw_reuse)"
							     : "");
			break;
		}
		atomic_fetch_add_explicit(&j->done, 1, memory_order_relaxed);
	}
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: loadgen [-6] [-a] [-N] [-s fin|busy] [-t THREADS] [-p PORT] "
		   "(-n CONNECTIONS | -d SECONDS)\n"
		   "Churns loopback TCP connections on PORT (default: any free one) and prints\n"
		   "  port=P connections=N seconds=S rate=R events=E\n"
		   "where E is the number of TCP state changes it caused on port P.\n"
		   "  -s fin   the client closes first, the server after reading its FIN\n"
		   "           (default)\n"
		   "  -s busy  connect, accept, close the accepted socket, close the client,\n"
		   "           nothing else: each thread keeps a core 100%% busy\n"
		   "  -6       IPv6 (::1) instead of 127.0.0.1\n"
		   "  -a       accept() without asking for the peer's address (default: asks,\n"
		   "           as most servers do)\n"
		   "  -N       in a network namespace of its own (needs CAP_SYS_ADMIN): its\n"
		   "           time-wait sockets go with it; also prints tw_overflow=N\n"
		   "  -t N     threads, each making connections one after the other (default 1)\n"
		   "  -n N     connections in all, or -d SECONDS: as many as fit\n"
		   "Either shape makes 10 state changes per connection, plus 2 of the listener.\n");
}

int main(int argc, char **argv)
{
	struct job j;
	int threads = 1, port = 0, c;
	bool netns = false;
	long total = 0;
	double seconds = 0;

	memset(&j, 0, sizeof(j));
	j.family = AF_INET;
	while ((c = getopt(argc, argv, "6aNs:t:p:n:d:h")) != -1) {
		switch (c) {
		case '6':
			j.family = AF_INET6;
			break;
		case 'a':
			j.no_peer = true;
			break;
		case 'N':
			netns = true;
			break;
		case 's':
			if (strcmp(optarg, "busy") == 0)
				j.busy = true;
			else if (strcmp(optarg, "fin") != 0) {
				usage(stderr);
				return 2;
			}
			break;
		case 't':
			threads = atoi(optarg);
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'n':
			total = atol(optarg);
			break;
		case 'd':
			seconds = atof(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (threads < 1 || threads > 256 || port < 0 || port > 65535 || (total <= 0) == (seconds <= 0)) {
		usage(stderr);
		return 2;
	}

	if (netns)
		own_netns();
	j.listener = socket(j.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (j.listener < 0)
		die("socket");
	int one = 1;
	setsockopt(j.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (j.family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&j.addr;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons((uint16_t)port);
		j.addr_len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&j.addr;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons((uint16_t)port);
		j.addr_len = sizeof(*a);
	}
	if (bind(j.listener, (struct sockaddr *)&j.addr, j.addr_len) < 0)
		die("bind");
	if (getsockname(j.listener, (struct sockaddr *)&j.addr, &j.addr_len) < 0)
		die("getsockname");
	if (listen(j.listener, 4096) < 0)
		die("listen");
	port = ntohs(j.family == AF_INET ? ((struct sockaddr_in *)&j.addr)->sin_port
					 : ((struct sockaddr_in6 *)&j.addr)->sin6_port);

	pthread_t tids[256];
	j.per_thread = total ? (total + threads - 1) / threads : 0;
	double start = now();
	j.deadline = start + seconds;
	for (int i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, worker, &j) != 0)
			die("pthread_create");
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	double elapsed = now() - start;
	close(j.listener);

	long done = atomic_load(&j.done);
	printf("port=%d connections=%ld seconds=%.3f rate=%.0f events=%ld", port, done, elapsed,
	       (double)done / elapsed, done * EVENTS_PER_CONNECTION + LISTENER_EVENTS);
	if (netns)
		printf(" tw_overflow=%ld", tw_overflows());
	printf("\n");
	return atomic_load(&j.failed) ? 1 : 0;
}
