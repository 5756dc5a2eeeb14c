// SPDX-License-Identifier: GPL-2.0

//! Kernel Samepage Merging, in Rust (`CONFIG_KSM_RUST`).
//!
//! A drop-in replacement for mm/ksm.c with the same interface (include/linux/ksm.h,
//! /sys/kernel/mm/ksm, /proc/<pid>/ksm_stat) and the same algorithm: ksmd scans the pages of
//! mergeable areas; a page whose checksum did not change since the last scan is looked up by
//! content first in the stable tree of KSM pages, then in the unstable tree of candidates of
//! this scan; identical pages are merged into one write-protected KSM page.
//!
//! Modules, one per domain object: [`node`] (rmap items, one per scanned page, and stable
//! nodes, one per KSM page: the two types point to each other), [`stable_tree`],
//! [`unstable_tree`], [`mm_slot`] (registered mms), [`ksmd`] (thread and scan cursor),
//! [`merge`], [`unmerge`], [`hooks`] (the ksm.h entry points), [`sysfs`], [`advisor`],
//! `hotremove` (memory going offline).
//!
//! # Lock order
//!
//! 0. With memory hot-remove, `device_hotplug_lock` and `mem_hotplug_lock`: the memory
//!    notifier (`hotremove`) takes the thread mutex under them, so nothing done under the
//!    thread mutex may take them (`lock_device_hotplug()`, `get_online_mems()`) or wait for
//!    memory to go offline.
//! 1. The thread mutex (C: `ksm_thread_mutex`, in [`node::locked`]): the trees, the rmap
//!    items, the scan position; held by ksmd for a batch and by sysfs writes that change the
//!    trees. Taken through [`lock_ksm`] only, which waits while memory is going offline: code
//!    that looks pages up by a stable node's pfn relies on that (see `hotremove`). Init and
//!    the memory notifier are the only exceptions.
//! 2. mmap lock of one mm (read), taken with `mm_users` held (never for an exiting mm). When
//!    KSM's `mmput()` is the last (the process exited meanwhile), the mm's teardown runs under
//!    the thread mutex too: the mmap write lock, the i_mmap and anon_vma locks, page table
//!    locks, and `exit_aio()`'s wait for the process's in-flight AIO (see `ksmd`).
//! 3. folio lock of a KSM page (trylock for pages being merged).
//! 4. page table lock.
//!
//! [`MMLIST`] (C: `ksm_mmlist_lock`, a spinlock) nests inside any of these and is only held
//! for list updates; nothing sleeps or takes another lock under it.

#![crate_name = "ksm"]

use kernel::{
    bindings,
    mm::rmap::AnonVma,
    prelude::*,
    slab::KmemCache,
    sync::{
        atomic::{Atomic, Relaxed},
        SetOnce,
    },
};

mod advisor;
pub mod hooks;
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
pub mod hotremove;
mod ksmd;
mod merge;
mod mm_slot;
mod node;
mod order;
mod page;
mod stable_tree;
mod state;
#[cfg(CONFIG_SYSFS)]
mod sysfs;
mod trace;
mod unmerge;
mod unstable_tree;

use node::{MmSlot, OwnedSlot};

/// The errno of a result, 0 for success: what the C callers and the trace events want.
pub(crate) fn to_errno(r: Result) -> i32 {
    r.err().map_or(0, |e| e.to_errno())
}

/// Prefix of this crate's log messages.
const __LOG_PREFIX: &[u8] = b"ksm\0";
use node::{RmapItem, StableNode};

pub(crate) use node::locked::{Ksm, KsmGuard};

pub(crate) use mm_slot::MMLIST;

/// Locks the thread mutex to scan or to change the trees: once no memory is going offline
/// (C: `mutex_lock(&ksm_thread_mutex)` and `wait_while_offlining()`, see `hotremove`).
pub(crate) fn lock_ksm() -> KsmGuard {
    #[cfg(CONFIG_MEMORY_HOTREMOVE)]
    return hotremove::lock_online();
    #[cfg(not(CONFIG_MEMORY_HOTREMOVE))]
    node::locked::lock()
}

/// Checksum of a page of zeroes, to spot zero pages cheaply: computed at init with xxhash, and
/// again if [`page::choose_checksum`] chooses CRC-32C.
pub(crate) static ZERO_CHECKSUM: Atomic<u32> = Atomic::new(0);

/// The slab caches.
pub(crate) struct Caches {
    /// Freed to by [`node::Graveyard`] only.
    pub(crate) rmap_item: KmemCache<RmapItem>,
    /// Freed to by [`node::Graveyard`] only.
    pub(crate) stable_node: KmemCache<StableNode>,
    mm_slot: KmemCache<MmSlot>,
}

static CACHES: SetOnce<Caches> = SetOnce::new();

/// The slab caches. They are created at init, before ksmd, sysfs or any hook can run, so
/// `None` (which makes every allocation fail) is only seen if init failed.
fn caches() -> Option<&'static Caches> {
    CACHES.as_ref()
}

/// The slab caches, for freeing an object allocated from them: they exist, since the object
/// does. Warns (and the caller leaks the object) if that is somehow not so.
pub(crate) fn caches_for_free() -> Option<&'static Caches> {
    let c = caches();
    kernel::warn_on!(c.is_none());
    c
}

