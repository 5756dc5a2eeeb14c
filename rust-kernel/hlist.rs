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
//! - An item embeds [`Links`]; an [`Adapter`] says where.
//! - The list does not own its items: adding one is `unsafe`, and the caller promises that the
//!   item stays valid, and in no other list through the same links, until it is taken off, and
//!   is not freed while a reference to it that the list handed out ([`Head::first`],
//!   [`Head::next`]) is alive.
//! - A list is changed through shared references (its pointers are in `UnsafeCell`s), so that
//!   the head can be a field of an object that others reach through shared references too; the
//!   functions that change it are `unsafe` and require the caller to hold what serializes them.
//!   The pointers are written with plain stores: there are no lockless readers (C's `_rcu`
//!   variants).
//! - The first item points back at the head: a head must not move while its list has items.
//!   Items with [`Links`] are `!Unpin`, as their links are pointed at too.
//! - [`Head::iter`] reads the successor of an item before handing the item out, so the caller may
//!   take that item off the list, and free it, while iterating.
//!
//! # Examples
//!
//! ```
//! use core::ptr::NonNull;
//! use kernel::{hlist::{Adapter, Head, Links}, prelude::*};
//!
//! struct Item {
//!     value: u32,
//!     links: Links<Item>,
//! }
//!
//! struct ItemLinks;
//! kernel::impl_intrusive_adapter!(ItemLinks: Adapter, Links<Item> => Item { links });
//!
//! let items = [1u32, 2, 3].map(|value| Item { value, links: Links::new() });
//! let head = Head::<ItemLinks>::new();
//! for item in items.iter() {
//!     // SAFETY: Every item is on no list and outlives the list; nothing else uses the list.
//!     unsafe { head.push_front(NonNull::from(item)) };
//! }
//! let mut sum = 0;
//! // SAFETY: The items are valid; the list is only changed by taking off the item handed out.
//! for item in unsafe { head.iter() } {
//!     // SAFETY: The items are valid.
//!     let value = unsafe { item.as_ref() }.value;
//!     if value == 2 {
//!         // SAFETY: On this list; nothing else uses it.
//!         unsafe { Head::<ItemLinks>::remove(item) };
//!     }
//!     sum += value;
//! }
//! assert_eq!(sum, 6);
//! assert!(head.first().is_some_and(|i| core::ptr::eq(i, &items[2])));
//! ```

use crate::types::Opaque;
use core::{cell::UnsafeCell, marker::PhantomData, ptr::NonNull};

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
/// none, `pprev` is null (C: `hlist_unhashed()`).
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

/// Where the [`Links`] of a list's items are.
///
/// One item type may have several adapters, for links into different lists; two adapters may
/// even name the same links (a union of the links of structures that an item is in one at a
/// time), as long as the item is on one of their lists at a time.
///
/// [`impl_intrusive_adapter!`](crate::impl_intrusive_adapter) implements it for a plain field,
/// without `unsafe`.
///
/// # Safety
///
/// Every `Item` has a `Links<Item>` (or a `ManuallyDrop<Links<Item>>`) at byte offset `OFFSET`.
pub unsafe trait Adapter {
    /// The items of the list.
    type Item;
    /// The byte offset of the links in an item (`core::mem::offset_of!`).
    const OFFSET: usize;
}

