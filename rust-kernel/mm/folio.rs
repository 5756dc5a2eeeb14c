// SPDX-License-Identifier: GPL-2.0

//! Folios: the kernel's unit of memory that is mapped, locked and reference counted together.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/page-flags.h`](srctree/include/linux/page-flags.h)
//!
//! [`Folio`] wraps `struct folio`. Owned references are `ARef<Folio>` (`folio_get()` /
//! `folio_put()`); the folio lock is [`FolioLockGuard`]. Operations that the C code only allows
//! under the folio lock are methods of the guard, so holding the lock is checked at compile time.

use crate::{
    bindings,
    page::PAGE_SIZE,
    sync::aref::{ARef, AlwaysRefCounted},
    types::Opaque,
};
use core::{ops::Deref, ptr::NonNull};

/// The low bits of `folio->mapping` that tag a KSM folio (`FOLIO_MAPPING_KSM`).
pub const FOLIO_MAPPING_KSM: usize = bindings::FOLIO_MAPPING_KSM as usize;
/// All tag bits of `folio->mapping` (`FOLIO_MAPPING_FLAGS`).
pub const FOLIO_MAPPING_FLAGS: usize = bindings::FOLIO_MAPPING_FLAGS as usize;

/// A `struct folio`.
///
/// # Invariants
///
/// A `&Folio` points to a valid `struct folio`: the caller that created it holds a reference
/// or otherwise guarantees (page table lock, folio lock, ...) that the folio is not freed, and
/// that its reference count is not zero (free or frozen), while the reference is used. It is
/// not device-private memory, which has no kernel mapping. Reference counts are taken with
/// `folio_get()`.
#[repr(transparent)]
pub struct Folio(Opaque<bindings::folio>);

// SAFETY: Folios are not tied to a thread; `folio_put()` may run on any thread.
unsafe impl Send for Folio {}
// SAFETY: Every method is safe to call concurrently; the C functions do their own locking.
unsafe impl Sync for Folio {}

// SAFETY: `folio_get()`/`folio_put()` keep the folio alive while the count is held.
unsafe impl AlwaysRefCounted for Folio {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the folio is valid and has a reference already.
        unsafe { bindings::folio_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { bindings::folio_put(obj.cast().as_ptr()) };
    }
}

impl Folio {
    /// Creates a `&Folio` from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid folio that stays valid (referenced or otherwise pinned) for
    /// `'a`, with a reference count that is not zero (free or frozen) meanwhile, and that is not
    /// device-private memory.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *const bindings::folio) -> &'a Self {
        // SAFETY: `Folio` is a transparent wrapper; the caller guarantees validity.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw `struct folio` pointer.
    #[inline]
    pub fn as_raw(&self) -> *mut bindings::folio {
        self.0.get()
    }

    /// Returns the first page of the folio.
    #[inline]
    pub fn first_page(&self) -> *mut bindings::page {
        // SAFETY: The folio is valid by the type invariant.
        unsafe { bindings::folio_page(self.as_raw(), 0) }
    }

