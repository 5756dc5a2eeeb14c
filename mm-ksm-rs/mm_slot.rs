// SPDX-License-Identifier: GPL-2.0

//! mm slots: the address spaces registered with KSM, in scan order.
//!
//! Each mm that has (or had) mergeable areas has an [`MmSlot`](node::MmSlot), found by mm in a
//! map and linked in a list that the scan cursor walks. Both live in [`MmList`] under
//! [`MMLIST`], a spinlock (C: `ksm_mmlist_lock`); the slot's `items` belong to the scanner and
//! are protected by the thread mutex ([`crate::lock_ksm`]).
//!
//! A slot holds an `mmgrab()` reference on its mm, so the `mm_struct` outlives the slot; the
//! address space itself may be gone (`mm_users == 0`), which the scanner notices and then frees
//! the slot.
//!
//! The list owns its slots, but for the one under the scan cursor, which the scanner (ksmd, or
//! `run = 2`) holds in the thread mutex's data ([`Ksm`], see [`node::hold_slot`]) while it
//! scans it: the cursor moves only through the functions here that take `&mut Ksm`, which
//! give the scanner the slot of its new place and put the one it held back in its entry, and
//! `ksm_exit()` takes off only slots that are not under the cursor. A slot leaves the list as
//! an [`OwnedSlot`], which frees it when dropped.

use crate::{
    node::{self, OwnedSlot},
    Ksm,
};
use kernel::{
    alloc::flags::GFP_KERNEL,
    mm::{Mm, MmWithUser},
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::aref::ARef,
};

kernel::sync::global_lock! {
    // SAFETY: Initialized in ksm_rs_init() before ksmd, sysfs or any hook can use it.
    pub(crate) unsafe(uninit) static MMLIST: SpinLock<MmList> = MmList::new();
}

/// A registered slot, in the map of [`MmList`] under its mm's address, with its neighbours in
/// the scan order (their keys; `None` is the head of the list). The slot is `None` while the
/// scanner holds it.
pub(crate) struct Entry {
    prev: Option<usize>,
    next: Option<usize>,
    slot: Option<OwnedSlot>,
}

/// The list and map of mm slots, and the scan cursor.
///
/// The list is doubly linked through the map: a slot's neighbours are named by their keys, so
/// that linking and unlinking change map entries only, never a slot that the scanner may be
/// reading. Each step costs a map lookup, made per mm, not per page.
///
/// # Invariants
///
/// - `first`..`last`, following `next` (and back along `prev`), is a list of exactly the
///   entries of `map`; each entry is under the address of its slot's mm.
/// - `cursor` is `None` (the list head: between two full scans) or the key of an entry. It
///   moves, and the slot under it leaves the map, only in the functions of this module that
///   take `&mut Ksm` (the thread mutex's data, lent to one borrower at a time).
/// - The entry under the cursor has no slot: the scanner holds it ([`node::held_slot`]). Every
///   other entry has its slot.
pub(crate) struct MmList {
    first: Option<usize>,
    last: Option<usize>,
    cursor: Option<usize>,
    map: Option<RBTree<usize, Entry>>,
}

/// The storage for an mm's entry in the list's map, allocated before taking the spinlock.
pub(crate) type Reservation = RBTreeNodeReservation<usize, Entry>;

/// Allocates the map storage for a slot before taking the spinlock.
pub(crate) fn reserve() -> Result<Reservation> {
    RBTreeNodeReservation::new(GFP_KERNEL)
}

impl MmList {
    /// An empty list: the one of [`MMLIST`], made once, so that no other list can be swapped
    /// with it.
    const fn new() -> Self {
        Self {
            first: None,
            last: None,
            cursor: None,
            map: None,
        }
    }

    /// Whether no mm is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The key of `mm` in the map.
    fn key(mm: &Mm) -> usize {
        mm.as_raw() as usize
    }

    /// The entry of the slot with key `key` (`mm_slot_lookup()`).
    fn entry(&self, key: usize) -> Option<&Entry> {
        self.map.as_ref()?.get(&key)
    }

