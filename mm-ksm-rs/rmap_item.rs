// SPDX-License-Identifier: GPL-2.0

//! rmap items: one per scanned page of a mergeable area.
//!
//! An [`RmapItem`] records where a page lives (mm and address), whether it is in the unstable
//! tree, listed from a stable node, or neither, and its last checksum. The flags and the low
//! bits of the scan sequence number are packed into the low bits of the page-aligned address
//! ([`PackedAddress`]), which keeps the item at one cache line (64 bytes on 64-bit), exactly as
//! in mm/ksm.c: users see `sizeof(struct ksm_rmap_item)` through `general_profit`.

use crate::stable_tree::StableNode;
use core::{
    mem::{offset_of, ManuallyDrop},
    ptr::NonNull,
};
use kernel::{
    bindings, hlist,
    mm::Mm,
    page::PAGE_MASK,
    rbtree::intrusive::{Adapter, Links},
};

/// Low bits of the unstable tree sequence number kept in the address.
pub(crate) const SEQNR_MASK: usize = 0x0ff;
/// The item is a node of the unstable tree.
pub(crate) const UNSTABLE_FLAG: usize = 0x100;
/// The item is listed from a stable node.
pub(crate) const STABLE_FLAG: usize = 0x200;

/// A page-aligned user address with the KSM flags and sequence number in its low bits.
///
/// # Invariants
///
/// At most one of [`UNSTABLE_FLAG`] and [`STABLE_FLAG`] is set; the sequence number bits are
/// only meaningful with [`UNSTABLE_FLAG`].
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

    /// Whether the item is in the unstable tree.
    pub(crate) const fn is_unstable(self) -> bool {
        self.0 & UNSTABLE_FLAG != 0
    }

    /// Whether the item is listed from a stable node.
    pub(crate) const fn is_stable(self) -> bool {
        self.0 & STABLE_FLAG != 0
    }

    /// Marks the item as inserted in the unstable tree during scan `seqnr`.
    pub(crate) const fn into_unstable(self, seqnr: usize) -> Self {
        // INVARIANT: Only the unstable flag is set.
        Self(self.addr() | UNSTABLE_FLAG | (seqnr & SEQNR_MASK))
    }

    /// Marks the item as listed from a stable node.
    pub(crate) const fn into_stable(self) -> Self {
        // INVARIANT: Only the stable flag is set.
        Self(self.addr() | STABLE_FLAG)
    }

    /// How many scans ago (modulo 256) the item was put in the unstable tree: 0 if during the
    /// scan `seqnr`, 1 if during the previous one. The unstable tree is rebuilt every scan, so
    /// only an age of 0 means the item is still linked into the current tree.
    pub(crate) const fn unstable_age(self, seqnr: usize) -> u8 {
        (seqnr.wrapping_sub(self.0) & SEQNR_MASK) as u8
    }
}

/// The per-item information that depends on the tree the item is in.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UnstableInfo {
    /// Checksum of the page at the previous scan.
    pub(crate) oldchecksum: u32,
    /// Scans since the item was created (smart scan).
    pub(crate) age: u8,
    /// Scans left to skip (smart scan).
    pub(crate) remaining_skips: u8,
}

#[repr(C)]
pub(crate) union Info {
    pub(crate) unstable: UnstableInfo,
    /// The page's index in its anon_vma, for the reverse map (when stable).
    pub(crate) linear_page_index: usize,
}

/// Linkage into a stable node's list of items.
#[repr(C)]
pub(crate) struct StableLink {
    /// The stable node whose KSM page this item maps.
    head: *mut StableNode,
    /// The node's list of items (accessed by the list only, through [`StableItemLinks`]).
    hlist: hlist::Links<RmapItem>,
}

#[repr(C)]
pub(crate) union Link {
    /// Node of the unstable tree (accessed by the tree only, through [`UnstableLinks`]).
    node: ManuallyDrop<Links>,
    /// Listed from a stable node.
    stable: ManuallyDrop<StableLink>,
}

#[repr(C)]
pub(crate) union AnonVmaOrNid {
    /// Reference to the anon_vma of the mapping, when stable.
    pub(crate) anon_vma: *mut bindings::anon_vma,
    /// NUMA node of the unstable tree holding the item.
    pub(crate) nid: i32,
}

/// Reverse mapping item for one virtual page (`struct ksm_rmap_item`).
#[repr(C)]
pub(crate) struct RmapItem {
    /// Next item of the same mm slot, in address order.
    pub(crate) rmap_list: *mut RmapItem,
    pub(crate) anon_vma_or_nid: AnonVmaOrNid,
    /// The mm, kept alive by the mm slot's `mmgrab()`.
    pub(crate) mm: *const Mm,
    pub(crate) address: PackedAddress,
    pub(crate) info: Info,
    pub(crate) link: Link,
}

/// The links of rmap items in the unstable trees.
pub(crate) struct UnstableLinks;

