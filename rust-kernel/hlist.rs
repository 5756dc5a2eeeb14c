// SPDX-License-Identifier: GPL-2.0

//! Intrusive lists with a one-pointer head, whose items others own.
//!
//! C header: [`include/linux/list.h`](srctree/include/linux/list.h) (`hlist_head`,
//! `hlist_node`)
//!
//! [`List`](crate::list::List) links items that it owns through [`ListArc`](crate::list::ListArc)s,
//! with a circular head of two pointers. Some users need neither: a head of one pointer keeps an
//! object that heads a list within a cache line, and the items are objects that their owner
//! allocates, frees and moves between several structures, under the owner's locks. [`Head`] and
//! [`Links`] are such a list, as C's `hlist`:
//!
//! - An item embeds [`Links`]; an [`Adapter`] says where, and whether the item is on a list
//!   (by default, from the links themselves).
//! - The list does not own its items. Their owner promises, once, in an `unsafe impl` of
//!   [`Anchored`] for the adapter, that an item on a list stays valid and in place, that a head
//!   with items does not move, and how the lists are serialized. With that, adding, taking off
//!   and stepping are safe: a list refuses an item that is on a list already, and takes off or
//!   steps from an item that is on a list only.
//! - A list is changed through shared references (its pointers are in `UnsafeCell`s), so that
//!   the head can be a field of an object that others reach through shared references too. The
//!   pointers are written with plain stores: there are no lockless readers (C's `_rcu`
//!   variants).
//! - The first item points back at the head: a head must not move, nor be borrowed mutably,
//!   while its list has items.
//!   Items with [`Links`] are `!Unpin`, as their links are pointed at too.
//! - [`Head::iter`] reads the successor of an item before handing the item out, so the caller may
//!   take that item off the list while iterating.
//!
//! # Examples
//!
//! ```
//! use kernel::{hlist::{Adapter, Anchored, Head, Links}, prelude::*};
//!
//! struct Item {
//!     value: u32,
//!     links: Links<Item>,
//! }
//!
//! struct ItemLinks;
//! kernel::impl_intrusive_adapter!(ItemLinks: Adapter, Links<Item> => Item { links });
//! // SAFETY: The items below outlive the list, which lets them go when dropped, and are only
//! // read; the head does not move while it has items; one thread uses the list.
//! unsafe impl Anchored for ItemLinks {}
//!
//! let items = [1u32, 2, 3].map(|value| Item { value, links: Links::new() });
//! let head = Head::<ItemLinks>::new();
//! for item in items.iter() {
//!     head.push_front(item)?;
//! }
//! // An item on a list is refused.
//! assert_eq!(head.push_front(&items[0]), Err(EBUSY));
//! let mut sum = 0;
//! for item in head.iter() {
//!     if item.value == 2 {
//!         Head::<ItemLinks>::remove(item)?;
//!     }
//!     sum += item.value;
//! }
//! assert_eq!(sum, 6);
//! assert!(head.first().is_some_and(|i| core::ptr::eq(i, &items[2])));
//! let next = Head::<ItemLinks>::next(&items[2]);
//! assert!(next.is_some_and(|i| core::ptr::eq(i, &items[0])));
//! assert_eq!(Head::<ItemLinks>::remove(&items[1]), Err(ENOENT));
//! # Ok::<(), Error>(())
//! ```

use crate::error::{code::*, Result};
use crate::types::Opaque;
use core::{cell::UnsafeCell, marker::PhantomData};

/// The pointers of [`Links`].
#[repr(C)]
struct RawLinks<T> {
    next: *mut T,
    pprev: *mut *mut T,
}

/// The links of an item on a list (C: `struct hlist_node`).
///
/// # Invariants
///
/// While the item is on a list, `next` is null or the next item, and `pprev` points at the
/// pointer that points at this item: the head's or the previous item's `next`. While it is on
/// none, with a default [`Adapter`], `pprev` is null (C: `hlist_unhashed()`); links that share
/// their bytes with other data (an overriding adapter) may then hold anything.
#[repr(transparent)]
pub struct Links<T>(Opaque<RawLinks<T>>);

