// SPDX-License-Identifier: GPL-2.0

//! What the thread mutex protects, and how it is borrowed.
//!
//! The thread mutex, [`KSM_THREAD_MUTEX`], holds a [`Locked`]: the scanner's state
//! ([`KsmState`]) and the graveyard of stable nodes freed under the mutex
//! ([`node::Graveyard`]). [`KsmGuard`] is the held mutex; [`KsmGuard::ksm`] lends the state out
//! as a [`Ksm`]`<'g>`, and stable nodes found through it are [`node::NodeRef`]`<'g>`s.
//! Dropping the guard frees the graveyard's nodes: `'g` has ended by then, so no node
//! reference can see a node freed.
//!
//! The mutex and these types are private to this module, so that nothing else can make a
//! `Ksm` but from the guard, reach the mutex's data but through a `Ksm`, nor make a second
//! `Locked`, `KsmState` or stable tree to swap with the one under the mutex. It is a part of
//! [`crate::node`], whose trees and graveyard it holds.

use crate::node::{self, OwnedSlot};
use core::{
    ops::{Deref, DerefMut},
    ptr::NonNull,
};
use kernel::{
    prelude::*,
    rbtree::intrusive::Tree,
    sync::{atomic::Relaxed, lock::GlobalGuard},
};

/// The scanner's state (C: the trees and `ksm_scan`).
///
/// # Invariants
///
/// `item_prev` is `None`, or an item on the list of `cursor_slot`.
pub(crate) struct KsmState {
    /// The stable trees and the migrate list.
    stable: node::StableTrees,
    /// Unstable tree roots, one per NUMA node (only the first is used with
    /// `merge_across_nodes = 1`). Emptied whenever `seqnr` changes (see
    /// [`node::unstable_insert`]).
    unstable_roots: KVec<Tree<node::UnstableLinks>>,
    /// Next address to scan in the cursor's mm.
    pub(crate) address: usize,
    /// The mm slot under the scan cursor, held by the scanner while the cursor is on it (see
    /// [`node::hold_slot`]).
    pub(super) cursor_slot: Option<OwnedSlot>,
    /// The item cursor: the item of `cursor_slot`'s list after which the next item to look at
    /// is, or `None` for the start of the list.
    pub(super) item_prev: Option<NonNull<node::RmapItem>>,
    /// Completed full scans.
    seqnr: usize,
}

// SAFETY: Only accessed under KSM_THREAD_MUTEX.
unsafe impl Send for KsmState {}

impl KsmState {
    const fn new() -> Self {
        Self {
            stable: node::StableTrees::new(node::Seal(())),
            unstable_roots: KVec::new(),
            address: 0,
            cursor_slot: None,
            item_prev: None,
            seqnr: 0,
        }
    }

    /// The stable trees.
    pub(crate) fn stable(&self) -> &node::StableTrees {
        &self.stable
    }

    /// The stable trees, to change them (see [`node`]).
    pub(crate) fn stable_mut(&mut self) -> &mut node::StableTrees {
        &mut self.stable
    }

    /// The number of trees in use (C: `ksm_nr_node_ids`).
    pub(crate) fn nr_trees(&self) -> usize {
        if crate::state::MERGE_ACROSS_NODES.load(Relaxed) != 0 {
            1
        } else {
            self.stable.len()
        }
    }

    /// The tree (NUMA node index) for a folio (`get_kpfn_nid()`).
    pub(crate) fn folio_nid(&self, folio: &kernel::mm::folio::Folio) -> i32 {
        if crate::state::MERGE_ACROSS_NODES.load(Relaxed) != 0 {
            0
        } else {
            folio.nid()
        }
    }

    /// The tree (NUMA node index) for the page of a plain node or dup (`get_kpfn_nid()`).
    pub(crate) fn node_nid(&self, node: node::NodeRef<'_>) -> i32 {
        if crate::state::MERGE_ACROSS_NODES.load(Relaxed) != 0 {
            0
        } else {
            node.page_nid()
        }
    }

    /// The number of completed full scans.
    pub(crate) fn seqnr(&self) -> usize {
        self.seqnr
    }

    /// Ends a full scan: counts it, and empties the unstable trees.
    pub(crate) fn end_full_scan(&mut self) {
        self.seqnr = self.seqnr.wrapping_add(1);
        self.reset_unstable_tree();
    }

    /// Starts counting full scans again from 0 (`run = 2`), and empties the unstable trees.
    #[cfg(CONFIG_SYSFS)]
    pub(crate) fn restart_full_scans(&mut self) {
        self.seqnr = 0;
        self.reset_unstable_tree();
    }

    /// The unstable tree of `nid`; warns if there is none (its nid would be out of range).
    pub(super) fn unstable_tree(&self, nid: i32) -> Option<&Tree<node::UnstableLinks>> {
        let t = usize::try_from(nid)
            .ok()
            .and_then(|n| self.unstable_roots.get(n));
        kernel::warn_on!(t.is_none());
        t
    }

    /// As [`KsmState::unstable_tree`], to change it.
    pub(super) fn unstable_tree_mut(&mut self, nid: i32) -> Option<&mut Tree<node::UnstableLinks>> {
        let t = usize::try_from(nid)
            .ok()
            .and_then(|n| self.unstable_roots.get_mut(n));
        kernel::warn_on!(t.is_none());
        t
    }

