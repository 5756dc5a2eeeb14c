// SPDX-License-Identifier: GPL-2.0

//! Page table entries and the walks that find and change them.
//!
//! C headers: [`include/linux/pgtable.h`](srctree/include/linux/pgtable.h),
//! [`include/linux/pagewalk.h`](srctree/include/linux/pagewalk.h),
//! [`include/linux/rmap.h`](srctree/include/linux/rmap.h),
//! [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)
//!
//! - [`Pte`]: a page table entry value and its accessors.
//! - [`VmaMmapRead`], [`VmaMmapWrite`]: a VMA whose mm's mmap lock is held for read or for
//!   write. A plain [`VmaRef`] may stand for a VMA under its per-VMA lock only, which is not
//!   enough for a page table walk or a remote fault.
//! - [`walk_mapped`] and [`walk_pages`]: `walk_page_range_vma()` calling a closure for every
//!   non-empty entry (or every entry that may map a normal page), under
//!   the page table lock; empty upper levels are skipped without visiting their addresses.
//! - [`FolioWalk`]: `folio_walk_start()` for one address, the page table lock held until drop.
//! - [`MappedPte`]: `page_vma_mapped_walk()` of an order-0 anonymous folio in one VMA: the
//!   locked PTE that maps it, which may be cleared and put back, write-protected, or replaced
//!   by a mapping of a KSM page or of the zero page, each time with the folio's mapcount,
//!   reference count and rmap kept in step.
//! - [`with_mmu_notifier_clear`]: an `MMU_NOTIFY_CLEAR` invalidation around a closure, which
//!   [`MappedPte::find`] requires.

use crate::{
    bindings,
    error::{code::*, Result},
    mm::{
        folio::{Folio, FolioLockGuard, UnrefFolio},
        virt::{flags, VmaRef},
        Mm, MmapLocked, MmapReadGuard,
    },
    page::PAGE_SIZE,
    sync::aref::ARef,
    types::NotThreadSafe,
};
use core::{ffi::c_void, marker::PhantomData, ops::ControlFlow, ops::Deref};

/// The span of addresses one page table (one PMD entry) maps.
///
/// It comes through a constant helper: bindgen cannot evaluate `PMD_SIZE` (a shift of
/// `_AC(1, UL)`), nor arm64's `PMD_SHIFT` (a function-like macro of the page size).
pub const PMD_SIZE: usize = bindings::PMD_SIZE;

/// A VMA whose mm's mmap lock is held for read, at least.
///
/// # Invariants
///
/// The mmap lock of the VMA's mm is held (for read or write) while the reference is valid.
#[repr(transparent)]
pub struct VmaMmapRead(VmaRef);

/// A VMA whose mm's mmap lock is held for write.
///
/// # Invariants
///
/// The mmap lock of the VMA's mm is held for write while the reference is valid.
#[repr(transparent)]
pub struct VmaMmapWrite(VmaMmapRead);

impl Deref for VmaMmapRead {
    type Target = VmaRef;

    fn deref(&self) -> &VmaRef {
        &self.0
    }
}

impl Deref for VmaMmapWrite {
    type Target = VmaRef;

    fn deref(&self) -> &VmaRef {
        &self.0 .0
    }
}

impl VmaMmapRead {
    fn from_vma(vma: &VmaRef) -> &Self {
        // SAFETY: `VmaMmapRead` is a transparent wrapper of `VmaRef`.
        unsafe { &*core::ptr::from_ref(vma).cast::<Self>() }
    }

    /// The VMA of `guard`'s mm that contains `addr` (`vma_lookup()`).
    #[inline]
    pub fn lookup<'a>(guard: &'a MmapReadGuard<'_>, addr: usize) -> Option<&'a Self> {
        // INVARIANT: The VMA comes from the mm whose mmap read lock `guard` holds, for as
        // long as the guard is borrowed.
        guard.vma_lookup(addr).map(Self::from_vma)
    }

    /// The first VMA of `guard`'s mm that ends above `addr` (`find_vma()`).
    #[inline]
    pub fn find<'a>(guard: &'a MmapReadGuard<'_>, addr: usize) -> Option<&'a Self> {
        // INVARIANT: As in `lookup`.
        guard.find_vma(addr).map(Self::from_vma)
    }
}

impl VmaMmapWrite {
    /// Wraps a VMA whose mm's mmap lock the caller holds for write: for the C callers that
    /// hand a VMA to Rust with the lock taken (madvise, prctl).
    ///
    /// # Safety
    ///
    /// The mmap lock of `vma`'s mm must be held for write for `'a`.
    #[inline]
    pub unsafe fn from_vma<'a>(vma: &'a VmaRef) -> &'a Self {
        // INVARIANT: As the caller guarantees.
        // SAFETY: `VmaMmapWrite` is a transparent wrapper of `VmaMmapRead`, itself one of
        // `VmaRef`.
        unsafe { &*core::ptr::from_ref(vma).cast::<Self>() }
    }

    /// The first VMA of `mm` that ends above `addr` (`find_vma()`).
    #[inline]
    pub fn find<'a>(mm: MmapWriteLocked<'a>, addr: usize) -> Option<&'a Self> {
        // SAFETY: The mmap lock is held for write for `'a` (type invariant of
        // `MmapWriteLocked`), as `from_vma` wants.
        mm.locked()
            .find_vma(addr)
            .map(|v| unsafe { Self::from_vma(v) })
    }

    /// Sets `VM_MERGEABLE` in the area (`vm_flags_set()`, which write-locks the VMA): KSM may
    /// merge its anonymous pages.
    ///
    /// # Safety
    ///
    /// The area must be one that KSM may merge (`ksm_compatible()`): other code relies on
    /// incompatible areas never being mergeable (sparc's ADI areas, `arch_validate_flags()`),
    /// and KSM itself on every mergeable area being compatible.
    #[inline]
    pub unsafe fn set_mergeable(&self) {
        // SAFETY: The mmap write lock is held (type invariant); the caller vouches for the
        // area.
        unsafe { self.0 .0.set_flags(flags::MERGEABLE) };
    }

    /// Clears `VM_MERGEABLE` in the area (`vm_flags_clear()`, which write-locks the VMA): KSM
    /// stops scanning it, and unmerging (`MADV_UNMERGEABLE`, `run = 2`) passes over it. KSM
    /// pages it still maps stay valid anonymous pages, copied on write and found by the reverse
    /// map as before (as a KSM page swapped in to an area made unmergeable meanwhile is); they
    /// only stay merged, so unmerge the area first.
    #[inline]
    pub fn clear_mergeable(&self) {
        // SAFETY: The mmap write lock is held (type invariant); no memory safety depends on an
        // area being mergeable, as said above.
        unsafe { self.0 .0.clear_flags(flags::MERGEABLE) };
    }
}

