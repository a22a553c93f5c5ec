/* SPDX-License-Identifier: MIT */
/*
 * syscall-loop: what one system call costs a process, as the mean of N
 * getppid() calls (one that does next to nothing in the kernel), printed as
 * ns per call.  A tracer that hooks the system call path at all (a
 * syscall-exit tracepoint, for one system call or all of them) makes every
 * process on the host pay on every call, whatever the call: this is that
 * price, beside the untraced one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;
	struct timespec t0, t1;

	if (argc > 2 || n < 1) {
		fprintf(stderr, "Usage: syscall-loop [CALLS]\n"
				"Makes CALLS getppid() system calls (default 10,000,000) and prints "
				"the ns per call.\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid); /* not getppid(): no library may answer it from a cache */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.2f\n", ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
				 (double)n);
	return 0;
}
