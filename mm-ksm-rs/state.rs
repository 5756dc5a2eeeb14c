// SPDX-License-Identifier: GPL-2.0

//! Tunables and statistics: the values behind `/sys/kernel/mm/ksm`.
//!
//! Tunables are read locklessly by ksmd (as C reads its plain globals) and written by sysfs;
//! changes that must not race with a scan batch are made under [`crate::KSM_THREAD_MUTEX`].
//! The page counters are only changed by ksmd or by `run=2` with that mutex held, and are read
//! locklessly by sysfs and `/proc/<pid>/ksm_stat`, like C's `unsigned long` counters.

use kernel::sync::atomic::{Atomic, Relaxed};

/// `run` value: ksmd stops scanning, merged pages stay merged.
pub(crate) const KSM_RUN_STOP: u32 = 0;
/// `run` value: ksmd scans and merges.
pub(crate) const KSM_RUN_MERGE: u32 = 1;
/// `run` value: unmerge everything and stop.
pub(crate) const KSM_RUN_UNMERGE: u32 = 2;

/// Default of `pages_to_scan`.
pub(crate) const DEFAULT_PAGES_TO_SCAN: u32 = 100;

/// `sleep_millisecs`: how long ksmd sleeps between batches.
pub(crate) static SLEEP_MILLISECS: Atomic<u32> = Atomic::new(20);
/// `pages_to_scan`: how many pages ksmd scans per batch.
pub(crate) static PAGES_TO_SCAN: Atomic<u32> = Atomic::new(DEFAULT_PAGES_TO_SCAN);
/// `run`: one of the `KSM_RUN_*` values.
pub(crate) static RUN: Atomic<u32> = Atomic::new(KSM_RUN_STOP);
/// `use_zero_pages`: merge pages of zeroes with the shared zero page.
pub(crate) static USE_ZERO_PAGES: Atomic<bool> = Atomic::new(false);
/// `max_page_sharing`: the most mappings one KSM page may have.
pub(crate) static MAX_PAGE_SHARING: Atomic<i32> = Atomic::new(256);
/// `stable_node_chains_prune_millisecs`.
pub(crate) static STABLE_NODE_CHAINS_PRUNE_MILLISECS: Atomic<u32> = Atomic::new(2000);

/// `pages_scanned`: pages scanned since boot.
pub(crate) static PAGES_SCANNED: Atomic<usize> = Atomic::new(0);
/// `pages_shared`: KSM pages in the stable tree.
pub(crate) static PAGES_SHARED: Atomic<usize> = Atomic::new(0);
/// `pages_sharing`: mappings of KSM pages beyond the first of each (the saving).
pub(crate) static PAGES_SHARING: Atomic<usize> = Atomic::new(0);
/// `pages_unshared`: pages in the unstable tree.
pub(crate) static PAGES_UNSHARED: Atomic<usize> = Atomic::new(0);
/// Number of rmap_items allocated.
pub(crate) static RMAP_ITEMS: Atomic<usize> = Atomic::new(0);
/// `stable_node_chains`.
pub(crate) static STABLE_NODE_CHAINS: Atomic<usize> = Atomic::new(0);
/// `stable_node_dups`.
pub(crate) static STABLE_NODE_DUPS: Atomic<usize> = Atomic::new(0);
/// `full_scans`: completed full scans (the scan sequence number).
pub(crate) static FULL_SCANS: Atomic<usize> = Atomic::new(0);

/// Adds `n` (which may be negative) to one of the counters.
#[inline]
pub(crate) fn count(c: &Atomic<usize>, n: isize) {
    c.store(c.load(Relaxed).wrapping_add_signed(n), Relaxed);
}

/// `pages_volatile`: rmap items that are neither shared, sharing nor unshared; the lockless
/// difference can be transiently negative, which is shown as 0 like C does.
pub(crate) fn pages_volatile() -> isize {
    let v = RMAP_ITEMS.load(Relaxed) as isize
        - PAGES_SHARED.load(Relaxed) as isize
        - PAGES_SHARING.load(Relaxed) as isize
        - PAGES_UNSHARED.load(Relaxed) as isize;
    v.max(0)
}

/// Whether ksmd should scan now.
pub(crate) fn ksmd_should_run() -> bool {
    RUN.load(Relaxed) & KSM_RUN_MERGE != 0
}

/// `smart_scan`: skip pages that repeatedly failed to merge.
pub(crate) static SMART_SCAN: Atomic<bool> = Atomic::new(true);
/// `pages_skipped`: pages skipped by smart scan.
pub(crate) static PAGES_SKIPPED: Atomic<usize> = Atomic::new(0);
/// `merge_across_nodes`: one stable/unstable tree for all NUMA nodes (1) or one per node (0).
pub(crate) static MERGE_ACROSS_NODES: Atomic<u32> = Atomic::new(1);