impl<T> Links<T> {
    /// The links of an item that is on no list.
    pub const fn new() -> Self {
        // INVARIANT: On no list: `pprev` is null.
        Self(Opaque::new(RawLinks {
            next: core::ptr::null_mut(),
            pprev: core::ptr::null_mut(),
        }))
    }
}

impl<T> Default for Links<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the [`Links`] of a list's items are, and whether an item is on a list.
///
/// One item type may have several adapters, for links into different lists. Two adapters may
/// even name the same links, or links that overlap other data (a union of the links of
/// structures that an item is in one at a time): such adapters keep in the item where it is
/// linked, by overriding [`Adapter::is_linked`], [`Adapter::is_free`] and
/// [`Adapter::set_linked`]. The defaults read the links themselves, which is right for links
/// that only lists use.
///
/// [`impl_intrusive_adapter!`](crate::impl_intrusive_adapter) implements it for a plain field,
/// without `unsafe`. Lists add items only for adapters that are also [`Anchored`].
///
/// # Safety
///
/// - Every `Item` has a `Links<Item>` (or a `ManuallyDrop<Links<Item>>`) at byte offset
///   `OFFSET`, aligned.
/// - [`Adapter::is_linked`] is `true` exactly while the item is on a list through these links,
///   of this adapter or of another that names them: from the call of [`Adapter::set_linked`]
///   with `true` that a list makes when it adds the item, to the one with `false` when it takes
///   the item off. Nothing else changes it.
/// - [`Adapter::is_free`] is `true` only if the item is on no list through these links and
///   nothing else uses them or data they overlap.
pub unsafe trait Adapter {
    /// The items of the list.
    type Item;
    /// The byte offset of the links in an item (`core::mem::offset_of!`).
    const OFFSET: usize;

    /// The links' type, which [`impl_intrusive_adapter!`](crate::impl_intrusive_adapter)
    /// checks a field against: links of another structure's type would be at `OFFSET`. A raw
    /// pointer, which no deref coercion can make of a pointer to a field of another type.
    #[doc(hidden)]
    fn links_type(links: *const Links<Self::Item>) -> *const Links<Self::Item> {
        links
    }

    /// Whether `item` is on a list through these links.
    ///
    /// # Safety
    ///
    /// The links may not be changing: the caller excludes changes to the item's list.
    unsafe fn is_linked(item: &Self::Item) -> bool {
        let links = item_links::<Self>(core::ptr::from_ref(item).cast_mut());
        // SAFETY: `links` is in the item (`OFFSET`), and not changing (the caller's promise).
        // The links are in an `UnsafeCell`, and only read here.
        unsafe { !(*links).pprev.is_null() }
    }

    /// Whether a list may add `item` through these links: it is on no list through them, and
    /// nothing else uses them.
    ///
    /// # Safety
    ///
    /// As for [`Adapter::is_linked`].
    unsafe fn is_free(item: &Self::Item) -> bool {
        // SAFETY: As the caller guarantees.
        !unsafe { Self::is_linked(item) }
    }

    /// Records that a list added `item` (`true`), or took it off (`false`).
    ///
    /// # Safety
    ///
    /// Only the lists of this module call it, as they add an item or take it off.
    unsafe fn set_linked(item: &Self::Item, linked: bool) {
        let _ = (item, linked);
    }
}

/// The pointers of the links of `item` (no access to the item).
fn item_links<A: Adapter + ?Sized>(item: *mut A::Item) -> *mut RawLinks<A::Item> {
    // `Links` is a transparent `Opaque<RawLinks>`, at `OFFSET` in the item (`Adapter`).
    item.cast::<u8>()
        .wrapping_add(A::OFFSET)
        .cast::<RawLinks<A::Item>>()
}

