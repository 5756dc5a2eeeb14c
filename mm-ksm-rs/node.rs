// SPDX-License-Identifier: GPL-2.0

//! The nodes of KSM's trees and lists: rmap items and stable nodes. An item of a KSM page
//! points to the page's stable node, and the node lists its items, so the two types are
//! defined together, with the links that put them in trees and lists; what is done with them
//! is in [`crate::unstable_tree`], [`crate::stable_tree`] and [`crate::mm_slot`].
//!
//! An [`RmapItem`] (one per scanned page of a mergeable area) records where a page lives (mm
//! and address), whether it is in the unstable tree, listed from a stable node, or neither,
//! and its last checksum. The flags and the low bits of the scan sequence number are packed
//! into the low bits of the page-aligned address ([`PackedAddress`]), which keeps the item at
//! one cache line (64 bytes on 64-bit), exactly as in mm/ksm.c: users see
//! `sizeof(struct ksm_rmap_item)` through `general_profit`.
//!
//! A [`StableNode`] (one per KSM page, or per chain of KSM pages of the same content) is
//! described in [`crate::stable_tree`]. Stable nodes are handled as [`NodeRef`]s, which stay
//! valid for as long as the thread mutex is held ([`Graveyard`]); this module links them into
//! the stable trees, the lists of dups and the migrate list, and takes them out, checking
//! first that each is where it should be. [`locked`] holds the mutex's data and hands it out.

use crate::{
    state::{add_mm_counters, MAX_PAGE_SHARING, RMAP_ITEMS, STABLE_NODE_CHAINS, STABLE_NODE_DUPS},
    Ksm,
};
use core::{
    cell::Cell,
    cmp::Ordering,
    marker::PhantomData,
    mem::{offset_of, ManuallyDrop},
    ops::Deref,
    ptr::NonNull,
};
use kernel::{
    bindings,
    error::{code::*, Result},
    hlist,
    kthread::cond_resched,
    mm::{
        folio::{Folio, FolioLockGuard, UnrefFolio, FOLIO_MAPPING_FLAGS, FOLIO_MAPPING_KSM},
        rmap::AnonVma,
        virt::VmaRef,
        Mm,
    },
    page::PAGE_MASK,
    prelude::*,
    rbtree::intrusive::{Adapter, Found, Links, Position, Tree},
    slab::CacheBox,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        barrier::{smp_mb, Write},
    },
};

/// Low bits of the unstable tree sequence number kept in the address.
pub(crate) const SEQNR_MASK: usize = 0x0ff;
/// The item is a node of the unstable tree.
pub(crate) const UNSTABLE_FLAG: usize = 0x100;
/// The item is listed from a stable node.
pub(crate) const STABLE_FLAG: usize = 0x200;
/// The item holds a reference on the anon_vma of its mapping, and the page's index in it (C:
/// an item whose `anon_vma` is set: merged, and listed from a stable node unless that failed).
const RMAP_FLAG: usize = 0x400;
/// With [`UNSTABLE_FLAG`]: the item is linked into the current unstable tree (C tells that
/// from the sequence number alone). Alone: the item is freed ([`DEAD_FLAG`]).
const LINKED_FLAG: usize = 0x800;
/// The item is freed: in the graveyard, to be freed when the thread mutex is released.
const DEAD_FLAG: usize = LINKED_FLAG;

// The flags fit below the smallest page size.
const _: () = assert!(DEAD_FLAG < 4096);

/// A page-aligned user address with the KSM flags and sequence number in its low bits.
///
/// # Invariants
///
/// At most one of [`UNSTABLE_FLAG`], [`STABLE_FLAG`] and [`DEAD_FLAG`] is set;
/// [`STABLE_FLAG`] comes with [`RMAP_FLAG`], [`UNSTABLE_FLAG`] and [`DEAD_FLAG`] without it;
/// [`LINKED_FLAG`] (the same bit as [`DEAD_FLAG`]) and the sequence number bits are only
/// meaningful with [`UNSTABLE_FLAG`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub(crate) struct PackedAddress(usize);

impl PackedAddress {
    /// A plain address with no flags.
    pub(crate) const fn new(addr: usize) -> Self {
        // INVARIANT: No flag set.
        Self(addr & PAGE_MASK)
    }

    /// The page-aligned address.
    pub(crate) const fn addr(self) -> usize {
        self.0 & PAGE_MASK
    }

    /// Whether the item is in the unstable tree (or was, in an earlier scan).
    pub(crate) const fn is_unstable(self) -> bool {
        self.0 & UNSTABLE_FLAG != 0
    }

    /// Whether the item is listed from a stable node.
    pub(crate) const fn is_stable(self) -> bool {
        self.0 & STABLE_FLAG != 0
    }

    /// Whether the item holds an anon_vma reference and a page index.
    const fn has_rmap(self) -> bool {
        self.0 & RMAP_FLAG != 0
    }

    /// Whether the item is linked into the current unstable tree.
    const fn is_linked(self) -> bool {
        self.is_unstable() && self.0 & LINKED_FLAG != 0
    }

    /// Whether the item is freed.
    const fn is_dead(self) -> bool {
        !self.is_unstable() && self.0 & DEAD_FLAG != 0
    }

    /// Whether no flag is set.
    const fn is_plain(self) -> bool {
        self.0 & !PAGE_MASK == 0
    }

    /// Marks a plain item as inserted in the unstable tree during scan `seqnr`.
    const fn into_unstable(self, seqnr: usize) -> Self {
        // INVARIANT: The unstable flag, with the linked flag.
        Self(self.addr() | UNSTABLE_FLAG | LINKED_FLAG | (seqnr & SEQNR_MASK))
    }

    /// Marks a plain item as linked into the unstable tree, during no scan yet: the tree's
    /// record ([`UnstableLinks`]), until [`PackedAddress::into_unstable`] gives the scan.
    const fn into_linked(self) -> Self {
        // INVARIANT: The unstable flag, with the linked flag.
        Self(self.0 | UNSTABLE_FLAG | LINKED_FLAG)
    }

    /// Marks an unstable item as no longer in its tree: taken out, or the tree was emptied.
    const fn into_unlinked(self) -> Self {
        Self(self.0 & !LINKED_FLAG)
    }

    /// Whether the item holds an anon_vma reference, and no other flag is set.
    const fn is_rmap_only(self) -> bool {
        self.0 & !PAGE_MASK == RMAP_FLAG
    }

    /// Marks the item as holding an anon_vma reference, and listed from a stable node.
    const fn into_stable(self) -> Self {
        // INVARIANT: The stable flag, with the rmap flag.
        Self(self.addr() | RMAP_FLAG | STABLE_FLAG)
    }

    /// Marks a plain item as holding an anon_vma reference.
    const fn into_rmap(self) -> Self {
        // INVARIANT: Only the rmap flag is set.
        Self(self.addr() | RMAP_FLAG)
    }

    /// Marks the item as freed.
    const fn into_dead(self) -> Self {
        // INVARIANT: Only the dead flag is set.
        Self(self.addr() | DEAD_FLAG)
    }

    /// How many scans ago (modulo 256) the item was put in the unstable tree: 0 if during the
    /// scan `seqnr`, 1 if during the previous one (C tells from it whether the item is still in
    /// the tree, which is rebuilt every scan; here [`LINKED_FLAG`] does).
    pub(crate) const fn unstable_age(self, seqnr: usize) -> u8 {
        (seqnr.wrapping_sub(self.0) & SEQNR_MASK) as u8
    }
}

/// The smart scan's record of a page that is not (yet) merged, and its checksum.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UnstableInfo {
    /// Checksum of the page at the previous scan.
    pub(crate) oldchecksum: u32,
    /// Scans since the item was created (smart scan).
    pub(crate) age: u8,
    /// Scans skipped since the page was last scanned (smart scan).
    pub(crate) skipped: u8,
}

/// What an item knows of its page: [`UnstableInfo`], or, while it holds an anon_vma
/// reference ([`RMAP_FLAG`]), the page's index in the anon_vma, which takes the place of the
/// checksum as in C's union: on 64-bit, of the whole record.
///
/// It is kept as the bytes of that union would be: one word, in whose bytes the record lies
/// as the fields of a C struct (checksum, age, skipped), and on 32-bit, where the index covers
/// only the checksum, two more bytes for the age and the skipped count.
#[repr(C)]
#[derive(Clone, Copy)]
struct Info {
    word: usize,
    #[cfg(not(CONFIG_64BIT))]
    ext: [u8; 2],
}

impl Info {
    /// The information of a new item: all zero, as C's zeroed allocation.
    const fn new() -> Self {
        Self {
            word: 0,
            #[cfg(not(CONFIG_64BIT))]
            ext: [0; 2],
        }
    }

    /// `self` with the page index `index`. The bytes of the record that the index does not
    /// cover (on 32-bit) keep their values, as in C.
    const fn with_index(mut self, index: usize) -> Self {
        self.word = index;
        self
    }

    /// The page index (meaningful with [`RMAP_FLAG`] only).
    const fn index(self) -> usize {
        self.word
    }

    /// The smart scan's record and the checksum (meaningless with [`RMAP_FLAG`]).
    #[cfg(CONFIG_64BIT)]
    fn unstable(self) -> UnstableInfo {
        let [c0, c1, c2, c3, age, skipped, ..] = self.word.to_ne_bytes();
        UnstableInfo {
            oldchecksum: u32::from_ne_bytes([c0, c1, c2, c3]),
            age,
            skipped,
        }
    }

    /// `self` with the smart scan's record and the checksum `u`.
    #[cfg(CONFIG_64BIT)]
    fn with_unstable(self, u: UnstableInfo) -> Self {
        let [c0, c1, c2, c3] = u.oldchecksum.to_ne_bytes();
        Self {
            word: usize::from_ne_bytes([c0, c1, c2, c3, u.age, u.skipped, 0, 0]),
        }
    }

    /// The smart scan's record and the checksum (meaningless with [`RMAP_FLAG`]).
    #[cfg(not(CONFIG_64BIT))]
    fn unstable(self) -> UnstableInfo {
        UnstableInfo {
            oldchecksum: u32::from_ne_bytes(self.word.to_ne_bytes()),
            age: self.ext[0],
            skipped: self.ext[1],
        }
    }

    /// `self` with the smart scan's record and the checksum `u`.
    #[cfg(not(CONFIG_64BIT))]
    fn with_unstable(self, u: UnstableInfo) -> Self {
        Self {
            word: usize::from_ne_bytes(u.oldchecksum.to_ne_bytes()),
            ext: [u.age, u.skipped],
        }
    }
}

/// Linkage into a stable node's list of items.
#[repr(C)]
struct StableLink {
    /// The stable node whose KSM page this item maps.
    head: Cell<*mut StableNode>,
    /// The node's list of items (accessed by the list only, through [`StableItemLinks`]).
    hlist: hlist::Links<RmapItem>,
}

#[repr(C)]
union ItemLink {
    /// Node of the unstable tree (accessed by the tree only, through [`UnstableLinks`]).
    node: ManuallyDrop<Links>,
    /// Listed from a stable node.
    stable: ManuallyDrop<StableLink>,
}

/// The anon_vma of a merged item ([`RMAP_FLAG`]), or the NUMA node of the unstable tree of an
/// unstable one ([`UNSTABLE_FLAG`]), in one pointer, as C's union: a nid is kept as an address
/// without provenance, which is only ever read back as a number.
#[derive(Clone, Copy)]
struct AnonVmaOrNid(*mut bindings::anon_vma);

impl AnonVmaOrNid {
    /// The NUMA node `nid`.
    const fn nid(nid: i32) -> Self {
        Self(core::ptr::without_provenance_mut(nid as u32 as usize))
    }

    /// The NUMA node, if `self` was made by [`AnonVmaOrNid::nid`].
    fn as_nid(self) -> i32 {
        self.0.addr() as u32 as i32
    }
}