/// An mm whose mmap lock is held for write by the current task, the C caller of a hook that
/// Rust implements (`prctl(PR_SET_MEMORY_MERGE)`, s390's `ksm_disable()`); its VMAs are handed
/// out as [`VmaMmapWrite`].
///
/// Not `Send` nor `Sync`: the lock is the current task's.
///
/// # Invariants
///
/// The mmap lock of the mm is held for write by the current task for `'a`, and its VMA tree
/// does not change during `'a`.
#[derive(Clone, Copy)]
pub struct MmapWriteLocked<'a>(&'a Mm, NotThreadSafe);

impl<'a> MmapWriteLocked<'a> {
    /// Wraps an mm whose mmap lock the caller holds for write.
    ///
    /// # Safety
    ///
    /// The mmap lock of `mm` must be held for write by the current task for `'a`, and its VMA
    /// tree must not change during `'a` (the VMAs handed out are valid for `'a`).
    #[inline]
    pub unsafe fn assume_locked(mm: &'a Mm) -> Self {
        // INVARIANT: As the caller guarantees.
        Self(mm, NotThreadSafe)
    }

    /// The mm.
    #[inline]
    pub fn mm(self) -> &'a Mm {
        self.0
    }

    /// The mm, as one whose mmap lock is held (for write, here).
    #[inline]
    pub fn locked(self) -> MmapLocked<'a> {
        // INVARIANT: Held for write by the current task, the VMA tree unchanged, for `'a` (type
        // invariant).
        MmapLocked(self.0, NotThreadSafe)
    }

    /// Calls `f` for every VMA of the mm, in address order, and stops at the first error. Each
    /// VMA is lent for one call only: `f` may not keep it past a change to the VMA tree.
    pub fn for_each_vma(self, mut f: impl FnMut(&VmaMmapWrite) -> Result) -> Result {
        let mut addr = 0;
        while let Some(vma) = VmaMmapWrite::find(self, addr) {
            addr = vma.end();
            f(vma)?;
        }
        Ok(())
    }
}

mod private {
    pub trait Sealed {}
}

/// A VMA reference that proves that its mm's mmap lock is held; says how a page table walk
/// must lock the VMA.
pub trait MmapLockedVma: private::Sealed + Deref<Target = VmaRef> {
    /// `walk_page_range_vma()`'s lock mode for this lock level.
    #[doc(hidden)]
    const WALK_LOCK: bindings::page_walk_lock;

    /// Whether the mmap lock is held for write: no other task can change the VMA's page
    /// tables through a system call (reclaim, migration and faults of its own still can).
    const EXCLUSIVE: bool;

    /// The VMA with the mmap lock held for read, at least.
    fn as_read(&self) -> &VmaMmapRead;
}

impl private::Sealed for VmaMmapRead {}
impl private::Sealed for VmaMmapWrite {}

impl MmapLockedVma for VmaMmapRead {
    // The mmap read lock is held: the walk need not lock the VMA.
    const WALK_LOCK: bindings::page_walk_lock = bindings::page_walk_lock_PGWALK_RDLOCK;
    const EXCLUSIVE: bool = false;

    fn as_read(&self) -> &VmaMmapRead {
        self
    }
}

impl MmapLockedVma for VmaMmapWrite {
    // The mmap write lock is held: the walk write-locks the VMA against page faults.
    const WALK_LOCK: bindings::page_walk_lock = bindings::page_walk_lock_PGWALK_WRLOCK;
    const EXCLUSIVE: bool = true;

    fn as_read(&self) -> &VmaMmapRead {
        &self.0
    }
}

/// A page table entry value (`pte_t`).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Pte(bindings::pte_t);

impl Pte {
    /// Whether the entry maps a page (`pte_present()`).
    #[inline]
    pub fn present(self) -> bool {
        // SAFETY: Pure function of the value.
        unsafe { bindings::pte_present(self.0) }
    }

    /// Whether the entry is empty (`pte_none()`).
    #[inline]
    pub fn none(self) -> bool {
        // SAFETY: Pure function of the value.
        unsafe { bindings::pte_none(self.0) }
    }

    /// Whether the entry is writable.
    #[inline]
    pub fn write(self) -> bool {
        // SAFETY: Pure function of the value.
        unsafe { bindings::pte_write(self.0) }
    }

    /// Whether the entry is dirty.
    #[inline]
    pub fn dirty(self) -> bool {
        // SAFETY: Pure function of the value.
        unsafe { bindings::pte_dirty(self.0) }
    }

    /// The page frame number the entry maps.
    #[inline]
    pub fn pfn(self) -> usize {
        // SAFETY: Pure function of the value.
        unsafe { bindings::pte_pfn(self.0) as usize }
    }

    /// Whether the entry maps the shared zero page.
    #[inline]
    pub fn is_zero_pfn(self) -> bool {
        // SAFETY: Pure function of the value.
        self.present() && unsafe { bindings::is_zero_pfn(bindings::pte_pfn(self.0)) }
    }

    /// The entry with the dirty bit cleared.
    #[inline]
    pub fn mkclean(self) -> Self {
        // SAFETY: Pure function of the value.
        Self(unsafe { bindings::pte_mkclean(self.0) })
    }

