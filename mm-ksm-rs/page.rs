// SPDX-License-Identifier: GPL-2.0

//! Pages being scanned or merged: [`PageRef`], the checksum and comparison of their contents,
//! and the lookup of a page in an address space.
//!
//! The bottom layer of the crate, below the trees (which order pages by what this module
//! computes) and the merge code: it uses nothing of the crate.

use crate::ZERO_CHECKSUM;
use kernel::{
    error::Result,
    mm::{
        folio::Folio,
        pgtable::{self, VmaMmapRead},
        virt::flags,
        Mm, MmapReadGuard,
    },
    page::PAGE_SIZE,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
    },
};

/// A page being scanned or merged: page `index` of `folio`, with a reference on the folio.
///
/// Pages of large folios (THP) are compared where they are; the folio is split only when one
/// of its pages is about to be merged, under the folio trylock, after the area was found
/// still mergeable (`merge::try_to_merge_one_page()`), as in mm/ksm.c.
pub(crate) struct PageRef {
    /// The folio, referenced.
    pub(crate) folio: ARef<Folio>,
    /// The page within the folio.
    pub(crate) index: usize,
}

/// Whether pages are checksummed with CRC-32C rather than xxhash: set once at boot, by
/// [`choose_checksum`].
static CRC32C: Atomic<bool> = Atomic::new(false);

/// Checksum of a page's contents (`calc_checksum()`).
///
/// mm/ksm.c computes xxhash with seed 0, truncated to 32 bits, and so does this unless the
/// CPU computes CRC-32C ([`choose_checksum`]); then it is `crc32c(~0, page)`. Either
/// serves both purposes: noticing pages that change between scans, and ordering the trees
/// ([`crate::order`]), where equal bytes give equal checksums and a collision only costs a
/// comparison of bytes.
pub(crate) fn page_checksum(bytes: &[u8]) -> u32 {
    if CRC32C.load(Relaxed) {
        kernel::crc32::crc32c(!0, bytes)
    } else {
        kernel::xxhash::xxhash(bytes, 0) as u32
    }
}

/// Chooses the page checksum, once, at `late_initcall` time (`ksm_rs_choose_checksum()`,
/// called from glue.c), and computes that of a page of zeroes with it.
///
/// CRC-32C where the CPU has instructions for it (SSE 4.2 on x86, the CRC32 extension on
/// arm64): ksmd checksums every page it scans, and under QEMU `-icount` (`cargo xtask bench`)
/// xxh64 was two thirds of ksmd's instructions on unique memory. The CRC library enables its
/// CPU paths in its own `subsys_initcall`, which runs after KSM's (`lib/` links after `mm/`),
/// hence the late choice. Hardly any user code runs before it (usermode helpers at most), and
/// a checksum of the other function would only make a page look changed once, or miss a
/// merge, never merge different bytes (they are compared first): the trees keep each key as
/// it was computed, so their order stays total.
pub(crate) fn choose_checksum() {
    if !kernel::crc32::crc32c_optimized() {
        return;
    }
    // The CRC of a page of zeroes, a piece at a time: nothing to allocate.
    let zeroes = [0u8; 256];
    let zero = (0..PAGE_SIZE / zeroes.len()).fold(!0, |crc, _| kernel::crc32::crc32c(crc, &zeroes));
    // A reader that sees the flag before the zero checksum misses a zero page once.
    ZERO_CHECKSUM.store(zero, Relaxed);
    CRC32C.store(true, Relaxed);
    kernel::pr_debug!("ksm: page checksums by crc32c\n");
}

impl PageRef {
    /// Checksum of the contents, to notice pages that change (`calc_checksum()`): the same
    /// function as [`page_checksum`], computed by C over the page as user space may be
    /// writing it.
    pub(crate) fn checksum(&self) -> u32 {
        Self::checksum_of(&self.folio, self.index)
    }