    /// The entry of the slot with key `key`, to relink it.
    fn entry_mut(&mut self, key: usize) -> Option<&mut Entry> {
        self.map.as_mut()?.get_mut(&key)
    }

    /// Moves the cursor to `to` (a key, or `None`: the head): the scanner gives back the slot
    /// it holds, to its entry, and takes the one under `to`. With `remove`, the slot left is
    /// taken off the list instead. Returns the slot taken off (or, if its entry is somehow
    /// gone, the one given back), to be freed outside the spinlock.
    fn move_cursor(
        &mut self,
        ksm: &mut Ksm<'_>,
        to: Option<usize>,
        remove: bool,
    ) -> Option<OwnedSlot> {
        let held = node::hold_slot(ksm, None);
        let from = self.cursor;
        // INVARIANT: The entry left gets its slot back, or leaves the map.
        let gone = match from.and_then(|k| self.entry_mut(k)) {
            Some(e) if !remove => {
                let old = core::mem::replace(&mut e.slot, held);
                kernel::warn_on!(old.is_some());
                old
            }
            _ => {
                if let (Some(k), true) = (from, remove) {
                    // The entry under the cursor has no slot; one that had would be listed
                    // nowhere now: leaked, with a warning, rather than freed under the spinlock.
                    if let Some(lost) = self.take(k) {
                        kernel::warn_on!(true);
                        core::mem::forget(lost);
                    }
                }
                held
            }
        };
        // INVARIANT: The scanner holds the slot under the new cursor.
        self.cursor = to;
        let slot = to
            .and_then(|k| self.entry_mut(k))
            .and_then(|e| e.slot.take());
        node::hold_slot(ksm, slot);
        gone
    }

    /// The slot after `at` (a key, or `None`: the head); `None` when back at the head.
    fn next_of(&self, at: Option<usize>) -> Option<usize> {
        match at {
            None => self.first,
            Some(k) => self.entry(k).and_then(|e| e.next),
        }
    }

    /// Makes `to` the slot after `at` (`None`: the first slot).
    fn set_next(&mut self, at: Option<usize>, to: Option<usize>) {
        match at {
            None => self.first = to,
            Some(k) => {
                if let Some(e) = self.entry_mut(k) {
                    e.next = to;
                }
            }
        }
    }

    /// Makes `to` the slot before `at` (`None`: the last slot).
    fn set_prev(&mut self, at: Option<usize>, to: Option<usize>) {
        match at {
            None => self.last = to,
            Some(k) => {
                if let Some(e) = self.entry_mut(k) {
                    e.prev = to;
                }
            }
        }
    }

    /// Links the entry `key`, which is on no list, before `before` (a listed slot, or `None`:
    /// at the tail).
    fn link_before(&mut self, key: usize, before: Option<usize>) {
        let prev = match before {
            None => self.last,
            Some(b) => self.entry(b).and_then(|e| e.prev),
        };
        if let Some(e) = self.entry_mut(key) {
            e.prev = prev;
            e.next = before;
        }
        self.set_next(prev, Some(key));
        self.set_prev(before, Some(key));
    }

    /// Unlinks the listed entry `key` from the list, leaving it in the map.
    fn unlink(&mut self, key: usize) {
        let Some((prev, next)) = self.entry(key).map(|e| (e.prev, e.next)) else {
            return;
        };
        self.set_next(prev, next);
        self.set_prev(next, prev);
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
        let key = Self::key(slot.mm());
        if self.entry(key).is_some() {
            return Err(slot);
        }
        let before = if at_tail { None } else { self.cursor };
        let entry = Entry {
            prev: None,
            next: None,
            slot: Some(slot),
        };
        self.map
            .get_or_insert_with(RBTree::new)
            .insert(res.into_node(key, entry));
        // INVARIANT: Listed, and in the map.
        self.link_before(key, before);
        Ok(())
    }