/// An [`Adapter`] whose items stay put while they are on a list: lists add them, take them off
/// and step from them safely, checking [`Adapter::is_free`] and [`Adapter::is_linked`] first.
///
/// The promises below are about every list of the adapter, so implement it only for an
/// adapter whose lists and items one owner controls (a private type of the owner's module).
///
/// # Safety
///
/// - While an item is on a list of this adapter ([`Adapter::is_linked`]), it stays valid, does
///   not move, and is not borrowed mutably; nor is it freed or borrowed mutably while a
///   reference to it that such a list handed out is alive, the one an [`Iter`] holds as the
///   item it hands out next included.
/// - A head of this adapter with items stays valid and in place until it is dropped: it is not
///   moved, freed or overwritten without being dropped, nor borrowed mutably but by its own
///   drop, and neither is anything that contains it: the first item writes through a pointer
///   to the head.
/// - The lists of this adapter and those of every other adapter that names the same links or
///   links overlapping them, and the links and records of their items, are changed by one
///   thread at a time, all lists together (for example, under one lock), and a change to a
///   list (adding or taking off an item) excludes every other use of that list. A thread may
///   use a list without the lock that serializes the changes only while it keeps the list from
///   changing (by a lock that its changers take too), and then steps only from items of that
///   list.
pub unsafe trait Anchored: Adapter {}

/// The head of a list (C: `struct hlist_head`): one pointer.
///
/// Dropping a head takes its items off, so that they are free again.
///
/// # Invariants
///
/// `first` is null or the first of a chain of valid items linked through the links `A` names,
/// as [`Links`] says, for which [`Adapter::is_linked`] is `true`. There are none unless `A` is
/// [`Anchored`].
#[repr(transparent)]
pub struct Head<A: Adapter> {
    first: UnsafeCell<*mut A::Item>,
    _items: PhantomData<*mut A::Item>,
}

impl<A: Adapter> Head<A> {
    /// An empty list.
    pub const fn new() -> Self {
        // INVARIANT: Empty.
        Self {
            first: UnsafeCell::new(core::ptr::null_mut()),
            _items: PhantomData,
        }
    }

    /// The pointers of the links of `item` (no access to the item).
    fn links(item: *mut A::Item) -> *mut RawLinks<A::Item> {
        item_links::<A>(item)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.first().is_none()
    }

    /// The first item, if any.
    pub fn first(&self) -> Option<&A::Item> {
        // SAFETY: The head is valid. A list has items only for an `Anchored` adapter, whose
        // lists change only while no one else uses them, so this read of a list we use does not
        // race. The first item is valid, may be borrowed shared, and is not freed while the
        // reference is alive (`Anchored`).
        unsafe { (*self.first.get()).as_ref() }
    }

    /// Iterates over the list. Each item's successor is read before the item is handed out, so
    /// the caller may take that item off the list while iterating. If other items of the list
    /// change places meanwhile, the iteration may end early, or go on along another list of the
    /// adapter; the successor read ahead is not freed before it is handed out (`Anchored`).
    pub fn iter(&self) -> Iter<'_, A> {
        // INVARIANT: Null or the first item, which stays valid while the reference is alive.
        Iter { next: self.first() }
    }

    /// The item after `item` on its list, if any; `None` also if `item` is on no list of `A`
    /// (there are lists only for `Anchored` adapters).
    fn successor(item: &A::Item) -> Option<&A::Item> {
        // SAFETY: By the promises of `Anchored`, the item's list and record do not change while
        // we use them: we hold the lock that serializes all changes, or keep the item's list
        // from changing.
        if !unsafe { A::is_linked(item) } {
            return None;
        }
        let links = Self::links(core::ptr::from_ref(item).cast_mut());
        // SAFETY: `item` is on a list, which does not change meanwhile (as above); its next item
        // is null or valid (type invariant), may be borrowed shared and is not freed while the
        // reference is alive (`Anchored`).
        unsafe { (*links).next.as_ref() }
    }

    /// Takes the item at `item`, which is on a list through these links, off its list
    /// (`hlist_del_init()`), and records it as on none.
    ///
    /// # Safety
    ///
    /// `item` must be a valid item on a list of `A`, which no one else uses during the call.
    unsafe fn unlink(item: &A::Item) {
        let links = Self::links(core::ptr::from_ref(item).cast_mut());
        // SAFETY: `item` is valid and on a list (the caller's promise): its `pprev` points at
        // the pointer to it and its `next` is null or a valid item (type invariant); no one else
        // uses them during the call. The pointers are in `UnsafeCell`s.
        unsafe {
            let RawLinks { next, pprev } = links.read();
            // INVARIANT: The list skips `item`, its next item points back to what pointed at
            // `item`, and `item` is on no list, and recorded so.
            *pprev = next;
            if !next.is_null() {
                (*Self::links(next)).pprev = pprev;
            }
            links.write(RawLinks {
                next: core::ptr::null_mut(),
                pprev: core::ptr::null_mut(),
            });
            A::set_linked(item, false);
        }
    }
}

