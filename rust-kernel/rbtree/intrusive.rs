// SPDX-License-Identifier: GPL-2.0

//! Intrusive red-black trees, ordered by the caller at each walk.
//!
//! C header: [`include/linux/rbtree.h`](srctree/include/linux/rbtree.h)
//!
//! [`RBTree`](super::RBTree) owns its nodes and orders them by an [`Ord`] key. Some trees can
//! do neither: their items are objects that others allocate, free and link into lists, and their
//! order is only known during a walk, by a comparison that may look at other objects, fail, or
//! change the tree before the walk can go on (KSM orders its trees by the contents of pages,
//! and drops a node whose page went away when a walk meets it). [`Tree`] is such a tree:
//!
//! - An item embeds [`Links`]; an [`Adapter`] says where.
//! - The tree does not own its items: linking one in is `unsafe`, and the caller promises that
//!   the item stays valid, and in no other tree through the same links, until it is taken out.
//!   In return, the tree hands out its items as shared references, which last as long as the
//!   tree is borrowed: taking an item out needs `&mut` to the tree.
//! - A walk is a [`Position`] moved down the tree one comparison at a time. A position does not
//!   borrow the tree, so that the caller may do anything between two steps, change the tree
//!   included. Instead it remembers the tree's generation, which every change of the tree's shape
//!   replaces: a position taken before a change is refused with `EAGAIN`, and the caller starts
//!   its walk again (C walks do the same with `goto again`).
//! - A walk whose comparisons leave the tree alone can borrow it instead ([`Tree::find`]): it
//!   reads one child pointer per step, with no generation to check.
//! - Nothing allocates: an item is linked in at the vacant position a walk ended at.
//!
//! # Examples
//!
//! ```
//! use core::{cmp::Ordering, ptr::NonNull};
//! use kernel::{prelude::*, rbtree::intrusive::{Adapter, Links, Tree}};
//!
//! struct Item {
//!     key: u32,
//!     links: Links,
//! }
//!
//! struct ByKey;
//! kernel::impl_intrusive_adapter!(ByKey: Adapter, Links => Item { links });
//!
//! /// Links `item` in by its key, unless an equal key is there.
//! ///
//! /// # Safety
//! ///
//! /// `item` must be valid and in no tree, and stay valid until it is taken out of `tree`.
//! unsafe fn insert_unique(tree: &mut Tree<ByKey>, item: NonNull<Item>) -> Result<bool> {
//!     // SAFETY: `item` is valid.
//!     let key = unsafe { item.as_ref() }.key;
//!     let mut pos = tree.root();
//!     while let Some(other) = tree.item_at(&pos)? {
//!         match key.cmp(&other.key) {
//!             Ordering::Equal => return Ok(false),
//!             ord => tree.descend(&mut pos, ord)?,
//!         }
//!     }
//!     // SAFETY: As the caller guarantees.
//!     unsafe { tree.insert(&pos, item) }?;
//!     Ok(true)
//! }
//!
//! let items = [1u32, 5, 3, 5].map(|key| Item { key, links: Links::new() });
//! let mut tree = Tree::<ByKey>::new();
//! let mut added = 0;
//! for item in items.iter() {
//!     // SAFETY: Every item is in no tree, outlives the tree, and is only read.
//!     added += u32::from(unsafe { insert_unique(&mut tree, NonNull::from(item)) }?);
//! }
//! assert_eq!(added, 3);
//! let mut keys = KVec::new();
//! let mut cur = tree.first();
//! while let Some(item) = cur {
//!     keys.push(item.key, GFP_KERNEL)?;
//!     // SAFETY: `item` is in the tree.
//!     cur = unsafe { tree.next(item) };
//! }
//! assert_eq!(&keys[..], &[1, 3, 5]);
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    error::{code::*, Result},
    sync::atomic::{Atomic, Relaxed},
    types::Opaque,
};
use core::{cmp::Ordering, marker::PhantomData, ptr::NonNull};

/// The links of an item in a [`Tree`] (C: `struct rb_node`).
///
/// While the item is in a tree, the C red-black tree code owns them; otherwise they mean
/// nothing.
#[repr(transparent)]
pub struct Links(Opaque<bindings::rb_node>);

impl Links {
    /// The links of an item that is in no tree.
    pub const fn new() -> Self {
        Self(Opaque::zeroed())
    }
}