    /// The entry made read-only.
    #[inline]
    pub fn wrprotect(self) -> Self {
        // SAFETY: Pure function of the value.
        Self(unsafe { bindings::pte_wrprotect(self.0) })
    }

    /// Whether two entries are identical (`pte_same()`).
    #[inline]
    pub fn same(self, other: Pte) -> bool {
        // SAFETY: Pure function of the values.
        unsafe { bindings::pte_same(self.0, other.0) }
    }

    /// The entry mapping the first page of `folio` with the protection of `vma`.
    #[inline]
    fn for_folio(folio: &Folio, vma: &VmaRef) -> Self {
        // SAFETY: The folio and the VMA are valid; `vm_page_prot` is read like C does.
        Self(unsafe { bindings::mk_pte(folio.first_page(), bindings::vma_page_prot(vma.as_ptr())) })
    }

    /// A special, dirty entry mapping the zero page for `addr` in `vma`: the dirty bit marks a
    /// zero page placed by KSM (see `is_ksm_zero_pte()`).
    #[inline]
    fn ksm_zero(vma: &VmaRef, addr: usize) -> Self {
        // SAFETY: `ZERO_PAGE()` is always valid; the rest are pure functions.
        Self(unsafe {
            let pfn = bindings::page_to_pfn(bindings::zero_page(addr));
            bindings::pte_mkdirty(bindings::pte_mkspecial(bindings::pfn_pte(
                pfn,
                bindings::vma_page_prot(vma.as_ptr()),
            )))
        })
    }

    /// Whether the entry is a KSM-placed zero page (`is_ksm_zero_pte()`).
    #[inline]
    pub fn is_ksm_zero(self) -> bool {
        self.is_zero_pfn() && self.dirty()
    }
}

/// The page frame number of the zero page used for `addr`.
pub fn zero_page_pfn(addr: usize) -> usize {
    // SAFETY: `ZERO_PAGE()` is valid for any address.
    unsafe { bindings::page_to_pfn(bindings::zero_page(addr)) as usize }
}

/// One non-empty entry seen by [`walk_mapped`].
pub struct MappedEntry<'a> {
    vma: &'a VmaRef,
    addr: usize,
    kind: EntryKind,
}

#[derive(Clone, Copy)]
enum EntryKind {
    /// A PTE, and whether it is present (tested once by the walk).
    Pte(Pte, bool),
    #[cfg_attr(
        not(CONFIG_PGTABLE_HAS_HUGE_LEAVES),
        expect(dead_code, reason = "a PMD is never a leaf without huge leaves")
    )]
    PmdLeaf(bindings::pmd_t),
}

impl MappedEntry<'_> {
    /// The virtual address of the entry (for a PMD leaf: the first address of the walked range
    /// within it).
    #[inline]
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The PTE value, or `None` for a PMD-mapped huge page.
    #[inline]
    pub fn pte(&self) -> Option<Pte> {
        match self.kind {
            EntryKind::Pte(pte, _) => Some(pte),
            EntryKind::PmdLeaf(_) => None,
        }
    }

    /// The normal (refcounted, non-special) page mapped here, as a folio and the index of the
    /// page at [`MappedEntry::addr`] within it (`vm_normal_page()` / `vm_normal_page_pmd()`).
    ///
    /// The folio is only known valid while the page table lock is held, that is inside the
    /// walk's closure: take a reference to keep it.
    #[inline]
    pub fn normal_folio(&self) -> Option<(&Folio, usize)> {
        let page = match self.kind {
            EntryKind::Pte(pte, present) => {
                if !present {
                    return None;
                }
                // SAFETY: The VMA is valid and the PTE lock is held during the walk.
                unsafe { bindings::vm_normal_page(self.vma.as_ptr(), self.addr, pte.0) }
            }
            #[cfg(CONFIG_PGTABLE_HAS_HUGE_LEAVES)]
            EntryKind::PmdLeaf(pmd) => {
                // SAFETY: The VMA is valid and the PMD lock is held during the walk.
                unsafe { bindings::vm_normal_page_pmd(self.vma.as_ptr(), self.addr, pmd) }
            }
            // Without huge leaves a PMD is never a leaf.
            #[cfg(not(CONFIG_PGTABLE_HAS_HUGE_LEAVES))]
            EntryKind::PmdLeaf(_) => return None,
        };
        if page.is_null() {
            return None;
        }
        // SAFETY: `page` is mapped here and the page table lock pins the mapping.
        let folio = unsafe { Folio::from_raw(bindings::page_folio(page)) };
        let index = match self.kind {
            EntryKind::Pte(..) => 0,
            EntryKind::PmdLeaf(_) => (self.addr & (PMD_SIZE - 1)) / PAGE_SIZE,
        };
        // SAFETY: Pure arithmetic on valid pointers.
        let first = unsafe { bindings::folio_page(folio.as_raw(), 0) };
        let page_index = (page as usize - first as usize) / core::mem::size_of::<bindings::page>();
        Some((folio, page_index + index))
    }

    /// For a migration entry, the folio under migration. Its reference count may be frozen at
    /// zero (migration and THP splitting freeze it after they put the migration entries in),
    /// so it is handed out as an [`UnrefFolio`]: one must not take a reference but through
    /// [`UnrefFolio::try_get`].
    pub fn migration_folio(&self) -> Option<&UnrefFolio> {
        match self.kind {
            EntryKind::Pte(pte, false) if !pte.none() => {
                // SAFETY: A migration entry's folio stays in the memory map while the PTE lock
                // is held (the entry pins it).
                let f = unsafe { bindings::pte_migration_folio(pte.0) };
                // SAFETY: As above.
                (!f.is_null()).then(|| unsafe { UnrefFolio::from_raw(f) })
            }
            _ => None,
        }
    }
}

struct WalkCtx<'a, F> {
    f: F,
    vma: &'a VmaRef,
    out: Option<usize>,
    err: Option<crate::error::Error>,
}

