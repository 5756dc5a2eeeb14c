// SPDX-License-Identifier: GPL-2.0

//! The scan-time advisor: tunes `pages_to_scan` so that a full scan takes about
//! `advisor_target_scan_time` seconds (mm/ksm.c: `struct advisor_ctx`, `scan_time_advisor()`).
//!
//! With `advisor_mode` set to `scan-time`, ksmd calls [`start_scan`] when it starts a full scan
//! and [`stop_scan`] when it completes one. The new `pages_to_scan` is
//!
//! ```text
//! pages_to_scan * (scan_time / target_scan_time) * change
//! ```
//!
//! where `change` is an exponentially weighted moving average of how the scan time changed
//! from scan to scan, then capped by the CPU ksmd used in the last scan (between
//! `KSM_ADVISOR_MIN_CPU` and `advisor_max_cpu` percent) and by `advisor_max_pages_to_scan`.
//!
//! All arithmetic is that of the C code with its types (`unsigned long` is `usize`,
//! `unsigned int` is `u32`), including wrap-around and truncation, so the same inputs give the
//! same `pages_to_scan`.
//!
//! The tunables and the context are atomics: like the C globals they are read by ksmd without a
//! lock while sysfs may change them.

#[cfg(CONFIG_SYSFS)]
use crate::state::DEFAULT_PAGES_TO_SCAN;
use crate::state::PAGES_TO_SCAN;
use kernel::{
    current,
    sync::atomic::{Atomic, AtomicType, Relaxed},
    time::{ClockSource, Delta, Monotonic},
};

/// `advisor_mode`: which advisor sets `pages_to_scan` (C: `enum ksm_advisor_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(i32)]
pub(crate) enum Mode {
    /// `pages_to_scan` is set by the user (C: `KSM_ADVISOR_NONE`).
    None = 0,
    /// The scan-time advisor sets `pages_to_scan` (C: `KSM_ADVISOR_SCAN_TIME`).
    ScanTime = 1,
}

// SAFETY: `Mode` is `repr(i32)`, so it has the size and alignment of `i32`, and as a unit-only
// enum it is round-trip transmutable to `i32`.
unsafe impl AtomicType for Mode {
    type Repr = i32;
}

/// `advisor_mode`.
pub(crate) static MODE: Atomic<Mode> = Atomic::new(Mode::None);
/// `advisor_max_cpu`: the most CPU, in percent, that ksmd may use for scanning.
pub(crate) static MAX_CPU: Atomic<u32> = Atomic::new(70);
/// `advisor_min_pages_to_scan`: `pages_to_scan` when the advisor is switched on.
#[cfg(CONFIG_SYSFS)]
pub(crate) static MIN_PAGES_TO_SCAN: Atomic<usize> = Atomic::new(500);
/// `advisor_max_pages_to_scan`: the most pages the advisor lets ksmd scan per batch.
pub(crate) static MAX_PAGES_TO_SCAN: Atomic<usize> = Atomic::new(30000);
/// `advisor_target_scan_time`: the time, in seconds, a full scan should take.
pub(crate) static TARGET_SCAN_TIME: Atomic<usize> = Atomic::new(200);

/// The least CPU, in percent, that ksmd may use for scanning (C: `KSM_ADVISOR_MIN_CPU`).
const MIN_CPU: usize = 10;

/// Weight, in percent, of the newest value in the moving average (C: `EWMA_WEIGHT`).
const EWMA_WEIGHT: usize = 30;

/// The advisor's state between scans (C: `struct advisor_ctx`), as a plain value.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Ctx {
    /// `ktime_get()` when the current scan started.
    start_scan: i64,
    /// Duration of the previous scan in seconds, 0 if none.
    scan_time: usize,
    /// Moving average of the change of the scan time, in percent.
    change: usize,
    /// CPU time, in nanoseconds, that ksmd had used at the end of the previous scan.
    cpu_time: u64,
}

/// The advisor's state between scans (C: `static struct advisor_ctx advisor_ctx`).
///
/// ksmd updates it at the end of a scan and sysfs resets it when the advisor is switched on, as
/// in C without a common lock; each field is atomic so that such a race is no data race.
static CTX_START_SCAN: Atomic<i64> = Atomic::new(0);
static CTX_SCAN_TIME: Atomic<usize> = Atomic::new(0);
static CTX_CHANGE: Atomic<usize> = Atomic::new(0);
static CTX_CPU_TIME: Atomic<u64> = Atomic::new(0);

impl Ctx {
    fn load() -> Self {
        Self {
            start_scan: CTX_START_SCAN.load(Relaxed),
            scan_time: CTX_SCAN_TIME.load(Relaxed),
            change: CTX_CHANGE.load(Relaxed),
            cpu_time: CTX_CPU_TIME.load(Relaxed),
        }
    }