// SAFETY: `link.node` is a `ManuallyDrop<Links>` in every `RmapItem`.
unsafe impl Adapter for UnstableLinks {
    type Item = RmapItem;
    const OFFSET: usize = offset_of!(RmapItem, link.node);
}

/// The links of rmap items in their stable node's list.
pub(crate) struct StableItemLinks;

// SAFETY: `link.stable` is a transparent `ManuallyDrop<StableLink>` in every `RmapItem`, and
// `hlist` a `hlist::Links<RmapItem>` in it.
unsafe impl hlist::Adapter for StableItemLinks {
    type Item = RmapItem;
    const OFFSET: usize = offset_of!(RmapItem, link.stable) + offset_of!(StableLink, hlist);
}

/// `sizeof(struct ksm_rmap_item)`, as counted in `general_profit`.
pub(crate) const RMAP_ITEM_SIZE: usize = core::mem::size_of::<RmapItem>();

// One cache line, as in C (users see the size through general_profit).
#[cfg(CONFIG_64BIT)]
const _: () = assert!(RMAP_ITEM_SIZE == 64);

// SAFETY: The raw pointers are only used under KSM's locks.
unsafe impl Send for RmapItem {}

impl RmapItem {
    /// A fresh item for `addr` in `mm`.
    pub(crate) fn new(mm: *const Mm, addr: usize) -> Self {
        Self {
            rmap_list: core::ptr::null_mut(),
            anon_vma_or_nid: AnonVmaOrNid { nid: 0 },
            mm,
            address: PackedAddress::new(addr),
            info: Info {
                linear_page_index: 0,
            },
            link: Link {
                stable: ManuallyDrop::new(StableLink {
                    head: core::ptr::null_mut(),
                    hlist: hlist::Links::new(),
                }),
            },
        }
    }

    /// The mm of the item.
    pub(crate) fn mm(&self) -> &Mm {
        // SAFETY: The mm slot holds a `mmgrab()` reference for as long as items exist.
        unsafe { &*self.mm }
    }

    /// The unstable-state information, read only.
    pub(crate) fn info_unstable(&self) -> &UnstableInfo {
        // SAFETY: Both union members are plain data of the same size; any bits are valid.
        unsafe { &self.info.unstable }
    }

    /// The unstable-state information.
    pub(crate) fn unstable(&mut self) -> &mut UnstableInfo {
        // SAFETY: Both union members are plain data of the same size; any bits are valid.
        unsafe { &mut self.info.unstable }
    }

    /// The stable node whose list the item is on (meaningful for stable items only).
    pub(crate) fn stable_node(&self) -> *mut StableNode {
        // SAFETY: Every member of `link` is initialized plain data, and any bits are a valid raw
        // pointer.
        unsafe { self.link.stable.head }
    }

    /// Records the stable node whose list the item is on (or null, when it leaves the list).
    pub(crate) fn set_stable_node(&mut self, node: *mut StableNode) {
        // SAFETY: Writing a raw pointer leaves `link` initialized plain data; it is only read as
        // the stable member while the item is stable.
        unsafe { (*self.link.stable).head = node };
    }

    /// Whether the item is the last one of its stable node's list (for stable items); the
    /// list's last item counts as the shared page, the others as sharing it.
    pub(crate) fn is_last_stable(&self) -> bool {
        // C: the callers pass stable items only.
        if kernel::warn_on!(!self.address.is_stable()) {
            return true;
        }
        // SAFETY: A stable item is on its stable node's list, which the callers hold (the thread
        // mutex or the KSM folio's lock).
        unsafe { hlist::Head::<StableItemLinks>::next(NonNull::from(self)) }.is_none()
    }

    /// Resets the unstable/stable information (C: `linear_page_index = 0`).
    pub(crate) fn clear_info(&mut self) {
        self.info = Info {
            linear_page_index: 0,
        };
    }
}

#[kernel::macros::kunit_tests(ksm_rs_rmap_item)]
mod tests {
    use super::*;
    use kernel::page::PAGE_SIZE;

    #[test]
    fn packed_address_flags() {
        let a = PackedAddress::new(0x7f00_0000_1000 + 0x123);
        assert_eq!(a.addr(), 0x7f00_0000_1000);
        assert!(!a.is_stable() && !a.is_unstable());
        let u = a.into_unstable(0x1_2345);
        assert!(u.is_unstable() && !u.is_stable());
        assert_eq!(u.addr(), 0x7f00_0000_1000);
        assert_eq!(u, PackedAddress(0x7f00_0000_1000 | UNSTABLE_FLAG | 0x45));
        let s = u.into_stable();
        assert!(s.is_stable() && !s.is_unstable());
        assert_eq!(s.addr(), 0x7f00_0000_1000);
        assert_eq!(PackedAddress::new(s.addr()), a);
        assert!(SEQNR_MASK < UNSTABLE_FLAG && STABLE_FLAG < PAGE_SIZE);
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
    fn item_is_one_cache_line() {
        assert_eq!(RMAP_ITEM_SIZE, 64);
    }
}
