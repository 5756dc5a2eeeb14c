// SPDX-License-Identifier: GPL-2.0-only
/*
 * KSM race stress: processes write, fork and COW-write, unmerge and merge
 * ranges, discard, write-protect, move and replace their memory, page it
 * out and switch PR_SET_MEMORY_MERGE on and off, while ksmd scans it flat
 * out with short chains (max_page_sharing 2) and its knobs flip underneath
 * (run=2 and run=1, use_zero_pages, merge_across_nodes, pages_to_scan).
 * Page contents come from a few values, zeroes among them, so that pages
 * merge all the time, with each other and with the zero page. Every
 * process keeps a model of what each of its pages holds and checks it
 * continuously. At the end every KSM counter must be back to zero and the
 * KSM slab caches empty.
 *
 * With -f, allocations fail on purpose meanwhile (fault injection, needs
 * CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC and their debugfs files): one in
 * ten allocations from the KSM slab caches (rmap items, stable nodes, mm
 * slots), and a third of the page allocations of MADV_UNMERGEABLE. Every
 * failure must be handled: -ENOMEM to the caller, or a page left unmerged,
 * and nothing leaked.
 *
 * Usage: ksm_stress [-t seconds] [-p processes] [-s seed] [-f]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "kselftest.h"
#include "vm_util.h"

#define KSM_DIR "/sys/kernel/mm/ksm/"
#define SLAB_DIR "/sys/kernel/slab/"
#define DEBUGFS "/sys/kernel/debug/"
#define INJECT_TIMES 1000000
#define PAGES 256
#define VALUES 5
#define MAX_PROCS 16

static size_t pagesize;
/* -f: allocations fail on purpose, and the calls that allocate may fail. */
static bool inject;

/* Whether a failed call is a failure the test injected. */
static bool injected(void)
{
	return inject && (errno == ENOMEM || errno == EAGAIN);
}

/*
 * Lets this task's page allocations fail (fail_page_alloc's task filter),
 * through a file opened beforehand: opening it may allocate pages, and fail.
 */
static int make_it_fail_fd = -1;

static void make_it_fail(bool on)
{
	if (make_it_fail_fd >= 0 && pwrite(make_it_fail_fd, on ? "1" : "0", 1, 0) != 1) {
		ksft_print_msg("make-it-fail: %s\n", strerror(errno));
		_exit(4);
	}
}

/* The byte a page of value v is filled with: value 0 is a page of zeroes. */
static unsigned char fill_byte(unsigned int v)
{
	return v * 0x33;
}

