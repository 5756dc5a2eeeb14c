// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/mm/ksm`: the tunables and statistics (mm/ksm.c, its `CONFIG_SYSFS` part).
//!
//! File names, modes, output formats and the accepted input are those of mm/ksm.c: values are
//! parsed by the same `kstrto*()` functions, every rejected write fails with the errno the C
//! version returns and changes nothing, and numbers are printed as by `sysfs_emit()` with the
//! C types' formats (`%u`, `%lu`, `%ld`) followed by a newline.

use crate::{
    advisor, ksmd,
    node::RMAP_ITEM_SIZE,
    stable_tree,
    state::{self, *},
    unmerge,
};
use core::fmt::{Display, Write};
use kernel::{
    current,
    page::PAGE_SIZE,
    prelude::*,
    sync::atomic::Relaxed,
    sysfs::{self, Attribute, Emitter, Input, Parent},
};

/// Writes `value` and a newline: `sysfs_emit(buf, "%u\n", value)` and the like.
fn emit(out: &mut Emitter<'_>, value: impl Display) -> Result {
    writeln!(out, "{value}")?;
    Ok(())
}

/// `kstrtouint(buf, 10, &value)`, any failure reported as `-EINVAL` as the callers in C do.
fn parse_uint(input: Input<'_>) -> Result<u32> {
    sysfs::kstrtouint(input.as_c_str(), 10).map_err(|_| EINVAL)
}

/// `kstrtoul(buf, 10, &value)`, any failure reported as `-EINVAL` as the callers in C do.
fn parse_ulong(input: Input<'_>) -> Result<usize> {
    sysfs::kstrtoul(input.as_c_str(), 10).map_err(|_| EINVAL)
}

/// `kstrtobool(buf, &value)`, any failure reported as `-EINVAL` as the callers in C do.
fn parse_bool(input: Input<'_>) -> Result<bool> {
    sysfs::kstrtobool(input.as_c_str()).map_err(|_| EINVAL)
}

// sleep_millisecs

fn sleep_millisecs_show(out: &mut Emitter<'_>) -> Result {
    emit(out, SLEEP_MILLISECS.load(Relaxed))
}

fn sleep_millisecs_store(input: Input<'_>) -> Result {
    let msecs = parse_uint(input)?;
    SLEEP_MILLISECS.store(msecs, Relaxed);
    ksmd::wake_iter();
    Ok(())
}

static SLEEP_MILLISECS_ATTR: Attribute = Attribute::new_rw(
    c"sleep_millisecs",
    sleep_millisecs_show,
    sleep_millisecs_store,
);

// pages_to_scan

fn pages_to_scan_show(out: &mut Emitter<'_>) -> Result {
    emit(out, PAGES_TO_SCAN.load(Relaxed))
}

fn pages_to_scan_store(input: Input<'_>) -> Result {
    // The advisor owns the value while it is on.
    if advisor::MODE.load(Relaxed) != advisor::Mode::None {
        return Err(EINVAL);
    }
    let nr_pages = parse_uint(input)?;
    PAGES_TO_SCAN.store(nr_pages, Relaxed);
    Ok(())
}

static PAGES_TO_SCAN_ATTR: Attribute =
    Attribute::new_rw(c"pages_to_scan", pages_to_scan_show, pages_to_scan_store);

// run

fn run_show(out: &mut Emitter<'_>) -> Result {
    emit(out, RUN.load(Relaxed))
}

fn run_store(input: Input<'_>) -> Result {
    let flags = parse_uint(input)?;
    if flags > KSM_RUN_UNMERGE {
        return Err(EINVAL);
    }

    // KSM_RUN_MERGE sets ksmd running, and 0 stops it running. KSM_RUN_UNMERGE stops it running
    // and unmerges all rmap_items, breaking COW to free the pages_shared (but leaves mm_slots on
    // the list for when ksmd may be set running again).
    let mut ret = Ok(());
    {
        let mut g = crate::lock_ksm();
        if RUN.load(Relaxed) != flags {
            RUN.store(flags, Relaxed);
            if flags & KSM_RUN_UNMERGE != 0 {
                // Unmerging allocates a page per shared mapping: if that exhausts memory, the
                // writer is the one to kill.
                let err = current!()
                    .with_oom_origin(|| unmerge::unmerge_and_remove_all_rmap_items(&mut g));
                if let Err(e) = err {
                    RUN.store(KSM_RUN_STOP, Relaxed);
                    ret = Err(e);
                }
            }
        }
    }

    if flags & KSM_RUN_MERGE != 0 {
        ksmd::wake_thread();
    }
    ret
}

