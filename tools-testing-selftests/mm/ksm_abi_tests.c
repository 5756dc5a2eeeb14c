// SPDX-License-Identifier: GPL-2.0-only
/*
 * KSM user-ABI tests that ksm_tests and ksm_functional_tests do not cover:
 *
 *  - /sys/kernel/mm/ksm: every file has its documented mode and format, bad
 *    writes fail with the exact errno of mm/ksm.c and change nothing, and
 *    max_page_sharing/merge_across_nodes refuse to change (-EBUSY) while
 *    KSM pages exist;
 *  - data integrity: page contents survive merge, COW and unmerge cycles in
 *    a parent and a forked child, also with use_zero_pages;
 *  - KSM zero pages and fork(): a child's ksm_zero_pages counts what it
 *    maps, and the global count does not drift, also with ksmd merging
 *    zero pages while children are forked;
 *  - KSM zero pages moved by UFFDIO_MOVE, or replaced by device pages
 *    through migrate_vma (skipped without the HMM test driver), are
 *    uncounted;
 *  - a page that UFFDIO_MOVE moves back and forth while ksmd merges it is
 *    merged where the reverse map looks for it: the KSM page migrates
 *    (skipped without UFFD_FEATURE_MOVE or a second NUMA node);
 *  - MTE (arm64): a page of zeroes with non-zero tags is merged neither
 *    with the zero page nor with its copies, and keeps its tags;
 *  - checksum collisions: pages whose checksums (xxhash or crc32c) collide
 *    but whose bytes differ merge with their copies, never with each other,
 *    whichever is merged first;
 *  - sparse areas: a 32 TiB mergeable area holding two pages is scanned,
 *    merged and unmerged quickly (unpopulated page tables are skipped);
 *  - smart scan: pages first scanned long after pages of the same content,
 *    at every phase of the longest skip period, still merge with them;
 *  - trace events: every event of include/trace/events/ksm.h fires, with
 *    plausible fields, over a merge / exit / advisor cycle (skipped
 *    without tracefs);
 *  - memory hot-remove: KSM pages of several processes on a movable memory
 *    block migrate when it goes offline, intact, counters unchanged; stale
 *    stable nodes of offlined memory are dropped, and their counts with
 *    them (skipped without a movable memory block);
 *  - swap: KSM pages of several processes, some forked, reclaimed to swap
 *    through a memory cgroup (memory.reclaim, then memory.high) and faulted
 *    back intact, with ksm_swpin_copy and cow_ksm counted; swapoff with KSM
 *    pages in swap; MADV_PAGEOUT of KSM pages mapped once (skipped without
 *    swap or the memory controller);
 *  - memory failure: a poisoned KSM page kills who asked for early kill,
 *    raises SIGBUS on access in the other mappers, leaves the rest alone;
 *  - memory cgroups: KSM pages are charged and uncharged, unmerging over
 *    memory.max ends in -ENOMEM or an OOM kill; in a cpuset on one node
 *    with merge_across_nodes=0, KSM pages stay on that node;
 *  - accounting: after every merging process has unmerged and run=2,
 *    the global counters and general_profit are back to zero.
 *
 * They are meant to hold for any KSM implementation (mm/ksm.c or another).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/userfaultfd.h>
#include <lib/test_hmm_uapi.h>

#include "kselftest.h"
#include "vm_util.h"

#define KSM_DIR "/sys/kernel/mm/ksm/"
#define NR_PAGES 512
#define NR_PATTERNS 16
#define MERGE_TIMEOUT_SEC 120
#define TRACING "/sys/kernel/tracing/"

static size_t pagesize;

enum fmt { FMT_UNSIGNED, FMT_SIGNED, FMT_ADVISOR };

struct ksm_file {
	const char *name;
	mode_t mode;
	enum fmt fmt;
	/* Files that any implementation must have (the others are optional). */
	bool core;
};

static const struct ksm_file files[] = {
	{ "run", 0644, FMT_UNSIGNED, true },
	{ "pages_to_scan", 0644, FMT_UNSIGNED, true },
	{ "sleep_millisecs", 0644, FMT_UNSIGNED, true },
	{ "pages_scanned", 0444, FMT_UNSIGNED, true },
	{ "pages_shared", 0444, FMT_UNSIGNED, true },
	{ "pages_sharing", 0444, FMT_UNSIGNED, true },
	{ "pages_unshared", 0444, FMT_UNSIGNED, true },
	{ "pages_volatile", 0444, FMT_UNSIGNED, true },
	{ "pages_skipped", 0444, FMT_UNSIGNED, false },
	{ "ksm_zero_pages", 0444, FMT_SIGNED, true },
	{ "full_scans", 0444, FMT_UNSIGNED, true },
	{ "use_zero_pages", 0644, FMT_UNSIGNED, true },
	{ "general_profit", 0444, FMT_SIGNED, true },
	{ "merge_across_nodes", 0644, FMT_UNSIGNED, false },
	{ "max_page_sharing", 0644, FMT_UNSIGNED, false },
	{ "stable_node_chains", 0444, FMT_UNSIGNED, false },
	{ "stable_node_dups", 0444, FMT_UNSIGNED, false },
	{ "stable_node_chains_prune_millisecs", 0644, FMT_UNSIGNED, false },
	{ "smart_scan", 0644, FMT_UNSIGNED, false },
	{ "advisor_mode", 0644, FMT_ADVISOR, false },
	{ "advisor_max_cpu", 0644, FMT_UNSIGNED, false },
	{ "advisor_min_pages_to_scan", 0644, FMT_UNSIGNED, false },
	{ "advisor_max_pages_to_scan", 0644, FMT_UNSIGNED, false },
	{ "advisor_target_scan_time", 0644, FMT_UNSIGNED, false },
};

struct bad_write {
	const char *name;
	const char *value;
	int err;
};

/* What mm/ksm.c answers; kstrtoint/kstrtoul errors pass through unchanged. */
static const struct bad_write bad_writes[] = {
	{ "run", "3", EINVAL },
	{ "run", "-1", EINVAL },
	{ "run", "one", EINVAL },
	{ "run", "4294967296", EINVAL },
	{ "pages_to_scan", "-5", EINVAL },
	{ "pages_to_scan", " 5", EINVAL },
	{ "pages_to_scan", "4294967296", EINVAL },
	{ "pages_to_scan", "12ab", EINVAL },
	{ "sleep_millisecs", "abc", EINVAL },
	{ "sleep_millisecs", "1.5", EINVAL },
	{ "sleep_millisecs", "4294967296", EINVAL },
	{ "use_zero_pages", "maybe", EINVAL },
	{ "use_zero_pages", "2", EINVAL },
	{ "merge_across_nodes", "2", EINVAL },
	{ "merge_across_nodes", "x", EINVAL },
	{ "merge_across_nodes", "99999999999999999999", ERANGE },
	{ "max_page_sharing", "1", EINVAL },
	{ "max_page_sharing", "0", EINVAL },
	{ "max_page_sharing", "-3", EINVAL },
	{ "max_page_sharing", "x", EINVAL },
	{ "max_page_sharing", "99999999999", ERANGE },
	{ "stable_node_chains_prune_millisecs", "-1", EINVAL },
	{ "stable_node_chains_prune_millisecs", "soon", EINVAL },
	{ "smart_scan", "perhaps", EINVAL },
	{ "advisor_mode", "auto", EINVAL },
	{ "advisor_mode", "scan_time", EINVAL },
	{ "advisor_max_cpu", "-1", EINVAL },
	{ "advisor_min_pages_to_scan", "x", EINVAL },
	{ "advisor_max_pages_to_scan", "x", EINVAL },
	{ "advisor_target_scan_time", "0", EINVAL },
	{ "advisor_target_scan_time", "x", EINVAL },
};

static bool ksm_file_exists(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), KSM_DIR "%s", name);
	return access(path, F_OK) == 0;
}

/* Reads a KSM file into buf; returns its length, 0 on error. */
static int ksm_read(const char *name, char *buf, size_t size)
{
	char path[128];

	buf[0] = 0;
	snprintf(path, sizeof(path), KSM_DIR "%s", name);
	return read_file(path, buf, size);
}

static long ksm_read_long(const char *name)
{
	char buf[64];

	if (ksm_read(name, buf, sizeof(buf)) <= 0)
		ksft_exit_fail_msg("cannot read " KSM_DIR "%s\n", name);
	return strtol(buf, NULL, 10);
}

/* Writes value; returns 0 or the errno of the write. */
/* Writes `value` to the file at `path` (truncated first); returns 0 or an errno. */
static int write_str(const char *path, const char *value)
{
	ssize_t n;
	int fd, err = 0;

	fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0)
		return errno;
	n = write(fd, value, strlen(value));
	if (n < 0)
		err = errno;
	else if ((size_t)n != strlen(value))
		err = EIO;
	close(fd);
	return err;
}

static int ksm_write(const char *name, const char *value)
{
	char path[128];

	snprintf(path, sizeof(path), KSM_DIR "%s", name);
	return write_str(path, value);
}

static void ksm_write_or_die(const char *name, const char *value)
{
	int err = ksm_write(name, value);

	if (err)
		ksft_exit_fail_msg("writing %s to %s: %s\n", value, name, strerror(err));
}

static bool format_ok(const char *buf, enum fmt fmt)
{
	const char *p = buf;

	if (fmt == FMT_ADVISOR)
		return !strcmp(buf, "[none] scan-time\n") || !strcmp(buf, "none [scan-time]\n");
	if (fmt == FMT_SIGNED && *p == '-')
		p++;
	if (!*p || *p == '\n')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	return !strcmp(p, "\n");
}

static void test_sysfs_files(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(files); i++) {
		const struct ksm_file *f = &files[i];
		char path[128], buf[128];
		struct stat st;

		snprintf(path, sizeof(path), KSM_DIR "%s", f->name);
		if (stat(path, &st)) {
			if (f->core)
				ksft_test_result_fail("%s: missing\n", f->name);
			else
				ksft_test_result_skip("%s: not provided\n", f->name);
			continue;
		}
		if ((st.st_mode & 07777) != f->mode) {
			ksft_test_result_fail("%s: mode %o, want %o\n", f->name,
					      st.st_mode & 07777, f->mode);
			continue;
		}
		if (ksm_read(f->name, buf, sizeof(buf)) <= 0 || !format_ok(buf, f->fmt)) {
			ksft_test_result_fail("%s: bad format \"%s\"\n", f->name, buf);
			continue;
		}
		if (f->mode == 0444 && ksm_write(f->name, "0") != EACCES) {
			ksft_test_result_fail("%s: read-only file accepted a write\n", f->name);
			continue;
		}
		ksft_test_result_pass("%s: mode %o, format ok\n", f->name, f->mode);
	}
}

static void test_bad_writes(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(bad_writes); i++) {
		const struct bad_write *w = &bad_writes[i];
		char before[128], after[128];
		int err;

		if (!ksm_file_exists(w->name)) {
			ksft_test_result_skip("%s <- \"%s\": not provided\n", w->name, w->value);
			continue;
		}
		ksm_read(w->name, before, sizeof(before));
		err = ksm_write(w->name, w->value);
		ksm_read(w->name, after, sizeof(after));
		if (err != w->err)
			ksft_test_result_fail("%s <- \"%s\": %s, want %s\n", w->name, w->value,
					      err ? strerror(err) : "accepted", strerror(w->err));
		else if (strcmp(before, after))
			ksft_test_result_fail("%s <- \"%s\": value changed\n", w->name, w->value);
		else
			ksft_test_result_pass("%s <- \"%s\": %s, unchanged\n", w->name, w->value,
					      strerror(err));
	}
}

/* Good writes: the value sticks, a trailing newline is accepted. */
static void test_good_writes(void)
{
	long old_scan = ksm_read_long("pages_to_scan");
	long old_sleep = ksm_read_long("sleep_millisecs");
	char buf[32];
	bool ok;

	ok = !ksm_write("pages_to_scan", "1234\n") && ksm_read_long("pages_to_scan") == 1234 &&
	     !ksm_write("sleep_millisecs", "0") && ksm_read_long("sleep_millisecs") == 0;
	snprintf(buf, sizeof(buf), "%ld", old_scan);
	ksm_write_or_die("pages_to_scan", buf);
	snprintf(buf, sizeof(buf), "%ld", old_sleep);
	ksm_write_or_die("sleep_millisecs", buf);
	ksft_test_result(ok, "pages_to_scan and sleep_millisecs accept good values\n");

	if (!ksm_file_exists("advisor_mode")) {
		ksft_test_result_skip("pages_to_scan is read-only under the advisor: no advisor\n");
		return;
	}
	ksm_write_or_die("advisor_mode", "scan-time");
	ok = ksm_write("pages_to_scan", "10") == EINVAL;
	ksm_write_or_die("advisor_mode", "none");
	snprintf(buf, sizeof(buf), "%ld", old_scan);
	ksm_write_or_die("pages_to_scan", buf);
	ksft_test_result(ok, "pages_to_scan refuses writes (EINVAL) while the advisor runs\n");
}

static unsigned char pattern(size_t page, unsigned int gen)
{
	return 'A' + (page % NR_PATTERNS) + gen;
}

/* Fills page i of map with byte c. */
static void fill(char *map, size_t i, unsigned char c)
{
	memset(map + i * pagesize, c, pagesize);
}

static long check_pages(char *map, const unsigned char *want)
{
	size_t i, j;

	for (i = 0; i < NR_PAGES; i++)
		for (j = 0; j < pagesize; j++)
			if ((unsigned char)map[i * pagesize + j] != want[i])
				return (long)i;
	return -1;
}

/* Waits until this process has at least `pages` KSM-merged pages. */
static bool wait_merged(long pages)
{
	long start = ksm_get_full_scans();
	int i;

	for (i = 0; i < MERGE_TIMEOUT_SEC * 10; i++) {
		if (ksm_get_self_merging_pages() >= pages && ksm_get_full_scans() >= start + 2)
			return true;
		usleep(100000);
	}
	ksft_print_msg("merging_pages %ld, want %ld\n", ksm_get_self_merging_pages(), pages);
	return false;
}

/*
 * ksm_merging_pages drops when ksmd next scans the range that was made
 * unmergeable, not synchronously with MADV_UNMERGEABLE: wait for it.
 */
static bool wait_unmerged(void)
{
	int i;

	for (i = 0; i < MERGE_TIMEOUT_SEC * 10; i++) {
		if (ksm_get_self_merging_pages() == 0)
			return true;
		usleep(100000);
	}
	ksft_print_msg("merging_pages still %ld\n", ksm_get_self_merging_pages());
	return false;
}

/*
 * One merge -> fork -> COW -> unmerge cycle; returns a description of the
 * first failure or NULL.
 */
