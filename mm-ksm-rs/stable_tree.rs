// SPDX-License-Identifier: GPL-2.0

//! The stable tree: KSM pages, ordered by content (checksum first, bytes second: see
//! [`crate::order`]).
//!
//! Every KSM page has a [`StableNode`], and the node lists the rmap items of all mappings of
//! the page. The folio points back to its node through `folio->mapping`, tagged with
//! `FOLIO_MAPPING_KSM`. The node does not hold a reference on the page: it peeks through the
//! "keyhole" of `folio->mapping` ([`ksm_get_folio`]) to check that the page at `kpfn` is still
//! its page, so that reclaim and migration need not wait for ksmd to drop a reference.
//!
//! A page may be shared by at most `max_page_sharing` mappings, so that the reverse map walk
//! of one KSM page stays short. More mappings of the same content get more KSM pages: their
//! nodes ("dups") hang off a "chain" node, which takes their place in the tree. A chain is a
//! [`StableNode`] whose `rmap_hlist_len` is [`STABLE_NODE_CHAIN`] and whose list holds dups
//! instead of rmap items; it is collapsed back to a plain node when one dup is left, and freed
//! when none is.
//!
//! With `merge_across_nodes = 0` there is one tree per NUMA node; a node whose page migrated
//! to another NUMA node waits on the migrate list until its page is next scanned and the node
//! is put into the right tree ([`search`]).
//!
//! Tree structure and the item lists are changed under the thread mutex
//! ([`crate::lock_ksm`]); adding to or removing from a node's item list also holds the KSM
//! folio's lock, because `rmap_walk_ksm()` walks the list under that lock only.
//!
//! Nodes are handled as [`NodeRef`]s, which stay valid while the thread mutex is held: a node
//! freed meanwhile is only freed when the mutex is released. So the walks below may remove
//! and free stale nodes on their way without `unsafe`; [`crate::node`] refuses to take out of
//! a tree or list a node that is not in it.
//!
//! # Memory ordering with migration
//!
//! `kpfn` changes under the folio lock, not the thread mutex, when the page migrates
//! (`folio_migrate_ksm()` in hooks.rs): it stores the new `kpfn`, then `smp_wmb()`, then
//! clears the old folio's mapping. [`ksm_get_folio`] reads `kpfn`, then the folio's mapping;
//! when the mapping looks stale it does `smp_rmb()` and reads `kpfn` again: if it changed, the
//! page migrated and is looked up at its new pfn; otherwise the node really is stale. Without
//! the barrier pair a weakly ordered CPU could see the old mapping cleared but the old `kpfn`,
//! and free a node that the new folio's mapping still points to.
//!
//! [`StableNode`]: crate::node::StableNode

#[cfg(CONFIG_MEMORY_HOTREMOVE)]
use crate::node::Offline;
use crate::{
    node::{
        self, add_item, chain_add_dup, dup_unlink, dups, is_first_dup, is_only_dup, migrate_list,
        migrate_list_add, migrate_list_del, take_item_unmapped, tree_descend, tree_first,
        tree_insert, tree_next, tree_node_at, tree_remove, tree_replace, ItemRef, NodeRef,
        RmapItem, Unmapped,
    },
    state::{
        add_mm_counters, MAX_PAGE_SHARING, PAGES_SHARED, PAGES_SHARING,
        STABLE_NODE_CHAINS_PRUNE_MILLISECS,
    },
    Ksm,
};
use core::cmp::Ordering;
use kernel::{
    error::{code::*, Result},
    kthread::cond_resched,
    mm::folio::{Folio, FolioLockGuard, FOLIO_MAPPING_KSM},
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        barrier::{smp_mb, Read},
    },
    time::{jiffies, msecs_to_jiffies},
};

pub(crate) use crate::node::folio_stable_node;

/// Takes a plain node or dup out of the tree or its chain (`stable_node_dup_del()`).
fn node_del<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>) {
    if node.is_dup() {
        dup_unlink(ksm, node);
    } else {
        tree_remove(ksm, node);
    }
}

/// Moves the node of a KSM page that migrated to another NUMA node out of its tree, to be
/// put into the right tree when its page is next scanned.
pub(crate) fn move_to_migrate_list<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>) {
    node_del(ksm, node);
    migrate_list_add(ksm, node);
}

