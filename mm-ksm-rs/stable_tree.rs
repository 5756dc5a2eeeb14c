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
//! Tree structure and the item lists are changed under [`crate::KSM_THREAD_MUTEX`]; adding to
//! or removing from a node's item list also holds the KSM folio's lock, because
//! `rmap_walk_ksm()` walks the list under that lock only.
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

use crate::{
    rmap_item::{PackedAddress, RmapItem, StableItemLinks},
    state::{
        add_mm_counters, MAX_PAGE_SHARING, PAGES_SHARED, PAGES_SHARING, STABLE_NODE_CHAINS,
        STABLE_NODE_CHAINS_PRUNE_MILLISECS, STABLE_NODE_DUPS,
    },
    Ksm,
};
use core::{
    cmp::Ordering,
    mem::{offset_of, ManuallyDrop},
    ptr::NonNull,
};
use kernel::{
    error::{code::*, Result},
    hlist,
    kthread::cond_resched,
    mm::folio::{Folio, FolioLockGuard, UnrefFolio, FOLIO_MAPPING_FLAGS, FOLIO_MAPPING_KSM},
    rbtree::intrusive::{Adapter, Links, Position},
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        barrier::{smp_mb, Read},
    },
    time::{jiffies, msecs_to_jiffies},
};

/// `rmap_hlist_len` of a chain node. Any negative number would do; not -1, so that an underflow
/// of a real count is still recognizable.
pub(crate) const STABLE_NODE_CHAIN: i32 = -1024;

/// Where a node is linked: in a stable tree, or in a list (C: the union of `node` with
/// `head`, `hlist_dup` and `list`). [`StableNode::place`] says which.
#[repr(C)]
pub(crate) union Link {
    /// In a stable tree (a plain node or a chain; accessed by the tree only, through
    /// [`TreeLinks`]).
    node: ManuallyDrop<Links>,
    /// In a chain's list of dups (a dup), or in the migrate list (accessed by the lists only,
    /// through [`ListLinks`]).
    list: ManuallyDrop<hlist::Links<StableNode>>,
}

/// The head of a node's list (C: `hlist`, which holds either): the rmap items mapping a KSM
/// page (plain nodes and dups), or the dups of a chain; `rmap_hlist_len` says which.
#[repr(C)]
pub(crate) union Head {
    /// The rmap items mapping this KSM page (plain nodes and dups).
    items: ManuallyDrop<hlist::Head<StableItemLinks>>,
    /// The dups (chains only).
    dups: ManuallyDrop<hlist::Head<ListLinks>>,
}

/// Which member of [`Link`] is in use.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Place {
    /// In a stable tree, or being put into one (`link.node`).
    Tree,
    /// A dup in a chain (`link.list`; C: `head == STABLE_NODE_DUP_HEAD`).
    Dup,
    /// On the migrate list, out of any tree (`link.list`; C: `head == &migrate_nodes`).
    Migrate,
}

/// A node of the stable tree (`struct ksm_stable_node`): a KSM page, or a chain of them.
///
/// At most 64 bytes on 64-bit, as C's (checked at build time): what a node can be linked into
/// shares one [`Link`], and its list one [`Head`].
#[repr(C)]
pub(crate) struct StableNode {
    /// Where the node is linked, as `place` says.
    pub(crate) link: Link,
    /// Its list, as `rmap_hlist_len` says.
    pub(crate) head: Head,
    /// Page frame number of the KSM page (plain nodes and dups).
    pub(crate) kpfn: Atomic<usize>,
    /// When the chain was last pruned of stale dups (chains only).
    chain_prune_time: usize,
    /// Number of items in the list, or [`STABLE_NODE_CHAIN`].
    pub(crate) rmap_hlist_len: i32,
    /// NUMA node of the tree holding this node.
    pub(crate) nid: i32,
    /// Checksum of the KSM page (of its dups' pages for a chain), the first part of the
    /// node's key in the tree ([`crate::order`]). Fixed while the node is in a tree or chain.
    pub(crate) hash: u32,
    /// Which member of `link` is in use.
    place: Place,
}

/// The links of stable nodes in the lists of dups and in the migrate list.
pub(crate) struct ListLinks;

// SAFETY: `link.list` is a transparent `ManuallyDrop<hlist::Links<StableNode>>` in every
// `StableNode`.
unsafe impl hlist::Adapter for ListLinks {
    type Item = StableNode;
    const OFFSET: usize = offset_of!(StableNode, link.list);
}

/// The links of stable nodes in the stable trees.
pub(crate) struct TreeLinks;

// SAFETY: `link.node` is a `ManuallyDrop<Links>` in every `StableNode`.
unsafe impl Adapter for TreeLinks {
    type Item = StableNode;
    const OFFSET: usize = offset_of!(StableNode, link.node);
}

// As small as C's `struct ksm_stable_node` (64 bytes on 64-bit), the checksum included.
#[cfg(CONFIG_64BIT)]
const _: () = assert!(core::mem::size_of::<StableNode>() <= 64);

// SAFETY: Only used under KSM's locks.
unsafe impl Send for StableNode {}

impl StableNode {
    fn new(kpfn: usize, rmap_hlist_len: i32, hash: u32) -> Self {
        Self {
            link: Link {
                node: ManuallyDrop::new(Links::new()),
            },
            head: Head {
                items: ManuallyDrop::new(hlist::Head::new()),
            },
            kpfn: Atomic::new(kpfn),
            chain_prune_time: 0,
            rmap_hlist_len,
            nid: 0,
            hash,
            place: Place::Tree,
        }
    }