static const char *integrity_cycle(unsigned int gen)
{
	unsigned char want[NR_PAGES], child_want[NR_PAGES];
	const char *err = NULL;
	int status, sync_pipe[2];
	long bad;
	pid_t pid;
	char *map;
	size_t i;

	map = mmap(NULL, NR_PAGES * pagesize, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return "mmap failed";
	for (i = 0; i < NR_PAGES; i++) {
		want[i] = pattern(i, gen);
		fill(map, i, want[i]);
	}
	if (madvise(map, NR_PAGES * pagesize, MADV_MERGEABLE)) {
		err = "MADV_MERGEABLE failed";
		goto out;
	}
	if (!wait_merged(NR_PAGES)) {
		err = "pages were not merged";
		goto out;
	}
	if (check_pages(map, want) >= 0) {
		err = "content changed by merging";
		goto out;
	}
	if (pipe(sync_pipe)) {
		err = "pipe failed";
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		err = "fork failed";
		goto out;
	}
	if (!pid) {
		char c;

		close(sync_pipe[1]);
		/* The child sees the merged content, then breaks COW on every third page. */
		if (check_pages(map, want) >= 0)
			_exit(10);
		memcpy(child_want, want, sizeof(want));
		for (i = 0; i < NR_PAGES; i += 3) {
			child_want[i] = 'a' + (i % 26);
			fill(map, i, child_want[i]);
		}
		if (check_pages(map, child_want) >= 0)
			_exit(11);
		/* Wait until the parent has written its own pages. */
		if (read(sync_pipe[0], &c, 1) != 1)
			_exit(12);
		if (check_pages(map, child_want) >= 0)
			_exit(13);
		if (madvise(map, NR_PAGES * pagesize, MADV_UNMERGEABLE))
			_exit(14);
		if (check_pages(map, child_want) >= 0)
			_exit(15);
		if (!wait_unmerged())
			_exit(16);
		_exit(0);
	}
	close(sync_pipe[0]);
	/* The parent breaks COW on every fifth page while the child runs. */
	for (i = 1; i < NR_PAGES; i += 5) {
		want[i] = '0' + (i % 10);
		fill(map, i, want[i]);
	}
	if (write(sync_pipe[1], "x", 1) != 1)
		err = "pipe write failed";
	close(sync_pipe[1]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		ksft_print_msg("child exit status %d\n",
			       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		err = err ? err : "child saw wrong content or counters";
		goto out;
	}
	bad = check_pages(map, want);
	if (bad >= 0) {
		ksft_print_msg("page %ld differs after COW\n", bad);
		err = "parent content changed by the child's writes";
		goto out;
	}
	/* Unwritten duplicates merge again; then unmerge everything. */
	if (!wait_merged(1)) {
		err = "pages were not merged again after COW";
		goto out;
	}
	if (madvise(map, NR_PAGES * pagesize, MADV_UNMERGEABLE)) {
		err = "MADV_UNMERGEABLE failed";
		goto out;
	}
	if (check_pages(map, want) >= 0)
		err = "content changed by unmerging";
	else if (!wait_unmerged())
		err = "ksm_merging_pages not back to 0 after MADV_UNMERGEABLE";
out:
	munmap(map, NR_PAGES * pagesize);
	return err;
}

static void test_integrity(void)
{
	unsigned int gen;

	ksm_write_or_die("run", "1");
	for (gen = 0; gen < 3; gen++) {
		const char *err = integrity_cycle(gen);

		if (err)
			ksft_test_result_fail("merge/fork/COW/unmerge cycle %u: %s\n", gen, err);
		else
			ksft_test_result_pass("merge/fork/COW/unmerge cycle %u: intact\n", gen);
	}
}

static void test_zero_pages(void)
{
	const size_t n = 64;
	long zero, global_before;
	const char *err = NULL;
	char *map;
	size_t i, j;

	if (ksm_write("use_zero_pages", "1")) {
		ksft_test_result_skip("use_zero_pages cannot be set\n");
		return;
	}
	global_before = ksm_read_long("ksm_zero_pages");
	map = mmap(NULL, n * pagesize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	/* Populate real (not shared-zero) pages that hold zeroes. */
	for (i = 0; i < n; i++) {
		map[i * pagesize] = 1;
		map[i * pagesize] = 0;
	}
	ksm_write_or_die("run", "1");
	if (madvise(map, n * pagesize, MADV_MERGEABLE)) {
		err = "MADV_MERGEABLE failed";
		goto out;
	}
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && ksm_get_self_zero_pages() < (long)n; i++)
		usleep(100000);
	zero = ksm_get_self_zero_pages();
	if (zero != (long)n) {
		ksft_print_msg("ksm_zero_pages %ld, want %zu\n", zero, n);
		err = "empty pages were not merged with the zero page";
		goto out;
	}
	if (ksm_read_long("ksm_zero_pages") != global_before + (long)n) {
		err = "global ksm_zero_pages does not count them";
		goto out;
	}
	/* Write faults on a quarter of them. */
	for (i = 0; i < n; i += 4)
		map[i * pagesize + 7] = 'z';
	if (ksm_get_self_zero_pages() != (long)(n - n / 4)) {
		err = "ksm_zero_pages not decremented by write faults";
		goto out;
	}
	if (madvise(map, n * pagesize, MADV_UNMERGEABLE)) {
		err = "MADV_UNMERGEABLE failed";
		goto out;
	}
	if (ksm_get_self_zero_pages() != 0) {
		err = "ksm_zero_pages not 0 after MADV_UNMERGEABLE";
		goto out;
	}
	for (i = 0; i < n && !err; i++)
		for (j = 0; j < pagesize; j++)
			if (map[i * pagesize + j] != ((i % 4 == 0 && j == 7) ? 'z' : 0)) {
				err = "content wrong after unmerging zero pages";
				break;
			}
out:
	munmap(map, n * pagesize);
	ksm_write("use_zero_pages", "0");
	ksft_test_result(!err, "use_zero_pages: merge, write fault, unmerge%s%s\n",
			 err ? ": " : "", err ? err : "");
}

/* A field of /proc/self/ksm_stat, or LONG_MIN. */
static long self_ksm_stat(const char *field)
{
	char buf[1024], *p;

	if (read_file("/proc/self/ksm_stat", buf, sizeof(buf)) <= 0)
		return LONG_MIN;
	p = strstr(buf, field);
	return p ? strtol(p + strlen(field), NULL, 10) : LONG_MIN;
}

/*
 * The ksm_zero_pages of this process from /proc/self/ksm_stat, signed
 * (vm_util's ksm_get_self_zero_pages() would read -5 as 5).
 */
static long self_zero_pages(void)
{
	return self_ksm_stat("ksm_zero_pages ");
}

/* Waits (for an exiting child's teardown) until the global count is want. */
static bool global_zero_pages_is(long want)
{
	int i;

	for (i = 0; i < 100; i++) {
		if (ksm_read_long("ksm_zero_pages") == want)
			return true;
		usleep(50000);
	}
	ksft_print_msg("global ksm_zero_pages %ld, want %ld\n",
		       ksm_read_long("ksm_zero_pages"), want);
	return false;
}

/*
 * Forks; the child applies `advice` to map (unless 0), reports its own
 * ksm_zero_pages and exits. Returns what the child reported.
 */
static long fork_zero_pages(char *map, size_t len, int advice)
{
	long v = LONG_MIN;
	int fds[2], status;
	pid_t pid;

	if (pipe(fds))
		return LONG_MIN;
	pid = fork();
	if (pid < 0)
		return LONG_MIN;
	if (!pid) {
		if (advice && madvise(map, len, advice))
			_exit(1);
		v = self_zero_pages();
		_exit(write(fds[1], &v, sizeof(v)) != sizeof(v));
	}
	close(fds[1]);
	if (read(fds[0], &v, sizeof(v)) != sizeof(v))
		v = LONG_MIN;
	close(fds[0]);
	waitpid(pid, &status, 0);
	return v;
}

/*
 * KSM zero pages and fork(): a child's ksm_zero_pages counts the KSM zero
 * pages it maps, and the global count is back where it was once the child
 * is gone. Before "mm: ksm: count the KSM zero pages that fork() copies",
 * fork() gave the child the parent's count as of its start: areas fork()
 * does not copy (MADV_DONTFORK, MADV_WIPEONFORK) were counted, zero pages
 * that ksmd placed while fork() waited for the parent's mmap lock were not,
 * and the global count drifted by the difference at every fork.
 */
static void test_zero_pages_fork(void)
{
	static const struct {
		int advice, undo;
		const char *name;
	} areas[] = {
		{ 0, 0, "copied" },
		{ MADV_DONTFORK, MADV_DOFORK, "MADV_DONTFORK" },
		{ MADV_WIPEONFORK, MADV_KEEPONFORK, "MADV_WIPEONFORK" },
	};
	const size_t n = 256, len = n * pagesize;
	long global0, want, v, old_zero;
	unsigned int i, forks = 0;
	const char *err = NULL;
	char old[32];
	time_t deadline;
	char *map;

	old_zero = ksm_read_long("use_zero_pages");
	if (ksm_write("use_zero_pages", "1")) {
		for (i = 0; i < ARRAY_SIZE(areas) + 1; i++)
			ksft_test_result_skip("KSM zero pages and fork: no use_zero_pages\n");
		return;
	}
	global0 = ksm_read_long("ksm_zero_pages");
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	madvise(map, len, MADV_NOHUGEPAGE);
	for (i = 0; i < n; i++) {
		map[i * pagesize] = 1;
		map[i * pagesize] = 0;
	}
	ksm_write_or_die("run", "1");
	if (madvise(map, len, MADV_MERGEABLE))
		ksft_exit_fail_msg("MADV_MERGEABLE failed\n");
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && self_zero_pages() < (long)n; i++)
		usleep(100000);
	/* Frozen: ksmd places no zero page while these forks run. */
	ksm_write_or_die("run", "0");
	if (self_zero_pages() != (long)n) {
		ksft_print_msg("ksm_zero_pages %ld, want %zu\n", self_zero_pages(), n);
		for (i = 0; i < ARRAY_SIZE(areas) + 1; i++)
			ksft_test_result_fail("KSM zero pages and fork: pages were not merged\n");
		goto out;
	}

	for (i = 0; i < ARRAY_SIZE(areas); i++) {
		if (areas[i].advice && madvise(map, len, areas[i].advice))
			ksft_exit_fail_msg("madvise %s failed\n", areas[i].name);
		want = areas[i].advice ? 0 : (long)n;
		v = fork_zero_pages(map, len, 0);
		if (v != want)
			ksft_print_msg("%s: the child's ksm_zero_pages is %ld, want %ld\n",
				       areas[i].name, v, want);
		ksft_test_result(v == want && global_zero_pages_is(global0 + (long)n),
				 "KSM zero pages and fork, %s area: counts exact\n",
				 areas[i].name);
		if (areas[i].undo)
			madvise(map, len, areas[i].undo);
	}

	/*
	 * The race: ksmd merges zero pages again while children are forked.
	 * Each child unmerges at once: its count must then be exactly 0.
	 */
	ksm_write_or_die("run", "1");
	deadline = time(NULL) + 10;
	for (i = 0; !err && forks < 400 && time(NULL) < deadline; forks++) {
		unsigned int k;

		/* Write faults: ksmd merges these pages again at its next pass. */
		for (k = 0; k < 32; k++, i = (i + 1) % n)
			__atomic_store_n(map + i * pagesize, 0, __ATOMIC_RELAXED);
		v = fork_zero_pages(map, len, MADV_UNMERGEABLE);
		if (v != 0) {
			ksft_print_msg("fork %u: child's ksm_zero_pages %ld after unmerging\n",
				       forks, v);
			err = "a child's count is wrong";
		}
	}
	if (madvise(map, len, MADV_UNMERGEABLE))
		err = err ? err : "MADV_UNMERGEABLE failed";
	else if (self_zero_pages() != 0)
		err = err ? err : "ksm_zero_pages not 0 after MADV_UNMERGEABLE";
	munmap(map, len);
	if (!global_zero_pages_is(global0))
		err = err ? err : "the global count drifted";
	ksft_test_result(!err, "KSM zero pages and %u forks racing ksmd: counts exact%s%s\n",
			 forks, err ? ": " : "", err ? err : "");
	map = NULL;
out:
	if (map)
		munmap(map, len);
	snprintf(old, sizeof(old), "%ld", old_zero);
	ksm_write("use_zero_pages", old);
}

/*
 * Pairs of page contents whose checksums collide, for each function an
 * implementation may checksum pages with. KSM sums every page it scans to
 * skip pages that change, and an implementation may order its trees by that
 * checksum first. Both pages of a pair hold a 64-bit counter at offset 0,
 * the rest zero but where said.
 *  - xxhash, as mm/ksm.c's calc_checksum() (seed 0, truncated to 32 bits;
 *    xxh64 on 64-bit kernels): the counters 56775 and 78957, found by
 *    summing the counters 1, 2, 3, ... until two collided (0x9cfd10ae). 4 KiB
 *    pages of 64-bit kernels only.
 *  - crc32c (seed ~0, no final inversion, as crc32c() computes it): the
 *    counters 1 and 2, the second page's last 4 bytes chosen to give it the
 *    CRC of the first. A CRC is linear: this works for any page size.
 */
#define COLLIDE_COPIES 4
#define CRC32C_POLY 0x82f63b78u

/* crc32c: the second page's last 4 bytes make the pair collide; else xxhash. */
struct collision {
	const char *name;
	unsigned long long a, b;
	bool crc32c;
};

static const struct collision collisions[] = {
	{ "xxhash", 56775, 78957, false },
	{ "crc32c", 1, 2, true },
};

static unsigned int crc32c_update(unsigned int crc, const unsigned char *p, size_t len)
{
	int k;

	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ CRC32C_POLY : crc >> 1;
	}
	return crc;
}

/*
 * Sets the last 4 bytes of page p so that its crc32c is want. Those bytes
 * are XORed into the CRC register, which then shifts 32 times: undo the
 * shifts from want, and XOR with the register before them.
 */
static void crc32c_force(unsigned char *p, unsigned int want)
{
	unsigned int x = want, s = crc32c_update(~0u, p, pagesize - 4);
	int k;

	for (k = 0; k < 32; k++)
		x = x & 0x80000000u ? ((x ^ CRC32C_POLY) << 1) | 1 : x << 1;
	x ^= s;
	for (k = 0; k < 4; k++)
		p[pagesize - 4 + k] = x >> (8 * k);
}

/* Builds the two contents of pair c in pages[0] and pages[1]. */
static void collide_pages(const struct collision *c, unsigned char *pages)
{
	memset(pages, 0, 2 * pagesize);
	memcpy(pages, &c->a, sizeof(c->a));
	memcpy(pages + pagesize, &c->b, sizeof(c->b));
	if (c->crc32c)
		crc32c_force(pages + pagesize, crc32c_update(~0u, pages, pagesize));
}

/*
 * Copies of both contents merge with their own kind only: first all at
 * once (the unstable tree holds equal checksums of different bytes), then
 * the second kind after the first is already a KSM page (a search of the
 * stable tree meets a page of the same checksum and other bytes first).
 */