impl Default for Links {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the [`Links`] of a tree's items are.
///
/// One item type may have several adapters, for links into different trees; two adapters may
/// even name the same links (a union of the links of structures that an item is in one at a
/// time), as long as the item is in one of their trees at a time.
///
/// [`impl_intrusive_adapter!`](crate::impl_intrusive_adapter) implements it for a plain field,
/// without `unsafe`.
///
/// # Safety
///
/// Every `Item` has a [`Links`] (or a `ManuallyDrop<Links>`) at byte offset `OFFSET`.
pub unsafe trait Adapter {
    /// The items of the tree.
    type Item;
    /// The byte offset of the links in an item (`core::mem::offset_of!`).
    const OFFSET: usize;
}

/// Implements the `Adapter` trait of an intrusive structure ([`Adapter`] here,
/// [`hlist::Adapter`](crate::hlist::Adapter)) for the links in field `$field` of `$item`,
/// checking that the field's type is `$links`.
///
/// Fields of unions, or nested ones, need a hand-written `unsafe impl`.
///
/// # Examples
///
/// ```
/// use kernel::rbtree::intrusive::{Adapter, Links};
///
/// struct Item {
///     key: u32,
///     links: Links,
/// }
///
/// struct ByKey;
/// kernel::impl_intrusive_adapter!(ByKey: Adapter, Links => Item { links });
/// ```
#[macro_export]
macro_rules! impl_intrusive_adapter {
    ($adapter:ty: $trait:path, $links:ty => $item:ty { $field:ident }) => {
        // SAFETY: `$field` is a field of every `$item`, of type `$links` (checked below), at the
        // offset given.
        unsafe impl $trait for $adapter {
            type Item = $item;
            const OFFSET: usize = ::core::mem::offset_of!($item, $field);
        }
        const _: fn(&$item) -> &$links = |item| &item.$field;
    };
}

/// A source of generations: values that no tree had before.
///
/// One counter for all trees, so that a position of one tree is never taken for one of
/// another. It is 64 bits wide: at one change per nanosecond it would wrap after 584 years.
/// Every change of every tree updates this one cache line; the changes of a tree are serialized
/// by its owner's lock anyway, and are rare next to the walks that find where to make them.
static NEXT_GENERATION: Atomic<u64> = Atomic::new(0);

fn new_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Relaxed)
}

/// An intrusive red-black tree whose order is the caller's.
///
/// # Invariants
///
/// - `root` is a valid C red-black tree, whose nodes are the links (at `A::OFFSET`) of valid
///   `A::Item`s that are linked into no other tree through these links.
/// - `generation` was never held by another tree or by this one before its last change of shape:
///   a [`Position`] with this generation was computed on this tree as it is.
pub struct Tree<A: Adapter> {
    root: bindings::rb_root,
    generation: u64,
    _items: PhantomData<*mut A::Item>,
}

/// Which child of its parent a vacant [`Position`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// A place in a [`Tree`]: an item, or a vacant child where an item would be linked in.
///
/// A position does not borrow its tree; it is refused (with `EAGAIN`) by a tree whose shape
/// changed since the position was computed, and by any other tree.
///
/// # Invariants
///
/// If the tree with generation `generation` is unchanged, `parent` is null (the place is the
/// root) or a node of that tree, and `side` says which of its children the place is.
pub struct Position<A: Adapter> {
    generation: u64,
    parent: *mut bindings::rb_node,
    side: Side,
    _tree: PhantomData<*const Tree<A>>,
}

/// Where [`Tree::find`] or [`Tree::find_keyed`] ended, in a tree borrowed for `'t`.
pub enum Found<'t, A: Adapter> {
    /// An item equal to the key looked for.
    Item(&'t A::Item),
    /// The vacant place for the key, where [`Tree::insert`] links an item in.
    Vacant(Position<A>),
}

impl<A: Adapter> Tree<A> {
    /// An empty tree.
    pub fn new() -> Self {
        // INVARIANT: An empty tree; a generation no tree had.
        Self {
            root: bindings::rb_root {
                rb_node: core::ptr::null_mut(),
            },
            generation: new_generation(),
            _items: PhantomData,
        }
    }

    /// Whether the tree has no items.
    pub fn is_empty(&self) -> bool {
        self.root.rb_node.is_null()
    }

    /// The links of `item` as a C tree node (no access to the item).
    fn node_of(item: NonNull<A::Item>) -> *mut bindings::rb_node {
        // `Links` is a transparent `rb_node` at `OFFSET` in the item (`Adapter`).
        item.as_ptr()
            .cast::<u8>()
            .wrapping_add(A::OFFSET)
            .cast::<bindings::rb_node>()
    }

    /// The item whose links are `node`.
    ///
    /// # Safety
    ///
    /// `node` must be a node of this tree.
    unsafe fn item_of(node: NonNull<bindings::rb_node>) -> NonNull<A::Item> {
        let item = node
            .as_ptr()
            .cast::<u8>()
            .wrapping_sub(A::OFFSET)
            .cast::<A::Item>();
        // SAFETY: `node` is the links of an item of this tree (type invariant), at `A::OFFSET`
        // in it, so `item` is that item's address, which is not null.
        unsafe { NonNull::new_unchecked(item) }
    }

