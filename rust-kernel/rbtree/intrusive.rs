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
//! - An item embeds [`Links`]; an [`Adapter`] says where, and whether the item is in a tree
//!   (by default, from the links themselves).
//! - The tree does not own its items. Their owner promises, once, in an `unsafe impl` of
//!   [`Anchored`] for the adapter, that an item in a tree stays valid and in place, and that
//!   the trees of the adapter are used by one thread at a time. With that, linking and
//!   unlinking are safe: the tree refuses an item that is in a tree already, and takes out only
//!   its own items. It hands out its items as shared references, which last as long as the
//!   tree is borrowed.
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
//! use core::cmp::Ordering;
//! use kernel::{prelude::*, rbtree::intrusive::{Adapter, Anchored, Links, Tree}};
//!
//! struct Item {
//!     key: u32,
//!     links: Links,
//! }
//!
//! struct ByKey;
//! kernel::impl_intrusive_adapter!(ByKey: Adapter, Links => Item { links });
//! // SAFETY: The items below outlive the trees, which let them go when dropped, and are only
//! // read; one thread uses the trees.
//! unsafe impl Anchored for ByKey {}
//!
//! /// Links `item` in by its key, unless an equal key is there.
//! fn insert_unique(tree: &mut Tree<ByKey>, item: &Item) -> Result<bool> {
//!     let mut pos = tree.root();
//!     while let Some(other) = tree.item_at(&pos)? {
//!         match item.key.cmp(&other.key) {
//!             Ordering::Equal => return Ok(false),
//!             ord => tree.descend(&mut pos, ord)?,
//!         }
//!     }
//!     tree.insert(&pos, item)?;
//!     Ok(true)
//! }
//!
//! let items = [1u32, 5, 3, 5].map(|key| Item { key, links: Links::new() });
//! let mut tree = Tree::<ByKey>::new();
//! let mut added = 0;
//! for item in items.iter() {
//!     added += u32::from(insert_unique(&mut tree, item)?);
//! }
//! assert_eq!(added, 3);
//! // An item in the tree is refused, even at a vacant place.
//! let mut pos = tree.root();
//! while tree.item_at(&pos)?.is_some() {
//!     tree.descend(&mut pos, Ordering::Less)?;
//! }
//! assert_eq!(tree.insert(&pos, &items[0]), Err(EBUSY));
//! let mut keys = KVec::new();
//! let mut cur = tree.first();
//! while let Some(item) = cur {
//!     keys.push(item.key, GFP_KERNEL)?;
//!     cur = tree.next(item);
//! }
//! assert_eq!(&keys[..], &[1, 3, 5]);
//! // The second 5 is in no tree: it cannot be taken out.
//! assert_eq!(tree.remove(&items[3]), Err(ENOENT));
//! tree.remove(&items[1])?;
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
/// While the item is in a tree, the C red-black tree code owns them. With a default
/// [`Adapter`], they are zeroed when the item leaves its tree, so that they say whether their
/// item is in a tree: a node in a tree has a parent or is the black root, and so never a zero
/// `__rb_parent_color`.
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

/// Where the [`Links`] of a tree's items are, and whether an item is in a tree.
///
/// One item type may have several adapters, for links into different trees. Two adapters may
/// even name the same links, or links that overlap other data (a union of the links of
/// structures that an item is in one at a time): such adapters keep in the item where it is
/// linked, by overriding [`Adapter::is_linked`], [`Adapter::is_free`] and
/// [`Adapter::set_linked`]. The defaults read the links themselves, which is right for links
/// that only trees use.
///
/// [`impl_intrusive_adapter!`](crate::impl_intrusive_adapter) implements it for a plain field,
/// without `unsafe`. Trees link items in only for adapters that are also [`Anchored`].
///
/// # Safety
///
/// - Every `Item` has a [`Links`] (or a `ManuallyDrop<Links>`) at byte offset `OFFSET`, aligned.
/// - [`Adapter::is_linked`] is `true` exactly while the item is in a tree through these links,
///   of this adapter or of another that names them: from the call of [`Adapter::set_linked`]
///   with `true` that a tree makes when it links the item in, to the one with `false` when it
///   lets the item go. Nothing else changes it.
/// - [`Adapter::is_free`] is `true` only if the item is in no tree through these links and
///   nothing else uses them or data they overlap.
pub unsafe trait Adapter {
    /// The items of the tree.
    type Item;
    /// The byte offset of the links in an item (`core::mem::offset_of!`).
    const OFFSET: usize;