static void test_checksum_collision(const struct collision *c)
{
	const size_t n = COLLIDE_COPIES;
	const char *err = NULL;
	unsigned char *a = MAP_FAILED, *b = MAP_FAILED, *want;
	long chains0;
	size_t i;

	if (!c->crc32c && (pagesize != 4096 || sizeof(long) != 8)) {
		ksft_test_result_skip("%s collision: both kinds at once: not 4K, 64-bit\n",
				      c->name);
		ksft_test_result_skip("%s collision: one kind after the other: ditto\n",
				      c->name);
		return;
	}
	want = malloc(2 * pagesize);
	if (!want)
		ksft_exit_fail_msg("out of memory\n");
	collide_pages(c, want);
	if (!memcmp(want, want + pagesize, pagesize) ||
	    (c->crc32c && crc32c_update(~0u, want, pagesize) !=
			  crc32c_update(~0u, want + pagesize, pagesize)))
		ksft_exit_fail_msg("%s collision: no pair of different pages built\n", c->name);
	/* Pages of different contents must never share a chain either. */
	chains0 = ksm_read_long("stable_node_chains");
	a = mmap(NULL, 2 * n * pagesize, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, n * pagesize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	ksm_write_or_die("run", "1");

	/* Both kinds, interleaved, in one area. */
	for (i = 0; i < 2 * n; i++)
		memcpy(a + i * pagesize, want + i % 2 * pagesize, pagesize);
	if (madvise(a, 2 * n * pagesize, MADV_MERGEABLE))
		err = "MADV_MERGEABLE failed";
	else if (!wait_merged(2 * n))
		err = "colliding pages were not all merged";
	for (i = 0; i < 2 * n && !err; i++)
		if (memcmp(a + i * pagesize, want + i % 2 * pagesize, pagesize))
			err = "content wrong after merging colliding pages";
	if (!err && ksm_read_long("stable_node_chains") != chains0)
		err = "colliding pages were chained";
	ksft_test_result(!err, "%s collision: both kinds at once%s%s\n", c->name,
			 err ? ": " : "", err ? err : "");

	/* The first kind alone, merged; then the second. */
	err = NULL;
	if (madvise(a, 2 * n * pagesize, MADV_UNMERGEABLE) || !wait_unmerged()) {
		err = "unmerging failed";
		goto out;
	}
	for (i = 0; i < 2 * n; i++)
		memcpy(a + i * pagesize, want, pagesize);
	for (i = 0; i < n; i++)
		memcpy(b + i * pagesize, want + pagesize, pagesize);
	if (madvise(a, 2 * n * pagesize, MADV_MERGEABLE) || !wait_merged(2 * n)) {
		err = "the first kind was not merged";
		goto out;
	}
	if (madvise(b, n * pagesize, MADV_MERGEABLE) || !wait_merged(3 * n)) {
		err = "the second kind did not merge next to the first";
		goto out;
	}
	for (i = 0; i < 2 * n && !err; i++)
		if (memcmp(a + i * pagesize, want, pagesize))
			err = "first kind wrong after merging the second";
	for (i = 0; i < n && !err; i++)
		if (memcmp(b + i * pagesize, want + pagesize, pagesize))
			err = "second kind wrong after merging";
	if (!err && ksm_read_long("stable_node_chains") != chains0)
		err = "colliding pages were chained";
out:
	madvise(a, 2 * n * pagesize, MADV_UNMERGEABLE);
	madvise(b, n * pagesize, MADV_UNMERGEABLE);
	munmap(a, 2 * n * pagesize);
	munmap(b, n * pagesize);
	free(want);
	ksft_test_result(!err, "%s collision: one kind after the other%s%s\n", c->name,
			 err ? ": " : "", err ? err : "");
}

#ifdef __aarch64__
#ifndef HWCAP2_MTE
#define HWCAP2_MTE (1 << 18)
#endif
#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif
#define MTE_GRANULE 16
#define MTE_PAGES 4

/* The pointer p with logical tag t in its top byte (bits 56-59). */
static char *mte_tagged(char *p, unsigned int t)
{
	return (char *)(((uintptr_t)p & ~(0xfUL << 56)) | ((uintptr_t)t << 56));
}

/*
 * Sets the allocation tag of p's granule to p's logical tag. The .arch
 * directive lets the assembler take MTE instructions without building the
 * whole file for armv8.5-a.
 */
static void mte_set_tag(char *p)
{
	asm volatile(".arch armv8.5-a+memtag\n\tstg %0, [%0]" : : "r"(p) : "memory");
}

/* The allocation tag of p's granule. */
static unsigned int mte_get_tag(char *p)
{
	asm volatile(".arch armv8.5-a+memtag\n\tldg %0, [%0]" : "+r"(p) : : "memory");
	return ((uintptr_t)p >> 56) & 0xf;
}

static unsigned int mte_want_tag(size_t granule)
{
	return 1 + granule % 15;
}

static sigjmp_buf mte_fault_jmp;

static void on_mte_fault(int sig)
{
	siglongjmp(mte_fault_jmp, 1);
}

/* Whether n bytes at tagged pointer p read as zeroes, tag-checked. */
static bool mte_zeroes(const char *p, size_t n)
{
	struct sigaction sa = { .sa_handler = on_mte_fault }, old;
	bool zero = true;
	size_t b;

	sigaction(SIGSEGV, &sa, &old);
	if (sigsetjmp(mte_fault_jmp, 1)) {
		sigaction(SIGSEGV, &old, NULL);
		ksft_print_msg("tag check fault at %p\n", p);
		return false;
	}
	for (b = 0; b < n; b++)
		zero &= !__atomic_load_n(p + b, __ATOMIC_RELAXED);
	sigaction(SIGSEGV, &old, NULL);
	return zero;
}

/*
 * One round of test_mte(): n PROT_MTE pages of zeroes, all with the same
 * non-zero tags, beside n untagged pages of zeroes that show ksmd ran.
 */
static const char *mte_round(int zero_pages)
{
	const size_t n = MTE_PAGES, granules = pagesize / MTE_GRANULE;
	long want_merging, want_zero, merging0, zero0;
	unsigned long pfn[MTE_PAGES], ctl_pfn;
	const char *err = NULL;
	char *mte, *ctl, old_zp[32] = "0";
	size_t i, g;
	long start;
	int fd;

	mte = mmap(NULL, n * pagesize, PROT_READ | PROT_WRITE | PROT_MTE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ctl = mmap(NULL, n * pagesize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (mte == MAP_FAILED || ctl == MAP_FAILED || fd < 0)
		ksft_exit_fail_msg("mmap of PROT_MTE memory or pagemap failed: %s\n",
				   strerror(errno));
	/* STG is a store: it faults in a private page of zeroes and tags it. */
	for (i = 0; i < n; i++)
		for (g = 0; g < granules; g++)
			mte_set_tag(mte_tagged(mte + i * pagesize + g * MTE_GRANULE,
					       mte_want_tag(g)));
	for (i = 0; i < n; i++) {
		ctl[i * pagesize] = 1;
		ctl[i * pagesize] = 0;
	}
	ksm_read("use_zero_pages", old_zp, sizeof(old_zp));
	ksm_write_or_die("use_zero_pages", zero_pages ? "1" : "0");
	merging0 = ksm_get_self_merging_pages();
	zero0 = self_zero_pages();
	want_merging = merging0 + (zero_pages ? 0 : (long)n);
	want_zero = zero0 + (zero_pages ? (long)n : 0);
	ksm_write_or_die("run", "1");
	if (madvise(mte, n * pagesize, MADV_MERGEABLE) ||
	    madvise(ctl, n * pagesize, MADV_MERGEABLE)) {
		err = "MADV_MERGEABLE failed";
		goto out;
	}
	/* The untagged pages merge; then two more full scans for the others. */
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10; i++) {
		if (zero_pages ? self_zero_pages() >= want_zero :
				 ksm_get_self_merging_pages() >= want_merging)
			break;
		usleep(100000);
	}
	start = ksm_get_full_scans();
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && ksm_get_full_scans() < start + 2; i++)
		usleep(100000);
	if (self_zero_pages() != want_zero || ksm_get_self_merging_pages() != want_merging) {
		ksft_print_msg("ksm_zero_pages %ld, ksm_merging_pages %ld, want %ld and %ld\n",
			       self_zero_pages(), ksm_get_self_merging_pages(),
			       want_zero, want_merging);
		err = "the untagged pages alone should have merged";
		goto out;
	}
	/*
	 * Not a vacuous pass: ksmd keeps an rmap_item for each tagged page it
	 * scanned (not for a page it replaced by the zero page).
	 */
	if (self_ksm_stat("ksm_rmap_items ") < (long)n) {
		ksft_print_msg("ksm_rmap_items %ld, want at least %zu\n",
			       self_ksm_stat("ksm_rmap_items "), n);
		err = "ksmd did not scan the tagged pages";
		goto out;
	}
	ctl_pfn = pagemap_get_pfn(fd, ctl);
	for (i = 0; i < n; i++) {
		pfn[i] = pagemap_get_pfn(fd, mte + i * pagesize);
		if (pfn[i] == -1UL || pfn[i] == ctl_pfn || (i && pfn[i] == pfn[i - 1])) {
			ksft_print_msg("page %zu: pfn %#lx, previous %#lx, untagged %#lx\n",
				       i, pfn[i], i ? pfn[i - 1] : 0, ctl_pfn);
			err = "a tagged page was merged";
			goto out;
		}
	}
	for (i = 0; i < n; i++)
		for (g = 0; g < granules; g++) {
			char *p = mte + i * pagesize + g * MTE_GRANULE;

			if (mte_get_tag(p) != mte_want_tag(g)) {
				ksft_print_msg("page %zu granule %zu: tag %u, want %u\n",
					       i, g, mte_get_tag(p), mte_want_tag(g));
				err = "tags lost";
				goto out;
			}
			/* Tag-checked loads (PR_MTE_TCF_SYNC). */
			if (!mte_zeroes(mte_tagged(p, mte_want_tag(g)), MTE_GRANULE)) {
				err = "content of a tagged page changed";
				goto out;
			}
		}
out:
	munmap(mte, n * pagesize);
	munmap(ctl, n * pagesize);
	close(fd);
	ksm_write("use_zero_pages", old_zp);
	return err;
}
#endif

/*
 * MTE (arm64): a page of zeroes whose tags are not zero is never merged,
 * neither with the zero page (use_zero_pages=1) nor with a page of the same
 * bytes and tags (use_zero_pages=0), and keeps its tags: a shared page
 * would carry other tags, or lose them. mm/ksm.c relies on arm64's
 * memcmp_pages(), which refuses tagged pages.
 */
static void test_mte(void)
{
	int zp;

#ifdef __aarch64__
	const char *err;

	if (!(getauxval(AT_HWCAP2) & HWCAP2_MTE)) {
		for (zp = 0; zp < 2; zp++)
			ksft_test_result_skip("MTE-tagged zero pages, use_zero_pages=%d: no MTE\n",
					      zp);
		return;
	}
	if (prctl(PR_SET_TAGGED_ADDR_CTRL, PR_TAGGED_ADDR_ENABLE | PR_MTE_TCF_SYNC |
		  (0xfffeUL << PR_MTE_TAG_SHIFT), 0, 0, 0))
		ksft_exit_fail_msg("PR_SET_TAGGED_ADDR_CTRL: %s\n", strerror(errno));
	for (zp = 0; zp < 2; zp++) {
		err = mte_round(zp);
		ksft_test_result(!err,
				 "MTE-tagged zero pages, use_zero_pages=%d: not merged, tags kept%s%s\n",
				 zp, err ? ": " : "", err ? err : "");
	}
	prctl(PR_SET_TAGGED_ADDR_CTRL, 0, 0, 0, 0);
#else
	for (zp = 0; zp < 2; zp++)
		ksft_test_result_skip("MTE-tagged zero pages, use_zero_pages=%d: not arm64\n", zp);
#endif
}

/*
 * Maps n real pages (not the shared zero page) that hold zeroes and lets
 * ksmd replace them by KSM zero pages (use_zero_pages is on); then stops
 * ksmd, so that no KSM zero page is placed or removed but by the caller.
 * Returns the area; *err is set if the pages were not merged.
 */
static char *ksm_zero_area(size_t n, const char **err)
{
	size_t i, len = n * pagesize;
	char *map;

	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	for (i = 0; i < n; i++) {
		map[i * pagesize] = 1;
		map[i * pagesize] = 0;
	}
	ksm_write_or_die("run", "1");
	if (madvise(map, len, MADV_MERGEABLE)) {
		*err = "MADV_MERGEABLE failed";
		return map;
	}
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && self_zero_pages() < (long)n; i++)
		usleep(100000);
	if (self_zero_pages() != (long)n)
		*err = "empty pages were not merged with the zero page";
	ksm_write_or_die("run", "0");
	return map;
}

/*
 * After the caller replaced the n KSM zero pages of this process, which
 * now read from map: both counts dropped by n and the pages read as zeroes.
 */
static const char *zero_pages_uncounted(const char *map, size_t n, long global_before)
{
	size_t i;

	if (self_zero_pages() != 0) {
		ksft_print_msg("ksm_zero_pages of this process %ld\n", self_zero_pages());
		return "ksm_zero_pages still counts them";
	}
	if (!global_zero_pages_is(global_before - (long)n))
		return "the global ksm_zero_pages still counts them";
	for (i = 0; i < n * pagesize; i++)
		if (map[i])
			return "they are not zero";
	return NULL;
}

/* A userfaultfd that can move pages (UFFDIO_MOVE); -1 if the kernel has none. */
static int uffd_move_open(void)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MOVE };
	int uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (uffd < 0)
		return -1;
	if (ioctl(uffd, UFFDIO_API, &api) || !(api.features & UFFD_FEATURE_MOVE)) {
		close(uffd);
		return -1;
	}
	return uffd;
}

/*
 * UFFDIO_MOVE of KSM zero pages: at their destination they are plain zero
 * pages, no longer placed by KSM, so the ksm_zero_pages of this process and
 * the global one drop by their number. Before "mm/userfaultfd: uncount the
 * KSM zero pages that UFFDIO_MOVE moves", move_zeropage_pte() cleared the
 * KSM zero PTEs without uncounting them, and both counts stayed up for good.
 */
static void test_zero_pages_uffd_move(void)
{
	const size_t n = 32, len = n * pagesize;
	struct uffdio_move move;
	const char *err = NULL;
	long old_zero, global;
	char old[32], *src, *dst;
	int uffd;

	uffd = uffd_move_open();
	if (uffd < 0) {
		ksft_test_result_skip("UFFDIO_MOVE of KSM zero pages: no UFFD_FEATURE_MOVE\n");
		return;
	}
	old_zero = ksm_read_long("use_zero_pages");
	if (ksm_write("use_zero_pages", "1")) {
		close(uffd);
		ksft_test_result_skip("UFFDIO_MOVE of KSM zero pages: no use_zero_pages\n");
		return;
	}
	dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	src = ksm_zero_area(n, &err);
	global = ksm_read_long("ksm_zero_pages");
	if (err)
		goto out;
	if (uffd_register(uffd, dst, len, true, false, false)) {
		err = "UFFDIO_REGISTER failed";
		goto out;
	}
	move = (struct uffdio_move){ .dst = (unsigned long)dst, .src = (unsigned long)src,
				     .len = len };
	if (ioctl(uffd, UFFDIO_MOVE, &move) || move.move != (long long)len)
		err = "UFFDIO_MOVE failed";
	else
		err = zero_pages_uncounted(dst, n, global);
out:
	close(uffd);
	munmap(src, len);
	munmap(dst, len);
	snprintf(old, sizeof(old), "%ld", old_zero);
	ksm_write("use_zero_pages", old);
	ksft_test_result(!err, "UFFDIO_MOVE of KSM zero pages uncounts them%s%s\n",
			 err ? ": " : "", err ? err : "");
}

