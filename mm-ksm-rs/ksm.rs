// SPDX-License-Identifier: GPL-2.0

//! Kernel Samepage Merging, in Rust (`CONFIG_KSM_RUST`).
//!
//! A drop-in replacement for mm/ksm.c with the same interface (include/linux/ksm.h,
//! /sys/kernel/mm/ksm, /proc/<pid>/ksm_stat) and the same algorithm: ksmd scans the pages of
//! mergeable areas; a page whose checksum did not change since the last scan is looked up by
//! content first in the stable tree of KSM pages, then in the unstable tree of candidates of
//! this scan; identical pages are merged into one write-protected KSM page.
//!
//! Modules, one per domain object: [`rmap_item`] (the per-page record and its packed address),
//! [`stable_tree`], [`unstable_tree`], [`mm_slot`] (registered mms), [`ksmd`] (thread and scan
//! cursor), [`merge`], [`unmerge`], [`hooks`] (the ksm.h entry points), [`sysfs`], [`advisor`],
//! `hotremove` (memory going offline).
//!
//! # Lock order
//!
//! 0. With memory hot-remove, `device_hotplug_lock` and `mem_hotplug_lock`: the memory
//!    notifier (`hotremove`) takes the thread mutex under them, so nothing done under the
//!    thread mutex may take them (`lock_device_hotplug()`, `get_online_mems()`) or wait for
//!    memory to go offline.
//! 1. [`KSM_THREAD_MUTEX`] (C: `ksm_thread_mutex`): the trees, the rmap items, the scan
//!    position; held by ksmd for a batch and by sysfs writes that change the trees. Taken
//!    through [`lock_ksm`] only, which waits while memory is going offline: code that looks
//!    pages up by a stable node's pfn relies on that (see `hotremove`). Init and the memory
//!    notifier are the only exceptions.
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

use core::ffi::c_void;
use kernel::{
    bindings, hlist,
    prelude::*,
    rbtree::intrusive::Tree,
    slab::{CacheBox, KmemCache},
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
mod order;
mod page;
mod rmap_item;
mod stable_tree;
mod state;
#[cfg(CONFIG_SYSFS)]
mod sysfs;
mod trace;
mod unmerge;
mod unstable_tree;

use mm_slot::{MmList, MmSlot};

/// The errno of a result, 0 for success: what the C callers and the trace events want.
pub(crate) fn to_errno(r: Result) -> i32 {
    r.err().map_or(0, |e| e.to_errno())
}

/// Prefix of this crate's log messages.
const __LOG_PREFIX: &[u8] = b"ksm\0";
use rmap_item::RmapItem;
use stable_tree::StableNode;

/// The scanner's state (C: the trees, `ksm_scan` minus its mm slot, which is in [`MmList`]).
pub(crate) struct Ksm {
    /// Stable tree roots, one per NUMA node (only the first is used with
    /// `merge_across_nodes = 1`).
    stable_roots: KVec<Tree<stable_tree::TreeLinks>>,
    /// Unstable tree roots, likewise.
    unstable_roots: KVec<Tree<rmap_item::UnstableLinks>>,
    /// Stable nodes whose page migrated to another NUMA node, waiting to be put into that
    /// node's tree (C: `migrate_nodes`). The head is in an allocation of its own, not in
    /// `Ksm`: the first node on the list points back at it and writes through that pointer
    /// when it leaves, while a `&mut Ksm` (which claims every byte of `Ksm`) is live.
    migrate_nodes: Option<KBox<hlist::Head<stable_tree::ListLinks>>>,
    /// Next address to scan in the cursor's mm.
    pub(crate) address: usize,
    /// Link to the next item to look at in the cursor's mm's list.
    pub(crate) rmap_list: *mut *mut RmapItem,
    /// Completed full scans.
    pub(crate) seqnr: usize,
}

// SAFETY: Only accessed under KSM_THREAD_MUTEX.
unsafe impl Send for Ksm {}

impl Ksm {
    const fn new() -> Self {
        Self {
            stable_roots: KVec::new(),
            unstable_roots: KVec::new(),
            migrate_nodes: None,
            address: 0,
            rmap_list: core::ptr::null_mut(),
            seqnr: 0,
        }
    }

    /// Allocates one tree root per possible NUMA node, and the migrate list.
    fn alloc_roots(&mut self) -> Result {
        self.migrate_nodes = Some(KBox::new(hlist::Head::new(), GFP_KERNEL)?);
        let n = kernel::mm::nr_node_ids().max(1);
        self.stable_roots = KVec::with_capacity(n, GFP_KERNEL)?;
        self.unstable_roots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            self.stable_roots.push(Tree::new(), GFP_KERNEL)?;
            self.unstable_roots.push(Tree::new(), GFP_KERNEL)?;
        }
        Ok(())
    }

    /// The number of trees in use (C: `ksm_nr_node_ids`).
    pub(crate) fn nr_trees(&self) -> usize {
        if state::MERGE_ACROSS_NODES.load(Relaxed) != 0 {
            1
        } else {
            self.stable_roots.len()
        }
    }

    /// The tree (NUMA node index) for a page frame (`get_kpfn_nid()`).
    pub(crate) fn kpfn_nid(&self, kpfn: usize) -> i32 {
        if state::MERGE_ACROSS_NODES.load(Relaxed) != 0 {
            0
        } else {
            // SAFETY: `kpfn` is the pfn of a page we hold or of a KSM page, which stays in the
            // memory map while we hold the thread mutex through lock_ksm(): that waits while
            // memory is going offline, and the nodes of offlined memory are removed before
            // offlining ends (`hotremove`).
            unsafe { kernel::mm::folio::UnrefFolio::from_pfn(kpfn) }.nid()
        }
    }

    /// The migrate list (none before init).
    pub(crate) fn migrate_nodes(&self) -> Option<&hlist::Head<stable_tree::ListLinks>> {
        self.migrate_nodes.as_deref()
    }

    /// The stable tree of `nid`.
    pub(crate) fn stable_tree(&mut self, nid: i32) -> &mut Tree<stable_tree::TreeLinks> {
        &mut self.stable_roots[nid as usize]
    }

    /// The unstable tree of `nid`.
    pub(crate) fn unstable_tree(&mut self, nid: i32) -> &mut Tree<rmap_item::UnstableLinks> {
        &mut self.unstable_roots[nid as usize]
    }

    /// Forgets the unstable trees at the end and at the start of a full scan: their items are
    /// recognized as stale by their sequence number.
    ///
    /// All of them, not only those of the current `merge_across_nodes` mode (C: only
    /// `ksm_nr_node_ids`): the per-node trees keep what they held while merging across nodes,
    /// items that may be freed since, and switching back to per-node trees in the middle of a
    /// scan would walk them (a use-after-free seen under `ksm_stress -f`). Emptied here, a
    /// tree only ever holds items of the current scan, which unlink themselves when freed.
    pub(crate) fn reset_unstable_tree(&mut self) {
        for tree in self.unstable_roots.iter_mut() {
            tree.clear();
        }
    }
}

