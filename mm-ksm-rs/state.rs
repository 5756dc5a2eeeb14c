// SPDX-License-Identifier: GPL-2.0

//! Tunables and statistics: the values behind `/sys/kernel/mm/ksm`.
//!
//! Tunables are read locklessly by ksmd (as C reads its plain globals) and written by sysfs;
//! changes that must not race with a scan batch are made under the thread mutex
//! ([`crate::lock_ksm`]).
//! The page counters are only changed by ksmd or by `run=2` with that mutex held, and are read
//! locklessly by sysfs and `/proc/<pid>/ksm_stat`, like C's `unsigned long` counters: they are
//! [`Counter`]s, which take the proof that the mutex is held to change them.

use crate::Ksm;
use kernel::sync::atomic::{Atomic, Relaxed};

/// A statistics counter that only the holder of the thread mutex ([`crate::lock_ksm`])
/// changes, and that anyone may read without a lock (C: an `unsigned long` changed under
/// `ksm_thread_mutex`).
///
/// Changing it takes a `&Ksm`, which only the mutex guard hands out: writers are serialized,
/// so a load and a store update it (no atomic read-modify-write needed); both are atomic only
/// so that the lockless readers do not race with them (C: `READ_ONCE()`/`WRITE_ONCE()`).
pub(crate) struct Counter(Atomic<usize>);

impl Counter {
    /// A counter at zero.
    pub(crate) const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// The value, as of some moment during the call.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Relaxed)
    }

    /// Adds `n`, which may be negative (wrapping, as C's unsigned arithmetic).
    pub(crate) fn add(&self, _mutex_held: &Ksm<'_>, n: isize) {
        self.0.store(self.get().wrapping_add_signed(n), Relaxed);
    }

    /// Sets the value.
    pub(crate) fn set(&self, _mutex_held: &Ksm<'_>, v: usize) {
        self.0.store(v, Relaxed);
    }
}

/// Adds to the per-mm counters of `/proc/<pid>/ksm_stat`: `ksm_merging_pages` and
/// `ksm_rmap_items`, changed, like the global counters, only under the thread mutex.
pub(crate) fn add_mm_counters(
    _mutex_held: &Ksm<'_>,
    mm: &kernel::mm::Mm,
    merging_pages: isize,
    rmap_items: isize,
) {
    mm.ksm_add_counters(merging_pages, rmap_items);
}

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
/// `run`: one of the `KSM_RUN_*` values. Without sysfs no one could start ksmd, so it merges
/// from boot on, as in C.
pub(crate) static RUN: Atomic<u32> = Atomic::new(if cfg!(CONFIG_SYSFS) {
    KSM_RUN_STOP
} else {
    KSM_RUN_MERGE
});
/// `use_zero_pages`: merge pages of zeroes with the shared zero page.
pub(crate) static USE_ZERO_PAGES: Atomic<bool> = Atomic::new(false);
/// `max_page_sharing`: the most mappings one KSM page may have.
pub(crate) static MAX_PAGE_SHARING: Atomic<i32> = Atomic::new(256);
/// `stable_node_chains_prune_millisecs`.
pub(crate) static STABLE_NODE_CHAINS_PRUNE_MILLISECS: Atomic<u32> = Atomic::new(2000);

/// `pages_scanned`: pages scanned since boot.
pub(crate) static PAGES_SCANNED: Counter = Counter::new();
/// `pages_shared`: KSM pages in the stable tree.
pub(crate) static PAGES_SHARED: Counter = Counter::new();
/// `pages_sharing`: mappings of KSM pages beyond the first of each (the saving).
pub(crate) static PAGES_SHARING: Counter = Counter::new();
/// `pages_unshared`: pages in the unstable tree.
pub(crate) static PAGES_UNSHARED: Counter = Counter::new();
/// Number of rmap_items allocated.
pub(crate) static RMAP_ITEMS: Counter = Counter::new();
/// `stable_node_chains`.
pub(crate) static STABLE_NODE_CHAINS: Counter = Counter::new();
/// `stable_node_dups`.
pub(crate) static STABLE_NODE_DUPS: Counter = Counter::new();
/// `full_scans`: completed full scans (the scan sequence number).
pub(crate) static FULL_SCANS: Counter = Counter::new();

/// `pages_volatile`: rmap items that are neither shared, sharing nor unshared; the lockless
/// difference can be transiently negative, which is shown as 0 like C does.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn pages_volatile() -> isize {
    let v = RMAP_ITEMS.get() as isize
        - PAGES_SHARED.get() as isize
        - PAGES_SHARING.get() as isize
        - PAGES_UNSHARED.get() as isize;
    v.max(0)
}

/// Whether ksmd should scan now.
pub(crate) fn ksmd_should_run() -> bool {
    RUN.load(Relaxed) & KSM_RUN_MERGE != 0
}

/// `smart_scan`: skip pages that repeatedly failed to merge.
pub(crate) static SMART_SCAN: Atomic<bool> = Atomic::new(true);
/// `pages_skipped`: pages skipped by smart scan.
pub(crate) static PAGES_SKIPPED: Counter = Counter::new();
/// `merge_across_nodes`: one stable/unstable tree for all NUMA nodes (1) or one per node (0).
pub(crate) static MERGE_ACROSS_NODES: Atomic<u32> = Atomic::new(1);