/*
 * ksmd finds a page at an address with the mmap lock held, drops the lock
 * to search the trees, and takes it again to merge. UFFDIO_MOVE moves an
 * exclusive anonymous page within its area with neither the mmap write lock
 * nor anything ksmd holds in that window. Before "mm/ksm: merge a page only
 * at the address its rmap_item records", ksmd merged the page where the move
 * had put it but recorded the address where it had found it: rmap_walk_ksm()
 * looked there and missed the mapping, so the KSM page could not migrate
 * (nor be reclaimed or unmapped on memory failure) until ksmd scanned the
 * page again.
 *
 * Page P, of the same content as a KSM page K, moves between the first and
 * a middle page of an area of unique pages until the merge makes the move
 * fail (-EBUSY); ksmd is stopped at once, before it scans the page again
 * (the fillers between the two places, scanned in small batches, hold it
 * off), and K must then migrate to the other NUMA node. KSM pages that
 * differ from P in their last byte only make ksmd's search for P, the
 * window, long. The race is not hit every round: up to MOVE_ROUNDS rounds,
 * stopping at the first failure; after MOVE_FAST moves in a round, P moves
 * slowly, so that an implementation that refuses to merge a moving page
 * merges it soon.
 */
#define MOVE_FILL 512
#define MOVE_NEAR 32
#define MOVE_ROUNDS 48
#define MOVE_FAST 20000
#define MPOL_MF_MOVE_ALL_ (1 << 2)
#define KPF_KSM_ 21

static int page_node(char *p)
{
	void *pages[1] = { p };
	int status = -1;

	if (syscall(__NR_move_pages, 0, 1, pages, NULL, &status, 0))
		return -1;
	return status;
}

/* Migrates the page at p to the other of nodes 0 and 1; whether it got there. */
static bool page_migrates(char *p)
{
	int i, from = page_node(p), to = !from, status = 0;
	void *pages[1] = { p };
	long ret = 0;

	if (from < 0 || from > 1) {
		ksft_print_msg("page on node %d\n", from);
		return false;
	}
	for (i = 0; i < 5; i++) {
		/* MPOL_MF_MOVE_ALL: a KSM page is mapped more than once. */
		ret = syscall(__NR_move_pages, 0, 1, pages, &to, &status, MPOL_MF_MOVE_ALL_);
		if (page_node(p) == to)
			return true;
		usleep(20000);
	}
	ksft_print_msg("page stays on node %d: move_pages %ld (%s), status %d\n", page_node(p),
		       ret, ret < 0 ? strerror(errno) : "ok", status);
	return false;
}

/* Whether the page mapped at p is a KSM page (/proc/kpageflags). */
static bool page_is_ksm(char *p)
{
	int pm = open("/proc/self/pagemap", O_RDONLY), kf = open("/proc/kpageflags", O_RDONLY);
	uint64_t flags = 0;
	unsigned long pfn;
	bool ksm = false;

	if (pm >= 0 && kf >= 0) {
		pfn = pagemap_get_pfn(pm, p);
		ksm = pfn != -1UL && !pageflags_get(pfn, kf, &flags) && (flags >> KPF_KSM_ & 1);
	}
	if (pm >= 0)
		close(pm);
	if (kf >= 0)
		close(kf);
	return ksm;
}

static int uffd_move(int uffd, char *dst, char *src)
{
	struct uffdio_move move = { .dst = (unsigned long)dst, .src = (unsigned long)src,
				    .len = pagesize };

	return ioctl(uffd, UFFDIO_MOVE, &move) ? errno : 0;
}