    /// Whether the node is on the migrate list, out of any tree.
    pub(crate) fn on_migrate_list(&self) -> bool {
        self.place == Place::Migrate
    }

    /// Whether the node is a dup in a chain.
    fn is_dup(&self) -> bool {
        self.place == Place::Dup
    }

    /// The `folio->mapping` value of this node's KSM page.
    pub(crate) fn expected_mapping(this: *const StableNode) -> usize {
        this as usize | FOLIO_MAPPING_KSM
    }

    /// Whether this is a chain of dups.
    pub(crate) fn is_chain(&self) -> bool {
        self.rmap_hlist_len == STABLE_NODE_CHAIN
    }

    /// Whether `extra` more mappings may share this node's page
    /// (`__is_page_sharing_candidate()`): it still has a mapping (else its page is going away)
    /// and stays below `max_page_sharing`.
    fn is_sharing_candidate_plus(&self, extra: i32) -> bool {
        // C: VM_BUG_ON(). A chain or an underflowed count: refuse to share.
        if kernel::warn_on!(self.rmap_hlist_len < 0) {
            return false;
        }
        self.rmap_hlist_len != 0 && self.rmap_hlist_len + extra < MAX_PAGE_SHARING.load(Relaxed)
    }

    /// Whether another mapping may share this node's page (`is_page_sharing_candidate()`).
    pub(crate) fn is_sharing_candidate(&self) -> bool {
        self.is_sharing_candidate_plus(0)
    }

    /// Iterates over the items listed from the node at `this`.
    ///
    /// The node is not borrowed: rmap walks call this under the KSM folio's lock only, while
    /// ksmd may change other fields of the node (its count, its tree or migrate links).
    ///
    /// # Safety
    ///
    /// `this` must be a live plain node or dup, and the caller must hold a lock that keeps its
    /// list unchanged while the iterator is used (the KSM folio's lock or the thread mutex).
    pub(crate) unsafe fn items(this: *const Self) -> impl Iterator<Item = *mut RmapItem> {
        // SAFETY: As the caller guarantees; only the `head` field is borrowed, and `items` is
        // the member of `head` in use for a plain node or dup.
        unsafe { (*this).head.items.iter() }.map(NonNull::as_ptr)
    }

    /// The list of items (plain nodes and dups).
    fn items_head(&self) -> &hlist::Head<StableItemLinks> {
        // C: VM_BUG_ON(). The callers pass plain nodes and dups only.
        kernel::warn_on!(self.is_chain());
        // SAFETY: Both members of `head` are one initialized pointer in an `UnsafeCell`: any
        // bits are valid. What the list holds is the business of its `unsafe` functions.
        unsafe { &self.head.items }
    }

    /// The list of dups (chains).
    fn dups_head(&self) -> &hlist::Head<ListLinks> {
        // C: VM_BUG_ON(). The callers pass chains only.
        kernel::warn_on!(!self.is_chain());
        // SAFETY: As in `items_head()`.
        unsafe { &self.head.dups }
    }

    /// Whether the node has no items (plain nodes and dups) or no dups (chains).
    pub(crate) fn list_is_empty(&self) -> bool {
        if self.is_chain() {
            self.dups_head().is_empty()
        } else {
            self.items_head().is_empty()
        }
    }

    /// The dups of a chain.
    ///
    /// # Safety
    ///
    /// While the iterator is used, the thread mutex must be held, and the chain's list may only
    /// change by the removal (and freeing) of the dup last handed out.
    unsafe fn dups(&self) -> impl Iterator<Item = *mut StableNode> {
        // SAFETY: Dups of a live chain are valid under the thread mutex; the list only changes
        // as the caller promises, and the iterator reads each successor before handing out a dup.
        unsafe { self.dups_head().iter() }.map(NonNull::as_ptr)
    }
}

/// The stable node of a KSM folio, or null (`folio_stable_node()`).
pub(crate) fn folio_stable_node(folio: &Folio) -> *mut StableNode {
    if folio.is_ksm() {
        (folio.raw_mapping() & !FOLIO_MAPPING_FLAGS) as *mut StableNode
    } else {
        core::ptr::null_mut()
    }
}

/// Links `dup` first into the chain's list of dups (`stable_node_chain_add_dup()`).
fn chain_add_dup(ksm: &Ksm, dup: *mut StableNode, chain: *mut StableNode) {
    // SAFETY: Both are live nodes, `dup` in no tree or list, and freed only after it leaves the
    // list; the thread mutex serializes the list's users.
    unsafe {
        (*chain).dups_head().push_front(NonNull::new_unchecked(dup));
        (*dup).place = Place::Dup;
    }
    STABLE_NODE_DUPS.add(ksm, 1);
}

/// Unlinks a dup from its chain (`__stable_node_dup_del()`).
fn dup_unlink(ksm: &Ksm, dup: *mut StableNode) {
    // SAFETY: `dup` is a live dup in a chain; the thread mutex serializes the list's users.
    unsafe {
        hlist::Head::<ListLinks>::remove(NonNull::new_unchecked(dup));
        (*dup).place = Place::Tree;
    }
    STABLE_NODE_DUPS.add(ksm, -1);
}