    /// Empties the unstable trees: at the start and at the end of a full scan, and on
    /// `run = 2`. Their items stay unstable, and are counted in `pages_unshared`, until the
    /// scanner passes them, as in C; they are no longer linked (C tells that from the sequence
    /// number: see [`node::unstable_remove`]).
    ///
    /// All of them, not only those of the current `merge_across_nodes` mode (C: only
    /// `ksm_nr_node_ids`): the per-node trees keep what they held while merging across nodes,
    /// items that may be freed since, and switching back to per-node trees in the middle of a
    /// scan would walk them (a use-after-free seen under `ksm_stress -f`).
    pub(crate) fn reset_unstable_tree(&mut self) {
        let mut n = 0u32;
        for tree in self.unstable_roots.iter_mut() {
            node::clear_unstable(tree, || {
                // One visit per unstable page per scan: may be millions.
                n = n.wrapping_add(1);
                if n % 256 == 0 {
                    kernel::kthread::cond_resched();
                }
            });
        }
    }
}

/// What [`KSM_THREAD_MUTEX`] protects: the scanner's state, and the stable nodes freed under
/// the mutex, which are really freed when it is released.
pub(crate) struct Locked {
    state: KsmState,
    graveyard: node::Graveyard,
}

kernel::sync::global_lock! {
    // SAFETY: Initialized by init(), from ksm_rs_init(), before ksmd, sysfs or any hook can use
    // it.
    //
    // Take it with `crate::lock_ksm()`, never directly: see the lock order in ksm.rs.
    unsafe(uninit) static KSM_THREAD_MUTEX: Mutex<Locked> = Locked::new();
}

/// Initializes the thread mutex and allocates the trees, at init.
///
/// # Safety
///
/// Called once, before anything else uses the mutex.
pub(crate) unsafe fn init() -> Result {
    // SAFETY: As the caller guarantees.
    unsafe { KSM_THREAD_MUTEX.init() };
    lock().0.alloc()
}

/// Locks the thread mutex. Use [`crate::lock_ksm`], which waits while memory is going offline;
/// only init and the memory notifier come here directly.
pub(crate) fn lock() -> KsmGuard {
    KsmGuard(KSM_THREAD_MUTEX.lock())
}

impl Locked {
    /// The value of the mutex at boot.
    const fn new() -> Self {
        Self {
            state: KsmState::new(),
            graveyard: node::Graveyard::new(node::Seal(())),
        }
    }

    /// Allocates one tree root per possible NUMA node, the migrate list and the graveyard, at
    /// init; `EBUSY` if done already.
    fn alloc(&mut self) -> Result {
        let n = kernel::mm::nr_node_ids().max(1);
        self.graveyard.alloc()?;
        self.state.stable.alloc(n)?;
        let s = &mut self.state;
        if !s.unstable_roots.is_empty() {
            return Err(EBUSY);
        }
        s.unstable_roots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            s.unstable_roots.push(Tree::new(), GFP_KERNEL)?;
        }
        Ok(())
    }
}

/// The scanner's state, borrowed from a held [`KSM_THREAD_MUTEX`] for `'g`.
///
/// Stable nodes found through it are [`node::NodeRef`]`<'g>`s: a node freed while the mutex is
/// held goes to the graveyard, whose nodes are freed only when the [`KsmGuard`] is dropped,
/// after `'g` ended. So a node reference stays valid for as long as the `Ksm` it came from,
/// whatever is done to the node meanwhile, and code holding one may call functions that
/// take `&mut Ksm`.
///
/// # Invariants
///
/// `state` and `graveyard` are those of [`KSM_THREAD_MUTEX`], which a [`KsmGuard`] holds for
/// `'g`.
pub(crate) struct Ksm<'g> {
    state: &'g mut KsmState,
    graveyard: &'g node::Graveyard,
}

impl<'g> Ksm<'g> {
    /// The graveyard, for as long as the mutex is held.
    pub(crate) fn graveyard(&self) -> &'g node::Graveyard {
        self.graveyard
    }
}

impl Deref for Ksm<'_> {
    type Target = KsmState;

    fn deref(&self) -> &KsmState {
        self.state
    }
}

impl DerefMut for Ksm<'_> {
    fn deref_mut(&mut self) -> &mut KsmState {
        self.state
    }
}

/// A held [`KSM_THREAD_MUTEX`]. Dropping it frees the stable nodes freed under it, then
/// unlocks.
pub(crate) struct KsmGuard(GlobalGuard<KSM_THREAD_MUTEX>);

impl KsmGuard {
    /// The scanner's state, for as long as this borrow of the guard.
    pub(crate) fn ksm(&mut self) -> Ksm<'_> {
        let Locked { state, graveyard } = &mut *self.0;
        // INVARIANT: The mutex's data, held for the borrow.
        Ksm { state, graveyard }
    }
}

impl Drop for KsmGuard {
    fn drop(&mut self) {
        // No `Ksm` borrowed from the guard is left, so no node reference either.
        self.0.graveyard.drain();
    }
}
