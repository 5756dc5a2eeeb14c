// SPDX-License-Identifier: GPL-2.0

//! The unstable tree: pages that have not changed for a scan, ordered by content (checksum
//! first, bytes second: see [`crate::order`]).
//!
//! Its nodes are the rmap items themselves. The contents of an unstable page can change at any
//! time (it is not write-protected), so the tree may become unbalanced in content order; that
//! is harmless because it is thrown away when a full scan ends (and when one starts): its items
//! are marked as no longer linked, and those still unstable from an older scan are forgotten as
//! the cursor passes them, never erased from the dead tree.

use crate::{
    node::{self, ItemRef, UnstableFound},
    page::{get_mergeable_page, PageRef},
    stable_tree::{self, GetFolio, Lookup},
    state::{MERGE_ACROSS_NODES, PAGES_UNSHARED},
    Ksm,
};
use kernel::{kthread::cond_resched, sync::atomic::Relaxed};

/// Searches the unstable tree for a page with the same content as `folio`; if none, inserts
/// `item` (`unstable_tree_search_insert()`).
///
/// Returns the matching tree item and its page, with a reference.
pub(crate) fn search_insert<'g>(
    ksm: &mut Ksm<'g>,
    item: ItemRef<'g>,
    page: &PageRef,
) -> Option<(ItemRef<'g>, PageRef)> {
    // The pages of a folio are on its NUMA node.
    let nid = ksm.folio_nid(&page.folio);
    // The key: the checksum the item is inserted with, unchanged for a scan (the caller
    // checked), and the bytes.
    let hash = item.unstable_info().oldchecksum;
    let mut matched = None;
    // Nothing changes the tree during the walk: it borrows the tree, one load per step. `Err`
    // gives up.
    let walked = node::unstable_find(ksm, nid, hash, |tree_item| {
        // Only items of the same checksum get here, and each costs a lookup and a comparison
        // of pages. C reschedules at every step of the walk; the steps between are a
        // comparison of integers each.
        cond_resched();
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
    })?;
    let pos = match walked {
        Err(()) => return None,
        Ok(UnstableFound::Item(tree_item)) => {
            // Only a comparison of the bytes calls a tree item equal, and it sets `matched`.
            let Some(tree_page) = matched else {
                kernel::warn_on!(true);
                return None;
            };
            return Some((tree_item, tree_page));
        }
        Ok(UnstableFound::Vacant(pos)) => pos,
    };
    // Warns on failure: the walk borrowed the tree, so `pos` is current, and the caller took
    // the item out of any tree.
    if node::unstable_insert(ksm, nid, &pos, item).is_ok() {
        PAGES_UNSHARED.add(ksm, 1);
    }
    None
}

/// Takes `item` out of the stable or unstable tree it is in (`remove_rmap_item_from_tree()`).
pub(crate) fn remove_rmap_item_from_tree<'g>(ksm: &mut Ksm<'g>, item: ItemRef<'g>) {
    if let Some(node) = node::item_stable_node(ksm, &item) {
        // Lock the KSM folio: rmap_walk_ksm() walks the list under that lock only. If the
        // page stops being the node's (freed, or migrated) while we wait for the lock, look
        // again: a migrated page is found at its new pfn. A stale node is removed with its
        // other items once this one is off its list.
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
                    stable_tree::forget_stable_item(ksm, &item, sharing);
                }
                Ok(Lookup::Stale(unmapped)) => {
                    // Refused (with a warning) only if the item is not the node's: then it is
                    // left as it is, counted, and the stale node for a walk to remove.
                    if !node::take_item_unmapped(ksm, &unmapped, item) {
                        break;
                    }
                    // As above, the item that leaves the list last stands for the shared page:
                    // one of the others, if any.
                    let sharing = !node.list_is_empty();
                    if sharing {
                        crate::trace::remove_rmap_item(node.kpfn(), &*item, item.mm());
                    }
                    stable_tree::forget_stable_item(ksm, &item, sharing);
                    stable_tree::remove_node_from_stable_tree(ksm, unmapped);
                }
                // NoLock does not fail; a chain is never an item's node.
                Err(_) => {}
            }
            break;
        }
    } else if let Some(age) = node::unstable_remove(ksm, item) {
        // Usually the item was in an unstable tree of an earlier scan, already discarded; but
        // one inserted during this scan is erased (an mm exiting, say).
        if age > 1 {
            kernel::pr_err!("unstable rmap item of age {}\n", age);
        }
        PAGES_UNSHARED.add(ksm, -1);
    }
    cond_resched();
}