    /// The item whose links are `node`, borrowed for as long as the tree is.
    ///
    /// # Safety
    ///
    /// `node` must be a node of this tree.
    unsafe fn item_of_ref(&self, node: NonNull<bindings::rb_node>) -> &A::Item {
        // SAFETY: As the caller guarantees, `node` is a node of this tree, so the links of a
        // valid item that may be borrowed shared while it is in the tree (the promise made to
        // `insert()`). It stays in the tree while `self` is borrowed: taking it out needs
        // `&mut self`.
        unsafe { Self::item_of(node).as_ref() }
    }

    /// As [`Tree::item_of_ref`], if `node` is not null.
    ///
    /// # Safety
    ///
    /// `node` must be null or a node of this tree.
    unsafe fn item_or_none(&self, node: *mut bindings::rb_node) -> Option<&A::Item> {
        // SAFETY: As the caller guarantees.
        NonNull::new(node).map(|node| unsafe { self.item_of_ref(node) })
    }

    /// Gives the tree a new generation: positions taken before are refused.
    fn changed(&mut self) {
        // INVARIANT: A generation no tree had (the counter does not wrap in practice).
        self.generation = new_generation();
    }

    /// Fails with `EAGAIN` unless `pos` is a position in this tree as it is.
    fn check(&self, pos: &Position<A>) -> Result {
        if pos.generation != self.generation {
            return Err(EAGAIN);
        }
        Ok(())
    }

    /// The child pointer of the tree's C nodes that `pos` is, in the tree whose root is `root`.
    ///
    /// # Safety
    ///
    /// `root` must be the root of a tree that `pos` is a current position of (`check()`).
    unsafe fn link(root: *mut bindings::rb_root, pos: &Position<A>) -> *mut *mut bindings::rb_node {
        if pos.parent.is_null() {
            // SAFETY: `root` is valid; computing the address of its field reads nothing.
            return unsafe { &raw mut (*root).rb_node };
        }
        // By the invariant of `Position` (a current position), `pos.parent` is a node of the
        // tree: computing the address of one of its fields reads nothing.
        match pos.side {
            // SAFETY: `pos.parent` is valid, as above.
            Side::Left => unsafe { &raw mut (*pos.parent).rb_left },
            // SAFETY: `pos.parent` is valid, as above.
            Side::Right => unsafe { &raw mut (*pos.parent).rb_right },
        }
    }

    /// The node at `pos`, or null.
    fn node_at(&self, pos: &Position<A>) -> Result<*mut bindings::rb_node> {
        self.check(pos)?;
        // SAFETY: `pos` is current; the pointer is only read.
        let link = unsafe { Self::link((&raw const self.root).cast_mut(), pos) };
        // SAFETY: `link` is the root pointer or a child pointer of a node of this tree, which
        // is not changing while we hold a shared reference to it.
        Ok(unsafe { *link })
    }

    /// The place of the tree's root: where every walk starts.
    pub fn root(&self) -> Position<A> {
        // INVARIANT: The root, in this tree as it is.
        Position {
            generation: self.generation,
            parent: core::ptr::null_mut(),
            side: Side::Left,
            _tree: PhantomData,
        }
    }

    /// The item at `pos`, or `None` if the place is vacant; `EAGAIN` if the tree changed since
    /// `pos` was computed.
    pub fn item_at(&self, pos: &Position<A>) -> Result<Option<&A::Item>> {
        let node = self.node_at(pos)?;
        // SAFETY: `node_at()` reads a child pointer of this tree: null or a node of it.
        Ok(unsafe { self.item_or_none(node) })
    }

    /// Moves `pos` from an item to its left child if the key looked for is less than the item
    /// (`ord` is `Less`), or else to its right child; `EAGAIN` if the tree changed since `pos`
    /// was computed. A vacant position stays where it is.
    pub fn descend(&self, pos: &mut Position<A>, ord: Ordering) -> Result {
        let node = self.node_at(pos)?;
        if !node.is_null() {
            // INVARIANT: `node` is a node of this tree, which is as it was at `generation`.
            pos.parent = node;
            pos.side = if ord == Ordering::Less {
                Side::Left
            } else {
                Side::Right
            };
        }
        Ok(())
    }