/// Reverse mapping item for one virtual page (`struct ksm_rmap_item`).
///
/// Items are handled as [`ItemRef`]s, which stay valid while the thread mutex is held: an
/// item is freed through the [`Graveyard`], as stable nodes are. Only the mutex's holder
/// changes an item, except its stable-list links, which are also read by `rmap_walk_ksm()`
/// under the KSM folio's lock, and written only under that lock too; the walk reads the
/// fields of a stable item ([`RmapItem::stable_rmap`], the address, the mm), which do not
/// change while it is listed. So every field that changes is a `Cell` or in an `UnsafeCell`:
/// the item is only ever shared, never borrowed `&mut`.
///
/// # Invariants
///
/// - The item was allocated by [`alloc_at_cursor`], and is on the list of the mm slot of
///   `mm` until it is freed ([`free_at_cursor`]): then it is [`DEAD_FLAG`] and in the
///   graveyard, which frees it when the thread mutex is released.
/// - `mm` stays valid: the mm slot holds an `mmgrab()` reference while the item is on its
///   list, and the graveyard (or a leak) one of its own afterwards.
/// - With [`STABLE_FLAG`], the item is on the item list of the node that `link.stable.head`
///   points at; without it, on no such list.
/// - With [`UNSTABLE_FLAG`], `anon_vma_or_nid` is the nid of the unstable tree the item
///   was inserted in, during the scan of its sequence number bits. The item is in that tree if
///   and only if [`LINKED_FLAG`] is set too, and in no unstable tree otherwise; it is not freed
///   while linked.
/// - With [`RMAP_FLAG`], the item holds a reference on the anon_vma `anon_vma_or_nid`, and
///   the index of `info` is set.
#[repr(C)]
pub(crate) struct RmapItem {
    /// Next item of the same mm slot, in address order; for a freed item, the next in the
    /// graveyard. Atomic (relaxed) only so that the head of a slot's list is too: see
    /// [`ItemList`].
    rmap_list: Atomic<*mut RmapItem>,
    anon_vma_or_nid: Cell<AnonVmaOrNid>,
    /// The mm (see the invariants).
    mm: NonNull<Mm>,
    /// The address with the flags and sequence number.
    address: Cell<PackedAddress>,
    info: Cell<Info>,
    /// Where the item is linked (the unstable tree or a stable node's list; accessed through
    /// [`UnstableLinks`] and [`StableItemLinks`] only).
    link: ItemLink,
}

/// The links of rmap items in the unstable trees.
///
/// An item is in an unstable tree while it is unstable and linked ([`LINKED_FLAG`]); only a
/// plain item may go in.
struct UnstableLinks;

// SAFETY: `link.node` is a `ManuallyDrop<Links>` in every `RmapItem`. Only `set_linked()`
// sets or clears the linked flag of an unstable item: `unstable_insert()` rewrites the flags
// of an item the tree linked, linked still, and `unstable_remove()` of one it let go, and no
// other code changes the flags of an unstable item (type invariant of `PackedAddress`: the
// other flags exclude `UNSTABLE_FLAG`). A plain item uses neither member of `link`.
unsafe impl Adapter for UnstableLinks {
    type Item = RmapItem;
    const OFFSET: usize = offset_of!(RmapItem, link.node);

    unsafe fn is_linked(item: &RmapItem) -> bool {
        item.address().is_linked()
    }

    unsafe fn is_free(item: &RmapItem) -> bool {
        item.address().is_plain()
    }

    unsafe fn set_linked(item: &RmapItem, linked: bool) {
        let a = item.address();
        item.address.set(if linked {
            a.into_linked()
        } else {
            a.into_unlinked()
        });
    }
}

// SAFETY: An item in an unstable tree is not freed, as [`Graved`] says: only the graveyard
// frees items, dead ones, which `free_at_cursor()` makes of plain items only, and it frees them
// when the thread mutex is released, when no `Ksm<'g>` is left, and so no reference that a
// tree handed out (the trees are reached through `Ksm`). Items never move and are never
// borrowed mutably (`Graved`). The unstable trees are used under the thread mutex only (they
// are in its data, `locked`, which lends them to this module only), and the item lists, whose
// links overlap, are changed under it. The adapter is private to this module, so no other
// module makes a tree of items (they see its positions as `UnstablePos`).
unsafe impl kernel::rbtree::intrusive::Anchored for UnstableLinks {}

/// The links of rmap items in their stable node's list.
///
/// An item is on a node's list while it is stable ([`STABLE_FLAG`]); only an item that
/// holds an anon_vma reference and nothing else ([`RMAP_FLAG`] alone) may go on one.
struct StableItemLinks;

// SAFETY: `link.stable` is a transparent `ManuallyDrop<StableLink>` in every `RmapItem`, and
// `hlist` a `hlist::Links<RmapItem>` in it. Only `set_linked()` sets or clears the stable
// flag, and no other code changes the flags of a stable item (type invariant of
// `PackedAddress`: the other flags but `RMAP_FLAG` exclude `STABLE_FLAG`). An item with only
// `RMAP_FLAG` uses neither member of `link`.
unsafe impl hlist::Adapter for StableItemLinks {
    type Item = RmapItem;
    const OFFSET: usize = offset_of!(RmapItem, link.stable) + offset_of!(StableLink, hlist);

    unsafe fn is_linked(item: &RmapItem) -> bool {
        item.address().is_stable()
    }

    unsafe fn is_free(item: &RmapItem) -> bool {
        item.address().is_rmap_only()
    }

    unsafe fn set_linked(item: &RmapItem, linked: bool) {
        let a = item.address();
        item.address.set(if linked {
            a.into_stable()
        } else {
            a.into_rmap()
        });
    }
}

// SAFETY: A stable item is not freed, as for `UnstableLinks` (dead items were plain), before
// the thread mutex is released: not while a reference a list or iterator handed out or holds
// is alive. The heads are in stable nodes, which never move, are never borrowed mutably
// (`Graved`), and are freed only with an empty list (`bury()`). The lists, and the unstable
// trees whose links overlap, are changed under the thread mutex; a list under the lock of the
// node's KSM folio too, taken for that list (`add_item()`, `take_item()`), or with no folio
// pointing at the node (`take_item_unmapped()`). They are read under either lock, and a reader
// with the folio lock alone (`folio_mappings()`) steps only from the items of that folio's
// list. The adapter is private to this module, whose functions above are its only users.
unsafe impl hlist::Anchored for StableItemLinks {}

/// `sizeof(struct ksm_rmap_item)`, as counted in `general_profit`.
pub(crate) const RMAP_ITEM_SIZE: usize = core::mem::size_of::<RmapItem>();

// One cache line, as in C (users see the size through general_profit).
#[cfg(CONFIG_64BIT)]
const _: () = assert!(RMAP_ITEM_SIZE == 64);

// SAFETY: An item is allocated and freed under the thread mutex, and may be freed by a thread
// other than the one that allocated it; nothing in it is tied to a thread.
unsafe impl Send for RmapItem {}

impl RmapItem {
    /// The mm of the item.
    pub(crate) fn mm(&self) -> &Mm {
        // SAFETY: `mm` stays valid for as long as the item (type invariant).
        unsafe { self.mm.as_ref() }
    }

    /// The page-aligned address, with the flags and sequence number.
    pub(crate) fn address(&self) -> PackedAddress {
        self.address.get()
    }

    /// The smart scan's record and the checksum (meaningless while merged).
    pub(crate) fn unstable_info(&self) -> UnstableInfo {
        self.info.get().unstable()
    }

    /// Updates the smart scan's record and the checksum; warns and does nothing while the item
    /// is merged (the page index is kept in its place).
    pub(crate) fn set_unstable_info(&self, info: UnstableInfo) {
        if !kernel::warn_on!(self.address().has_rmap() || self.address().is_dead()) {
            self.info.set(self.info.get().with_unstable(info));
        }
    }

    /// Takes a reference on the anon_vma of `vma`, the area mapping the item's page at its
    /// address, and records the page's index in it, before the item goes into the stable tree
    /// (`try_to_merge_with_ksm_page()`). Refuses (with a warning) unless the item is plain:
    /// in no tree and holding no reference.
    pub(crate) fn set_rmap(&self, vma: &VmaRef) -> Result {
        let a = self.address();
        let (true, Some(anon_vma)) = (a.is_plain(), vma.anon_vma()) else {
            // Not plain, or an area without anon_vma: nothing of it could be merged.
            kernel::warn_on!(true);
            return Err(EINVAL);
        };
        crate::ksm_rs_get_anon_vma(anon_vma);
        // INVARIANT: The item holds the reference and the index.
        self.anon_vma_or_nid.set(AnonVmaOrNid(anon_vma.as_ptr()));
        let index = vma.linear_anon_page_index(a.addr());
        self.info.set(self.info.get().with_index(index));
        self.address.set(a.into_rmap());
        Ok(())
    }

    /// Drops the anon_vma reference of a merged item that is not listed from a stable node
    /// (`break_cow()`); does nothing for an item that holds none, and warns for a stable one.
    pub(crate) fn put_rmap(&self) {
        let a = self.address();
        if !a.has_rmap() || kernel::warn_on!(a.is_stable()) {
            return;
        }
        self.drop_rmap();
    }

    /// Drops the item's anon_vma reference and makes it a plain item.
    fn drop_rmap(&self) {
        // With `RMAP_FLAG`, an anon_vma (type invariant).
        let anon_vma = self.anon_vma_or_nid.get().0;
        // INVARIANT: Plain, holding no reference; C resets the index to 0.
        self.address.set(PackedAddress::new(self.address().addr()));
        self.info.set(self.info.get().with_index(0));
        // SAFETY: The item held this reference (type invariant), and gave it up above.
        unsafe { crate::ksm_rs_put_anon_vma(anon_vma) };
    }

    /// The anon_vma and the page index of a merged item, for the reverse map; `None` if the
    /// item is not merged.
    pub(crate) fn stable_rmap(&self) -> Option<(*mut bindings::anon_vma, usize)> {
        if !self.address().has_rmap() {
            return None;
        }
        // With `RMAP_FLAG`, an anon_vma and the index (type invariant).
        Some((self.anon_vma_or_nid.get().0, self.info.get().index()))
    }

    /// Whether the item is the last one of its stable node's list (for stable items); the
    /// list's last item counts as the shared page, the others as sharing it.
    pub(crate) fn is_last_stable(&self) -> bool {
        // C: the callers pass stable items only.
        if kernel::warn_on!(!self.address().is_stable()) {
            return true;
        }
        // Stable, so on its node's list (type invariant).
        hlist::Head::<StableItemLinks>::next(self).is_none()
    }
}

/// A stable node or an rmap item that stays allocated for `'g`, the borrow of the held thread
/// mutex ([`Ksm`]`<'g>`) it was found through: a [`NodeRef`] or an [`ItemRef`].
///
/// Nodes and items are freed only when the thread mutex is released, after every `Ksm<'g>`
/// borrowed from the guard, and so every `Ref<'g, _>`, is gone ([`Graveyard`]). Functions that
/// link a node or item somewhere or take it out check where it is first, and refuse (with a
/// warning) what would corrupt a tree or list, so a reference may be kept across any of them.
///
/// # Invariants
///
/// `ptr` points to a `T` allocated by this module ([`alloc`], [`alloc_chain`],
/// [`alloc_at_cursor`]) that is not freed before `'g` ends, and `'g` lies within a hold of the
/// thread mutex: no node or item at all is freed before `'g` ends.
pub(crate) struct Ref<'g, T: Graved> {
    ptr: NonNull<T>,
    _t: PhantomData<&'g T>,
}

/// A stable node, kept allocated for `'g` (see [`Ref`]).
pub(crate) type NodeRef<'g> = Ref<'g, StableNode>;

/// An rmap item, kept allocated for `'g` (see [`Ref`]).
pub(crate) type ItemRef<'g> = Ref<'g, RmapItem>;

/// The types this module frees through the [`Graveyard`].
///
/// # Safety
///
/// Every value lives in an object allocated by this module and is freed only through the
/// graveyard (its fields are private to this module, whose constructors move it into its
/// allocation at once), and every field that changes after initialization is a `Cell`, an
/// atomic or in an `UnsafeCell`, so that `&T` may be held while they change. The type has no
/// drop glue, and the slab frees the object with the provenance of its allocation, whatever the
/// pointer it is given (`CacheBox::from_raw()`): it may come from a shared reference.
pub(crate) unsafe trait Graved {}

// SAFETY: Nodes are freed by `Graveyard::drain()` only; see `StableNode` for its fields. No drop
// glue (checked below).
unsafe impl Graved for StableNode {}

// SAFETY: Items are freed by `Graveyard::drain()` only; see `RmapItem` for its fields. No drop
// glue (checked below).
unsafe impl Graved for RmapItem {}

const _: () =
    assert!(!core::mem::needs_drop::<StableNode>() && !core::mem::needs_drop::<RmapItem>());

impl<T: Graved> Clone for Ref<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Graved> Copy for Ref<'_, T> {}

impl<T: Graved> PartialEq for Ref<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr
    }
}

impl<T: Graved> Eq for Ref<'_, T> {}