kernel::sync::global_lock! {
    // SAFETY: Initialized in ksm_rs_init() before ksmd, sysfs or any hook can use it.
    //
    // Take it with lock_ksm(), never directly: see the lock order above.
    pub(crate) unsafe(uninit) static KSM_THREAD_MUTEX: Mutex<Ksm> = Ksm::new();
}

kernel::sync::global_lock! {
    // SAFETY: Initialized in ksm_rs_init() before ksmd, sysfs or any hook can use it.
    pub(crate) unsafe(uninit) static MMLIST: SpinLock<MmList> = MmList::new();
}

/// A held [`KSM_THREAD_MUTEX`].
pub(crate) type KsmGuard = kernel::sync::lock::GlobalGuard<KSM_THREAD_MUTEX>;

/// Locks [`KSM_THREAD_MUTEX`] to scan or to change the trees: once no memory is going offline
/// (C: `mutex_lock(&ksm_thread_mutex)` and `wait_while_offlining()`, see `hotremove`).
pub(crate) fn lock_ksm() -> KsmGuard {
    #[cfg(CONFIG_MEMORY_HOTREMOVE)]
    return hotremove::lock_online();
    #[cfg(not(CONFIG_MEMORY_HOTREMOVE))]
    KSM_THREAD_MUTEX.lock()
}

/// Checksum of a page of zeroes, to spot zero pages cheaply: computed at init with xxhash, and
/// again if [`page::choose_checksum`] chooses CRC-32C.
pub(crate) static ZERO_CHECKSUM: Atomic<u32> = Atomic::new(0);

/// The slab caches.
pub(crate) struct Caches {
    rmap_item: KmemCache<RmapItem>,
    stable_node: KmemCache<StableNode>,
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
fn caches_for_free() -> Option<&'static Caches> {
    let c = caches();
    kernel::warn_on!(c.is_none());
    c
}

/// Allocates a stable node (`alloc_stable_node()`). `__GFP_HIGH`, as in C: with plain
/// `GFP_KERNEL` the allocation can stall for long under memory pressure, holding the thread
/// mutex, and set off hung task warnings.
pub(crate) fn alloc_stable_node(n: StableNode) -> Result<*mut StableNode> {
    Ok(caches()
        .ok_or(ENOMEM)?
        .stable_node
        .alloc(n, GFP_KERNEL | kernel::alloc::flags::__GFP_HIGH)?
        .into_raw()
        .as_ptr())
}