/// Drops the stale nodes of the migrate list, once per full scan: nothing else looks at them.
pub(crate) fn prune_migrate_list(ksm: &mut Ksm<'_>) {
    // A stale node is removed and freed by ksm_get_folio(), which changes nothing else on the
    // list.
    for node in migrate_list(ksm) {
        let _ = ksm_get_folio(ksm, node, GetFolio::NoLock);
        cond_resched();
    }
}

/// Drops the stale nodes and dups of the stable trees, and the chains left empty, once per
/// full scan.
///
/// mm/ksm.c finds stale nodes as its searches pass them, since every step of a walk looks the
/// node's page up. Ordered by checksum first ([`crate::order`]), a walk looks up only nodes of
/// the same checksum, so a node whose page was freed after its last item went (its mms
/// exited, say) would stay: look at every node once a scan instead. That is cheaper than
/// C's lookups at every step of every walk, and bounds how long a stale node lives.
pub(crate) fn prune_stale_nodes(ksm: &mut Ksm<'_>) {
    for nid in 0..ksm.nr_trees() {
        let mut cur = tree_first(ksm, nid as i32);
        while let Some(node) = cur {
            // Removing `node` leaves the other nodes in the tree, so its successor stays in it.
            let next = tree_next(ksm, node);
            if node.is_chain() {
                // ksm_get_folio() removes and frees at most the stale dup it is given.
                for dup in dups(node) {
                    let _ = ksm_get_folio(ksm, dup, GetFolio::NoLock);
                }
                if node.list_is_empty() {
                    free_chain(ksm, node);
                }
            } else {
                let _ = ksm_get_folio(ksm, node, GetFolio::NoLock);
            }
            cur = next;
            cond_resched();
        }
    }
}

/// Replaces plain node `dup` in the tree by a new chain holding it (`alloc_stable_node_chain()`).
fn alloc_chain<'g>(ksm: &mut Ksm<'g>, dup: NodeRef<'g>) -> Option<NodeRef<'g>> {
    let chain = node::alloc_chain(ksm, dup.hash())?;
    chain.set_chain_prune_time(jiffies() as usize);
    // The chain has the content of `dup`.
    if tree_replace(ksm, dup, chain).is_err() {
        node::free_chain(ksm, chain);
        return None;
    }
    // Cannot fail: `dup` just left the tree, and `chain` is in it.
    chain_add_dup(ksm, dup, chain).ok()?;
    Some(chain)
}

/// Removes an empty chain from the tree and frees it (`free_stable_node_chain()`).
fn free_chain<'g>(ksm: &mut Ksm<'g>, chain: NodeRef<'g>) {
    tree_remove(ksm, chain);
    node::free_chain(ksm, chain);
}

/// How [`ksm_get_folio`] locks the folio.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetFolio {
    /// Reference only.
    NoLock,
    /// Lock and unlock, failing with `EBUSY` if the folio is locked: makes sure that page
    /// migration notices the raised reference count.
    TryLock,
}

/// What [`lookup_folio`] found.
pub(crate) enum Lookup<'g> {
    /// The node's KSM folio, with a reference.
    Folio(ARef<Folio>),
    /// The node is stale: no folio points at it.
    Stale(Unmapped<'g>),
}

/// Returns the KSM folio of `node` with a reference, if the page still is that node's page;
/// otherwise the node is stale and is removed from the stable tree (`ksm_get_folio()`).
pub(crate) fn ksm_get_folio<'g>(
    ksm: &mut Ksm<'g>,
    node: NodeRef<'g>,
    how: GetFolio,
) -> Result<Option<ARef<Folio>>> {
    match lookup_folio(node, how)? {
        Lookup::Folio(f) => Ok(Some(f)),
        Lookup::Stale(node) => {
            remove_node_from_stable_tree(ksm, node);
            Ok(None)
        }
    }
}