/// Takes a plain node or dup out of the tree or its chain (`stable_node_dup_del()`).
fn node_del(ksm: &mut Ksm, node: *mut StableNode) {
    // SAFETY: A live node under the thread mutex.
    if unsafe { (*node).is_dup() } {
        dup_unlink(ksm, node);
    } else {
        // SAFETY: A plain node is in the stable tree of its nid.
        unsafe { tree_remove(ksm, node) };
    }
}

/// Takes a plain node or chain out of the stable tree of its nid.
///
/// # Safety
///
/// `node` must be a live node in that tree (thread mutex held).
unsafe fn tree_remove(ksm: &mut Ksm, node: *mut StableNode) {
    // SAFETY: As the caller guarantees; a live node is not null.
    unsafe {
        let nid = (*node).nid;
        ksm.stable_tree(nid).remove(NonNull::new_unchecked(node));
    }
}

/// Puts `new` in the place of `old` in the stable tree of `old`'s nid; `old` leaves the tree.
///
/// # Safety
///
/// `old` must be a live node in that tree, and `new` a live node in no tree or list, with the
/// content of `old` (the same checksum and bytes), which stays live until it is taken out of
/// the tree (thread mutex held).
unsafe fn tree_replace(ksm: &mut Ksm, old: *mut StableNode, new: *mut StableNode) {
    // SAFETY: As the caller guarantees; live nodes are not null.
    unsafe {
        let nid = (*old).nid;
        ksm.stable_tree(nid)
            .replace(NonNull::new_unchecked(old), NonNull::new_unchecked(new));
    }
}

/// Links `node` in at the vacant position `pos` of the stable tree of `nid`, which a walk for
/// its content found; `EAGAIN` if the tree changed since.
///
/// # Safety
///
/// `node` must be a live node in no tree or list, which stays live until it is taken out of
/// the tree (thread mutex held).
unsafe fn tree_insert(
    ksm: &mut Ksm,
    nid: i32,
    pos: &Position<TreeLinks>,
    node: *mut StableNode,
) -> Result {
    // SAFETY: As the caller guarantees; a live node is not null.
    unsafe {
        ksm.stable_tree(nid)
            .insert(pos, NonNull::new_unchecked(node))
    }?;
    // SAFETY: A live node.
    unsafe { (*node).nid = nid };
    Ok(())
}

/// Puts a node that is in no tree or chain on the migrate list.
fn migrate_list_add(ksm: &mut Ksm, node: *mut StableNode) {
    // There is no KSM page before init allocated the list.
    let Some(head) = ksm.migrate_nodes() else {
        kernel::warn_on!(true);
        return;
    };
    // SAFETY: A live node in no tree or list, freed only after it leaves the list; the head
    // never moves (its own allocation, freed never); the thread mutex serializes the list's
    // users.
    unsafe {
        head.push_front(NonNull::new_unchecked(node));
        (*node).place = Place::Migrate;
    }
}

/// Takes a node off the migrate list.
fn migrate_list_del(node: *mut StableNode) {
    // SAFETY: A live node on the list; the thread mutex serializes the list's users.
    unsafe {
        hlist::Head::<ListLinks>::remove(NonNull::new_unchecked(node));
        (*node).place = Place::Tree;
    }
}

/// The nodes on the migrate list.
///
/// # Safety
///
/// While the iterator is used, the thread mutex must be held, and the list may only change by
/// the removal (and freeing) of the node last handed out.
unsafe fn migrate_list(ksm: &Ksm) -> impl Iterator<Item = *mut StableNode> {
    // SAFETY: Listed nodes are valid under the thread mutex; the list only changes as the
    // caller promises, and the iterator reads each successor before handing out a node.
    let nodes = ksm.migrate_nodes().map(|head| unsafe { head.iter() });
    nodes.into_iter().flatten().map(NonNull::as_ptr)
}

/// Moves the node of a KSM page that migrated to another NUMA node out of its tree, to be
/// put into the right tree when its page is next scanned.
pub(crate) fn move_to_migrate_list(ksm: &mut Ksm, node: *mut StableNode) {
    node_del(ksm, node);
    migrate_list_add(ksm, node);
}