/* xorshift32: reproducible from the seed printed at the start. */
static unsigned int rnd(unsigned int *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

struct area {
	char *map;
	unsigned char model[PAGES];
	const char *who;
	unsigned long ops;
};

/* Checks pages [from, to); exits the process on the first wrong byte. */
static void verify(const struct area *a, unsigned int from, unsigned int to, const char *after)
{
	unsigned int i;
	size_t j;

	for (i = from; i < to; i++) {
		const unsigned char *p = (const unsigned char *)a->map + i * pagesize;
		unsigned char want = fill_byte(a->model[i]);

		for (j = 0; j < pagesize; j++) {
			if (p[j] != want) {
				ksft_print_msg("%s: page %u byte %zu %#x not %#x after %s (%lu)\n",
					       a->who, i, j, p[j], want, after, a->ops);
				_exit(1);
			}
		}
	}
}

static void write_page(struct area *a, unsigned int i, unsigned int v)
{
	memset(a->map + i * pagesize, fill_byte(v), pagesize);
	a->model[i] = v;
}

/* A random range [*from, *to) of at least one page. */
static void range(unsigned int *s, unsigned int *from, unsigned int *to)
{
	*from = rnd(s) % PAGES;
	*to = *from + 1 + rnd(s) % (PAGES - *from);
}

static void must(bool ok, const struct area *a, const char *what)
{
	if (!ok) {
		ksft_print_msg("%s: %s failed: %s\n", a->who, what, strerror(errno));
		_exit(2);
	}
}

/* One random operation on the area. */
static void step(struct area *a, unsigned int *s)
{
	size_t len = PAGES * pagesize;
	unsigned int from, to, i, k;
	int status, ret;
	char *p;
	pid_t pid;

	a->ops++;
	range(s, &from, &to);
	switch (rnd(s) % 16) {
	case 0 ... 4:
		for (k = 0; k < 8; k++)
			write_page(a, rnd(s) % PAGES, rnd(s) % VALUES);
		break;
	case 5:
		verify(a, 0, PAGES, "a full check");
		break;
	case 6:
		/* fork; the child checks, COW-writes and checks; so does the parent. */
		pid = fork();
		if (pid < 0 && injected())
			break;
		must(pid >= 0, a, "fork");
		if (!pid) {
			a->who = "forked child";
			verify(a, 0, PAGES, "fork");
			for (k = 0; k < 16; k++)
				write_page(a, rnd(s) % PAGES, rnd(s) % VALUES);
			verify(a, 0, PAGES, "COW writes in the child");
			_exit(0);
		}
		for (k = 0; k < 16; k++)
			write_page(a, rnd(s) % PAGES, rnd(s) % VALUES);
		must(waitpid(pid, &status, 0) == pid, a, "waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			ksft_print_msg("%s: forked child failed (status %#x)\n", a->who, status);
			_exit(3);
		}
		verify(a, 0, PAGES, "a child's COW writes");
		break;
	case 7:
		make_it_fail(true);
		ret = madvise(a->map + from * pagesize, (to - from) * pagesize, MADV_UNMERGEABLE);
		make_it_fail(false);
		must(!ret || injected(), a, "MADV_UNMERGEABLE");
		verify(a, from, to, "MADV_UNMERGEABLE");
		break;
	case 8:
		must(!madvise(a->map, len, MADV_MERGEABLE) || injected(), a, "MADV_MERGEABLE");
		break;
	case 9:
		must(!madvise(a->map + from * pagesize, (to - from) * pagesize, MADV_DONTNEED),
		     a, "MADV_DONTNEED");
		for (i = from; i < to; i++)
			a->model[i] = 0;
		verify(a, from, to, "MADV_DONTNEED");
		break;
	case 10:
		must(!mprotect(a->map + from * pagesize, (to - from) * pagesize, PROT_READ),
		     a, "mprotect");
		verify(a, from, to, "mprotect(PROT_READ)");
		must(!mprotect(a->map + from * pagesize, (to - from) * pagesize,
			       PROT_READ | PROT_WRITE), a, "mprotect");
		break;
	case 11:
		/* Move the whole area; refused (EFAULT) while it is split in VMAs. */
		p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		must(p != MAP_FAILED, a, "mmap");
		if (mremap(a->map, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, p) == p) {
			a->map = p;
			verify(a, 0, PAGES, "mremap");
		} else {
			must(errno == EFAULT, a, "mremap");
			munmap(p, len);
		}
		break;
	case 12:
		/* Replace a range by fresh memory, then make it mergeable. */
		p = a->map + from * pagesize;
		must(mmap(p, (to - from) * pagesize, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p,
		     a, "mmap(MAP_FIXED)");
		for (i = from; i < to; i++)
			a->model[i] = 0;
		verify(a, from, to, "mmap(MAP_FIXED)");
		must(!madvise(p, (to - from) * pagesize, MADV_MERGEABLE) || injected(),
		     a, "MADV_MERGEABLE");
		break;
	case 13:
		/* Pages mapped once go to swap (if any); shared ones stay. */
		madvise(a->map + from * pagesize, (to - from) * pagesize, MADV_PAGEOUT);
		verify(a, from, to, "MADV_PAGEOUT");
		break;
	case 14:
		must(!prctl(PR_SET_MEMORY_MERGE, rnd(s) % 2, 0, 0, 0) || injected(),
		     a, "PR_SET_MEMORY_MERGE");
		verify(a, 0, PAGES, "PR_SET_MEMORY_MERGE");
		break;
	case 15:
		usleep(1000);
		verify(a, from, to, "a pause");
		break;
	}
}

static void run_worker(unsigned int id, unsigned int seed, time_t deadline)
{
	struct area a = { .who = "worker" };
	unsigned int s = seed * 2654435761u + id + 1, i;
	char who[32];

	snprintf(who, sizeof(who), "worker %u", id);
	a.who = who;
	if (inject)
		make_it_fail_fd = open("/proc/self/make-it-fail", O_WRONLY);
	a.map = mmap(NULL, PAGES * pagesize, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	must(a.map != MAP_FAILED, &a, "mmap");
	for (i = 0; i < PAGES; i++)
		write_page(&a, i, rnd(&s) % VALUES);
	must(!madvise(a.map, PAGES * pagesize, MADV_MERGEABLE) || injected(), &a, "MADV_MERGEABLE");
	while (time(NULL) < deadline)
		step(&a, &s);
	verify(&a, 0, PAGES, "the last step");
	ksft_print_msg("%s: %lu operations, model intact\n", who, a.ops);
	_exit(0);
}

static long ksm_long(const char *name)
{
	char path[128], buf[64];

	snprintf(path, sizeof(path), KSM_DIR "%s", name);
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return -1;
	return strtol(buf, NULL, 10);
}

/* Writes value to dir/file; 0 or an errno. */
static int write_knob(const char *dir, const char *file, const char *value)
{
	char path[256];
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s%s", dir, file);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return errno;
	if (write(fd, value, strlen(value)) < 0)
		err = errno;
	close(fd);
	return err;
}

static int ksm_set(const char *name, long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%ld", v);
	return write_knob(KSM_DIR, name, buf);
}

/*
 * A knob that cannot change while KSM pages exist answers EBUSY, one that
 * is not built in (merge_across_nodes without NUMA) does not exist.
 */
static void busy_ok(int err)
{
	if (err && err != EBUSY && err != ENOENT)
		ksft_exit_fail_msg("writing a KSM knob: %s\n", strerror(err));
}

static const long scan_sizes[] = { 100, 1000, 4000 };

/* Flips a knob underneath the workers. */
static void flip(unsigned int *s)
{
	int err = 0;

	switch (rnd(s) % 8) {
	case 0:
	case 1:
		err = ksm_set("use_zero_pages", rnd(s) % 2);
		break;
	case 2:
		/* Unmerge everything; while none is shared, the busy knobs may change. */
		err = ksm_set("run", 2);
		if (!err) {
			busy_ok(ksm_set("merge_across_nodes", rnd(s) % 2));
			busy_ok(ksm_set("max_page_sharing", 2 + rnd(s) % 2));
			err = ksm_set("run", 1);
		}
		break;
	case 3:
		err = ksm_set("merge_across_nodes", rnd(s) % 2);
		break;
	case 4:
		err = ksm_set("pages_to_scan", scan_sizes[rnd(s) % ARRAY_SIZE(scan_sizes)]);
		break;
	default:
		break;
	}
	busy_ok(err);
}

/* Whether the slab cache `name` holds no object (after shrinking it). */
static int slab_cache_empty(const char *name)
{
	char path[128], buf[64];

	snprintf(path, sizeof(path), SLAB_DIR "%s/shrink", name);
	if (access(path, F_OK))
		return -1;
	write_sysfs(path, 1);
	snprintf(path, sizeof(path), SLAB_DIR "%s/objects", name);
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return -1;
	return strtol(buf, NULL, 10) == 0;
}

static const char * const caches[] = { "ksm_rmap_item", "ksm_stable_node", "ksm_mm_slot" };


/*
 * Fault injection for -f: one in ten allocations from the KSM caches, by
 * anyone (ksmd, madvise, fork), and one in three page allocations of the
 * tasks that ask (make-it-fail: the workers, around MADV_UNMERGEABLE),
 * with no log (verbose 0: a stack dump per failure would flood it).
 * Returns false, having changed nothing that matters, if unavailable.
 */
static bool inject_start(void)
{
	static const char * const common[][2] = {
		{ "interval", "1" }, { "times", "1000000" }, { "space", "0" },
		{ "verbose", "0" }, { "ignore-gfp-wait", "N" },
	};
	char path[128];
	unsigned int i;
	int err = 0;

	if (access(DEBUGFS "failslab", F_OK))
		mount("debugfs", DEBUGFS, "debugfs", 0, NULL);
	if (access(DEBUGFS "failslab", F_OK) || access(DEBUGFS "fail_page_alloc", F_OK))
		return false;
	for (i = 0; i < ARRAY_SIZE(common); i++) {
		err |= write_knob(DEBUGFS "failslab/", common[i][0], common[i][1]);
		err |= write_knob(DEBUGFS "fail_page_alloc/", common[i][0], common[i][1]);
	}
	err |= write_knob(DEBUGFS "failslab/", "cache-filter", "Y");
	err |= write_knob(DEBUGFS "failslab/", "task-filter", "N");
	err |= write_knob(DEBUGFS "fail_page_alloc/", "task-filter", "Y");
	err |= write_knob(DEBUGFS "fail_page_alloc/", "ignore-gfp-highmem", "N");
	err |= write_knob(DEBUGFS "fail_page_alloc/", "min-order", "0");
	for (i = 0; i < ARRAY_SIZE(caches); i++) {
		snprintf(path, sizeof(path), SLAB_DIR "%s/", caches[i]);
		err |= write_knob(path, "failslab", "1");
	}
	err |= write_knob(DEBUGFS "failslab/", "probability", "10");
	err |= write_knob(DEBUGFS "fail_page_alloc/", "probability", "33");
	if (err)
		ksft_exit_fail_msg("cannot set up fault injection\n");
	return true;
}

/* Stops fault injection; how many failures each kind injected. */
static void inject_stop(long *slab, long *page)
{
	char path[128], buf[32];
	unsigned int i;

	write_knob(DEBUGFS "failslab/", "probability", "0");
	write_knob(DEBUGFS "fail_page_alloc/", "probability", "0");
	for (i = 0; i < ARRAY_SIZE(caches); i++) {
		snprintf(path, sizeof(path), SLAB_DIR "%s/", caches[i]);
		write_knob(path, "failslab", "0");
	}
	*slab = *page = -1;
	if (read_file(DEBUGFS "failslab/times", buf, sizeof(buf)) > 0)
		*slab = INJECT_TIMES - strtol(buf, NULL, 10);
	if (read_file(DEBUGFS "fail_page_alloc/times", buf, sizeof(buf)) > 0)
		*page = INJECT_TIMES - strtol(buf, NULL, 10);
}

int main(int argc, char **argv)
{
	static const char * const zero_after[] = {
		"pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
		"ksm_zero_pages", "stable_node_chains", "stable_node_dups", "general_profit",
	};
	/* What the stress reached, sampled: it must merge pages and zero pages. */
	static const char * const seen[] = {
		"pages_sharing", "ksm_zero_pages", "stable_node_chains", "stable_node_dups",
	};
	long max_seen[ARRAY_SIZE(seen)] = { 0 }, slab_fails, page_fails;
	bool want_inject;
	long old_scan, old_sleep, old_share, old_zero;
	unsigned int seconds = 20, procs = 4, seed = time(NULL), s, i;
	int opt, status, failed = 0;
	pid_t pids[MAX_PROCS];
	time_t deadline;

	while ((opt = getopt(argc, argv, "t:p:s:f")) != -1) {
		switch (opt) {
		case 't':
			seconds = strtoul(optarg, NULL, 10);
			break;
		case 'p':
			procs = strtoul(optarg, NULL, 10);
			break;
		case 's':
			seed = strtoul(optarg, NULL, 10);
			break;
		case 'f':
			inject = true;
			break;
		default:
			ksft_exit_fail_msg("usage: %s [-t secs] [-p procs] [-s seed]\n", argv[0]);
		}
	}
	if (!procs || procs > MAX_PROCS)
		ksft_exit_fail_msg("-p: 1 to %d processes\n", MAX_PROCS);
	ksft_print_header();
	pagesize = getpagesize();
	if (access(KSM_DIR "run", F_OK))
		ksft_exit_skip("KSM is not available\n");
	ksft_set_plan(2 + inject + ARRAY_SIZE(zero_after) + ARRAY_SIZE(caches));
	ksft_print_msg("%u processes for %u s, seed %u\n", procs, seconds, seed);

	old_scan = ksm_long("pages_to_scan");
	old_sleep = ksm_long("sleep_millisecs");
	old_share = ksm_long("max_page_sharing");
	old_zero = ksm_long("use_zero_pages");
	if (ksm_set("run", 2) || ksm_set("max_page_sharing", 2) ||
	    ksm_set("sleep_millisecs", 0) || ksm_set("pages_to_scan", 1000) || ksm_set("run", 1))
		ksft_exit_fail_msg("cannot set up KSM\n");
	want_inject = inject;
	if (inject && !inject_start())
		inject = false;

	deadline = time(NULL) + seconds;
	for (i = 0; i < procs; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			ksft_exit_fail_msg("fork failed\n");
		if (!pids[i])
			run_worker(i, seed, deadline);
	}
	s = seed | 1;
	while (time(NULL) < deadline) {
		usleep(200000);
		flip(&s);
		for (i = 0; i < ARRAY_SIZE(seen); i++) {
			long v = ksm_long(seen[i]);

			if (v > max_seen[i])
				max_seen[i] = v;
		}
	}
	ksft_print_msg("at most %ld pages_sharing, %ld ksm_zero_pages, %ld chains, %ld dups\n",
		       max_seen[0], max_seen[1], max_seen[2], max_seen[3]);
	for (i = 0; i < procs; i++) {
		if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
		    WEXITSTATUS(status)) {
			ksft_print_msg("worker %u failed (status %#x)\n", i, status);
			failed++;
		}
	}
	ksft_test_result(!failed && max_seen[0] > 0 && max_seen[1] > 0,
			 "%u processes kept their memory intact for %u s of merging\n",
			 procs, seconds);
	if (inject) {
		inject_stop(&slab_fails, &page_fails);
		ksft_print_msg("injected %ld KSM slab and %ld page allocation failures\n",
			       slab_fails, page_fails);
		ksft_test_result(!failed && slab_fails > 0 && page_fails > 0,
				 "allocation failures injected and handled\n");
	} else if (want_inject) {
		ksft_test_result_skip("allocation failures: no fault injection\n");
	}

	/* Everyone is gone: unmerging everything leaves nothing accounted. */
	ksft_test_result(!ksm_set("run", 2), "run=2 after the stress\n");
	for (i = 0; i < ARRAY_SIZE(zero_after); i++) {
		long v = ksm_long(zero_after[i]);
		int tries;

		/* An exited worker's memory may still be torn down: wait a little. */
		for (tries = 0; tries < 50 && v > 0; tries++) {
			usleep(100000);
			v = ksm_long(zero_after[i]);
		}

		if (v == -1)
			ksft_test_result_skip("%s back to 0: not provided\n", zero_after[i]);
		else
			ksft_test_result(v == 0, "%s back to 0 (%ld)\n", zero_after[i], v);
	}
	for (i = 0; i < ARRAY_SIZE(caches); i++) {
		int empty = slab_cache_empty(caches[i]);

		if (empty < 0)
			ksft_test_result_skip("slab cache %s empty: no such cache (merged?)\n",
					      caches[i]);
		else
			ksft_test_result(empty, "slab cache %s empty\n", caches[i]);
	}

	ksm_set("use_zero_pages", old_zero);
	ksm_set("max_page_sharing", old_share);
	ksm_set("merge_across_nodes", 1);
	ksm_set("pages_to_scan", old_scan);
	ksm_set("sleep_millisecs", old_sleep);
	ksft_finished();
}