    /// Walks down from the root to the item that `cmp` calls equal to the key looked for, or to
    /// the vacant place for that key. `cmp` orders the key against an item (`Less`: the key
    /// goes to the item's left); its first error ends the walk.
    ///
    /// The tree is borrowed for the whole walk, so it cannot change: each step reads one child
    /// pointer, and the vacant [`Position`] returned is current until the tree changes. `cmp` is
    /// called with items of this tree only, which stay in it while the walk lasts. Use
    /// [`Tree::item_at`] and [`Tree::descend`] for a walk that lets the tree change between two
    /// steps.
    pub fn find<E>(
        &self,
        mut cmp: impl FnMut(&A::Item) -> Result<Ordering, E>,
    ) -> Result<Found<'_, A>, E> {
        let mut parent: *mut bindings::rb_node = core::ptr::null_mut();
        let mut side = Side::Left;
        let mut node = self.root.rb_node;
        while let Some(n) = NonNull::new(node) {
            // SAFETY: `n` is the root or a child of a node of this tree: a node of it (type
            // invariant), and the tree does not change while we borrow it.
            let item = unsafe { self.item_of_ref(n) };
            let ord = cmp(item)?;
            if ord == Ordering::Equal {
                return Ok(Found::Item(item));
            }
            parent = node;
            side = if ord == Ordering::Less {
                Side::Left
            } else {
                Side::Right
            };
            // SAFETY: `n` is a valid node of this tree, as above; its child pointers are read only.
            node = unsafe {
                match side {
                    Side::Left => (*n.as_ptr()).rb_left,
                    Side::Right => (*n.as_ptr()).rb_right,
                }
            };
        }
        // INVARIANT: A vacant child of `parent`, a node of this tree (or the root's place), in
        // the tree as it is: it did not change while borrowed.
        Ok(Found::Vacant(Position {
            generation: self.generation,
            parent,
            side,
            _tree: PhantomData,
        }))
    }

    /// Walks down the tree as [`Tree::find`] does, for a tree ordered first by a key that each
    /// item holds (a checksum, say), then, among items of equal keys, by `cmp`.
    ///
    /// `key_of` gives an item's key, which the walk compares with `key` itself (`key < k`: `key`
    /// goes to the item's left); `cmp` is called only for the items whose key is neither less
    /// nor greater than `key`, and its first error ends the walk. Both are called with items of
    /// this tree only, which stay in it while the walk lasts. The walk ends where
    /// [`Tree::find`] would, with a `cmp` that compared the keys first.
    pub fn find_keyed<K: Ord, E>(
        &self,
        key: K,
        mut key_of: impl FnMut(&A::Item) -> K,
        mut cmp: impl FnMut(&A::Item) -> Result<Ordering, E>,
    ) -> Result<Found<'_, A>, E> {
        let mut parent: *mut bindings::rb_node = core::ptr::null_mut();
        let mut left = true;
        let mut node = self.root.rb_node;
        while let Some(n) = NonNull::new(node) {
            // SAFETY: `n` is the root or a child of a node of this tree: a node of it (type
            // invariant), and the tree does not change while we borrow it.
            let item = unsafe { self.item_of_ref(n) };
            // `<` and `>` rather than `Ord::cmp()`, which measured slower: the compiler
            // branches on the flags of the comparison instead of building an `Ordering`.
            let k = key_of(item);
            left = if key < k {
                true
            } else if key > k {
                false
            } else {
                match cmp(item)? {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => return Ok(Found::Item(item)),
                }
            };
            parent = node;
            // SAFETY: `n` is a valid node of this tree, as above; its child pointers are read only.
            node = unsafe {
                if left {
                    (*n.as_ptr()).rb_left
                } else {
                    (*n.as_ptr()).rb_right
                }
            };
        }
        // INVARIANT: A vacant child of `parent`, a node of this tree (or the root's place), in
        // the tree as it is: it did not change while borrowed.
        Ok(Found::Vacant(Position {
            generation: self.generation,
            parent,
            side: if left { Side::Left } else { Side::Right },
            _tree: PhantomData,
        }))
    }

    /// Links `item` in at the vacant position `pos`, and rebalances (`rb_link_node()`,
    /// `rb_insert_color()`).
    ///
    /// Fails with `EAGAIN` if the tree changed since `pos` was computed, and with `EEXIST` if
    /// the place is not vacant; then nothing changes.
    ///
    /// The order is the caller's business: a position found by a walk for the item's key keeps
    /// the tree in order. A tree out of order (its items' keys changed) is still a valid tree;
    /// walks just find what they find.
    ///
    /// # Safety
    ///
    /// `item` must be valid and must not be in a tree through the links `A` names. Until it is
    /// taken out of this tree (by [`Tree::remove`], [`Tree::replace`], [`Tree::clear`] or
    /// [`Tree::clear_each`]) or the tree is dropped, the item must stay valid, must not move,
    /// must not be borrowed mutably (the tree hands it out as `&A::Item`, for as long as the tree
    /// is borrowed), and its links must be accessed only by this tree.
    pub unsafe fn insert(&mut self, pos: &Position<A>, item: NonNull<A::Item>) -> Result {
        if !self.node_at(pos)?.is_null() {
            return Err(EEXIST);
        }
        let node = Self::node_of(item);
        let root = &raw mut self.root;
        // SAFETY: `pos` is current (`node_at()` checked), and `root` is this tree's root.
        let link = unsafe { Self::link(root, pos) };
        // SAFETY: `link` is a vacant child pointer of `pos.parent` (or the root pointer) in this
        // tree, which we hold exclusively; `node` is the links of a valid item in no tree, which
        // stays valid while linked (the caller's promise).
        unsafe {
            bindings::rb_link_node(node, pos.parent, link);
            bindings::rb_insert_color(node, root);
        }
        // INVARIANT: The item is valid and linked in this tree only; positions are refused.
        self.changed();
        Ok(())
    }

    /// Takes `item` out of the tree, and rebalances (`rb_erase()`).
    ///
    /// # Safety
    ///
    /// `item` must be in this tree.
    pub unsafe fn remove(&mut self, item: NonNull<A::Item>) {
        // SAFETY: `item` is in this tree, which we hold exclusively.
        unsafe { bindings::rb_erase(Self::node_of(item), &raw mut self.root) };
        // INVARIANT: The other items are still linked, and only in this tree; positions are
        // refused.
        self.changed();
    }

    /// Puts `new` in the place of `old`, which leaves the tree (`rb_replace_node()`).
    ///
    /// No rebalancing is done: `new` should have the place of `old` in the order.
    ///
    /// # Safety
    ///
    /// `old` must be in this tree, and `new` as for [`Tree::insert`].
    pub unsafe fn replace(&mut self, old: NonNull<A::Item>, new: NonNull<A::Item>) {
        let root = &raw mut self.root;
        // SAFETY: `old` is in this tree, which we hold exclusively; `new` is a valid item in no
        // tree, which stays valid and linked through this tree only while in it.
        unsafe { bindings::rb_replace_node(Self::node_of(old), Self::node_of(new), root) };
        // INVARIANT: `new` is linked instead of `old`, in this tree only. The shape is the same,
        // but a position may have `old` as its parent: positions are refused.
        self.changed();
    }

    /// Forgets every item: the tree is empty, and its items in no tree, without a look at them
    /// (their links are left as they were, and mean nothing any more).
    pub fn clear(&mut self) {
        // INVARIANT: An empty tree.
        self.root.rb_node = core::ptr::null_mut();
        self.changed();
    }

    /// Empties the tree, handing each of its items to `f` first, children before their parents
    /// (`rbtree_postorder_for_each_entry_safe()`).
    ///
    /// The walk does not look at an item again once `f` has it: the item is out of the tree
    /// from then on, and `f` may reuse its links. Nothing is rebalanced, which makes this cheaper
    /// than removing the items one by one. `f` borrows each item for the call only; to free the
    /// items, free them once the tree is empty, through the pointers that were inserted, or
    /// through an allocator that recovers the provenance of the allocation (as
    /// [`CacheBox::from_raw`](crate::slab::CacheBox::from_raw) does): a pointer derived from
    /// the reference may not free the item.
    pub fn clear_each(&mut self, mut f: impl FnMut(&A::Item)) {
        // SAFETY: The root is valid; the walk reads the tree's nodes only.
        let mut node = unsafe { bindings::rb_first_postorder(&raw const self.root) };
        while let Some(n) = NonNull::new(node) {
            // The next node in post order is found from `n`'s parent, read before `f` may reuse
            // `n`'s links; it is never a descendant of `n`, all of which came before.
            // SAFETY: `n` is a node of this tree (type invariant).
            node = unsafe { bindings::rb_next_postorder(n.as_ptr()) };
            // SAFETY: As above: the links of a valid item that may be borrowed shared, for the
            // call (the promises made to `insert()`).
            f(unsafe { Self::item_of(n).as_ref() });
        }
        self.clear();
    }

    /// The first item in order (`rb_first()`).
    pub fn first(&self) -> Option<&A::Item> {
        // SAFETY: A valid tree (type invariant), not changing while we hold a reference to it;
        // `rb_first()` returns null or one of its nodes.
        unsafe { self.item_or_none(bindings::rb_first(&raw const self.root)) }
    }

    /// The item after `item` in order (`rb_next()`).
    ///
    /// # Safety
    ///
    /// `item` must be in this tree.
    pub unsafe fn next(&self, item: &A::Item) -> Option<&A::Item> {
        let node = Self::node_of(NonNull::from(item));
        // SAFETY: `item` is in this tree, which is not changing while we hold a reference to it;
        // `rb_next()` returns null or one of its nodes.
        unsafe { self.item_or_none(bindings::rb_next(node)) }
    }
}