/// Looks up the KSM folio of `node`, as [`ksm_get_folio`], but leaves a stale node to the
/// caller.
pub(crate) fn lookup_folio<'g>(node: NodeRef<'g>, how: GetFolio) -> Result<Lookup<'g>> {
    // C: VM_BUG_ON(). A chain has no page (its `kpfn` is 0).
    if kernel::warn_on!(node.is_chain()) {
        return Err(EINVAL);
    }
    let expected = node.expected_mapping();
    loop {
        // C: READ_ONCE(), an address dependency orders it before the reads of the folio.
        let Some((kpfn, folio)) = node.page() else {
            return Err(EINVAL);
        };
        'stale: {
            if folio.raw_mapping() != expected {
                break 'stale;
            }
            // A zero refcount usually means free; but it might be frozen while the page moves
            // in or out of the swap cache, in which case it is still ours: wait for that.
            let f = loop {
                if let Some(f) = folio.try_get() {
                    break f;
                }
                if !folio.is_swapcache() {
                    break 'stale;
                }
                core::hint::spin_loop();
            };
            if f.raw_mapping() != expected {
                break 'stale;
            }
            if how == GetFolio::TryLock {
                let Some(guard) = f.try_lock() else {
                    return Err(EBUSY);
                };
                let ok = guard.raw_mapping() == expected;
                drop(guard);
                if !ok {
                    break 'stale;
                }
            }
            return Ok(Lookup::Folio(f));
        }
        // The node looks stale (by the mapping or the swap cache flag), but the page may be
        // migrating: `folio_migrate_ksm()` stores the new kpfn, smp_wmb(), then clears the old
        // folio's mapping. Order the reads that saw it stale before the new read of kpfn.
        smp_mb(Read);
        if node.kpfn() != kpfn {
            continue;
        }
        // The page at `kpfn` no longer points at the node or is being freed, and `kpfn` did
        // not change (no migration moved the node to another page): the node is stale.
        // SAFETY: As just said, no folio that can be referenced points at the node.
        return Ok(Lookup::Stale(unsafe { Unmapped::new(node) }));
    }
}

/// Removes a stale node (plain or dup) and forgets all its items
/// (`remove_node_from_stable_tree()`).
pub(crate) fn remove_node_from_stable_tree<'g>(ksm: &mut Ksm<'g>, unmapped: Unmapped<'g>) {
    let node = unmapped.node();
    // C: BUG_ON(). A chain's dups are not in its item list, and no chain is `Unmapped`.
    if kernel::warn_on!(node.is_chain()) {
        return;
    }
    let kpfn = node.kpfn();
    for item in node::node_items(node) {
        let sharing = !item.is_last_stable();
        if sharing {
            crate::trace::remove_rmap_item(kpfn, &*item, item.mm());
        }
        // Refused (with a warning) only if the item is not the node's: then it is left as it
        // is, counted.
        if take_item_unmapped(ksm, &unmapped, item) {
            forget_stable_item(ksm, &item, sharing);
        }
        cond_resched();
    }
    crate::trace::remove_ksm_page(kpfn);
    if node.on_migrate_list() {
        migrate_list_del(node);
    } else {
        node_del(ksm, node);
    }
    node::free(ksm, unmapped);
}

/// Accounts for `item`, just taken off its stable node's list, leaving it (it was a sharing
/// mapping or the shared page).
pub(crate) fn forget_stable_item(ksm: &Ksm<'_>, item: &RmapItem, sharing: bool) {
    if sharing {
        PAGES_SHARING.add(ksm, -1);
    } else {
        PAGES_SHARED.add(ksm, -1);
    }
    add_mm_counters(ksm, item.mm(), -1, 0);
}