static void test_merge_racing_uffd_move(void)
{
	const size_t n = MOVE_FILL * 2 + 2, len = n * pagesize, nk = 2 + 2 * MOVE_NEAR;
	char *map, *k, *pos, *other, old_scan[32], old_smart[32];
	unsigned int round, moves = 0, merged = 0;
	const char *err = NULL;
	struct timespec t0, t;
	size_t i;
	int uffd;

	if (access("/sys/devices/system/node/node1", F_OK)) {
		ksft_test_result_skip("merge racing UFFDIO_MOVE: need 2 NUMA nodes\n");
		return;
	}
	uffd = uffd_move_open();
	if (uffd < 0) {
		ksft_test_result_skip("merge racing UFFDIO_MOVE: no UFFD_FEATURE_MOVE\n");
		return;
	}
	/* K must be able to merge with P on either node. */
	if (ksm_read_long("merge_across_nodes") != 1) {
		close(uffd);
		ksft_test_result_skip("merge racing UFFDIO_MOVE: merge_across_nodes is 0\n");
		return;
	}
	k = mmap(NULL, nk * pagesize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (k == MAP_FAILED || map == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	/* Small pages only: a THP would fill the empty page, and moves split THPs. */
	if ((madvise(map, len, MADV_NOHUGEPAGE) || madvise(k, nk * pagesize, MADV_NOHUGEPAGE)) &&
	    errno != EINVAL)
		ksft_exit_fail_msg("MADV_NOHUGEPAGE failed\n");
	ksm_read("pages_to_scan", old_scan, sizeof(old_scan));
	ksm_read("smart_scan", old_smart, sizeof(old_smart));
	/*
	 * Everything is populated before the area is registered: a missing
	 * fault there would wait for a userfaultfd reader nobody runs. P at
	 * page 0, unique fillers, page MOVE_FILL + 1 left empty for P.
	 */
	fill(map, 0, 0x5a);
	for (i = 1; i < n; i++) {
		if (i == MOVE_FILL + 1)
			continue;
		fill(map, i, 0);
		*(unsigned long *)(map + i * pagesize) = 0x4b534d00UL + i;
	}
	/* Where the nodes cannot trade pages, a failed migration would prove nothing. */
	if (!page_migrates(map + pagesize)) {
		close(uffd);
		munmap(map, len);
		munmap(k, nk * pagesize);
		ksft_test_result_skip("merge racing UFFDIO_MOVE: no migration between nodes\n");
		return;
	}
	/* K: two pages of P's content, and pairs of near copies, merged first. */
	for (i = 0; i < nk; i++) {
		fill(k, i, 0x5a);
		if (i >= 2)
			k[(i + 1) * pagesize - 1] = (char)(i / 2);
	}
	ksm_write_or_die("run", "1");
	if (madvise(k, nk * pagesize, MADV_MERGEABLE) || !wait_merged(nk)) {
		err = "K and its near copies did not merge";
		goto out;
	}
	ksm_write_or_die("run", "0");
	if (uffd_register(uffd, map, len, true, false, false)) {
		err = "UFFDIO_REGISTER failed";
		goto out;
	}
	/*
	 * Small batches: ksmd stops soon after it is told to. No smart scan:
	 * it would skip the fillers, which then no longer hold ksmd off.
	 */
	ksm_write_or_die("pages_to_scan", "8");
	if (old_smart[0])
		ksm_write_or_die("smart_scan", "0");
	pos = map;
	other = map + (MOVE_FILL + 1) * pagesize;
	for (round = 0; round < MOVE_ROUNDS && !err; round++) {
		if (madvise(map, len, MADV_MERGEABLE)) {
			err = "MADV_MERGEABLE failed";
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		ksm_write_or_die("run", "1");
		for (i = 0;; i++) {
			int e = uffd_move(uffd, other, pos);

			if (!e) {
				char *tmp = pos;

				pos = other;
				other = tmp;
				moves++;
			} else if (e == EBUSY) {
				/* Merged (or at least no longer exclusive). */
				break;
			} else if (e != EAGAIN) {
				ksft_print_msg("UFFDIO_MOVE: %s\n", strerror(e));
				err = "UFFDIO_MOVE failed";
				break;
			}
			if (i >= MOVE_FAST)
				usleep(200);
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec > MERGE_TIMEOUT_SEC) {
				err = "the moving page was not merged";
				break;
			}
		}
		ksm_write_or_die("run", "0");
		/* -EBUSY also when a merge failed after write protection. */
		if (!err && page_is_ksm(pos))
			merged++;
		if (!err && !page_migrates(pos))
			err = "the merged page does not migrate: KSM recorded another address";
		if (!err && (pos[0] != 0x5a || pos[pagesize - 1] != 0x5a))
			err = "the page lost its content";
		/* P becomes a private page again, for the next round. */
		if (madvise(map, len, MADV_UNMERGEABLE) && !err)
			err = "MADV_UNMERGEABLE failed";
	}
	ksft_print_msg("%u rounds, %u merged, %u moves\n", round, merged, moves);
	if (!err && !merged)
		err = "the moving page was never merged";
out:
	ksm_write("pages_to_scan", old_scan);
	if (old_smart[0])
		ksm_write("smart_scan", old_smart);
	close(uffd);
	munmap(map, len);
	munmap(k, nk * pagesize);
	/* Drop the rmap_items now, with the counts of this mm the next tests start from. */
	ksm_write_or_die("run", "2");
	ksm_write_or_die("run", "0");
	ksft_test_result(!err, "merge racing UFFDIO_MOVE: the KSM page migrates%s%s\n",
			 err ? ": " : "", err ? err : "");
}

/*
 * Migration of KSM zero pages to device memory (migrate_vma, driven by the
 * HMM test driver, lib/test_hmm.c): device pages replace them, so the
 * ksm_zero_pages of this process and the global one drop by their number.
 * Before "mm/migrate_device: uncount the KSM zero pages that migrate_vma
 * replaces", migrate_vma_insert_page() cleared the KSM zero PTEs without
 * uncounting them. Skipped without /dev/hmm_dmirror0 (CONFIG_TEST_HMM).
 * Reading the pages at the end faults them back from the device.
 */
static void test_zero_pages_migrate_vma(void)
{
	const size_t n = 32, len = n * pagesize;
	struct hmm_dmirror_cmd cmd;
	const char *err = NULL;
	long old_zero, global;
	char old[32], *map, *mirror;
	int fd;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	if (fd < 0) {
		ksft_test_result_skip("migrate_vma of KSM zero pages: no /dev/hmm_dmirror0\n");
		return;
	}
	old_zero = ksm_read_long("use_zero_pages");
	if (ksm_write("use_zero_pages", "1")) {
		close(fd);
		ksft_test_result_skip("migrate_vma of KSM zero pages: no use_zero_pages\n");
		return;
	}
	mirror = malloc(len);
	if (!mirror)
		ksft_exit_fail_msg("out of memory\n");
	/* ksmd is stopped: it must not see the area while its pages are on the device. */
	map = ksm_zero_area(n, &err);
	global = ksm_read_long("ksm_zero_pages");
	if (err)
		goto out;
	cmd = (struct hmm_dmirror_cmd){ .addr = (unsigned long)map,
					.ptr = (unsigned long)mirror, .npages = n };
	if (ioctl(fd, HMM_DMIRROR_MIGRATE_TO_DEV, &cmd) || cmd.cpages != n) {
		ksft_print_msg("migrated %llu of %zu pages\n", (unsigned long long)cmd.cpages, n);
		err = "HMM_DMIRROR_MIGRATE_TO_DEV failed";
	} else {
		err = zero_pages_uncounted(map, n, global);
	}
out:
	close(fd);
	munmap(map, len);
	free(mirror);
	snprintf(old, sizeof(old), "%ld", old_zero);
	ksm_write("use_zero_pages", old);
	ksft_test_result(!err, "migrate_vma of KSM zero pages uncounts them%s%s\n",
			 err ? ": " : "", err ? err : "");
}

/* While KSM pages exist, max_page_sharing and merge_across_nodes are -EBUSY. */
static void test_ebusy(void)
{
	static const char * const knobs[] = { "max_page_sharing", "merge_across_nodes" };
	char *map;
	size_t i;

	map = mmap(NULL, NR_PAGES * pagesize, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	for (i = 0; i < NR_PAGES; i++)
		fill(map, i, pattern(i, 0));
	ksm_write_or_die("run", "1");
	if (madvise(map, NR_PAGES * pagesize, MADV_MERGEABLE) || !wait_merged(NR_PAGES))
		ksft_exit_fail_msg("cannot create KSM pages\n");
	for (i = 0; i < ARRAY_SIZE(knobs); i++) {
		long old;
		char val[32];
		int err;

		if (!ksm_file_exists(knobs[i])) {
			ksft_test_result_skip("%s busy while shared: not provided\n", knobs[i]);
			continue;
		}
		old = ksm_read_long(knobs[i]);
		snprintf(val, sizeof(val), "%ld", i == 0 ? old + 1 : !old);
		err = ksm_write(knobs[i], val);
		ksft_test_result(err == EBUSY && ksm_read_long(knobs[i]) == old,
				 "%s busy while KSM pages exist (%s)\n", knobs[i],
				 err ? strerror(err) : "accepted");
	}
	munmap(map, NR_PAGES * pagesize);
}

/*
 * A huge, almost empty mergeable area: ksmd and MADV_UNMERGEABLE must skip
 * the page tables that were never populated instead of visiting every
 * address. 32 TiB are 8G pages: visited one by one, two full scans would take
 * hours, far beyond the timeout.
 */
#define SPARSE_SIZE (32UL << 40)

static void test_sparse_area(void)
{
	unsigned long pfn_first = 0, pfn_last = 0;
	char *map, *last;
	bool merged = false;
	long start;
	int fd, i;

	map = mmap(NULL, SPARSE_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (map == MAP_FAILED || fd < 0) {
		ksft_test_result_skip("sparse 32 TiB area: mmap or pagemap unavailable\n");
		ksft_test_result_skip("sparse 32 TiB area: unmerge\n");
		if (map != MAP_FAILED)
			munmap(map, SPARSE_SIZE);
		return;
	}
	/* Two identical pages at both ends, nothing in between. */
	last = map + SPARSE_SIZE - pagesize;
	memset(map, 0x5a, pagesize);
	memset(last, 0x5a, pagesize);
	ksm_write_or_die("run", "1");
	if (madvise(map, SPARSE_SIZE, MADV_MERGEABLE))
		ksft_exit_fail_msg("MADV_MERGEABLE on the sparse area failed\n");
	start = ksm_get_full_scans();
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && !merged; i++) {
		usleep(100000);
		if (ksm_get_full_scans() < start + 2)
			continue;
		pfn_first = pagemap_get_pfn(fd, map);
		pfn_last = pagemap_get_pfn(fd, last);
		merged = pfn_first && pfn_first == pfn_last;
	}
	ksft_test_result(merged,
			 "sparse 32 TiB area: scanned, both pages merged (full scans %ld -> %ld)\n",
			 start, ksm_get_full_scans());
	if (madvise(map, SPARSE_SIZE, MADV_UNMERGEABLE))
		ksft_test_result_fail("sparse 32 TiB area: MADV_UNMERGEABLE failed\n");
	else
		ksft_test_result(pagemap_get_pfn(fd, map) != pagemap_get_pfn(fd, last) &&
				 map[0] == 0x5a && last[0] == 0x5a,
				 "sparse 32 TiB area: unmerged, contents intact\n");
	close(fd);
	munmap(map, SPARSE_SIZE);
}

/* The ksm trace events, in the order include/trace/events/ksm.h defines them. */
static const char * const trace_events[] = {
	"ksm_start_scan", "ksm_stop_scan", "ksm_enter", "ksm_exit",
	"ksm_merge_one_page", "ksm_merge_with_ksm_page", "ksm_remove_ksm_page",
	"ksm_remove_rmap_item", "ksm_advisor",
};
#define NR_TRACE_EVENTS ARRAY_SIZE(trace_events)

static int tracing_read(const char *name, char *buf, size_t size)
{
	char path[128];

	snprintf(path, sizeof(path), TRACING "%s", name);
	if (!read_file(path, buf, size))
		return -1;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

/* Whether `mm` (as printed by %p) is one of the `n` mms recorded by ksm_enter. */
static bool entered(char mms[][32], unsigned int n, const char *mm)
{
	while (n--)
		if (!strcmp(mms[n], mm))
			return true;
	return false;
}

static int tracing_write(const char *name, const char *value)
{
	char path[128];

	snprintf(path, sizeof(path), TRACING "%s", name);
	return write_str(path, value) ? -1 : 0;
}

/*
 * A child merges pages (two patterns, and pages of zeroes with
 * use_zero_pages) and unmaps the two KSM pages; ksmd then drops their stale
 * stable nodes with their rmap items; the child exits. The scan-time advisor
 * runs meanwhile. Every ksm event must
 * fire, with plausible fields: the child's mm in ksm_enter and ksm_exit, a
 * successful merge of each kind, a nonzero pfn for a removed KSM page, and
 * scan sequence numbers that pair a start with a stop.
 */
static void test_trace_events(void)
{
	bool seen[NR_TRACE_EVENTS] = { false }, ok[NR_TRACE_EVENTS] = { false };
	char mms[16][32], mm[32], line[512], old_target[32], old_size[32], old_on[8];
	char ok_merge = 0;
	int merged[2], done[2], status = -1;
	bool mounted = false, hashed = true;
	unsigned int nr_mms = 0;
	const size_t n = 96;
	long start_seq = -1;
	unsigned int i;
	pid_t child;
	FILE *f;

	if (access(TRACING "events/ksm", F_OK))
		mounted = !mount("nodev", TRACING, "tracefs", 0, NULL);
	if (access(TRACING "events/ksm/enable", F_OK) ||
	    tracing_read("buffer_size_kb", old_size, sizeof(old_size)) ||
	    tracing_read("tracing_on", old_on, sizeof(old_on)) ||
	    tracing_write("buffer_size_kb", "4096") || tracing_write("trace", "") ||
	    tracing_write("events/ksm/enable", "1") || tracing_write("tracing_on", "1")) {
		for (i = 0; i < NR_TRACE_EVENTS; i++)
			ksft_test_result_skip("trace event %s: no tracefs\n", trace_events[i]);
		if (mounted)
			umount(TRACING);
		return;
	}
	ksm_write_or_die("use_zero_pages", "1");
	ksm_write_or_die("sleep_millisecs", "20");
	/* Aiming at the default 200 s per scan, the advisor would slow ksmd down. */
	snprintf(old_target, sizeof(old_target), "%ld", ksm_read_long("advisor_target_scan_time"));
	ksm_write_or_die("advisor_target_scan_time", "1");
	ksm_write_or_die("advisor_mode", "scan-time");
	ksm_write_or_die("run", "1");

	if (pipe(merged) || pipe(done))
		ksft_exit_fail_msg("pipe failed\n");
	child = fork();
	if (child < 0)
		ksft_exit_fail_msg("fork failed\n");
	if (!child) {
		char *map = mmap(NULL, n * pagesize, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		char c = 0;

		close(merged[0]);
		close(done[1]);
		if (map == MAP_FAILED)
			_exit(1);
		/* Thirds: zeroes (real pages), pattern 'a', pattern 'b'. */
		for (i = 0; i < n; i++) {
			fill(map, i, 1);
			fill(map, i, i < n / 3 ? 0 : i < 2 * n / 3 ? 'a' : 'b');
		}
		if (madvise(map, n * pagesize, MADV_MERGEABLE))
			_exit(2);
		if (wait_merged(2 * n / 3 - 2) && ksm_get_self_zero_pages() == (long)(n / 3))
			c = 1;
		/*
		 * Once ksmd is stopped, free the two KSM pages while their rmap
		 * items are listed: ksmd then finds their stable nodes stale and
		 * removes them with their items. The zeroes stay mergeable, so
		 * this mm stays registered until it exits.
		 */
		if (write(merged[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
			_exit(4);
		munmap(map + n / 3 * pagesize, (n - n / 3) * pagesize);
		if (write(merged[1], &c, 1) != 1 || read(done[0], &c, 1) < 0)
			_exit(4);
		_exit(0);
	}
	close(merged[1]);
	close(done[0]);
	if (read(merged[0], &ok_merge, 1) != 1 || !ok_merge)
		ksft_print_msg("child did not merge its pages\n");
	/*
	 * A page unmapped may stay allocated for a while, held by a CPU's
	 * folio batch: a KSM page that ksmd still finds is no stale node, and
	 * mm/ksm.c then drops its items without the remove events. So ksmd
	 * waits, and drop_caches drains the batches (lru_add_drain_all()),
	 * before it looks again.
	 */
	ksm_write_or_die("run", "0");
	if (write(done[1], &ok_merge, 1) != 1 || read(merged[0], &ok_merge, 1) != 1)
		ksft_print_msg("child did not unmap its KSM pages\n");
	write_str("/proc/sys/vm/drop_caches", "1");
	ksm_write_or_die("run", "1");
	/* ksmd drops the stale stable nodes when it passes the unmapped range. */
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && ksm_read_long("pages_shared"); i++)
		usleep(100000);
	close(done[1]);
	if (waitpid(child, &status, 0) != child || status != 0)
		ksft_print_msg("child failed (status %#x)\n", status);
	close(merged[0]);

	if (ksm_read_long("pages_shared"))
		ksft_print_msg("pages_shared still %ld\n", ksm_read_long("pages_shared"));
	tracing_write("events/ksm/enable", "0");
	ksm_write_or_die("advisor_mode", "none");
	ksm_write_or_die("advisor_target_scan_time", old_target);
	ksm_write_or_die("pages_to_scan", "2000");
	ksm_write_or_die("sleep_millisecs", "0");
	ksm_write_or_die("use_zero_pages", "0");

	f = fopen(TRACING "trace", "r");
	if (!f)
		ksft_exit_fail_msg("cannot read " TRACING "trace\n");
	while (fgets(line, sizeof(line), f)) {
		for (i = 0; i < NR_TRACE_EVENTS; i++) {
			char name[48], *p;
			long v;

			snprintf(name, sizeof(name), " %s: ", trace_events[i]);
			p = strstr(line, name);
			if (!p)
				continue;
			p += strlen(name);
			seen[i] = true;
			switch (i) {
			case 0: /* ksm_start_scan */
				if (sscanf(p, "seq %ld", &v) == 1)
					start_seq = v;
				ok[i] |= start_seq >= 0;
				break;
			case 1: /* ksm_stop_scan: pairs the last start */
				ok[i] |= sscanf(p, "seq %ld", &v) == 1 && v == start_seq;
				break;
			case 2: /* ksm_enter: record the mm (the child's among them) */
				if (sscanf(p, "mm %31s", mm) != 1)
					break;
				if (nr_mms < ARRAY_SIZE(mms))
					strcpy(mms[nr_mms++], mm);
				/* Before the CRNG is ready %p hides every pointer alike. */
				hashed &= !strstr(mm, "ptrval");
				ok[i] |= strcmp(mm, "0000000000000000") && strcmp(mm, "(null)");
				break;
			case 3: /* ksm_exit: an mm that entered */
				ok[i] |= sscanf(p, "mm %31s", mm) == 1 && entered(mms, nr_mms, mm);
				break;
			case 4: /* ksm_merge_one_page */
			case 5: /* ksm_merge_with_ksm_page */
				ok[i] |= strstr(p, "error 0\n") != NULL;
				break;
			case 6: /* ksm_remove_ksm_page */
				ok[i] |= sscanf(p, "pfn %ld", &v) == 1 && v > 0;
				break;
			case 7: /* ksm_remove_rmap_item: an item of an mm that entered */
				ok[i] |= sscanf(p, "pfn %ld rmap_item %*s mm %31s", &v, mm) == 2 &&
					 v > 0 && entered(mms, nr_mms, mm);
				break;
			case 8: /* ksm_advisor */
				ok[i] |= sscanf(p, "ksm scan time %ld", &v) == 1 && v > 0;
				break;
			}
		}
	}
	fclose(f);
	tracing_write("trace", "");
	tracing_write("tracing_on", old_on);
	tracing_write("buffer_size_kb", old_size);
	if (mounted)
		umount(TRACING);
	if (!hashed)
		ksft_print_msg("pointers are not hashed yet: mm checks are weak\n");
	for (i = 0; i < NR_TRACE_EVENTS; i++)
		ksft_test_result(ok[i], "trace event %s%s\n", trace_events[i],
				 !seen[i] ? ": not seen" : !ok[i] ? ": fields wrong" : "");
}

/*
 * "Mappers": this process and children that it commands through pipes map
 * areas of MAPPER_PAGES distinct pages, the same in each process, and check
 * them. Area gen is mapper_areas[gen] in every mapper.
 */
#define MAPPER_PAGES 64
/* Children at most. */
#define MAPPERS 3
#define MAPPER_AREAS 5
#define MEMORY_DIR "/sys/devices/system/memory/"
#define MPOL_DEFAULT_ 0
#define MPOL_BIND_ 2

struct mapper {
	pid_t pid;
	int cmd, reply;
};

static char *mapper_areas[MAPPER_AREAS];
static bool wait_self_merged(long pages);

/* The cgroup a mapper joins ('g') and the node its pages must be on ('n'). */
static const char *mapper_cgroup;
static int mapper_node;

static void mapper_fill(char *map, unsigned int gen)
{
	size_t i;

	for (i = 0; i < MAPPER_PAGES; i++) {
		memset(map + i * pagesize, 0x40 + gen, pagesize);
		/* Distinct pages: one KSM page each, mapped by every mapper. */
		memcpy(map + i * pagesize, &i, sizeof(i));
	}
}

/* Whether pages from..MAPPER_PAGES-1 of map hold what area gen was filled with. */
static bool mapper_intact_from(const char *map, unsigned int gen, size_t from)
{
	size_t i, j;

	for (i = from; i < MAPPER_PAGES; i++) {
		const char *p = map + i * pagesize;

		if (memcmp(p, &i, sizeof(i)))
			return false;
		for (j = sizeof(i); j < pagesize; j++)
			if (p[j] != 0x40 + gen)
				return false;
	}
	return true;
}

static bool mapper_intact(const char *map, unsigned int gen)
{
	return mapper_intact_from(map, gen, 0);
}

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(sigbus_jmp, 1);
}

/* Reads page 0 of map: true if that raised SIGBUS. */
static bool page0_sigbus(const char *map)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(sigbus_jmp, 1)) {
		sigaction(SIGBUS, &old, NULL);
		return true;
	}
	(void)__atomic_load_n(map, __ATOMIC_RELAXED);
	sigaction(SIGBUS, &old, NULL);
	return false;
}

/*
 * 'm'ap + fill + MADV_MERGEABLE, 'c'heck, 'u'nmap area gen; 'k': check all
 * but page 0, 'b': reading page 0 raises SIGBUS, 'e': ask for early kill on
 * memory failure (PR_MCE_KILL_EARLY). 0 on success.
 */
static char mapper_op(char op, unsigned int gen)
{
	size_t len = MAPPER_PAGES * pagesize;
	char *map = mapper_areas[gen];

	switch (op) {
	case 'm':
		map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (map == MAP_FAILED)
			return 1;
		mapper_fill(map, gen);
		mapper_areas[gen] = map;
		return madvise(map, len, MADV_MERGEABLE) ? 2 : 0;
	case 'c':
		return map && mapper_intact(map, gen) ? 0 : 3;
	case 'u':
		mapper_areas[gen] = NULL;
		return munmap(map, len) ? 4 : 0;
	case 'k':
		return map && mapper_intact_from(map, gen, 1) ? 0 : 6;
	case 'b':
		return map && page0_sigbus(map) ? 0 : 7;
	case 'e':
		return prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) ? 8 : 0;
	case 'w':
		/* Wait until this process's whole area is merged. */
		return wait_self_merged(MAPPER_PAGES) ? 0 : 12;
	case 'g': {
		char path[PATH_MAX], pid[32];

		snprintf(path, sizeof(path), "%scgroup.procs", mapper_cgroup);
		snprintf(pid, sizeof(pid), "%d", getpid());
		return write_str(path, pid) ? 9 : 0;
	}
	case 'n': {
		void *pages[MAPPER_PAGES];
		int status[MAPPER_PAGES];
		size_t i;

		for (i = 0; i < MAPPER_PAGES; i++)
			pages[i] = map + i * pagesize;
		if (syscall(__NR_move_pages, 0, MAPPER_PAGES, pages, NULL, status, 0))
			return 10;
		for (i = 0; i < MAPPER_PAGES; i++)
			if (status[i] != mapper_node)
				return 11;
		return 0;
	}
	}
	return 5;
}

/* Runs op on area gen in this process and every child; true if all succeeded. */
static bool mappers_all(struct mapper *m, char op, unsigned int gen)
{
	char cmd[2] = { op, (char)gen }, r;
	bool ok = !mapper_op(op, gen);
	int i;

	for (i = 0; i < MAPPERS; i++) {
		if (m[i].pid <= 0)
			continue;
		if (write(m[i].cmd, cmd, 2) != 2 || read(m[i].reply, &r, 1) != 1 || r) {
			ksft_print_msg("child %d: '%c' on area %u failed\n", i, op, gen);
			ok = false;
		}
	}
	if (!ok)
		ksft_print_msg("'%c' on area %u failed\n", op, gen);
	return ok;
}

/* Starts children m[from] to m[to - 1]: they inherit the areas mapped so far. */
static bool mappers_start(struct mapper *m, int from, int to)
{
	int i, cmd[2], reply[2];

	for (i = from; i < to; i++) {
		if (pipe(cmd) || pipe(reply))
			return false;
		m[i].pid = fork();
		if (m[i].pid < 0)
			return false;
		if (!m[i].pid) {
			char c[2], r;

			close(cmd[1]);
			close(reply[0]);
			while (read(cmd[0], c, 2) == 2) {
				if (c[0] == 'q')
					_exit(0);
				r = mapper_op(c[0], c[1]);
				if (write(reply[1], &r, 1) != 1)
					_exit(1);
			}
			_exit(0);
		}
		close(cmd[0]);
		close(reply[1]);
		m[i].cmd = cmd[1];
		m[i].reply = reply[0];
	}
	return true;
}

/* Says why a merge may not have happened: KSM's state, and every mapper's. */
static void mappers_report(const struct mapper *m)
{
	static const char * const names[] = {
		"run", "merge_across_nodes", "full_scans", "pages_scanned", "pages_unshared",
		"pages_volatile", "pages_skipped", "stable_node_chains", "stable_node_dups",
	};
	char path[64], buf[512], *p;
	unsigned int i;

	/* Not all of them exist everywhere (merge_across_nodes needs NUMA). */
	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (ksm_file_exists(names[i]))
			ksft_print_msg("%s %ld\n", names[i], ksm_read_long(names[i]));
	for (i = 0; i <= MAPPERS; i++) {
		pid_t pid = i < MAPPERS ? m[i].pid : getpid();

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/ksm_stat", pid);
		if (read_file(path, buf, sizeof(buf)) <= 0)
			continue;
		for (p = buf; (p = strchr(p, '\n')) && p[1]; )
			*p = ',';
		ksft_print_msg("%s %d: %s", i < MAPPERS ? "child" : "self", pid, buf);
	}
	/* What ksmd does meanwhile: its last merge attempts. */
	if (!write_str(TRACING "trace", "") &&
	    !write_str(TRACING "events/ksm/ksm_merge_with_ksm_page/enable", "1")) {
		static char trace[1 << 16];
		char *line;
		int n = 0;

		usleep(300000);
		write_str(TRACING "events/ksm/ksm_merge_with_ksm_page/enable", "0");
		if (read_file(TRACING "trace", trace, sizeof(trace)) > 0)
			for (line = strtok(trace, "\n"); line && n < 12; line = strtok(NULL, "\n"))
				if (*line != '#' && ++n)
					ksft_print_msg("%s\n", line);
	}
}

static void mappers_stop(struct mapper *m)
{
	int i, status;

	for (i = 0; i < MAPPERS; i++) {
		if (m[i].pid <= 0)
			continue;
		if (write(m[i].cmd, "q", 2) != 2)
			kill(m[i].pid, SIGKILL);
		close(m[i].cmd);
		close(m[i].reply);
		waitpid(m[i].pid, &status, 0);
	}
}

/* The online movable memory blocks: their ids, and the node of the first. */
static int movable_blocks(long *ids, int max, int *node)
{
	char path[PATH_MAX], buf[64];
	struct dirent *d, *e;
	int n = 0;
	DIR *dir, *sub;

	dir = opendir(MEMORY_DIR);
	if (!dir)
		return 0;
	while (n < max && (d = readdir(dir))) {
		long id;

		if (sscanf(d->d_name, "memory%ld", &id) != 1)
			continue;
		snprintf(path, sizeof(path), MEMORY_DIR "%s/state", d->d_name);
		if (read_file(path, buf, sizeof(buf)) <= 0 || strcmp(buf, "online\n"))
			continue;
		snprintf(path, sizeof(path), MEMORY_DIR "%s/valid_zones", d->d_name);
		if (read_file(path, buf, sizeof(buf)) <= 0 || strcmp(buf, "Movable\n"))
			continue;
		if (!n) {
			*node = -1;
			snprintf(path, sizeof(path), MEMORY_DIR "%s", d->d_name);
			sub = opendir(path);
			while (sub && (e = readdir(sub)))
				if (sscanf(e->d_name, "node%d", node) == 1)
					break;
			if (sub)
				closedir(sub);
			if (*node < 0)
				continue;
		}
		ids[n++] = id;
	}
	closedir(dir);
	return n;
}

static void on_alarm(int sig)
{
}

static int block_set_state(long id, const char *state)
{
	/* No SA_RESTART: the alarm interrupts a write that waits too long. */
	struct sigaction sa = { .sa_handler = on_alarm };
	char path[128];
	int err = 0, tries;

	sigaction(SIGALRM, &sa, NULL);
	snprintf(path, sizeof(path), MEMORY_DIR "memory%ld/state", id);
	/*
	 * Offlining may meet a page that is briefly pinned: try again. It
	 * retries migration until a signal comes: give up after 60 s.
	 */
	for (tries = 0; tries < 5; tries++) {
		alarm(60);
		err = write_str(path, state);
		alarm(0);
		if (err != EBUSY && err != EAGAIN)
			break;
		usleep(200000);
	}
	if (err)
		ksft_print_msg("memory%ld: writing %s: %s\n", id, state, strerror(err));
	return err;
}

/*
 * The memory blocks holding this process's pages of area gen (at most max),
 * and the pfns of those pages.
 */
static int area_blocks(unsigned int gen, unsigned long block_pages, long *blocks, int max,
		       unsigned long *pfns)
{
	int fd, n = 0, j;
	size_t i;

	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return -1;
	for (i = 0; i < MAPPER_PAGES; i++) {
		long b;

		pfns[i] = pagemap_get_pfn(fd, mapper_areas[gen] + i * pagesize);
		b = pfns[i] / block_pages;
		for (j = 0; j < n && blocks[j] != b; j++)
			;
		if (j == n && n < max)
			blocks[n++] = b;
	}
	close(fd);
	return n;
}

static bool is_listed(long v, const long *list, int n)
{
	while (n--)
		if (list[n] == v)
			return true;
	return false;
}

/* Waits until pages_shared and pages_sharing are at least (or exactly) the given values. */
static bool wait_shared(long shared, long sharing, bool exact)
{
	int i;

	for (i = 0; i < MERGE_TIMEOUT_SEC * 10; i++) {
		long v = ksm_read_long("pages_shared"), w = ksm_read_long("pages_sharing");

		if (exact ? v == shared && w == sharing : v >= shared && w >= sharing)
			return true;
		usleep(100000);
	}
	ksft_print_msg("pages_shared %ld, pages_sharing %ld, want %ld and %ld\n",
		       ksm_read_long("pages_shared"), ksm_read_long("pages_sharing"),
		       shared, sharing);
	return false;
}

/* Offlines the blocks; returns 0 or an errno, and how many went offline in *done. */
static int offline_blocks(const long *blocks, int n, int *done)
{
	int err = 0;

	for (*done = 0; *done < n; ++*done) {
		err = block_set_state(blocks[*done], "offline");
		if (err)
			break;
	}
	return err;
}

static void online_blocks(const long *blocks, int n)
{
	int i;

	for (i = 0; i < n; i++)
		block_set_state(blocks[i], "online_movable");
}

/*
 * 1. Offlining the blocks that hold the KSM pages migrates them, with ksmd
 *    running: contents intact in every mapper, counters unchanged.
 * 2. KSM pages whose mappers all unmapped them (ksmd stopped: their stable
 *    nodes are stale, still counted): offlining their memory drops those
 *    nodes and their counts at once; a later lookup would have touched the
 *    struct page of memory that is gone.
 */
static void test_memory_offline(void)
{
	const long mappers = 3, n = MAPPER_PAGES;
	long movable[64], blocks[MAPPER_PAGES], shared0, sharing0, mask;
	unsigned long pfns[MAPPER_PAGES], pfns2[MAPPER_PAGES], block_pages;
	struct mapper m[MAPPERS] = { 0 };
	int nr_movable, nr_blocks = 0, nr_offline = 0, node, i, e;
	const char *err = NULL, *err2 = "not run", *skip = NULL;
	char buf[64];

	nr_movable = movable_blocks(movable, ARRAY_SIZE(movable), &node);
	if (!nr_movable || read_file(MEMORY_DIR "block_size_bytes", buf, sizeof(buf)) <= 0 ||
	    node >= (int)(8 * sizeof(mask))) {
		ksft_test_result_skip("memory offline with KSM pages: no movable memory block\n");
		ksft_test_result_skip("memory offline, stale nodes: no movable memory block\n");
		return;
	}
	block_pages = strtoul(buf, NULL, 16) / pagesize;
	shared0 = ksm_read_long("pages_shared");
	sharing0 = ksm_read_long("pages_sharing");
	ksm_write_or_die("run", "1");

	mask = 1L << node;
	if (syscall(__NR_set_mempolicy, MPOL_BIND_, &mask, 8 * sizeof(mask))) {
		err = "set_mempolicy failed";
		goto out;
	}
	if (!mappers_start(m, 0, mappers - 1)) {
		err = "cannot start the mappers";
		goto out;
	}
	if (!mappers_all(m, 'm', 0) ||
	    !wait_shared(shared0 + n, sharing0 + (mappers - 1) * n, false)) {
		err = "pages were not merged";
		mappers_report(m);
		goto out;
	}
	/* The pages are placed; offlining must not leave this process without memory. */
	syscall(__NR_set_mempolicy, MPOL_DEFAULT_, NULL, 0);
	nr_blocks = area_blocks(0, block_pages, blocks, ARRAY_SIZE(blocks), pfns);
	for (i = 0; i < nr_blocks; i++) {
		if (!is_listed(blocks[i], movable, nr_movable)) {
			ksft_print_msg("KSM pages in memory%ld, not a movable block\n", blocks[i]);
			skip = "KSM pages not placed on movable memory";
			goto out;
		}
	}
	ksft_print_msg("offlining %d memory block(s) holding %ld KSM pages of %ld processes\n",
		       nr_blocks, n, mappers);
	e = offline_blocks(blocks, nr_blocks, &nr_offline);
	if (e == EINVAL && !nr_offline) {
		skip = "memory cannot be offlined (no MEMORY_HOTREMOVE?)";
		goto out;
	} else if (e) {
		err = e == EINTR ? "offlining timed out" : "offlining failed";
		goto online;
	}
	if (!mappers_all(m, 'c', 0))
		err = "contents changed by offlining";
	else if (ksm_read_long("pages_shared") != shared0 + n ||
		 ksm_read_long("pages_sharing") != sharing0 + (mappers - 1) * n ||
		 ksm_get_self_merging_pages() != n)
		err = "counters changed by offlining";
	else if (area_blocks(0, block_pages, NULL, 0, pfns2) < 0)
		err = "pagemap unavailable";
	for (i = 0; !err && i < n; i++)
		if (pfns2[i] == pfns[i] || is_listed(pfns2[i] / block_pages, blocks, nr_blocks))
			err = "a KSM page did not move out of offlined memory";
online:
	online_blocks(blocks, nr_offline);
	if (err)
		goto out;

	/* 2. A second set of KSM pages on movable memory, then stale. */
	err2 = NULL;
	syscall(__NR_set_mempolicy, MPOL_BIND_, &mask, 8 * sizeof(mask));
	if (!mappers_all(m, 'm', 1) ||
	    !wait_shared(shared0 + 2 * n, sharing0 + 2 * (mappers - 1) * n, false)) {
		err2 = "pages were not merged";
		goto out;
	}
	syscall(__NR_set_mempolicy, MPOL_DEFAULT_, NULL, 0);
	nr_blocks = area_blocks(1, block_pages, blocks, ARRAY_SIZE(blocks), pfns);
	for (i = 0; i < nr_blocks; i++)
		if (!is_listed(blocks[i], movable, nr_movable))
			skip = "KSM pages not placed on movable memory";
	/* With ksmd stopped, nothing notices that the KSM pages are freed. */
	ksm_write_or_die("run", "0");
	if (skip || !mappers_all(m, 'u', 1)) {
		err2 = skip ? "not run" : "munmap failed";
		skip = NULL;
		goto out;
	}
	if (ksm_read_long("pages_shared") != shared0 + 2 * n) {
		err2 = "pages_shared changed with ksmd stopped";
		goto out;
	}
	ksft_print_msg("offlining %d memory block(s) under %ld stale stable nodes\n",
		       nr_blocks, n);
	if (offline_blocks(blocks, nr_blocks, &nr_offline))
		err2 = "offlining failed";
	else if (ksm_read_long("pages_shared") != shared0 + n ||
		 ksm_read_long("pages_sharing") != sharing0 + (mappers - 1) * n ||
		 ksm_get_self_merging_pages() != n) {
		ksft_print_msg("pages_shared %ld, pages_sharing %ld, merging pages %ld\n",
			       ksm_read_long("pages_shared") - shared0,
			       ksm_read_long("pages_sharing") - sharing0,
			       ksm_get_self_merging_pages());
		err2 = "stale stable nodes not dropped with the memory";
	}
	online_blocks(blocks, nr_offline);
	ksm_write_or_die("run", "1");
	if (!err2 && !mappers_all(m, 'c', 0))
		err2 = "contents changed";
out:
	ksm_write_or_die("run", "1");
	syscall(__NR_set_mempolicy, MPOL_DEFAULT_, NULL, 0);
	mappers_stop(m);
	for (i = 0; i < MAPPER_AREAS; i++)
		if (mapper_areas[i])
			mapper_op('u', i);
	if (!wait_unmerged())
		err = err ? err : "ksm_merging_pages not back to 0";
	if (skip && !err) {
		ksft_test_result_skip("memory offline with KSM pages: %s\n", skip);
		ksft_test_result_skip("memory offline drops stale stable nodes: %s\n", skip);
		return;
	}
	ksft_test_result(!err, "memory offline with KSM pages of %ld processes: %s\n", mappers,
			 err ? err : "migrated, intact, counters unchanged");
	if (err2 && !strcmp(err2, "not run"))
		ksft_test_result_skip("memory offline drops stale stable nodes: not run\n");
	else
		ksft_test_result(!err2, "memory offline drops stale stable nodes: %s\n",
				 err2 ? err2 : "counters exact");
}

#define CGROUP_DIR "/sys/fs/cgroup/"
#define SWAP_CGROUP CGROUP_DIR "ksm_abi_swap/"

/* A counter of /proc/vmstat, -1 if absent. */
static long read_vmstat(const char *name)
{
	char line[128];
	long v = -1;
	size_t len = strlen(name);
	FILE *f = fopen("/proc/vmstat", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, name, len) && line[len] == ' ') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	return v;
}

/*
 * The active swap device and its priority, from /proc/swaps, if there is
 * exactly one: swapping off one of several would leave pages in the others.
 */
static bool swap_device(char *path, size_t size, int *prio)
{
	char line[256], fmt[32];
	int n = 0;
	FILE *f = fopen("/proc/swaps", "r");

	snprintf(fmt, sizeof(fmt), "%%%zus %%*s %%*s %%*s %%d", size - 1);
	if (f && fgets(line, sizeof(line), f))	/* the header */
		while (fgets(line, sizeof(line), f))
			n += sscanf(line, fmt, path, prio) == 2;
	if (f)
		fclose(f);
	return n == 1;
}

/* How many pages of area gen of this process are in swap. */
/* How many of the MAPPER_PAGES pages at map are in swap. */
static long swapped_at(char *map)
{
	long n = 0;
	size_t i;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		return -1;
	for (i = 0; i < MAPPER_PAGES; i++)
		n += pagemap_is_swapped(fd, map + i * pagesize);
	close(fd);
	return n;
}

static long swapped_pages(unsigned int gen)
{
	return swapped_at(mapper_areas[gen]);
}

/*
 * Reclaims the memory cgroup until every page of area gen of this process is
 * in swap. MADV_PAGEOUT would not do: it leaves pages mapped by several
 * processes alone; reclaim unmaps a KSM page from all (rmap_walk_ksm()).
 * With high, by lowering memory.high below the cgroup's usage (the write
 * reclaims down to it) and raising it again; else through memory.reclaim.
 */
static long reclaim_area(unsigned int gen, bool high)
{
	static char stat[8192];
	long swapped = 0;
	int i;

	/*
	 * ksmd scanning flat out holds references and locks of the KSM pages
	 * that make reclaim skip them: stop it meanwhile (its pages stay).
	 */
	ksm_write_or_die("run", "0");
	for (i = 0; i < 30; i++) {
		char *cached;

		/*
		 * Reading memory.stat flushes the cgroup's statistics. Reclaim
		 * decides from them whether to deactivate anonymous pages; they
		 * can be 2 s old otherwise, and the KSM pages, activated because
		 * several PTEs map them, would stay on the active list.
		 */
		read_file(SWAP_CGROUP "memory.stat", stat, sizeof(stat));
		swapped = swapped_pages(gen);
		/*
		 * Done when every page is in swap and out of the swap cache (an
		 * asynchronous swap device writes back later): a page faulted
		 * back from the swap cache would still be the KSM page.
		 */
		cached = strstr(stat, "\nswapcached ");
		if (swapped >= MAPPER_PAGES && (!cached || !strtol(cached + 12, NULL, 10)))
			break;
		if (high) {
			/*
			 * From a child in the root cgroup: this process, in the
			 * cgroup, would be throttled while it is over memory.high.
			 */
			pid_t pid = fork();

			if (!pid) {
				write_str(CGROUP_DIR "cgroup.procs", "0");
				write_str(SWAP_CGROUP "memory.high", "0");
				write_str(SWAP_CGROUP "memory.high", "max");
				_exit(0);
			}
			if (pid > 0)
				waitpid(pid, NULL, 0);
		} else {
			write_str(SWAP_CGROUP "memory.reclaim", "512M");
		}
		if (swapped >= MAPPER_PAGES)
			usleep(100000);
	}
	ksm_write_or_die("run", "1");
	return swapped;
}

/* Waits until this process's area is merged again: all its pages KSM pages. */
static bool wait_self_merged(long pages)
{
	int i;

	for (i = 0; i < MERGE_TIMEOUT_SEC * 10; i++) {
		if (ksm_get_self_merging_pages() >= pages)
			return true;
		usleep(100000);
	}
	return false;
}

/*
 * Swap. KSM pages mapped by this process, two unrelated processes (their
 * own copies, merged) and a forked child are reclaimed to swap through a
 * memory cgroup and faulted back in every process, byte for byte; then
 * again, and swapoff brings them back. A KSM page that was freed in swap is
 * no KSM page when it comes back: the first process to fault it in maps it,
 * the unrelated ones get copies (ksm_swpin_copy), the forked child shares
 * it with its parent. Writing to a KSM page copies it (cow_ksm).
 */
static void test_swap(void)
{
	const long n = MAPPER_PAGES;
	long shared0, sharing0, swapped, swpin0 = 0, cow0 = 0, swpin = 0, cow = 0;
	const char *err = NULL, *err_off = "not run", *err_cow = "not run";
	struct mapper m[MAPPERS] = { 0 };
	char dev[128], pid[32], buf[128], home[PATH_MAX] = CGROUP_DIR "cgroup.procs";
	bool in_cgroup = false, swapon_again = false;
	int prio;
	size_t i;

	/* The cgroup to go back to: "0::/path" in /proc/self/cgroup. */
	if (read_file("/proc/self/cgroup", buf, sizeof(buf)) > 0 && !strncmp(buf, "0::/", 4)) {
		buf[strcspn(buf, "\n")] = 0;
		snprintf(home, sizeof(home), CGROUP_DIR "%s%scgroup.procs", buf + 4,
			 buf[4] ? "/" : "");
	}
	if (!swap_device(dev, sizeof(dev), &prio) || read_vmstat("ksm_swpin_copy") < 0 ||
	    read_file(CGROUP_DIR "cgroup.subtree_control", buf, sizeof(buf)) <= 0 ||
	    !strstr(buf, "memory")) {
		ksft_test_result_skip("swap: KSM pages swapped: need one swap device, memcg\n");
		ksft_test_result_skip("swapoff with KSM pages: need one swap device, memcg\n");
		ksft_test_result_skip("swap: swpin copy, cow_ksm: need one swap device, memcg\n");
		return;
	}
	if (mkdir(SWAP_CGROUP, 0755) && errno != EEXIST)
		ksft_exit_fail_msg("cannot create " SWAP_CGROUP ": %s\n", strerror(errno));
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (write_str(SWAP_CGROUP "cgroup.procs", pid))
		ksft_exit_fail_msg("cannot join " SWAP_CGROUP "\n");
	in_cgroup = true;
	shared0 = ksm_read_long("pages_shared");
	sharing0 = ksm_read_long("pages_sharing");
	ksm_write_or_die("run", "1");

	/* Two unrelated mappers, then a child forked with the merged area. */
	if (!mappers_start(m, 0, 2) || !mappers_all(m, 'm', 2) ||
	    !wait_shared(shared0 + n, sharing0 + 2 * n, false) || !mappers_start(m, 2, 3)) {
		err = "pages were not merged";
		mappers_report(m);
		goto out;
	}
	swpin0 = read_vmstat("ksm_swpin_copy");
	cow0 = read_vmstat("cow_ksm");
	swapped = reclaim_area(2, false);
	ksft_print_msg("%ld of %ld KSM pages of 4 processes swapped out\n", swapped, n);
	if (swapped != n) {
		err = "KSM pages were not swapped out";
		goto out;
	}
	if (!mappers_all(m, 'c', 2)) {
		err = "contents changed by swapping";
		goto out;
	}
	swpin = read_vmstat("ksm_swpin_copy") - swpin0;

	/*
	 * Merged again, swapped out again, now under memory.high, and brought
	 * back by swapoff.
	 */
	if (!wait_self_merged(n)) {
		err_off = "pages were not merged again";
		goto out;
	}
	swapped = reclaim_area(2, true);
	ksft_print_msg("%ld of %ld KSM pages swapped out under memory.high\n", swapped, n);
	if (swapped != n) {
		err_off = "KSM pages were not swapped out again";
		goto out;
	}
	ksft_print_msg("swapoff %s with %ld KSM pages in swap\n", dev, swapped);
	if (swapoff(dev)) {
		ksft_print_msg("swapoff: %s\n", strerror(errno));
		err_off = "swapoff failed";
		goto out;
	}
	swapon_again = true;
	err_off = NULL;
	if (!mappers_all(m, 'c', 2) || swapped_pages(2)) {
		err_off = "contents changed by swapoff";
		goto out;
	}

	/* Every write to a KSM page of this process is a COW. */
	if (!wait_self_merged(n)) {
		err_cow = "pages were not merged after swapoff";
		goto out;
	}
	for (i = 0; i < (size_t)n; i++) {
		char *p = mapper_areas[2] + i * pagesize + pagesize - 1;

		/* A write fault, which the compiler cannot drop. */
		__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
	}
	cow = read_vmstat("cow_ksm") - cow0;
	err_cow = mappers_all(m, 'c', 2) ? NULL : "contents changed by COW";
out:
	if (swapon_again &&
	    swapon(dev, prio >= 0 ? SWAP_FLAG_PREFER | (prio & SWAP_FLAG_PRIO_MASK) : 0))
		ksft_exit_fail_msg("swapon %s: %s\n", dev, strerror(errno));
	mappers_stop(m);
	if (mapper_areas[2])
		mapper_op('u', 2);
	if (in_cgroup) {
		write_str(home, pid);
		rmdir(SWAP_CGROUP);
	}
	if (!wait_unmerged())
		err = err ? err : "ksm_merging_pages not back to 0";
	ksft_test_result(!err, "swap: KSM pages of 4 processes reclaimed and faulted back: %s\n",
			 err ? err : "intact");
	ksft_test_result(!err_off, "swapoff with KSM pages in swap: %s\n",
			 err_off ? err_off : "intact");
	/* Global counters: another process's KSM page may count too. */
	if (!err_cow && (swpin <= 0 || cow < n))
		err_cow = "counters wrong";
	ksft_test_result(!err_cow,
			 "swap: ksm_swpin_copy +%ld, cow_ksm +%ld (want >= %ld)%s%s\n",
			 swpin, cow, n, err_cow ? ": " : "", err_cow ? err_cow : "");
}

/*
 * MADV_PAGEOUT of KSM pages that only this process still maps: two copies of
 * 64 pages are merged, one copy is unmapped (ksmd stopped, so the pages stay
 * KSM pages), and MADV_PAGEOUT, which leaves pages mapped more than once
 * alone, now swaps them out; they come back intact.
 */
static void test_swap_pageout(void)
{
	const size_t len = MAPPER_PAGES * pagesize;
	char dev[128], *x, *y;
	const char *err = NULL;
	long swapped = 0;
	int prio, i;

	if (!swap_device(dev, sizeof(dev), &prio)) {
		ksft_test_result_skip("MADV_PAGEOUT of KSM pages: need one swap device\n");
		return;
	}
	x = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	y = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x == MAP_FAILED || y == MAP_FAILED)
		ksft_exit_fail_msg("mmap failed\n");
	mapper_fill(x, 4);
	mapper_fill(y, 4);
	ksm_write_or_die("run", "1");
	if (madvise(x, len, MADV_MERGEABLE) || madvise(y, len, MADV_MERGEABLE) ||
	    !wait_self_merged(2 * MAPPER_PAGES)) {
		err = "pages were not merged";
		goto out;
	}
	ksm_write_or_die("run", "0");
	munmap(y, len);
	y = MAP_FAILED;
	for (i = 0; i < 10 && swapped < MAPPER_PAGES; i++) {
		if (madvise(x, len, MADV_PAGEOUT)) {
			err = "MADV_PAGEOUT failed";
			goto out;
		}
		swapped = swapped_at(x);
		if (swapped < MAPPER_PAGES)
			usleep(100000);
	}
	ksft_print_msg("%ld of %d KSM pages swapped out by MADV_PAGEOUT\n", swapped, MAPPER_PAGES);
	if (swapped != MAPPER_PAGES)
		err = "KSM pages were not swapped out";
	else if (!mapper_intact(x, 4))
		err = "contents changed by swapping";
out:
	ksm_write_or_die("run", "1");
	madvise(x, len, MADV_UNMERGEABLE);
	munmap(x, len);
	if (y != MAP_FAILED)
		munmap(y, len);
	if (!wait_unmerged())
		err = err ? err : "ksm_merging_pages not back to 0";
	ksft_test_result(!err, "MADV_PAGEOUT of KSM pages mapped once: %s\n", err ? err : "intact");
}

/* Sends op on area gen to one mapper child; returns its reply, -1 if none. */
static int mapper_cmd(struct mapper *m, char op, unsigned int gen)
{
	char cmd[2] = { op, (char)gen }, r;

	if (write(m->cmd, cmd, 2) != 2 || read(m->reply, &r, 1) != 1)
		return -1;
	return r;
}

/* Waits up to 5 s for child pid to end; its wait status, or -1. */
static int wait_child(pid_t pid)
{
	int i, status;

	for (i = 0; i < 50; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return status;
		usleep(100000);
	}
	return -1;
}

static bool killed_by_sigbus(int status)
{
	return status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS;
}

/*
 * Memory failure on a KSM page (MADV_HWPOISON, as a machine check reports
 * it), mapped by four processes: a child that poisons it (killed at once,
 * the error is its own), mapper A that asked to hear of memory errors early
 * (PR_MCE_KILL_EARLY: it must be found through collect_procs_ksm() and
 * killed), and this process and mapper B, which get SIGBUS when they next
 * touch the page. Mapper U asked for early kill too but maps other pages:
 * it must be left alone. The other KSM pages stay intact, and everything is
 * accounted for once the processes are gone.
 */
static void test_memory_failure(void)
{
	const long n = MAPPER_PAGES;
	struct mapper m[MAPPERS] = { 0 };
	unsigned long hwc0 = 0, hwc1 = 0;
	const char *err = NULL, *err2 = NULL;
	long shared0, sharing0;
	int status, i;
	pid_t pid;

	shared0 = ksm_read_long("pages_shared");
	sharing0 = ksm_read_long("pages_sharing");
	ksm_write_or_die("run", "1");
	/* m[0] is A, m[1] is B, m[2] is U. */
	if (!mappers_start(m, 0, 3) || mapper_op('m', 3) ||
	    mapper_cmd(&m[0], 'e', 0) || mapper_cmd(&m[0], 'm', 3) ||
	    mapper_cmd(&m[1], 'm', 3) ||
	    mapper_cmd(&m[2], 'e', 0) || mapper_cmd(&m[2], 'm', 4) ||
	    !wait_shared(shared0 + n, sharing0 + 2 * n, false)) {
		err = "pages were not merged";
		mappers_report(m);
		goto out;
	}
	get_hardware_corrupted_size(&hwc0);
	pid = fork();
	if (pid < 0) {
		err = "fork failed";
		goto out;
	}
	if (!pid) {
		if (madvise(mapper_areas[3], pagesize, MADV_HWPOISON))
			_exit(errno == EPERM || errno == EINVAL ? 2 : 1);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
		mappers_stop(m);
		mapper_op('u', 3);
		ksft_test_result_skip("memory failure on a KSM page: no MADV_HWPOISON\n");
		ksft_test_result_skip("memory failure: others unaffected: no MADV_HWPOISON\n");
		return;
	}
	get_hardware_corrupted_size(&hwc1);
	ksft_print_msg("poisoned a KSM page of 5 processes: HardwareCorrupted +%lu kB\n",
		       hwc1 - hwc0);
	if (!killed_by_sigbus(status))
		err = "the poisoning process was not killed by SIGBUS";
	status = wait_child(m[0].pid);
	if (status != -1)
		m[0].pid = 0;
	if (!err && !killed_by_sigbus(status))
		err = "the early-kill mapper was not killed by SIGBUS";
	if (!err && (mapper_op('b', 3) || mapper_cmd(&m[1], 'b', 3)))
		err = "touching the poisoned page did not raise SIGBUS";

	if (waitpid(m[2].pid, &status, WNOHANG) != 0 || mapper_cmd(&m[2], 'c', 4))
		err2 = "an unrelated early-kill process was hurt";
	else if (mapper_op('k', 3) || mapper_cmd(&m[1], 'k', 3))
		err2 = "other KSM pages changed";
	else if (hwc1 - hwc0 != pagesize / 1024)
		err2 = "HardwareCorrupted did not grow by one page";
out:
	mappers_stop(m);
	for (i = 3; i < MAPPER_AREAS; i++)
		if (mapper_areas[i])
			mapper_op('u', i);
	if (!wait_unmerged() || !wait_shared(shared0, sharing0, true))
		err2 = err2 ? err2 : "counters not back";
	ksft_test_result(!err, "memory failure on a KSM page: early kill, SIGBUS on access%s%s\n",
			 err ? ": " : "", err ? err : "");
	ksft_test_result(!err && !err2, "memory failure: others unaffected, counters back%s%s\n",
			 err2 ? ": " : "", err2 ? err2 : "");
}

/* Waits until ksmd completed n more full scans; false after MERGE_TIMEOUT_SEC. */
static bool wait_full_scans(long n)
{
	long target = ksm_get_full_scans() + n;
	int i;

	for (i = 0; i < MERGE_TIMEOUT_SEC * 200; i++) {
		if (ksm_get_full_scans() >= target)
			return true;
		usleep(5000);
	}
	return false;
}

#define SMART_PHASES 9
#define LATE_TWINS "smart scan: pages first scanned after their twins merge"

/*
 * Smart scan scans a page that keeps failing to merge less and less often:
 * once every 2, 3, 5, then 9 scans. The unstable tree is rebuilt on every
 * scan, so two pages of the same content merge only if both are scanned in
 * the same scan. Pages whose twins were first scanned long before them
 * (a process started later than another), here nine pages first scanned one
 * scan apart, must still all merge: counted per page, the periods could keep
 * some of them out of step with their twins for ever.
 */
static void test_smart_scan_late_twins(void)
{
	size_t len = SMART_PHASES * pagesize;
	const char *err = NULL;
	char sleep_ms[32], smart[32];
	long merging = 0, skipped;
	char *a, *b;
	int i;

	if (!ksm_file_exists("smart_scan")) {
		ksft_test_result_skip(LATE_TWINS ": no smart_scan\n");
		return;
	}
	a = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED) {
		ksft_test_result_fail(LATE_TWINS ": mmap failed\n");
		return;
	}
	b = a + len;
	for (i = 0; i < SMART_PHASES; i++) {
		memset(a + i * pagesize, 0x60 + i, pagesize);
		memset(b + i * pagesize, 0x60 + i, pagesize);
	}
	/*
	 * One full scan per wake-up (ksmd has only these pages to scan), and
	 * time enough between two to make a page mergeable.
	 */
	snprintf(sleep_ms, sizeof(sleep_ms), "%ld", ksm_read_long("sleep_millisecs"));
	snprintf(smart, sizeof(smart), "%ld", ksm_read_long("smart_scan"));
	ksm_write_or_die("smart_scan", "1");
	ksm_write_or_die("sleep_millisecs", "20");
	ksm_write_or_die("run", "1");
	skipped = ksm_read_long("pages_skipped");
	if (madvise(a, len, MADV_MERGEABLE)) {
		err = "MADV_MERGEABLE failed";
		goto out;
	}
	/* The first pages age: smart scan skips them at the longest period. */
	if (!wait_full_scans(40)) {
		err = "ksmd does not scan";
		goto out;
	}
	if (ksm_read_long("pages_skipped") == skipped) {
		err = "no page was skipped: smart scan is not on";
		goto out;
	}
	/* Their twins, each first scanned one scan after the previous one. */
	for (i = 0; i < SMART_PHASES; i++) {
		if (madvise(b + i * pagesize, pagesize, MADV_MERGEABLE)) {
			err = "MADV_MERGEABLE failed";
			goto out;
		}
		if (!wait_full_scans(1)) {
			err = "ksmd stopped scanning";
			goto out;
		}
	}
	/* In step, twins meet within 26 scans of the later one's first. */
	for (i = 0; i < 100; i++) {
		merging = ksm_get_self_merging_pages();
		if (merging >= 2 * SMART_PHASES)
			break;
		if (!wait_full_scans(1)) {
			err = "ksmd stopped scanning";
			goto out;
		}
	}
	if (merging < 2 * SMART_PHASES) {
		ksft_print_msg("merged pages %ld of %d after 100 scans, pages_skipped +%ld\n",
			       merging, 2 * SMART_PHASES, ksm_read_long("pages_skipped") - skipped);
		err = "some pages never met their twins";
	}
out:
	munmap(a, 2 * len);
	ksm_write_or_die("sleep_millisecs", sleep_ms);
	ksm_write_or_die("smart_scan", smart);
	ksft_test_result(!err, LATE_TWINS "%s%s\n", err ? ": " : "", err ? err : "");
}