/// Walks `[start, end)` of `vma` (`walk_page_range_vma()`) and calls `f` for every non-empty
/// PTE and every PMD-mapped huge page, with the page table lock held, until `f` breaks.
///
/// The walk needs the mmap lock: read (`PGWALK_RDLOCK`) or write (`PGWALK_WRLOCK`, which also
/// write-locks the VMA), as the type of `vma` proves.
///
/// It may sleep: it reschedules between page tables (the closure runs under the page table
/// lock and must not).
///
/// `f` returns `Ok(ControlFlow::Break(x))` to stop with the result `x` (an address, say),
/// or an error to stop the walk with that error. Returns `Ok(None)` when the range ends.
pub fn walk_mapped<V, F>(vma: &V, start: usize, end: usize, f: F) -> Result<Option<usize>>
where
    V: MmapLockedVma,
    F: FnMut(&MappedEntry<'_>) -> Result<ControlFlow<usize>>,
{
    walk::<V, F, false>(vma, start, end, f)
}

/// As [`walk_mapped`], but only for present PTEs that are not special (`pte_special()`), and
/// PMD-mapped huge pages.
///
/// In an anonymous VMA that is every entry that may map a normal page (`vm_normal_page()`
/// finds no page behind a special PTE unless the VMA has `find_special_page`, which anonymous
/// VMAs do not have): special PTEs map the shared zero page there. A scan for pages (KSM's)
/// passes over the rest in the walk's loop, without a call per entry: a THP split maps its
/// zero-filled subpages to the zero page, hundreds of entries per table. Without
/// `CONFIG_ARCH_HAS_PTE_SPECIAL` no entry is special and the closure sees them all.
pub fn walk_pages<V, F>(vma: &V, start: usize, end: usize, f: F) -> Result<Option<usize>>
where
    V: MmapLockedVma,
    F: FnMut(&MappedEntry<'_>) -> Result<ControlFlow<usize>>,
{
    walk::<V, F, true>(vma, start, end, f)
}

/// [`walk_mapped`] (`PAGES` false) or [`walk_pages`] (`PAGES` true).
fn walk<V, F, const PAGES: bool>(vma: &V, start: usize, end: usize, f: F) -> Result<Option<usize>>
where
    V: MmapLockedVma,
    F: FnMut(&MappedEntry<'_>) -> Result<ControlFlow<usize>>,
{
    let vma: &VmaRef = vma;
    /// # Safety
    ///
    /// Called by `walk_page_range_vma()` with `walk->private` set to the `WalkCtx` below.
    unsafe extern "C" fn pmd_entry<F, const PAGES: bool>(
        pmdp: *mut bindings::pmd_t,
        mut addr: usize,
        end: usize,
        walk: *mut bindings::mm_walk,
    ) -> i32
    where
        F: FnMut(&MappedEntry<'_>) -> Result<ControlFlow<usize>>,
    {
        // SAFETY: `private` is the `WalkCtx` passed by `walk_mapped` below, alive for the walk.
        let ctx = unsafe { &mut *(*walk).private.cast::<WalkCtx<'_, F>>() };
        // SAFETY: `walk->mm` is the VMA's mm.
        let mm = unsafe { (*walk).mm };
        // Once per page table, as C's walkers do: a walk may pass many tables in one call, and
        // only the mmap lock (a sleeping lock) is held here.
        crate::kthread::cond_resched();
        // Calls the closure for one entry; returns what the C walker wants: 0 to go on, 1 to
        // stop with a result, a negative errno to stop with an error.
        let visit = |ctx: &mut WalkCtx<'_, F>, addr: usize, kind: EntryKind| {
            let entry = MappedEntry {
                vma: ctx.vma,
                addr,
                kind,
            };
            match (ctx.f)(&entry) {
                Ok(ControlFlow::Continue(())) => 0,
                Ok(ControlFlow::Break(x)) => {
                    ctx.out = Some(x);
                    1
                }
                Err(e) => {
                    ctx.err = Some(e);
                    e.to_errno()
                }
            }
        };

        // SAFETY: `pmdp` is a valid PMD entry pointer for the duration of the callback.
        let pmd = unsafe { bindings::pmdp_get_lockless(pmdp) };
        // SAFETY: Pure function of the value.
        if !unsafe { bindings::pmd_present(pmd) } {
            return 0;
        }
        // SAFETY: Pure function of the value.
        if unsafe { bindings::pmd_leaf(pmd) } {
            // SAFETY: `mm` and `pmdp` are valid; the lock is released below.
            let ptl = unsafe { bindings::pmd_lock(mm, pmdp) };
            // SAFETY: The PMD lock is held.
            let pmd = unsafe { bindings::pmdp_get(pmdp) };
            let mut r = 0;
            // SAFETY: Pure functions of the value.
            if unsafe { bindings::pmd_present(pmd) && bindings::pmd_leaf(pmd) } {
                r = visit(ctx, addr, EntryKind::PmdLeaf(pmd));
            }
            // SAFETY: Taken above.
            unsafe { bindings::spin_unlock(ptl) };
            // If the PMD stopped being a leaf meanwhile, a later walk will see its PTEs.
            return r;
        }

        let mut ptl: *mut bindings::spinlock_t = core::ptr::null_mut();
        // SAFETY: `mm` and `pmdp` are valid; `pte_offset_map_lock()` copes with a PMD that
        // changed since it was read.
        let start_ptep = unsafe { bindings::pte_offset_map_lock(mm, pmdp, addr, &mut ptl) };
        if start_ptep.is_null() {
            return 0;
        }
        let mut ptep = start_ptep;
        let mut r = 0;
        while addr < end {
            // SAFETY: `ptep` stays within the PTE table mapped above (one PMD's range).
            let pte = Pte(unsafe { bindings::ptep_get(ptep) });
            // Present entries first: the common case costs one test.
            let present = pte.present();
            let wanted = if PAGES {
                // SAFETY: Pure function of the value.
                present && !unsafe { bindings::pte_special(pte.0) }
            } else {
                present || !pte.none()
            };
            if wanted {
                r = visit(ctx, addr, EntryKind::Pte(pte, present));
                if r != 0 {
                    break;
                }
            }
            // SAFETY: As above.
            ptep = unsafe { ptep.add(1) };
            addr += PAGE_SIZE;
        }
        // SAFETY: Mapped and locked above.
        unsafe { bindings::pte_unmap_unlock(start_ptep, ptl) };
        r
    }

    let ops = bindings::mm_walk_ops {
        pmd_entry: Some(pmd_entry::<F, PAGES>),
        walk_lock: V::WALK_LOCK,
        // SAFETY: All-zero is a valid `mm_walk_ops` (no other callbacks).
        ..unsafe { core::mem::zeroed() }
    };
    let mut ctx = WalkCtx {
        f,
        vma,
        out: None,
        err: None,
    };
    // SAFETY: The VMA is valid and its mm's mmap lock is held as `V::WALK_LOCK` says (by the
    // invariants of `VmaMmapRead`/`VmaMmapWrite`); `ops` and `ctx` outlive the call.
    let r = unsafe {
        bindings::walk_page_range_vma(
            vma.as_ptr(),
            start,
            end,
            &ops,
            (&raw mut ctx).cast::<c_void>(),
        )
    };
    if let Some(e) = ctx.err {
        return Err(e);
    }
    if r < 0 {
        return Err(crate::error::Error::from_errno(r));
    }
    Ok(ctx.out)
}

/// The result of `folio_walk_start()`: the folio mapped at one address, with the page table
/// lock held until this is dropped.
///
/// # Invariants
///
/// `fw` was filled by a successful `folio_walk_start()` on `vma`, not yet ended.
pub struct FolioWalk<'a> {
    fw: bindings::folio_walk,
    folio: *mut bindings::folio,
    vma: &'a VmaRef,
}

impl<'a> FolioWalk<'a> {
    /// Looks up the folio mapped at `addr` in `vma` (`folio_walk_start(..., 0)`), which needs
    /// the mmap lock (it asserts it), not only the per-VMA lock.
    pub fn start(vma: &'a VmaMmapRead, addr: usize) -> Option<Self> {
        let vma: &'a VmaRef = vma;
        // SAFETY: All-zero is a valid initial `folio_walk`.
        let mut fw: bindings::folio_walk = unsafe { core::mem::zeroed() };
        // SAFETY: The VMA is valid with its mmap lock held (the invariant of `VmaMmapRead`).
        let folio = unsafe { bindings::folio_walk_start(&mut fw, vma.as_ptr(), addr, 0) };
        if folio.is_null() {
            // Nothing mapped: the walk has ended already (and `Self` must not be built, its
            // drop would end it again).
            return None;
        }
        // INVARIANT: Started successfully.
        Some(Self { fw, folio, vma })
    }

    /// The folio.
    #[inline]
    pub fn folio(&self) -> &Folio {
        // SAFETY: Valid while the page table lock is held, i.e. while `self` lives.
        unsafe { Folio::from_raw(self.folio) }
    }

    /// The index of the mapped page within the folio.
    #[inline]
    pub fn page_index(&self) -> usize {
        // SAFETY: Pure arithmetic on valid pointers.
        let first = unsafe { bindings::folio_page(self.folio, 0) };
        (self.fw.page as usize - first as usize) / core::mem::size_of::<bindings::page>()
    }

    /// Whether the folio is mapped by a PTE (rather than a PMD or PUD).
    #[inline]
    pub fn is_pte(&self) -> bool {
        self.fw.level == bindings::folio_walk_level_FW_LEVEL_PTE
    }
}

impl Drop for FolioWalk<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the walk was started and not ended.
        unsafe { bindings::folio_walk_end(&mut self.fw, self.vma.as_ptr()) };
    }
}

/// Flushes the caches that alias page `index` of an anonymous folio before its contents are
/// read through the kernel mapping (`flush_anon_page()` + `flush_dcache_page()`; no-ops on x86).
pub fn flush_anon_page(vma: &VmaRef, folio: &Folio, index: usize, addr: usize) {
    // SAFETY: Valid VMA and page.
    unsafe { bindings::flush_anon_page(vma.as_ptr(), folio.page(index), addr) };
}

/// The user address at which the first page of `folio` would be mapped in `vma`, if it falls
/// inside it (`page_address_in_vma()`). `None` for an anonymous folio that is mapped nowhere:
/// its anon_vma, which decides, may be gone.
pub fn folio_address_in_vma(folio: &Folio, vma: &VmaRef) -> Option<usize> {
    // SAFETY: Valid folio and VMA; the helper reads the folio's anon_vma only while the folio
    // is mapped, under the RCU read lock.
    let a = unsafe { bindings::folio_address_in_vma(folio.as_raw(), vma.as_ptr()) };
    // `-EFAULT` as an unsigned long means "not in the VMA" (sign-extended: `to_errno()` is
    // negative).
    (a != EFAULT.to_errno() as isize as usize).then_some(a)
}

/// The locked PTE mapping an order-0 folio in a VMA, found by `page_vma_mapped_walk()`.
///
/// The entry can be changed only in the ways that keep the folio's mapcount, reference count
/// and reverse map true to the page tables: cleared and put back ([`MappedPte::clear_flush`],
/// [`MappedPte::restore`]), made read-only ([`MappedPte::restore_read_only`]), or replaced by a
/// mapping of a KSM page or of the zero page ([`MappedPte::replace`]). An entry still cleared
/// when the `MappedPte` is dropped is put back (with a warning).
///
/// # Invariants
///
/// `pvmw` is a successful walk that is not done yet: `pvmw.pte` is mapped and `pvmw.ptl` held;
/// its address is inside `vma` and the range of an MMU notifier invalidation in progress.
/// `folio` is a locked order-0 anonymous folio, and the entry is, as `state` says:
/// - [`PteState::Mapped`]: an entry for the folio's page: a present one mapping it, or a
///   device-private or device-exclusive entry for it, which every change below refuses;
/// - [`PteState::Cleared`], [`PteState::Shared`]: none; the present value that was cleared,
///   which maps the page and which its mapcount, reference count and rmap still count, is kept
///   there; with [`PteState::Shared`], the page is no longer anon-exclusive;
/// - [`PteState::Replaced`]: a mapping of another page, which is not changed again.
///
/// It holds the page table lock, a spinlock: nothing that may sleep may be called while it
/// lives.
pub struct MappedPte<'a> {
    pvmw: bindings::page_vma_mapped_walk,
    vma: &'a VmaRef,
    folio: &'a FolioLockGuard<'a>,
    state: PteState,
    _inv: PhantomData<&'a MmuInvalidation>,
}