static RUN_ATTR: Attribute = Attribute::new_rw(c"run", run_show, run_store);

// merge_across_nodes

#[cfg(CONFIG_NUMA)]
fn merge_across_nodes_show(out: &mut Emitter<'_>) -> Result {
    emit(out, MERGE_ACROSS_NODES.load(Relaxed))
}

#[cfg(CONFIG_NUMA)]
fn merge_across_nodes_store(input: Input<'_>) -> Result {
    // Unlike most stores, the parser's error (`-ERANGE` or `-EINVAL`) is returned as it is.
    let knob = sysfs::kstrtoul(input.as_c_str(), 10)?;
    if knob > 1 {
        return Err(EINVAL);
    }

    let mut g = crate::lock_ksm();
    if MERGE_ACROSS_NODES.load(Relaxed) as usize != knob {
        if PAGES_SHARED.get() != 0 || stable_tree::remove_all_stable_nodes(&mut g.ksm()) {
            return Err(EBUSY);
        }
        stable_tree::set_merge_across_nodes(&mut g.ksm(), knob != 0)?;
        // `knob` is 0 or 1.
        MERGE_ACROSS_NODES.store(knob as u32, Relaxed);
    }
    Ok(())
}

#[cfg(CONFIG_NUMA)]
static MERGE_ACROSS_NODES_ATTR: Attribute = Attribute::new_rw(
    c"merge_across_nodes",
    merge_across_nodes_show,
    merge_across_nodes_store,
);

// use_zero_pages

fn use_zero_pages_show(out: &mut Emitter<'_>) -> Result {
    emit(out, u32::from(USE_ZERO_PAGES.load(Relaxed)))
}

fn use_zero_pages_store(input: Input<'_>) -> Result {
    let value = parse_bool(input)?;
    USE_ZERO_PAGES.store(value, Relaxed);
    Ok(())
}

static USE_ZERO_PAGES_ATTR: Attribute =
    Attribute::new_rw(c"use_zero_pages", use_zero_pages_show, use_zero_pages_store);

// max_page_sharing

fn max_page_sharing_show(out: &mut Emitter<'_>) -> Result {
    // C prints the `int` with `%u`; it is at least 2.
    emit(out, MAX_PAGE_SHARING.load(Relaxed) as u32)
}

fn max_page_sharing_store(input: Input<'_>) -> Result {
    // Unlike most stores, the parser's error (`-ERANGE` or `-EINVAL`) is returned as it is.
    let knob = sysfs::kstrtoint(input.as_c_str(), 10)?;
    // When a KSM page is created it is shared by 2 mappings. This being a signed comparison, it
    // implicitly verifies it's not negative.
    if knob < 2 {
        return Err(EINVAL);
    }

    if MAX_PAGE_SHARING.load(Relaxed) == knob {
        return Ok(());
    }

    let mut g = crate::lock_ksm();
    if MAX_PAGE_SHARING.load(Relaxed) != knob {
        if PAGES_SHARED.get() != 0 || stable_tree::remove_all_stable_nodes(&mut g.ksm()) {
            return Err(EBUSY);
        }
        MAX_PAGE_SHARING.store(knob, Relaxed);
    }
    Ok(())
}

static MAX_PAGE_SHARING_ATTR: Attribute = Attribute::new_rw(
    c"max_page_sharing",
    max_page_sharing_show,
    max_page_sharing_store,
);

// Statistics.

fn pages_scanned_show(out: &mut Emitter<'_>) -> Result {
    emit(out, PAGES_SCANNED.get())
}

static PAGES_SCANNED_ATTR: Attribute = Attribute::new_ro(c"pages_scanned", pages_scanned_show);

fn pages_shared_show(out: &mut Emitter<'_>) -> Result {
    emit(out, PAGES_SHARED.get())
}

static PAGES_SHARED_ATTR: Attribute = Attribute::new_ro(c"pages_shared", pages_shared_show);

fn pages_sharing_show(out: &mut Emitter<'_>) -> Result {
    emit(out, PAGES_SHARING.get())
}

static PAGES_SHARING_ATTR: Attribute = Attribute::new_ro(c"pages_sharing", pages_sharing_show);

fn pages_unshared_show(out: &mut Emitter<'_>) -> Result {
    emit(out, PAGES_UNSHARED.get())
}

static PAGES_UNSHARED_ATTR: Attribute = Attribute::new_ro(c"pages_unshared", pages_unshared_show);

