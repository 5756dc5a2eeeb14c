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
 *  - sparse areas: a 32 TiB mergeable area holding two pages is scanned,
 *    merged and unmerged quickly (unpopulated page tables are skipped);
 *  - trace events: every event of include/trace/events/ksm.h fires, with
 *    plausible fields, over a merge / exit / advisor cycle (skipped
 *    without tracefs);
 *  - accounting: after every merging process has unmerged and run=2,
 *    the global counters and general_profit are back to zero.
 *
 * They are meant to hold for any KSM implementation (mm/ksm.c or another).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

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
		 * Free the two KSM pages while their rmap items are listed: ksmd
		 * then finds their stable nodes stale and removes them with their
		 * items. The zeroes stay mergeable, so this mm stays registered
		 * until it exits.
		 */
		munmap(map + n / 3 * pagesize, (n - n / 3) * pagesize);
		if (write(merged[1], &c, 1) != 1 || read(done[0], &c, 1) < 0)
			_exit(4);
		_exit(0);
	}
	close(merged[1]);
	close(done[0]);
	if (read(merged[0], &ok_merge, 1) != 1 || !ok_merge)
		ksft_print_msg("child did not merge its pages\n");
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

int main(void)
{
	unsigned int plan;
	long old_scan, old_sleep;
	char buf[32];

	ksft_print_header();
	pagesize = getpagesize();
	if (access(KSM_DIR "run", F_OK))
		ksft_exit_skip("KSM is not available\n");
	if (ksm_stop() < 0)
		ksft_exit_fail_msg("cannot stop KSM\n");

	plan = ARRAY_SIZE(files) + ARRAY_SIZE(bad_writes) + 2 + 3 + 1 + 2 + 2 +
	       NR_TRACE_EVENTS + 7;
	ksft_set_plan(plan);

	test_sysfs_files();
	test_bad_writes();
	test_good_writes();

	old_scan = ksm_read_long("pages_to_scan");
	old_sleep = ksm_read_long("sleep_millisecs");
	ksm_write_or_die("pages_to_scan", "2000");
	ksm_write_or_die("sleep_millisecs", "0");
	test_integrity();
	test_zero_pages();
	test_ebusy();
	test_sparse_area();
	test_trace_events();
	test_counters_return_to_zero();
	snprintf(buf, sizeof(buf), "%ld", old_scan);
	ksm_write_or_die("pages_to_scan", buf);
	snprintf(buf, sizeof(buf), "%ld", old_sleep);
	ksm_write_or_die("sleep_millisecs", buf);

	ksft_finished();
}