/// What was done to the PTE of a [`MappedPte`] so far.
#[derive(Clone, Copy)]
enum PteState {
    /// It maps the folio.
    Mapped,
    /// It was cleared; the value it had.
    Cleared(Pte),
    /// It was cleared (the value it had), and then the page marked as possibly shared.
    Shared(Pte),
    /// It maps another page instead of the folio ([`MappedPte::replace`]).
    Replaced,
}

/// What [`MappedPte::replace`] maps instead of the folio.
pub enum Replacement<'a> {
    /// The first page of a KSM folio of one page, which the new mapping will be recorded on.
    Ksm(KsmMapping<'a>),
    /// The shared zero page, with a dirty bit telling that KSM put it there (`is_ksm_zero()`).
    KsmZero,
}

/// A KSM folio of one page to map instead of another page, with the promise that the new
/// mapping is recorded where the folio's reverse map walk (`rmap_walk_ksm()`) finds it.
///
/// A mapping of a KSM folio that its reverse map does not know of cannot be undone by reclaim,
/// migration, memory failure or memory offlining (which keeps retrying), until KSM records it
/// when it next scans the mm.
///
/// # Invariants
///
/// Whoever made it promised to record a mapping made with it on the folio's stable node, at
/// its address, right after [`MappedPte::replace`] (as `stable_tree_append()`), or to try to
/// undo the mapping (`break_cow()`: as in C, the undo can fail for lack of memory, and the
/// mapping is then recorded on the next scan). Not `Copy`: one promise covers one mapping.
pub struct KsmMapping<'a>(&'a Folio);

