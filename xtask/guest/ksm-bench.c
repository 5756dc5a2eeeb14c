// SPDX-License-Identifier: GPL-2.0
/*
 * ksm-bench: the guest side of `cargo xtask bench`, one workload per call.
 *
 *   ksm-bench unique|dup50|dup90|smart|advisor|converge|merge|merge-small|merge-thp|sparse
 *
 * Runs under QEMU -icount shift=0,sleep=off, where CLOCK_MONOTONIC counts
 * guest instructions (1 ns each) and idle time is skipped. It measures ksmd's
 * CPU time two ways: utime+stime of /proc/<ksmd>/stat in clock ticks, and the
 * process CPU clock of ksmd in ns (sum_exec_runtime, the same quantity before
 * rounding). It only ever sleeps between polls: a busy-polling program would
 * keep its vCPU running and stall an icount guest.
 *
 * Exact windows: ksmd and this program (with its workers) are pinned to CPU 0,
 * this program before it execs itself, so that its mm never runs on CPU 1 and
 * ksmd's TLB flushes need no IPI to it (whose wait would depend on how QEMU
 * interleaves the vCPUs).
 * A batch of ksmd ends with each full scan, and ksmd then sleeps for
 * sleep_millisecs; polling every 5 ms sees the new full_scans while ksmd
 * still sleeps, so a window's edges fall between ksmd's batches instead of
 * anywhere within one. On one CPU nothing runs while ksmd's CPU time is
 * read, and the other vCPU stays idle, so no guest time of another task can
 * land in ksmd's.
 *
 * Output, one line each, parsed by the host (xtask/src/bench.rs):
 *   bench: start w=W ksmd_pid=P user_hz=H page=B
 *   bench: result w=W phase=P ksmd_ticks=T ksmd_ns=N guest_ns=G scans=S
 *          pages_sharing=.. pages_shared=.. pages_unshared=.. pages_to_scan=..
 *          (ticks, ns and scans are deltas over the phase, pages_* at its end)
 *   bench: sample w=W t_ns=.. ksmd_ns=.. full_scans=.. pages_sharing=..
 *          (printed after the measurement, so the console is quiet during it)
 *   bench: done w=W
 *   bench: error w=W msg=...
 *
 * The profiled window of each workload (its main phase) starts and ends with
 * `xchg %bx,%bx`, a no-op that ksm-bench-plugin.c (QEMU TCG plugin of
 * `cargo xtask bench --profile`) watches for.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KSM "/sys/kernel/mm/ksm/"
#define POLL_MS 5
/* A sample is kept when a counter changed or after this much guest time. */
#define SAMPLE_NS 100000000LL
/* Any phase that takes longer than this much guest time is an error. */
#define PHASE_LIMIT_NS (600LL * 1000000000LL)
#define MAX_SAMPLES 20000

static const char *wl = "?";
static long page_size;
static pid_t ksmd_pid;
static clockid_t ksmd_clock;

/* Starts or ends the window the profiling plugin counts. */
static void prof_mark(void)
{
	asm volatile(".byte 0x66, 0x87, 0xdb" ::: "memory"); /* xchg %bx,%bx */
}

static void die(const char *fmt, ...)
{
	va_list ap;

	printf("bench: error w=%s msg=", wl);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (errno %d: %s)\n", errno, strerror(errno));
	fflush(stdout);
	exit(1);
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* The sysfs counters are read through fds kept open (pread at 0). */
enum { F_FULL_SCANS, F_SHARING, F_SHARED, F_UNSHARED, F_TO_SCAN, F_NR };
static const char *const counter_names[F_NR] = {
	"full_scans", "pages_sharing", "pages_shared", "pages_unshared", "pages_to_scan",
};
static int counter_fd[F_NR];

static long read_fd_long(int fd, const char *what)
{
	char buf[64];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		die("cannot read %s", what);
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

static long counter(int i)
{
	return read_fd_long(counter_fd[i], counter_names[i]);
}

static void ksm_write(const char *name, const char *val)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), KSM "%s", name);
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		die("cannot write %s to %s", val, path);
	close(fd);
}

static pid_t find_ksmd(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	char path[300], comm[32];
	pid_t found = 0;

	if (!d)
		die("cannot open /proc");
	while (!found && (e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strcmp(comm, "ksmd\n"))
			found = atoi(e->d_name);
		fclose(f);
	}
	closedir(d);
	if (!found)
		die("no ksmd thread");
	return found;
}