fn pages_volatile_show(out: &mut Emitter<'_>) -> Result {
    // Not worth any locking, so it may be transiently negative: `pages_volatile()` shows 0 then.
    emit(out, state::pages_volatile())
}

static PAGES_VOLATILE_ATTR: Attribute = Attribute::new_ro(c"pages_volatile", pages_volatile_show);

fn pages_skipped_show(out: &mut Emitter<'_>) -> Result {
    emit(out, PAGES_SKIPPED.get())
}

static PAGES_SKIPPED_ATTR: Attribute = Attribute::new_ro(c"pages_skipped", pages_skipped_show);

fn ksm_zero_pages_show(out: &mut Emitter<'_>) -> Result {
    emit(out, crate::ksm_zero_pages_read())
}

static KSM_ZERO_PAGES_ATTR: Attribute = Attribute::new_ro(c"ksm_zero_pages", ksm_zero_pages_show);

/// `general_profit`: bytes saved by sharing, less the rmap items' memory.
///
/// The C expression is evaluated in `unsigned long` and the result converted to `long`.
fn general_profit() -> isize {
    let saved = PAGES_SHARING
        .get()
        .wrapping_add(crate::ksm_zero_pages_read() as usize)
        .wrapping_mul(PAGE_SIZE);
    let cost = RMAP_ITEMS.get().wrapping_mul(RMAP_ITEM_SIZE);
    saved.wrapping_sub(cost) as isize
}

fn general_profit_show(out: &mut Emitter<'_>) -> Result {
    emit(out, general_profit())
}

static GENERAL_PROFIT_ATTR: Attribute = Attribute::new_ro(c"general_profit", general_profit_show);

fn stable_node_dups_show(out: &mut Emitter<'_>) -> Result {
    emit(out, STABLE_NODE_DUPS.get())
}

static STABLE_NODE_DUPS_ATTR: Attribute =
    Attribute::new_ro(c"stable_node_dups", stable_node_dups_show);

fn stable_node_chains_show(out: &mut Emitter<'_>) -> Result {
    emit(out, STABLE_NODE_CHAINS.get())
}

static STABLE_NODE_CHAINS_ATTR: Attribute =
    Attribute::new_ro(c"stable_node_chains", stable_node_chains_show);

// stable_node_chains_prune_millisecs

fn stable_node_chains_prune_millisecs_show(out: &mut Emitter<'_>) -> Result {
    emit(out, STABLE_NODE_CHAINS_PRUNE_MILLISECS.load(Relaxed))
}

fn stable_node_chains_prune_millisecs_store(input: Input<'_>) -> Result {
    let msecs = parse_uint(input)?;
    STABLE_NODE_CHAINS_PRUNE_MILLISECS.store(msecs, Relaxed);
    Ok(())
}

static STABLE_NODE_CHAINS_PRUNE_MILLISECS_ATTR: Attribute = Attribute::new_rw(
    c"stable_node_chains_prune_millisecs",
    stable_node_chains_prune_millisecs_show,
    stable_node_chains_prune_millisecs_store,
);

fn full_scans_show(out: &mut Emitter<'_>) -> Result {
    emit(out, FULL_SCANS.get())
}

static FULL_SCANS_ATTR: Attribute = Attribute::new_ro(c"full_scans", full_scans_show);

// smart_scan

fn smart_scan_show(out: &mut Emitter<'_>) -> Result {
    emit(out, u32::from(SMART_SCAN.load(Relaxed)))
}

fn smart_scan_store(input: Input<'_>) -> Result {
    let value = parse_bool(input)?;
    SMART_SCAN.store(value, Relaxed);
    Ok(())
}

static SMART_SCAN_ATTR: Attribute =
    Attribute::new_rw(c"smart_scan", smart_scan_show, smart_scan_store);

// advisor_mode

fn advisor_mode_show(out: &mut Emitter<'_>) -> Result {
    let output = match advisor::MODE.load(Relaxed) {
        advisor::Mode::ScanTime => "none [scan-time]",
        advisor::Mode::None => "[none] scan-time",
    };
    emit(out, output)
}

fn advisor_mode_store(input: Input<'_>) -> Result {
    let mode = if sysfs::streq(c"scan-time", input.as_c_str()) {
        advisor::Mode::ScanTime
    } else if sysfs::streq(c"none", input.as_c_str()) {
        advisor::Mode::None
    } else {
        return Err(EINVAL);
    };

    // Set the advisor's defaults when the advisor changes.
    if advisor::MODE.xchg(mode, Relaxed) != mode {
        advisor::set_defaults();
    }
    Ok(())
}