impl<T: Graved> Deref for Ref<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: Allocated for `'g` (type invariant). Every field that changes after
        // initialization is a `Cell`, atomic or in an `UnsafeCell` (`Graved`). Neither type is
        // `Sync`, yet rmap walks on other CPUs make `&RmapItem`s of the stable items they find
        // (`folio_mappings()`): that is no data race, since they read `mm`, which never
        // changes, and `Cell`s that change only under the KSM folio's lock they hold, or while
        // no folio points at the item's node.
        unsafe { self.ptr.as_ref() }
    }
}

impl<'g, T: Graved> Ref<'g, T> {
    /// A reference for `'g`, a hold of the thread mutex (`ksm`), to the node or item at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a `T` allocated by this module and not freed yet: one found, during
    /// `'g`, on a list or through a live item or a KSM folio.
    unsafe fn new(_ksm: &Ksm<'g>, ptr: NonNull<T>) -> Self {
        // INVARIANT: Not freed yet, as the caller guarantees, so not before the graveyard is
        // drained when the mutex is released, after `'g`.
        Self {
            ptr,
            _t: PhantomData,
        }
    }

    /// A reference for `'g` to a node or item borrowed while the thread mutex is held.
    pub(crate) fn from_ref(_ksm: &Ksm<'g>, r: &T) -> Self {
        // INVARIANT: `r` is valid now, so allocated by this module (`Graved`), and freed only
        // through the graveyard, when the thread mutex is released: after `'g`, the borrow of the
        // held mutex's `Ksm<'g>`.
        Self {
            ptr: NonNull::from(r),
            _t: PhantomData,
        }
    }

    /// As [`Ref::from_ref`], for a node or item reached through this one (while the thread
    /// mutex is held, for `'g`, as this reference shows).
    pub(crate) fn other<U: Graved>(self, r: &U) -> Ref<'g, U> {
        // INVARIANT: As in `from_ref()`: `'g` lies within a hold of the thread mutex (type
        // invariant of `self`).
        Ref {
            ptr: NonNull::from(r),
            _t: PhantomData,
        }
    }
}

/// The list of an mm slot's items, in address order (C: `mm_slot->rmap_list`).
///
/// Changed by the scanner only, through the item cursor, while it holds the slot
/// ([`hold_slot`]). The head is atomic (relaxed) so that `__ksm_exit()` may test whether it is
/// empty under the mm list's spinlock alone.
///
/// # Invariants
///
/// The items of the list belong to `mm`.
pub(crate) struct ItemList {
    first: Atomic<*mut RmapItem>,
    mm: ARef<Mm>,
}

impl ItemList {
    /// An empty list for the items of `mm`, holding an `mmgrab()` reference on it.
    pub(crate) fn new(mm: &Mm) -> Self {
        // INVARIANT: The list holds a reference on its mm.
        Self {
            first: Atomic::new(core::ptr::null_mut()),
            mm: ARef::from(mm),
        }
    }

    /// The mm of the list's items.
    pub(crate) fn mm(&self) -> &Mm {
        &self.mm
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.load(Relaxed).is_null()
    }
}

impl Drop for ItemList {
    fn drop(&mut self) {
        // Items left on the list (a bug) are leaked; they point at the mm: keep it for them.
        if kernel::warn_on!(!self.is_empty()) {
            core::mem::forget(self.mm.clone());
        }
    }
}

/// KSM's record of one registered mm (`struct ksm_mm_slot`).
///
/// The slot's place in the scan order is not in the slot but in its entry of the map of
/// [`crate::mm_slot::MmList`], so that the scanner may hold the slot under the cursor while
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

    /// The mm's rmap items.
    pub(crate) fn items(&self) -> &ItemList {
        &self.items
    }
}

/// An mm slot on no list, owned: freed with its mm reference when dropped. A slot that still
/// has items keeps its mm alive for them, with a warning ([`ItemList`]).
pub(crate) type OwnedSlot = CacheBox<'static, MmSlot>;

/// Gives the scanner `slot`, the mm slot the scan cursor moves to (`None`: the head), and takes
/// back the slot it held: the item cursor moves to the start of the new slot's list. For the
/// cursor moves of [`crate::mm_slot`] only, which keep the slot the scanner holds and the scan
/// cursor in step under the list's spinlock.
pub(crate) fn hold_slot(ksm: &mut Ksm<'_>, slot: Option<OwnedSlot>) -> Option<OwnedSlot> {
    // INVARIANT: The start of the list.
    ksm.item_prev = None;
    core::mem::replace(&mut ksm.cursor_slot, slot)
}

/// The mm slot the scanner holds: the one under the scan cursor, if any.
pub(crate) fn held_slot<'k>(ksm: &'k Ksm<'_>) -> Option<&'k MmSlot> {
    ksm.cursor_slot.as_deref()
}

/// Moves the item cursor back to the start of the held slot's list.
pub(crate) fn rewind_cursor(ksm: &mut Ksm<'_>) {
    // INVARIANT: The start of the list.
    ksm.item_prev = None;
}

/// The link the item cursor is at: the held slot's list head, or the `rmap_list` of the item
/// before the cursor.
enum CursorLink<'a, 'g> {
    Head(&'a Atomic<*mut RmapItem>),
    After(ItemRef<'g>),
}

impl CursorLink<'_, '_> {
    fn get(&self) -> &Atomic<*mut RmapItem> {
        match self {
            Self::Head(link) => link,
            Self::After(item) => &item.rmap_list,
        }
    }
}

/// Where the item cursor is, if a slot is held: the link it is at, and the item at the cursor
/// (the next one on the list), if any.
fn cursor_at<'a, 'g>(ksm: &'a Ksm<'g>) -> Option<(CursorLink<'a, 'g>, Option<ItemRef<'g>>)> {
    let list = held_slot(ksm)?.items();
    // SAFETY: Both are items on the held slot's list: the item before the cursor (type
    // invariant of `KsmState`), and the one its link, or the list head, points at. An item on a
    // list is valid, and is not freed before it leaves it, which it does only through the
    // cursor (`free_at_cursor()`), so not during `'g` as a freed item waits in the graveyard.
    unsafe {
        let link = match ksm.item_prev {
            None => CursorLink::Head(&list.first),
            Some(p) => CursorLink::After(ItemRef::new(ksm, p)),
        };
        let next = NonNull::new(link.get().load(Relaxed)).map(|p| ItemRef::new(ksm, p));
        Some((link, next))
    }
}

/// The item at the cursor: the next one on the list, if any.
pub(crate) fn cursor_item<'g>(ksm: &Ksm<'g>) -> Option<ItemRef<'g>> {
    cursor_at(ksm)?.1
}

/// Moves the cursor past the item at the cursor.
pub(crate) fn cursor_step(ksm: &mut Ksm<'_>) {
    if let Some(item) = cursor_item(ksm) {
        // INVARIANT: An item on the held slot's list.
        ksm.item_prev = Some(item.ptr);
    }
}

/// Allocates an item for `addr` in the mm of the held slot and links it in at the cursor, in
/// front of the item at the cursor (`alloc_rmap_item()`). May fail quietly under memory
/// pressure; the scan just moves on.
pub(crate) fn alloc_at_cursor<'g>(ksm: &mut Ksm<'g>, addr: usize) -> Option<ItemRef<'g>> {
    let (Some((link, _)), Some(slot)) = (cursor_at(ksm), held_slot(ksm)) else {
        kernel::warn_on!(true);
        return None;
    };
    let (link, mm) = (link.get(), slot.mm());
    // INVARIANT: Plain, on the list of `mm`'s slot, which holds an `mmgrab()` reference.
    let item = RmapItem {
        rmap_list: Atomic::new(link.load(Relaxed)),
        anon_vma_or_nid: Cell::new(AnonVmaOrNid::nid(0)),
        mm: NonNull::from(mm),
        address: Cell::new(PackedAddress::new(addr)),
        info: Cell::new(Info::new()),
        link: ItemLink {
            stable: ManuallyDrop::new(StableLink {
                head: Cell::new(core::ptr::null_mut()),
                hlist: hlist::Links::new(),
            }),
        },
    };
    let item = ItemRef::from_ref(ksm, crate::alloc_rmap_item(ksm, item)?);
    link.store(item.ptr.as_ptr(), Relaxed);
    account_rmap_item(ksm, mm, 1);
    Some(item)
}

/// Accounts for an item of `mm` allocated (`n = 1`) or freed (`n = -1`).
fn account_rmap_item(ksm: &Ksm<'_>, mm: &Mm, n: isize) {
    RMAP_ITEMS.add(ksm, n);
    add_mm_counters(ksm, mm, 0, n);
}

/// Takes the item at the cursor off its list and frees it (`free_rmap_item()`): it goes to
/// the graveyard, to be freed when the thread mutex is released. The caller has taken it out
/// of its tree (`remove_rmap_item_from_tree()`); if it is still in one, or holds an anon_vma
/// reference, it is leaked with a warning instead, since a tree or list may still reach it.
pub(crate) fn free_at_cursor(ksm: &mut Ksm<'_>) {
    let Some((link, Some(item))) = cursor_at(ksm) else {
        return;
    };
    link.get().store(item.rmap_list.load(Relaxed), Relaxed);
    // The mm slot's reference on the mm stops covering the item: take one for it, dropped
    // when the item is freed (never, if leaked).
    core::mem::forget(ARef::from(item.mm()));
    let a = item.address();
    // Unstable but unlinked would be no harm, but the caller forgot to uncount it.
    if kernel::warn_on!(a.is_stable() || a.has_rmap() || a.is_unstable()) {
        return;
    }
    account_rmap_item(ksm, item.mm(), -1);
    // The graveyard drops the reference on `mm`.
    ksm.graveyard().bury_item(item);
}
pub(crate) mod locked;

/// Proof that a constructor is called from this module or [`locked`]: [`StableTrees`] and
/// [`Graveyard`] are made there, once, for the thread mutex.
pub(crate) struct Seal(());

// Stable nodes.

/// `rmap_hlist_len` of a chain node. Any negative number would do; not -1, so that an underflow
/// of a real count is still recognizable.
pub(crate) const STABLE_NODE_CHAIN: i32 = -1024;

/// Where a node is linked: in a stable tree, or in a list (C: the union of `node` with
/// `head`, `hlist_dup` and `list`). [`StableNode::place`] says which.
#[repr(C)]
union NodeLink {
    /// In a stable tree (a plain node or a chain; accessed by the tree only, through
    /// [`TreeLinks`]).
    node: ManuallyDrop<Links>,
    /// In a chain's list of dups (a dup), on the migrate list or in the graveyard (accessed by
    /// the lists only, through [`DupLinks`], [`MigrateLinks`] and [`DeadLinks`]).
    list: ManuallyDrop<hlist::Links<StableNode>>,
}

/// The head of a node's list (C: `hlist`, which holds either): the rmap items mapping a KSM
/// page (plain nodes and dups), or the dups of a chain; whether the node is a chain says
/// which.
#[repr(C)]
union NodeHead {
    /// The rmap items mapping this KSM page (plain nodes and dups).
    items: ManuallyDrop<hlist::Head<StableItemLinks>>,
    /// The dups (chains only).
    dups: ManuallyDrop<hlist::Head<DupLinks>>,
}

/// Where a node is.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Place {
    /// In no tree or list (`link` unused): new, or taken out.
    Unlinked,
    /// In the stable tree of `nid` (`link.node`): a plain node or a chain.
    Tree,
    /// A dup in a chain's list (`link.list`; C: `head == STABLE_NODE_DUP_HEAD`).
    Dup,
    /// On the migrate list, out of any tree (`link.list`; C: `head == &migrate_nodes`).
    Migrate,
    /// Freed: in the graveyard (`link.list`), to be freed when the thread mutex is released.
    Dead,
}

