// SPDX-License-Identifier: GPL-2.0

//! mm slots: the address spaces registered with KSM, in scan order.
//!
//! Each mm that has (or had) mergeable areas has an [`MmSlot`], found by mm in a map and
//! linked in a list that the scan cursor walks. Both live in [`MmList`] under [`MMLIST`], a
//! spinlock (C: `ksm_mmlist_lock`); the slot's `items` belong to the scanner and are protected
//! by the thread mutex ([`crate::lock_ksm`]).
//!
//! A slot holds an `mmgrab()` reference on its mm, so the `mm_struct` outlives the slot; the
//! address space itself may be gone (`mm_users == 0`), which the scanner notices and then frees
//! the slot.
//!
//! The list owns its slots. A slot leaves it as an [`OwnedSlot`], which frees it when dropped.
//! The scanner (ksmd, or `run = 2`) reaches the slot under the scan cursor through
//! [`cursor_slot`], for as long as it borrows the thread mutex's data ([`Ksm`]): the cursor
//! moves, and its slot leaves the list, only through the functions here that take `&mut Ksm`,
//! and `ksm_exit()` takes off only slots that are not under the cursor.

use crate::{
    node::{self, ItemList},
    Ksm,
};
use core::{cell::UnsafeCell, mem::ManuallyDrop, ops::Deref};
use kernel::{
    alloc::flags::GFP_KERNEL,
    mm::{Mm, MmWithUser},
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    slab::CacheBox,
    sync::aref::ARef,
};

kernel::sync::global_lock! {
    // SAFETY: Initialized in ksm_rs_init() before ksmd, sysfs or any hook can use it.
    pub(crate) unsafe(uninit) static MMLIST: SpinLock<MmList> = MmList::new();
}

/// KSM's record of one registered mm (`struct ksm_mm_slot`).
///
/// The list links are changed under [`MMLIST`] by whoever registers or unregisters a
/// neighbouring mm, while the scanner may hold a shared reference to this slot: they are in
/// `UnsafeCell`s, and only accessed through raw pointers with the spinlock held.
pub(crate) struct MmSlot {
    prev: UnsafeCell<*mut MmSlot>,
    next: UnsafeCell<*mut MmSlot>,
    /// The mm, with an `mmgrab()` reference.
    mm: ARef<Mm>,
    /// The mm's rmap items in address order (scanner only), which belong to `mm`.
    items: ItemList,
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
            // SAFETY: The slot holds a reference on `mm` (above) for as long as its list.
            items: unsafe { ItemList::new(mm) },
        }
    }

    /// The mm.
    pub(crate) fn mm(&self) -> &Mm {
        &self.mm
    }
}

/// An mm slot on no list, owned: freed with its mm reference when dropped, unless it still
/// has items, whose mm it keeps alive: then it is leaked, with a warning.
pub(crate) struct OwnedSlot(ManuallyDrop<CacheBox<'static, MmSlot>>);

impl OwnedSlot {
    /// Takes ownership of a slot just allocated.
    pub(crate) fn new(slot: CacheBox<'static, MmSlot>) -> Self {
        Self(ManuallyDrop::new(slot))
    }
}

impl Deref for OwnedSlot {
    type Target = MmSlot;

    fn deref(&self) -> &MmSlot {
        &self.0
    }
}

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        if kernel::warn_on!(!self.items.is_empty()) {
            return;
        }
        // SAFETY: Dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.0) };
    }
}

/// The list and map of mm slots, and the scan cursor.
///
/// # Invariants
///
/// - `first`..`last` is a doubly linked list of the slots the list owns, `boxes`: each came
///   from an [`OwnedSlot`] given to [`MmList::insert`], and goes back to one when it is taken
///   off. Every listed slot is in `boxes` under its mm's address and vice versa.
/// - `cursor` is null (the list head: between two full scans) or a listed slot. It moves, and
///   the slot under it leaves the list, only in the functions of this module that take
///   `&mut Ksm` (the thread mutex's data, lent to one borrower at a time); they point the item
///   cursor ([`node::set_cursor`]) at the new cursor slot's list, or clear it.
pub(crate) struct MmList {
    first: *mut MmSlot,
    last: *mut MmSlot,
    cursor: *mut MmSlot,
    boxes: Option<RBTree<usize, OwnedSlot>>,
}

// SAFETY: Only used under the MMLIST spinlock.
unsafe impl Send for MmList {}

/// The storage for an mm's entry in the list's map, allocated before taking the spinlock.
pub(crate) type Reservation = RBTreeNodeReservation<usize, OwnedSlot>;

/// Allocates the map storage for a slot before taking the spinlock.
pub(crate) fn reserve() -> Result<Reservation> {
    RBTreeNodeReservation::new(GFP_KERNEL)
}

