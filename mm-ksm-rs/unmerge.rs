// SPDX-License-Identifier: GPL-2.0

//! Unmerging: giving mappings of KSM pages (and KSM-placed zero pages) their own copies again.
//!
//! `break_ksm()` finds KSM pages in a range with a page table walk that skips unpopulated
//! page tables, and faults each one with `FAULT_FLAG_UNSHARE`, which replaces the read-only
//! shared mapping by an exclusive anonymous page. The rmap items are left for ksmd to drop when
//! it next passes, as in mm/ksm.c.

use crate::{node, unstable_tree::remove_rmap_item_from_tree, Ksm};
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
    crate::{mm_slot, page::with_mm, stable_tree, state, KsmGuard},
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
            let ksm = if let Some((folio, _)) = e.normal_folio() {
                folio.is_ksm()
            } else if let Some(folio) = e.migration_folio() {
                folio.is_ksm()
            } else {
                // Not a page: maybe a KSM-placed zero page (`is_ksm_zero()` tests `present`).
                e.pte().is_some_and(|p| p.is_ksm_zero())
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
    // The cursor walks all slots, as a full scan would.
    let mut more = mm_slot::start_pass(ksm);
    while more {
        let r = mm_slot::cursor_slot(ksm).and_then(|s| {
            with_mm(s.mm(), |mg| {
                let mut addr = 0;
                while let Some(vma) = VmaMmapRead::find(mg, addr) {
                    addr = vma.end();
                    if vma.flags() & flags::MERGEABLE == 0 || vma.anon_vma().is_none() {
                        continue;
                    }
                    break_ksm(vma, vma.start(), vma.end())?;
                }
                Ok(())
            })
        });
        if let Some(Err(e)) = r {
            mm_slot::abort_pass(ksm);
            return Err(e);
        }
        // The item cursor is at the start of the slot's list.
        remove_trailing_rmap_items(ksm);
        let (m, removed) = mm_slot::next_slot(ksm, |mm| mm.is_exiting());
        if let Some(s) = removed {
            s.mm().flags_clear(MMF_VM_MERGEABLE);
            s.mm().flags_clear(MMF_VM_MERGE_ANY);
            // Dropping the slot frees it: all its items went above.
        }
        more = m;
    }
    // Clean up the stable nodes, but don't worry if some are still busy.
    stable_tree::remove_all_stable_nodes(ksm);
    ksm.restart_full_scans();
    state::FULL_SCANS.set(ksm, 0);
    Ok(())
}

/// Frees the items from the item cursor on (`remove_trailing_rmap_items()`).
pub(crate) fn remove_trailing_rmap_items(ksm: &mut Ksm<'_>) {
    while let Some(item) = node::cursor_item(ksm) {
        remove_rmap_item_from_tree(ksm, item);
        node::free_at_cursor(ksm);
    }
}