impl<A: Adapter> Default for Tree<A> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(CONFIG_RUST_RBTREE_INTRUSIVE_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_rbtree_intrusive)]
mod tests {
    use super::*;
    use crate::prelude::*;

    struct Item {
        key: u32,
        links: Links,
        other: Links,
    }

    struct ByKey;
    crate::impl_intrusive_adapter!(ByKey: Adapter, Links => Item { links });

    // The same items, in another tree.
    struct Other;
    crate::impl_intrusive_adapter!(Other: Adapter, Links => Item { other });

    /// Walks `tree` for `k`: the equal item, or the vacant position for it.
    fn find<A: Adapter<Item = Item>>(
        tree: &Tree<A>,
        k: u32,
    ) -> Result<core::result::Result<NonNull<Item>, Position<A>>> {
        let mut pos = tree.root();
        while let Some(item) = tree.item_at(&pos)? {
            match k.cmp(&item.key) {
                Ordering::Equal => return Ok(Ok(NonNull::from(item))),
                ord => tree.descend(&mut pos, ord)?,
            }
        }
        Ok(Err(pos))
    }

    fn keys<A: Adapter<Item = Item>>(tree: &Tree<A>) -> Result<KVec<u32>> {
        let mut v = KVec::new();
        let mut cur = tree.first();
        while let Some(item) = cur {
            v.push(item.key, GFP_KERNEL)?;
            // SAFETY: `item` is in `tree`.
            cur = unsafe { tree.next(item) };
        }
        Ok(v)
    }