impl<A: Anchored> Head<A> {
    /// Adds `item` at the front of the list (`hlist_add_head()`); `EBUSY` (and nothing changes)
    /// if its links are not free ([`Adapter::is_free`]): it is on a list already, say.
    pub fn push_front(&self, item: &A::Item) -> Result {
        // SAFETY: We change the list: by the promises of `Anchored`, no other thread changes the
        // lists of `A` or their items' records meanwhile.
        if !unsafe { A::is_free(item) } {
            return Err(EBUSY);
        }
        let head = self.first.get();
        let links = Self::links(core::ptr::from_ref(item).cast_mut());
        // SAFETY: `links` is in a valid item, free, `head` in this valid head, and the first item
        // (if any) is valid (type invariant); no one else uses them during the call. The
        // pointers are in `UnsafeCell`s, so writing through shared provenance is allowed. The
        // item stays valid and in place while linked, as the head does (`Anchored`).
        unsafe {
            let first = *head;
            (*links).next = first;
            (*links).pprev = head;
            if !first.is_null() {
                (*Self::links(first)).pprev = &raw mut (*links).next;
            }
            // INVARIANT: `item` is first and links to the former first item, which points back;
            // it is recorded as linked.
            *head = core::ptr::from_ref(item).cast_mut();
            A::set_linked(item, true);
        }
        Ok(())
    }

    /// Takes `item` off its list (`hlist_del_init()`), which need not be borrowed, as in C;
    /// `ENOENT` (and nothing changes) if it is on no list of `A`.
    pub fn remove(item: &A::Item) -> Result {
        // SAFETY: We change the item's list: by the promises of `Anchored`, no other thread
        // changes the lists of `A` or their items' records, or uses that list, meanwhile.
        if !unsafe { A::is_linked(item) } {
            return Err(ENOENT);
        }
        // SAFETY: `item` is on a list, which no one else uses meanwhile (as above).
        unsafe { Self::unlink(item) };
        Ok(())
    }

    /// The item after `item` on its list, if any; `None` also if `item` is on no list of `A`.
    ///
    /// The successor is borrowed for as long as `item` is: it is not freed while the reference
    /// is alive (`Anchored`), whatever lifetime `item` was given.
    pub fn next(item: &A::Item) -> Option<&A::Item> {
        Self::successor(item)
    }
}

impl<A: Adapter> Default for Head<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Adapter> Drop for Head<A> {
    fn drop(&mut self) {
        let mut next = core::mem::replace(self.first.get_mut(), core::ptr::null_mut());
        while !next.is_null() {
            let links = Self::links(next);
            // SAFETY: `next` is an item of this list, valid (type invariant), which is ours
            // (`&mut self`). The whole list goes: each item's links are cleared, and no other
            // pointer into the list is left to fix.
            unsafe {
                let item = next;
                next = (*links).next;
                links.write(RawLinks {
                    next: core::ptr::null_mut(),
                    pprev: core::ptr::null_mut(),
                });
                A::set_linked(&*item, false);
            }
        }
    }
}

/// An iterator over a list, from [`Head::iter`].
///
/// # Invariants
///
/// `next` is none or an item that was on a list of `A` when it was read, and stays valid while
/// the reference is alive (`Anchored`).
pub struct Iter<'a, A: Adapter> {
    next: Option<&'a A::Item>,
}

impl<'a, A: Adapter> Iterator for Iter<'a, A> {
    type Item = &'a A::Item;

    fn next(&mut self) -> Option<&'a A::Item> {
        let item = self.next?;
        // INVARIANT: The successor of `item` if it is on a list still, which stays valid while
        // the reference is alive (`Anchored`). An item taken off since it was read ahead may
        // have its links reused for other data: they are not read then.
        self.next = Head::<A>::successor(item);
        Some(item)
    }
}

#[cfg(CONFIG_RUST_HLIST_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_hlist)]
mod tests {
    use super::*;
    use crate::prelude::*;