/* After everything unmerged and run=2, nothing may be left accounted. */
static void test_counters_return_to_zero(void)
{
	static const char * const zero_after[] = {
		"pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages",
		"stable_node_chains", "stable_node_dups", "general_profit",
	};
	unsigned int i;

	ksm_write_or_die("run", "2");
	for (i = 0; i < ARRAY_SIZE(zero_after); i++) {
		long v;

		if (!ksm_file_exists(zero_after[i])) {
			ksft_test_result_skip("%s back to 0: not provided\n", zero_after[i]);
			continue;
		}
		v = ksm_read_long(zero_after[i]);
		ksft_test_result(v == 0, "%s back to 0 after run=2 (%ld)\n", zero_after[i], v);
	}
}

#define MEMCG_CGROUP CGROUP_DIR "ksm_abi_memcg/"
#define CPUSET_CGROUP CGROUP_DIR "ksm_abi_cpuset/"
#define OOM_PAGES 1024

/* A field of a cgroup's memory.stat (which a read flushes), -1 if absent. */
static long memcg_stat(const char *dir, const char *name)
{
	char path[PATH_MAX], buf[8192], *p;
	size_t len = strlen(name);

	snprintf(path, sizeof(path), "%smemory.stat", dir);
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return -1;
	for (p = buf; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, name, len) && p[len] == ' ')
			return strtol(p + len + 1, NULL, 10);
	return -1;
}