impl<'a> KsmMapping<'a> {
    /// The promise for a mapping of `folio`.
    ///
    /// # Safety
    ///
    /// A mapping made with it must be recorded on the folio's stable node, at the address
    /// where it is made, right after [`MappedPte::replace`] (as `stable_tree_append()`), or
    /// its undo tried (`break_cow()`), as mm/ksm.c does.
    #[inline]
    pub unsafe fn new(folio: &'a Folio) -> Self {
        // INVARIANT: As the caller guarantees.
        Self(folio)
    }
}

impl<'a> MappedPte<'a> {
    /// Finds the PTE that maps `folio` in `vma`, at the address where the folio's index
    /// places it (`page_address_in_vma()`), and locks it. `None` unless `folio` is an order-0
    /// anonymous folio with a PTE there (which may be a device-private or device-exclusive
    /// entry for it: see [`Pte::present`]); `None` with a warning if that address is not in
    /// the range that `inv` invalidates: the secondary MMUs must not keep a mapping of the
    /// page while its PTE changes.
    pub fn find(
        inv: &'a MmuInvalidation,
        folio: &'a FolioLockGuard<'_>,
        vma: &'a VmaRef,
    ) -> Option<Self> {
        if folio.is_large() || !folio.is_anon() {
            return None;
        }
        let addr = folio_address_in_vma(folio, vma)?;
        if kernel::warn_on!(!inv.covers(vma.mm(), addr)) {
            return None;
        }
        // SAFETY: All-zero is a valid starting value, overwritten by the initializer.
        let mut pvmw: bindings::page_vma_mapped_walk = unsafe { core::mem::zeroed() };
        // SAFETY: Valid folio (locked) and VMA (mmap lock held).
        unsafe { bindings::folio_vma_walk_init(&mut pvmw, folio.as_raw(), vma.as_ptr(), addr, 0) };
        // SAFETY: `pvmw` was initialized just above.
        if !unsafe { bindings::page_vma_mapped_walk(&mut pvmw) } {
            return None;
        }
        if pvmw.pte.is_null() {
            // PMD-mapped: callers only handle PTEs, like C's "Unexpected PMD mapping?".
            // SAFETY: The walk succeeded and is not done yet.
            unsafe { bindings::page_vma_mapped_walk_done(&mut pvmw) };
            return None;
        }
        // INVARIANT: The walk succeeded, with a PTE: for an order-0 anonymous folio, an entry for
        // its page.
        Some(Self {
            pvmw,
            vma,
            folio,
            state: PteState::Mapped,
            _inv: PhantomData,
        })
    }

    /// The current value of the PTE.
    #[inline]
    pub fn get(&self) -> Pte {
        // SAFETY: The PTE is mapped and locked (type invariant).
        Pte(unsafe { bindings::ptep_get(self.pvmw.pte) })
    }

    /// Writes `pte` to the PTE.
    ///
    /// # Safety
    ///
    /// The value must keep the type invariant, with the state the caller sets next.
    unsafe fn store(&mut self, pte: Pte) {
        // SAFETY: The PTE is mapped and locked (type invariant); the caller vouches for the
        // value.
        unsafe {
            bindings::set_pte_at(
                self.vma.mm().as_raw(),
                self.pvmw.address,
                self.pvmw.pte,
                pte.0,
            )
        };
    }