    struct Item {
        value: u32,
        links: Links<Item>,
        other: Links<Item>,
    }

    struct ByLinks;
    crate::impl_intrusive_adapter!(ByLinks: Adapter, Links<Item> => Item { links });
    // SAFETY: Each test's items outlive its lists (declared first, dropped last; a dropped head
    // lets its items go), and are only read; heads do not move; a test uses its lists from one
    // thread.
    unsafe impl Anchored for ByLinks {}

    // The same items, on another list.
    struct ByOther;
    crate::impl_intrusive_adapter!(ByOther: Adapter, Links<Item> => Item { other });
    // SAFETY: As for `ByLinks`.
    unsafe impl Anchored for ByOther {}

    fn items(n: u32) -> Result<KVec<Item>> {
        let mut v = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for value in 0..n {
            v.push(
                Item {
                    value,
                    links: Links::new(),
                    other: Links::new(),
                },
                GFP_KERNEL,
            )?;
        }
        Ok(v)
    }

    /// The values on `head`, in list order.
    fn values<A: Adapter<Item = Item>>(head: &Head<A>) -> Result<KVec<u32>> {
        let mut v = KVec::new();
        for item in head.iter() {
            v.push(item.value, GFP_KERNEL)?;
        }
        Ok(v)
    }

    #[test]
    fn push_remove_iterate() -> Result {
        let v = items(10)?;
        let head = Head::<ByLinks>::new();
        assert!(head.is_empty());
        for item in v.iter() {
            head.push_front(item)?;
        }
        // On the list already.
        assert_eq!(head.push_front(&v[3]), Err(EBUSY));
        let got = values(&head)?;
        assert!(got.iter().rev().copied().eq(0..10));
        // Take the odd values off while iterating, the first and the last included.
        for item in head.iter() {
            if item.value % 2 == 1 || item.value == 0 {
                Head::<ByLinks>::remove(item)?;
                assert!(Head::<ByLinks>::next(item).is_none());
            }
        }
        assert_eq!(&values(&head)?[..], &[8, 6, 4, 2]);
        // An item taken off can go on again, but is taken off once.
        assert_eq!(Head::<ByLinks>::remove(&v[9]), Err(ENOENT));
        head.push_front(&v[9])?;
        assert_eq!(&values(&head)?[..], &[9, 8, 6, 4, 2]);
        let next = Head::<ByLinks>::next(&v[9]);
        assert!(next.is_some_and(|n| core::ptr::eq(n, &v[8])));
        assert!(Head::<ByLinks>::next(&v[2]).is_none());
        while let Some(item) = head.first() {
            Head::<ByLinks>::remove(item)?;
        }
        assert!(head.is_empty());
        Ok(())
    }

    #[test]
    fn two_lists_through_two_links() -> Result {
        let v = items(6)?;
        let all = Head::<ByOther>::new();
        let odds = Head::<ByLinks>::new();
        {
            let evens = Head::<ByLinks>::new();
            for item in v.iter() {
                if item.value % 2 == 0 {
                    evens.push_front(item)?;
                } else {
                    odds.push_front(item)?;
                }
                all.push_front(item)?;
            }
            // Another list through the same links refuses the items of the first.
            assert_eq!(odds.push_front(&v[2]), Err(EBUSY));
            // Each list steps through its own links.
            let next = Head::<ByLinks>::next(&v[4]);
            assert!(next.is_some_and(|n| core::ptr::eq(n, &v[2])));
            let next = Head::<ByOther>::next(&v[4]);
            assert!(next.is_some_and(|n| core::ptr::eq(n, &v[3])));
            Head::<ByLinks>::remove(&v[2])?;
            let (e, a, o) = (values(&evens)?, values(&all)?, values(&odds)?);
            assert_eq!(&e[..], &[4, 0]);
            assert_eq!(&a[..], &[5, 4, 3, 2, 1, 0]);
            assert_eq!(&o[..], &[5, 3, 1]);
        }
        // Dropping a head (in place) lets its items go: they can go on another list.
        for item in [&v[0], &v[2], &v[4]] {
            odds.push_front(item)?;
        }
        assert_eq!(&values(&odds)?[..], &[4, 2, 0, 5, 3, 1]);
        Ok(())
    }
}