/* utime + stime of ksmd, in clock ticks (fields 14 and 15 of stat). */
static long ksmd_ticks(void)
{
	char path[64], buf[1024], *p;
	long utime = 0, stime = 0;
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%d/stat", ksmd_pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("cannot open %s", path);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		die("cannot read %s", path);
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p)
		die("bad %s", path);
	/* p + 2 is field 3 (state); utime is field 14. */
	p += 2;
	for (i = 3; i < 14 && p; i++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%ld %ld", &utime, &stime) != 2)
		die("bad %s", path);
	return utime + stime;
}

static long long ksmd_ns(void)
{
	struct timespec ts;

	if (clock_gettime(ksmd_clock, &ts))
		die("clock_gettime(ksmd cpu clock)");
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct snap {
	long long t, cpu_ns;
	long ticks;
	long c[F_NR];
};

static void take(struct snap *s)
{
	int i;

	s->t = now_ns();
	s->ticks = ksmd_ticks();
	s->cpu_ns = ksmd_ns();
	for (i = 0; i < F_NR; i++)
		s->c[i] = counter(i);
}

static void report(const char *phase, const struct snap *a, const struct snap *b)
{
	printf("bench: result w=%s phase=%s ksmd_ticks=%ld ksmd_ns=%lld guest_ns=%lld scans=%ld "
	       "pages_sharing=%ld pages_shared=%ld pages_unshared=%ld pages_to_scan=%ld\n",
	       wl, phase, b->ticks - a->ticks, b->cpu_ns - a->cpu_ns, b->t - a->t,
	       b->c[F_FULL_SCANS] - a->c[F_FULL_SCANS], b->c[F_SHARING], b->c[F_SHARED],
	       b->c[F_UNSHARED], b->c[F_TO_SCAN]);
	fflush(stdout);
}

/* Samples of the running measurement, printed once it is over. */
struct sample {
	long long t, cpu_ns;
	long full_scans, sharing;
};
static struct sample samples[MAX_SAMPLES];
static int nr_samples;
static long long sample_t0;

static void record(const struct snap *s)
{
	const struct sample *l = nr_samples ? &samples[nr_samples - 1] : NULL;

	if (l && l->full_scans == s->c[F_FULL_SCANS] && l->sharing == s->c[F_SHARING] &&
	    s->t - sample_t0 - l->t < SAMPLE_NS)
		return;
	if (nr_samples < MAX_SAMPLES)
		samples[nr_samples++] = (struct sample){ s->t - sample_t0, s->cpu_ns,
							 s->c[F_FULL_SCANS], s->c[F_SHARING] };
}

static void print_samples(void)
{
	int i;

	for (i = 0; i < nr_samples; i++)
		printf("bench: sample w=%s t_ns=%lld ksmd_ns=%lld full_scans=%ld pages_sharing=%ld\n",
		       wl, samples[i].t, samples[i].cpu_ns, samples[i].full_scans,
		       samples[i].sharing);
	nr_samples = 0;
	fflush(stdout);
}

/* Sleeps in POLL_MS steps until full_scans reaches `target`; *s is the snapshot then. */
static void wait_scans(long target, struct snap *s)
{
	long long start = now_ns();

	for (;;) {
		take(s);
		record(s);
		if (s->c[F_FULL_SCANS] >= target)
			return;
		if (s->t - start > PHASE_LIMIT_NS)
			die("full_scans stuck at %ld, waiting for %ld", s->c[F_FULL_SCANS], target);
		sleep_ms(POLL_MS);
	}
}

/* Page content from a seed: a xorshift stream, so no two seeds share a byte run. */
static void fill_page(char *page, uint64_t seed)
{
	uint64_t *p = (uint64_t *)page, x = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
	long i;

	for (i = 0; i < page_size / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = x;
	}
}

static char *map_anon(size_t size, int thp)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu", size);
	if (madvise(p, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
		die("madvise(%s)", thp ? "MADV_HUGEPAGE" : "MADV_NOHUGEPAGE");
	return p;
}

static void mergeable(char *p, size_t size)
{
	if (madvise(p, size, MADV_MERGEABLE))
		die("madvise(MADV_MERGEABLE)");
}

/* The settings every workload starts from. */
static void defaults(int smart)
{
	ksm_write("smart_scan", smart ? "1" : "0");
	ksm_write("pages_to_scan", "1000");
	ksm_write("sleep_millisecs", "20");
}

#define MIB (1UL << 20)

/*
 * Workloads 1, 2 and 6: 256 MiB of base pages, `dup_pct` % of them copies of
 * a pool (16 pages per content), the rest distinct; two warm-up full scans,
 * then three measured ones.
 */
static void steady(int dup_pct, int smart, int advisor)
{
	size_t size = 256 * MIB, n = size / page_size, i, ndup = 0, pool;
	struct snap s0, s1, s2;
	char *p;

	defaults(smart);
	if (advisor) {
		ksm_write("advisor_mode", "scan-time");
		ksm_write("advisor_target_scan_time", "2");
	}
	p = map_anon(size, 0);
	pool = (n * dup_pct / 100) / 16;
	if (!pool)
		pool = 1;
	for (i = 0; i < n; i++) {
		/* Spread the duplicates evenly: page i is one if the count steps here. */
		int dup = (i + 1) * dup_pct / 100 != i * dup_pct / 100;

		fill_page(p + i * page_size, dup ? (1ULL << 40) + ndup++ % pool : i);
	}
	mergeable(p, size);
	take(&s0);
	sample_t0 = s0.t;
	ksm_write("run", "1");
	wait_scans(s0.c[F_FULL_SCANS] + 2, &s1);
	prof_mark();
	report("warmup", &s0, &s1);
	wait_scans(s0.c[F_FULL_SCANS] + 5, &s2);
	prof_mark();
	report("steady", &s1, &s2);
	print_samples();
}

/*
 * Workload 3: 4 processes x 64 MiB (THP as the system default), 7 of 8 pages
 * from 64 patterns shared by all, every 8th distinct; until pages_sharing has
 * not grown for two full scans.
 */
static void converge(void)
{
	size_t size = 64 * MIB, n = size / page_size, i;
	struct snap s0, s, last_change;
	pid_t kids[4];
	int ready[2], k, stable_from = -1;
	long last = -1;
	char c;

	defaults(0);
	if (pipe(ready))
		die("pipe");
	for (k = 0; k < 4; k++) {
		kids[k] = fork();
		if (kids[k] < 0)
			die("fork");
		if (!kids[k]) {
			char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (p == MAP_FAILED)
				die("mmap");
			for (i = 0; i < n; i++) {
				if (i % 8 == 7)
					fill_page(p + i * page_size, ((uint64_t)(k + 1) << 32) + i);
				else
					memset(p + i * page_size, 'A' + (int)(i % 64), page_size);
			}
			mergeable(p, size);
			if (write(ready[1], "r", 1) != 1)
				die("write");
			for (;;)
				pause();
		}
	}
	for (k = 0; k < 4; k++)
		if (read(ready[0], &c, 1) != 1)
			die("a worker died");
	take(&s0);
	sample_t0 = s0.t;
	last_change = s0;
	prof_mark();
	ksm_write("run", "1");
	for (;;) {
		sleep_ms(POLL_MS);
		take(&s);
		record(&s);
		if (s.c[F_SHARING] != last) {
			last = s.c[F_SHARING];
			last_change = s;
			stable_from = s.c[F_FULL_SCANS];
		} else if (s.c[F_FULL_SCANS] >= stable_from + 2 &&
			   s.c[F_FULL_SCANS] >= s0.c[F_FULL_SCANS] + 2) {
			break;
		}
		if (s.t - s0.t > PHASE_LIMIT_NS)
			die("pages_sharing still changing");
	}
	prof_mark();
	report("converge", &s0, &last_change);
	report("confirm", &s0, &s);
	print_samples();
	for (k = 0; k < 4; k++)
		kill(kids[k], SIGKILL);
	while (wait(NULL) > 0)
		;
}

/*
 * Workload 4: what ksm_tests -P/-D/-C (and -H with thp) measure: 128 MiB of one
 * content merged (two full scans after MADV_MERGEABLE), then MADV_UNMERGEABLE,
 * then merged again and every page written once (COW of a KSM page).
 */
static void merge(int thp, int small)
{
	size_t size = 128 * MIB, n = size / page_size, i;
	struct snap s0, s1;
	char *p;

	defaults(0);
	if (small) {
		/* ksm_tests -P's settings: batches of 10 pages, no sleep between them. */
		ksm_write("pages_to_scan", "10");
		ksm_write("sleep_millisecs", "0");
	}
	p = map_anon(size + (thp ? 2 * MIB : 0), thp);
	if (thp)
		p = (char *)(((uintptr_t)p + 2 * MIB - 1) & ~(2 * MIB - 1));
	memset(p, '*', size);
	take(&s0);
	sample_t0 = s0.t;
	prof_mark();
	mergeable(p, size);
	ksm_write("run", "1");
	wait_scans(s0.c[F_FULL_SCANS] + 2, &s1);
	prof_mark();
	report(thp ? "merge-thp" : small ? "merge-small" : "merge", &s0, &s1);
	print_samples();
	if (thp || small)
		return;
	ksm_write("run", "0");
	sleep_ms(200);
	take(&s0);
	if (madvise(p, size, MADV_UNMERGEABLE))
		die("madvise(MADV_UNMERGEABLE)");
	take(&s1);
	report("unmerge", &s0, &s1);
	take(&s0);
	mergeable(p, size);
	ksm_write("run", "1");
	wait_scans(s0.c[F_FULL_SCANS] + 2, &s1);
	nr_samples = 0;
	report("remerge", &s0, &s1);
	ksm_write("run", "0");
	sleep_ms(200);
	take(&s0);
	for (i = 0; i < n; i++)
		p[i * page_size] = '-';
	take(&s1);
	report("cow", &s0, &s1);
}

/*
 * Workload 5: a 32 TiB MAP_NORESERVE mergeable area holding two pages; after
 * two warm-up full scans, how many (nearly empty) full scans ksmd makes in 2 s
 * of guest time. A batch ends with its full scan, so ksmd scans back to back
 * (sleep_millisecs 0) to make its CPU time long enough to measure.
 */
static void sparse(void)
{
	size_t size = 32UL << 40;
	struct snap s0, s1, s2;
	char *p;

	defaults(0);
	ksm_write("sleep_millisecs", "0");
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED)
		die("mmap 32 TiB");
	memset(p, 0x5a, page_size);
	memset(p + size - page_size, 0x5a, page_size);
	mergeable(p, size);
	take(&s0);
	sample_t0 = s0.t;
	ksm_write("run", "1");
	wait_scans(s0.c[F_FULL_SCANS] + 2, &s1);
	nr_samples = 0;
	report("sparse-warmup", &s0, &s1);
	prof_mark();
	sleep_ms(2000);
	take(&s2);
	prof_mark();
	report("sparse", &s1, &s2);
}

int main(int argc, char **argv)
{
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2) {
		fprintf(stderr,
			"usage: %s unique|dup50|dup90|smart|advisor|converge|merge|merge-small|merge-thp|sparse\n",
			argv[0]);
		return 2;
	}
	wl = argv[1];
	if (!getenv("KSM_BENCH_PINNED")) {
		cpu_set_t cpu0;

		CPU_ZERO(&cpu0);
		CPU_SET(0, &cpu0);
		if (sched_setaffinity(0, sizeof(cpu0), &cpu0))
			die("sched_setaffinity(CPU 0)");
		setenv("KSM_BENCH_PINNED", "1", 1);
		execv("/proc/self/exe", argv);
		die("re-exec on CPU 0");
	}
	page_size = sysconf(_SC_PAGESIZE);
	ksmd_pid = find_ksmd();
	if (clock_getcpuclockid(ksmd_pid, &ksmd_clock))
		die("clock_getcpuclockid(ksmd)");
	{
		cpu_set_t cpu0;

		CPU_ZERO(&cpu0);
		CPU_SET(0, &cpu0);
		if (sched_setaffinity(ksmd_pid, sizeof(cpu0), &cpu0))
			die("sched_setaffinity(ksmd, CPU 0)");
	}
	for (i = 0; i < F_NR; i++) {
		char path[128];

		snprintf(path, sizeof(path), KSM "%s", counter_names[i]);
		counter_fd[i] = open(path, O_RDONLY);
		if (counter_fd[i] < 0)
			die("cannot open %s", path);
	}
	printf("bench: start w=%s ksmd_pid=%d user_hz=%ld page=%ld\n", wl, ksmd_pid,
	       sysconf(_SC_CLK_TCK), page_size);
	if (!strcmp(wl, "unique"))
		steady(0, 0, 0);
	else if (!strcmp(wl, "dup50"))
		steady(50, 0, 0);
	else if (!strcmp(wl, "dup90"))
		steady(90, 0, 0);
	else if (!strcmp(wl, "smart"))
		steady(0, 1, 0);
	else if (!strcmp(wl, "advisor"))
		steady(0, 0, 1);
	else if (!strcmp(wl, "converge"))
		converge();
	else if (!strcmp(wl, "merge"))
		merge(0, 0);
	else if (!strcmp(wl, "merge-small"))
		merge(0, 1);
	else if (!strcmp(wl, "merge-thp"))
		merge(1, 0);
	else if (!strcmp(wl, "sparse"))
		sparse();
	else
		die("unknown workload %s", wl);
	printf("bench: done w=%s\n", wl);
	return 0;
}