    /// The page frame number of the first page.
    #[inline]
    pub fn pfn(&self) -> usize {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_pfn(self.as_raw()) as usize }
    }

    /// The NUMA node the folio lives on.
    #[inline]
    pub fn nid(&self) -> i32 {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_nid(self.as_raw()) }
    }

    /// Whether this is an anonymous folio (includes KSM folios).
    #[inline]
    pub fn is_anon(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_anon(self.as_raw()) }
    }

    /// Whether this is a KSM folio (`folio->mapping` tagged with `FOLIO_MAPPING_KSM`).
    #[inline]
    pub fn is_ksm(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_ksm(self.as_raw()) }
    }

    /// Whether the folio has more than one page.
    #[inline]
    pub fn is_large(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_large(self.as_raw()) }
    }

    /// Whether the folio is in the swap cache.
    #[inline]
    pub fn is_swapcache(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_swapcache(self.as_raw()) }
    }

    /// Whether the folio is dirty.
    #[inline]
    pub fn is_dirty(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_dirty(self.as_raw()) }
    }

    /// Whether the folio is ZONE_DEVICE memory.
    #[inline]
    pub fn is_zone_device(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_is_zone_device(self.as_raw()) }
    }

    /// Number of page table mappings of the folio.
    #[inline]
    pub fn mapcount(&self) -> i32 {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_mapcount(self.as_raw()) }
    }

    /// Whether any page of the folio is mapped into a page table.
    #[inline]
    pub fn is_mapped(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_mapped(self.as_raw()) }
    }

    /// The reference count.
    #[inline]
    pub fn ref_count(&self) -> i32 {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_ref_count(self.as_raw()) }
    }

    /// `READ_ONCE(folio->mapping)` as an integer, tag bits included.
    #[inline]
    pub fn raw_mapping(&self) -> usize {
        // SAFETY: The folio is valid; the helper reads the field with `READ_ONCE()`.
        unsafe { bindings::folio_raw_mapping(self.as_raw()) as usize }
    }

    /// The `anon_vma` of an anonymous, non-KSM folio, or null (`folio_anon_vma()`).
    #[inline]
    pub fn anon_vma(&self) -> *mut bindings::anon_vma {
        let mapping = self.raw_mapping();
        let anon = bindings::FOLIO_MAPPING_ANON as usize;
        if mapping & FOLIO_MAPPING_FLAGS != anon {
            return core::ptr::null_mut();
        }
        (mapping - anon) as *mut bindings::anon_vma
    }

    /// The page offset of the folio in its mapping, or in the linear anonymous address space
    /// of its VMA (`folio->index`).
    #[inline]
    pub fn index(&self) -> usize {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_index(self.as_raw()) }
    }

    /// Whether the folio's contents are valid (`folio_test_uptodate()`).
    #[inline]
    pub fn is_uptodate(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_uptodate(self.as_raw()) }
    }

    /// Whether page `index` of the folio has a memory error (`PageHWPoison()`).
    #[inline]
    pub fn is_hwpoison(&self, index: usize) -> bool {
        // SAFETY: A valid page of the folio.
        unsafe { bindings::PageHWPoison(self.page(index)) }
    }

    /// Allocates a new order-0 folio for user memory at `addr` in `vma`, charged to its mm's
    /// memory cgroup, and copies page `index` of `self` into it with a machine-check safe copy,
    /// as the swap-in path does when a page may not be reused in place.
    ///
    /// Returns the new folio, dirty, up to date and locked (it is not visible to anyone yet,
    /// so the lock bit is simply set), `Ok(None)` if there is no memory for it, or `EHWPOISON`
    /// if the source page has a memory error.
    pub fn copy_for_user(
        &self,
        index: usize,
        vma: &crate::mm::virt::VmaRef,
        addr: usize,
    ) -> crate::error::Result<Option<ARef<Folio>>> {
        // SAFETY: A valid VMA; the allocation is ours.
        let new = unsafe {
            bindings::vma_alloc_folio(bindings::GFP_HIGHUSER_MOVABLE, 0, vma.as_ptr(), addr)
        };
        if new.is_null() {
            return Ok(None);
        }
        // SAFETY: We own the only reference of the new folio.
        let new: ARef<Folio> = unsafe { ARef::from_raw(NonNull::new_unchecked(new.cast())) };
        // SAFETY: A new folio, charged to the VMA's mm.
        if unsafe {
            bindings::mem_cgroup_charge(new.as_raw(), vma.mm().as_raw(), bindings::GFP_KERNEL)
        } != 0
        {
            return Ok(None);
        }
        // SAFETY: Valid pages; the copy reports a machine check on the source.
        if unsafe {
            bindings::copy_mc_user_highpage(new.page(0), self.page(index), addr, vma.as_ptr())
        } != 0
        {
            return Err(crate::error::code::EHWPOISON);
        }
        // SAFETY: The folio is ours alone: no atomic flag operations needed.
        unsafe {
            bindings::folio_set_dirty(new.as_raw());
            bindings::__folio_mark_uptodate(new.as_raw());
            bindings::__folio_set_locked(new.as_raw());
        }
        Ok(Some(new))
    }

    /// Marks the folio accessed for reclaim (`folio_mark_accessed()`).
    #[inline]
    pub fn mark_accessed(&self) {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_mark_accessed(self.as_raw()) };
    }

    /// The `struct page` of page `index` of the folio.
    ///
    /// # Panics
    ///
    /// If `index` is not below the number of pages of the folio.
    #[inline]
    pub fn page(&self, index: usize) -> *mut bindings::page {
        assert!(index < self.nr_pages());
        // SAFETY: The folio is valid and `index` is in range.
        unsafe { bindings::folio_page(self.as_raw(), index) }
    }

    /// The number of pages in the folio.
    #[inline]
    pub fn nr_pages(&self) -> usize {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_nr_pages(self.as_raw()) as usize }
    }

    /// The `xxhash()` of the contents of page `index`, with `seed`.
    ///
    /// The contents may change while they are read (user space may be writing the page): the
    /// bytes are only read by C code, never through a Rust reference, and the result is then
    /// the hash of some mix of old and new bytes, which callers must tolerate (KSM compares
    /// the bytes again under write protection before it merges anything).
    #[cfg(CONFIG_XXHASH)]
    pub fn page_xxhash(&self, index: usize, seed: u64) -> usize {
        let page = self.page(index);
        // SAFETY: `page` is a valid page of this folio; the mapping is undone below.
        let addr = unsafe { bindings::kmap_local_page(page) };
        // SAFETY: `kmap_local_page()` maps a whole page at `addr`, read by C only. `xxhash()`
        // is `xxh64()` on 64-bit and `xxh32()` on 32-bit kernels.
        let h = unsafe {
            if usize::BITS == 64 {
                bindings::xxh64(addr, PAGE_SIZE, seed) as usize
            } else {
                bindings::xxh32(addr, PAGE_SIZE, seed as u32) as usize
            }
        };
        // SAFETY: `addr` was mapped by `kmap_local_page()` just above.
        unsafe { bindings::kunmap_local(addr) };
        h
    }

    /// The CRC-32C of page `index`, continuing from `crc` (`crc32c()`, see
    /// [`crate::crc32::crc32c`]).
    ///
    /// Computed by C, over memory that user space may be writing: no Rust reference to the
    /// page's bytes is made.
    #[cfg(CONFIG_CRC32 = "y")]
    pub fn page_crc32c(&self, index: usize, crc: u32) -> u32 {
        let page = self.page(index);
        // SAFETY: `page` is a valid page of this folio; the mapping is undone below.
        let addr = unsafe { bindings::kmap_local_page(page) };
        // SAFETY: `kmap_local_page()` maps a whole page at `addr`, read by C only.
        let c = unsafe { bindings::crc32c(crc, addr, PAGE_SIZE) };
        // SAFETY: `addr` was mapped by `kmap_local_page()` just above.
        unsafe { bindings::kunmap_local(addr) };
        c
    }

    /// Whether page `index` has the contents of the shared zero page for user address `addr`
    /// (`pages_identical(page, ZERO_PAGE(addr))`).
    ///
    /// This goes through `memcmp_pages()`, which architectures override: on arm64 a page
    /// with MTE tags never compares equal, since merging it would lose its tags.
    #[inline]
    pub fn page_identical_to_zero_page(&self, index: usize, addr: usize) -> bool {
        // SAFETY: Both are valid pages; `memcmp_pages()` maps them itself.
        unsafe { bindings::memcmp_pages(self.page(index), bindings::zero_page(addr)) == 0 }
    }

    /// Compares the bytes of page `index` with page `other_index` of `other` (`memcmp_pages()`).
    #[inline]
    pub fn cmp_page_contents(
        &self,
        index: usize,
        other: &Folio,
        other_index: usize,
    ) -> core::cmp::Ordering {
        // SAFETY: Both pages are valid; `memcmp_pages()` maps them itself.
        let r = unsafe { bindings::memcmp_pages(self.page(index), other.page(other_index)) };
        r.cmp(&0)
    }

    /// Splits a transparent huge page into order-0 folios (`split_huge_page()`) and makes
    /// `*this` the folio of page `index`, which inherits the reference `*this` held. Does
    /// nothing to an order-0 folio. Fails, leaving `*this` unchanged, with `EINVAL` for a large
    /// folio that is not a THP (hugetlb, device memory: `split_huge_page()` must never see
    /// those), `EBUSY` if the folio is locked by someone else, or `EAGAIN` if it cannot be
    /// split (pinned, say).
    ///
    /// The folio lock is taken with a trylock and dropped again.
    pub fn split_to_page(this: &mut ARef<Folio>, index: usize) -> crate::error::Result {
        if !this.is_large() {
            return Ok(());
        }
        // SAFETY: The folio is valid (we hold a reference); these read its flags.
        let thp = unsafe {
            !bindings::folio_test_hugetlb(this.as_raw())
                && bindings::folio_test_large_rmappable(this.as_raw())
        };
        if !thp {
            return Err(crate::error::code::EINVAL);
        }
        let page = this.page(index);
        let Some(guard) = this.try_lock() else {
            return Err(crate::error::code::EBUSY);
        };
        // SAFETY: The folio is locked and we hold a reference, as `split_huge_page()` needs.
        if unsafe { bindings::split_huge_page(page) } != 0 {
            drop(guard);
            return Err(crate::error::code::EAGAIN);
        }
        // The lock and our reference now belong to the order-0 folio of `page`; the other new
        // folios are unlocked. Neither must be released through the old head.
        core::mem::forget(guard);
        // SAFETY: `page` is valid (we hold its folio's reference).
        let folio = unsafe { bindings::page_folio(page) };
        // SAFETY: The split left this folio locked by us.
        unsafe { bindings::folio_unlock(folio) };
        // SAFETY: We own the reference carried over by the split, to this valid folio.
        let new = unsafe { ARef::from_raw(NonNull::new_unchecked(folio.cast::<Folio>())) };
        // The old `ARef` no longer owns a reference of its own: it moved to `new`.
        let _ = ARef::into_raw(core::mem::replace(this, new));
        Ok(())
    }

    /// Returns `true` when the folio is locked (by anyone).
    #[inline]
    pub fn is_locked(&self) -> bool {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_test_locked(self.as_raw()) }
    }

    /// Tries to take the folio lock without sleeping.
    pub fn try_lock(&self) -> Option<FolioLockGuard<'_>> {
        // SAFETY: The folio is valid.
        if unsafe { bindings::folio_trylock(self.as_raw()) } {
            // INVARIANT: We just took the lock.
            Some(FolioLockGuard(self))
        } else {
            None
        }
    }

    /// Takes the folio lock, sleeping if needed.
    #[inline]
    pub fn lock(&self) -> FolioLockGuard<'_> {
        // SAFETY: The folio is valid.
        unsafe { bindings::folio_lock(self.as_raw()) };
        // INVARIANT: We just took the lock.
        FolioLockGuard(self)
    }
}

