// SPDX-License-Identifier: GPL-2.0

//! The C red-black tree operations used by KSM's content-ordered, intrusive trees.
//!
//! `kernel::rbtree::RBTree` owns its nodes and orders them by an `Ord` key; KSM's trees are
//! ordered by page contents that can only be compared with the pages pinned, and the nodes are
//! embedded in slab objects, so they use the C `rb_node` API directly, in this one place.
//! TODO: replace with an intrusive tree abstraction in `rust/kernel/rbtree`.

use kernel::bindings;

/// Links `node` at `link` under `parent` and rebalances (`rb_link_node()` + `rb_insert_color()`).
///
/// # Safety
///
/// `link` must be the empty child pointer of `parent` (or the root pointer) found by a walk of
/// `root` that nothing changed since; `node` must be unlinked and stay valid while linked.
pub(crate) unsafe fn link_and_insert(
    node: *mut bindings::rb_node,
    parent: *mut bindings::rb_node,
    link: *mut *mut bindings::rb_node,
    root: *mut bindings::rb_root,
) {
    // SAFETY: As the caller guarantees.
    unsafe {
        bindings::rb_link_node(node, parent, link);
        bindings::rb_insert_color(node, root);
    }
}

/// Unlinks `node` from `root` (`rb_erase()`).
///
/// # Safety
///
/// `node` must be linked in `root`.
pub(crate) unsafe fn erase(node: *mut bindings::rb_node, root: *mut bindings::rb_root) {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::rb_erase(node, root) };
}

/// Puts `new` in the place of `victim` in `root` (`rb_replace_node()`), without rebalancing.
///
/// # Safety
///
/// `victim` must be linked in `root`; `new` must be unlinked and have the same place in the
/// order (the same content, for KSM's trees).
pub(crate) unsafe fn replace(
    victim: *mut bindings::rb_node,
    new: *mut bindings::rb_node,
    root: *mut bindings::rb_root,
) {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::rb_replace_node(victim, new, root) };
}

/// The first node of `root` in order, or null (`rb_first()`).
///
/// # Safety
///
/// `root` must be a valid tree that nothing changes during the call.
pub(crate) unsafe fn first(root: *const bindings::rb_root) -> *mut bindings::rb_node {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::rb_first(root) }
}

/// The node after `node` in order, or null (`rb_next()`).
///
/// # Safety
///
/// `node` must be linked in a valid tree that nothing changes during the call.
pub(crate) unsafe fn next(node: *const bindings::rb_node) -> *mut bindings::rb_node {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::rb_next(node) }
}
