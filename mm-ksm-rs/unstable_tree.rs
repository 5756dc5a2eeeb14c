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
    page::{get_mergeable_page, PageRef},
    rmap_item::{PackedAddress, RmapItem},
    stable_tree::{self, GetFolio},
    state::{MERGE_ACROSS_NODES, PAGES_UNSHARED},
    Ksm,
};
use core::ptr::NonNull;
use kernel::{kthread::cond_resched, sync::atomic::Relaxed};

/// Searches the unstable tree for a page with the same content as `folio`; if none, inserts
/// `item` (`unstable_tree_search_insert()`).
///
/// Returns the matching tree item and its page, with a reference.
pub(crate) fn search_insert(
    ksm: &mut Ksm,
    item: &mut RmapItem,
    page: &PageRef,
) -> Option<(*mut RmapItem, PageRef)> {
    let nid = ksm.kpfn_nid(page.folio.pfn() + page.index);
    let tree = ksm.unstable_tree(nid);
    // The key: the checksum the item is inserted with, unchanged for a scan (the caller
    // checked), and the bytes.
    let hash = item.unstable().oldchecksum;
    let mut pos = tree.root();
    // Nothing changes the tree during the walk (we hold it), so `EAGAIN` cannot happen: give up
    // if it does.
    loop {
        let at = tree.item_at(&pos);
        if kernel::warn_on!(at.is_err()) {
            return None;
        }
        let Ok(Some(tree_ptr)) = at else {
            break;
        };
        cond_resched();
        // SAFETY: Items of the unstable tree are valid under the thread mutex: they are taken
        // out of it, or the tree is emptied, before they are freed. Only ksmd changes them, and
        // not while it walks.
        let tree_item = unsafe { tree_ptr.as_ref() };
        let ord = match crate::order::by_checksum(hash, tree_item.info_unstable().oldchecksum) {
            Some(ord) => ord,
            None => {
                let tree_page = get_mergeable_page(tree_item.mm(), tree_item.address.addr())?;
                // Don't substitute a KSM page for a forked page.
                if page.same_page(&tree_page) {
                    return None;
                }
                let ord = page.cmp(&tree_page);
                if ord == core::cmp::Ordering::Equal {
                    // A tree page that migrated to another node is flushed out and put in the
                    // right tree next scan: only merge with it when merging across nodes.
                    if MERGE_ACROSS_NODES.load(Relaxed) == 0 && tree_page.folio.nid() != nid {
                        return None;
                    }
                    return Some((tree_ptr.as_ptr(), tree_page));
                }
                ord
            }
        };
        if kernel::warn_on!(tree.descend(&mut pos, ord).is_err()) {
            return None;
        }
    }
    item.address = item.address.into_unstable(ksm.seqnr);
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
        item.address = PackedAddress::new(item.address.addr());
        return None;
    }
    PAGES_UNSHARED.add(ksm, 1);
    None
}

/// Takes `item` out of the stable or unstable tree it is in (`remove_rmap_item_from_tree()`).
pub(crate) fn remove_rmap_item_from_tree(ksm: &mut Ksm, item: &mut RmapItem) {
    if item.address.is_stable() {
        // Stable items point at their live stable node.
        let node = item.stable_node();
        // Lock the KSM folio: rmap_walk_ksm() walks the list under that lock only. If the
        // page stops being the node's (freed, or migrated) while we wait for the lock, look
        // again: a stale node is removed together with its items, this one included; a
        // migrated page is found at its new pfn.
        while let Ok(Some(folio)) = stable_tree::ksm_get_folio(ksm, node, GetFolio::NoLock) {
            let guard = folio.lock();
            if guard.raw_mapping() != stable_tree::StableNode::expected_mapping(node) {
                continue;
            }
            stable_tree::unlink(item);
            drop(guard);
            // SAFETY: Node still live (its page still points at it).
            let sharing = unsafe { !(*node).list_is_empty() };
            // The list's last item stands for the shared page: it goes when the list empties.
            stable_tree::forget_stable_item(ksm, node, item, sharing);
            break;
        }
    } else if item.address.is_unstable() {
        // Usually the item is in an unstable tree of an earlier scan, already discarded; but
        // one inserted during this scan must be erased (an mm exiting, say).
        let age = item.address.unstable_age(ksm.seqnr);
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
        item.address = PackedAddress::new(item.address.addr());
    }
    cond_resched();
}