static int cgroup_write(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s%s", dir, file);
	return write_str(path, value);
}

static int cgroup_join(const char *dir)
{
	char pid[32];

	snprintf(pid, sizeof(pid), "%d", getpid());
	return cgroup_write(dir, "cgroup.procs", pid);
}

/*
 * A child that joins the memory cgroup, merges OOM_PAGES identical pages,
 * tells the parent (a byte on `ready`), waits for a byte on `go`, then
 * unmerges them in the way `how` says ('m' MADV_UNMERGEABLE, 'p'
 * PR_SET_MEMORY_MERGE 0, 'r' none: the parent writes run=2). Exits 0 if
 * that succeeded, 3 on ENOMEM, 4 on another error.
 */
static void oom_child(char how, int ready, int go)
{
	size_t len = OOM_PAGES * pagesize;
	char *map, c = 0;
	int i;

	if (cgroup_join(MEMCG_CGROUP))
		_exit(5);
	if (how == 'p' && prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0))
		_exit(6);
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		_exit(7);
	memset(map, 0x5a, len);
	if (how != 'p' && madvise(map, len, MADV_MERGEABLE))
		_exit(8);
	for (i = 0; i < MERGE_TIMEOUT_SEC * 10 && ksm_get_self_merging_pages() < OOM_PAGES; i++)
		usleep(100000);
	if (write(ready, &c, 1) != 1 || read(go, &c, 1) != 1)
		_exit(9);
	if (how == 'm' && madvise(map, len, MADV_UNMERGEABLE))
		_exit(errno == ENOMEM ? 3 : 4);
	if (how == 'p' && prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0))
		_exit(errno == ENOMEM ? 3 : 4);
	if (how == 'r')
		pause();
	_exit(0);
}

