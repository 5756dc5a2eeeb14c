// SPDX-License-Identifier: GPL-2.0

//! Unmerging: giving mappings of KSM pages (and KSM-placed zero pages) their own copies again.
//!
//! `break_ksm()` finds KSM pages in a range with a page table walk that skips unpopulated
//! page tables, and faults each one with `FAULT_FLAG_UNSHARE`, which replaces the read-only
//! shared mapping by an exclusive anonymous page. The rmap items are left for ksmd to drop when
//! it next passes, as in mm/ksm.c.

use crate::{state, unstable_tree::remove_rmap_item_from_tree, Ksm};
use core::ops::ControlFlow;
use kernel::{
    bindings,
    error::{code::*, Result},
    kthread::cond_resched,
    mm::pgtable::{self, MmapLockedVma},
};
// What only `run = 2` (a sysfs store) needs.
#[cfg(CONFIG_SYSFS)]
use {
    crate::{mm_slot::MmSlot, page::with_mm, stable_tree, KsmGuard, MMLIST},
    kernel::mm::{pgtable::VmaMmapRead, virt::flags, MMF_VM_MERGEABLE, MMF_VM_MERGE_ANY},
};

/// How many KSM pages [`break_ksm`] unshares per page table walk, with the mmap lock held for
/// write.
const BATCH: usize = 16;