/// The head of a list (C: `struct hlist_head`): one pointer.
///
/// # Invariants
///
/// `first` is null or the first of a chain of valid items linked through the links `A` names,
/// as [`Links`] says.
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
        // `Links` is a transparent `Opaque<RawLinks>`, at `OFFSET` in the item (`Adapter`).
        item.cast::<u8>()
            .wrapping_add(A::OFFSET)
            .cast::<RawLinks<A::Item>>()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.first().is_none()
    }

    /// The first item, if any.
    pub fn first(&self) -> Option<&A::Item> {
        // SAFETY: The head is valid; it is only changed by `unsafe` functions whose callers
        // serialize them with every other use of the list, so this read does not race. The first
        // item is valid (type invariant), may be borrowed shared, and is not freed while the
        // reference is alive (the promises made to `push_front()`).
        unsafe { (*self.first.get()).as_ref() }
    }

    /// Adds `item` at the front of the list (`hlist_add_head()`).
    ///
    /// # Safety
    ///
    /// - `item` must be valid and on no list through the links `A` names. Until it is taken off
    ///   this list (or the list is no longer used at all), it must stay valid, must not move,
    ///   and its links must be accessed only by this module's functions.
    /// - It must not be borrowed mutably, nor freed, while a reference to it handed out by
    ///   [`Head::first`] or [`Head::next`] is alive, even once it is off the list. Since
    ///   `first()` is safe, this can only be promised by an owner that controls who reaches the
    ///   head.
    /// - The head must not move, be dropped, or be borrowed mutably while the list has items
    ///   (the first item points back at it), unless the list is no longer used at all.
    /// - Nothing else may use the list (its head and its items' links) during the call.
    pub unsafe fn push_front(&self, item: NonNull<A::Item>) {
        let head = self.first.get();
        let links = Self::links(item.as_ptr());
        // SAFETY: `links` is in a valid item, `head` in this valid head, and the first item (if
        // any) is valid (type invariant); no one else uses them during the call. The pointers
        // are in `UnsafeCell`s, so writing through shared provenance is allowed.
        unsafe {
            let first = *head;
            (*links).next = first;
            (*links).pprev = head;
            if !first.is_null() {
                (*Self::links(first)).pprev = &raw mut (*links).next;
            }
            // INVARIANT: `item` is first and links to the former first item, which points back.
            *head = item.as_ptr();
        }
    }

    /// Takes `item` off its list, if it is on one (`hlist_del_init()`).
    ///
    /// # Safety
    ///
    /// `item` must be valid, and on a list through this adapter's links or on none; nothing else
    /// may use that list during the call.
    pub unsafe fn remove(item: NonNull<A::Item>) {
        let links = Self::links(item.as_ptr());
        // SAFETY: `item` is valid and on a list or none (the caller's promise). On a list, its
        // `pprev` points at the pointer to it and its `next` is null or a valid item (type
        // invariant); no one else uses them during the call.
        unsafe {
            let RawLinks { next, pprev } = links.read();
            if pprev.is_null() {
                return;
            }
            // INVARIANT: The list skips `item`, its next item points back to what pointed at
            // `item`, and `item` is on no list.
            *pprev = next;
            if !next.is_null() {
                (*Self::links(next)).pprev = pprev;
            }
            links.write(RawLinks {
                next: core::ptr::null_mut(),
                pprev: core::ptr::null_mut(),
            });
        }
    }

    /// The item after `item` on its list, if any.
    ///
    /// # Safety
    ///
    /// `item` must be on a list with this adapter's links, which no one changes during the call.
    pub unsafe fn next(item: &A::Item) -> Option<&A::Item> {
        let links = Self::links(core::ptr::from_ref(item).cast_mut());
        // SAFETY: As the caller guarantees, `item` is on a list, whose next item is null or valid
        // (type invariant of `Head`), may be borrowed shared and is not freed while the reference
        // is alive (the promises made to `push_front()`).
        unsafe { (*links).next.as_ref() }
    }

    /// Iterates over the list. Each item's successor is read before the item is handed out, so
    /// the caller may take that item off the list, or free it.
    ///
    /// # Safety
    ///
    /// While the iterator is used, the list may only change by the removal of the item last
    /// handed out, and its items must stay valid (the one last handed out may be freed once it is
    /// off the list).
    pub unsafe fn iter(&self) -> Iter<A> {
        // INVARIANT: The first item, as the caller promises to keep the list.
        // SAFETY: As in `first()`; the pointer keeps the provenance the list was given, so that
        // the caller may free the items through it.
        let first = unsafe { *self.first.get() };
        Iter {
            next: NonNull::new(first),
            _adapter: PhantomData,
        }
    }
}

impl<A: Adapter> Default for Head<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// An iterator over a list, from [`Head::iter`].
///
/// # Invariants
///
/// `next` is none or a valid item on the list.
pub struct Iter<A: Adapter> {
    next: Option<NonNull<A::Item>>,
    _adapter: PhantomData<A>,
}