    /// The links' type, which [`impl_intrusive_adapter!`](crate::impl_intrusive_adapter)
    /// checks a field against: links of another structure's type would be at `OFFSET`. A raw
    /// pointer, which no deref coercion can make of a pointer to a field of another type.
    #[doc(hidden)]
    fn links_type(links: *const Links) -> *const Links {
        links
    }

    /// Whether `item` is in a tree through these links.
    ///
    /// # Safety
    ///
    /// The links may not be changing: the caller excludes changes to the trees of this adapter.
    unsafe fn is_linked(item: &Self::Item) -> bool {
        let node = item_links::<Self>(item);
        // SAFETY: `node` is in the item (`OFFSET`), and not changing (the caller's promise).
        // The links are in an `UnsafeCell`, and only read here.
        unsafe { (*node).__rb_parent_color != 0 }
    }

    /// Whether a tree may link `item` in through these links: it is in no tree through them, and
    /// nothing else uses them.
    ///
    /// # Safety
    ///
    /// As for [`Adapter::is_linked`].
    unsafe fn is_free(item: &Self::Item) -> bool {
        // SAFETY: As the caller guarantees.
        !unsafe { Self::is_linked(item) }
    }

    /// Records that a tree linked `item` in (`true`), or let it go (`false`).
    ///
    /// The default zeroes the links when the item leaves its tree, which is what the default
    /// [`Adapter::is_linked`] reads.
    ///
    /// # Safety
    ///
    /// Only the trees of this module call it, as they link an item in or let it go.
    unsafe fn set_linked(item: &Self::Item, linked: bool) {
        if !linked {
            // SAFETY: The links are in the item, in an `UnsafeCell`, and the tree that let the
            // item go holds them no more (the caller's promise).
            unsafe { core::ptr::write_bytes(item_links::<Self>(item), 0, 1) };
        }
    }
}

/// The links of `item` as a C tree node (no access to the item).
fn item_links<A: Adapter + ?Sized>(item: &A::Item) -> *mut bindings::rb_node {
    // `Links` is a transparent `rb_node` at `OFFSET` in the item (`Adapter`), in an
    // `UnsafeCell` (`Opaque`): it may be written through a pointer derived from `&A::Item`.
    core::ptr::from_ref(item)
        .cast::<u8>()
        .wrapping_add(A::OFFSET)
        .cast::<bindings::rb_node>()
        .cast_mut()
}

/// An [`Adapter`] whose items stay put while they are in a tree: trees link them in and take
/// them out safely, checking [`Adapter::is_free`] and [`Adapter::is_linked`] first.
///
/// The promises below are about every tree of the adapter, so implement it only for an
/// adapter whose trees and items one owner controls (a private type of the owner's module).
///
/// # Safety
///
/// - While an item is in a tree of this adapter ([`Adapter::is_linked`]), it stays valid, does
///   not move, and is not borrowed mutably; nor is it freed or borrowed mutably while a
///   reference to it that such a tree handed out is alive.
/// - The trees of this adapter, and the structures of every other adapter that names the same
///   links or links overlapping them, with the links and records of their items, are changed
///   by one thread at a time, all of them together (for example, under one lock), and the
///   trees of this adapter are used only by a thread that excludes all those changes (that
///   holds the lock): a tree may look at the links of an item of another tree, to tell that it
///   is not its own.
pub unsafe trait Anchored: Adapter {}