/// A node of the stable tree (`struct ksm_stable_node`): a KSM page, or a chain of them.
///
/// At most 64 bytes on 64-bit, as C's (checked at build time): what a node can be linked into
/// shares one [`NodeLink`], and its list one [`NodeHead`].
///
/// Only the thread mutex's holder changes a node, except `kpfn` (stored by
/// `folio_migrate_ksm()` under the folio lock) and the item list (changed under the thread
/// mutex and the KSM folio's lock, walked by `rmap_walk_ksm()` under the folio lock alone).
/// Other CPUs reach a node through raw pointers only, and access only those two fields, so
/// its other fields are `Cell`s: a node is not `Sync`, and a [`NodeRef`] not `Send`.
///
/// # Invariants
///
/// - `place` says which member of `link` is in use, and the tree or list the node is in
///   (the stable tree of `nid` for [`Place::Tree`]). The links are used by this module only.
/// - Whether the node is a chain (`rmap_hlist_len == STABLE_NODE_CHAIN`) never changes: a
///   chain's `head` holds its dups, which are nodes with [`Place::Dup`]; any other node's
///   `head` holds rmap items, whose `address` is stable and whose `head` points back at it.
/// - A [`Place::Dead`] node has an empty list; it is freed only when the thread mutex is
///   released (the [`Graveyard`]). No other node is ever freed.
#[repr(C)]
pub(crate) struct StableNode {
    /// Where the node is linked, as `place` says.
    link: NodeLink,
    /// Its list, as `rmap_hlist_len` says.
    head: NodeHead,
    /// Page frame number of the KSM page (plain nodes and dups), in the memory map while the
    /// thread mutex is held (see [`NodeRef::page`]).
    kpfn: Atomic<usize>,
    /// When the chain was last pruned of stale dups (chains only).
    chain_prune_time: Cell<usize>,
    /// Number of items in the list, or [`STABLE_NODE_CHAIN`].
    rmap_hlist_len: Cell<i32>,
    /// NUMA node of the tree holding this node.
    nid: Cell<i32>,
    /// Checksum of the KSM page (of its dups' pages for a chain), the first part of the
    /// node's key in the tree ([`crate::order`]). Fixed for the node's life.
    hash: u32,
    /// Where the node is.
    place: Cell<Place>,
}

/// The links of stable nodes in the stable trees: a node is in one while its place is
/// [`Place::Tree`].
struct TreeLinks;

// SAFETY: `link.node` is a `ManuallyDrop<Links>` in every `StableNode`. Only the trees and
// lists of nodes change a node's place, through `set_linked()` (`new_node()` starts it
// `Unlinked`), and an `Unlinked` node uses no member of `link`.
unsafe impl Adapter for TreeLinks {
    type Item = StableNode;
    const OFFSET: usize = offset_of!(StableNode, link.node);

    unsafe fn is_linked(node: &StableNode) -> bool {
        node.place.get() == Place::Tree
    }

    unsafe fn is_free(node: &StableNode) -> bool {
        node.place.get() == Place::Unlinked
    }

    unsafe fn set_linked(node: &StableNode, linked: bool) {
        node.place
            .set(if linked { Place::Tree } else { Place::Unlinked });
    }
}

// SAFETY: A node in a tree or a list is not freed, as [`Graved`] says: only the graveyard
// frees nodes, those on its own list, once it took them off, when the thread mutex is released,
// when no `Ksm<'g>` is left, and so no reference a tree or list handed out (they are reached
// through `Ksm` or a `NodeRef`). Nodes never move and are never borrowed mutably (`Graved`).
// The trees and the lists of nodes, whose links overlap, are used under the thread mutex only:
// the trees are in its data (`locked`), and only this module reaches them (`StableTrees::tree()`
// and `tree_mut()` are private). The adapter is private to this module, so no other module
// makes a tree of nodes (they see its positions as `StablePos`).
unsafe impl kernel::rbtree::intrusive::Anchored for TreeLinks {}

/// Defines the links of stable nodes in one kind of list, which holds the nodes whose place is
/// `$place` (through `link.list`).
macro_rules! node_list_links {
    ($(#[$meta:meta])* $name:ident, $place:ident) => {
        $(#[$meta])*
        struct $name;

        // SAFETY: `link.list` is a transparent `ManuallyDrop<hlist::Links<StableNode>>` in every
        // `StableNode`. The place changes only as for `TreeLinks`.
        unsafe impl hlist::Adapter for $name {
            type Item = StableNode;
            const OFFSET: usize = offset_of!(StableNode, link.list);

            unsafe fn is_linked(node: &StableNode) -> bool {
                node.place.get() == Place::$place
            }

            unsafe fn is_free(node: &StableNode) -> bool {
                node.place.get() == Place::Unlinked
            }

            unsafe fn set_linked(node: &StableNode, linked: bool) {
                node.place.set(if linked { Place::$place } else { Place::Unlinked });
            }
        }

        // SAFETY: A listed node is not freed, and nodes do not move, as for `TreeLinks`. The
        // heads are in chains, which never move, are never borrowed mutably (`Graved`) and are
        // freed only with an empty list (`bury()`), or boxed, for the migrate list and the
        // graveyard, so that only the box is borrowed mutably with `Ksm` or the graveyard.
        // The lists, and the trees whose links overlap, are used under the thread mutex only.
        // The adapter is private to this module, whose functions are its only users.
        unsafe impl hlist::Anchored for $name {}
    };
}

node_list_links!(
    /// The links of dups in their chain's list.
    DupLinks,
    Dup
);
node_list_links!(
    /// The links of stable nodes on the migrate list.
    MigrateLinks,
    Migrate
);
node_list_links!(
    /// The links of freed stable nodes in the graveyard.
    DeadLinks,
    Dead
);

// As small as C's `struct ksm_stable_node` (64 bytes on 64-bit), the checksum included.
#[cfg(CONFIG_64BIT)]
const _: () = assert!(core::mem::size_of::<StableNode>() <= 64);

// SAFETY: A node is allocated and freed under the thread mutex, and may be freed by a thread
// other than the one that allocated it; nothing in it is tied to a thread.
unsafe impl Send for StableNode {}

impl StableNode {
    /// Whether the node is on the migrate list, out of any tree.
    pub(crate) fn on_migrate_list(&self) -> bool {
        self.place.get() == Place::Migrate
    }

    /// Whether the node is a dup in a chain.
    pub(crate) fn is_dup(&self) -> bool {
        self.place.get() == Place::Dup
    }

    /// The page frame number of the KSM page (C: `READ_ONCE()`: `folio_migrate_ksm()` may
    /// store it concurrently).
    pub(crate) fn kpfn(&self) -> usize {
        self.kpfn.load(Relaxed)
    }

    /// The checksum of the node's page(s).
    pub(crate) fn hash(&self) -> u32 {
        self.hash
    }

    /// The NUMA node of the tree holding this node (or that held it, on the migrate list).
    pub(crate) fn nid(&self) -> i32 {
        self.nid.get()
    }

    /// The number of mappings of the node's page (plain nodes and dups).
    pub(crate) fn rmap_hlist_len(&self) -> i32 {
        self.rmap_hlist_len.get()
    }

    /// When the chain was last pruned.
    pub(crate) fn chain_prune_time(&self) -> usize {
        self.chain_prune_time.get()
    }

    /// Records when the chain was last pruned.
    pub(crate) fn set_chain_prune_time(&self, t: usize) {
        self.chain_prune_time.set(t);
    }

    /// The `folio->mapping` value of the KSM page of the node at `this`.
    pub(crate) fn expected_mapping(this: *const StableNode) -> usize {
        this as usize | FOLIO_MAPPING_KSM
    }

    /// Whether this is a chain of dups.
    pub(crate) fn is_chain(&self) -> bool {
        self.rmap_hlist_len.get() == STABLE_NODE_CHAIN
    }

    /// Whether `extra` more mappings may share this node's page
    /// (`__is_page_sharing_candidate()`): it still has a mapping (else its page is going away)
    /// and stays below `max_page_sharing`.
    pub(crate) fn is_sharing_candidate_plus(&self, extra: i32) -> bool {
        let len = self.rmap_hlist_len.get();
        // C: VM_BUG_ON(). A chain or an underflowed count: refuse to share.
        if kernel::warn_on!(len < 0) {
            return false;
        }
        len != 0 && len + extra < MAX_PAGE_SHARING.load(Relaxed)
    }

    /// Whether another mapping may share this node's page (`is_page_sharing_candidate()`).
    pub(crate) fn is_sharing_candidate(&self) -> bool {
        self.is_sharing_candidate_plus(0)
    }

    /// The list of items, if this is a plain node or dup.
    fn items_head(&self) -> Option<&hlist::Head<StableItemLinks>> {
        // SAFETY: `items` is the member in use for a node that is no chain (type invariant).
        (!self.is_chain()).then(|| unsafe { &*self.head.items })
    }

    /// The list of dups, if this is a chain.
    fn dups_head(&self) -> Option<&hlist::Head<DupLinks>> {
        // SAFETY: `dups` is the member in use for a chain (type invariant).
        self.is_chain().then(|| unsafe { &*self.head.dups })
    }

    /// Whether the node has no items (plain nodes and dups) or no dups (chains).
    pub(crate) fn list_is_empty(&self) -> bool {
        match (self.items_head(), self.dups_head()) {
            (Some(items), _) => items.is_empty(),
            (_, Some(dups)) => dups.is_empty(),
            _ => true,
        }
    }

    /// Whether the node is in the stable tree of its nid.
    fn in_tree(&self) -> bool {
        self.place.get() == Place::Tree
    }
}

impl<'g> NodeRef<'g> {
    /// The node's page as it is now: its pfn, read once (C: `READ_ONCE(kpfn)`, see
    /// [`StableNode::kpfn`]), and its folio, not referenced. A chain has no page (its `kpfn` is
    /// 0): `None`, with a warning.
    pub(crate) fn page(self) -> Option<(usize, &'g UnrefFolio)> {
        if kernel::warn_on!(self.is_chain()) {
            return None;
        }
        let kpfn = self.kpfn();
        // SAFETY: The `kpfn` of a plain node or dup (not a chain's, refused above) was the pfn
        // of a folio when the node was made or its page migrated (`alloc()`, `migrate_folio()`).
        // Its `struct page` stays in the memory map while the thread mutex is held, as it is for
        // `'g`: offlining poisons the memory map of a range (`remove_pfn_range_from_zone()`) and
        // hot-remove frees it only after the `MEM_OFFLINE` notifier, which takes the mutex and
        // removes the nodes of that range (`hotremove`). This does not rest on the offlining
        // wait of `crate::lock_ksm()`: any holder of the mutex keeps the pages of its nodes.
        Some((kpfn, unsafe { UnrefFolio::from_pfn(kpfn) }))
    }

    /// The NUMA node of the node's page (plain nodes and dups; 0, with a warning, for a chain).
    pub(crate) fn page_nid(self) -> i32 {
        self.page().map_or(0, |(_, folio)| folio.nid())
    }

    /// The node's address, as rmap items and folios record it.
    pub(crate) fn as_ptr(self) -> *mut StableNode {
        self.ptr.as_ptr()
    }

    /// The `folio->mapping` value of the node's KSM page.
    pub(crate) fn expected_mapping(self) -> usize {
        StableNode::expected_mapping(self.as_ptr())
    }
}

/// The nodes of a list (a chain's dups, the migrate list), from the first.
///
/// Each node's successor is read before the node is handed out, so the caller may take that
/// node off the list or free it. If other nodes of the list change places meanwhile, the
/// iteration may end early or go on along another list; it never reaches freed memory.
struct NodeIter<'g, A> {
    next: Option<NodeRef<'g>>,
    _list: PhantomData<A>,
}

impl<'g, A: hlist::Anchored<Item = StableNode>> Iterator for NodeIter<'g, A> {
    type Item = NodeRef<'g>;

    fn next(&mut self) -> Option<NodeRef<'g>> {
        let cur = self.next?;
        // None once the node is off the list: its place changed.
        self.next = hlist::Head::<A>::next(&cur).map(|n| cur.other(n));
        Some(cur)
    }
}

/// Allocates a node for the KSM page `kfolio`, whose checksum is `hash`, in no tree or list
/// (`alloc_stable_node()`). No folio points at it yet: the caller points `kfolio` at it with
/// [`point_folio`].
pub(crate) fn alloc<'g>(ksm: &Ksm<'g>, kfolio: &Folio, hash: u32) -> Option<Unmapped<'g>> {
    // A folio's pfn is in the memory map.
    let node = new_node(ksm, kfolio.pfn(), hash, false)?;
    // INVARIANT: Just allocated: no folio points at it.
    Some(Unmapped(node))
}

/// Allocates an empty chain for pages of checksum `hash` (`alloc_stable_node_chain()`).
pub(crate) fn alloc_chain<'g>(ksm: &Ksm<'g>, hash: u32) -> Option<NodeRef<'g>> {
    // A chain has no page: its `kpfn` is never looked at.
    new_node(ksm, 0, hash, true)
}

