// SPDX-License-Identifier: GPL-2.0

//! The reverse map of anonymous memory: an `anon_vma` and the areas that map its pages.
//!
//! An anonymous page records the `anon_vma` of the area it was first mapped in, and its index
//! in it; the `anon_vma` has an interval tree of all the areas (of this process and of those
//! forked from it) that may map the page at that index. Walking that tree takes the
//! `anon_vma`'s lock, which also keeps the areas found in it from being unlinked, moved or
//! resized: those changes take the lock for write.
//!
//! C header: [`include/linux/rmap.h`](srctree/include/linux/rmap.h)

use crate::{bindings, mm::Mm, types::Opaque};
use core::{marker::PhantomData, ptr::NonNull};

/// An `anon_vma` (`struct anon_vma`).
///
/// # Invariants
///
/// The `anon_vma` is valid, and stays so for the lifetime of a reference to it: its holder owns a
/// reference on it (`get_anon_vma()`), or holds the mmap or VMA lock of an area using it.
#[repr(transparent)]
pub struct AnonVma(Opaque<bindings::anon_vma>);

impl AnonVma {
    /// Access an `anon_vma` given a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `anon_vma` that stays valid for `'a`: the caller owns a
    /// reference on it for `'a`, or holds the mmap or VMA lock of an area using it.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::anon_vma) -> &'a Self {
        // SAFETY: As the caller guarantees; `AnonVma` is a transparent `Opaque`.
        unsafe { &*ptr.cast() }
    }

    /// Returns a raw pointer to the `anon_vma`.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::anon_vma {
        self.0.get()
    }

    /// The lock of the `anon_vma`: the semaphore of its root, which all the `anon_vma`s of a
    /// process tree share (`anon_vma->root` is set when the `anon_vma` is made and never
    /// changes). Taken and released as `anon_vma_lock_read()`, `anon_vma_trylock_read()` and
    /// `anon_vma_unlock_read()` in `mm/internal.h` do: keep them in step.
    #[inline]
    fn rwsem(&self) -> *mut bindings::rw_semaphore {
        // SAFETY: A valid `anon_vma` (type invariant), whose root is valid while it is.
        unsafe { &raw mut (*(*self.as_ptr()).root).rwsem }
    }

    /// Takes the `anon_vma`'s lock for read (`anon_vma_lock_read()`, which is private to
    /// `mm/`); may sleep.
    #[inline]
    pub fn lock_read(&self) -> AnonVmaReadGuard<'_> {
        // SAFETY: The root's semaphore, valid while the `anon_vma` is.
        unsafe { bindings::down_read(self.rwsem()) };
        // INVARIANT: Locked for read above.
        AnonVmaReadGuard {
            anon_vma: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the `anon_vma`'s lock for read if that can be done without waiting
    /// (`anon_vma_trylock_read()`).
    #[inline]
    pub fn try_lock_read(&self) -> Option<AnonVmaReadGuard<'_>> {
        // SAFETY: As for `lock_read()`.
        let locked = unsafe { bindings::down_read_trylock(self.rwsem()) } != 0;
        // INVARIANT: Locked for read if `locked`.
        locked.then(|| AnonVmaReadGuard {
            anon_vma: self,
            _not_send: PhantomData,
        })
    }
}

/// An [`AnonVma`] locked for read; unlocks it when dropped.
///
/// # Invariants
///
/// The current task holds the read lock of `anon_vma`, which it releases when the guard is
/// dropped. The guard is not `Send`: a read-locked rwsem is released by the task that took it.
pub struct AnonVmaReadGuard<'a> {
    anon_vma: &'a AnonVma,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> AnonVmaReadGuard<'a> {
    /// The areas in the `anon_vma`'s interval tree that may map the page of index `pgoff`
    /// (`anon_rmap_tree_foreach()`): those whose range of anonymous page offsets covers it.
    #[inline]
    pub fn vmas(&self, pgoff: usize) -> AnonVmas<'_> {
        // SAFETY: The `anon_vma` is valid and read-locked (type invariants).
        let first =
            unsafe { bindings::anon_rmap_tree_iter_first(self.anon_vma.as_ptr(), pgoff, pgoff) };
        // INVARIANT: The first chain of the walk, or none.
        AnonVmas {
            next: NonNull::new(first),
            pgoff,
            _guard: PhantomData,
        }
    }
}