/// A folio on which the caller holds no reference: it may be freed, split or reused at any
/// moment.
///
/// Only the operations that C allows on such a folio are offered: a speculative reference
/// ([`UnrefFolio::try_get`]) and lockless reads of `folio->mapping`, the swap cache flag and
/// the node. This is how a structure that points at a folio without pinning it (KSM's stable
/// nodes, through `folio->mapping`) checks whether the folio still is what it points at.
///
/// # Invariants
///
/// `self.0` is the memory of a `struct folio` (or `struct page`) in the memory map, which
/// stays valid memory while the page frame exists, whatever the folio's state.
#[repr(transparent)]
pub struct UnrefFolio(Opaque<bindings::folio>);

// SAFETY: Every method is safe to call concurrently; they only read the folio locklessly or
// use atomic operations designed for folios that are concurrently freed.
unsafe impl Sync for UnrefFolio {}

impl UnrefFolio {
    /// The folio of a page frame number, without taking a reference (`pfn_folio()`).
    ///
    /// # Safety
    ///
    /// `pfn` must be a page frame number with a `struct page` (a `pfn_valid()` frame) that
    /// stays in the memory map for `'a` (memory hot-remove must be excluded by the caller).
    #[inline]
    pub unsafe fn from_pfn<'a>(pfn: usize) -> &'a Self {
        // SAFETY: The caller guarantees that `pfn` has a `struct page`.
        let page = unsafe { bindings::pfn_to_page(pfn) };
        // SAFETY: `page` is in the memory map; `page_folio()` only reads it.
        let folio = unsafe { bindings::page_folio(page) };
        // SAFETY: `UnrefFolio` is a transparent wrapper; by the caller's guarantee the memory
        // stays part of the memory map for `'a`.
        unsafe { &*folio.cast::<Self>() }
    }