/// Allocates a plain node or dup for the page at `kpfn`, or with `chain`, an empty chain.
/// `kpfn` must be in the memory map (see [`NodeRef::page`]) unless for a chain.
fn new_node<'g>(ksm: &Ksm<'g>, kpfn: usize, hash: u32, chain: bool) -> Option<NodeRef<'g>> {
    // INVARIANT: In no tree or list, with an empty list of the kind it keeps for its life.
    let node = StableNode {
        link: NodeLink {
            list: ManuallyDrop::new(hlist::Links::new()),
        },
        head: if chain {
            NodeHead {
                dups: ManuallyDrop::new(hlist::Head::new()),
            }
        } else {
            NodeHead {
                items: ManuallyDrop::new(hlist::Head::new()),
            }
        },
        // INVARIANT: In the memory map, as the callers pass it.
        kpfn: Atomic::new(kpfn),
        chain_prune_time: Cell::new(0),
        rmap_hlist_len: Cell::new(if chain { STABLE_NODE_CHAIN } else { 0 }),
        nid: Cell::new(0),
        hash,
        place: Cell::new(Place::Unlinked),
    };
    let node = NodeRef::from_ref(ksm, crate::alloc_stable_node(ksm, node).ok()?);
    if chain {
        STABLE_NODE_CHAINS.add(ksm, 1);
    }
    Some(node)
}

/// A plain node or dup that no folio points at, which may be freed ([`free`]) and whose items
/// may be taken off its list without the lock of a folio ([`take_item_unmapped`]).
///
/// # Invariants
///
/// No folio that can still be referenced or walked by the reverse map points at the node while
/// this value exists. A folio is pointed at a node only when the node is new ([`point_folio`],
/// which takes the node's `Unmapped` from [`alloc`]), or when the folio replaces one that
/// pointed at the node (`folio_migrate_ksm()`, which holds the locks of both).
#[must_use]
pub(crate) struct Unmapped<'g>(NodeRef<'g>);

impl<'g> Unmapped<'g> {
    /// Records that no folio points at `node`.
    ///
    /// # Safety
    ///
    /// No folio that can still be referenced or walked by the reverse map may point at `node`:
    /// its page was found stale (it no longer points at the node, or is being freed, and `kpfn`
    /// did not change meanwhile, see `stable_tree::lookup_folio()`).
    pub(crate) unsafe fn new(node: NodeRef<'g>) -> Self {
        // INVARIANT: As the caller guarantees. A stale node stays so: no folio points at it to
        // be migrated, and only new nodes get a folio.
        Self(node)
    }

    /// The node.
    pub(crate) fn node(&self) -> NodeRef<'g> {
        self.0
    }

    /// Gives up the proof.
    fn into_node(self) -> NodeRef<'g> {
        self.0
    }
}

/// Memory that went offline, whose stable nodes are all stale: made by the `MEM_OFFLINE`
/// notifier for its call.
///
/// # Invariants
///
/// The memory of the page frames `pfns` went offline: page migration moved every page still
/// mapped out of it, and changed their nodes' `kpfn`. It stays offline while this value exists:
/// the notifier's caller holds the memory hotplug lock, which onlining takes.
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
pub(crate) struct Offline {
    pfns: core::ops::Range<usize>,
}

#[cfg(CONFIG_MEMORY_HOTREMOVE)]
impl Offline {
    /// Records that the memory of the page frames `pfns` went offline.
    ///
    /// # Safety
    ///
    /// It must have (the memory hotplug notifier's `MEM_OFFLINE`), and stay offline while the
    /// value exists (the notifier's call).
    pub(crate) unsafe fn new(pfns: core::ops::Range<usize>) -> Self {
        // INVARIANT: As the caller guarantees.
        Self { pfns }
    }

    /// `node` as an [`Unmapped`] node, if it is a plain node or dup whose page was in the
    /// offline memory.
    pub(crate) fn stale<'g>(&self, node: NodeRef<'g>) -> Option<Unmapped<'g>> {
        if node.is_chain() || !self.pfns.contains(&node.kpfn()) {
            return None;
        }
        // INVARIANT: Its page went offline: every folio still mapped was migrated out of it,
        // except hwpoisoned ones, which stay unmapped and referenced with their mapping (C's
        // `ksm_check_stable_tree()` frees their node all the same). Those can no longer be
        // looked up (`pfn_to_online_page()` refuses offline pages) nor walked by the reverse
        // map (they are mapped nowhere), and onlining initializes the memory map anew. Its
        // `kpfn` does not change: it changes only when a folio that points at the node
        // migrates (under the folio lock), and none does.
        Some(Unmapped(node))
    }
}

/// Stops the locked folio `guard` from pointing at `node`: it becomes a plain anonymous folio
/// (C: `folio_set_stable_node(folio, NULL)` in `remove_stable_node()`), and the node
/// [`Unmapped`]. `None` if the folio is not the node's page.
///
/// `None` too if the folio is still mapped: only a folio about to be freed or swapped, with no
/// mapping left for an rmap walk to find through the node, may stop being KSM.
#[cfg(CONFIG_SYSFS)]
pub(crate) fn unmap_folio<'g>(
    guard: &FolioLockGuard<'_>,
    node: NodeRef<'g>,
) -> Option<Unmapped<'g>> {
    if guard.raw_mapping() != node.expected_mapping() || guard.is_mapped() {
        return None;
    }
    forget_node(guard);
    // INVARIANT: The folio no longer points at the node, and no other folio does: one that
    // replaces the node's page points at the node only while the migration holds the locks of
    // both folios, so not now that we hold this one's.
    Some(Unmapped(node))
}

/// Points the locked folio `kfolio`, which becomes a KSM page, at `new`, the node [`alloc`]
/// made for it, now linked in a tree or a chain, giving up the node's [`Unmapped`] (C:
/// `folio_set_stable_node()` in `stable_tree_insert()`). Refuses, with a warning, a node that
/// is not linked or not of `kfolio`'s page: it is left stale, for a walk to remove.
///
/// # Safety
///
/// - `kfolio` must be anonymous and no longer exclusive (write-protected wherever it is
///   mapped, as `write_protect_page()` leaves it): it may become KSM.
/// - `new` must be the `Unmapped` that [`alloc`] returned for `kfolio`'s page, and the node
///   must not have been looked up since (by `stable_tree::lookup_folio()`, `ksm_get_folio()`
///   or a walk of its tree): then no other `Unmapped` of it exists.
pub(crate) unsafe fn point_folio<'g>(
    kfolio: &FolioLockGuard<'_>,
    new: Unmapped<'g>,
) -> Option<NodeRef<'g>> {
    let node = new.into_node();
    let linked = matches!(node.place.get(), Place::Tree | Place::Dup);
    if kernel::warn_on!(!linked || node.kpfn() != kfolio.pfn()) {
        return None;
    }
    // SAFETY: The folio is locked, and may become KSM (the caller's promise). The node's
    // `Unmapped` is consumed, and no other exists (the caller's promise): no code relies on
    // the node having no folio any more.
    unsafe { kfolio.set_raw_mapping(node.expected_mapping()) };
    Some(node)
}

/// Frees a plain node or dup that is in no tree or list and has no items
/// (`free_stable_node()`): it goes to the graveyard, to be freed when the thread mutex is
/// released. Refuses (and leaks the node) otherwise ([`free_chain`] frees chains).
pub(crate) fn free(ksm: &Ksm<'_>, node: Unmapped<'_>) {
    let node = node.into_node();
    if kernel::warn_on!(node.is_chain()) {
        return;
    }
    // No folio points at the node (type invariant of `Unmapped`).
    bury(ksm, node);
}

/// Frees a chain that is in no tree and has no dups (`free_stable_node()`); refuses (and
/// leaks the node) otherwise. No folio points at a chain: only plain nodes and dups have a
/// page.
pub(crate) fn free_chain(ksm: &Ksm<'_>, chain: NodeRef<'_>) {
    if kernel::warn_on!(!chain.is_chain()) {
        return;
    }
    bury(ksm, chain);
}

/// Puts a node that no folio points at into the graveyard, if it is in no tree or list and
/// its list is empty; warns and leaks it otherwise.
fn bury(ksm: &Ksm<'_>, node: NodeRef<'_>) {
    if kernel::warn_on!(node.place.get() != Place::Unlinked || !node.list_is_empty()) {
        return;
    }
    if ksm.graveyard().bury(node) && node.is_chain() {
        STABLE_NODE_CHAINS.add(ksm, -1);
    }
}

/// The address of the stable node of a KSM folio, or null (`folio_stable_node()`): for the
/// C entry points, which reach the node through a locked folio without the thread mutex.
pub(crate) fn folio_node_ptr(folio: &Folio) -> *mut StableNode {
    // One read: the mapping may change under a reader without the folio lock.
    let mapping = folio.raw_mapping();
    if mapping & FOLIO_MAPPING_FLAGS == FOLIO_MAPPING_KSM {
        (mapping & !FOLIO_MAPPING_FLAGS) as *mut StableNode
    } else {
        core::ptr::null_mut()
    }
}

/// A mapping of a KSM page, found through an item on the list of the page's stable node.
pub(crate) struct StableMapping<'a> {
    /// The item.
    pub(crate) item: &'a RmapItem,
    /// The anon_vma of the mapping, on which the item holds a reference.
    pub(crate) anon_vma: &'a AnonVma,
    /// The page's index in the anon_vma.
    pub(crate) index: usize,
}

/// The mappings of the KSM page `folio`, which the caller has locked, through the items of its
/// stable node (`rmap_walk_ksm()`, `collect_procs_ksm()`); none if it has no node. An item
/// without an anon_vma reference (there is none on a list) is skipped with a warning.
///
/// The caller need not hold the thread mutex: the folio lock keeps the node allocated (see
/// [`folio_stable_node`]) and its list unchanged. The guard is borrowed mutably, so that the
/// items keep their anon_vma references while the mappings are used: an item drops its
/// reference when it is taken off the list, under the folio lock ([`take_item`], which borrows
/// the guard), or once no folio points at its node ([`take_item_unmapped`]), which this one
/// does. Two locked folios point at the node while it migrates, and `take_item()` would take
/// either's guard; but the migration code holds both locks and has no `Ksm`, which
/// `take_item()` needs, while it walks the mappings.
pub(crate) fn folio_mappings<'a>(
    folio: &'a mut FolioLockGuard<'_>,
) -> impl Iterator<Item = StableMapping<'a>> + 'a {
    let node = folio_node_ptr(folio);
    // SAFETY: A locked KSM folio points at a live node (the "keyhole", see
    // `folio_stable_node()`), and only at a plain node or dup, whose `head` is the list of its
    // items; only that field is borrowed, not the fields ksmd may change meanwhile. The node is
    // not freed while the folio lock is held, for `'a`. The list changes only under that lock,
    // and the walk steps only from its items (`StableItemLinks`).
    let head = NonNull::new(node).map(|n| unsafe { &*(*n.as_ptr()).head.items });
    head.into_iter().flat_map(|h| h.iter()).filter_map(|item| {
        let Some((anon_vma, index)) = item.stable_rmap() else {
            kernel::warn_on!(true);
            return None;
        };
        // SAFETY: The item holds a reference on the anon_vma until it leaves the list, which
        // it does not do while the folio is locked (see above), so not during `'a`.
        let anon_vma = unsafe { AnonVma::from_raw(anon_vma) };
        Some(StableMapping {
            item,
            anon_vma,
            index,
        })
    })
}

/// Points the stable node of the KSM folio `old` at `new`, which replaces it in migration,
/// and stops `old` from pointing at it (`folio_migrate_ksm()`); nothing if `old` has no node.
/// The caller has locked both folios, and set `new`'s mapping to `old`'s. Warns if the folios
/// are not what they should be (C: `VM_BUG_ON_FOLIO()`), and goes on as C does: giving up
/// half-way could leave `new` pointing at a node that then looks stale and is freed.
pub(crate) fn migrate_folio(old: &FolioLockGuard<'_>, new: &FolioLockGuard<'_>) {
    let Some(node) = NonNull::new(folio_node_ptr(old)) else {
        return;
    };
    // One folio cannot replace itself: that would only make it stop pointing at its node.
    if kernel::warn_on!(old.pfn() == new.pfn()) {
        return;
    }
    // SAFETY: A locked KSM folio points at a live node (see `folio_mappings()`). Only its
    // `kpfn` is accessed, an atomic.
    let kpfn = unsafe { &(*node.as_ptr()).kpfn };
    kernel::warn_on!(new.raw_mapping() != old.raw_mapping() || kpfn.load(Relaxed) != old.pfn());
    // The new kpfn must be visible to ksm_get_folio() before it can see the old folio's
    // mapping go stale (or the swap cache flag cleared): smp_wmb() between the two stores,
    // paired with the smp_rmb() there. A release store of kpfn would order only the accesses
    // before it, not the mapping store.
    // INVARIANT: `new`, locked, replaces the node's page; it is in the memory map.
    kpfn.store(new.pfn(), Relaxed);
    smp_mb(Write);
    forget_node(old);
}