impl Drop for AnonVmaReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: Locked for read by this task (type invariant).
        unsafe { bindings::up_read(self.anon_vma.rwsem()) };
    }
}

/// The areas of a read-locked `anon_vma` that may map one page (see
/// [`AnonVmaReadGuard::vmas`]).
///
/// # Invariants
///
/// The `anon_vma` is read-locked for `'a`, so its interval tree does not change; `next` is the
/// next chain of the walk of that tree for `pgoff`, or `None` when the walk is over.
pub struct AnonVmas<'a> {
    next: Option<NonNull<bindings::anon_vma_chain>>,
    pgoff: usize,
    _guard: PhantomData<&'a AnonVmaReadGuard<'a>>,
}

impl<'a> Iterator for AnonVmas<'a> {
    type Item = &'a VmaAnonLocked;

    fn next(&mut self) -> Option<&'a VmaAnonLocked> {
        let avc = self.next?;
        // SAFETY: `avc` is a chain of the interval tree, which the read lock keeps unchanged
        // (type invariant).
        let next =
            unsafe { bindings::anon_rmap_tree_iter_next(avc.as_ptr(), self.pgoff, self.pgoff) };
        // INVARIANT: The walk's next chain.
        self.next = NonNull::new(next);
        // SAFETY: A chain of the locked tree links a valid area, which stays in the tree while
        // the lock is held for read: unlinking it takes the lock for write.
        Some(unsafe { VmaAnonLocked::from_raw((*avc.as_ptr()).vma) })
    }
}

/// A virtual memory area found through its read-locked `anon_vma`.
///
/// Neither the mmap lock nor the VMA lock is held: only what the `anon_vma` lock keeps fixed may
/// be read. The area's bounds and its page offset are changed with the lock held for write
/// (`vma_prepare()`), and the area is unlinked from the tree with the lock held for write before
/// it is freed (`unlink_anon_vmas()`); its `mm_struct` outlives every area linked in a tree
/// (`mmdrop()` comes after `exit_mmap()`).
///
/// # Invariants
///
/// The area is in the interval tree of an `anon_vma` read-locked for the lifetime of a reference
/// to it.
#[repr(transparent)]
pub struct VmaAnonLocked(Opaque<bindings::vm_area_struct>);

impl VmaAnonLocked {
    /// Access an area given a raw pointer.
    ///
    /// # Safety
    ///
    /// `vma` must be in the interval tree of an `anon_vma` that the caller holds read-locked
    /// for `'a`.
    #[inline]
    pub unsafe fn from_raw<'a>(vma: *mut bindings::vm_area_struct) -> &'a Self {
        // SAFETY: As the caller guarantees; `VmaAnonLocked` is a transparent `Opaque`.
        unsafe { &*vma.cast() }
    }

    /// Returns a raw pointer to the area.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.0.get()
    }

    /// The first address of the area.
    #[inline]
    pub fn start(&self) -> usize {
        // SAFETY: A valid area whose bounds the `anon_vma` lock keeps fixed (type invariant).
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// The address after the last one of the area.
    #[inline]
    pub fn end(&self) -> usize {
        // SAFETY: As for `start()`.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// Whether the area belongs to the address space `mm`.
    ///
    /// Only a comparison: a walker under the `anon_vma` lock must not take the area's mmap lock
    /// (the lock order is the other way round) nor drop the last `mm_users` reference of its mm
    /// (`exit_mmap()` takes the `anon_vma` lock for write), so the mm is not handed out.
    #[inline]
    pub fn is_in(&self, mm: &Mm) -> bool {
        // SAFETY: A valid area (type invariant); `vm_mm` never changes.
        let vm_mm = unsafe { (*self.as_ptr()).vm_mm };
        core::ptr::eq(vm_mm, mm.as_raw())
    }
}

/// The control of a reverse map walk over the mappings of one locked folio
/// (`struct rmap_walk_control`), for a walker that C's `rmap_walk()` calls, such as KSM's: the
/// callbacks to call for each area that may map the folio.
///
/// Only for small anonymous folios that are not hugetlb, such as KSM's: for those, the callbacks
/// look up for themselves whether and where the folio is mapped in the area (as they must for
/// `rmap_walk_anon()` and `rmap_walk_ksm()`, which also hand them areas that do not map it), so
/// they may be given any area found in a read-locked `anon_vma` tree (which keeps the area, its
/// page tables and its mm), and an address in it. (A hugetlb folio's callbacks assume a hugetlb
/// area, and a large folio's compute its page from the area's offset.)
///
/// The walker stops when `rmap_one()` returns false, `done()` returns true or it sets
/// `contended`; calling on is no memory-safety matter, but not what the caller asked for.
///
/// Not `Send` nor `Sync`: it belongs to the walk of the current task.
///
/// # Invariants
///
/// `rwc` is valid and used by the current task alone for `'a`; `folio` is a small anonymous
/// folio, not hugetlb, locked for `'a`; the callbacks may be called with `folio`, an area of an
/// `anon_vma` tree that is read-locked, an address in the area, and `rwc`'s `arg`.
pub struct RmapWalk<'a> {
    rwc: NonNull<bindings::rmap_walk_control>,
    folio: *mut bindings::folio,
    _p: PhantomData<&'a mut bindings::rmap_walk_control>,
    _nts: crate::types::NotThreadSafe,
}