    /// Access a folio given a raw pointer, without taking a reference.
    ///
    /// # Safety
    ///
    /// `folio` must point at a `struct folio` in the memory map that stays there for `'a`.
    #[inline]
    pub(crate) unsafe fn from_raw<'a>(folio: *mut bindings::folio) -> &'a Self {
        // SAFETY: `UnrefFolio` is a transparent wrapper; the memory stays part of the memory
        // map for `'a`, as the caller guarantees.
        unsafe { &*folio.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut bindings::folio {
        self.0.get()
    }

    /// Whether the folio is a KSM folio, as of this lockless read of its mapping.
    #[inline]
    pub fn is_ksm(&self) -> bool {
        self.raw_mapping() & FOLIO_MAPPING_FLAGS == FOLIO_MAPPING_KSM
    }

    /// Speculatively takes a reference (`folio_try_get()`): fails when the count is zero,
    /// that is when the folio is free, being freed or frozen.
    ///
    /// A folio obtained this way may have been reused since the caller looked it up: check
    /// its identity (e.g. `folio->mapping`) again after the reference is taken. Refuses a
    /// ZONE_DEVICE folio.
    pub fn try_get(&self) -> Option<ARef<Folio>> {
        // SAFETY: By the type invariant the memory is valid; `folio_try_get()` is designed
        // for folios that may be concurrently freed.
        if !unsafe { bindings::folio_try_get(self.as_raw()) } {
            return None;
        }
        // SAFETY: We hold a reference now: the folio is valid.
        if unsafe { bindings::folio_is_zone_device(self.as_raw()) } {
            // ZONE_DEVICE memory (a device's, maybe without a kernel mapping) is no `Folio`.
            // SAFETY: Drops the reference just taken.
            unsafe { bindings::folio_put(self.as_raw()) };
            return None;
        }
        // SAFETY: We own the reference just taken, which keeps the folio valid and its count
        // above zero, and it is not device memory: a `Folio`.
        Some(unsafe { ARef::from_raw(NonNull::new_unchecked(self.as_raw().cast())) })
    }

    /// `READ_ONCE(folio->mapping)` as an integer, tag bits included.
    #[inline]
    pub fn raw_mapping(&self) -> usize {
        // SAFETY: By the type invariant the memory is valid; the helper reads the field
        // with `READ_ONCE()`.
        unsafe { bindings::folio_raw_mapping(self.as_raw()) as usize }
    }

    /// Whether the folio is in the swap cache, as of this lockless read.
    #[inline]
    pub fn is_swapcache(&self) -> bool {
        // SAFETY: By the type invariant the memory is valid; this reads the flags word.
        unsafe { bindings::folio_test_swapcache(self.as_raw()) }
    }

    /// The NUMA node of the page frame (`pfn_to_nid()`): it does not change while the frame
    /// exists.
    #[inline]
    pub fn nid(&self) -> i32 {
        // SAFETY: By the type invariant the memory is valid; the node is kept in the flags.
        unsafe { bindings::folio_nid(self.as_raw()) }
    }
}

/// The folio lock of a [`Folio`], released on drop.
///
/// # Invariants
///
/// The folio lock of `self.0` is held by this guard.
pub struct FolioLockGuard<'a>(&'a Folio);

impl Deref for FolioLockGuard<'_> {
    type Target = Folio;