    fn store(self) {
        CTX_START_SCAN.store(self.start_scan, Relaxed);
        CTX_SCAN_TIME.store(self.scan_time, Relaxed);
        CTX_CHANGE.store(self.change, Relaxed);
        CTX_CPU_TIME.store(self.cpu_time, Relaxed);
    }
}

/// The tunables one advisor step uses.
#[derive(Clone, Copy)]
struct Limits {
    /// `advisor_target_scan_time`.
    target_scan_time: usize,
    /// `advisor_max_cpu`.
    max_cpu: u32,
    /// `advisor_max_pages_to_scan`.
    max_pages_to_scan: usize,
}

impl Limits {
    fn load() -> Self {
        Self {
            target_scan_time: TARGET_SCAN_TIME.load(Relaxed),
            max_cpu: MAX_CPU.load(Relaxed),
            max_pages_to_scan: MAX_PAGES_TO_SCAN.load(Relaxed),
        }
    }
}

/// Exponentially weighted moving average of `prev` and `curr` (C: `ewma()`).
fn ewma(prev: usize, curr: usize) -> usize {
    (100 - EWMA_WEIGHT)
        .wrapping_mul(prev)
        .wrapping_add(EWMA_WEIGHT.wrapping_mul(curr))
        / 100
}

/// `a / b` for a `b` that cannot be 0 for any real uptime; 0 rather than a panic if it is
/// (where C would trap).
fn div(a: usize, b: usize) -> usize {
    a.checked_div(b).unwrap_or(0)
}

/// What one advisor step decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Advice {
    /// The context for the next scan.
    ctx: Ctx,
    /// The new `pages_to_scan`.
    pages_to_scan: u32,
    /// The same before its truncation to `unsigned int` (for the `ksm_advisor` trace event).
    pages: usize,
    /// CPU used by the last scan, in percent (for the `ksm_advisor` trace event).
    cpu_percent: u32,
}

/// The computation of `scan_time_advisor()`: the scan that started at `ctx.start_scan` ended at
/// `now` (both `ktime_get()`), with ksmd's CPU time at `cpu_time` nanoseconds, while scanning
/// `pages_to_scan` pages per batch.
fn advise(ctx: Ctx, now: i64, cpu_time: u64, pages_to_scan: u32, limits: Limits) -> Advice {
    // Convert scan time to seconds: `div_s64(ktime_ms_delta(now, start), MSEC_PER_SEC)`, both
    // divisions truncating towards zero, as one division by a second does, then the conversion
    // to `unsigned long`. `Delta` divides with `div64_s64()` on 32-bit, which has no 64-bit `/`.
    let elapsed = Delta::from_nanos(now.wrapping_sub(ctx.start_scan));
    let scan_time = (elapsed / Delta::from_secs(1)) as usize;
    let scan_time = if scan_time != 0 { scan_time } else { 1 };

    // CPU consumption of ksmd: `task_sched_runtime()` is stored in an `unsigned long`.
    let cpu_time = cpu_time as usize;
    let cpu_time_diff = (cpu_time as u64).wrapping_sub(ctx.cpu_time) as usize;
    let cpu_time_diff_ms = cpu_time_diff / 1000 / 1000;

    // Truncated to `unsigned int`, as in C.
    let cpu_percent = div(
        cpu_time_diff_ms.wrapping_mul(100),
        scan_time.wrapping_mul(1000),
    ) as u32;
    let cpu_percent = if cpu_percent != 0 { cpu_percent } else { 1 };
    let last_scan_time = if ctx.scan_time != 0 {
        ctx.scan_time
    } else {
        scan_time
    };

    // Scan time as percentage of the target scan time.
    let factor = limits.target_scan_time.wrapping_mul(100) / scan_time;
    let factor = if factor != 0 { factor } else { 1 };

    // Scan time as percentage of the last scan time, smoothed.
    let change = scan_time.wrapping_mul(100) / last_scan_time;
    let change = if change != 0 { change } else { 1 };
    let change = ewma(ctx.change, change);

    // New scan rate from the target scan rate; `pages_to_scan * 100` is `unsigned int`
    // arithmetic in C.
    let pages = pages_to_scan.wrapping_mul(100) as usize / factor;
    // Weighted by the change.
    let pages = pages.wrapping_mul(change) / 100;

    // Cap by the CPU use.
    let per_page_cost = (pages_to_scan / cpu_percent) as usize;
    let per_page_cost = if per_page_cost != 0 { per_page_cost } else { 1 };

    let pages = pages.min(per_page_cost.wrapping_mul(limits.max_cpu as usize));
    let pages = pages.max(per_page_cost.wrapping_mul(MIN_CPU));
    let pages = pages.min(limits.max_pages_to_scan);

    Advice {
        ctx: Ctx {
            start_scan: ctx.start_scan,
            scan_time,
            change,
            // `unsigned long` back to `unsigned long long`.
            cpu_time: cpu_time as u64,
        },
        // Truncated to `unsigned int`, as in C.
        pages_to_scan: pages as u32,
        pages,
        cpu_percent,
    }
}