/// Picks the best dup of `*chain` to merge with and returns its page (`stable_node_dup()`):
/// one with room for another mapping, the fullest such. With `prune`, at most once per
/// `stable_node_chains_prune_millisecs`, walks all dups to drop stale ones. Collapses the
/// chain (and updates `*chain` to the remaining dup) when one dup is left, and frees it when
/// none is.
fn stable_node_dup<'g>(
    ksm: &mut Ksm<'g>,
    chain: &mut NodeRef<'g>,
    prune: bool,
) -> (Option<ARef<Folio>>, Option<NodeRef<'g>>) {
    let c = *chain;
    let now = jiffies() as usize;
    let prune_ms = STABLE_NODE_CHAINS_PRUNE_MILLISECS.load(Relaxed);
    let prune = prune && {
        let due = c
            .chain_prune_time()
            .wrapping_add(msecs_to_jiffies(prune_ms) as usize);
        // time_before(now, due) is false: prune, and restart the interval.
        if (now.wrapping_sub(due) as isize) >= 0 {
            c.set_chain_prune_time(now);
            true
        } else {
            false
        }
    };

    let mut found: Option<NodeRef<'g>> = None;
    let mut tree_folio: Option<ARef<Folio>> = None;
    for dup in dups(c) {
        cond_resched();
        // A stale dup is removed (and freed) by ksm_get_folio(); `dups()` already moved on.
        let Ok(Some(folio)) = ksm_get_folio(ksm, dup, GetFolio::NoLock) else {
            continue;
        };
        let better = match found {
            None => true,
            Some(f) => {
                dup.is_sharing_candidate()
                    && (!f.is_sharing_candidate() || dup.rmap_hlist_len() > f.rmap_hlist_len())
            }
        };
        if better {
            found = Some(dup);
            tree_folio = Some(folio);
            if !prune && dup.is_sharing_candidate() {
                break;
            }
        }
    }

    let Some(found) = found else {
        // No dup left: the chain is empty.
        free_chain(ksm, c);
        return (None, None);
    };
    if is_only_dup(c, found) {
        // One dup left, below the limit: drop the chain and put the dup in its place, which
        // has the chain's content.
        dup_unlink(ksm, found);
        if tree_replace(ksm, c, found).is_ok() {
            node::free_chain(ksm, c);
            // The caller relies on `*chain == found` when the chain collapsed.
            *chain = found;
        }
    } else if !is_first_dup(c, found) && found.is_sharing_candidate_plus(1) {
        // Move a dup that can take more than the merge under way to the front, so that the
        // next search without pruning finds it first.
        dup_unlink(ksm, found);
        // Cannot fail: `found` just left the chain, which is in the tree.
        let _ = chain_add_dup(ksm, found, c);
    }
    (tree_folio, Some(found))
}

/// The page of a plain node, or of the best dup of a chain (`__stable_node_chain()`).
fn node_folio<'g>(
    ksm: &mut Ksm<'g>,
    node: &mut NodeRef<'g>,
    prune: bool,
) -> (Option<ARef<Folio>>, Option<NodeRef<'g>>) {
    if !node.is_chain() {
        let n = *node;
        return (
            ksm_get_folio(ksm, n, GetFolio::NoLock).ok().flatten(),
            Some(n),
        );
    }
    stable_node_dup(ksm, node, prune)
}

/// What makes a tree node equal to the page looked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// Equal checksums and bytes: what mm/ksm.c's `memcmp_pages()` order finds.
    Bytes,
    /// Equal checksums. For a search whose result is merged, which compares the bytes again
    /// under write protection anyway: that saves a comparison of a whole page per merge. A
    /// caller whose merge fails with different bytes (a checksum collision, or a page that
    /// changed since it was summed) must search again with [`Match::Bytes`].
    Checksum,
}

/// Where a walk of a stable tree by content ended.
enum Walk<'g> {
    /// A node with the same content: `node` is the tree node (a chain, or a plain node, also
    /// when a chain was just collapsed into it), `dup` the node of the page compared (a dup of
    /// the chain, or `node` itself).
    Equal { node: NodeRef<'g>, dup: NodeRef<'g> },
    /// No node with that content: a new one goes at `pos`.
    Empty { pos: node::StablePos },
    /// The tree of `nid` does not exist (a warning was given).
    NoTree,
}