    fn items(n: u32) -> Result<KVec<Item>> {
        let mut v = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for i in 0..n {
            // A permutation of 0..n (n < 7919, a prime).
            let key = (i * 7919) % n;
            v.push(
                Item {
                    key,
                    links: Links::new(),
                    other: Links::new(),
                },
                GFP_KERNEL,
            )?;
        }
        Ok(v)
    }

    #[test]
    fn insert_in_order_and_find() -> Result {
        const N: u32 = 1000;
        let v = items(N)?;
        let mut tree = Tree::<ByKey>::new();
        assert!(tree.is_empty() && tree.first().is_none());
        for item in v.iter() {
            let k = item.key;
            let Err(pos) = find(&tree, k)? else {
                return Err(EINVAL);
            };
            // SAFETY: The item is in no tree and outlives the tree.
            unsafe { tree.insert(&pos, NonNull::from(item)) }?;
        }
        let k = keys(&tree)?;
        assert_eq!(k.len(), N as usize);
        assert!(k.iter().enumerate().all(|(i, &k)| k == i as u32));
        for k in 0..N {
            let found = find(&tree, k)?.map_err(|_| EINVAL)?;
            // SAFETY: An item of the tree; the tests' items outlive their trees.
            assert_eq!(unsafe { found.as_ref() }.key, k);
        }
        assert!(find(&tree, N)?.is_err());
        Ok(())
    }

    #[test]
    fn find_keyed_compares_keys_first() -> Result {
        const N: u32 = 300;
        let v = items(N)?;
        let mut tree = Tree::<ByKey>::new();
        // Ordered by key / 4, then by key; only the even keys are in the tree, so that odd keys
        // fall between two items, and a quarter key has two items.
        let key_of = |item: &Item| item.key / 4;
        for item in v.iter().filter(|i| i.key % 2 == 0) {
            let mut c = 0;
            let Found::Vacant(pos) = tree_find_keyed(&tree, item.key, key_of, &mut c)? else {
                return Err(EINVAL);
            };
            // SAFETY: The item is in no tree and outlives the tree.
            unsafe { tree.insert(&pos, NonNull::from(item)) }?;
        }
        let k = keys(&tree)?;
        assert!(k.len() == N as usize / 2 && k.iter().enumerate().all(|(i, &k)| k == 2 * i as u32));
        let by = |k: u32| move |item: &Item| -> Result<Ordering> { Ok(k.cmp(&item.key)) };
        for k in 0..N + 8 {
            let mut c = 0;
            let keyed = tree_find_keyed(&tree, k, key_of, &mut c)?;
            // At most the two items of the quarter key are compared, none if it has none.
            assert!(c <= 2 && (c == 0) == (k / 4 >= N / 4));
            // Where find() ends with a comparison of the whole order.
            let agree = match (keyed, tree.find(by(k))?) {
                (Found::Item(a), Found::Item(b)) => core::ptr::eq(a, b) && k % 2 == 0 && a.key == k,
                (Found::Vacant(a), Found::Vacant(b)) => {
                    (k % 2 == 1 || k >= N)
                        && a.generation == b.generation
                        && a.parent == b.parent
                        && a.side == b.side
                }
                _ => false,
            };
            assert!(agree);
        }
        // The first error of the comparison ends the walk.
        let mut steps = 0;
        let r = tree.find_keyed(0, key_of, |_| {
            steps += 1;
            Err::<Ordering, _>(EBUSY)
        });
        assert!(matches!(r, Err(e) if e == EBUSY) && steps == 1);
        Ok(())
    }