    /// Clears the PTE and flushes the TLB (`ptep_clear_flush()`) and returns the old value:
    /// nothing can write through a stale TLB entry afterwards, and GUP-fast cannot find the
    /// page. Warns and returns the current value if the entry does not map the folio or was
    /// cleared already.
    pub fn clear_flush(&mut self) -> Pte {
        let old = self.get();
        if kernel::warn_on!(!matches!(self.state, PteState::Mapped) || !old.present()) {
            return old;
        }
        // SAFETY: Valid VMA; the PTE is mapped and locked.
        let old = unsafe {
            bindings::flush_cache_page(self.vma.as_ptr(), self.pvmw.address, old.pfn());
            Pte(bindings::ptep_clear_flush(
                self.vma.as_ptr(),
                self.pvmw.address,
                self.pvmw.pte,
            ))
        };
        // INVARIANT: The PTE is none; `old` maps the folio's page.
        self.state = PteState::Cleared(old);
        old
    }

    /// Puts back the value [`MappedPte::clear_flush`] cleared, as it was. Warns and does
    /// nothing if the PTE is not cleared, or if the page was shared since
    /// ([`MappedPte::restore_read_only`] puts it back then).
    pub fn restore(&mut self) {
        let PteState::Cleared(old) = self.state else {
            kernel::warn_on!(true);
            return;
        };
        // SAFETY: The value cleared, which maps the folio's page as the mapcount, reference
        // count and rmap still count it (type invariant).
        unsafe { self.store(old) };
        // INVARIANT: The PTE maps the folio again.
        self.state = PteState::Mapped;
    }

    /// Marks the anon-exclusive page as possibly shared (`folio_try_share_anon_rmap_pte()`),
    /// which needs the PTE cleared first; a page that is not exclusive is left as it is (and
    /// may still be restored). Fails when the page may be pinned, and when the PTE is not
    /// cleared (with a warning).
    pub fn try_share_anon_rmap(&mut self) -> Result {
        let PteState::Cleared(old) = self.state else {
            kernel::warn_on!(true);
            return Err(EINVAL);
        };
        if !self.folio.is_anon_exclusive() {
            return Ok(());
        }
        // SAFETY: Valid locked folio whose first page the cleared PTE mapped (type invariant).
        let r = unsafe {
            bindings::folio_try_share_anon_rmap_pte(self.folio.as_raw(), self.folio.first_page())
        };
        if r != 0 {
            return Err(EBUSY);
        }
        // INVARIANT: Cleared, and the page is no longer anon-exclusive.
        self.state = PteState::Shared(old);
        Ok(())
    }

    /// Puts back the value [`MappedPte::clear_flush`] cleared, clean and read-only, and
    /// returns it; a dirty entry's dirty bit moves to the folio first (C: the end of
    /// `write_protect_page()`). Warns and returns `None` if the PTE is not cleared.
    pub fn restore_read_only(&mut self) -> Option<Pte> {
        let (PteState::Cleared(old) | PteState::Shared(old)) = self.state else {
            kernel::warn_on!(true);
            return None;
        };
        Some(self.store_read_only(old))
    }

    /// Stores the cleared value `old`, clean and read-only, the dirty bit moved to the folio,
    /// and returns it.
    fn store_read_only(&mut self, old: Pte) -> Pte {
        if old.dirty() {
            self.folio.mark_dirty();
        }
        let mut new = old.mkclean();
        if new.write() {
            new = new.wrprotect();
        }
        // SAFETY: The value cleared, which maps the folio's page as the mapcount, reference
        // count and rmap still count it (type invariant), with fewer permissions.
        unsafe { self.store(new) };
        // INVARIANT: The PTE maps the folio again.
        self.state = PteState::Mapped;
        new
    }

    /// Maps `with` instead of the folio (C: `replace_page()` from the `pte_same()` check on):
    /// the new page's rmap and reference are taken, or, for the zero page, the mm's
    /// anonymous page count drops and its KSM zero page count rises; the TLB is flushed; then
    /// the folio's rmap and reference for this mapping are dropped, and its swap space freed
    /// if nothing maps it any more. `held` is the caller's own reference on the folio, which
    /// keeps it alive after this mapping's reference is dropped.
    ///
    /// Warns and fails (`EINVAL`), changing nothing, unless `held` is the folio, the PTE maps
    /// it read-only and clean and the page is no longer anon-exclusive (as
    /// `write_protect_page()` leaves it: no pin can be writing to it, and no dirty bit is
    /// lost), the area is a private one of normal pages (a page shared by KSM must be copied
    /// on write), and a KSM page replacing it is an order-0 KSM folio whose page is not
    /// anon-exclusive.
    pub fn replace(&mut self, held: &ARef<Folio>, with: Replacement<'_>) -> Result {
        let cur = self.get();
        if kernel::warn_on!(
            !matches!(self.state, PteState::Mapped)
                || !core::ptr::eq(held.as_raw(), self.folio.as_raw())
                || !cur.present()
                || cur.write()
                || cur.dirty()
                || cur.pfn() != self.folio.pfn()
                || self.folio.is_anon_exclusive()
                || self.vma.flags()
                    & (flags::SHARED
                        | flags::MAYSHARE
                        | flags::PFNMAP
                        | flags::MIXEDMAP
                        | flags::HUGETLB)
                    != 0
        ) {
            return Err(EINVAL);
        }
        let new = match with {
            Replacement::Ksm(KsmMapping(k)) => {
                // `PageAnonExclusive()` is only defined for anonymous pages: test it last.
                let exclusive = || {
                    // SAFETY: Reads a flag of a valid page, which is KSM so anonymous; C
                    // asserts it (`VM_BUG_ON_PAGE()`).
                    unsafe { bindings::PageAnonExclusive(k.first_page()) }
                };
                if kernel::warn_on!(!k.is_ksm() || k.is_large() || exclusive()) {
                    return Err(EINVAL);
                }
                // SAFETY: Valid folio and VMA, PTE lock held; the PTE maps the page just below.
                unsafe {
                    bindings::folio_get(k.as_raw());
                    bindings::folio_add_anon_rmap_pte(
                        k.as_raw(),
                        k.first_page(),
                        self.vma.as_ptr(),
                        self.pvmw.address,
                    )
                };
                Pte::for_folio(k, self.vma)
            }
            Replacement::KsmZero => {
                // The zero page is not anonymous memory; the dirty bit marks it as placed by
                // KSM, so that unmapping it keeps `ksm_zero_pages` exact.
                self.vma.mm().ksm_map_zero_page();
                // SAFETY: Valid mm.
                unsafe { bindings::dec_mm_anon_counter(self.vma.mm().as_raw()) };
                Pte::ksm_zero(self.vma, self.pvmw.address)
            }
        };
        // The invalidation of the range (type invariant) covers the change.
        self.clear_flush();
        // SAFETY: `new` maps a page whose rmap and reference were taken above, or the zero
        // page, which has none; the folio's rmap and reference for the old value are dropped
        // next.
        unsafe { self.store(new) };
        // SAFETY: The PTE no longer maps the folio's first page, whose rmap and reference
        // this mapping held; the caller holds its own reference.
        unsafe {
            bindings::folio_remove_rmap_pte(
                self.folio.as_raw(),
                self.folio.first_page(),
                self.vma.as_ptr(),
            );
        }
        if !self.folio.is_mapped() {
            self.folio.free_swap();
        }
        // SAFETY: As above: the reference of the mapping that is gone; `held` keeps the folio.
        unsafe { bindings::folio_put(self.folio.as_raw()) };
        // INVARIANT: Replaced.
        self.state = PteState::Replaced;
        Ok(())
    }
}