    /// Unlinks the listed entry `key` and takes its slot out of the map (none if the scanner
    /// holds it).
    fn take(&mut self, key: usize) -> Option<OwnedSlot> {
        self.unlink(key);
        // INVARIANT: Off the list, and now out of the map.
        self.map.as_mut()?.remove(&key).and_then(|e| e.slot)
    }

    /// Unregisters an exiting `mm` (`__ksm_exit()`): gives its slot back if it has no items
    /// and is not under the cursor; otherwise leaves it to the scanner, moved right after the
    /// cursor, to be scanned (and found exiting) next.
    pub(crate) fn exit(&mut self, mm: &Mm) -> Option<OwnedSlot> {
        let key = Self::key(mm);
        let entry = self.entry(key)?;
        if self.cursor == Some(key) {
            return None;
        }
        // The scanner changes the item list of the cursor slot only, and moves the cursor on
        // under MMLIST after its last change, so that change happened before our lock of
        // MMLIST, which sees another cursor: the list stays empty if it is.
        if entry.slot.as_ref().is_some_and(|s| s.items().is_empty()) {
            return self.take(key);
        }
        let after_cursor = self.next_of(self.cursor);
        if after_cursor != Some(key) {
            // Once `key` is unlinked, `after_cursor` (not `key`) is still listed, or the head.
            self.unlink(key);
            self.link_before(key, after_cursor);
        }
        None
    }
}

/// The slot under the scan cursor, if any, for as long as `ksm` is borrowed.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn cursor_slot<'k>(ksm: &'k Ksm<'_>) -> Option<&'k node::MmSlot> {
    node::held_slot(ksm)
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

/// Where the scan cursor is, and, on a slot, an `mm_users` reference on its mm. Drop the
/// reference with the thread mutex held: it may be the last and tear the address space down.
pub(crate) fn cursor_mm(ksm: &Ksm<'_>) -> Cursor {
    // The slot holds an `mmgrab()` reference on its mm.
    if let Some(slot) = node::held_slot(ksm) {
        return Cursor::Slot(slot.mm().mmget_not_zero());
    }
    if MMLIST.lock().is_empty() {
        Cursor::Empty
    } else {
        Cursor::Head
    }
}

/// Starts a pass over all slots (a full scan, or `run = 2`): the cursor moves to the first
/// slot, and the item cursor to the start of its list. Returns whether there is a slot.
pub(crate) fn start_pass(ksm: &mut Ksm<'_>) -> bool {
    let mut l = MMLIST.lock();
    // The first slot, or the head.
    let first = l.first;
    let gone = l.move_cursor(ksm, first, false);
    let more = l.cursor.is_some();
    drop(l);
    drop(gone);
    more
}

/// Starts the item list of the slot under the cursor again (an exiting mm: all its items go).
pub(crate) fn rewind_items(ksm: &mut Ksm<'_>) {
    node::rewind_cursor(ksm);
}

/// Moves the cursor to the next slot, and the item cursor to the start of its list. If `remove`
/// says so of the mm of the slot the cursor leaves, which it is asked under the spinlock, the
/// slot is taken off the list and given back, to be freed outside the spinlock. Returns whether
/// there is a next slot (else the cursor is back at the head).
pub(crate) fn next_slot(
    ksm: &mut Ksm<'_>,
    remove: impl FnOnce(&Mm) -> bool,
) -> (bool, Option<OwnedSlot>) {
    let mut l = MMLIST.lock();
    // Asked under the spinlock, as C tests `ksm_test_exit()`: an exit that comes later finds the
    // slot no longer under the cursor, and takes it itself if it has no items.
    let remove = node::held_slot(ksm).is_some_and(|s| remove(s.mm()));
    // The next slot, or the head.
    let next = l.next_of(l.cursor);
    let taken = l.move_cursor(ksm, next, remove);
    let more = l.cursor.is_some();
    drop(l);
    (more, taken)
}

/// Ends a pass early (`run = 2` failed): the cursor goes back to the head.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn abort_pass(ksm: &mut Ksm<'_>) {
    // The head.
    let gone = MMLIST.lock().move_cursor(ksm, None, false);
    drop(gone);
}