impl<A: Adapter> Iterator for Iter<A> {
    type Item = NonNull<A::Item>;

    fn next(&mut self) -> Option<NonNull<A::Item>> {
        let item = self.next?;
        // INVARIANT: `item` is on the list (type invariant), and the list is only changed by
        // removing the item handed out, after this read.
        // SAFETY: As above.
        self.next = NonNull::new(unsafe { (*Head::<A>::links(item.as_ptr())).next });
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

    // The same items, on another list.
    struct ByOther;
    crate::impl_intrusive_adapter!(ByOther: Adapter, Links<Item> => Item { other });

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
    ///
    /// # Safety
    ///
    /// The items on the list must be valid, and no one may change it during the call.
    unsafe fn values<A: Adapter<Item = Item>>(head: &Head<A>) -> Result<KVec<u32>> {
        let mut v = KVec::new();
        // SAFETY: As the caller guarantees.
        for item in unsafe { head.iter() } {
            // SAFETY: As the caller guarantees.
            v.push(unsafe { item.as_ref() }.value, GFP_KERNEL)?;
        }
        Ok(v)
    }

    #[test]
    fn push_remove_iterate() -> Result {
        let v = items(10)?;
        let head = Head::<ByLinks>::new();
        assert!(head.is_empty());
        for item in v.iter() {
            // SAFETY: On no list, outlives the list; the test is the only user.
            unsafe { head.push_front(NonNull::from(item)) };
        }
        // SAFETY: Valid items, nothing changes the list meanwhile.
        let got = unsafe { values(&head) }?;
        assert!(got.iter().rev().copied().eq(0..10));
        // Take the odd values off while iterating, the first and the last included.
        // SAFETY: Valid items; only the item handed out is taken off.
        for item in unsafe { head.iter() } {
            // SAFETY: A valid item.
            let value = unsafe { item.as_ref() }.value;
            if value % 2 == 1 || value == 0 {
                // SAFETY: On the list; the test is the only user.
                unsafe { Head::<ByLinks>::remove(item) };
            }
        }
        // SAFETY: As above.
        let got = unsafe { values(&head) }?;
        assert_eq!(&got[..], &[8, 6, 4, 2]);
        // An item taken off can go on again.
        // SAFETY: Off the list now, outlives it.
        unsafe { head.push_front(NonNull::from(&v[9])) };
        // SAFETY: As above.
        let got = unsafe { values(&head) }?;
        assert_eq!(&got[..], &[9, 8, 6, 4, 2]);
        // SAFETY: On the list.
        let next = unsafe { Head::<ByLinks>::next(&v[9]) };
        assert!(next.is_some_and(|n| core::ptr::eq(n, &v[8])));
        // SAFETY: As above.
        let next = unsafe { Head::<ByLinks>::next(&v[2]) };
        assert!(next.is_none());
        while let Some(item) = head.first().map(NonNull::from) {
            // SAFETY: On the list.
            unsafe { Head::<ByLinks>::remove(item) };
        }
        assert!(head.is_empty());
        // Taking an item off again does nothing.
        // SAFETY: On no list.
        unsafe { Head::<ByLinks>::remove(NonNull::from(&v[9])) };
        assert!(head.is_empty());
        Ok(())
    }

    #[test]
    fn two_lists_through_two_links() -> Result {
        let v = items(6)?;
        let evens = Head::<ByLinks>::new();
        let all = Head::<ByOther>::new();
        for item in v.iter() {
            if item.value % 2 == 0 {
                // SAFETY: On no list through `links`, outlives the list.
                unsafe { evens.push_front(NonNull::from(item)) };
            }
            // SAFETY: On no list through `other`, outlives the list.
            unsafe { all.push_front(NonNull::from(item)) };
        }
        // SAFETY: On `evens`.
        unsafe { Head::<ByLinks>::remove(NonNull::from(&v[2])) };
        // SAFETY: Valid items, nothing changes the lists meanwhile.
        let (e, a) = unsafe { (values(&evens)?, values(&all)?) };
        assert_eq!(&e[..], &[4, 0]);
        assert_eq!(&a[..], &[5, 4, 3, 2, 1, 0]);
        Ok(())
    }
}
