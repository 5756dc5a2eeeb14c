// SPDX-License-Identifier: GPL-2.0

//! The entry points of include/linux/ksm.h, called by C mm code.
//!
//! This is the C boundary: raw pointers from C become abstraction types here, with the lock
//! the C caller holds stated in each SAFETY comment, and errors become errnos once, here.
//! `#[export]` checks each signature against the C declaration at build time.

use crate::{
    ksmd, mm_slot,
    node::{self, folio_node_ptr, RMAP_ITEM_SIZE},
    state::{self, KSM_RUN_UNMERGE},
    to_errno,
    unmerge::break_ksm,
    MMLIST,
};
use core::mem::ManuallyDrop;
use kernel::{
    bindings,
    error::{code::*, Result},
    kthread::cond_resched,
    mm::{
        folio::{Folio, FolioLockGuard},
        pgtable::{MmapWriteLocked, VmaMmapWrite},
        rmap::RmapWalk,
        virt::{flags, VmaRef},
        Mm, MmapLocked, MMF_VM_MERGEABLE, MMF_VM_MERGE_ANY,
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::{aref::ARef, atomic::Relaxed},
};

/// Whether areas with these flags may be merged (`ksm_compatible()`): not shared, hugetlb,
/// droppable, special (IO, PFNMAP, MIXEDMAP, DONTEXPAND), DAX, nor with the architecture's
/// flags that KSM must leave alone (`VM_SAO` on powerpc, `VM_SPARC_ADI` on sparc).
fn ksm_compatible(vm_flags: bindings::vm_flags_t, dax: bool) -> bool {
    // Safe to read: glue.c defines it, `const`, with this type, so it never changes.
    unsafe extern "C" {
        /// glue.c: `VM_SAO | VM_SPARC_ADI`, as far as the architecture defines them.
        safe static ksm_rs_arch_unmergeable: bindings::vm_flags_t;
    }
    let arch = ksm_rs_arch_unmergeable;
    // `VM_DROPPABLE` is 0 on most 32-bit architectures: only in the mask, never tested alone.
    vm_flags & (flags::SHARED | flags::MAYSHARE | flags::HUGETLB | flags::DROPPABLE) == 0
        && vm_flags & flags::SPECIAL == 0
        && vm_flags & arch == 0
        && !dax
}

fn vma_ksm_compatible(vma: &VmaRef) -> bool {
    ksm_compatible(vma.flags(), vma.is_dax())
}

/// Registers `mm` with KSM (`__ksm_enter()`).
fn ksm_enter(mm: &Mm) -> Result {
    let slot = crate::alloc_mm_slot(mm)?;
    let res = mm_slot::reserve()?;
    let (needs_wakeup, refused) = {
        let mut l = MMLIST.lock();
        let needs_wakeup = l.is_empty();
        // While merging (or stopped), insert just behind the cursor to let the area settle
        // before it is scanned: a fork followed by exec should not cost an rmap list. While
        // unmerging, insert ahead of the cursor (at the tail) so the new mm is not missed.
        let at_tail = state::RUN.load(Relaxed) & KSM_RUN_UNMERGE != 0;
        (needs_wakeup, l.insert(slot, at_tail, res).err())
    };
    // C: registered twice is a caller bug. The slot is freed outside the spinlock.
    if kernel::warn_on!(refused.is_some()) {
        return Err(EEXIST);
    }
    mm.flags_set(MMF_VM_MERGEABLE);
    if needs_wakeup {
        ksmd::wake_thread();
    }
    crate::trace::enter(mm);
    Ok(())
}

/// Registers `mm` with KSM (fork, exec with `MMF_VM_MERGE_ANY`, first mergeable area).
///
/// # Safety
///
/// `mm` must be a live mm (the caller's own, or a child being forked).
#[export]
pub unsafe extern "C" fn __ksm_enter(mm: *mut bindings::mm_struct) -> i32 {
    // SAFETY: The caller passes a live mm (its own, or a child being forked).
    to_errno(ksm_enter(unsafe { Mm::from_raw(mm) }))
}

/// Unregisters an exiting `mm` (`__ksm_exit()`), from exit_mmap().
///
/// If the slot has no items and is not the scan cursor, it is freed now. Otherwise it is
/// moved right after the cursor and left for ksmd, which will find the mm exiting (it cannot
/// take `mm_users` any more) and free the items and the slot. ksmd only touches page tables
/// while holding `mm_users`, so no mmap lock handshake with the exit is needed (C takes and
/// drops the write lock here to wait for a ksmd that holds only the read lock).
///
/// # Safety
///
/// `mm` must be an mm being torn down, still referenced by the caller.
#[export]
pub unsafe extern "C" fn __ksm_exit(mm: *mut bindings::mm_struct) {
    // SAFETY: The caller (exit_mmap) holds a reference on the mm.
    let mm = unsafe { Mm::from_raw(mm) };
    let easy = MMLIST.lock().exit(mm);
    if let Some(slot) = easy {
        mm.flags_clear(MMF_VM_MERGE_ANY);
        mm.flags_clear(MMF_VM_MERGEABLE);
        // Freed outside the spinlock.
        drop(slot);
    }
    crate::trace::exit(mm);
}

/// `madvise(MADV_MERGEABLE / MADV_UNMERGEABLE)` on one area: `ksm_madvise()`, through the
/// exported C wrapper in glue.c.
///
/// # Safety
///
/// Called by madvise with the mmap write lock held; `vm_flags` points to the flags the caller
/// will apply to `vma`.
#[no_mangle]
pub unsafe extern "C" fn ksm_rs_madvise(
    vma: *mut bindings::vm_area_struct,
    start: usize,
    end: usize,
    advice: i32,
    vm_flags: *mut bindings::vm_flags_t,
) -> i32 {
    // SAFETY: The caller's promises: madvise (and mremap, and KVM on powerpc) hold the mmap
    // write lock, which is more than `VmaRef` needs and what `VmaMmapWrite` needs, and
    // `vm_flags` is valid for writes, by us alone during the call.
    let (vma, wvma, vm_flags) = unsafe {
        let vma = VmaRef::from_raw(vma);
        (vma, VmaMmapWrite::from_vma(vma), &mut *vm_flags)
    };
    let mm: &Mm = vma.mm();
    match advice as u32 {
        bindings::MADV_MERGEABLE => {
            if vma.flags() & flags::MERGEABLE != 0 || !vma_ksm_compatible(vma) {
                return 0;
            }
            if !mm.flags_test(MMF_VM_MERGEABLE) {
                if let Err(e) = ksm_enter(mm) {
                    return e.to_errno();
                }
            }
            *vm_flags |= flags::MERGEABLE;
        }
        bindings::MADV_UNMERGEABLE => {
            if *vm_flags & flags::MERGEABLE == 0 {
                return 0;
            }
            if vma.anon_vma().is_some() {
                if let Err(e) = break_ksm(wvma, start, end) {
                    return e.to_errno();
                }
            }
            *vm_flags &= !flags::MERGEABLE;
        }
        _ => {}
    }
    0
}

// ksm_rs_madvise() has exactly the signature of ksm_madvise() in include/linux/ksm.h.
const _: () = {
    let _check: [unsafe extern "C" fn(
        *mut bindings::vm_area_struct,
        usize,
        usize,
        i32,
        *mut bindings::vm_flags_t,
    ) -> i32; 2] = [bindings::ksm_madvise, ksm_rs_madvise];
};

fn should_add_vma(vm_flags: bindings::vm_flags_t, dax: bool) -> bool {
    vm_flags & flags::MERGEABLE == 0 && ksm_compatible(vm_flags, dax)
}

/// The flags of a new area of `mm`, made mergeable under `PR_SET_MEMORY_MERGE`
/// (`ksm_vma_flags()`).
///
/// # Safety
///
/// `mm` is the caller's live mm, `file` null or a valid file.
#[export]
pub unsafe extern "C" fn ksm_vma_flags(
    mm: *mut bindings::mm_struct,
    file: *const bindings::file,
    mut vma_flags: bindings::vma_flags_t,
) -> bindings::vma_flags_t {
    // SAFETY: As the caller guarantees, `mm` is live, and `file` null or valid.
    let (mm, dax) = unsafe { (Mm::from_raw(mm), bindings::file_is_dax(file)) };
    // The legacy flags are the first word of the bitmap.
    let word = &mut vma_flags.__vma_flags[0];
    if mm.flags_test(MMF_VM_MERGE_ANY) && should_add_vma(*word, dax) {
        *word |= flags::MERGEABLE;
        // Usually set already; ksmd clears it after a scan that found nothing mergeable.
        if !mm.flags_test(MMF_VM_MERGEABLE) {
            let _ = ksm_enter(mm);
        }
    }
    vma_flags
}

fn add_vmas(mm: MmapWriteLocked<'_>) {
    let _ = mm.for_each_vma(|vma| {
        if should_add_vma(vma.flags(), vma.is_dax()) {
            // SAFETY: `should_add_vma()` checked `ksm_compatible()`.
            unsafe { vma.set_mergeable() };
        }
        Ok(())
    });
}

fn del_vmas(mm: MmapWriteLocked<'_>) -> Result {
    mm.for_each_vma(|vma| {
        if vma.flags() & flags::MERGEABLE == 0 {
            return Ok(());
        }
        if vma.anon_vma().is_some() {
            break_ksm(vma, vma.start(), vma.end())?;
        }
        vma.clear_mergeable();
        Ok(())
    })
}

/// `prctl(PR_SET_MEMORY_MERGE, 1)`: every compatible area, now and later, is mergeable
/// (`ksm_enable_merge_any()`); the mmap write lock is held.
///
/// # Safety
///
/// `mm` must be the caller's live mm, its mmap write lock held.
#[export]
pub unsafe extern "C" fn ksm_enable_merge_any(mm: *mut bindings::mm_struct) -> i32 {
    // SAFETY: The caller's live mm, its mmap write lock held.
    let wmm = unsafe { MmapWriteLocked::assume_locked(Mm::from_raw(mm)) };
    let mm = wmm.mm();
    if mm.flags_test(MMF_VM_MERGE_ANY) {
        return 0;
    }
    if !mm.flags_test(MMF_VM_MERGEABLE) {
        if let Err(e) = ksm_enter(mm) {
            return e.to_errno();
        }
    }
    mm.flags_set(MMF_VM_MERGE_ANY);
    add_vmas(wmm);
    0
}

fn disable_merge_any(wmm: MmapWriteLocked<'_>) -> Result {
    let mm = wmm.mm();
    if !mm.flags_test(MMF_VM_MERGE_ANY) {
        return Ok(());
    }
    // Unmerging failed: the whole operation fails and merging stays enabled everywhere.
    if let Err(e) = del_vmas(wmm) {
        add_vmas(wmm);
        return Err(e);
    }
    mm.flags_clear(MMF_VM_MERGE_ANY);
    Ok(())
}

/// `prctl(PR_SET_MEMORY_MERGE, 0)`: unmerge and stop merging everything
/// (`ksm_disable_merge_any()`); the mmap write lock is held.
///
/// # Safety
///
/// `mm` must be the caller's live mm, its mmap write lock held.
#[export]
pub unsafe extern "C" fn ksm_disable_merge_any(mm: *mut bindings::mm_struct) -> i32 {
    // SAFETY: The caller's live mm, its mmap write lock held.
    to_errno(disable_merge_any(unsafe {
        MmapWriteLocked::assume_locked(Mm::from_raw(mm))
    }))
}

/// Disables KSM for the whole mm (`ksm_disable()`, used by s390); mmap write lock held.
///
/// # Safety
///
/// `mm` must be a live mm, its mmap write lock held.
#[export]
pub unsafe extern "C" fn ksm_disable(mm: *mut bindings::mm_struct) -> i32 {
    // SAFETY: The caller's live mm, its mmap write lock held.
    let wmm = unsafe { MmapWriteLocked::assume_locked(Mm::from_raw(mm)) };
    if !wmm.mm().flags_test(MMF_VM_MERGEABLE) {
        return 0;
    }
    if wmm.mm().flags_test(MMF_VM_MERGE_ANY) {
        return to_errno(disable_merge_any(wmm));
    }
    to_errno(del_vmas(wmm))
}

/// Whether any area of the mm is mergeable (`/proc/<pid>/ksm_stat`); mmap lock held.
///
/// # Safety
///
/// `mm` must be a live mm, its mmap lock held (read suffices).
#[export]
pub unsafe extern "C" fn ksm_process_mergeable(mm: *mut bindings::mm_struct) -> bool {
    // SAFETY: The caller's live mm, whose mmap lock the caller holds throughout the call, and
    // whose VMA tree nothing changes meanwhile.
    let mm = unsafe { MmapLocked::assume_locked(Mm::from_raw(mm)) };
    let mut addr = 0;
    while let Some(vma) = mm.find_vma(addr) {
        if vma.flags() & flags::MERGEABLE != 0 {
            return true;
        }
        addr = vma.end();
    }
    false
}

/// Memory saved for the mm minus the cost of its rmap items (`ksm_process_profit()`).
///
/// # Safety
///
/// `mm` must be a valid mm.
#[export]
pub unsafe extern "C" fn ksm_process_profit(mm: *mut bindings::mm_struct) -> kernel::ffi::c_long {
    // SAFETY: The caller's live mm.
    let mm = unsafe { Mm::from_raw(mm) };
    ((mm.ksm_merging_pages() as isize + mm.ksm_zero_pages()) * PAGE_SIZE as isize
        - (mm.ksm_rmap_items() * RMAP_ITEM_SIZE) as isize) as kernel::ffi::c_long
}

/// Points the stable node of a KSM folio at the folio it migrates to
/// (`folio_migrate_ksm()`); both folios are locked by the caller.
///
/// # Safety
///
/// Both folios must be valid and locked, `newfolio` replacing `folio` in migration.
#[export]
pub unsafe extern "C" fn folio_migrate_ksm(
    newfolio: *mut bindings::folio,
    folio: *mut bindings::folio,
) {
    // SAFETY: Both folios are valid and locked by the migration code, which unlocks them: the
    // guards must not.
    let (new, old) = unsafe {
        (
            ManuallyDrop::new(FolioLockGuard::assume_locked(Folio::from_raw(newfolio))),
            ManuallyDrop::new(FolioLockGuard::assume_locked(Folio::from_raw(folio))),
        )
    };
    node::migrate_folio(&old, &new);
}

extern "C" {
    fn ksm_rs_same_anon_root(folio: *mut core::ffi::c_void, vma: *mut core::ffi::c_void) -> bool;
}

/// Calls `rwc->rmap_one` for every mapping of a KSM folio (`rmap_walk_ksm()`).
///
/// The folio lock keeps the node's list stable. Each item's anon_vma tree is searched for the
/// page index the item recorded: first the areas of the item's own mm, then, if still needed,
/// areas of other mms forked from it since ksmd last passed.
///
/// # Safety
///
/// `folio` must be a locked KSM folio and `rwc` a valid walk control.
#[export]
pub unsafe extern "C" fn rmap_walk_ksm(
    folio: *mut bindings::folio,
    rwc: *mut bindings::rmap_walk_control,
) {
    // SAFETY: The caller passes a locked KSM folio, which it unlocks (the guard must not), and
    // a valid control structure, ours during the call, for a walk of that folio.
    let (mut locked, mut walk) = unsafe {
        (
            ManuallyDrop::new(FolioLockGuard::assume_locked(Folio::from_raw(folio))),
            RmapWalk::from_raw(rwc, folio),
        )
    };
    for search_new_forks in [false, true] {
        for m in node::folio_mappings(&mut locked) {
            let (item, av, index) = (m.item, m.anon_vma, m.index);
            let addr = item.address().addr();
            cond_resched();
            let guard = match av.try_lock_read() {
                Some(g) => g,
                None if walk.try_lock() => {
                    walk.set_contended();
                    return;
                }
                None => av.lock_read(),
            };
            // KSM folios are small: the page index the item recorded when its page was merged
            // finds the areas that may map it (mremap() unmerges KSM pages).
            for vma in guard.vmas(index) {
                cond_resched();
                if addr < vma.start() || addr >= vma.end() {
                    continue;
                }
                // First the area of the item's own mm; then, if there is still work to do,
                // areas of other mms, forked from it since ksmd passed.
                if vma.is_in(item.mm()) == search_new_forks || walk.invalid_vma(vma) {
                    continue;
                }
                if !walk.rmap_one(vma, addr) || walk.done() {
                    return;
                }
            }
        }
    }
}

/// The processes to kill for a memory error, collected through C (glue.c).
#[cfg(CONFIG_MEMORY_FAILURE)]
mod kill {
    use core::{ffi::c_void, marker::PhantomData};
    use kernel::{bindings, mm::rmap::AnonVma};

    /// What `collect_procs_ksm()` was called with: the page hit by the error, and the list of
    /// tasks to kill (C: `struct ksm_rs_collect`).
    ///
    /// # Invariants
    ///
    /// `page` is a valid page of a KSM folio (never ZONE_DEVICE), and `to_kill` a valid list of
    /// `struct to_kill`, used by the current task alone, for `'a`.
    #[repr(C)]
    pub(super) struct Collect<'a> {
        /// A `struct page`.
        page: *const c_void,
        to_kill: *mut bindings::list_head,
        force_early: i32,
        _p: PhantomData<&'a mut bindings::list_head>,
    }

    // `struct ksm_rs_collect`: two pointers and an int, padded to a pointer's size.
    const _: () = assert!(size_of::<Collect<'_>>() == 3 * size_of::<usize>());

    // Safe to call: a `Collect` is valid (its type invariant), and so is an `AnonVma`; any
    // index and address do. It read-locks the anon_vma itself.
    unsafe extern "C" {
        safe fn ksm_rs_collect_procs(av: &AnonVma, index: usize, addr: usize, c: &Collect<'_>);
    }

    impl<'a> Collect<'a> {
        /// # Safety
        ///
        /// `page` must be a valid page of a KSM folio (so never ZONE_DEVICE memory, whose
        /// kill path walks page tables at the given address), and `to_kill` a valid list of
        /// `struct to_kill` that only the current task uses, for `'a`.
        pub(super) unsafe fn new(
            page: *const bindings::page,
            to_kill: *mut bindings::list_head,
            force_early: i32,
        ) -> Self {
            // INVARIANT: As the caller guarantees.
            Self {
                page: page.cast(),
                to_kill,
                force_early,
                _p: PhantomData,
            }
        }

        /// Adds the tasks that map the page at `addr` through `anon_vma`, in which it has
        /// `index` (`add_to_kill_ksm()`).
        pub(super) fn add(&self, anon_vma: &AnonVma, index: usize, addr: usize) {
            ksm_rs_collect_procs(anon_vma, index, addr, self);
        }
    }
}

/// Collects the processes mapping a KSM page hit by a memory error (`collect_procs_ksm()`).
#[cfg(CONFIG_MEMORY_FAILURE)]
/// # Safety
///
/// `folio` must be a locked folio, `page` its page, `to_kill` a valid list.
#[export]
pub unsafe extern "C" fn collect_procs_ksm(
    folio: *const bindings::folio,
    page: *const bindings::page,
    to_kill: *mut bindings::list_head,
    force_early: i32,
) {
    // SAFETY: The caller passes a locked folio, which it unlocks (the guard must not), its
    // page, and its list of tasks to kill, for the call; the walk below finds mappings only if
    // the folio is KSM (never ZONE_DEVICE).
    let (mut locked, collect) = unsafe {
        (
            ManuallyDrop::new(FolioLockGuard::assume_locked(Folio::from_raw(folio))),
            kill::Collect::new(page, to_kill, force_early),
        )
    };
    for m in node::folio_mappings(&mut locked) {
        collect.add(m.anon_vma, m.index, m.item.address().addr());
    }
}

/// Whether a swapped-in `folio` must be copied before it is mapped at `addr` of `vma`
/// (`ksm_might_need_to_copy()`): a KSM folio that lost its stable node (or while unmerging
/// everything), or an anonymous folio of another anon_vma or index (swapped in by another
/// process, maybe a former sharer of a KSM page). Returns the folio itself, a new locked copy,
/// null if there is no memory for a copy, or `ERR_PTR(-EHWPOISON)`.
///
/// # Safety
///
/// `folio` must be a locked swap-cache folio and `vma` a VMA whose mmap or VMA lock is held.
#[export]
pub unsafe extern "C" fn ksm_might_need_to_copy(
    folio: *mut bindings::folio,
    vma: *mut bindings::vm_area_struct,
    addr: usize,
) -> *mut bindings::folio {
    // SAFETY: As the caller guarantees.
    let (f, vma) = unsafe { (Folio::from_raw(folio), VmaRef::from_raw(vma)) };
    if f.is_large() {
        return folio;
    }
    if f.is_ksm() {
        if !folio_node_ptr(f).is_null() && state::RUN.load(Relaxed) & KSM_RUN_UNMERGE == 0 {
            // No need to copy it.
            return folio;
        }
    } else {
        if f.anon_vma().is_null() {
            return folio;
        }
        let same_index = f.index() == vma.linear_anon_page_index(addr);
        // SAFETY: A locked folio and a VMA whose lock the caller holds. The folio's anon_vma
        // may be gone: the read of its root is mm/ksm.c's race (see glue.c).
        if same_index && unsafe { ksm_rs_same_anon_root(folio.cast(), vma.as_ptr().cast()) } {
            // Still no need to copy it.
            return folio;
        }
    }
    if f.is_hwpoison(0) {
        return EHWPOISON.to_ptr();
    }
    if !f.is_uptodate() {
        // Let do_swap_page() report the error.
        return folio;
    }
    match f.copy_for_user(0, vma, addr) {
        Ok(Some(new)) => {
            #[cfg(CONFIG_SWAP)]
            kernel::mm::count_vm_event(bindings::vm_event_item_KSM_SWPIN_COPY);
            // The caller takes over the reference and the lock.
            ARef::into_raw(new).as_ptr().cast()
        }
        Ok(None) => core::ptr::null_mut(),
        Err(e) => e.to_ptr(),
    }
}
