// SPDX-License-Identifier: GPL-2.0

//! Merging: turning identical anonymous pages into one write-protected KSM page.
//!
//! Merging a page takes its folio lock (trylock: ksmd prefers to move on), write-protects the
//! PTE that maps it after checking that nobody else (O_DIRECT, GUP pins) holds a reference,
//! and then either turns the folio into a KSM folio or replaces the PTE with one that maps an
//! existing KSM page (or the zero page), all under the page table lock and inside an mmu
//! notifier invalidation, exactly as mm/ksm.c.

use crate::{
    node::{self, ItemRef, RmapItem},
    page::{find_mergeable_vma, with_mm, PageRef},
    stable_tree::{self, folio_stable_node, Match},
    state::USE_ZERO_PAGES,
    unmerge::break_ksm,
    unstable_tree::{self, remove_rmap_item_from_tree},
    Ksm, ZERO_CHECKSUM,
};
use kernel::{
    error::{code::*, Result},
    mm::{
        folio::{Folio, FolioLockGuard, FOLIO_MAPPING_KSM},
        pgtable::{self, KsmMapping, MappedPte, Pte, Replacement},
        virt::VmaRef,
    },
    page::PAGE_SIZE,
    sync::{aref::ARef, atomic::Relaxed},
};

/// Write-protects the PTE mapping `folio` in `vma` at `addr` and checks that no one else is
/// using the page; returns the resulting PTE (`write_protect_page()`).
///
/// Refuses a folio that `vma` maps at another address than `addr`, the address of the
/// rmap_item being merged: ksmd found the page there with the mmap lock held, but has dropped
/// it since, and `UFFDIO_MOVE` may have moved the page within the area meanwhile, or
/// `mremap()` moved it below `addr` and grown the moved area in place over `addr`. Merged
/// where it is now, the page would be recorded at `addr` for the reverse map, which looks
/// there and never finds the mapping: reclaim, migration, memory failure and offlining could
/// not unmap the KSM page until ksmd scanned the mm again (mm/ksm.c did that until it got
/// the same check). Under the folio lock (`UFFDIO_MOVE` takes it) and the mmap read lock
/// (`mremap()` takes it for writing) the address cannot change any more: the check holds
/// until the PTE is replaced.
fn write_protect_page(vma: &VmaRef, folio: &FolioLockGuard<'_>, addr: usize) -> Option<Pte> {
    if folio.is_large() {
        return None;
    }
    if pgtable::folio_address_in_vma(folio, vma)? != addr {
        return None;
    }
    pgtable::with_mmu_notifier_clear(vma, addr, addr + PAGE_SIZE, |inv| {
        let mut m = MappedPte::find(inv, folio, vma)?;
        let entry = m.get();
        // PFN swap entries that map pages (device-exclusive): give up.
        if !entry.present() {
            return None;
        }
        let anon_exclusive = folio.is_anon_exclusive();
        if !(entry.write() || entry.dirty() || anon_exclusive || pgtable::mm_tlb_flush_pending(vma))
        {
            return Some(entry);
        }
        let swapped = i32::from(folio.is_swapcache());
        // Clear the PTE and flush the TLB before checking the reference count: GUP-fast takes
        // no lock, so only an absent PTE guarantees that no O_DIRECT or pin can start after the
        // check. No mmu notifier call is needed for the downgrade itself.
        m.clear_flush();
        // Mappings, our reference and the swap cache: anything more is I/O in flight.
        if folio.mapcount() + 1 + swapped != folio.ref_count() {
            m.restore();
            return None;
        }
        if anon_exclusive && m.try_share_anon_rmap().is_err() {
            m.restore();
            return None;
        }
        // Clean (the folio is marked dirty instead) and read-only.
        m.restore_read_only()
    })
}

/// What to map instead of the page.
#[derive(Clone, Copy)]
pub(crate) enum KPage<'a> {
    /// Nothing: the page itself becomes the KSM page.
    Itself,
    /// The shared zero page.
    Zero,
    /// An existing KSM page.
    Ksm(&'a Folio),
}