/// Makes the locked KSM folio `guard` stop pointing at its stable node (C:
/// `folio_set_stable_node(folio, NULL)`): it stays KSM, and anonymous, with no node. Warns,
/// and does nothing, if the folio is not KSM.
fn forget_node(guard: &FolioLockGuard<'_>) {
    if kernel::warn_on!(guard.raw_mapping() & FOLIO_MAPPING_FLAGS != FOLIO_MAPPING_KSM) {
        return;
    }
    // SAFETY: We hold the folio lock; a KSM folio is anonymous, and stays so.
    unsafe { guard.set_raw_mapping(FOLIO_MAPPING_KSM) };
}

/// The stable node of a KSM folio, if the folio is KSM (`folio_stable_node()`).
pub(crate) fn folio_stable_node<'g>(ksm: &Ksm<'g>, folio: &Folio) -> Option<NodeRef<'g>> {
    let ptr = NonNull::new(folio_node_ptr(folio))?;
    // SAFETY: The "keyhole": a KSM folio's mapping points at a node that is not freed. A node
    // is freed only once no folio points at it (`free()`): when its page is found stale (no
    // longer pointing at it, see `ksm_get_folio()`), or after its folio's mapping was reset
    // under the folio lock (`remove_stable_node()`); `folio_migrate_ksm()` points the new
    // folio at the node before the old one stops.
    Some(unsafe { NodeRef::new(ksm, ptr) })
}

/// The stable node whose list a stable item is on.
pub(crate) fn item_stable_node<'g>(ksm: &Ksm<'g>, item: &RmapItem) -> Option<NodeRef<'g>> {
    if !item.address().is_stable() {
        return None;
    }
    let ptr = NonNull::new(item.stable_link().head.get())?;
    // SAFETY: A stable item is on the list of the node it points at (type invariant of
    // `RmapItem`), and a node with items is not freed (type invariant of `StableNode`).
    Some(unsafe { NodeRef::new(ksm, ptr) })
}

/// The stable trees, one per NUMA node (only the first is used with `merge_across_nodes = 1`),
/// and the migrate list.
///
/// # Invariants
///
/// The trees hold the nodes with [`Place::Tree`], each in the tree of its nid; the migrate
/// list those with [`Place::Migrate`]. Neither is ever emptied but by taking its nodes out,
/// nor replaced: the one value (the thread mutex's, see [`StableTrees::new`]) is allocated
/// once and never dropped.
pub(crate) struct StableTrees {
    roots: KVec<Tree<TreeLinks>>,
    /// Stable nodes whose page migrated to another NUMA node, waiting to be put into that
    /// node's tree (C: `migrate_nodes`). The head is in an allocation of its own, not in
    /// `Ksm`: the first node on the list points back at it and writes through that pointer
    /// when it leaves, while a `&mut Ksm<'_>` (which claims every byte of `Ksm`) is live.
    migrate: Option<KBox<hlist::Head<MigrateLinks>>>,
}

impl StableTrees {
    /// No trees yet: [`StableTrees::alloc`] makes them. Only the thread mutex has stable
    /// trees, made once ([`Seal`]): no other value exists to swap with them.
    pub(crate) const fn new(_once: Seal) -> Self {
        Self {
            roots: KVec::new(),
            migrate: None,
        }
    }

    /// Allocates `n` empty trees and the migrate list, at init; `EBUSY` if done already.
    pub(crate) fn alloc(&mut self, n: usize) -> Result {
        if self.migrate.is_some() || !self.roots.is_empty() {
            return Err(EBUSY);
        }
        self.migrate = Some(KBox::new(hlist::Head::new(), GFP_KERNEL)?);
        self.roots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            self.roots.push(Tree::new(), GFP_KERNEL)?;
        }
        Ok(())
    }

    /// The number of trees (C: `nr_node_ids`).
    pub(crate) fn len(&self) -> usize {
        self.roots.len()
    }

    /// The tree of `nid`; warns if there is none (its nid would be out of range).
    fn tree(&self, nid: i32) -> Option<&Tree<TreeLinks>> {
        let t = usize::try_from(nid).ok().and_then(|n| self.roots.get(n));
        kernel::warn_on!(t.is_none());
        t
    }

    /// As [`StableTrees::tree`], to change it.
    fn tree_mut(&mut self, nid: i32) -> Option<&mut Tree<TreeLinks>> {
        let t = usize::try_from(nid)
            .ok()
            .and_then(|n| self.roots.get_mut(n));
        kernel::warn_on!(t.is_none());
        t
    }
}

/// A place in a walk down a stable tree (a [`Position`] in it). The tree's adapter stays
/// private to this module, so that only this module makes trees of stable nodes (the promise of
/// its `unsafe impl Anchored`).
pub(crate) struct StablePos(Position<TreeLinks>);

/// The start of a walk down the stable tree of `nid`.
pub(crate) fn tree_root(ksm: &Ksm<'_>, nid: i32) -> Result<StablePos> {
    Ok(StablePos(ksm.stable().tree(nid).ok_or(EINVAL)?.root()))
}

/// The node at `pos` of the stable tree of `nid` ([`Tree::item_at`]).
pub(crate) fn tree_node_at<'g>(
    ksm: &Ksm<'g>,
    nid: i32,
    pos: &StablePos,
) -> Result<Option<NodeRef<'g>>> {
    let node = ksm.stable().tree(nid).ok_or(EINVAL)?.item_at(&pos.0)?;
    Ok(node.map(|n| NodeRef::from_ref(ksm, n)))
}

/// Moves `pos` down the stable tree of `nid` ([`Tree::descend`]).
pub(crate) fn tree_descend(ksm: &Ksm<'_>, nid: i32, pos: &mut StablePos, ord: Ordering) -> Result {
    ksm.stable()
        .tree(nid)
        .ok_or(EINVAL)?
        .descend(&mut pos.0, ord)
}

/// The first node of the stable tree of `nid`.
pub(crate) fn tree_first<'g>(ksm: &Ksm<'g>, nid: i32) -> Option<NodeRef<'g>> {
    let node = ksm.stable().tree(nid)?.first();
    node.map(|n| NodeRef::from_ref(ksm, n))
}

/// The node after `node` in its stable tree, if `node` is in one.
pub(crate) fn tree_next<'g>(ksm: &Ksm<'g>, node: NodeRef<'g>) -> Option<NodeRef<'g>> {
    if !node.in_tree() {
        return None;
    }
    let tree = ksm.stable().tree(node.nid())?;
    tree.next(&node).map(|n| NodeRef::from_ref(ksm, n))
}

/// Links `node`, which is in no tree or list, in at the vacant position `pos` of the stable
/// tree of `nid`, which a walk for its content found; `EAGAIN` if the tree changed since.
pub(crate) fn tree_insert<'g>(
    ksm: &mut Ksm<'g>,
    nid: i32,
    pos: &StablePos,
    node: NodeRef<'g>,
) -> Result {
    if kernel::warn_on!(node.place.get() != Place::Unlinked) {
        return Err(EINVAL);
    }
    let tree = ksm.stable_mut().tree_mut(nid).ok_or(EINVAL)?;
    tree.insert(&pos.0, &node)?;
    // INVARIANT: In the tree of `nid`.
    node.nid.set(nid);
    Ok(())
}

/// Takes a plain node or chain out of the stable tree of its nid; warns if it is in none.
pub(crate) fn tree_remove<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>) {
    if kernel::warn_on!(!node.in_tree()) {
        return;
    }
    let Some(tree) = ksm.stable_mut().tree_mut(node.nid()) else {
        return;
    };
    // Not in the tree of its nid would be a bug.
    kernel::warn_on!(tree.remove(&node).is_err());
}

/// Puts `new`, which is in no tree or list, in the place of `old` in the stable tree of
/// `old`'s nid; `old` leaves the tree. `new` must have the content of `old` (the same
/// checksum and bytes) for the tree to stay in order. Warns and fails if the nodes are not
/// where they should be.
pub(crate) fn tree_replace<'g>(ksm: &mut Ksm<'g>, old: NodeRef<'g>, new: NodeRef<'g>) -> Result {
    if kernel::warn_on!(!old.in_tree() || new.place.get() != Place::Unlinked) {
        return Err(EINVAL);
    }
    let nid = old.nid();
    let tree = ksm.stable_mut().tree_mut(nid).ok_or(EINVAL)?;
    tree.replace(&old, &new)?;
    // INVARIANT: `new` is in the tree of `nid` instead of `old`, which is in none.
    new.nid.set(nid);
    Ok(())
}

/// Links `dup`, a plain node in no tree or list, first into the list of dups of `chain`, a
/// chain in a tree (`stable_node_chain_add_dup()`); the dup takes the chain's nid. Warns and
/// fails if the nodes are not what they should be.
pub(crate) fn chain_add_dup<'g>(ksm: &Ksm<'g>, dup: NodeRef<'g>, chain: NodeRef<'g>) -> Result {
    let Some(dups) = chain.dups_head() else {
        kernel::warn_on!(true);
        return Err(EINVAL);
    };
    if kernel::warn_on!(!chain.in_tree() || dup.is_chain() || dup.place.get() != Place::Unlinked) {
        return Err(EINVAL);
    }
    dups.push_front(&dup)?;
    // INVARIANT: A dup on its chain's list; a chain's list holds dups only.
    dup.nid.set(chain.nid());
    STABLE_NODE_DUPS.add(ksm, 1);
    Ok(())
}

/// Takes a dup off its chain's list (`__stable_node_dup_del()`); warns if it is no dup.
pub(crate) fn dup_unlink<'g>(ksm: &Ksm<'g>, dup: NodeRef<'g>) {
    if kernel::warn_on!(!dup.is_dup()) {
        return;
    }
    // A dup is on its chain's list.
    if !kernel::warn_on!(hlist::Head::<DupLinks>::remove(&dup).is_err()) {
        STABLE_NODE_DUPS.add(ksm, -1);
    }
}

/// The dups of a chain (none for a plain node).
pub(crate) fn dups<'g>(chain: NodeRef<'g>) -> impl Iterator<Item = NodeRef<'g>> {
    let first = chain.dups_head().and_then(|d| d.first());
    NodeIter {
        next: first.map(|n| chain.other(n)),
        _list: PhantomData::<DupLinks>,
    }
}

/// Whether `dup` is the only dup of `chain`.
pub(crate) fn is_only_dup(chain: NodeRef<'_>, dup: NodeRef<'_>) -> bool {
    let mut d = dups(chain);
    d.next() == Some(dup) && d.next().is_none()
}

/// Whether `dup` is the first dup of `chain`.
pub(crate) fn is_first_dup(chain: NodeRef<'_>, dup: NodeRef<'_>) -> bool {
    dups(chain).next() == Some(dup)
}

/// Puts a plain node or dup that is in no tree or list on the migrate list; warns and does
/// nothing otherwise.
pub(crate) fn migrate_list_add<'g>(ksm: &Ksm<'g>, node: NodeRef<'g>) {
    // There is no KSM page before init allocated the list.
    let Some(head) = ksm.stable().migrate.as_deref() else {
        kernel::warn_on!(true);
        return;
    };
    if kernel::warn_on!(node.is_chain() || node.place.get() != Place::Unlinked) {
        return;
    }
    // Refused only if not free, which the check above rules out.
    kernel::warn_on!(head.push_front(&node).is_err());
}

/// Takes a node off the migrate list; warns if it is not on it.
pub(crate) fn migrate_list_del(node: NodeRef<'_>) {
    kernel::warn_on!(hlist::Head::<MigrateLinks>::remove(&node).is_err());
}

/// The nodes on the migrate list.
pub(crate) fn migrate_list<'g>(ksm: &Ksm<'g>) -> impl Iterator<Item = NodeRef<'g>> {
    let first = ksm.stable().migrate.as_deref().and_then(|h| h.first());
    NodeIter {
        next: first.map(|n| NodeRef::from_ref(ksm, n)),
        _list: PhantomData::<MigrateLinks>,
    }
}