impl Drop for MappedPte<'_> {
    fn drop(&mut self) {
        // An entry left cleared would leave the folio counted for a mapping that is gone: put it
        // back, read-only if the page may be shared now.
        match self.state {
            PteState::Cleared(_) => {
                kernel::warn_on!(true);
                self.restore();
            }
            PteState::Shared(old) => {
                kernel::warn_on!(true);
                self.store_read_only(old);
            }
            PteState::Mapped | PteState::Replaced => {}
        }
        // SAFETY: By the type invariant the walk is not done yet.
        unsafe { bindings::page_vma_mapped_walk_done(&mut self.pvmw) };
    }
}

/// Whether a TLB flush of the mm is pending (`mm_tlb_flush_pending()`).
pub fn mm_tlb_flush_pending(vma: &VmaRef) -> bool {
    // SAFETY: Valid mm.
    unsafe { bindings::mm_tlb_flush_pending(vma.mm().as_raw()) }
}

/// An `MMU_NOTIFY_CLEAR` invalidation of the range `[start, end)` of an mm, in progress: lent to
/// the closure of [`with_mmu_notifier_clear`], between `mmu_notifier_invalidate_range_start()`
/// and `_end()`. Secondary MMUs (KVM, devices) drop their mappings of the range at the start
/// and may map it again only after the end, so a PTE of the range may be changed meanwhile
/// ([`MappedPte::find`] takes it).
///
/// # Invariants
///
/// The invalidation of `[start, end)` of `mm` started and does not end while this is borrowed.
pub struct MmuInvalidation {
    mm: *const bindings::mm_struct,
    start: usize,
    end: usize,
}

impl MmuInvalidation {
    /// Whether the page at `addr` of `mm` is in the range.
    fn covers(&self, mm: &Mm, addr: usize) -> bool {
        core::ptr::eq(self.mm, mm.as_raw())
            && self.start <= addr
            && addr.checked_add(PAGE_SIZE).is_some_and(|e| e <= self.end)
    }
}

/// Runs `f` between `mmu_notifier_invalidate_range_start()` and `_end()` of an
/// `MMU_NOTIFY_CLEAR` range `[start, end)` of the VMA's mm, and lends it the invalidation.
pub fn with_mmu_notifier_clear<T>(
    vma: &VmaRef,
    start: usize,
    end: usize,
    f: impl FnOnce(&MmuInvalidation) -> T,
) -> T {
    // SAFETY: All-zero is valid before `mmu_notifier_range_init()`.
    let mut range: bindings::mmu_notifier_range = unsafe { core::mem::zeroed() };
    // SAFETY: Valid mm; `range` stays in place until the end call below.
    unsafe {
        bindings::mmu_notifier_range_init_clear(&mut range, vma.mm().as_raw(), start, end);
        bindings::mmu_notifier_invalidate_range_start(&mut range);
    }
    // INVARIANT: Started above, ended below, after the last borrow.
    let inv = MmuInvalidation {
        mm: vma.mm().as_raw(),
        start,
        end,
    };
    let r = f(&inv);
    // SAFETY: Started above.
    unsafe { bindings::mmu_notifier_invalidate_range_end(&mut range) };
    r
}

/// Faults `addr` in `vma` with `FAULT_FLAG_UNSHARE | FAULT_FLAG_REMOTE`: breaks COW sharing
/// of a read-only anonymous page (a KSM page or the zero page) by giving this mapping its own
/// exclusive copy. Returns the `VM_FAULT_*` bits.
///
/// Without `FAULT_FLAG_VMA_LOCK`, `handle_mm_fault()` needs the mmap lock, which the type of
/// `vma` proves; it does not drop it (no `FAULT_FLAG_ALLOW_RETRY`).
pub fn fault_unshare(vma: &VmaMmapRead, addr: usize) -> u32 {
    // `handle_mm_fault()` trusts the address to be in the VMA: one outside it would be given a
    // page table entry that no VMA covers.
    if addr < vma.start() || addr >= vma.end() {
        return bindings::vm_fault_reason_VM_FAULT_SIGSEGV;
    }
    // SAFETY: Valid VMA with its mm's mmap lock held (the type invariant of `VmaMmapRead`),
    // and an address in it.
    unsafe {
        bindings::handle_mm_fault(
            vma.as_ptr(),
            addr,
            bindings::fault_flag_FAULT_FLAG_UNSHARE | bindings::fault_flag_FAULT_FLAG_REMOTE,
            core::ptr::null_mut(),
        )
    }
}