/// Walks the stable tree of `nid` for the key `(hash, bytes)` ([`crate::order`]): nodes with
/// another checksum are passed by their key alone; the pages of nodes with the same checksum
/// are compared with `cmp` (which orders the bytes looked for against a tree page), unless
/// `Match::Checksum` takes the first live one as equal. Stale nodes met on the way are removed,
/// which rebalances the tree: the walk then starts again (giving up would be safe too, but
/// would insert duplicates needlessly). `prune` lets chains drop their stale dups on the way.
fn walk<'g>(
    ksm: &mut Ksm<'g>,
    nid: i32,
    hash: u32,
    how: Match,
    prune: bool,
    cmp: impl Fn(&Folio) -> Ordering,
) -> Walk<'g> {
    'again: loop {
        let Ok(mut pos) = node::tree_root(ksm, nid) else {
            return Walk::NoTree;
        };
        // `EAGAIN`: the tree changed under the walk (a stale node was removed, or a chain
        // collapsed into its dup): start again.
        while let Ok(at) = tree_node_at(ksm, nid, &pos) {
            let Some(mut node) = at else {
                return Walk::Empty { pos };
            };
            cond_resched();
            // The key of a node does not change.
            let ord = match crate::order::by_checksum(hash, node.hash()) {
                Some(ord) => ord,
                None => {
                    let (tree_folio, dup) = node_folio(ksm, &mut node, prune);
                    let (Some(tree_folio), Some(dup)) = (tree_folio, dup) else {
                        continue 'again;
                    };
                    let ord = match how {
                        Match::Bytes => cmp(&tree_folio),
                        Match::Checksum => Ordering::Equal,
                    };
                    drop(tree_folio);
                    if ord == Ordering::Equal {
                        return Walk::Equal { node, dup };
                    }
                    ord
                }
            };
            if tree_descend(ksm, nid, &mut pos, ord).is_err() {
                continue 'again;
            }
        }
    }
}

/// Looks for a KSM page with the same content as `page` that can take another mapping
/// (`stable_tree_search()`).
///
/// A KSM page whose node is on the migrate list (it moved to another NUMA node) is put into
/// the tree of its new node here: as a dup of an equal page there, in the place of an equal
/// page that itself migrated away, or as a new node.
///
/// `checksum` is the page's checksum if the caller computed it (for a page that is not KSM);
/// a KSM page's node has its own.
///
/// Returns the KSM folio with a reference, `None`, or `EBUSY` if the candidate is locked.
///
/// With [`Match::Checksum`] a merge candidate may have other bytes (see there); where the
/// search itself would act on its match (a full node, a node whose page migrated), it decides
/// by the bytes.
pub(crate) fn search(
    ksm: &mut Ksm<'_>,
    page: &crate::page::PageRef,
    checksum: Option<u32>,
    how: Match,
) -> Result<Option<ARef<Folio>>> {
    let folio = &page.folio;
    let page_node = folio_stable_node(ksm, folio);
    if page_node.is_some_and(|n| !n.on_migrate_list()) {
        // A KSM page that was forked: it is already in the tree.
        return Ok(Some(folio.clone()));
    }
    let (hash, mut how) = match page_node {
        // A migrated KSM page joins a chain or takes a node's place without another
        // comparison: compare the bytes here. Its key, computed when the page became KSM.
        Some(n) => (n.hash(), Match::Bytes),
        None => (checksum.unwrap_or_else(|| page.checksum()), how),
    };
    let nid = ksm.folio_nid(folio);
    loop {
        match walk(ksm, nid, hash, how, true, |tree_folio| {
            page.cmp_folio(tree_folio)
        }) {
            Walk::NoTree => return Ok(None),
            Walk::Equal { node, dup } => {
                // A migrated KSM page mapped more than once joins the equal pages as a dup: it
                // cannot be merged into one of them.
                if let Some(page_node) = page_node {
                    if folio.mapcount() > 1 {
                        return Ok(chain_append(ksm, node, dup, page_node, folio));
                    }
                }
                if !dup.is_sharing_candidate() {
                    if how == Match::Checksum {
                        // Matched by checksum only: a node of other bytes may hide one of
                        // these bytes with room. Decide by the bytes, as C does.
                        how = Match::Bytes;
                        continue;
                    }
                    // All dups are full: the page must find a match in the unstable tree to
                    // make a new KSM page, added as a dup later.
                    return Ok(None);
                }
                // Lock and unlock the page so that migration notices the raised count.
                let Some(tree_folio) = ksm_get_folio(ksm, dup, GetFolio::TryLock)? else {
                    // It went stale: the tree changed, walk again.
                    continue;
                };
                if ksm.node_nid(dup) != dup.nid() {
                    drop(tree_folio);
                    if how == Match::Checksum {
                        // As above: only a page of these bytes takes the place of the node.
                        how = Match::Bytes;
                        continue;
                    }
                    // The tree's page itself migrated to another node.
                    return Ok(replace(ksm, node, dup, page_node, folio));
                }
                return Ok(Some(tree_folio));
            }
            Walk::Empty { pos } => {
                let Some(page_node) = page_node else {
                    return Ok(None);
                };
                // The migrated page has no equal in its new node's tree: it becomes a node
                // there.
                migrate_list_del(page_node);
                if kernel::warn_on!(tree_insert(ksm, nid, &pos, page_node).is_err()) {
                    // Nothing changed the tree since the walk; if something did, the node
                    // waits on the migrate list for the next scan.
                    migrate_list_add(ksm, page_node);
                    return Ok(None);
                }
                return Ok(sharing_candidate(page_node, folio));
            }
        }
    }
}