static ADVISOR_MODE_ATTR: Attribute =
    Attribute::new_rw(c"advisor_mode", advisor_mode_show, advisor_mode_store);

// advisor_max_cpu

fn advisor_max_cpu_show(out: &mut Emitter<'_>) -> Result {
    emit(out, advisor::MAX_CPU.load(Relaxed))
}

fn advisor_max_cpu_store(input: Input<'_>) -> Result {
    let value = parse_ulong(input)?;
    // Parsed as `unsigned long`, stored in an `unsigned int`: truncated as in C.
    advisor::MAX_CPU.store(value as u32, Relaxed);
    Ok(())
}

static ADVISOR_MAX_CPU_ATTR: Attribute = Attribute::new_rw(
    c"advisor_max_cpu",
    advisor_max_cpu_show,
    advisor_max_cpu_store,
);

// advisor_min_pages_to_scan

fn advisor_min_pages_to_scan_show(out: &mut Emitter<'_>) -> Result {
    emit(out, advisor::MIN_PAGES_TO_SCAN.load(Relaxed))
}

fn advisor_min_pages_to_scan_store(input: Input<'_>) -> Result {
    let value = parse_ulong(input)?;
    advisor::MIN_PAGES_TO_SCAN.store(value, Relaxed);
    Ok(())
}

static ADVISOR_MIN_PAGES_TO_SCAN_ATTR: Attribute = Attribute::new_rw(
    c"advisor_min_pages_to_scan",
    advisor_min_pages_to_scan_show,
    advisor_min_pages_to_scan_store,
);

// advisor_max_pages_to_scan

fn advisor_max_pages_to_scan_show(out: &mut Emitter<'_>) -> Result {
    emit(out, advisor::MAX_PAGES_TO_SCAN.load(Relaxed))
}

fn advisor_max_pages_to_scan_store(input: Input<'_>) -> Result {
    let value = parse_ulong(input)?;
    advisor::MAX_PAGES_TO_SCAN.store(value, Relaxed);
    Ok(())
}

static ADVISOR_MAX_PAGES_TO_SCAN_ATTR: Attribute = Attribute::new_rw(
    c"advisor_max_pages_to_scan",
    advisor_max_pages_to_scan_show,
    advisor_max_pages_to_scan_store,
);

// advisor_target_scan_time

fn advisor_target_scan_time_show(out: &mut Emitter<'_>) -> Result {
    emit(out, advisor::TARGET_SCAN_TIME.load(Relaxed))
}

fn advisor_target_scan_time_store(input: Input<'_>) -> Result {
    let value = parse_ulong(input)?;
    if value < 1 {
        return Err(EINVAL);
    }
    advisor::TARGET_SCAN_TIME.store(value, Relaxed);
    Ok(())
}

static ADVISOR_TARGET_SCAN_TIME_ATTR: Attribute = Attribute::new_rw(
    c"advisor_target_scan_time",
    advisor_target_scan_time_show,
    advisor_target_scan_time_store,
);

kernel::attribute_group! {
    /// `/sys/kernel/mm/ksm`, the files in the order of mm/ksm.c's `ksm_attrs`.
    static KSM_ATTR_GROUP = c"ksm", [
        SLEEP_MILLISECS_ATTR,
        PAGES_TO_SCAN_ATTR,
        RUN_ATTR,
        PAGES_SCANNED_ATTR,
        PAGES_SHARED_ATTR,
        PAGES_SHARING_ATTR,
        PAGES_UNSHARED_ATTR,
        PAGES_VOLATILE_ATTR,
        PAGES_SKIPPED_ATTR,
        KSM_ZERO_PAGES_ATTR,
        FULL_SCANS_ATTR,
        #[cfg(CONFIG_NUMA)]
        MERGE_ACROSS_NODES_ATTR,
        MAX_PAGE_SHARING_ATTR,
        STABLE_NODE_CHAINS_ATTR,
        STABLE_NODE_DUPS_ATTR,
        STABLE_NODE_CHAINS_PRUNE_MILLISECS_ATTR,
        USE_ZERO_PAGES_ATTR,
        GENERAL_PROFIT_ATTR,
        SMART_SCAN_ATTR,
        ADVISOR_MODE_ATTR,
        ADVISOR_MAX_CPU_ATTR,
        ADVISOR_MIN_PAGES_TO_SCAN_ATTR,
        ADVISOR_MAX_PAGES_TO_SCAN_ATTR,
        ADVISOR_TARGET_SCAN_TIME_ATTR,
    ];
}