/// Sets `pages_to_scan` for the advisor now selected and resets the advisor's state
/// (C: `set_advisor_defaults()`); called when `advisor_mode` changes.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn set_defaults() {
    match MODE.load(Relaxed) {
        Mode::None => PAGES_TO_SCAN.store(DEFAULT_PAGES_TO_SCAN, Relaxed),
        Mode::ScanTime => {
            Ctx::default().store();
            // Truncated to `unsigned int`, as in C.
            PAGES_TO_SCAN.store(MIN_PAGES_TO_SCAN.load(Relaxed) as u32, Relaxed);
        }
    }
}

/// Notes the start of a full scan (C: `advisor_start_scan()`); called by ksmd.
pub(crate) fn start_scan() {
    if MODE.load(Relaxed) == Mode::ScanTime {
        CTX_START_SCAN.store(Monotonic::ktime_get(), Relaxed);
    }
}

/// Adjusts `pages_to_scan` at the end of a full scan (C: `advisor_stop_scan()`); called by
/// ksmd, whose CPU time it measures.
pub(crate) fn stop_scan() {
    if MODE.load(Relaxed) == Mode::ScanTime {
        scan_time_advisor();
    }
}

/// C: `scan_time_advisor()`.
fn scan_time_advisor() {
    let now = Monotonic::ktime_get();
    let cpu_time = current!().sched_runtime();
    let advice = advise(
        Ctx::load(),
        now,
        cpu_time,
        PAGES_TO_SCAN.load(Relaxed),
        Limits::load(),
    );
    advice.ctx.store();
    PAGES_TO_SCAN.store(advice.pages_to_scan, Relaxed);
    crate::trace::advisor(
        advice.ctx.scan_time as i64,
        advice.pages,
        advice.cpu_percent,
    );
}