/// Implements the `Adapter` trait of an intrusive structure ([`Adapter`] here,
/// [`hlist::Adapter`](crate::hlist::Adapter)) for the links in field `$field` of `$item`,
/// checking that the field's type is `$links`, and that `$links` is the links' type of the
/// trait (`Adapter::links_type`).
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
        // offset given, and aligned (checked below).
        unsafe impl $trait for $adapter {
            type Item = $item;
            const OFFSET: usize = ::core::mem::offset_of!($item, $field);
        }
        // The field is of type `$links`, which is the links' type of `$trait`; and a reference
        // to it may be made, so it is not a field of a packed struct: it is aligned.
        const _: fn(&$item) -> *const $links = |item| {
            let _ = &item.$field;
            <$adapter as $trait>::links_type(&raw const item.$field)
        };
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
/// Dropping a tree lets its items go, as [`Tree::clear`] does.
///
/// # Invariants
///
/// - `root` is a valid C red-black tree, whose nodes are the links (at `A::OFFSET`) of valid
///   `A::Item`s that are linked into no other tree through these links, for which
///   [`Adapter::is_linked`] is `true`. There are none unless `A` is [`Anchored`].
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
        // valid item that may be borrowed shared while it is in the tree, and is not freed while
        // the reference is alive (`Anchored`: there are items only for such adapters).
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

    /// Lets go of `item`: records that it is in no tree.
    ///
    /// # Safety
    ///
    /// `item` must just have been taken out of this tree, and the caller must exclude other uses
    /// of the trees of `A`.
    unsafe fn let_go(item: &A::Item) {
        // SAFETY: No tree holds the item's links any more (the caller's promise): the item is
        // ours to record as in none.
        unsafe { A::set_linked(item, false) };
    }

    /// Empties the tree: every item leaves it, as by [`Tree::clear_each`].
    pub fn clear(&mut self) {
        self.clear_each(|_| {});
    }

    /// Empties the tree, handing each of its items to `f` once it is out, children before
    /// their parents (`rbtree_postorder_for_each_entry_safe()`).
    ///
    /// The walk does not look at an item again once `f` has it: the item is in no tree from
    /// then on, and `f` may link it in again. Nothing is rebalanced, which makes this cheaper
    /// than removing the items one by one. `f` borrows each item for the call only; to free the
    /// items, free them once the tree is empty, through the pointers that were inserted, or
    /// through an allocator that recovers the provenance of the allocation (as
    /// [`CacheBox::from_raw`](crate::slab::CacheBox::from_raw) does): a pointer derived from
    /// the reference may not free the item.
    pub fn clear_each(&mut self, mut f: impl FnMut(&A::Item)) {
        // SAFETY: The root is valid; the walk reads the tree's nodes only.
        let mut node = unsafe { bindings::rb_first_postorder(&raw const self.root) };
        while let Some(n) = NonNull::new(node) {
            // The next node in post order is found from `n`'s parent, read before `n` is let go
            // (and its links, maybe, zeroed or reused); it is never a descendant of `n`, all of
            // which came before, and the walk reads no links of the nodes it let go.
            // SAFETY: `n` is a node of this tree (type invariant).
            node = unsafe { bindings::rb_next_postorder(n.as_ptr()) };
            // SAFETY: `n` is a node of this tree: the links of a valid item, which may be borrowed
            // shared (the promises of `Anchored`: there are items only for such adapters).
            let item = unsafe { Self::item_of(n).as_ref() };
            // INVARIANT: The item is in no tree; the tree no longer reaches it once its root is
            // reset below, and nothing uses the tree meanwhile (`&mut self`).
            // SAFETY: The walk leaves the item; the tree is ours (`&mut self`), and the trees of
            // an `Anchored` adapter are used by one thread at a time.
            unsafe { Self::let_go(item) };
            f(item);
        }
        // INVARIANT: An empty tree.
        self.root.rb_node = core::ptr::null_mut();
        self.changed();
    }

    /// The first item in order (`rb_first()`).
    pub fn first(&self) -> Option<&A::Item> {
        // SAFETY: A valid tree (type invariant), not changing while we hold a reference to it;
        // `rb_first()` returns null or one of its nodes.
        unsafe { self.item_or_none(bindings::rb_first(&raw const self.root)) }
    }
}

