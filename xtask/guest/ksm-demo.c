// SPDX-License-Identifier: GPL-2.0
/*
 * ksm-demo: hold memory that other instances hold too, so KSM can merge it.
 *
 *   ksm-demo madvise|prctl MIB
 *
 * Fills MIB MiB of anonymous memory with 64 distinct page patterns (the same
 * in every instance), opts in with MADV_MERGEABLE or PR_SET_MEMORY_MERGE,
 * prints "ready" and sleeps until killed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t size, i;
	int prctl_mode;
	char *p;

	if (argc != 3 || (strcmp(argv[1], "madvise") && strcmp(argv[1], "prctl")) || atoi(argv[2]) <= 0) {
		fprintf(stderr, "usage: %s madvise|prctl MIB\n", argv[0]);
		return 2;
	}
	prctl_mode = !strcmp(argv[1], "prctl");
	size = (size_t)atoi(argv[2]) << 20;
	if (prctl_mode && prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0)) {
		perror("prctl(PR_SET_MEMORY_MERGE)");
		return 1;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	if (!prctl_mode && madvise(p, size, MADV_MERGEABLE)) {
		perror("madvise(MADV_MERGEABLE)");
		return 1;
	}
	for (i = 0; i < size / page; i++)
		memset(p + i * page, 'A' + (int)(i % 64), page);
	printf("demo: pid %d (%s) holds %s MiB\n", getpid(), argv[1], argv[2]);
	fflush(stdout);
	for (;;)
		pause();
}