/// The migrated page itself, if it may take another mapping.
fn sharing_candidate(page_node: NodeRef<'_>, folio: &ARef<Folio>) -> Option<ARef<Folio>> {
    page_node.is_sharing_candidate().then(|| folio.clone())
}

/// Puts the migrated `page_node` into the tree in the place of `dup`, whose page migrated
/// away; `dup` goes to the migrate list.
fn replace<'g>(
    ksm: &mut Ksm<'g>,
    node: NodeRef<'g>,
    dup: NodeRef<'g>,
    page_node: Option<NodeRef<'g>>,
    folio: &ARef<Folio>,
) -> Option<ARef<Folio>> {
    let mut ret = None;
    if dup == node {
        // No chain.
        if let Some(page_node) = page_node {
            migrate_list_del(page_node);
            // Of the same content as `dup`.
            if tree_replace(ksm, dup, page_node).is_err() {
                // Warned; nothing changed: the page waits on the migrate list.
                migrate_list_add(ksm, page_node);
                return None;
            }
            ret = sharing_candidate(page_node, folio);
        } else {
            tree_remove(ksm, dup);
        }
    } else {
        dup_unlink(ksm, dup);
        if let Some(page_node) = page_node {
            migrate_list_del(page_node);
            if chain_add_dup(ksm, page_node, node).is_ok() {
                ret = sharing_candidate(page_node, folio);
            } else {
                migrate_list_add(ksm, page_node);
            }
        }
    }
    migrate_list_add(ksm, dup);
    ret
}

/// Adds the migrated `page_node` as a dup next to the equal `dup`, making a chain if there is
/// none.
fn chain_append<'g>(
    ksm: &mut Ksm<'g>,
    node: NodeRef<'g>,
    dup: NodeRef<'g>,
    page_node: NodeRef<'g>,
    folio: &ARef<Folio>,
) -> Option<ARef<Folio>> {
    let chain = if dup == node {
        alloc_chain(ksm, dup)?
    } else {
        node
    };
    migrate_list_del(page_node);
    if chain_add_dup(ksm, page_node, chain).is_err() {
        migrate_list_add(ksm, page_node);
        return None;
    }
    sharing_candidate(page_node, folio)
}

/// Inserts a node for the new KSM folio `kfolio` (locked by the caller) into the stable tree,
/// as a dup of a chain if a full page of the same content is there already, and points the
/// folio at it (`stable_tree_insert()`).
pub(crate) fn insert<'g>(ksm: &mut Ksm<'g>, kfolio: &FolioLockGuard<'_>) -> Option<NodeRef<'g>> {
    // Only a folio that merging made KSM (without a node yet, once `write_protect_page()` had
    // shared it) may be pointed at a node.
    if kernel::warn_on!(kfolio.raw_mapping() != FOLIO_MAPPING_KSM) {
        return None;
    }
    let nid = ksm.folio_nid(kfolio);
    // The key: the checksum of the page now that it is write-protected and cannot change.
    // The one computed when it was scanned may be stale, and a wrong key would hide the node.
    let hash = crate::page::PageRef::checksum_of(kfolio, 0);
    // A new node joins an equal one's chain without another comparison: compare the bytes.
    let found = walk(ksm, nid, hash, Match::Bytes, false, |tree_folio| {
        kfolio.cmp_page_contents(0, tree_folio, 0)
    });
    let new = node::alloc(ksm, kfolio, hash)?;
    if link_new(ksm, nid, found, new.node()).is_none() {
        node::free(ksm, new);
        return None;
    }
    // SAFETY: The folio is a KSM folio without a node (checked above; merging made it one once
    // it was no longer exclusive): it may be pointed at one. `new` is the `Unmapped` that
    // `alloc()` returned for its page, and nothing looked the node up since: `link_new()` links
    // it in without a walk.
    unsafe { node::point_folio(kfolio, new) }
}