impl<A: Anchored> Tree<A> {
    /// Whether `item` is in this tree: it is in a tree of `A`, whose root is this tree's.
    ///
    /// This walks up from the item to its root: it costs the depth of the tree.
    pub fn contains(&self, item: &A::Item) -> bool {
        // SAFETY: The trees of `A` are used by one thread at a time (`Anchored`): this one now.
        if !unsafe { A::is_linked(item) } {
            return false;
        }
        let mut node = item_links::<A>(item);
        loop {
            // SAFETY: `node` is a node of a tree of `A`: the item's links, linked, or one of
            // their ancestors. It is the links of a valid item (`Anchored`), and no tree of `A`
            // changes meanwhile (as above).
            let parent = unsafe { (*node).__rb_parent_color } & !3;
            if parent == 0 {
                break;
            }
            // The parent's address, which C keeps with the colour in the low bits. It was handed
            // to C (`rb_link_node()`), which exposes its provenance.
            node = core::ptr::with_exposed_provenance_mut(parent);
        }
        core::ptr::eq(node, self.root.rb_node)
    }

    /// Links `item` in at the vacant position `pos`, and rebalances (`rb_link_node()`,
    /// `rb_insert_color()`).
    ///
    /// Fails, and then nothing changes, with `EAGAIN` if the tree changed since `pos` was
    /// computed, with `EEXIST` if the place is not vacant, and with `EBUSY` if the item's
    /// links are not free ([`Adapter::is_free`]): it is in a tree already, say.
    ///
    /// The order is the caller's business: a position found by a walk for the item's key keeps
    /// the tree in order. A tree out of order (its items' keys changed) is still a valid tree;
    /// walks just find what they find.
    pub fn insert(&mut self, pos: &Position<A>, item: &A::Item) -> Result {
        if !self.node_at(pos)?.is_null() {
            return Err(EEXIST);
        }
        // SAFETY: The trees of `A` are used by one thread at a time (`Anchored`): this one now.
        if !unsafe { A::is_free(item) } {
            return Err(EBUSY);
        }
        let node = item_links::<A>(item);
        let root = &raw mut self.root;
        // SAFETY: `pos` is current (`node_at()` checked), and `root` is this tree's root.
        let link = unsafe { Self::link(root, pos) };
        // SAFETY: `link` is a vacant child pointer of `pos.parent` (or the root pointer) in this
        // tree, which we hold exclusively; `node` is the free links of a valid item, in an
        // `UnsafeCell`, which stays valid while linked (`Anchored`).
        unsafe {
            bindings::rb_link_node(node, pos.parent, link);
            bindings::rb_insert_color(node, root);
            A::set_linked(item, true);
        }
        // INVARIANT: The item is valid and linked in this tree only, and recorded as linked;
        // positions are refused.
        self.changed();
        Ok(())
    }

    /// Takes `item` out of the tree, and rebalances (`rb_erase()`); `ENOENT` if it is not in
    /// this tree.
    pub fn remove(&mut self, item: &A::Item) -> Result {
        if !self.contains(item) {
            return Err(ENOENT);
        }
        let node = item_links::<A>(item);
        // SAFETY: `item` is in this tree, which we hold exclusively; the trees of `A` are used by
        // one thread at a time.
        unsafe {
            bindings::rb_erase(node, &raw mut self.root);
            Self::let_go(item);
        }
        // INVARIANT: The other items are still linked, and only in this tree; positions are
        // refused.
        self.changed();
        Ok(())
    }

