// SPDX-License-Identifier: GPL-2.0

//! The unstable tree: pages that have not changed for a scan, ordered by content (checksum
//! first, bytes second: see [`crate::order`]).
//!
//! Its nodes are the rmap items themselves. The contents of an unstable page can change at any
//! time (it is not write-protected), so the tree may become unbalanced in content order; that
//! is harmless because it is thrown away at the start of every full scan: the root is reset and
//! items still marked as unstable from an older scan (their sequence number tells) are
//! forgotten lazily as the cursor passes them, never erased from the dead tree.

use crate::{
    node::{self, RmapItem},
    page::{get_mergeable_page, PageRef},
    stable_tree::{self, GetFolio, Lookup},
    state::{MERGE_ACROSS_NODES, PAGES_UNSHARED},
    Ksm,
};
use core::ptr::NonNull;
use kernel::{kthread::cond_resched, rbtree::intrusive::Found, sync::atomic::Relaxed};

/// Searches the unstable tree for a page with the same content as `folio`; if none, inserts
/// `item` (`unstable_tree_search_insert()`).
///
/// Returns the matching tree item and its page, with a reference.
pub(crate) fn search_insert(
    ksm: &mut Ksm<'_>,
    item: &mut RmapItem,
    page: &PageRef,
) -> Option<(*mut RmapItem, PageRef)> {
    // The pages of a folio are on its NUMA node.
    let nid = ksm.folio_nid(&page.folio);
    let tree = ksm.unstable_tree(nid);
    // The key: the checksum the item is inserted with, unchanged for a scan (the caller
    // checked), and the bytes.
    let hash = item.unstable().oldchecksum;
    let mut matched = None;
    // Nothing changes the tree during the walk: it borrows the tree, one load per step. `Err`
    // gives up.
    let walked = tree.find(|tree_ptr| {
        cond_resched();
        // SAFETY: Items of the unstable tree are valid under the thread mutex: they are taken
        // out of it, or the tree is emptied, before they are freed. Only ksmd changes them, and
        // not while it walks.
        let tree_item = unsafe { tree_ptr.as_ref() };
        if let Some(ord) = crate::order::by_checksum(hash, tree_item.info_unstable().oldchecksum) {
            return Ok(ord);
        }
        let tree_page = get_mergeable_page(tree_item.mm(), tree_item.address().addr()).ok_or(())?;
        // Don't substitute a KSM page for a forked page.
        if page.same_page(&tree_page) {
            return Err(());
        }
        let ord = page.cmp(&tree_page);
        if ord == core::cmp::Ordering::Equal {
            // A tree page that migrated to another node is flushed out and put in the right
            // tree next scan: only merge with it when merging across nodes.
            if MERGE_ACROSS_NODES.load(Relaxed) == 0 && tree_page.folio.nid() != nid {
                return Err(());
            }
            matched = Some(tree_page);
        }
        Ok(ord)
    });
    let pos = match walked {
        Err(()) => return None,
        Ok(Found::Item(tree_ptr)) => {
            // Only a comparison of the bytes calls a tree item equal, and it sets `matched`.
            let Some(tree_page) = matched else {
                kernel::warn_on!(true);
                return None;
            };
            return Some((tree_ptr.as_ptr(), tree_page));
        }
        Ok(Found::Vacant(pos)) => pos,
    };
    item.set_unstable(ksm.seqnr);
    item.anon_vma_or_nid.nid = nid;
    // SAFETY: The item is in no tree (the caller took it out), and its links are only used by
    // the tree. It stays valid until it leaves the tree: an item of the current scan is taken out
    // before it is freed (`remove_rmap_item_from_tree()`), and the trees are emptied when the
    // scan ends, before its items may be freed without that (`Ksm::reset_unstable_tree()`).
    let inserted = unsafe {
        ksm.unstable_tree(nid)
            .insert(&pos, NonNull::from(&mut *item))
    };
    if kernel::warn_on!(inserted.is_err()) {
        item.clear_unstable();
        return None;
    }
    PAGES_UNSHARED.add(ksm, 1);
    None
}

/// Takes `item` out of the stable or unstable tree it is in (`remove_rmap_item_from_tree()`).
pub(crate) fn remove_rmap_item_from_tree(ksm: &mut Ksm<'_>, item: &mut RmapItem) {
    if let Some(node) = node::item_stable_node(ksm, item) {
        // Lock the KSM folio: rmap_walk_ksm() walks the list under that lock only. If the
        // page stops being the node's (freed, or migrated) while we wait for the lock, look
        // again: a migrated page is found at its new pfn. A stale node is removed with its
        // other items once this one is off its list (the list must not be walked while we
        // hold a reference to one of its items).
        loop {
            match stable_tree::lookup_folio(node, GetFolio::NoLock) {
                Ok(Lookup::Folio(folio)) => {
                    let guard = folio.lock();
                    if guard.raw_mapping() != node.expected_mapping() {
                        continue;
                    }
                    let taken = node::take_item(ksm, &guard, item);
                    drop(guard);
                    if kernel::warn_on!(taken != Some(node)) {
                        break;
                    }
                    // The list's last item stands for the shared page: it goes when the list
                    // empties.
                    let sharing = !node.list_is_empty();
                    // SAFETY: Just taken off the list; it held its anon_vma reference.
                    unsafe { stable_tree::forget_stable_item(ksm, item, sharing) };
                }
                Ok(Lookup::Stale) => {
                    // SAFETY: A stale node: no folio points at it. The item was on its list,
                    // with its anon_vma reference. As above, the item that leaves the list
                    // last stands for the shared page: one of the others, if any.
                    unsafe {
                        node::take_item_unmapped(ksm, item);
                        let sharing = !node.list_is_empty();
                        if sharing {
                            crate::trace::remove_rmap_item(node.kpfn(), item, item.mm());
                        }
                        stable_tree::forget_stable_item(ksm, item, sharing);
                        stable_tree::remove_node_from_stable_tree(ksm, node);
                    }
                }
                // NoLock does not fail; a chain is never an item's node.
                Err(_) => {}
            }
            break;
        }
    } else if item.address().is_unstable() {
        // Usually the item is in an unstable tree of an earlier scan, already discarded; but
        // one inserted during this scan must be erased (an mm exiting, say).
        let age = item.address().unstable_age(ksm.seqnr);
        if age > 1 {
            kernel::pr_err!("unstable rmap item of age {}\n", age);
        }
        if age == 0 {
            // SAFETY: `nid` is the member of the union in use for an unstable item.
            let nid = unsafe { item.anon_vma_or_nid.nid };
            // SAFETY: Inserted during this scan: in the current unstable tree of its nid.
            unsafe { ksm.unstable_tree(nid).remove(NonNull::from(&mut *item)) };
        }
        PAGES_UNSHARED.add(ksm, -1);
        item.clear_unstable();
    }
    cond_resched();
}
