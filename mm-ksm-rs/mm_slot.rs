// SPDX-License-Identifier: GPL-2.0

//! mm slots: the address spaces registered with KSM, in scan order.
//!
//! Each mm that has (or had) mergeable areas has an [`MmSlot`], found by mm in a map and
//! linked in a list that the scan cursor walks. Both live in [`MmList`] under
//! [`crate::MMLIST`], a spinlock (C: `ksm_mmlist_lock`); the slot's `rmap_list` belongs to the
//! scanner and is protected by the thread mutex ([`crate::lock_ksm`]).
//!
//! A slot holds an `mmgrab()` reference on its mm, so the `mm_struct` outlives the slot; the
//! address space itself may be gone (`mm_users == 0`), which the scanner notices and then frees
//! the slot.

use crate::node::RmapItem;
use core::cell::UnsafeCell;
use kernel::{
    alloc::flags::GFP_KERNEL,
    mm::Mm,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::aref::ARef,
};

/// KSM's record of one registered mm (`struct ksm_mm_slot`).
///
/// The list links are changed under [`crate::MMLIST`] by whoever registers or unregisters a
/// neighbouring mm, while the scanner may hold a shared reference to this slot: they are in
/// `UnsafeCell`s, and only accessed through raw pointers with the spinlock held.
pub(crate) struct MmSlot {
    prev: UnsafeCell<*mut MmSlot>,
    next: UnsafeCell<*mut MmSlot>,
    /// The mm, with an `mmgrab()` reference.
    pub(crate) mm: ARef<Mm>,
    /// The mm's rmap items in address order (scanner only).
    pub(crate) rmap_list: *mut RmapItem,
}

// SAFETY: The raw pointers are only used under KSM's locks.
unsafe impl Send for MmSlot {}

impl MmSlot {
    /// A new unlinked slot for `mm`.
    pub(crate) fn new(mm: &Mm) -> Self {
        Self {
            prev: UnsafeCell::new(core::ptr::null_mut()),
            next: UnsafeCell::new(core::ptr::null_mut()),
            mm: ARef::from(mm),
            rmap_list: core::ptr::null_mut(),
        }
    }
}

/// The list and map of mm slots, and the scan cursor.
///
/// # Invariants
///
/// `first`..`last` is a doubly linked list of live slots; every listed slot is in `map` under
/// its mm's address and vice versa; `cursor` is null (the list head: between two full scans)
/// or a listed slot.
pub(crate) struct MmList {
    first: *mut MmSlot,
    last: *mut MmSlot,
    /// The slot being scanned, or null at the list head.
    pub(crate) cursor: *mut MmSlot,
    map: Option<RBTree<usize, *mut MmSlot>>,
}

// SAFETY: Only used under the MMLIST spinlock.
unsafe impl Send for MmList {}

impl MmList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            first: core::ptr::null_mut(),
            last: core::ptr::null_mut(),
            cursor: core::ptr::null_mut(),
            map: None,
        }
    }

    /// Whether no mm is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// The slot of `mm`, or null (`mm_slot_lookup()`).
    pub(crate) fn lookup(&self, mm: &Mm) -> *mut MmSlot {
        self.map
            .as_ref()
            .and_then(|m| m.get(&(mm.as_raw() as usize)).copied())
            .unwrap_or(core::ptr::null_mut())
    }

    /// The slot after `slot` (null `slot` is the head); null when back at the head.
    pub(crate) fn next_of(&self, slot: *mut MmSlot) -> *mut MmSlot {
        if slot.is_null() {
            self.first
        } else {
            // SAFETY: Listed slots are valid (type invariant).
            unsafe { *(*slot).next.get() }
        }
    }

    /// Links `slot` before `before` (null: at the tail), and records it in the map.
    pub(crate) fn insert_before(
        &mut self,
        slot: *mut MmSlot,
        before: *mut MmSlot,
        res: RBTreeNodeReservation<usize, *mut MmSlot>,
    ) {
        // SAFETY: `slot` is a new, valid, unlinked slot; `before` is listed or null.
        unsafe {
            let prev = if before.is_null() {
                self.last
            } else {
                *(*before).prev.get()
            };
            *(*slot).prev.get() = prev;
            *(*slot).next.get() = before;
            if prev.is_null() {
                self.first = slot;
            } else {
                *(*prev).next.get() = slot;
            }
            if before.is_null() {
                self.last = slot;
            } else {
                *(*before).prev.get() = slot;
            }
            let key = (*slot).mm.as_raw() as usize;
            self.map
                .get_or_insert_with(RBTree::new)
                .insert(res.into_node(key, slot));
        }
    }

    /// Unlinks `slot` from the list and the map (`mm_slot_remove()`).
    pub(crate) fn remove(&mut self, slot: *mut MmSlot) {
        self.remove_list_only(slot);
        if let Some(m) = self.map.as_mut() {
            // SAFETY: `slot` is valid.
            m.remove(&(unsafe { (*slot).mm.as_raw() } as usize));
        }
    }

    /// Moves `slot` to right after the cursor, to be scanned next.
    pub(crate) fn move_after_cursor(&mut self, slot: *mut MmSlot) {
        let res = self.map.as_mut().and_then(|m| {
            // SAFETY: `slot` is listed.
            m.remove_node(&(unsafe { (*slot).mm.as_raw() } as usize))
        });
        let Some(node) = res else { return };
        // Relink at the new place; the map entry is re-added with its own storage.
        self.remove_list_only(slot);
        let before = self.next_of(self.cursor);
        self.insert_before(slot, before, node.into_reservation());
    }

    fn remove_list_only(&mut self, slot: *mut MmSlot) {
        // SAFETY: `slot` is listed.
        unsafe {
            let (prev, next) = (*(*slot).prev.get(), *(*slot).next.get());
            if prev.is_null() {
                self.first = next;
            } else {
                *(*prev).next.get() = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                *(*next).prev.get() = prev;
            }
            *(*slot).prev.get() = core::ptr::null_mut();
            *(*slot).next.get() = core::ptr::null_mut();
        }
    }
}

/// Allocates the map storage for a slot before taking the spinlock.
pub(crate) fn reserve() -> Result<RBTreeNodeReservation<usize, *mut MmSlot>> {
    RBTreeNodeReservation::new(GFP_KERNEL)
}