/// Lists `item` first on the item list of `node` (a plain node or dup), whose KSM folio the
/// caller has locked (`kfolio`), and marks it stable (`stable_tree_append()`, without the
/// accounting). The item holds its anon_vma reference ([`RmapItem::set_rmap`]), which it
/// keeps while listed.
///
/// Fails only if `kfolio` is not the node's page, `node` is a chain or freed, or its count is
/// out of range (C: `BUG_ON()`), or the item is not merged or is listed already: then nothing
/// changes.
pub(crate) fn add_item(
    node: NodeRef<'_>,
    kfolio: &FolioLockGuard<'_>,
    item: ItemRef<'_>,
) -> Result {
    let Some(items) = node.items_head() else {
        kernel::warn_on!(true);
        return Err(EINVAL);
    };
    let len = node.rmap_hlist_len.get();
    let a = item.address();
    if kernel::warn_on!(
        kfolio.raw_mapping() != node.expected_mapping()
            || len < 0
            || len == i32::MAX
            || node.place.get() == Place::Dead
            || !a.has_rmap()
            || a.is_stable()
    ) {
        return Err(EINVAL);
    }
    // The thread mutex and the lock of the node's folio serialize the list's users
    // (`StableItemLinks`). The item points at the node before it goes on the list.
    item.stable_link().head.set(node.as_ptr());
    if let Err(e) = items.push_front(&item) {
        item.stable_link().head.set(core::ptr::null_mut());
        return Err(e);
    }
    // INVARIANT: The item is on the list of the node it points at, and stable (the list's
    // record); the count follows the list.
    node.rmap_hlist_len.set(len + 1);
    Ok(())
}

impl RmapItem {
    /// The stable-list linkage (meaningful with [`STABLE_FLAG`]).
    fn stable_link(&self) -> &StableLink {
        // SAFETY: Both members of `link` are plain data in `UnsafeCell`s (`Opaque` links and a
        // `Cell`), initialized as `stable`, and any bits are valid for `stable`.
        unsafe { &self.link.stable }
    }
}

/// Takes a stable `item` off the item list of its node (`hlist_del()`), which it returns,
/// and makes it a plain item, dropping its anon_vma reference. The caller has locked the
/// node's KSM folio (`kfolio`); refuses (with a warning) if that is not the node's page.
pub(crate) fn take_item<'g>(
    ksm: &Ksm<'g>,
    kfolio: &FolioLockGuard<'_>,
    item: ItemRef<'_>,
) -> Option<NodeRef<'g>> {
    let node = item_stable_node(ksm, &item)?;
    if kernel::warn_on!(kfolio.raw_mapping() != node.expected_mapping()) {
        return None;
    }
    // The folio lock and the thread mutex serialize the list's users.
    unlink_item(node, item).then_some(node)
}

/// Takes a stable `item` off the item list of `node`, which no folio points at, as
/// [`take_item`]; refuses (with a warning) if the item is not on that node's list.
#[must_use]
pub(crate) fn take_item_unmapped(ksm: &Ksm<'_>, node: &Unmapped<'_>, item: ItemRef<'_>) -> bool {
    if kernel::warn_on!(item_stable_node(ksm, &item) != Some(node.node())) {
        return false;
    }
    // No folio points at the node (type invariant of `Unmapped`), so no rmap walk reaches its
    // list; the thread mutex serializes its other users.
    unlink_item(node.node(), item)
}

/// Unlinks the stable `item` from the list of `node`, the node it points at, and drops its
/// anon_vma reference; warns and returns `false`, changing nothing, if the item is on no
/// list. The callers keep the list's other users away: they hold the thread mutex, and the
/// node's folio lock or an [`Unmapped`] of the node (`StableItemLinks`).
fn unlink_item(node: NodeRef<'_>, item: ItemRef<'_>) -> bool {
    // A stable item is on the list of `node` (type invariant of `RmapItem`).
    if kernel::warn_on!(hlist::Head::<StableItemLinks>::remove(&item).is_err()) {
        return false;
    }
    // INVARIANT: On no list; the count follows the list. Plain once the reference is dropped.
    item.stable_link().head.set(core::ptr::null_mut());
    node.rmap_hlist_len.set(node.rmap_hlist_len.get() - 1);
    item.drop_rmap();
    true
}

/// The items of a plain node or dup (none for a chain), from the first.
///
/// Each item's successor is read before the item is handed out, so the caller may take that
/// item off the list; if other items of the list leave it meanwhile, the iteration may end
/// early or go on along another list, never reaching freed memory.
pub(crate) fn node_items<'g>(node: NodeRef<'g>) -> ItemIter<'g> {
    let first = node.items_head().and_then(|h| h.first());
    ItemIter {
        next: first.map(|i| node.other(i)),
    }
}

/// See [`node_items`].
pub(crate) struct ItemIter<'g> {
    next: Option<ItemRef<'g>>,
}

impl<'g> Iterator for ItemIter<'g> {
    type Item = ItemRef<'g>;

    fn next(&mut self) -> Option<ItemRef<'g>> {
        let cur = self.next?;
        // None once the item is off the list: no longer stable.
        self.next = hlist::Head::<StableItemLinks>::next(&cur).map(|i| cur.other(i));
        Some(cur)
    }
}

/// What a walk of an unstable tree found.
pub(crate) enum UnstableFound<'g> {
    /// An item the comparison called equal.
    Item(ItemRef<'g>),
    /// The vacant position for the key, to insert at ([`unstable_insert`]).
    Vacant(UnstablePos),
}

/// A vacant place in an unstable tree (a [`Position`] in it). The tree's adapter stays private
/// to this module, so that only this module makes trees of rmap items (the promise of its
/// `unsafe impl Anchored`).
pub(crate) struct UnstablePos(Position<UnstableLinks>);

/// Walks the unstable tree of `nid` down for an item of checksum `checksum`
/// ([`Tree::find_keyed`]): the tree is ordered by the items' checksums first, then by `cmp`,
/// which is called only for items of the same checksum and may give up (`Err`). `None` if
/// there is no tree for `nid`.
pub(crate) fn unstable_find<'g, E>(
    ksm: &Ksm<'g>,
    nid: i32,
    checksum: u32,
    mut cmp: impl FnMut(ItemRef<'g>) -> core::result::Result<Ordering, E>,
) -> Option<core::result::Result<UnstableFound<'g>, E>> {
    let tree = ksm.unstable_tree(nid)?;
    let found = tree.find_keyed(
        checksum,
        |i| i.unstable_info().oldchecksum,
        |i| cmp(ItemRef::from_ref(ksm, i)),
    );
    Some(found.map(|f| match f {
        Found::Item(i) => UnstableFound::Item(ItemRef::from_ref(ksm, i)),
        Found::Vacant(pos) => UnstableFound::Vacant(UnstablePos(pos)),
    }))
}

/// Links a plain `item` in at the vacant position `pos` of the unstable tree of `nid`, which
/// a walk for its content found, and marks it unstable for the current scan. Warns and fails
/// if the item is not plain or there is no such tree; `EAGAIN` if the tree changed since `pos`
/// was found.
pub(crate) fn unstable_insert<'g>(
    ksm: &mut Ksm<'g>,
    nid: i32,
    pos: &UnstablePos,
    item: ItemRef<'g>,
) -> Result {
    let a = item.address();
    if kernel::warn_on!(!a.is_plain()) {
        return Err(EINVAL);
    }
    let seqnr = ksm.seqnr();
    let tree = ksm.unstable_tree_mut(nid).ok_or(EINVAL)?;
    tree.insert(&pos.0, &item)?;
    // INVARIANT: Linked into the tree of `nid` (the tree's record, kept), during the scan
    // `seqnr`.
    item.anon_vma_or_nid.set(AnonVmaOrNid::nid(nid));
    item.address.set(a.into_unstable(seqnr));
    Ok(())
}

/// Takes an unstable item out of the unstable tree, if it is still in it (inserted during the
/// current scan, and the tree not emptied since), and makes it plain. Returns how many scans
/// ago it was inserted, or `None` if it is not unstable.
pub(crate) fn unstable_remove(ksm: &mut Ksm<'_>, item: ItemRef<'_>) -> Option<u8> {
    let a = item.address();
    if !a.is_unstable() {
        return None;
    }
    // Usually not linked: the tree it was inserted in was emptied since.
    if a.is_linked() && !unstable_unlink(ksm, item) {
        return None;
    }
    // INVARIANT: In no tree now.
    item.address.set(PackedAddress::new(a.addr()));
    Some(a.unstable_age(ksm.seqnr()))
}

/// Takes a linked unstable item out of its tree; false (with a warning) if it is not there.
/// Out of line, so that [`unstable_remove`] stays small for the scanner's every item.
#[cold]
fn unstable_unlink(ksm: &mut Ksm<'_>, item: ItemRef<'_>) -> bool {
    // With `UNSTABLE_FLAG`, the nid of the item's tree (type invariant).
    let nid = item.anon_vma_or_nid.get().as_nid();
    // Not reached: the item was inserted into the tree of its nid. Else leave it linked.
    let Some(tree) = ksm.unstable_tree_mut(nid) else {
        return false;
    };
    !kernel::warn_on!(tree.remove(&item).is_err())
}

/// Empties an unstable tree (`KsmState::reset_unstable_tree()`); the tree marks its items as
/// no longer linked ([`UnstableLinks`]). They stay unstable, counted in `pages_unshared` until
/// the scanner passes them, as in C. Calls `visited` once per item.
fn clear_unstable(tree: &mut Tree<UnstableLinks>, mut visited: impl FnMut()) {
    tree.clear_each(|_| visited());
}

/// The stable nodes and rmap items freed under the thread mutex, which are really freed when
/// it is released (when the [`crate::KsmGuard`] is dropped): a [`NodeRef`] or [`ItemRef`]
/// cannot outlive that.
///
/// # Invariants
///
/// - The list at `head` holds the nodes with [`Place::Dead`].
/// - The list at `items`, linked through their `rmap_list`, holds the items with
///   [`DEAD_FLAG`], each with an `mmgrab()` reference on its mm.
pub(crate) struct Graveyard {
    /// In an allocation of its own, for the reason given at [`StableTrees::migrate`].
    head: Option<KBox<hlist::Head<DeadLinks>>>,
    /// The first dead item, or null.
    items: Cell<*mut RmapItem>,
}

// SAFETY: Used under the thread mutex only; its nodes and items are not tied to a thread.
unsafe impl Send for Graveyard {}

impl Graveyard {
    /// No graveyard yet: [`Graveyard::alloc`] makes it. Only the thread mutex has one
    /// ([`Seal`]).
    pub(crate) const fn new(_once: Seal) -> Self {
        Self {
            head: None,
            items: Cell::new(core::ptr::null_mut()),
        }
    }

    /// Allocates the list, at init; `EBUSY` if done already.
    pub(crate) fn alloc(&mut self) -> Result {
        if self.head.is_some() {
            return Err(EBUSY);
        }
        self.head = Some(KBox::new(hlist::Head::new(), GFP_KERNEL)?);
        Ok(())
    }

    /// Puts a node that is in no tree or list, has an empty list, and that no folio points at
    /// into the graveyard; returns whether it did (else it warns, and the node is leaked).
    fn bury(&self, node: NodeRef<'_>) -> bool {
        // Nodes are allocated after init only.
        let Some(head) = self.head.as_deref() else {
            kernel::warn_on!(true);
            return false;
        };
        // INVARIANT: Dead (the list's record), with an empty list. Freed only once off the list
        // (`drain()`).
        !kernel::warn_on!(head.push_front(&node).is_err())
    }

    /// Puts an item that is on no list and in no tree, and holds no anon_vma reference, into
    /// the graveyard, with the caller's `mmgrab()` reference on its mm.
    fn bury_item(&self, item: ItemRef<'_>) {
        item.rmap_list.store(self.items.get(), Relaxed);
        self.items.set(item.ptr.as_ptr());
        // INVARIANT: Dead, on the graveyard's list, with the reference.
        item.address.set(item.address().into_dead());
    }