impl MmList {
    /// An empty list: the one of [`MMLIST`], made once, so that no other list can be swapped
    /// with it.
    const fn new() -> Self {
        Self {
            first: core::ptr::null_mut(),
            last: core::ptr::null_mut(),
            cursor: core::ptr::null_mut(),
            boxes: None,
        }
    }

    /// Whether no mm is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// The key of `mm` in the map.
    fn key(mm: &Mm) -> usize {
        mm.as_raw() as usize
    }

    /// The slot of `mm`, or null (`mm_slot_lookup()`).
    fn lookup(&self, mm: &Mm) -> *mut MmSlot {
        self.boxes
            .as_ref()
            .and_then(|m| m.get(&Self::key(mm)))
            .map_or(core::ptr::null_mut(), |s| {
                core::ptr::from_ref::<MmSlot>(s).cast_mut()
            })
    }

    /// The slot after `slot`, a listed slot or null (the head); null when back at the head.
    fn next_of(&self, slot: *mut MmSlot) -> *mut MmSlot {
        if slot.is_null() {
            self.first
        } else {
            // SAFETY: The callers pass a listed slot, valid (type invariant); its links are
            // changed under the spinlock, which `&self` proves held.
            unsafe { *(*slot).next.get() }
        }
    }

    /// Links the slot at `slot`, which is in the map and on no list, before `before` (a listed
    /// slot, or null: at the tail).
    ///
    /// # Safety
    ///
    /// `slot` must be owned by the map and unlinked; `before` listed or null.
    unsafe fn link_before(&mut self, slot: *mut MmSlot, before: *mut MmSlot) {
        // SAFETY: Both are valid, as the caller guarantees; the spinlock is held (`&mut self`).
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
        }
    }

    /// Unlinks the listed `slot` from the list, leaving it in the map.
    ///
    /// # Safety
    ///
    /// `slot` must be listed.
    unsafe fn unlink(&mut self, slot: *mut MmSlot) {
        // SAFETY: A listed slot, valid, as its neighbours; the spinlock is held (`&mut self`).
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

    /// Registers `slot` (`mm_slot_insert()`): links it at the tail with `at_tail`, else just
    /// before the cursor (so that it is scanned last). Fails, giving the slot back, if its mm
    /// is registered already.
    pub(crate) fn insert(
        &mut self,
        slot: OwnedSlot,
        at_tail: bool,
        res: Reservation,
    ) -> core::result::Result<(), OwnedSlot> {
        if !self.lookup(&slot.mm).is_null() {
            return Err(slot);
        }
        let key = Self::key(&slot.mm);
        // The slot stays where it is; the map owns it from here.
        let ptr = core::ptr::from_ref::<MmSlot>(&slot).cast_mut();
        self.boxes
            .get_or_insert_with(RBTree::new)
            .insert(res.into_node(key, slot));
        let before = if at_tail {
            core::ptr::null_mut()
        } else {
            self.cursor
        };
        // SAFETY: `ptr` is owned by the map now, and was on no list; `before` is the cursor,
        // listed or null.
        unsafe { self.link_before(ptr, before) };
        // INVARIANT: Listed, and in the map.
        Ok(())
    }

    /// Unlinks the listed `slot` and takes it out of the map.
    ///
    /// # Safety
    ///
    /// `slot` must be listed.
    unsafe fn take(&mut self, slot: *mut MmSlot) -> Option<OwnedSlot> {
        // SAFETY: A listed slot (the caller's promise), valid (type invariant).
        let key = Self::key(unsafe { &(*slot).mm });
        // SAFETY: As above.
        unsafe { self.unlink(slot) };
        // INVARIANT: Off the list, and now out of the map.
        self.boxes.as_mut()?.remove(&key)
    }

    /// Unregisters an exiting `mm` (`__ksm_exit()`): gives its slot back if it has no items
    /// and is not under the cursor; otherwise leaves it to the scanner, moved right after the
    /// cursor, to be scanned (and found exiting) next.
    pub(crate) fn exit(&mut self, mm: &Mm) -> Option<OwnedSlot> {
        let slot = self.lookup(mm);
        if slot.is_null() || slot == self.cursor {
            return None;
        }
        // SAFETY: A listed slot (type invariant: it is in the map). The scanner changes the
        // item list of the cursor slot only, and moves the cursor on under MMLIST after its
        // last change, so that change happened before our lock of MMLIST, which sees another
        // cursor: the list stays empty if it is.
        if unsafe { (*slot).items.is_empty() } {
            // SAFETY: As above.
            return unsafe { self.take(slot) };
        }
        let after_cursor = self.next_of(self.cursor);
        if after_cursor != slot {
            // SAFETY: `slot` is listed; once unlinked, `after_cursor` (listed or null, and not
            // `slot`) is still listed or null.
            unsafe {
                self.unlink(slot);
                self.link_before(slot, after_cursor);
            }
        }
        None
    }
}