/// Creates `/sys/kernel/mm/ksm` (C: `sysfs_create_group(mm_kobj, &ksm_attr_group)` in
/// `ksm_init()`); called once from init. The files stay for the life of the kernel.
pub(crate) fn register() -> Result {
    KSM_ATTR_GROUP.register(Parent::Mm)?.make_permanent();
    Ok(())
}

#[kernel::macros::kunit_tests(ksm_rs_sysfs)]
mod tests {
    use super::*;

    fn input(s: &'static CStr) -> Input<'static> {
        Input::from_c_str(s)
    }

    fn shown(show: sysfs::ShowFn) -> KVec<u8> {
        let mut buf = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL).unwrap();
        let mut out = Emitter::new(&mut buf);
        show(&mut out).unwrap();
        let mut v = KVec::new();
        v.extend_from_slice(out.as_bytes(), GFP_KERNEL).unwrap();
        v
    }

    #[test]
    fn uint_tunables_refuse_bad_input_unchanged() {
        let before = SLEEP_MILLISECS.load(Relaxed);
        for bad in [c"", c"-1", c"x", c"4294967296", c"1 2"] {
            assert_eq!(sleep_millisecs_store(input(bad)), Err(EINVAL));
            assert_eq!(SLEEP_MILLISECS.load(Relaxed), before);
        }
        let prune = STABLE_NODE_CHAINS_PRUNE_MILLISECS.load(Relaxed);
        assert_eq!(
            stable_node_chains_prune_millisecs_store(input(c"-5")),
            Err(EINVAL)
        );
        assert_eq!(STABLE_NODE_CHAINS_PRUNE_MILLISECS.load(Relaxed), prune);
    }

    #[test]
    fn sleep_millisecs_round_trip() {
        let before = SLEEP_MILLISECS.load(Relaxed);
        assert_eq!(sleep_millisecs_store(input(c"1234\n")), Ok(()));
        assert_eq!(&shown(sleep_millisecs_show)[..], b"1234\n");
        assert_eq!(sleep_millisecs_store(input(c"0")), Ok(()));
        assert_eq!(&shown(sleep_millisecs_show)[..], b"0\n");
        SLEEP_MILLISECS.store(before, Relaxed);
    }

    #[test]
    fn run_accepts_only_0_to_2() {
        let before = RUN.load(Relaxed);
        for bad in [c"3", c"-1", c"one", c"4"] {
            assert_eq!(run_store(input(bad)), Err(EINVAL));
            assert_eq!(RUN.load(Relaxed), before);
        }
    }

    #[test]
    fn max_page_sharing_bounds() {
        let before = MAX_PAGE_SHARING.load(Relaxed);
        // Below 2 (a KSM page starts with two mappings), negative included.
        for bad in [c"1", c"0", c"-7"] {
            assert_eq!(max_page_sharing_store(input(bad)), Err(EINVAL));
        }
        // Parser errors pass through, as in C.
        assert_eq!(max_page_sharing_store(input(c"2147483648")), Err(ERANGE));
        assert_eq!(max_page_sharing_store(input(c"many")), Err(EINVAL));
        assert_eq!(MAX_PAGE_SHARING.load(Relaxed), before);
        // Writing the current value is always fine, even with KSM pages around.
        assert_eq!(&shown(max_page_sharing_show)[..], b"256\n");
        assert_eq!(max_page_sharing_store(input(c"256")), Ok(()));
    }

    #[test]
    fn use_zero_pages_is_a_bool() {
        let before = USE_ZERO_PAGES.load(Relaxed);
        assert_eq!(use_zero_pages_store(input(c"maybe")), Err(EINVAL));
        assert_eq!(USE_ZERO_PAGES.load(Relaxed), before);
        assert_eq!(use_zero_pages_store(input(c"y")), Ok(()));
        assert_eq!(&shown(use_zero_pages_show)[..], b"1\n");
        assert_eq!(use_zero_pages_store(input(c"0")), Ok(()));
        assert_eq!(&shown(use_zero_pages_show)[..], b"0\n");
        USE_ZERO_PAGES.store(before, Relaxed);
    }

    #[test]
    fn counters_format() {
        let v = shown(pages_volatile_show);
        assert!(v.ends_with(b"\n") && v.len() >= 2);
        let v = shown(general_profit_show);
        assert!(v.ends_with(b"\n"));
    }
}