    /// Walks `tree` for `k` with [`Tree::find_keyed`], ordered by `k / 4` and then by `k`,
    /// counting the calls of the comparison, which must only see items of the quarter key.
    fn tree_find_keyed<'t>(
        tree: &'t Tree<ByKey>,
        k: u32,
        key_of: impl Fn(&Item) -> u32,
        calls: &mut u32,
    ) -> Result<Found<'t, ByKey>> {
        tree.find_keyed(k / 4, key_of, |item: &Item| -> Result<Ordering> {
            *calls += 1;
            let other = item.key;
            assert_eq!(other / 4, k / 4);
            Ok(k.cmp(&other))
        })
    }

    #[test]
    fn find_walks_and_inserts() -> Result {
        const N: u32 = 300;
        let v = items(N)?;
        let mut tree = Tree::<ByKey>::new();
        let by = |k: u32| move |item: &Item| -> Result<Ordering> { Ok(k.cmp(&item.key)) };
        for item in v.iter() {
            let Found::Vacant(pos) = tree.find(by(item.key))? else {
                return Err(EINVAL);
            };
            // SAFETY: The item is in no tree and outlives the tree.
            unsafe { tree.insert(&pos, NonNull::from(item)) }?;
        }
        let k = keys(&tree)?;
        assert!(k.len() == N as usize && k.iter().enumerate().all(|(i, &k)| k == i as u32));
        for k in 0..N {
            let Found::Item(item) = tree.find(by(k))? else {
                return Err(EINVAL);
            };
            assert_eq!(item.key, k);
        }
        let Found::Vacant(pos) = tree.find(by(N))? else {
            return Err(EINVAL);
        };
        // The position is current until the tree changes.
        assert!(tree.item_at(&pos)?.is_none());
        // SAFETY: `v[0]` is in the tree.
        unsafe { tree.remove(NonNull::from(&v[0])) };
        assert!(tree.item_at(&pos).is_err());
        // The first error of the comparison ends the walk.
        let mut steps = 0;
        let r = tree.find(|_| {
            steps += 1;
            Err::<Ordering, _>(EBUSY)
        });
        assert!(matches!(r, Err(e) if e == EBUSY) && steps == 1);
        Ok(())
    }

    #[test]
    fn clear_each_visits_every_item() -> Result {
        const N: u32 = 100;
        let v = items(N)?;
        let mut tree = Tree::<ByKey>::new();
        for item in v.iter() {
            let key = item.key;
            let Found::Vacant(pos) =
                tree.find(|i: &Item| -> Result<Ordering> { Ok(key.cmp(&i.key)) })?
            else {
                return Err(EINVAL);
            };
            // SAFETY: The item is in no tree and outlives the tree.
            unsafe { tree.insert(&pos, NonNull::from(item)) }?;
        }
        let mut seen = KVec::with_capacity(N as usize, GFP_KERNEL)?;
        let root = tree.root();
        tree.clear_each(|i| {
            let _ = seen.push(i.key, GFP_KERNEL);
        });
        seen.sort_unstable();
        assert!(seen.len() == N as usize && seen.iter().enumerate().all(|(i, &k)| k == i as u32));
        // Empty, and positions taken before are stale.
        assert!(tree.is_empty() && tree.item_at(&root).is_err());
        Ok(())
    }

    #[test]
    fn positions_go_stale() -> Result {
        let v = items(3)?;
        let (a, rest) = v.split_at(1);
        let (b, c) = rest.split_at(1);
        let mut tree = Tree::<ByKey>::new();
        let Err(pos) = find(&tree, a[0].key)? else {
            return Err(EINVAL);
        };
        // SAFETY: In no tree, outlives the tree.
        unsafe { tree.insert(&pos, NonNull::from(&a[0])) }?;
        // The position was vacant before the insertion; now it is refused, and nothing changes.
        // SAFETY: As above.
        let r = unsafe { tree.insert(&pos, NonNull::from(&b[0])) };
        assert_eq!(r, Err(EAGAIN));
        assert_eq!(tree.item_at(&pos).err(), Some(EAGAIN));
        let mut p = pos;
        assert_eq!(tree.descend(&mut p, Ordering::Less), Err(EAGAIN));
        assert_eq!(keys(&tree)?.len(), 1);
        // A current position on an item is not vacant.
        // SAFETY: As above.
        let r = unsafe { tree.insert(&tree.root(), NonNull::from(&b[0])) };
        assert_eq!(r, Err(EEXIST));
        // A position of another tree is refused, even one with the same shape.
        let other = Tree::<ByKey>::new();
        assert_eq!(tree.item_at(&other.root()).err(), Some(EAGAIN));
        // Clearing is a change too.
        let root = tree.root();
        assert!(tree.item_at(&root)?.is_some());
        tree.clear();
        assert!(tree.is_empty());
        assert_eq!(tree.item_at(&root).err(), Some(EAGAIN));
        // The cleared item can go in again.
        for item in [&a[0], &b[0], &c[0]] {
            let Err(pos) = find(&tree, item.key)? else {
                return Err(EINVAL);
            };
            // SAFETY: In no tree, outlives the tree.
            unsafe { tree.insert(&pos, NonNull::from(item)) }?;
        }
        assert_eq!(&keys(&tree)?[..], &[0, 1, 2]);
        Ok(())
    }

    #[test]
    fn remove_and_replace() -> Result {
        const N: u32 = 200;
        let v = items(N)?;
        let mut spare = Item {
            key: 0,
            links: Links::new(),
            other: Links::new(),
        };
        let mut tree = Tree::<ByKey>::new();
        for item in v.iter() {
            let Err(pos) = find(&tree, item.key)? else {
                return Err(EINVAL);
            };
            // SAFETY: In no tree, outlives the tree.
            unsafe { tree.insert(&pos, NonNull::from(item)) }?;
        }
        // Take out the odd keys, walking in order and reading each successor first.
        let mut cur = tree.first();
        while let Some(item) = cur {
            // SAFETY: `item` is in the tree.
            let next = unsafe { tree.next(item) }.map(NonNull::from);
            if item.key % 2 == 1 {
                let item = NonNull::from(item);
                // SAFETY: `item` is in the tree.
                unsafe { tree.remove(item) };
            }
            // SAFETY: The tests' items outlive their trees; `next` is still in the tree.
            cur = next.map(|n| unsafe { n.as_ref() });
        }
        let k = keys(&tree)?;
        assert_eq!(k.len(), N as usize / 2);
        assert!(k.iter().enumerate().all(|(i, &k)| k == 2 * i as u32));
        // Replace the item of key 100 by another of the same key.
        let old = find(&tree, 100)?.map_err(|_| EINVAL)?;
        spare.key = 100;
        let spare = NonNull::from(&mut spare);
        let pos = tree.root();
        // SAFETY: `old` is in the tree; `spare` is in none, has its place and outlives the tree.
        unsafe { tree.replace(old, spare) };
        assert_eq!(tree.item_at(&pos).err(), Some(EAGAIN));
        let found = find(&tree, 100)?.map_err(|_| EINVAL)?;
        assert_eq!(found, spare);
        assert_eq!(keys(&tree)?.len(), N as usize / 2);
        // Empty it.
        while let Some(item) = tree.first().map(NonNull::from) {
            // SAFETY: `item` is in the tree.
            unsafe { tree.remove(item) };
        }
        assert!(tree.is_empty());
        Ok(())
    }

    #[test]
    fn two_trees_through_two_links() -> Result {
        let v = items(50)?;
        let mut by_key = Tree::<ByKey>::new();
        let mut reversed = Tree::<Other>::new();
        for item in v.iter() {
            let k = item.key;
            let item = NonNull::from(item);
            let Err(pos) = find(&by_key, k)? else {
                return Err(EINVAL);
            };
            // SAFETY: In no tree through `links`, outlives the tree.
            unsafe { by_key.insert(&pos, item) }?;
            // The other tree is in reverse order.
            let mut pos = reversed.root();
            while let Some(other) = reversed.item_at(&pos)? {
                let other = other.key;
                reversed.descend(&mut pos, other.cmp(&k))?;
            }
            // SAFETY: In no tree through `other`, outlives the tree.
            unsafe { reversed.insert(&pos, item) }?;
        }
        let a = keys(&by_key)?;
        let b = keys(&reversed)?;
        assert_eq!(a.len(), 50);
        assert!(a.iter().zip(b.iter().rev()).all(|(x, y)| x == y));
        Ok(())
    }
}