/// Links the new node `new` in where a walk for its content ended: at the vacant position, or
/// as a dup of the equal node (making it a chain if it is not one).
fn link_new<'g>(ksm: &mut Ksm<'g>, nid: i32, found: Walk<'g>, new: NodeRef<'g>) -> Option<()> {
    match found {
        Walk::NoTree => None,
        Walk::Empty { pos } => {
            // Nothing changed the tree since the walk (the allocation does not).
            (!kernel::warn_on!(tree_insert(ksm, nid, &pos, new).is_err())).then_some(())
        }
        Walk::Equal { node, .. } => {
            let chain = if node.is_chain() {
                node
            } else {
                alloc_chain(ksm, node)?
            };
            chain_add_dup(ksm, new, chain).ok()
        }
    }
}

/// Adds `item` to the list of `node`, whose KSM folio `kfolio` the caller has locked
/// (`stable_tree_append()`). The caller took the item's anon_vma reference.
///
/// Fails only if there is no node, or it is not the node of `kfolio`, or it is a chain or its
/// count is out of range (C: `BUG_ON()`): then the item is left out, and the caller must undo
/// the merge (`break_cow()`), since the reverse map could not find the mapping.
pub(crate) fn append<'g>(
    ksm: &Ksm<'g>,
    kfolio: &FolioLockGuard<'_>,
    item: ItemRef<'_>,
    node: Option<NodeRef<'g>>,
    bypass_limit: bool,
) -> Result {
    let Some(node) = node else {
        kernel::warn_on!(true);
        return Err(EINVAL);
    };
    add_item(node, kfolio, item)?;
    // C: WARN_ON_ONCE(). Possibly not fatal, but unexpected (a KSM fork may go over the
    // limit, and passes `bypass_limit`).
    static WARNED_OVER_LIMIT: Atomic<i32> = Atomic::new(0);
    if !bypass_limit
        && node.rmap_hlist_len() > MAX_PAGE_SHARING.load(Relaxed)
        && WARNED_OVER_LIMIT.xchg(1, Relaxed) == 0
    {
        kernel::warn_on!(true);
    }
    if item.is_last_stable() {
        PAGES_SHARED.add(ksm, 1);
    } else {
        PAGES_SHARING.add(ksm, 1);
    }
    add_mm_counters(ksm, item.mm(), 1, 0);
    Ok(())
}

/// Tries to free every stable node; true if some KSM page is still mapped
/// (`remove_all_stable_nodes()` returning nonzero).
#[cfg(CONFIG_SYSFS)]
pub(crate) fn remove_all_stable_nodes(ksm: &mut Ksm<'_>) -> bool {
    let mut busy = false;
    for nid in 0..ksm.nr_trees() {
        while let Some(node) = tree_first(ksm, nid as i32) {
            if remove_stable_node_chain(ksm, node) {
                // Go on with the next node's tree.
                busy = true;
                break;
            }
            cond_resched();
        }
    }
    // remove_stable_node() removes and frees at most the node it is given.
    for node in migrate_list(ksm) {
        if remove_stable_node(ksm, node) {
            busy = true;
        }
        cond_resched();
    }
    busy
}

/// Frees a plain node, or all dups and then the chain (`remove_stable_node_chain()`);
/// true if busy.
#[cfg(CONFIG_SYSFS)]
fn remove_stable_node_chain<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>) -> bool {
    if !node.is_chain() {
        return remove_stable_node(ksm, node);
    }
    // remove_stable_node() removes and frees at most the dup it is given.
    for dup in dups(node) {
        if remove_stable_node(ksm, dup) {
            return true;
        }
    }
    free_chain(ksm, node);
    false
}

