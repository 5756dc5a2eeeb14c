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
/// The slot's place in the scan order is not in the slot but in its [`Entry`] of the list's
/// map, so that the scanner may hold a shared reference to the slot under the cursor while
/// others register and unregister its neighbours.
pub(crate) struct MmSlot {
    /// The mm's rmap items in address order (scanner only), which belong to the mm; the list
    /// holds an `mmgrab()` reference on it.
    items: ItemList,
}

impl MmSlot {
    /// A new slot for `mm`, with no items.
    pub(crate) fn new(mm: &Mm) -> Self {
        Self {
            items: ItemList::new(mm),
        }
    }

    /// The mm.
    pub(crate) fn mm(&self) -> &Mm {
        self.items.mm()
    }
}

/// An mm slot on no list, owned: freed with its mm reference when dropped. A slot that still
/// has items keeps its mm alive for them, with a warning ([`ItemList`]).
pub(crate) type OwnedSlot = CacheBox<'static, MmSlot>;

/// A registered slot, in the map of [`MmList`] under its mm's address, with its neighbours in
/// the scan order (their keys; `None` is the head of the list).
pub(crate) struct Entry {
    prev: Option<usize>,
    next: Option<usize>,
    slot: OwnedSlot,
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
///   take `&mut Ksm` (the thread mutex's data, lent to one borrower at a time); they point the
///   item cursor ([`node::set_cursor`]) at the new cursor slot's list, or clear it.
/// - `cursor_mm` holds an `mmgrab()` reference on the mm of the slot under the cursor, if any:
///   the scanner looks at it for every page, without a lookup in the map.
pub(crate) struct MmList {
    first: Option<usize>,
    last: Option<usize>,
    cursor: Option<usize>,
    cursor_mm: Option<ARef<Mm>>,
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
            cursor_mm: None,
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

    /// The slot under the cursor, or null (the head). The pointer stays valid after the
    /// spinlock is released, until the slot leaves the map.
    #[cfg(CONFIG_SYSFS)]
    fn cursor_ptr(&self) -> *const MmSlot {
        self.cursor
            .and_then(|k| self.entry(k))
            .map_or(core::ptr::null(), |e| {
                core::ptr::from_ref::<MmSlot>(&e.slot)
            })
    }

    /// Moves the cursor to `to` (a key, or `None`: the head). Returns the reference on the mm of
    /// the slot it leaves, to be dropped outside the spinlock.
    fn move_cursor(&mut self, to: Option<usize>) -> Option<ARef<Mm>> {
        let mm = to
            .and_then(|k| self.entry(k))
            .map(|e| ARef::from(e.slot.mm()));
        // INVARIANT: The cursor and its slot's mm.
        self.cursor = to;
        core::mem::replace(&mut self.cursor_mm, mm)
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
            slot,
        };
        self.map
            .get_or_insert_with(RBTree::new)
            .insert(res.into_node(key, entry));
        // INVARIANT: Listed, and in the map.
        self.link_before(key, before);
        Ok(())
    }

    /// Unlinks the listed entry `key` and takes its slot out of the map.
    fn take(&mut self, key: usize) -> Option<OwnedSlot> {
        self.unlink(key);
        // INVARIANT: Off the list, and now out of the map.
        self.map.as_mut()?.remove(&key).map(|e| e.slot)
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
        if entry.slot.items.is_empty() {
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
pub(crate) fn cursor_slot<'k>(ksm: &'k Ksm<'_>) -> Option<&'k MmSlot> {
    let _ = ksm;
    let slot = MMLIST.lock().cursor_ptr();
    // SAFETY: The slot under the cursor, or null (`cursor_ptr()`). The slot is a slab object
    // owned by its map entry; it is freed only once out of the map. The cursor moves, and its
    // slot leaves the map, only through the functions below, which take `&mut Ksm`: not while
    // `ksm` is borrowed. `exit()` takes out slots not under the cursor only, and no one changes
    // a slot but through shared references (its order is in its entry).
    unsafe { slot.as_ref() }
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
    match &l.cursor_mm {
        None => Cursor::Head,
        // Only an atomic increment under the spinlock.
        Some(mm) => Cursor::Slot(mm.mmget_not_zero()),
    }
}

/// Points the item cursor at the start of the item list of the slot under the scan cursor of
/// `l`, the locked list, or clears it if the cursor is at the head.
fn items_at_cursor(ksm: &mut Ksm<'_>, l: &MmList) {
    let Some(entry) = l.cursor.and_then(|k| l.entry(k)) else {
        node::clear_cursor(ksm);
        return;
    };
    // SAFETY: The list of the slot under the cursor, which stays valid while the cursor is on
    // it (see `cursor_slot()`); its items are changed by the item cursor only, until the scan
    // cursor moves, which resets the item cursor (the callers, through here).
    unsafe { node::set_cursor(ksm, &entry.slot.items) };
}

/// Starts a pass over all slots (a full scan, or `run = 2`): the cursor moves to the first
/// slot, and the item cursor to the start of its list. Returns whether there is a slot.
pub(crate) fn start_pass(ksm: &mut Ksm<'_>) -> bool {
    node::clear_cursor(ksm);
    let mut l = MMLIST.lock();
    // The first slot, or the head.
    let first = l.first;
    let old = l.move_cursor(first);
    items_at_cursor(ksm, &l);
    let more = l.cursor.is_some();
    drop(l);
    drop(old);
    more
}

/// Starts the item list of the slot under the cursor again (an exiting mm: all its items go).
pub(crate) fn rewind_items(ksm: &mut Ksm<'_>) {
    items_at_cursor(ksm, &MMLIST.lock());
}

/// Moves the cursor to the next slot, and the item cursor to the start of its list. With
/// `remove`, the slot the cursor leaves is taken off the list and given back, to be freed
/// outside the spinlock. Returns whether there is a next slot (else the cursor is back at the
/// head).
pub(crate) fn next_slot(ksm: &mut Ksm<'_>, remove: bool) -> (bool, Option<OwnedSlot>) {
    node::clear_cursor(ksm);
    let mut l = MMLIST.lock();
    let old = l.cursor;
    // The next slot, or the head.
    let next = l.next_of(old);
    let old_mm = l.move_cursor(next);
    let taken = match old {
        Some(k) if remove => l.take(k),
        _ => None,
    };
    items_at_cursor(ksm, &l);
    let more = l.cursor.is_some();
    drop(l);
    drop(old_mm);
    (more, taken)
}

/// Ends a pass early (`run = 2` failed): the cursor goes back to the head.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn abort_pass(ksm: &mut Ksm<'_>) {
    node::clear_cursor(ksm);
    // The head.
    let old = MMLIST.lock().move_cursor(None);
    drop(old);
}