/// Allocates a stable node (`alloc_stable_node()`). `__GFP_HIGH`, as in C: with plain
/// `GFP_KERNEL` the allocation can stall for long under memory pressure, holding the thread
/// mutex, and set off hung task warnings.
///
/// The node stays allocated until [`node::Graveyard`] frees it, once the thread mutex, held for
/// `'g`, is released.
fn alloc_stable_node<'g>(_ksm: &Ksm<'g>, n: StableNode) -> Result<&'g StableNode> {
    Ok(caches()
        .ok_or(ENOMEM)?
        .stable_node
        .alloc(n, GFP_KERNEL | kernel::alloc::flags::__GFP_HIGH)?
        .leak())
}

/// Allocates an item (`alloc_rmap_item()`, see [`node::alloc_at_cursor`]): may fail quietly
/// under memory pressure, the scan just moves on. The item stays allocated until
/// [`node::Graveyard`] frees it, as for [`alloc_stable_node`].
fn alloc_rmap_item<'g>(_ksm: &Ksm<'g>, item: RmapItem) -> Option<&'g RmapItem> {
    let b = caches()?
        .rmap_item
        .alloc(
            item,
            GFP_KERNEL | kernel::alloc::flags::__GFP_NORETRY | __GFP_NOWARN,
        )
        .ok()?;
    Some(b.leak())
}

/// Allocates an mm slot, freed when the returned owner is dropped.
pub(crate) fn alloc_mm_slot(mm: &kernel::mm::Mm) -> Result<OwnedSlot> {
    caches()
        .ok_or(ENOMEM)?
        .mm_slot
        .alloc(MmSlot::new(mm), GFP_KERNEL)
        .map_err(Into::into)
}

// Safe to use: include/linux/ksm.h declares, and glue.c defines, `ksm_zero_pages` as an
// `atomic_long_t`, a `long` (`isize`) in a `repr(C)` struct, the layout of `Atomic<isize>`
// (checked below). It lives forever and is only accessed atomically.
unsafe extern "C" {
    /// The global count of KSM-placed zero pages.
    #[cfg(CONFIG_SYSFS)]
    safe static ksm_zero_pages: Atomic<isize>;
}

// `atomic_long_t` and `Atomic<isize>` have one layout.
const _: () = assert!(
    size_of::<bindings::atomic_long_t>() == size_of::<Atomic<isize>>()
        && align_of::<bindings::atomic_long_t>() == align_of::<Atomic<isize>>()
);

/// The global count of KSM-placed zero pages (`ksm_zero_pages`). `atomic_long_read()` is a
/// relaxed load, on 32-bit kernels as well (`atomic64_read()` was wrong there).
#[cfg(CONFIG_SYSFS)]
pub(crate) fn ksm_zero_pages_read() -> isize {
    ksm_zero_pages.load(Relaxed)
}

// glue.c: `get_anon_vma()` and `put_anon_vma()` are private to mm/ (mm/internal.h). Taking a
// reference is safe with any `AnonVma`, which is valid (its type invariant): it only increments
// the count. Dropping one is not: the caller must own it.
unsafe extern "C" {
    /// Takes a reference on an anon_vma (`get_anon_vma()`).
    pub(crate) safe fn ksm_rs_get_anon_vma(anon_vma: &AnonVma);

    /// Drops a reference on an anon_vma (`put_anon_vma()`).
    ///
    /// # Safety
    ///
    /// The caller must own a reference on `anon_vma`, and gives it up.
    pub(crate) fn ksm_rs_put_anon_vma(anon_vma: *mut bindings::anon_vma);
}

/// Chooses the page checksum at `late_initcall` time (called from glue.c; see
/// [`page::choose_checksum`]). An export of the crate root, like the other C entry points.
#[no_mangle]
pub extern "C" fn ksm_rs_choose_checksum() {
    page::choose_checksum();
}

/// Sets up KSM at `subsys_initcall` time (called from glue.c).
///
/// # Safety
///
/// Called once, before anything else uses KSM (its locks are initialized here).
#[no_mangle]
pub unsafe extern "C" fn ksm_rs_init() -> i32 {
    // SAFETY: Called once, before anything else uses these locks (the caller's promise). The
    // mm list's lock first: `__ksm_exit()` takes it even if the rest of init fails.
    unsafe {
        MMLIST.init();
        if let Err(e) = node::locked::init() {
            return e.to_errno();
        }
    }
    to_errno(init())
}

/// Sets up what KSM needs besides its locks.
fn init() -> Result {
    #[cfg(CONFIG_MEMORY_HOTREMOVE)]
    hotremove::init()?;
    let zeroes = KVec::from_elem(0u8, kernel::page::PAGE_SIZE, GFP_KERNEL)?;
    ZERO_CHECKSUM.store(page::page_checksum(&zeroes), Relaxed);
    drop(zeroes);
    CACHES.populate(Caches {
        rmap_item: KmemCache::new(c"ksm_rmap_item")?,
        stable_node: KmemCache::new(c"ksm_stable_node")?,
        mm_slot: KmemCache::new(c"ksm_mm_slot")?,
    });
    // ksmd last: nothing after it can fail and leave it running without the memory notifier,
    // which glue.c registers once this returned success.
    #[cfg(CONFIG_SYSFS)]
    sysfs::register()?;
    ksmd::start()?;
    Ok(())
}