    /// Puts `new` in the place of `old`, which leaves the tree (`rb_replace_node()`).
    ///
    /// No rebalancing is done: `new` should have the place of `old` in the order. Fails, and
    /// then nothing changes, with `ENOENT` if `old` is not in this tree, and with `EBUSY` if
    /// the links of `new` are not free.
    pub fn replace(&mut self, old: &A::Item, new: &A::Item) -> Result {
        if !self.contains(old) {
            return Err(ENOENT);
        }
        // SAFETY: The trees of `A` are used by one thread at a time (`Anchored`): this one now.
        if !unsafe { A::is_free(new) } {
            return Err(EBUSY);
        }
        let root = &raw mut self.root;
        // SAFETY: `old` is in this tree, which we hold exclusively; the links of `new` are free
        // (so `new` is not `old`), in a valid item that stays valid while linked (`Anchored`).
        unsafe {
            bindings::rb_replace_node(item_links::<A>(old), item_links::<A>(new), root);
            A::set_linked(new, true);
            Self::let_go(old);
        }
        // INVARIANT: `new` is linked instead of `old`, in this tree only. The shape is the same,
        // but a position may have `old` as its parent: positions are refused.
        self.changed();
        Ok(())
    }

    /// The item after `item` in order (`rb_next()`); `None` also if `item` is not in this tree.
    ///
    /// This checks that `item` is in this tree ([`Tree::contains`]), which costs the depth of
    /// the tree: a walk in order costs `O(n log n)`.
    pub fn next(&self, item: &A::Item) -> Option<&A::Item> {
        if !self.contains(item) {
            return None;
        }
        // SAFETY: `item` is in this tree, which is not changing while we hold a reference to it;
        // `rb_next()` returns null or one of its nodes.
        unsafe { self.item_or_none(bindings::rb_next(item_links::<A>(item))) }
    }
}