/// Replaces the write-protected PTE `orig` that maps `folio` by one mapping `with`
/// (`replace_page()`); `held` is our reference on the folio.
fn replace_page(
    vma: &VmaRef,
    folio: &FolioLockGuard<'_>,
    held: &ARef<Folio>,
    with: Replacement<'_>,
    orig: Pte,
) -> bool {
    let Some(addr) = pgtable::folio_address_in_vma(folio, vma) else {
        return false;
    };
    pgtable::with_mmu_notifier_clear(vma, addr, addr + PAGE_SIZE, |inv| {
        let Some(mut m) = MappedPte::find(inv, folio, vma) else {
            return false;
        };
        m.get().same(orig) && m.replace(held, with).is_ok()
    })
}

/// Merges `page`, mapped in `vma` at `addr`, with `kpage` (`try_to_merge_one_page()`).
///
/// A page of a large folio is split off first (`page` then refers to its order-0 folio), as in
/// C only once the area is known to be mergeable and the folio trylock succeeded: a split
/// that then finds nothing to merge would break up a THP for nothing.
fn try_to_merge_one_page(
    vma: &VmaRef,
    page: &mut PageRef,
    addr: usize,
    kpage: KPage<'_>,
) -> Result {
    if let KPage::Ksm(k) = kpage {
        if core::ptr::eq(k.as_raw(), page.folio.as_raw()) {
            // A KSM page forked.
            return Ok(());
        }
    }
    if !page.folio.is_anon() {
        return Err(EFAULT);
    }
    // Trylock (inside the split for a large folio): rather than wait, go on and come back to
    // this page on the next scan.
    if page.split().is_err() {
        return Err(EFAULT);
    }
    let folio = &page.folio;
    let Some(g) = folio.try_lock() else {
        return Err(EFAULT);
    };
    let Some(orig) = write_protect_page(vma, &g, addr) else {
        return Err(EFAULT);
    };
    let ok = match kpage {
        KPage::Itself => {
            // While we hold the folio lock, make it a KSM folio with no stable node yet:
            // stable_tree::insert() sets the node.
            // SAFETY: Locked anonymous folio, no longer exclusive after write_protect_page().
            unsafe { g.set_raw_mapping(FOLIO_MAPPING_KSM) };
            g.mark_accessed();
            // Reclaim frees a clean folio without dirty PTEs: make sure it would be swapped.
            if !g.is_dirty() {
                g.mark_dirty();
            }
            true
        }
        KPage::Zero => {
            // pages_identical(), not a test for zero bytes: it refuses pages with MTE tags.
            g.page_identical_to_zero_page(0, addr)
                && replace_page(vma, &g, folio, Replacement::KsmZero, orig)
        }
        KPage::Ksm(k) => {
            // SAFETY: `KPage::Ksm` comes from `try_to_merge_with_ksm_page()` only, which tries
            // to break the COW again if the item cannot take the anon_vma, and whose callers in
            // `cmp_and_merge_page()` list the item on the KSM folio's stable node once the
            // merge succeeded, or try to break the COW again (best effort, as C's break_cow()).
            // The item records `addr`, where write_protect_page() found the page mapped, under
            // the locks we still hold.
            let k_map = unsafe { KsmMapping::new(k) };
            g.cmp_page_contents(0, k, 0) == core::cmp::Ordering::Equal
                && replace_page(vma, &g, folio, Replacement::Ksm(k_map), orig)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

/// Whether the item's page may be a page of zeroes to merge with the zero page.
fn zero_page_candidate(item: &RmapItem) -> bool {
    USE_ZERO_PAGES.load(Relaxed) && item.unstable_info().oldchecksum == ZERO_CHECKSUM.load(Relaxed)
}

/// Merges a page of zeroes with the zero page if `use_zero_pages` is on
/// (`try_to_merge_with_zero_page()`). `Ok` if merged or no longer a candidate.
fn try_to_merge_with_zero_page(item: &RmapItem, page: &mut PageRef) -> Result {
    if !zero_page_candidate(item) {
        return Err(EFAULT);
    }
    let addr = item.address().addr();
    with_mm(item.mm(), |g| match find_mergeable_vma(g, addr) {
        Some(vma) => {
            let r = try_to_merge_one_page(vma, page, addr, KPage::Zero);
            let zero_pfn = pgtable::zero_page_pfn(addr);
            crate::trace::merge_one_page(zero_pfn, item, item.mm(), crate::to_errno(r));
            r
        }
        // The area is gone: nothing left to do.
        None => Ok(()),
    })
    .unwrap_or(Ok(()))
}

/// Merges the item's page with the KSM page `kpage` (or makes it one) and prepares the item
/// for the stable tree (`try_to_merge_with_ksm_page()`).
fn try_to_merge_with_ksm_page<'g>(
    ksm: &mut Ksm<'g>,
    item: ItemRef<'g>,
    page: &mut PageRef,
    kpage: Option<&Folio>,
) -> Result {
    let addr = item.address().addr();
    let res = with_mm(item.mm(), |g| {
        let vma = find_mergeable_vma(g, addr).ok_or(EFAULT)?;
        try_to_merge_one_page(vma, page, addr, kpage.map_or(KPage::Itself, KPage::Ksm))?;
        // The unstable nid shares a word with the stable anon_vma: remove first.
        remove_rmap_item_from_tree(ksm, item);
        // Take the anon_vma and the page index while the mmap lock is held; if anything
        // keeps the item from the stable tree, break_cow() drops the reference again.
        if let Err(e) = item.set_rmap(vma) {
            // Cannot happen (set_rmap() warns): C has no failure here. The page is merged,
            // but without the anon_vma the item cannot be listed, and the caller would leave
            // a KSM mapping the reverse map never finds: undo it while the area is known.
            let _ = break_ksm(vma, addr, addr + PAGE_SIZE);
            return Err(e);
        }
        Ok(())
    })
    .unwrap_or(Err(EFAULT));
    // As in C, the page, or the KSM page it was merged with, and the outcome.
    let (kp, pfn) = match kpage {
        Some(k) => (k.first_page().cast(), k.pfn()),
        None => (core::ptr::null_mut(), page.folio.pfn() + page.index),
    };
    crate::trace::merge_with_ksm_page(kp, pfn, &*item, item.mm(), crate::to_errno(res));
    res
}

/// Breaks COW on a page that was merged but did not make it into the stable tree
/// (`break_cow()`).
pub(crate) fn break_cow(item: &RmapItem) {
    // Undoing a merge always drops the anon_vma reference taken for it.
    item.put_rmap();
    let addr = item.address().addr();
    with_mm(item.mm(), |g| {
        if let Some(vma) = find_mergeable_vma(g, addr) {
            let _ = break_ksm(vma, addr, addr + PAGE_SIZE);
        }
    });
}

/// Compares the page with the stable tree, then the unstable tree, and merges what can be
/// merged (`cmp_and_merge_page()`).
pub(crate) fn cmp_and_merge_page<'g>(ksm: &mut Ksm<'g>, mut page: PageRef, item: ItemRef<'g>) {
    let node = folio_stable_node(ksm, &page.folio);
    let mut bypass = false;
    let mut checksum = None;
    if let Some(n) = node {
        if !n.on_migrate_list() && ksm.node_nid(n) != n.nid() {
            // The page migrated to another NUMA node: its node moves to the right tree
            // through the migrate list (see stable_tree::search()).
            stable_tree::move_to_migrate_list(ksm, n);
        }
        let item_node = node::item_stable_node(ksm, &item);
        if !n.on_migrate_list() && item_node == Some(n) {
            return;
        }
        if item_node.is_some_and(|m| m != n) {
            // The item maps another KSM page now: take it off that page's node before the
            // search, which may find that node stale and walk its items (C leaves it there
            // until after the search).
            remove_rmap_item_from_tree(ksm, item);
        }
        // A KSM fork may go over the sharing limit.
        if !n.is_sharing_candidate() {
            bypass = true;
        }
    } else {
        remove_rmap_item_from_tree(ksm, item);
        // A page whose checksum changed since the last scan is changing often: do not insert
        // it into the unstable tree, nor search for an identical page.
        let sum = page.checksum();
        let mut info = item.unstable_info();
        if info.oldchecksum != sum {
            info.oldchecksum = sum;
            item.set_unstable_info(info);
            return;
        }
        // The key of both tree searches.
        checksum = Some(sum);
        if try_to_merge_with_zero_page(&item, &mut page).is_ok() {
            return;
        }
    }

    // Matching by checksum saves comparing the bytes twice: the merge compares them anyway.
    // Not for a page of a large folio: the merge would split it before comparing, and a
    // checksum collision must not break up a THP for nothing.
    let mut how = if page.folio.is_large() {
        Match::Bytes
    } else {
        Match::Checksum
    };
    loop {
        let kfolio = match stable_tree::search(ksm, &page, checksum, how) {
            Err(_) => {
                remove_rmap_item_from_tree(ksm, item);
                return;
            }
            Ok(k) => k,
        };
        if let Some(k) = &kfolio {
            if core::ptr::eq(k.as_raw(), page.folio.as_raw())
                && node.is_some()
                && node::item_stable_node(ksm, &item) == node
            {
                return;
            }
        }
        remove_rmap_item_from_tree(ksm, item);

        let Some(k) = kfolio else {
            break;
        };
        if try_to_merge_with_ksm_page(ksm, item, &mut page, Some(&k)).is_ok() {
            // Merged: list the item from the KSM page's stable node.
            let g = k.lock();
            let listed = stable_tree::append(ksm, &g, item, folio_stable_node(ksm, &g), bypass);
            drop(g);
            if listed.is_err() {
                // The reverse map could not find this mapping: undo the merge.
                break_cow(&item);
            }
            return;
        }
        // Found by its checksum only, and the bytes differ: the checksums collide, or the
        // page changed since it was summed. Search as mm/ksm.c does, by the bytes; a page
        // with no equal there goes on to the unstable tree.
        if how == Match::Checksum && page.cmp_folio(&k) != core::cmp::Ordering::Equal {
            how = Match::Bytes;
            continue;
        }
        return;
    }

    let Some((tree_item, mut tree_page)) = unstable_tree::search_insert(ksm, item, &page) else {
        return;
    };
    if core::ptr::eq(page.folio.as_raw(), tree_page.folio.as_raw()) {
        // Two pages of the same large folio: our two references would make the split fail.
        // C tries the merge anyway, which fails (and is traced as failed), then splits as
        // here. Split it now and merge on a later scan.
        let pfn = page.folio.pfn() + page.index;
        let err = EFAULT.to_errno();
        crate::trace::merge_with_ksm_page(core::ptr::null_mut(), pfn, &*item, item.mm(), err);
        drop(tree_page);
        let _ = page.split();
        return;
    }
    let merged = try_to_merge_with_ksm_page(ksm, item, &mut page, None).is_ok() && {
        if try_to_merge_with_ksm_page(ksm, tree_item, &mut tree_page, Some(&page.folio)).is_ok() {
            true
        } else {
            // A KSM page with only one mapping: break it.
            break_cow(&item);
            false
        }
    };
    drop(tree_page);
    if !merged {
        return;
    }
    // Both mappings now map `page`, a KSM page: give it a stable node and list both.
    let g = page.folio.lock();
    let node = stable_tree::insert(ksm, &g);
    let (tree_listed, listed) = match node {
        Some(node) => (
            stable_tree::append(ksm, &g, tree_item, Some(node), false).is_ok(),
            stable_tree::append(ksm, &g, item, Some(node), false).is_ok(),
        ),
        None => (false, false),
    };
    drop(g);
    // A mapping of a KSM page outside the stable tree is invisible to the reverse map: undo
    // the merge of each one that could not be listed.
    if !tree_listed {
        break_cow(&tree_item);
    }
    if !listed {
        break_cow(&item);
    }
}