    fn deref(&self) -> &Folio {
        self.0
    }
}

impl Drop for FolioLockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold the lock.
        unsafe { bindings::folio_unlock(self.0.as_raw()) };
    }
}

impl<'a> FolioLockGuard<'a> {
    /// A guard for a folio that the caller has locked, for C callbacks that are called with
    /// the folio locked. Dropping the guard unlocks the folio: wrap it in `ManuallyDrop` if
    /// the lock belongs to someone else.
    ///
    /// # Safety
    ///
    /// The folio must be locked, and stay locked while the guard is used.
    #[inline]
    pub unsafe fn assume_locked(folio: &'a Folio) -> Self {
        // INVARIANT: The caller guarantees that the lock is held.
        Self(folio)
    }
}

impl FolioLockGuard<'_> {
    /// Marks the folio dirty (`folio_mark_dirty()`).
    #[inline]
    pub fn mark_dirty(&self) {
        // SAFETY: The folio is valid and locked, as `folio_mark_dirty()` wants for anon folios.
        unsafe { bindings::folio_mark_dirty(self.as_raw()) };
    }

    /// Whether the first page is exclusive to one anonymous mapping (`PageAnonExclusive()`).
    #[inline]
    pub fn is_anon_exclusive(&self) -> bool {
        // `PageAnonExclusive()` is only defined for anonymous pages (a `VM_BUG_ON` otherwise).
        // SAFETY: The folio is valid and locked.
        self.is_anon() && unsafe { bindings::PageAnonExclusive(self.first_page()) }
    }

    /// Drops the swap space of an unmapped folio (`folio_free_swap()`).
    #[inline]
    pub fn free_swap(&self) {
        // SAFETY: The folio is valid and locked.
        unsafe { bindings::folio_free_swap(self.as_raw()) };
    }

    /// Stores `mapping` (a pointer with tag bits in its low bits) in `folio->mapping`.
    ///
    /// # Safety
    ///
    /// The value must be something every reader of this folio's mapping understands: for a KSM
    /// implementation, a stable node pointer tagged with [`FOLIO_MAPPING_KSM`], set on an
    /// anonymous folio that is not exclusive to one mapping.
    #[inline]
    pub unsafe fn set_raw_mapping(&self, mapping: usize) {
        // SAFETY: The folio is valid and locked; the caller vouches for the value.
        unsafe { bindings::folio_set_raw_mapping(self.as_raw(), mapping as *mut _) };
    }
}