/// Unshares every KSM page and KSM-placed zero page mapped in `[start, end)` of `vma`
/// (`break_ksm()`).
///
/// Fails with `ERESTARTSYS` on a pending signal and with `ENOMEM` if a fault runs out of
/// memory; retries otherwise, since the fault may back out on a race. The mmap lock is held
/// for read (ksmd, `run = 2`) or for write (madvise, prctl), as the type of `vma` says: with
/// the write lock the walk also write-locks the VMA (C: `lock_vma`).
///
/// mm/ksm.c walks the page tables once per KSM page. With the write lock, one walk here
/// collects up to [`BATCH`] of them, which are then faulted one after the other. Nothing that
/// needs the mmap lock or the VMA lock (`MADV_DONTNEED`, `munmap`, `mremap`, page faults) can
/// change those PTEs meanwhile; reclaim and migration can, and the fault then swaps the page
/// in or waits for the migration, and truncating the file of a private file mapping can zap
/// them, and the fault maps the page cache page or fails with SIGBUS: the same races C has
/// between its walk and its fault, in a wider window. The next walk starts again at the first
/// address of the batch, so that a fault that backed out is retried, exactly as C retries;
/// the loop ends, as C's, when a walk finds no KSM page. With the read lock, `MADV_DONTNEED`
/// could zap a page after the walk and the fault would map a new one: one page per walk
/// there, as C.
pub(crate) fn break_ksm<V: MmapLockedVma>(vma: &V, start: usize, end: usize) -> Result {
    let batch = if V::EXCLUSIVE { BATCH } else { 1 };
    let mut addr = start;
    loop {
        cond_resched();
        let mut found = [0usize; BATCH];
        let mut n = 0;
        // The page table of the last entry seen: signals are checked once per table, as in C.
        let mut table = usize::MAX;
        pgtable::walk_mapped(vma, addr, end, |e| {
            let t = e.addr() / pgtable::PMD_SIZE;
            if t != table {
                table = t;
                if kernel::current!().signal_pending() {
                    return Err(ERESTARTSYS);
                }
            }
            // KSM pages stay KSM pages until freed: no need to wait for a migration to end.
            let folio = e.normal_folio().map(|(f, _)| f);
            let ksm = match folio.or_else(|| e.migration_folio()) {
                Some(f) => f.is_ksm(),
                // Not a page: maybe a KSM-placed zero page (`is_ksm_zero()` tests `present`).
                None => e.pte().is_some_and(|p| p.is_ksm_zero()),
            };
            if !ksm {
                return Ok(ControlFlow::Continue(()));
            }
            let Some(slot) = found.get_mut(n) else {
                // Not reached: the walk stops when the batch is full.
                return Ok(ControlFlow::Break(e.addr()));
            };
            *slot = e.addr();
            n += 1;
            Ok(if n == batch {
                ControlFlow::Break(e.addr())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if n == 0 {
            return Ok(());
        }
        addr = found[0];
        for &a in &found[..n] {
            let ret = pgtable::fault_unshare(vma.as_read(), a);
            // SIGBUS: racing truncation, which also unmaps the page. OOM: report it, never
            // loop.
            if ret & bindings::VM_FAULT_OOM != 0 {
                return Err(ENOMEM);
            }
            if ret & (bindings::VM_FAULT_SIGBUS | bindings::VM_FAULT_SIGSEGV) != 0 {
                return Ok(());
            }
        }
    }
}

/// Unmerges all mergeable areas of all mms and frees all rmap items and stable nodes
/// (`run = 2`; `unmerge_and_remove_all_rmap_items()`).
#[cfg(CONFIG_SYSFS)]
pub(crate) fn unmerge_and_remove_all_rmap_items(g: &mut KsmGuard) -> Result {
    let ksm = &mut g.ksm();
    let mut slot = {
        let mut l = MMLIST.lock();
        l.cursor = l.next_of(core::ptr::null_mut());
        l.cursor
    };
    while !slot.is_null() {
        // SAFETY: The cursor slot is not freed by anyone but us (ksm_exit leaves it alone).
        // Shared: its list links may change under MMLIST meanwhile (they are `UnsafeCell`s);
        // its item list is ours (thread mutex), reached through the raw pointer.
        let s: &MmSlot = unsafe { &*slot };
        let r = with_mm(&s.mm, |mg| {
            let mut addr = 0;
            while let Some(vma) = VmaMmapRead::find(mg, addr) {
                addr = vma.end();
                if vma.flags() & flags::MERGEABLE == 0 || vma.anon_vma().is_null() {
                    continue;
                }
                break_ksm(vma, vma.start(), vma.end())?;
            }
            Ok(())
        });
        if let Some(Err(e)) = r {
            MMLIST.lock().cursor = core::ptr::null_mut();
            return Err(e);
        }
        // SAFETY: `slot` is valid (above); only the thread mutex holder uses `rmap_list`.
        remove_trailing_rmap_items(ksm, unsafe { &raw mut (*slot).rmap_list });
        let exiting = s.mm.is_exiting();
        let mut l = MMLIST.lock();
        l.cursor = l.next_of(slot);
        if exiting {
            l.remove(slot);
            drop(l);
            s.mm.flags_clear(MMF_VM_MERGEABLE);
            s.mm.flags_clear(MMF_VM_MERGE_ANY);
            // SAFETY: Off the list and the map, with no items left (above); not used again.
            unsafe { crate::free_mm_slot(slot) };
        } else {
            drop(l);
        }
        slot = MMLIST.lock().cursor;
    }
    // Clean up the stable nodes, but don't worry if some are still busy.
    stable_tree::remove_all_stable_nodes(ksm);
    ksm.seqnr = 0;
    state::FULL_SCANS.set(ksm, 0);
    Ok(())
}

/// Frees the items from `*list` on (`remove_trailing_rmap_items()`).
pub(crate) fn remove_trailing_rmap_items(ksm: &mut Ksm<'_>, list: *mut *mut crate::node::RmapItem) {
    // SAFETY: `list` points into an mm slot's item list, owned by the scanner (mutex held). An
    // item unlinked from it and taken out of the trees is in no list or tree, and is freed.
    unsafe {
        while !(*list).is_null() {
            let item = *list;
            *list = (*item).rmap_list;
            remove_rmap_item_from_tree(ksm, &mut *item);
            crate::free_rmap_item(ksm, item);
        }
    }
}

/// Accounting helper shared with the scanner.
pub(crate) fn account_rmap_item(ksm: &Ksm<'_>, mm: &kernel::mm::Mm, n: isize) {
    state::RMAP_ITEMS.add(ksm, n);
    state::add_mm_counters(ksm, mm, 0, n);
}