/// Frees `node` if its page is no longer mapped (`remove_stable_node()`); true if busy.
#[cfg(CONFIG_SYSFS)]
fn remove_stable_node<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>) -> bool {
    loop {
        let folio = match ksm_get_folio(ksm, node, GetFolio::NoLock) {
            Ok(Some(f)) => f,
            // Already removed as stale.
            _ => return false,
        };
        let guard = folio.lock();
        if guard.raw_mapping() != node.expected_mapping() {
            // The page stopped being the node's while we waited for its lock: it was freed,
            // or it migrated. Look again (C: ksm_get_folio(KSM_GET_FOLIO_LOCK) goes back to
            // its start): a stale node is removed there, a migrated page is found at its new
            // pfn. Returning "not busy" here would let the caller free a chain with this node
            // still in it.
            continue;
        }
        // Unmerging everything has unmapped all KSM pages; one still mapped raced with the
        // exit of its mm (between ksm_exit() and exit_mmap()): refuse to let the caller go on.
        if guard.is_mapped() {
            return true;
        }
        // The page stops being KSM: an anonymous page with no mapping left, about to be freed
        // or swapped. It is the node's (checked above, under the lock).
        let Some(unmapped) = node::unmap_folio(&guard, node) else {
            kernel::warn_on!(true);
            return true;
        };
        remove_node_from_stable_tree(ksm, unmapped);
        return false;
    }
}

/// Switches between one tree for all nodes and one per NUMA node; the caller has emptied
/// the stable trees. The roots for every node exist from init on, so nothing can fail.
#[cfg(all(CONFIG_NUMA, CONFIG_SYSFS))]
pub(crate) fn set_merge_across_nodes(_ksm: &mut Ksm<'_>, _knob: bool) -> Result {
    Ok(())
}

/// Removes a plain node or dup whose page went offline (`stable_node_dup_remove_range()`);
/// true if removed. The page is not looked at (no `ksm_get_folio()`): it is already gone, which
/// is why a node keeps a pfn and not a page pointer.
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
fn dup_remove_range<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>, offline: &Offline) -> bool {
    let Some(stale) = offline.stale(node) else {
        return false;
    };
    remove_node_from_stable_tree(ksm, stale);
    true
}

/// Removes the dups of a chain whose page went offline, and the chain if that empties it, or a
/// plain node whose page did (`stable_node_chain_remove_range()`); true if a node left the
/// tree (which rebalanced it).
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
fn chain_remove_range<'g>(ksm: &mut Ksm<'g>, node: NodeRef<'g>, offline: &Offline) -> bool {
    if !node.is_chain() {
        // C: VM_BUG_ON(); the tree holds plain nodes and chains only.
        kernel::warn_on!(node.is_dup());
        return dup_remove_range(ksm, node, offline);
    }
    // dup_remove_range() removes and frees at most the dup it is given.
    for dup in dups(node) {
        dup_remove_range(ksm, dup, offline);
    }
    if node.list_is_empty() {
        free_chain(ksm, node);
        return true;
    }
    false
}

/// Removes the stable nodes whose page was in memory that has just gone offline
/// (`ksm_check_stable_tree()`).
///
/// Page migration moved every KSM page that was still mapped out of that memory (updating the
/// nodes' `kpfn`), so what is left are stale nodes of pages that were freed. A later lookup
/// would find them stale through their `struct page`, which is about to be removed: drop them
/// now, and their items with them.
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
pub(crate) fn remove_range(ksm: &mut Ksm<'_>, offline: &Offline) {
    for nid in 0..ksm.nr_trees() {
        let nid = nid as i32;
        let mut cur = tree_first(ksm, nid);
        while let Some(node) = cur {
            cur = if chain_remove_range(ksm, node, offline) {
                // The tree was rebalanced: start again from its first node.
                tree_first(ksm, nid)
            } else {
                // `node` is still in the tree.
                tree_next(ksm, node)
            };
            cond_resched();
        }
    }
    // Only the node handed out is removed and freed.
    for node in migrate_list(ksm) {
        if let Some(stale) = offline.stale(node) {
            remove_node_from_stable_tree(ksm, stale);
        }
        cond_resched();
    }
}
