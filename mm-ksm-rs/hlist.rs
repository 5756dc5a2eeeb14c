// SPDX-License-Identifier: GPL-2.0

//! Intrusive lists with a one-pointer head (C's `hlist`).
//!
//! KSM links slab objects into three kinds of lists: the rmap items mapping one KSM page
//! (walked by `rmap_walk_ksm()`), the dups of a stable node chain, and the stable nodes waiting
//! to move to another NUMA node's tree. The entries are raw pointers into slab caches, owned and
//! freed by the code that keeps the lists, under the locks that protect each list; `link`
//! functions say where in an entry its [`HLink`] is.

/// The links of a list entry.
#[repr(C)]
pub(crate) struct HLink<T> {
    /// The next entry, or null.
    pub(crate) next: *mut T,
    /// The pointer that points to this entry: the list head or the previous entry's `next`.
    pub(crate) pprev: *mut *mut T,
}

// Plain pointers: copyable whatever `T` is (a derive would require `T: Copy`).
impl<T> Clone for HLink<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for HLink<T> {}

impl<T> HLink<T> {
    /// The links of an unlisted entry.
    pub(crate) const fn new() -> Self {
        Self {
            next: core::ptr::null_mut(),
            pprev: core::ptr::null_mut(),
        }
    }
}

/// Where an entry's links are.
pub(crate) type LinkFn<T> = unsafe fn(*mut T) -> *mut HLink<T>;

/// Adds `entry` at the front of the list headed by `*head` (`hlist_add_head()`).
///
/// # Safety
///
/// `head` and every listed entry must be valid, `entry` valid and unlisted, and the caller must
/// hold what protects the list.
pub(crate) unsafe fn push_front<T>(head: *mut *mut T, entry: *mut T, link: LinkFn<T>) {
    // SAFETY: As the caller guarantees.
    unsafe {
        let l = link(entry);
        let first = *head;
        (*l).next = first;
        (*l).pprev = head;
        if !first.is_null() {
            (*link(first)).pprev = &raw mut (*l).next;
        }
        *head = entry;
    }
}

/// Takes `entry` off its list (`hlist_del()`), leaving its links cleared.
///
/// # Safety
///
/// `entry` must be listed; the caller must hold what protects the list.
pub(crate) unsafe fn unlink<T>(entry: *mut T, link: LinkFn<T>) {
    // SAFETY: As the caller guarantees.
    unsafe {
        let l = link(entry);
        let HLink { next, pprev } = *l;
        *pprev = next;
        if !next.is_null() {
            (*link(next)).pprev = pprev;
        }
        *l = HLink::new();
    }
}

/// Iterates over the list starting at `first`. Each entry's successor is read before the entry
/// is handed out, so the caller may unlink or free the entry it was given.
///
/// # Safety
///
/// The entries must stay valid, and the list unchanged other than by unlinking the entry handed
/// out, while the iterator is used.
pub(crate) unsafe fn iter<T>(first: *mut T, link: LinkFn<T>) -> impl Iterator<Item = *mut T> {
    let mut cur = first;
    core::iter::from_fn(move || {
        if cur.is_null() {
            return None;
        }
        let entry = cur;
        // SAFETY: A listed entry is valid (function safety requirements).
        cur = unsafe { (*link(entry)).next };
        Some(entry)
    })
}