/// Drops the stale nodes of the migrate list, once per full scan: nothing else looks at them.
pub(crate) fn prune_migrate_list(ksm: &mut Ksm) {
    // SAFETY: Thread mutex held (`&mut Ksm`); a stale node is removed and freed by
    // ksm_get_folio(), which changes nothing else on the list.
    for node in unsafe { migrate_list(ksm) } {
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
pub(crate) fn prune_stale_nodes(ksm: &mut Ksm) {
    for nid in 0..ksm.nr_trees() {
        let nid = nid as i32;
        let mut cur = ksm.stable_tree(nid).first();
        while let Some(node) = cur {
            // Removing `node` leaves the other nodes in the tree, so its successor stays in it.
            // SAFETY: `node` is in the tree.
            let next = unsafe { ksm.stable_tree(nid).next(node) };
            let node = node.as_ptr();
            // SAFETY: A live node of the tree.
            if unsafe { (*node).is_chain() } {
                // SAFETY: A live chain, thread mutex held; ksm_get_folio() removes and frees at
                // most the stale dup it is given.
                for dup in unsafe { (*node).dups() } {
                    let _ = ksm_get_folio(ksm, dup, GetFolio::NoLock);
                }
                // SAFETY: The chain is still live: only its dups were removed.
                if unsafe { (*node).list_is_empty() } {
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
fn alloc_chain(ksm: &mut Ksm, dup: *mut StableNode) -> Option<*mut StableNode> {
    // SAFETY: A live node.
    let mut c = StableNode::new(0, STABLE_NODE_CHAIN, unsafe { (*dup).hash });
    c.chain_prune_time = jiffies() as usize;
    // SAFETY: A live node.
    c.nid = unsafe { (*dup).nid };
    let chain = crate::alloc_stable_node(c).ok()?;
    STABLE_NODE_CHAINS.add(ksm, 1);
    // SAFETY: `dup` is a plain node in the tree of its nid; `chain` is new, of its content,
    // and freed only after it leaves the tree (`free_chain()`).
    unsafe { tree_replace(ksm, dup, chain) };
    chain_add_dup(ksm, dup, chain);
    Some(chain)
}

/// Removes an empty chain from the tree and frees it (`free_stable_node_chain()`).
fn free_chain(ksm: &mut Ksm, chain: *mut StableNode) {
    // SAFETY: A chain in the tree of its nid.
    unsafe { tree_remove(ksm, chain) };
    free_stable_node(chain);
    STABLE_NODE_CHAINS.add(ksm, -1);
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

/// Returns the KSM folio of `node` with a reference, if the page still is that node's page;
/// otherwise the node is stale and is removed from the stable tree (`ksm_get_folio()`).
pub(crate) fn ksm_get_folio(
    ksm: &mut Ksm,
    node: *mut StableNode,
    how: GetFolio,
) -> Result<Option<ARef<Folio>>> {
    let expected = StableNode::expected_mapping(node);
    loop {
        // SAFETY: `node` is a live node of the stable tree (we hold the thread mutex). C:
        // READ_ONCE(), an address dependency orders it before the reads of the folio.
        let kpfn = unsafe { (*node).kpfn.load(Relaxed) };
        // SAFETY: `kpfn` was a KSM page's pfn; its `struct page` stays in the memory map
        // while we hold the thread mutex through lock_ksm(): that waits while memory is going
        // offline, and the nodes of offlined memory are removed before offlining ends
        // (`hotremove`).
        let folio = unsafe { UnrefFolio::from_pfn(kpfn) };
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
            return Ok(Some(f));
        }
        // The node looks stale (by the mapping or the swap cache flag), but the page may be
        // migrating: `folio_migrate_ksm()` stores the new kpfn, smp_wmb(), then clears the old
        // folio's mapping. Order the reads that saw it stale before the new read of kpfn.
        smp_mb(Read);
        // SAFETY: As above.
        if unsafe { (*node).kpfn.load(Relaxed) } != kpfn {
            continue;
        }
        remove_node_from_stable_tree(ksm, node);
        return Ok(None);
    }
}

/// Removes a stale node (plain or dup) and forgets all its items
/// (`remove_node_from_stable_tree()`).
pub(crate) fn remove_node_from_stable_tree(ksm: &mut Ksm, node: *mut StableNode) {
    // `node` is a live plain node or dup and we hold the thread mutex. It is only read through
    // short-lived shared references: `folio_migrate_ksm()` may store `kpfn` concurrently (an
    // atomic), and forget_stable_item() changes the count through `node`.
    // C: BUG_ON(). A chain's dups are not in its item list: freeing it here would leave them
    // pointing at freed memory. Callers never pass one; leak it rather than corrupt memory.
    // SAFETY: As above.
    let is_chain = unsafe { (*node).is_chain() };
    if kernel::warn_on!(is_chain) {
        return;
    }
    // SAFETY: As above.
    let kpfn = unsafe { (*node).kpfn.load(Relaxed) };
    // SAFETY: As above; the list does not change while the items are forgotten, and goes with
    // the node, freed below.
    let items = unsafe { StableNode::items(node) };
    for item in items {
        // SAFETY: Items listed from the node are valid.
        let item = unsafe { &mut *item };
        let sharing = !item.is_last_stable();
        if sharing {
            crate::trace::remove_rmap_item(kpfn, item);
        }
        forget_stable_item(ksm, node, item, sharing);
        cond_resched();
    }
    crate::trace::remove_ksm_page(kpfn);
    // SAFETY: As above.
    if unsafe { (*node).on_migrate_list() } {
        migrate_list_del(node);
    } else {
        node_del(ksm, node);
    }
    free_stable_node(node);
}

/// Accounts for `item` leaving the list of `node` (it was a sharing mapping or the shared
/// page), drops its anon_vma reference and makes it a plain item again; the caller unlinks it
/// or frees the whole list. The thread mutex is held and `node` is live.
pub(crate) fn forget_stable_item(
    ksm: &Ksm,
    node: *mut StableNode,
    item: &mut RmapItem,
    sharing: bool,
) {
    if sharing {
        PAGES_SHARING.add(ksm, -1);
    } else {
        PAGES_SHARED.add(ksm, -1);
    }
    add_mm_counters(ksm, item.mm(), -1, 0);
    // SAFETY: A live node; its count is only changed under the thread mutex.
    unsafe { (*node).rmap_hlist_len -= 1 };
    // SAFETY: Stable items hold an anon_vma reference.
    unsafe { crate::put_anon_vma(item.anon_vma_or_nid.anon_vma) };
    item.clear_info();
    item.set_stable_node(core::ptr::null_mut());
    item.address = PackedAddress::new(item.address.addr());
}

/// Frees a stable node that is in no tree, chain or list.
pub(crate) fn free_stable_node(node: *mut StableNode) {
    // SAFETY: `node` was allocated with `alloc_stable_node()`; the caller unlinked it.
    unsafe { crate::free_stable_node(node) };
}

/// Picks the best dup of `*chain` to merge with and returns its page (`stable_node_dup()`):
/// one with room for another mapping, the fullest such. With `prune`, at most once per
/// `stable_node_chains_prune_millisecs`, walks all dups to drop stale ones. Collapses the
/// chain (and updates `*chain` to the remaining dup) when one dup is left, and frees it when
/// none is.
fn stable_node_dup(
    ksm: &mut Ksm,
    chain: &mut *mut StableNode,
    prune: bool,
) -> (Option<ARef<Folio>>, *mut StableNode) {
    let c = *chain;
    let now = jiffies() as usize;
    let prune_ms = STABLE_NODE_CHAINS_PRUNE_MILLISECS.load(Relaxed);
    // SAFETY: A live chain under the thread mutex.
    let prune = prune
        && unsafe {
            let due = (*c)
                .chain_prune_time
                .wrapping_add(msecs_to_jiffies(prune_ms) as usize);
            // time_before(now, due) is false: prune, and restart the interval.
            if (now.wrapping_sub(due) as isize) >= 0 {
                (*c).chain_prune_time = now;
                true
            } else {
                false
            }
        };

    let mut found: *mut StableNode = core::ptr::null_mut();
    let mut found_len = 0;
    let mut tree_folio: Option<ARef<Folio>> = None;
    // SAFETY: A live chain, thread mutex held; ksm_get_folio() removes and frees at most the
    // stale dup it is given.
    for dup in unsafe { (*c).dups() } {
        cond_resched();
        // A stale dup is removed (and freed) by ksm_get_folio(); `dups()` already moved on.
        let Ok(Some(folio)) = ksm_get_folio(ksm, dup, GetFolio::NoLock) else {
            continue;
        };
        // SAFETY: `dup` is live (its page still points at it).
        let d = unsafe { &*dup };
        // SAFETY: `found` is live when non-null.
        let better = found.is_null()
            || (d.is_sharing_candidate()
                && (unsafe { !(*found).is_sharing_candidate() } || d.rmap_hlist_len > found_len));
        if better {
            found = dup;
            found_len = d.rmap_hlist_len;
            tree_folio = Some(folio);
            if !prune && d.is_sharing_candidate() {
                break;
            }
        }
    }

    if found.is_null() {
        // No dup left: the chain is empty.
        free_chain(ksm, c);
        return (None, core::ptr::null_mut());
    }
    // SAFETY: Live chain and dup.
    unsafe {
        let first = (*c).dups_head().first().map(NonNull::as_ptr);
        let last = hlist::Head::<ListLinks>::next(NonNull::new_unchecked(found)).is_none();
        if first == Some(found) && last {
            // One dup left, below the limit: drop the chain and put the dup in its place.
            dup_unlink(ksm, found);
            (*found).nid = (*c).nid;
            // The dup has the chain's content, and is freed only after it leaves the tree.
            tree_replace(ksm, c, found);
            free_stable_node(c);
            STABLE_NODE_CHAINS.add(ksm, -1);
            // The caller relies on `*chain == found` when the chain collapsed.
            *chain = found;
        } else if first != Some(found) && (*found).is_sharing_candidate_plus(1) {
            // Move a dup that can take more than the merge under way to the front, so that
            // the next search without pruning finds it first.
            dup_unlink(ksm, found);
            chain_add_dup(ksm, found, c);
        }
    }
    (tree_folio, found)
}

/// The page of a plain node, or of the best dup of a chain (`__stable_node_chain()`).
fn node_folio(
    ksm: &mut Ksm,
    node: &mut *mut StableNode,
    prune: bool,
) -> (Option<ARef<Folio>>, *mut StableNode) {
    // SAFETY: A live node.
    if unsafe { !(**node).is_chain() } {
        let n = *node;
        return (ksm_get_folio(ksm, n, GetFolio::NoLock).ok().flatten(), n);
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
enum Walk {
    /// A node with the same content: `node` is the tree node (a chain, or a plain node, also
    /// when a chain was just collapsed into it), `dup` the node of the page compared (a dup of
    /// the chain, or `node` itself).
    Equal {
        node: *mut StableNode,
        dup: *mut StableNode,
    },
    /// No node with that content: a new one goes at `pos`.
    Empty { pos: Position<TreeLinks> },
}

/// Walks the stable tree of `nid` for the key `(hash, bytes)` ([`crate::order`]): nodes with
/// another checksum are passed by their key alone; the pages of nodes with the same checksum
/// are compared with `cmp` (which orders the bytes looked for against a tree page), unless
/// `Match::Checksum` takes the first live one as equal. Stale nodes met on the way are removed,
/// which rebalances the tree: the walk then starts again (giving up would be safe too, but
/// would insert duplicates needlessly). `prune` lets chains drop their stale dups on the way.
fn walk(
    ksm: &mut Ksm,
    nid: i32,
    hash: u32,
    how: Match,
    prune: bool,
    cmp: impl Fn(&Folio) -> Ordering,
) -> Walk {
    'again: loop {
        let mut pos = ksm.stable_tree(nid).root();
        // `EAGAIN`: the tree changed under the walk (a stale node was removed, or a chain
        // collapsed into its dup): start again.
        while let Ok(at) = ksm.stable_tree(nid).item_at(&pos) {
            let Some(node) = at else {
                return Walk::Empty { pos };
            };
            cond_resched();
            let mut node = node.as_ptr();
            // SAFETY: A live node of the tree; its key does not change while it is linked.
            let ord = match crate::order::by_checksum(hash, unsafe { (*node).hash }) {
                Some(ord) => ord,
                None => {
                    let (tree_folio, dup) = node_folio(ksm, &mut node, prune);
                    let Some(tree_folio) = tree_folio else {
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
            if ksm.stable_tree(nid).descend(&mut pos, ord).is_err() {
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
    ksm: &mut Ksm,
    page: &crate::page::PageRef,
    checksum: Option<u32>,
    how: Match,
) -> Result<Option<ARef<Folio>>> {
    let folio = &page.folio;
    let page_node = folio_stable_node(folio);
    // SAFETY: The node of a KSM folio we hold is live.
    if !page_node.is_null() && unsafe { !(*page_node).on_migrate_list() } {
        // A KSM page that was forked: it is already in the tree.
        return Ok(Some(folio.clone()));
    }
    let (hash, mut how) = if !page_node.is_null() {
        // A migrated KSM page joins a chain or takes a node's place without another
        // comparison: compare the bytes here.
        // SAFETY: As above. Its key, computed when the page became KSM.
        (unsafe { (*page_node).hash }, Match::Bytes)
    } else {
        (checksum.unwrap_or_else(|| page.checksum()), how)
    };
    let nid = ksm.kpfn_nid(folio.pfn());
    loop {
        match walk(ksm, nid, hash, how, true, |tree_folio| {
            page.cmp_folio(tree_folio)
        }) {
            Walk::Equal { node, dup } => {
                // A migrated KSM page mapped more than once joins the equal pages as a dup: it
                // cannot be merged into one of them.
                if !page_node.is_null() && folio.mapcount() > 1 {
                    return Ok(chain_append(ksm, node, dup, page_node, nid, folio));
                }
                // SAFETY: Valid dup or plain node.
                if unsafe { !(*dup).is_sharing_candidate() } {
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
                // SAFETY: `dup` is live (its page was just checked).
                if unsafe { ksm.kpfn_nid((*dup).kpfn.load(Relaxed)) != (*dup).nid } {
                    drop(tree_folio);
                    if how == Match::Checksum {
                        // As above: only a page of these bytes takes the place of the node.
                        how = Match::Bytes;
                        continue;
                    }
                    // The tree's page itself migrated to another node.
                    return Ok(replace(ksm, node, dup, page_node, nid, folio));
                }
                return Ok(Some(tree_folio));
            }
            Walk::Empty { pos } => {
                if page_node.is_null() {
                    return Ok(None);
                }
                // The migrated page has no equal in its new node's tree: it becomes a node
                // there.
                migrate_list_del(page_node);
                // SAFETY: `page_node` is live and now in no list; it is freed only after it
                // leaves the tree.
                let inserted = unsafe { tree_insert(ksm, nid, &pos, page_node) };
                if kernel::warn_on!(inserted.is_err()) {
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
fn sharing_candidate(page_node: *mut StableNode, folio: &ARef<Folio>) -> Option<ARef<Folio>> {
    // SAFETY: A live node.
    unsafe { (*page_node).is_sharing_candidate() }.then(|| folio.clone())
}

/// Puts the migrated `page_node` into the tree of `nid` in the place of `dup`, whose page
/// migrated away; `dup` goes to the migrate list.
fn replace(
    ksm: &mut Ksm,
    node: *mut StableNode,
    dup: *mut StableNode,
    page_node: *mut StableNode,
    nid: i32,
    folio: &ARef<Folio>,
) -> Option<ARef<Folio>> {
    let mut ret = None;
    if dup == node {
        // No chain.
        if !page_node.is_null() {
            migrate_list_del(page_node);
            // SAFETY: `page_node` is live, now in no list, of the same content as `dup`, which
            // is in the tree of its nid, `nid`; a node is freed only after it leaves the tree.
            unsafe {
                (*page_node).nid = nid;
                tree_replace(ksm, dup, page_node);
            }
            ret = sharing_candidate(page_node, folio);
        } else {
            // SAFETY: `dup` is a plain node in the tree of its nid.
            unsafe { tree_remove(ksm, dup) };
        }
    } else {
        dup_unlink(ksm, dup);
        if !page_node.is_null() {
            migrate_list_del(page_node);
            // SAFETY: A live node.
            unsafe { (*page_node).nid = nid };
            chain_add_dup(ksm, page_node, node);
            ret = sharing_candidate(page_node, folio);
        }
    }
    migrate_list_add(ksm, dup);
    ret
}

/// Adds the migrated `page_node` as a dup next to the equal `dup` in the tree of `nid`,
/// making a chain if there is none.
fn chain_append(
    ksm: &mut Ksm,
    node: *mut StableNode,
    dup: *mut StableNode,
    page_node: *mut StableNode,
    nid: i32,
    folio: &ARef<Folio>,
) -> Option<ARef<Folio>> {
    let chain = if dup == node {
        alloc_chain(ksm, dup)?
    } else {
        node
    };
    migrate_list_del(page_node);
    // SAFETY: A live node.
    unsafe { (*page_node).nid = nid };
    chain_add_dup(ksm, page_node, chain);
    sharing_candidate(page_node, folio)
}

/// Inserts a node for the new KSM folio `kfolio` (locked by the caller) into the stable tree,
/// as a dup of a chain if a full page of the same content is there already, and points the
/// folio at it (`stable_tree_insert()`).
pub(crate) fn insert(ksm: &mut Ksm, kfolio: &FolioLockGuard<'_>) -> Option<*mut StableNode> {
    let nid = ksm.kpfn_nid(kfolio.pfn());
    // The key: the checksum of the page now that it is write-protected and cannot change.
    // The one computed when it was scanned may be stale, and a wrong key would hide the node.
    let hash = crate::page::PageRef::checksum_of(kfolio, 0);
    // A new node joins an equal one's chain without another comparison: compare the bytes.
    let found = walk(ksm, nid, hash, Match::Bytes, false, |tree_folio| {
        kfolio.cmp_page_contents(0, tree_folio, 0)
    });
    let mut n = StableNode::new(kfolio.pfn(), 0, hash);
    n.nid = nid;
    let new = crate::alloc_stable_node(n).ok()?;
    match found {
        Walk::Empty { pos } => {
            // SAFETY: `new` is a new node in no tree or list, freed only after it leaves the
            // tree.
            let inserted = unsafe { tree_insert(ksm, nid, &pos, new) };
            if kernel::warn_on!(inserted.is_err()) {
                // Nothing changed the tree since the walk (the allocation does not).
                free_stable_node(new);
                return None;
            }
        }
        Walk::Equal { node, .. } => {
            // SAFETY: `node` is a live plain node or chain.
            let chain = if unsafe { (*node).is_chain() } {
                node
            } else {
                let Some(chain) = alloc_chain(ksm, node) else {
                    free_stable_node(new);
                    return None;
                };
                chain
            };
            chain_add_dup(ksm, new, chain);
        }
    }
    // SAFETY: The folio is locked, anonymous and no longer exclusive (write_protect_page
    // shared it): it may become KSM.
    unsafe { kfolio.set_raw_mapping(StableNode::expected_mapping(new)) };
    Some(new)
}

/// Adds `item` to the list of `node`, whose KSM folio the caller has locked
/// (`stable_tree_append()`).
///
/// Fails only if `node` is a chain or its count underflowed (C: `BUG_ON()`): then the item is
/// left out, and the caller must undo the merge (`break_cow()`), since the reverse map could
/// not find the mapping.
pub(crate) fn append(
    ksm: &Ksm,
    item: &mut RmapItem,
    node: *mut StableNode,
    bypass_limit: bool,
) -> Result {
    if kernel::warn_on!(node.is_null()) {
        return Err(EINVAL);
    }
    let old = {
        // SAFETY: `node` is a live plain node or dup; thread mutex and folio lock held, so we
        // are the only user of its count. A reference to that one field, not to the node:
        // `folio_migrate_ksm()` may store `kpfn` concurrently, so no `&mut StableNode` may
        // exist.
        let len = unsafe { &mut (*node).rmap_hlist_len };
        let old = *len;
        if kernel::warn_on!(old < 0) {
            return Err(EINVAL);
        }
        *len = old + 1;
        old
    };
    // C: WARN_ON_ONCE(). Possibly not fatal, but unexpected (a KSM fork may go over the
    // limit, and passes `bypass_limit`).
    static WARNED_OVER_LIMIT: Atomic<i32> = Atomic::new(0);
    if !bypass_limit
        && old + 1 > MAX_PAGE_SHARING.load(Relaxed)
        && WARNED_OVER_LIMIT.xchg(1, Relaxed) == 0
    {
        kernel::warn_on!(true);
    }
    item.set_stable_node(node);
    // SAFETY: The item is in no tree or list (it was just taken out of the trees), and is taken
    // off the list before it is freed; the list head is a field of the live node; the thread
    // mutex and the folio lock serialize the list's users.
    unsafe { (*node).items_head().push_front(NonNull::from(&mut *item)) };
    item.address = item.address.into_stable();
    if item.is_last_stable() {
        PAGES_SHARED.add(ksm, 1);
    } else {
        PAGES_SHARING.add(ksm, 1);
    }
    add_mm_counters(ksm, item.mm(), 1, 0);
    Ok(())
}

/// Unlinks `item` from its stable node's list (`hlist_del()`); the caller holds the KSM
/// folio's lock.
pub(crate) fn unlink(item: &mut RmapItem) {
    // SAFETY: The item is on its stable node's list; the caller's locks serialize its users.
    unsafe { hlist::Head::<StableItemLinks>::remove(NonNull::from(item)) };
}

/// Tries to free every stable node; true if some KSM page is still mapped
/// (`remove_all_stable_nodes()` returning nonzero).
#[cfg(CONFIG_SYSFS)]
pub(crate) fn remove_all_stable_nodes(ksm: &mut Ksm) -> bool {
    let mut busy = false;
    for nid in 0..ksm.nr_trees() {
        while let Some(node) = ksm.stable_tree(nid as i32).first() {
            if remove_stable_node_chain(ksm, node.as_ptr()) {
                // Go on with the next node's tree.
                busy = true;
                break;
            }
            cond_resched();
        }
    }
    // SAFETY: Thread mutex held (`&mut Ksm`); remove_stable_node() removes and frees at most
    // the node it is given.
    for node in unsafe { migrate_list(ksm) } {
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
fn remove_stable_node_chain(ksm: &mut Ksm, node: *mut StableNode) -> bool {
    // SAFETY: A live node.
    if unsafe { !(*node).is_chain() } {
        return remove_stable_node(ksm, node);
    }
    // SAFETY: A live chain, thread mutex held; remove_stable_node() removes and frees at most
    // the dup it is given.
    for dup in unsafe { (*node).dups() } {
        if remove_stable_node(ksm, dup) {
            return true;
        }
    }
    free_chain(ksm, node);
    false
}

/// Frees `node` if its page is no longer mapped (`remove_stable_node()`); true if busy.
#[cfg(CONFIG_SYSFS)]
fn remove_stable_node(ksm: &mut Ksm, node: *mut StableNode) -> bool {
    loop {
        let folio = match ksm_get_folio(ksm, node, GetFolio::NoLock) {
            Ok(Some(f)) => f,
            // Already removed as stale.
            _ => return false,
        };
        let guard = folio.lock();
        if guard.raw_mapping() != StableNode::expected_mapping(node) {
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
        // SAFETY: We hold the folio lock; the page stops being KSM: an anonymous page with no
        // mapping left, about to be freed or swapped (C: folio_set_stable_node(folio, NULL)).
        unsafe { guard.set_raw_mapping(FOLIO_MAPPING_KSM) };
        remove_node_from_stable_tree(ksm, node);
        return false;
    }
}

/// Switches between one tree for all nodes and one per NUMA node; the caller has emptied
/// the stable trees. The roots for every node exist from init on, so nothing can fail.
#[cfg(all(CONFIG_NUMA, CONFIG_SYSFS))]
pub(crate) fn set_merge_across_nodes(_ksm: &mut Ksm, _knob: bool) -> Result {
    Ok(())
}

/// Whether a plain node or dup has its page in `pfns`.
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
fn kpfn_in(node: *mut StableNode, pfns: &core::ops::Range<usize>) -> bool {
    // SAFETY: A live node (thread mutex held); `kpfn` is atomic.
    pfns.contains(&unsafe { (*node).kpfn.load(Relaxed) })
}

/// Removes a plain node or dup whose page is in `pfns` (`stable_node_dup_remove_range()`);
/// true if removed. The page is not looked at (no `ksm_get_folio()`): it is already gone, which
/// is why a node keeps a pfn and not a page pointer.
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
fn dup_remove_range(ksm: &mut Ksm, node: *mut StableNode, pfns: &core::ops::Range<usize>) -> bool {
    if !kpfn_in(node, pfns) {
        return false;
    }
    remove_node_from_stable_tree(ksm, node);
    true
}

/// Removes the dups of a chain whose page is in `pfns`, and the chain if that empties it, or a
/// plain node whose page is there (`stable_node_chain_remove_range()`); true if a node left the
/// tree (which rebalanced it).
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
fn chain_remove_range(
    ksm: &mut Ksm,
    node: *mut StableNode,
    pfns: &core::ops::Range<usize>,
) -> bool {
    // SAFETY: A live node of the tree.
    if unsafe { !(*node).is_chain() } {
        // SAFETY: As above. C: VM_BUG_ON(); the tree holds plain nodes and chains only.
        kernel::warn_on!(unsafe { (*node).is_dup() });
        return dup_remove_range(ksm, node, pfns);
    }
    // SAFETY: A live chain, thread mutex held; dup_remove_range() removes and frees at most the
    // dup it is given.
    for dup in unsafe { (*node).dups() } {
        dup_remove_range(ksm, dup, pfns);
    }
    // SAFETY: The chain is still live.
    if unsafe { (*node).list_is_empty() } {
        free_chain(ksm, node);
        return true;
    }
    false
}

/// Removes the stable nodes whose page is in `pfns`, memory that has just gone offline
/// (`ksm_check_stable_tree()`).
///
/// Page migration moved every KSM page that was still mapped out of that memory (updating the
/// nodes' `kpfn`), so what is left are stale nodes of pages that were freed. A later lookup
/// would find them stale through their `struct page`, which is about to be removed: drop them
/// now, and their items with them.
#[cfg(CONFIG_MEMORY_HOTREMOVE)]
pub(crate) fn remove_range(ksm: &mut Ksm, pfns: core::ops::Range<usize>) {
    for nid in 0..ksm.nr_trees() {
        let nid = nid as i32;
        let mut cur = ksm.stable_tree(nid).first();
        while let Some(node) = cur {
            cur = if chain_remove_range(ksm, node.as_ptr(), &pfns) {
                // The tree was rebalanced: start again from its first node.
                ksm.stable_tree(nid).first()
            } else {
                // SAFETY: `node` is still in the tree.
                unsafe { ksm.stable_tree(nid).next(node) }
            };
            cond_resched();
        }
    }
    // SAFETY: Thread mutex held (`&mut Ksm`); only the node handed out is removed and freed.
    for node in unsafe { migrate_list(ksm) } {
        if kpfn_in(node, &pfns) {
            remove_node_from_stable_tree(ksm, node);
        }
        cond_resched();
    }
}