    /// The same checksum of page `index` of `folio`.
    pub(crate) fn checksum_of(folio: &Folio, index: usize) -> u32 {
        if CRC32C.load(Relaxed) {
            folio.page_crc32c(index, !0)
        } else {
            folio.page_xxhash(index, 0) as u32
        }
    }

    /// Compares the contents with those of the (order-0) folio `other`.
    pub(crate) fn cmp_folio(&self, other: &Folio) -> core::cmp::Ordering {
        self.folio.cmp_page_contents(self.index, other, 0)
    }

    /// Compares the contents with those of another page.
    pub(crate) fn cmp(&self, other: &PageRef) -> core::cmp::Ordering {
        self.folio
            .cmp_page_contents(self.index, &other.folio, other.index)
    }

    /// Whether both are the same page.
    pub(crate) fn same_page(&self, other: &PageRef) -> bool {
        core::ptr::eq(self.folio.as_raw(), other.folio.as_raw()) && self.index == other.index
    }

    /// Makes the page an order-0 folio of its own, splitting a large folio (trylock: a
    /// locked folio is left for the next scan); unchanged if the split fails.
    pub(crate) fn split(&mut self) -> Result {
        Folio::split_to_page(&mut self.folio, self.index)?;
        self.index = 0;
        Ok(())
    }
}

/// The mergeable, anonymous area at `addr`, if there still is one (`find_mergeable_vma()`).
pub(crate) fn find_mergeable_vma<'a>(
    g: &'a MmapReadGuard<'_>,
    addr: usize,
) -> Option<&'a VmaMmapRead> {
    let vma = VmaMmapRead::lookup(g, addr)?;
    (vma.flags() & flags::MERGEABLE != 0 && vma.anon_vma().is_some()).then_some(vma)
}

/// Runs `f` with the mmap read lock of `mm`, unless the mm is exiting.
///
/// Holding `mm_users` (rather than C's bare `mmap_read_lock()` plus `ksm_test_exit()`) means
/// the address space cannot be torn down under us at all. If the process exits meanwhile, the
/// final `mmput()` tears it down here, synchronously: see `scan_get_next_rmap_item()` in
/// [`crate::ksmd`] for why not `mmput_async()`.
pub(crate) fn with_mm<T>(mm: &Mm, f: impl FnOnce(&MmapReadGuard<'_>) -> T) -> Option<T> {
    let mmu = mm.mmget_not_zero()?;
    let g = mmu.mmap_read_lock();
    Some(f(&g))
}

/// The anonymous page at `addr` in `mm` (an rmap item's), with a reference
/// (`get_mergeable_page()`).
pub(crate) fn get_mergeable_page(mm: &Mm, addr: usize) -> Option<PageRef> {
    with_mm(mm, |g| {
        let vma = find_mergeable_vma(g, addr)?;
        let fw = pgtable::FolioWalk::start(vma, addr)?;
        let folio = fw.folio();
        if folio.is_zone_device() || !folio.is_anon() {
            return None;
        }
        let page = PageRef {
            folio: ARef::from(folio),
            index: fw.page_index(),
        };
        drop(fw);
        pgtable::flush_anon_page(vma, &page.folio, page.index, addr);
        Some(page)
    })
    .flatten()
}

#[kernel::macros::kunit_tests(ksm_rs_page)]
mod tests {
    use super::*;
    use kernel::prelude::*;

    #[test]
    fn checksum_spots_changes() {
        let mut page = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL).unwrap();
        let zero = page_checksum(&page);
        // ZERO_CHECKSUM is computed at init the same way.
        assert_eq!(zero, ZERO_CHECKSUM.load(Relaxed));
        page[PAGE_SIZE - 1] = 1;
        let one = page_checksum(&page);
        assert_ne!(one, zero);
        page[PAGE_SIZE - 1] = 0;
        assert_eq!(page_checksum(&page), zero);
        page[0] = 1;
        assert_ne!(page_checksum(&page), zero);
        assert_ne!(page_checksum(&page), one);
    }
}