impl<'a> RmapWalk<'a> {
    /// The walk of `folio` that `rwc` controls.
    ///
    /// # Safety
    ///
    /// `rwc` must be a valid control structure, used by the current task alone for `'a`, whose
    /// callbacks may be called as `rmap_walk()` calls them for `folio`, a small anonymous folio,
    /// not hugetlb (a KSM folio), which must stay locked for `'a`.
    #[inline]
    pub unsafe fn from_raw(
        rwc: *mut bindings::rmap_walk_control,
        folio: *mut bindings::folio,
    ) -> Self {
        // INVARIANT: As the caller guarantees.
        Self {
            // SAFETY: Valid, so not null (the caller's promise).
            rwc: unsafe { NonNull::new_unchecked(rwc) },
            folio,
            _p: PhantomData,
            _nts: crate::types::NotThreadSafe,
        }
    }

    fn rwc(&self) -> &bindings::rmap_walk_control {
        // SAFETY: Valid, and used by us alone (type invariant): only `contended` is written,
        // through `set_contended()`, which takes `&mut self`.
        unsafe { self.rwc.as_ref() }
    }

    /// Whether the walk must not sleep on an `anon_vma` lock (`rwc->try_lock`).
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.rwc().try_lock
    }

    /// Tells the caller that the walk stopped at a contended lock (`rwc->contended`).
    #[inline]
    pub fn set_contended(&mut self) {
        // SAFETY: Valid, and used by us alone (type invariant).
        unsafe { (*self.rwc.as_ptr()).contended = true };
    }

    /// Whether the caller wants `vma` skipped (`rwc->invalid_vma()`; no if not set).
    pub fn invalid_vma(&self, vma: &VmaAnonLocked) -> bool {
        let rwc = self.rwc();
        rwc.invalid_vma.is_some_and(|iv| {
            // SAFETY: A callback of the walk, called as it may be (type invariant): `vma` is in
            // a read-locked tree (type invariant of `VmaAnonLocked`).
            unsafe { iv(vma.as_ptr(), rwc.arg) }
        })
    }

    /// Calls `rwc->rmap_one()` for the folio at `addr` in `vma`; returns whether the walk goes
    /// on. Warns and stops the walk if `addr` is not in `vma`, or if the callback is not set
    /// (C calls it unconditionally).
    pub fn rmap_one(&self, vma: &VmaAnonLocked, addr: usize) -> bool {
        let rwc = self.rwc();
        let in_vma = addr >= vma.start() && addr < vma.end();
        let (true, Some(rmap_one)) = (in_vma, rwc.rmap_one) else {
            crate::warn_on!(true);
            return false;
        };
        // SAFETY: A callback of the walk, called as it may be (type invariant): with the walk's
        // folio, locked, an area of a read-locked tree (type invariant of `VmaAnonLocked`) and
        // an address in it.
        unsafe { rmap_one(self.folio, vma.as_ptr(), addr, rwc.arg) }
    }

    /// Whether the caller's work is done (`rwc->done()`; no if not set).
    pub fn done(&self) -> bool {
        // SAFETY: A callback of the walk, called as it may be (type invariant): with the walk's
        // folio, locked.
        self.rwc()
            .done
            .is_some_and(|d| unsafe { d(self.folio) } != 0)
    }
}
