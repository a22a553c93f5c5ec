/* SPDX-License-Identifier: MIT */
/*
 * seal-alone: what sealing's own work costs, without the rest of tcp-audit:
 * seal_chain_make() (the seal of one sink's batch, as --seal makes it) in a
 * loop over capture-shaped IPv4 events, under a key file it makes in a
 * temporary folder.  Three ways the batch can meet the CPU:
 *   warm   the same batch again and again (in the CPU's caches)
 *   cold   64 batches in turn, 64 MiB (out of the caches)
 *   other  each batch written just before by a thread on another CPU, as
 *          the reader thread writes the spool's events for a sink thread
 * Prints each as ns a seal and ns an event (CPU time of the sealing thread),
 * and the fixed cost of a seal (one event a seal).  The pipeline's figure is
 * the summary's "seals N (S s CPU)"; bench/run.py's seal section shows it.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "kernel-helpers.h"
#include "seal.h"

enum { BATCH = 4096, BATCHES = 64, SEALS = 300 };

static struct tcp_audit_event *events; /* BATCHES batches of BATCH */
static atomic_int turn; /* "other": 0 the writer's turn, 1 the sealer's */

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* The round'th batch's events: a loopback connection's, ten events a socket. */
static void fill(struct tcp_audit_event *ev, unsigned round)
{
	for (size_t i = 0; i < BATCH; i++) {
		struct tcp_audit_event e = {0};
		e.time_ns = 1700000000000000000ull + (uint64_t)round * 10000000u + i * 1000u;
		e.ktime_ns = e.time_ns - 1600000000000000000ull;
		e.seq = (uint64_t)round * BATCH + i;
		e.sock_cookie = 12345 + e.seq / 10;
		e.sock_inode = 99000 + e.seq / 10;
		e.valid = 0x7ff;
		e.family = AF_INET;
		e.sport = htons((uint16_t)(40000 + i % 1000));
		e.dport = htons(8080);
		e.old_state = 2;
		e.new_state = 1;
		e.pid_on_cpu = e.owner_pid = 1234;
		memcpy(e.saddr, "\x7f\0\0\x01", 4);
		memcpy(e.daddr, "\x7f\0\0\x01", 4);
		strcpy(e.comm_on_cpu, "loadgen");
		strcpy(e.owner_comm, "loadgen");
		strcpy(e.host, "bench-host");
		ev[i] = e;
	}
}

/* "other": writes SEALS batches, each when the sealer has sealed the one before. */
static void *writer(void *arg)
{
	(void)arg;
	pin(1);
	for (unsigned round = 0; round < SEALS; round++) {
		while (atomic_load_explicit(&turn, memory_order_acquire) != 0)
			;
		fill(events, round);
		atomic_store_explicit(&turn, 1, memory_order_release);
	}
	return NULL;
}

/* Seals `seals` batches of n events; returns the CPU seconds it took. */
static double run(struct seal_chain *c, const char *how, size_t n, int seals)
{
	struct tcp_audit_seal out;
	double spent = 0;

	for (int i = 0; i < seals; i++) {
		const struct tcp_audit_event *ev = events;
		if (!strcmp(how, "cold"))
			ev += (size_t)(i % BATCHES) * BATCH;
		else if (!strcmp(how, "other"))
			while (atomic_load_explicit(&turn, memory_order_acquire) != 1)
				;
		uint64_t t0 = clock_now_ns(CLOCK_THREAD_CPUTIME_ID);
		if (seal_chain_make(c, ev, n, false, &out) != 0) {
			fprintf(stderr, "seal-alone: seal_chain_make() failed\n");
			exit(1);
		}
		spent += (double)(clock_now_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / 1e9;
		seal_chain_advance(c);
		if (!strcmp(how, "other"))
			atomic_store_explicit(&turn, 0, memory_order_release);
	}
	return spent;
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/seal-alone.XXXXXX", path[64], vkey[SEAL_VKEY_MAX], err[256];
	int rounds = argc > 1 ? atoi(argv[1]) : 3;
	struct sealer *s;

	if (argc > 2 || rounds < 1) {
		fprintf(stderr, "Usage: seal-alone [ROUNDS]\n"
				"Times tcp-audit's sealing alone (warm, cold and just-written "
				"batches of %d events), ROUNDS times (default 3).\n",
				BATCH);
		return 2;
	}
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "seal-alone: needs 2 CPUs (the \"other\" case pins a writer "
				"to CPU 1)\n");
		return 1;
	}
	if (!mkdtemp(dir)) {
		perror("seal-alone: mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/seal.key", dir);
	if (seal_key_create(path, 900, vkey, err, sizeof(err)) != 0 ||
	    sealer_open(&s, path, err, sizeof(err)) != 0) {
		fprintf(stderr, "seal-alone: %s\n", err);
		return 1;
	}
	events = aligned_alloc(64, (size_t)BATCH * BATCHES * sizeof(*events));
	struct seal_chain *c = seal_chain_new(s);
	if (!events || !c) {
		fprintf(stderr, "seal-alone: out of memory\n");
		return 1;
	}
	for (unsigned b = 0; b < BATCHES; b++)
		fill(events + (size_t)b * BATCH, b);
	pin(0);
	run(c, "warm", BATCH, 20); /* the code and the key schedule in place */
	printf("%-7s %12s %12s\n", "batch", "ns a seal", "ns an event");
	for (int r = 0; r < rounds; r++) {
		const char *hows[] = {"warm", "cold", "other"};
		for (int h = 0; h < 3; h++) {
			bool other = !strcmp(hows[h], "other");
			pthread_t w = 0;
			atomic_store(&turn, 0);
			if (other && pthread_create(&w, NULL, writer, NULL) != 0) {
				fprintf(stderr, "seal-alone: cannot start a thread\n");
				return 1;
			}
			double t = run(c, hows[h], BATCH, SEALS) / SEALS * 1e9;
			if (other)
				pthread_join(w, NULL);
			printf("%-7s %12.0f %12.1f\n", hows[h], t, t / BATCH);
		}
		double t = run(c, "warm", 1, 20000) / 20000 * 1e9;
		printf("%-7s %12.0f %12s\n", "1 event", t, "(fixed cost)");
	}
	seal_chain_free(c);
	sealer_close(s, true);
	free(events);
	unlink(path);
	rmdir(dir);
	return 0;
}
