// SPDX-License-Identifier: GPL-2.0

//! The order of both trees: by the page's checksum first, by its bytes second.
//!
//! mm/ksm.c orders its trees by `memcmp_pages()` alone, so every step of a walk looks the tree
//! page up (for an unstable item: its mm's mmap lock, a VMA lookup and a page table walk) and
//! compares up to a page of bytes. ksmd computes the checksum of every page it scans anyway
//! (to skip pages that change), so both trees here are ordered by `(checksum, bytes)`: a walk
//! compares two integers at each node and looks a tree page up only when the checksums are
//! equal, which among distinct pages is almost never.
//!
//! The key of a node is fixed when it is linked:
//!
//! - a stable node keeps the checksum of its KSM page, computed after the page was
//!   write-protected; the page never changes after that, so the key is exact;
//! - an unstable item keeps `oldchecksum`, the checksum with which it was inserted (an item is
//!   only inserted when its checksum did not change for a scan). The page may change after
//!   that: the key is then stale, as the bytes of any unstable page may be, and the unstable
//!   tree is rebuilt every full scan anyway.
//!
//! A stale or colliding checksum costs at most a missed merge or a byte comparison that fails:
//! two pages are only merged after their bytes compared equal, and again under write
//! protection (`try_to_merge_one_page()`), so no false merge is possible. Which pages merge
//! is the same as with mm/ksm.c, since pages with equal bytes have equal checksums.

use core::cmp::Ordering;

/// Orders a page with checksum `hash` against a tree node whose key has checksum `tree_hash`;
/// `None` if the checksums are equal and the bytes decide.
#[inline]
pub(crate) fn by_checksum(hash: u32, tree_hash: u32) -> Option<Ordering> {
    match hash.cmp(&tree_hash) {
        Ordering::Equal => None,
        ord => Some(ord),
    }
}

#[kernel::macros::kunit_tests(ksm_rs_order)]
mod tests {
    use super::*;
    use crate::page::page_checksum;
    use kernel::{page::PAGE_SIZE, prelude::*};

    /// The full order of two keys, as the walks apply it: the bytes are compared only when
    /// [`by_checksum`] leaves it to them.
    fn cmp_keys(a: (u32, &[u8]), b: (u32, &[u8])) -> Ordering {
        by_checksum(a.0, b.0).unwrap_or_else(|| a.1.cmp(b.1))
    }

    /// Pages that differ in one byte, at the start, the middle or the end.
    fn pages() -> Result<KVec<KVec<u8>>> {
        let mut v = KVec::new();
        for (at, val) in [
            (0, 0),
            (0, 1),
            (0, 2),
            (PAGE_SIZE / 2, 1),
            (PAGE_SIZE - 1, 1),
        ] {
            let mut p = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
            p[at] = val;
            v.push(p, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// The order is total and consistent over keys whose checksums are true, colliding (every
    /// page given the same checksum) or stale (a page given the checksum of another).
    #[test]
    fn order_is_total() -> Result {
        let p = pages()?;
        let mut keys: KVec<(u32, &[u8])> = KVec::new();
        for (i, page) in p.iter().enumerate() {
            keys.push((page_checksum(page), page), GFP_KERNEL)?;
            keys.push((7, page), GFP_KERNEL)?;
            keys.push((page_checksum(&p[(i + 1) % p.len()]), page), GFP_KERNEL)?;
        }
        for &a in keys.iter() {
            assert_eq!(cmp_keys(a, a), Ordering::Equal);
            for &b in keys.iter() {
                let ab = cmp_keys(a, b);
                // Antisymmetric, and equal only for equal checksums and bytes.
                assert_eq!(ab, cmp_keys(b, a).reverse());
                let equal = ab == Ordering::Equal;
                let same = a.0 == b.0 && a.1 == b.1;
                assert_eq!(equal, same);
                for &c in keys.iter() {
                    // Transitive.
                    if ab != Ordering::Greater && cmp_keys(b, c) != Ordering::Greater {
                        assert_ne!(cmp_keys(a, c), Ordering::Greater);
                    }
                }
            }
        }
        Ok(())
    }

    /// Equal checksums leave the decision to the bytes, different ones decide alone, so a
    /// stale checksum can never make different bytes compare equal.
    #[test]
    fn checksum_first_bytes_second() -> Result {
        let p = pages()?;
        let (a, b) = (&p[1][..], &p[2][..]);
        assert!(a < b);
        assert_eq!(by_checksum(5, 5), None);
        assert_eq!(cmp_keys((5, a), (5, b)), Ordering::Less);
        assert_eq!(cmp_keys((5, b), (5, a)), Ordering::Greater);
        // Different checksums order the keys whatever their bytes.
        assert_eq!(cmp_keys((4, b), (5, a)), Ordering::Less);
        assert_eq!(cmp_keys((6, a), (5, b)), Ordering::Greater);
        // Equal bytes under different checksums (a stale key) are not equal: a missed merge,
        // never a false one.
        assert_ne!(cmp_keys((4, a), (5, a)), Ordering::Equal);
        // Pages with equal bytes have equal checksums, so a true key finds its equal.
        assert_eq!(page_checksum(a), page_checksum(&p[1]));
        assert_eq!(
            cmp_keys((page_checksum(a), a), (page_checksum(&p[1]), &p[1])),
            Ordering::Equal
        );
        Ok(())
    }
}
