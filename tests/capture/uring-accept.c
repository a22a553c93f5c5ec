/* SPDX-License-Identifier: MIT */
/*
 * uring-accept NAME FD N: names itself NAME, then accepts N connections on
 * the listening socket it inherited as FD through io_uring (IORING_OP_ACCEPT,
 * raw system calls; every other one in an io_uring worker thread).  Prints
 * "ready" once the ring is set up and "accepted" once it has all N; closes
 * them when its standard input ends (so that no close() of its own tells
 * who holds them while the test looks).  Exits 0
 * when done, 2 when io_uring is not available (the test then skips), 1 on
 * any other failure.
 */
#include <errno.h>
#include <linux/io_uring.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int setup(struct ring *r)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	r->fd = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (r->fd < 0)
		return -errno;
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			IORING_OFF_SQ_RING);
	char *cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			IORING_OFF_CQ_RING);
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED)
		return -errno;
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

/*
 * Submits one accept on the listener and waits for its result: the new fd.
 * async: in one of io_uring's worker threads (iou-wrk-PID), not in ours.
 */
static int uring_accept(struct ring *r, int listener, bool async)
{
	unsigned tail = *r->sq_tail, i = tail & *r->sq_mask;
	struct io_uring_sqe *sqe = &r->sqes[i];

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_ACCEPT;
	sqe->fd = listener;
	if (async)
		sqe->flags = IOSQE_ASYNC;
	r->sq_array[i] = i;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	unsigned head = *r->cq_head;
	while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
		if (syscall(__NR_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
			return -errno;
	int res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

int main(int argc, char **argv)
{
	struct ring r = {0};
	char buf[256];

	if (argc != 4) {
		fprintf(stderr, "usage: uring-accept NAME FD N\n");
		return 1;
	}
	prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	int err = setup(&r);
	if (err) {
		fprintf(stderr, "uring-accept: io_uring: %s\n", strerror(-err));
		return err == -ENOSYS || err == -EPERM ? 2 : 1;
	}
	printf("ready\n");
	fflush(stdout);
	long n = atol(argv[3]);
	int *fds = calloc((size_t)n, sizeof(*fds));
	if (!fds)
		return 1;
	for (long i = 0; i < n; i++) {
		fds[i] = uring_accept(&r, atoi(argv[2]), i % 2);
		if (fds[i] < 0) {
			fprintf(stderr, "uring-accept: accept: %s\n", strerror(-fds[i]));
			return 1;
		}
	}
	printf("accepted\n");
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	for (long i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	return 0;
}