/// Frees a stable node that is in no tree or list (`free_stable_node()`).
///
/// # Safety
///
/// `p` must come from [`alloc_stable_node`] and not be used afterwards.
pub(crate) unsafe fn free_stable_node(p: *mut StableNode) {
    let Some(c) = caches_for_free() else {
        return;
    };
    // SAFETY: As the caller guarantees.
    drop(unsafe { CacheBox::from_raw(&c.stable_node, core::ptr::NonNull::new_unchecked(p)) });
}

/// Allocates an item for `addr` in `mm` (`alloc_rmap_item()`): may fail quietly under memory
/// pressure, the scan just moves on.
pub(crate) fn alloc_rmap_item(mm: &kernel::mm::Mm, addr: usize) -> Option<*mut RmapItem> {
    let b = caches()?
        .rmap_item
        .alloc(
            RmapItem::new(mm, addr),
            GFP_KERNEL | kernel::alloc::flags::__GFP_NORETRY | __GFP_NOWARN,
        )
        .ok()?;
    Some(b.into_raw().as_ptr())
}

/// Frees an item no longer in any list or tree (`free_rmap_item()`).
pub(crate) fn free_rmap_item(ksm: &Ksm, item: *mut RmapItem) {
    let Some(c) = caches_for_free() else {
        return;
    };
    // SAFETY: `item` comes from alloc_rmap_item() and is unlinked.
    let b = unsafe { CacheBox::from_raw(&c.rmap_item, core::ptr::NonNull::new_unchecked(item)) };
    unmerge::account_rmap_item(ksm, b.mm(), -1);
    drop(b);
}

/// Allocates an mm slot.
pub(crate) fn alloc_mm_slot(mm: &kernel::mm::Mm) -> Result<*mut MmSlot> {
    Ok(caches()
        .ok_or(ENOMEM)?
        .mm_slot
        .alloc(MmSlot::new(mm), GFP_KERNEL)?
        .into_raw()
        .as_ptr())
}

/// Frees an unlinked mm slot, dropping its mm reference (`mmdrop()`).
pub(crate) fn free_mm_slot(slot: *mut MmSlot) {
    let Some(c) = caches_for_free() else {
        return;
    };
    // SAFETY: `slot` comes from alloc_mm_slot() and is unlinked.
    drop(unsafe { CacheBox::from_raw(&c.mm_slot, core::ptr::NonNull::new_unchecked(slot)) });
}

/// The global count of KSM-placed zero pages (`ksm_zero_pages`, defined in glue.c).
#[cfg(CONFIG_SYSFS)]
pub(crate) fn ksm_zero_pages_read() -> isize {
    // SAFETY: `ksm_zero_pages` is an `atomic_long_t`, a `long` (`isize`) in a `repr(C)` struct,
    // that lives forever and is only accessed atomically. `atomic_long_read()` is a relaxed
    // load, on 32-bit kernels as well (`atomic64_read()` was wrong there).
    unsafe { Atomic::<isize>::from_ptr((&raw mut bindings::ksm_zero_pages).cast()) }.load(Relaxed)
}

extern "C" {
    fn ksm_rs_get_anon_vma(anon_vma: *mut c_void);
    fn ksm_rs_put_anon_vma(anon_vma: *mut c_void);
}

/// Takes a reference on an anon_vma (`get_anon_vma()`, private to mm/: see glue.c).
///
/// # Safety
///
/// `anon_vma` must be valid (e.g. the anon_vma of a VMA whose mmap lock is held).
pub(crate) unsafe fn get_anon_vma(anon_vma: *mut bindings::anon_vma) {
    // SAFETY: As the caller guarantees.
    unsafe { ksm_rs_get_anon_vma(anon_vma.cast()) };
}

/// Drops a reference taken by [`get_anon_vma`].
///
/// # Safety
///
/// The caller must own a reference.
pub(crate) unsafe fn put_anon_vma(anon_vma: *mut bindings::anon_vma) {
    // SAFETY: As the caller guarantees.
    unsafe { ksm_rs_put_anon_vma(anon_vma.cast()) };
}

/// Chooses the page checksum at `late_initcall` time (called from glue.c; see
/// [`page::choose_checksum`]). An export of the crate root, like the other C entry points.
#[no_mangle]
pub extern "C" fn ksm_rs_choose_checksum() {
    page::choose_checksum();
}

/// Sets up KSM at `subsys_initcall` time (called from glue.c).
#[no_mangle]
pub extern "C" fn ksm_rs_init() -> i32 {
    match init() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

fn init() -> Result {
    // SAFETY: Called once, before anything else uses these locks.
    unsafe {
        KSM_THREAD_MUTEX.init();
        MMLIST.init();
    }
    KSM_THREAD_MUTEX.lock().alloc_roots()?;
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