/// The slot under the scan cursor, if any, for as long as `ksm` is borrowed.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn cursor_slot<'k>(ksm: &'k Ksm<'_>) -> Option<&'k MmSlot> {
    let _ = ksm;
    let cursor = MMLIST.lock().cursor;
    // SAFETY: The cursor is null or a listed slot (type invariant of `MmList`). The cursor
    // moves, and its slot leaves the list, only through the functions below, which take
    // `&mut Ksm`: not while `ksm` is borrowed. `exit()` takes off slots not under the cursor
    // only. The slot's fields that others change (the links) are in `UnsafeCell`s.
    unsafe { cursor.as_ref() }
}

/// Where the scan cursor is (see [`cursor_mm`]).
pub(crate) enum Cursor {
    /// No mm is registered.
    Empty,
    /// At the head of the list: between two full scans.
    Head,
    /// On a slot: an `mm_users` reference on its mm, or `None` if the mm is exiting.
    Slot(Option<ARef<MmWithUser>>),
}

/// Where the scan cursor is, and, on a slot, an `mm_users` reference on its mm, with one lock
/// of [`MMLIST`]. Drop the reference with the thread mutex held, outside the spinlock: it may
/// be the last and tear the address space down.
pub(crate) fn cursor_mm(_ksm: &Ksm<'_>) -> Cursor {
    let l = MMLIST.lock();
    if l.is_empty() {
        return Cursor::Empty;
    }
    // SAFETY: The cursor is null or a listed slot (type invariant of `MmList`), valid while
    // the spinlock is held.
    match unsafe { l.cursor.as_ref() } {
        None => Cursor::Head,
        // Only an atomic increment under the spinlock.
        Some(slot) => Cursor::Slot(slot.mm.mmget_not_zero()),
    }
}

/// Points the item cursor at the start of the item list of the slot under the scan cursor, or
/// clears it if the cursor is at the head.
fn items_at_cursor(ksm: &mut Ksm<'_>, cursor: *mut MmSlot) {
    // SAFETY: The new cursor slot, listed (type invariant of `MmList`), or null.
    match unsafe { cursor.as_ref() } {
        // SAFETY: The list of the slot under the cursor: the slot stays listed, and its items
        // are changed by the cursor only, until the cursor moves, which resets the item
        // cursor (below).
        Some(slot) => unsafe { node::set_cursor(ksm, &slot.items) },
        None => node::clear_cursor(ksm),
    }
}

/// Starts a pass over all slots (a full scan, or `run = 2`): the cursor moves to the first
/// slot, and the item cursor to the start of its list. Returns whether there is a slot.
pub(crate) fn start_pass(ksm: &mut Ksm<'_>) -> bool {
    node::clear_cursor(ksm);
    let cursor = {
        let mut l = MMLIST.lock();
        // INVARIANT: The first slot, or the head.
        l.cursor = l.next_of(core::ptr::null_mut());
        l.cursor
    };
    items_at_cursor(ksm, cursor);
    !cursor.is_null()
}

/// Starts the item list of the slot under the cursor again (an exiting mm: all its items go).
pub(crate) fn rewind_items(ksm: &mut Ksm<'_>) {
    let cursor = MMLIST.lock().cursor;
    items_at_cursor(ksm, cursor);
}

/// Moves the cursor to the next slot, and the item cursor to the start of its list. With
/// `remove`, the slot the cursor leaves is taken off the list and given back. Returns whether
/// there is a next slot (else the cursor is back at the head).
pub(crate) fn next_slot(ksm: &mut Ksm<'_>, remove: bool) -> (bool, Option<OwnedSlot>) {
    node::clear_cursor(ksm);
    let (cursor, taken) = {
        let mut l = MMLIST.lock();
        let old = l.cursor;
        // INVARIANT: The next slot, or the head.
        l.cursor = l.next_of(old);
        let taken = if remove && !old.is_null() {
            // SAFETY: `old` was the cursor, a listed slot.
            unsafe { l.take(old) }
        } else {
            None
        };
        (l.cursor, taken)
    };
    items_at_cursor(ksm, cursor);
    (!cursor.is_null(), taken)
}

/// Ends a pass early (`run = 2` failed): the cursor goes back to the head.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn abort_pass(ksm: &mut Ksm<'_>) {
    node::clear_cursor(ksm);
    // INVARIANT: The head.
    MMLIST.lock().cursor = core::ptr::null_mut();
}