impl<A: Adapter> Drop for Tree<A> {
    fn drop(&mut self) {
        self.clear();
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
    // SAFETY: Each test's items outlive its trees (declared first, dropped last; a dropped tree
    // lets its items go), and are only read; a test uses its trees from one thread.
    unsafe impl Anchored for ByKey {}

    // The same items, in another tree.
    struct Other;
    crate::impl_intrusive_adapter!(Other: Adapter, Links => Item { other });
    // SAFETY: As for `ByKey`.
    unsafe impl Anchored for Other {}

    /// Walks `tree` for `k`: the equal item, or the vacant position for it.
    fn find<A: Adapter<Item = Item>>(
        tree: &Tree<A>,
        k: u32,
    ) -> Result<core::result::Result<&Item, Position<A>>> {
        let mut pos = tree.root();
        while let Some(item) = tree.item_at(&pos)? {
            match k.cmp(&item.key) {
                Ordering::Equal => return Ok(Ok(item)),
                ord => tree.descend(&mut pos, ord)?,
            }
        }
        Ok(Err(pos))
    }

    /// Links `item` in by its key; `EINVAL` if its key is there.
    fn insert<A: Anchored<Item = Item>>(tree: &mut Tree<A>, item: &Item) -> Result {
        let Err(pos) = find(tree, item.key)? else {
            return Err(EINVAL);
        };
        tree.insert(&pos, item)
    }

    fn keys<A: Anchored<Item = Item>>(tree: &Tree<A>) -> Result<KVec<u32>> {
        let mut v = KVec::new();
        let mut cur = tree.first();
        while let Some(item) = cur {
            v.push(item.key, GFP_KERNEL)?;
            cur = tree.next(item);
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
            insert(&mut tree, item)?;
        }
        let k = keys(&tree)?;
        assert_eq!(k.len(), N as usize);
        assert!(k.iter().enumerate().all(|(i, &k)| k == i as u32));
        for k in 0..N {
            let found = find(&tree, k)?.map_err(|_| EINVAL)?;
            assert!(found.key == k && tree.contains(found));
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
            tree.insert(&pos, item)?;
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
            tree.insert(&pos, item)?;
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
        tree.remove(&v[0])?;
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
            insert(&mut tree, item)?;
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
        // Every item is free again: none is in the tree, and each can go in again.
        assert!(v.iter().all(|i| !tree.contains(i)));
        for item in v.iter() {
            insert(&mut tree, item)?;
        }
        assert_eq!(keys(&tree)?.len(), N as usize);
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
        tree.insert(&pos, &a[0])?;
        // The position was vacant before the insertion; now it is refused, and nothing changes.
        assert_eq!(tree.insert(&pos, &b[0]), Err(EAGAIN));
        assert_eq!(tree.item_at(&pos).err(), Some(EAGAIN));
        let mut p = pos;
        assert_eq!(tree.descend(&mut p, Ordering::Less), Err(EAGAIN));
        assert_eq!(keys(&tree)?.len(), 1);
        // A current position on an item is not vacant.
        assert_eq!(tree.insert(&tree.root(), &b[0]), Err(EEXIST));
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
            insert(&mut tree, item)?;
        }
        assert_eq!(&keys(&tree)?[..], &[0, 1, 2]);
        Ok(())
    }

    #[test]
    fn remove_and_replace() -> Result {
        const N: u32 = 200;
        let v = items(N)?;
        let spare = Item {
            key: 100,
            links: Links::new(),
            other: Links::new(),
        };
        let mut tree = Tree::<ByKey>::new();
        for item in v.iter() {
            insert(&mut tree, item)?;
        }
        // Take out the odd keys, walking in order and reading each successor first.
        let mut cur = tree.first().map(NonNull::from);
        while let Some(item) = cur {
            // SAFETY: The tests' items outlive their trees; `item` was handed out by the tree,
            // and is only read.
            let item = unsafe { item.as_ref() };
            cur = tree.next(item).map(NonNull::from);
            if item.key % 2 == 1 {
                tree.remove(item)?;
                // Out, and no more than once.
                assert!(!tree.contains(item) && tree.next(item).is_none());
                assert_eq!(tree.remove(item), Err(ENOENT));
            }
        }
        let k = keys(&tree)?;
        assert_eq!(k.len(), N as usize / 2);
        assert!(k.iter().enumerate().all(|(i, &k)| k == 2 * i as u32));
        // Replace the item of key 100 by another of the same key.
        let old = v.iter().find(|i| i.key == 100).ok_or(EINVAL)?;
        assert!(find(&tree, 100)?.is_ok_and(|f| core::ptr::eq(f, old)));
        let pos = tree.root();
        // An item in the tree cannot take the place of another, nor of itself.
        assert_eq!(tree.replace(old, &v[0]), Err(EBUSY));
        assert_eq!(tree.replace(old, old), Err(EBUSY));
        // An item out of the tree has no place to give.
        assert_eq!(tree.replace(&spare, old), Err(ENOENT));
        tree.replace(old, &spare)?;
        assert_eq!(tree.item_at(&pos).err(), Some(EAGAIN));
        let found = find(&tree, 100)?.map_err(|_| EINVAL)?;
        assert!(core::ptr::eq(found, &spare) && !tree.contains(old));
        assert_eq!(keys(&tree)?.len(), N as usize / 2);
        // Empty it.
        while let Some(item) = tree.first().map(NonNull::from) {
            // SAFETY: As above.
            tree.remove(unsafe { item.as_ref() })?;
        }
        assert!(tree.is_empty());
        Ok(())
    }

    #[test]
    fn two_trees_through_two_links() -> Result {
        let v = items(50)?;
        let mut by_key = Tree::<ByKey>::new();
        let mut reversed = Tree::<Other>::new();
        let mut again = Tree::<ByKey>::new();
        for item in v.iter() {
            let k = item.key;
            insert(&mut by_key, item)?;
            // The other tree is in reverse order.
            let mut pos = reversed.root();
            while let Some(other) = reversed.item_at(&pos)? {
                let other = other.key;
                reversed.descend(&mut pos, other.cmp(&k))?;
            }
            reversed.insert(&pos, item)?;
            // A second tree through the same links refuses the item, and cannot take it out.
            assert_eq!(insert(&mut again, item), Err(EBUSY));
            assert!(again.remove(item) == Err(ENOENT) && again.next(item).is_none());
        }
        let a = keys(&by_key)?;
        let b = keys(&reversed)?;
        assert_eq!(a.len(), 50);
        assert!(a.iter().zip(b.iter().rev()).all(|(x, y)| x == y));
        // Dropping a tree lets its items go: they can go into another.
        drop(by_key);
        for item in v.iter() {
            insert(&mut again, item)?;
        }
        assert_eq!(keys(&again)?.len(), 50);
        Ok(())
    }
}