#[kernel::macros::kunit_tests(ksm_rs_advisor)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    const DEFAULT_LIMITS: Limits = Limits {
        target_scan_time: 200,
        max_cpu: 70,
        max_pages_to_scan: 30000,
    };

    #[test]
    fn ewma_weights_the_newest_value_30_percent() {
        assert_eq!(ewma(0, 100), 30);
        assert_eq!(ewma(100, 100), 100);
        assert_eq!(ewma(100, 0), 70);
        assert_eq!(ewma(50, 200), 95);
        assert_eq!(ewma(1, 1), 1);
        // Integer division truncates.
        assert_eq!(ewma(1, 0), 0);
        assert_eq!(ewma(0, 3), 0);
        assert_eq!(ewma(0, 4), 1);
    }

    #[test]
    fn first_scan_after_switching_on() {
        // 10 s scan using 1 s of CPU (10%) at the advisor's initial 500 pages: the scan is much
        // faster than the 200 s target, but the result is held at the CPU minimum.
        let a = advise(Ctx::default(), 10 * SEC, SEC as u64, 500, DEFAULT_LIMITS);
        assert_eq!(a.cpu_percent, 10);
        // pages = 500 * 100 / 2000 * 30 / 100 = 7; per_page_cost = 50; max(7, 50 * 10) = 500.
        assert_eq!(a.pages_to_scan, 500);
        assert_eq!(
            a.ctx,
            Ctx {
                start_scan: 0,
                scan_time: 10,
                change: 30,
                cpu_time: SEC as u64,
            }
        );
    }

    // 50 s of CPU in one scan needs a 64-bit `unsigned long` (see `cpu_time_wraps_on_32_bit`).
    #[cfg(CONFIG_64BIT)]
    #[test]
    fn slow_scans_speed_up_up_to_the_cpu_cap() {
        // A 400 s scan (twice the target) after a 400 s one, with 50 s of CPU (12%).
        let ctx = Ctx {
            start_scan: 100 * SEC,
            scan_time: 400,
            change: 100,
            cpu_time: 10 * SEC as u64,
        };
        let a = advise(ctx, 500 * SEC, 60 * SEC as u64, 1000, DEFAULT_LIMITS);
        assert_eq!(a.cpu_percent, 12);
        // factor = 50, pages = 1000 * 100 / 50 = 2000, change = 100, per_page_cost = 83:
        // min(2000, 83 * 70 = 5810) = 2000.
        assert_eq!(a.pages_to_scan, 2000);
        assert_eq!(a.ctx.scan_time, 400);
        assert_eq!(a.ctx.change, 100);

        // With at most 20% CPU, the cap is 83 * 20 = 1660.
        let limits = Limits {
            max_cpu: 20,
            ..DEFAULT_LIMITS
        };
        assert_eq!(
            advise(ctx, 500 * SEC, 60 * SEC as u64, 1000, limits).pages_to_scan,
            1660
        );
    }

    #[test]
    fn pages_to_scan_stays_within_bounds() {
        let ctx = Ctx {
            start_scan: 0,
            scan_time: 7,
            change: 250,
            cpu_time: 0,
        };
        for max_cpu in [0, 1, 10, 70, 100, 1000] {
            for pages_to_scan in [0, 1, 99, 500, 30000, 1 << 20] {
                for scan_s in [0, 1, 3, 200, 5000] {
                    for cpu_s in [0, 1, 3, 200] {
                        for max_pages_to_scan in [0, 100, 30000, usize::MAX] {
                            let limits = Limits {
                                max_cpu,
                                max_pages_to_scan,
                                ..DEFAULT_LIMITS
                            };
                            let a = advise(
                                ctx,
                                scan_s * SEC,
                                (cpu_s * SEC) as u64,
                                pages_to_scan,
                                limits,
                            );
                            let pages = a.pages_to_scan as usize;
                            let cpu_percent = a.cpu_percent.max(1);
                            let per_page_cost = ((pages_to_scan / cpu_percent) as usize).max(1);
                            // Capped by the maximum...
                            assert!(pages <= max_pages_to_scan);
                            // ...above the CPU minimum unless the maximum is lower...
                            assert!(pages >= (per_page_cost * MIN_CPU).min(max_pages_to_scan));
                            // ...and below the CPU maximum unless the minimum is higher.
                            assert!(
                                pages
                                    <= (per_page_cost * max_cpu as usize)
                                        .max(per_page_cost * MIN_CPU)
                            );
                            assert!(a.cpu_percent >= 1);
                            assert!(a.ctx.scan_time >= 1);
                            assert!(a.ctx.change >= 1);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn short_scans_count_as_one_second() {
        let a = advise(Ctx::default(), SEC / 2, 0, 100, DEFAULT_LIMITS);
        assert_eq!(a.ctx.scan_time, 1);
        assert_eq!(a.cpu_percent, 1);
    }

    // C keeps ksmd's CPU time in an `unsigned long`: on 32-bit, the CPU time of one scan is
    // taken modulo 2^32 ns (4.29 s), and so is it here. 50 s of CPU in a 400 s scan counts as
    // 2.755 s, under 1%, which counts as 1%.
    #[cfg(not(CONFIG_64BIT))]
    #[test]
    fn cpu_time_wraps_on_32_bit() {
        let ctx = Ctx {
            start_scan: 100 * SEC,
            scan_time: 400,
            change: 100,
            // What the last scan stored: 10 s, modulo 2^32 ns.
            cpu_time: (10 * SEC as u64) & u64::from(u32::MAX),
        };
        let a = advise(ctx, 500 * SEC, 60 * SEC as u64, 1000, DEFAULT_LIMITS);
        assert_eq!(a.cpu_percent, 1);
        assert_eq!(a.ctx.cpu_time, (60 * SEC as u64) & u64::from(u32::MAX));
    }

    // The values below assume a 64-bit `unsigned long`.
    #[cfg(CONFIG_64BIT)]
    #[test]
    fn c_integer_semantics() {
        let limits = Limits {
            target_scan_time: 1,
            max_cpu: u32::MAX,
            max_pages_to_scan: usize::MAX,
        };
        let ctx = Ctx {
            start_scan: 0,
            scan_time: 1,
            change: 100,
            cpu_time: 0,
        };
        // `pages_to_scan * 100` wraps around in `unsigned int` arithmetic, as in C:
        // 50_000_000 * 100 mod 2^32 = 705_032_704, and factor = change = 100. With 500_000 s
        // of CPU in a 1 s scan (cpu_percent = 50_000_000), per_page_cost = 1 lifts no bound.
        let a = advise(ctx, SEC, 500_000 * SEC as u64, 50_000_000, limits);
        assert_eq!(a.cpu_percent, 50_000_000);
        assert_eq!(a.pages_to_scan, 7_050_327);

        // A target of 0 s makes factor 0, which counts as 1; a huge previous change makes the
        // new `pages` overflow `unsigned int`, and it is truncated when stored, as in C.
        let limits = Limits {
            target_scan_time: 0,
            ..limits
        };
        let ctx = Ctx {
            change: 1_000_000,
            ..ctx
        };
        let a = advise(ctx, SEC, 0, 40_000_000, limits);
        assert_eq!(a.ctx.change, 700_030);
        assert_eq!(a.pages_to_scan, (4_000_000_000u64 * 700_030 / 100) as u32);
    }
}