#[cfg(CONFIG_RUST_FOLIO_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_folio)]
mod tests {
    use super::*;
    use crate::{
        alloc::{flags::*, KVec},
        page::Page,
        prelude::*,
    };

    /// A zeroed order-0 page, and its folio, borrowed for as long as the page lives.
    fn with_zeroed_folio(f: impl FnOnce(&Page, &Folio)) -> Result {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        // SAFETY: `page` holds the only reference of an order-0 folio for this whole call.
        let folio = unsafe { Folio::from_raw(bindings::page_folio(page.as_ptr())) };
        f(&page, folio);
        Ok(())
    }

    fn write_byte(page: &Page, offset: usize, v: u8) {
        // SAFETY: One byte inside the page; no one else accesses our new page.
        assert!(unsafe { page.write_raw(&v, offset, 1) }.is_ok());
    }

    #[test]
    fn zero_page_identity() -> Result {
        with_zeroed_folio(|page, folio| {
            assert!(folio.page_identical_to_zero_page(0, 0));
            write_byte(page, PAGE_SIZE - 1, 1);
            assert!(!folio.page_identical_to_zero_page(0, 0));
            write_byte(page, PAGE_SIZE - 1, 0);
            assert!(folio.page_identical_to_zero_page(0, 0));
        })
    }

    #[test]
    fn compare_contents() -> Result {
        with_zeroed_folio(|a_page, a| {
            let r = with_zeroed_folio(|b_page, b| {
                assert_eq!(a.cmp_page_contents(0, b, 0), core::cmp::Ordering::Equal);
                write_byte(b_page, 100, 1);
                assert_eq!(a.cmp_page_contents(0, b, 0), core::cmp::Ordering::Less);
                write_byte(a_page, 100, 2);
                assert_eq!(a.cmp_page_contents(0, b, 0), core::cmp::Ordering::Greater);
            });
            assert!(r.is_ok());
        })
    }

    #[cfg(CONFIG_XXHASH)]
    #[test]
    fn page_hash_is_the_hash_of_its_bytes() -> Result {
        let mut bytes = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        with_zeroed_folio(|page, folio| {
            let zero = folio.page_xxhash(0, 0);
            assert_eq!(zero, crate::xxhash::xxhash(&bytes, 0));
            write_byte(page, 17, 0x5a);
            bytes[17] = 0x5a;
            let h = folio.page_xxhash(0, 0);
            assert_eq!(h, crate::xxhash::xxhash(&bytes, 0));
            assert_ne!(h, zero);
            assert_ne!(folio.page_xxhash(0, 1), h);
            #[cfg(CONFIG_CRC32 = "y")]
            {
                let c = folio.page_crc32c(0, !0);
                assert_eq!(c, crate::crc32::crc32c(!0, &bytes));
                assert_ne!(folio.page_crc32c(0, 0), c);
            }
        })
    }

    #[test]
    fn unreferenced_folio_of_a_pfn() -> Result {
        with_zeroed_folio(|_, folio| {
            // SAFETY: The pfn of a page we hold.
            let u = unsafe { UnrefFolio::from_pfn(folio.pfn()) };
            assert_eq!(u.nid(), folio.nid());
            assert_eq!(u.raw_mapping(), 0);
            assert!(!u.is_swapcache());
            let before = folio.ref_count();
            let got = u.try_get();
            assert!(got
                .as_ref()
                .is_some_and(|g| core::ptr::eq(g.as_raw(), folio.as_raw())));
            assert_eq!(folio.ref_count(), before + 1);
            drop(got);
            assert_eq!(folio.ref_count(), before);
        })
    }

    #[test]
    fn split_of_a_small_folio_is_a_no_op() -> Result {
        with_zeroed_folio(|_, folio| {
            let mut r: ARef<Folio> = ARef::from(folio);
            assert!(Folio::split_to_page(&mut r, 0).is_ok());
            assert!(core::ptr::eq(r.as_raw(), folio.as_raw()));
        })
    }
}