    /// Frees the nodes and items in the graveyard. Called when the thread mutex is released:
    /// exclusive access proves that no [`Ksm`], and so no [`NodeRef`] or [`ItemRef`], is left.
    pub(crate) fn drain(&mut self) {
        let head = self.head.as_deref();
        if self.items.get().is_null() && head.is_none_or(|h| h.first().is_none()) {
            return;
        }
        // Objects that exist came from the caches: leaked, with a warning, if they are gone.
        let Some(caches) = crate::caches_for_free() else {
            return;
        };
        while let Some(item) = NonNull::new(self.items.get()) {
            // SAFETY: A dead item, on this list (type invariant), which only we change, and
            // ours alone now: no `ItemRef` to it is left (`&mut self`). Its successor is read
            // before it is freed. It was allocated from this cache by `alloc_at_cursor()`, and
            // is off every tree and list. The graveyard held the reference on its mm (type
            // invariant), which is dropped once, after the item's last use.
            let next = unsafe {
                let next = item.as_ref().rmap_list.load(Relaxed);
                let mm = ARef::from_raw(item.as_ref().mm);
                drop(CacheBox::from_raw(&caches.rmap_item, item));
                drop(mm);
                next
            };
            self.items.set(next);
            cond_resched();
        }
        let Some(head) = head else {
            return;
        };
        while let Some(node) = head.first() {
            cond_resched();
            if kernel::warn_on!(hlist::Head::<DeadLinks>::remove(node).is_err()) {
                return;
            }
            // SAFETY: A dead node was allocated from this cache by `alloc()`, and is now off
            // every tree and list; no `NodeRef` to it is left (`&mut self`), nor the reference
            // the list handed out (not used again), no item points to it (its list is empty),
            // and no folio does (`free()`, `free_chain()`).
            drop(unsafe { CacheBox::from_raw(&caches.stable_node, NonNull::from(node)) });
        }
    }
}

#[kernel::macros::kunit_tests(ksm_rs_rmap_item)]
mod tests {
    use super::*;
    use kernel::page::PAGE_SIZE;

    #[test]
    fn packed_address_flags() {
        let a = PackedAddress::new(0x7f00_1000 + 0x123);
        assert_eq!(a.addr(), 0x7f00_1000);
        assert!(!a.is_stable() && !a.is_unstable());
        assert!(a.is_plain() && !a.is_linked() && !a.is_dead() && !a.has_rmap());
        let u = a.into_unstable(0x1_2345);
        assert!(u.is_unstable() && u.is_linked() && !u.is_stable() && !u.is_dead());
        assert_eq!(u.addr(), 0x7f00_1000);
        assert_eq!(
            u,
            PackedAddress(0x7f00_1000 | UNSTABLE_FLAG | LINKED_FLAG | 0x45)
        );
        // Out of its emptied tree, still unstable: the same bit does not say dead.
        let o = u.into_unlinked();
        assert!(o.is_unstable() && !o.is_linked() && !o.is_dead());
        assert_eq!(o.unstable_age(0x1_2345), 0);
        let r = a.into_rmap();
        assert!(r.has_rmap() && !r.is_stable() && !r.is_plain());
        let s = r.into_stable();
        assert!(s.is_stable() && s.has_rmap() && !s.is_unstable());
        assert_eq!(s.addr(), 0x7f00_1000);
        assert_eq!(PackedAddress::new(s.addr()), a);
        let d = a.into_dead();
        assert!(d.is_dead() && !d.is_unstable() && !d.is_linked() && d.addr() == a.addr());
        assert!(SEQNR_MASK < UNSTABLE_FLAG && DEAD_FLAG < PAGE_SIZE);
    }

    #[test]
    fn unstable_age_wraps() {
        let a = PackedAddress::new(0x1000);
        assert_eq!(a.into_unstable(7).unstable_age(7), 0);
        assert_eq!(a.into_unstable(7).unstable_age(8), 1);
        // The sequence number wraps at 256 in the address but not in the scanner.
        assert_eq!(a.into_unstable(255).unstable_age(256), 1);
        assert_eq!(a.into_unstable(0x1ff).unstable_age(0x200), 1);
    }

    #[test]
    fn info_overlays_as_c_union() {
        let u = UnstableInfo {
            oldchecksum: 0xdead_beef,
            age: 3,
            skipped: 250,
        };
        let i = Info::new().with_unstable(u);
        let back = i.unstable();
        assert_eq!(
            (back.oldchecksum, back.age, back.skipped),
            (0xdead_beef, 3, 250)
        );
        // The index takes the checksum's place, and on 64-bit the record's; resetting it to 0
        // leaves a zero checksum, and, on 32-bit, the age and skipped count kept (C's union).
        let i = i.with_index(0x1234_5678);
        assert_eq!(i.index(), 0x1234_5678);
        let back = i.with_index(0).unstable();
        let kept = if cfg!(CONFIG_64BIT) { (0, 0) } else { (3, 250) };
        assert_eq!((back.oldchecksum, (back.age, back.skipped)), (0, kept));
        assert_eq!(core::mem::size_of::<Info>(), 8);
        // A nid reads back as itself, the invalid one included.
        for nid in [0, 1, 1023, -1] {
            assert_eq!(AnonVmaOrNid::nid(nid).as_nid(), nid);
        }
    }

    #[test]
    fn item_is_as_large_as_in_c() {
        // `sizeof(struct ksm_rmap_item)`: one cache line on 64-bit; on 32-bit, five words, two
        // bytes padded to a word, and an rb_node.
        let c_size = if cfg!(CONFIG_64BIT) { 64 } else { 36 };
        assert_eq!(RMAP_ITEM_SIZE, c_size);
    }
}

#[kernel::macros::kunit_tests(ksm_rs_node)]
mod node_tests {
    use super::*;

    /// The vacant position for `hash` in the stable tree of `nid`, ordered by checksum alone
    /// (nodes of the same checksum go to the right).
    fn position(ksm: &Ksm<'_>, nid: i32, hash: u32) -> Result<StablePos> {
        let mut pos = tree_root(ksm, nid)?;
        while let Some(n) = tree_node_at(ksm, nid, &pos)? {
            let ord = if hash < n.hash() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            tree_descend(ksm, nid, &mut pos, ord)?;
        }
        Ok(pos)
    }

    /// Counts the checks that fail, so that the test asserts only once it released the thread
    /// mutex (a failed assertion ends the test's thread).
    fn check(failed: &mut u32, ok: bool) {
        if !ok {
            *failed += 1;
        }
    }

    #[test]
    fn nodes_move_between_trees_and_lists() {
        let mut failed = 0;
        let f = &mut failed;
        't: {
            let mut g = crate::lock_ksm();
            let ksm = &mut g.ksm();
            let (chains, dups_before) = (STABLE_NODE_CHAINS.get(), STABLE_NODE_DUPS.get());
            // The nodes point at the zero page, which never points back: were one left in a
            // tree by a failure, ksmd would find it stale and remove it.
            let zero_pfn = kernel::mm::pgtable::zero_page_pfn(0);
            let hash = 0x5eed_0001;
            let (Some(a), Some(b), Some(c)) = (
                new_node(ksm, zero_pfn, hash, false),
                new_node(ksm, zero_pfn, hash, false),
                alloc_chain(ksm, hash),
            ) else {
                check(f, false);
                break 't;
            };
            check(f, STABLE_NODE_CHAINS.get() == chains + 1);
            let inserted = position(ksm, 0, hash).and_then(|pos| tree_insert(ksm, 0, &pos, a));
            check(f, inserted.is_ok() && a.in_tree() && a.nid() == 0);
            let mut all = core::iter::successors(tree_first(ksm, 0), |&n| tree_next(ksm, n));
            check(f, all.any(|n| n == a));

            // The chain takes the node's place, and the node becomes its dup.
            check(
                f,
                tree_replace(ksm, a, c).is_ok() && c.in_tree() && !a.in_tree(),
            );
            check(
                f,
                chain_add_dup(ksm, a, c).is_ok() && chain_add_dup(ksm, b, c).is_ok(),
            );
            check(
                f,
                a.is_dup() && b.is_dup() && c.is_chain() && b.nid() == c.nid(),
            );
            check(f, STABLE_NODE_DUPS.get() == dups_before + 2);
            check(
                f,
                is_first_dup(c, b) && !is_only_dup(c, b) && dups(c).count() == 2,
            );

            // Taking each dup off the list as it is handed out leaves the iteration whole.
            let mut n = 0;
            for d in dups(c) {
                dup_unlink(ksm, d);
                n += 1;
            }
            check(f, n == 2 && c.list_is_empty() && !a.is_dup() && !b.is_dup());
            check(f, STABLE_NODE_DUPS.get() == dups_before);

            migrate_list_add(ksm, a);
            check(f, a.on_migrate_list() && migrate_list(ksm).any(|m| m == a));
            migrate_list_del(a);
            check(f, !migrate_list(ksm).any(|m| m == a));

            tree_remove(ksm, c);
            check(f, !c.in_tree());
            free_chain(ksm, c);
            check(f, STABLE_NODE_CHAINS.get() == chains);
            // INVARIANT: No folio was ever pointed at `a` or `b`.
            free(ksm, Unmapped(a));
            free(ksm, Unmapped(b));
            // Freed nodes stay readable until the guard goes.
            check(f, [a, b, c].iter().all(|n| n.place.get() == Place::Dead));
        }
        assert_eq!(failed, 0);
    }

    /// The vacant position for `hash` in the unstable tree of `nid`, by checksum alone (items
    /// of the same checksum go to the right), as the scanner's walk would find for a page of
    /// that checksum.
    fn unstable_position(ksm: &Ksm<'_>, nid: i32, hash: u32) -> Option<UnstablePos> {
        // Items of equal checksums go to the right, as the scan links them in.
        let found = unstable_find(ksm, nid, hash, |_| Ok::<_, ()>(Ordering::Greater));
        match found {
            Some(Ok(UnstableFound::Vacant(pos))) => Some(pos),
            _ => None,
        }
    }

    #[test]
    fn items_move_between_list_tree_and_graveyard() {
        let mut failed = 0;
        let f = &mut failed;
        let mm = Mm::init_mm();
        let slot = crate::alloc_mm_slot(mm);
        assert!(slot.is_ok());
        let Ok(slot) = slot else {
            return;
        };
        {
            let mut g = crate::lock_ksm();
            let ksm = &mut g.ksm();
            let before = RMAP_ITEMS.get();
            // ksmd may be in the middle of a scan: lend the scanner our slot, and give ksmd its
            // slot and place back at the end. Nothing moves the scan cursor meanwhile: we hold
            // the thread mutex.
            // INVARIANT: The start of our slot's list.
            let saved_prev = ksm.item_prev.take();
            let saved = ksm.cursor_slot.replace(slot);
            let empty = |ksm: &Ksm<'_>| held_slot(ksm).is_some_and(|s| s.items().is_empty());
            // Each item goes in front of the cursor, which then steps over it: address order.
            let a = alloc_at_cursor(ksm, 0x1000);
            cursor_step(ksm);
            let b = alloc_at_cursor(ksm, 0x2000);
            cursor_step(ksm);
            check(f, RMAP_ITEMS.get() == before + 2 && !empty(ksm));
            if let (Some(a), Some(b)) = (a, b) {
                check(f, a.address().is_plain() && a.mm().as_raw() == mm.as_raw());
                // Into the unstable tree, and out of it, as the scanner does.
                let hash = 0x5eed_0002;
                a.set_unstable_info(UnstableInfo {
                    oldchecksum: hash,
                    age: 0,
                    skipped: 0,
                });
                let inserted = unstable_position(ksm, 0, hash)
                    .is_some_and(|pos| unstable_insert(ksm, 0, &pos, a).is_ok());
                check(f, inserted && a.address().is_linked());
                check(f, a.address().unstable_age(ksm.seqnr()) == 0);
                let found = unstable_find(ksm, 0, hash, |i| {
                    Ok::<_, ()>(if i == a {
                        Ordering::Equal
                    } else {
                        Ordering::Greater
                    })
                });
                check(
                    f,
                    matches!(found, Some(Ok(UnstableFound::Item(i))) if i == a),
                );
                check(
                    f,
                    unstable_remove(ksm, a) == Some(0) && a.address().is_plain(),
                );
                check(f, unstable_remove(ksm, a).is_none());
                // A plain item holds no anon_vma reference: nothing to put.
                a.put_rmap();
                check(f, a.stable_rmap().is_none());
                // Free both from the start of the list.
                rewind_cursor(ksm);
                check(f, cursor_item(ksm) == Some(a));
                free_at_cursor(ksm);
                check(f, cursor_item(ksm) == Some(b));
                free_at_cursor(ksm);
                check(f, cursor_item(ksm).is_none() && empty(ksm));
                // Freed items stay readable until the guard goes.
                check(f, a.address().is_dead() && b.address().is_dead());
                check(
                    f,
                    a.address().addr() == 0x1000 && b.address().addr() == 0x2000,
                );
            }
            check(f, RMAP_ITEMS.get() == before);
            let ours = core::mem::replace(&mut ksm.cursor_slot, saved);
            // INVARIANT: ksmd's place, on its slot's list, which the test did not change.
            ksm.item_prev = saved_prev;
            check(f, ours.is_some_and(|s| s.items().is_empty()));
        }
        assert_eq!(failed, 0);
    }
}