/*
 * Unmerging OOM_PAGES pages in a memory cgroup that has room for 64 more
 * and no swap must end: in -ENOMEM or a memory cgroup OOM kill, as with
 * mm/ksm.c, never in a loop. Returns a description of the failure or NULL.
 */
static const char *unmerge_over_limit(char how)
{
	const char *err = NULL;
	int ready[2], go[2], status = -1, i, e = 0;
	char c = 0, limit[32];
	pid_t pid;

	if (pipe(ready) || pipe(go))
		return "pipe failed";
	pid = fork();
	if (pid < 0)
		return "fork failed";
	if (!pid)
		oom_child(how, ready[1], go[0]);
	if (read(ready[0], &c, 1) != 1) {
		err = "the child did not merge";
		goto out;
	}
	if (read_file(MEMCG_CGROUP "memory.current", limit, sizeof(limit)) <= 0) {
		err = "cannot read memory.current";
		goto out;
	}
	snprintf(limit, sizeof(limit), "%ld", strtol(limit, NULL, 10) + 64 * (long)pagesize);
	if (cgroup_write(MEMCG_CGROUP, "memory.swap.max", "0") ||
	    cgroup_write(MEMCG_CGROUP, "memory.max", limit)) {
		err = "cannot limit the memory cgroup";
		goto out;
	}
	if (write(go[1], &c, 1) != 1) {
		err = "pipe write failed";
		goto out;
	}
	if (how == 'r') {
		struct sigaction sa = { .sa_handler = on_alarm };

		/* No SA_RESTART: a run=2 that does not end is interrupted. */
		sigaction(SIGALRM, &sa, NULL);
		alarm(120);
		e = ksm_write("run", "2");
		alarm(0);
		ksft_print_msg("run=2 over the limit: %s\n", e ? strerror(e) : "done");
		if (e && e != ENOMEM)
			err = "run=2 failed other than with ENOMEM";
		kill(pid, SIGKILL);
	}
	for (i = 0; i < 600 && waitpid(pid, &status, WNOHANG) != pid; i++)
		usleep(100000);
	if (i == 600) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		err = "unmerging over the limit did not end within 60 s";
	} else if (how != 'r') {
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
			ksft_print_msg("'%c': the memory cgroup OOM killer ended it\n", how);
		else if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
			ksft_print_msg("'%c': -ENOMEM\n", how);
		else
			err = "unmerging over the limit neither failed nor was OOM-killed";
	}
out:
	cgroup_write(MEMCG_CGROUP, "memory.max", "max");
	cgroup_write(MEMCG_CGROUP, "memory.swap.max", "max");
	if (how == 'r')
		ksm_write("run", "1");
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	if (pid > 0 && !waitpid(pid, &status, WNOHANG)) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	return err;
}

/*
 * Memory cgroups and cpusets. KSM pages are charged to a cgroup and
 * uncharged when its processes are gone (memory.stat anon back to 0).
 * Unmerging over a memory limit (MADV_UNMERGEABLE, PR_SET_MEMORY_MERGE 0,
 * run=2) ends in -ENOMEM or an OOM kill. With merge_across_nodes=0,
 * processes in a cpuset confined to one node merge pages that stay there.
 */
static void test_memcg(void)
{
	static const char hows[] = { 'm', 'p', 'r' };
	const long n = MAPPER_PAGES;
	struct mapper m[MAPPERS] = { 0 };
	const char *err = NULL, *err2 = NULL, *err3 = NULL;
	long anon, peak = 0;
	char buf[128];
	unsigned int i;
	int e;

	if (read_file(CGROUP_DIR "cgroup.subtree_control", buf, sizeof(buf)) <= 0 ||
	    !strstr(buf, "memory") ||
	    (mkdir(MEMCG_CGROUP, 0755) && errno != EEXIST)) {
		ksft_test_result_skip("memcg: KSM pages charged and uncharged: no memory cgroup\n");
		ksft_test_result_skip("memcg: unmerging over memory.max ends: no memory cgroup\n");
		ksft_test_result_skip("cpuset: KSM pages stay on the node: no cpuset cgroup\n");
		return;
	}
	ksm_write_or_die("run", "1");

	/* 1. Two mappers in the cgroup merge their pages, then exit. */
	mapper_cgroup = MEMCG_CGROUP;
	if (!mappers_start(m, 0, 2) || mapper_cmd(&m[0], 'g', 0) || mapper_cmd(&m[1], 'g', 0) ||
	    mapper_cmd(&m[0], 'm', 3) || mapper_cmd(&m[1], 'm', 3) ||
	    mapper_cmd(&m[0], 'w', 3) || mapper_cmd(&m[1], 'w', 3)) {
		err = "pages were not merged";
	} else {
		peak = memcg_stat(MEMCG_CGROUP, "anon");
		mappers_stop(m);
		for (i = 0; i < 50 && (anon = memcg_stat(MEMCG_CGROUP, "anon")) != 0; i++)
			usleep(100000);
		ksft_print_msg("memcg anon %ld kB with KSM pages, %ld kB after exit\n",
			       peak / 1024, anon / 1024);
		if (peak < n * (long)pagesize)
			err = "the KSM pages were not charged";
		else if (anon)
			err = "KSM pages still charged after exit";
	}
	mappers_stop(m);
	memset(m, 0, sizeof(m));
	ksft_test_result(!err, "memcg: KSM pages charged and uncharged%s%s\n",
			 err ? ": " : "", err ? err : "");

	/* 2. Unmerging over the limit, three ways. */
	for (i = 0; i < ARRAY_SIZE(hows) && !err2; i++)
		err2 = unmerge_over_limit(hows[i]);
	ksft_test_result(!err2, "memcg: unmerging over memory.max ends (ENOMEM or OOM kill)%s%s\n",
			 err2 ? ": " : "", err2 ? err2 : "");
	rmdir(MEMCG_CGROUP);

	/* 3. A cpuset confined to the last node, one stable tree per node. */
	if (!strstr(buf, "cpuset") || access("/sys/devices/system/node/node1", F_OK) ||
	    (mkdir(CPUSET_CGROUP, 0755) && errno != EEXIST)) {
		ksft_test_result_skip("cpuset: KSM pages stay on the node: no cpuset or node 1\n");
		return;
	}
	ksm_write_or_die("run", "2");
	if (ksm_write("merge_across_nodes", "0") ||
	    cgroup_write(CPUSET_CGROUP, "cpuset.mems", "1")) {
		err3 = "cannot set merge_across_nodes=0 or cpuset.mems";
		goto out;
	}
	ksm_write_or_die("run", "1");
	mapper_cgroup = CPUSET_CGROUP;
	mapper_node = 1;
	if (!mappers_start(m, 0, 2) || mapper_cmd(&m[0], 'g', 0) || mapper_cmd(&m[1], 'g', 0) ||
	    mapper_cmd(&m[0], 'm', 4) || mapper_cmd(&m[1], 'm', 4) ||
	    mapper_cmd(&m[0], 'w', 4) || mapper_cmd(&m[1], 'w', 4)) {
		err3 = "pages were not merged";
		mappers_report(m);
	} else if (mapper_cmd(&m[0], 'n', 4) || mapper_cmd(&m[1], 'n', 4))
		err3 = "a merged page is not on the cpuset's node";
	else if (mapper_cmd(&m[0], 'c', 4) || mapper_cmd(&m[1], 'c', 4))
		err3 = "contents changed";
out:
	mappers_stop(m);
	/*
	 * The mappers have exited and been reaped: none of their KSM pages
	 * may be left once run=2 returns, and merge_across_nodes must change.
	 */
	ksm_write_or_die("run", "2");
	e = ksm_write("merge_across_nodes", "1");
	if (e) {
		ksft_print_msg("merge_across_nodes=1: %s, pages_shared %ld\n", strerror(e),
			       ksm_read_long("pages_shared"));
		err3 = err3 ? err3 : "merge_across_nodes=1 refused after the mappers exited";
	}
	ksm_write_or_die("run", "1");
	rmdir(CPUSET_CGROUP);
	ksft_test_result(!err3, "cpuset: KSM pages stay on the node (merge_across_nodes=0)%s%s\n",
			 err3 ? ": " : "", err3 ? err3 : "");
}

/* Knobs the tests change, as they were: restored however the program ends. */
static const char * const knobs[] = {
	"pages_to_scan", "sleep_millisecs", "use_zero_pages", "smart_scan",
};
static char saved[ARRAY_SIZE(knobs)][32];
static pid_t main_pid;

static void restore_knobs(void)
{
	unsigned int i;

	/* Not from a forked child that exits through exit(). */
	if (getpid() != main_pid)
		return;
	for (i = 0; i < ARRAY_SIZE(knobs); i++)
		if (saved[i][0])
			ksm_write(knobs[i], saved[i]);
	/* Leave no KSM page behind, whatever test stopped where. */
	ksm_write("run", "2");
}

int main(void)
{
	unsigned int plan, i;

	ksft_print_header();
	pagesize = getpagesize();
	if (access(KSM_DIR "run", F_OK))
		ksft_exit_skip("KSM is not available\n");
	if (ksm_stop() < 0)
		ksft_exit_fail_msg("cannot stop KSM\n");
	for (i = 0; i < ARRAY_SIZE(knobs); i++)
		ksm_read(knobs[i], saved[i], sizeof(saved[i]));
	main_pid = getpid();
	atexit(restore_knobs);

	plan = ARRAY_SIZE(files) + ARRAY_SIZE(bad_writes) + 2 + 3 + 1 + 2 + 2 +
	       NR_TRACE_EVENTS + 2 + 3 + 2 + 3 + 7 + 4 + 2 + 2 + 1 +
	       2 * (ARRAY_SIZE(collisions) - 1) + 2 + 1 + 1;
	ksft_set_plan(plan);

	test_sysfs_files();
	test_bad_writes();
	test_good_writes();

	ksm_write_or_die("pages_to_scan", "2000");
	ksm_write_or_die("sleep_millisecs", "0");
	test_integrity();
	test_zero_pages();
	test_zero_pages_fork();
	test_zero_pages_uffd_move();
	test_zero_pages_migrate_vma();
	test_merge_racing_uffd_move();
	test_mte();
	for (i = 0; i < ARRAY_SIZE(collisions); i++)
		test_checksum_collision(&collisions[i]);
	test_ebusy();
	test_sparse_area();
	test_smart_scan_late_twins();
	test_trace_events();
	test_memory_offline();
	test_swap();
	test_swap_pageout();
	test_memory_failure();
	test_memcg();
	test_counters_return_to_zero();

	ksft_finished();
}
