// SPDX-License-Identifier: GPL-2.0

#include <linux/highmem.h>
#include <linux/huge_mm.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/rmap.h>
#include <linux/swap.h>
#include <linux/vmstat.h>

__rust_helper void rust_helper_folio_get(struct folio *folio)
{
	folio_get(folio);
}

__rust_helper void rust_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

__rust_helper bool rust_helper_folio_try_get(struct folio *folio)
{
	return folio_try_get(folio);
}

__rust_helper bool rust_helper_folio_trylock(struct folio *folio)
{
	return folio_trylock(folio);
}

__rust_helper void rust_helper_folio_lock(struct folio *folio)
{
	folio_lock(folio);
}

__rust_helper bool rust_helper_folio_test_anon(const struct folio *folio)
{
	return folio_test_anon(folio);
}

__rust_helper bool rust_helper_folio_test_ksm(const struct folio *folio)
{
	return folio_test_ksm(folio);
}

__rust_helper bool rust_helper_folio_test_large(const struct folio *folio)
{
	return folio_test_large(folio);
}

__rust_helper bool rust_helper_folio_test_hugetlb(const struct folio *folio)
{
	return folio_test_hugetlb(folio);
}

__rust_helper bool rust_helper_folio_test_large_rmappable(const struct folio *folio)
{
	return folio_test_large_rmappable(folio);
}

__rust_helper bool rust_helper_folio_test_swapcache(const struct folio *folio)
{
	return folio_test_swapcache(folio);
}

__rust_helper bool rust_helper_folio_test_dirty(const struct folio *folio)
{
	return folio_test_dirty(folio);
}

__rust_helper bool rust_helper_folio_test_locked(const struct folio *folio)
{
	return folio_test_locked(folio);
}

__rust_helper bool rust_helper_folio_is_zone_device(const struct folio *folio)
{
	return folio_is_zone_device(folio);
}

__rust_helper int rust_helper_folio_mapcount(const struct folio *folio)
{
	return folio_mapcount(folio);
}

__rust_helper bool rust_helper_folio_mapped(const struct folio *folio)
{
	return folio_mapped(folio);
}

__rust_helper int rust_helper_folio_ref_count(const struct folio *folio)
{
	return folio_ref_count(folio);
}

__rust_helper unsigned long rust_helper_folio_pfn(const struct folio *folio)
{
	return folio_pfn(folio);
}

__rust_helper int rust_helper_folio_nid(const struct folio *folio)
{
	return folio_nid(folio);
}

__rust_helper struct folio *rust_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

__rust_helper struct page *rust_helper_folio_page(struct folio *folio,
						  unsigned long n)
{
	return folio_page(folio, n);
}

__rust_helper unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

__rust_helper struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

__rust_helper bool rust_helper_PageAnonExclusive(const struct page *page)
{
	return PageAnonExclusive(page);
}

__rust_helper int rust_helper_folio_try_share_anon_rmap_pte(struct folio *folio,
							    struct page *page)
{
	return folio_try_share_anon_rmap_pte(folio, page);
}

__rust_helper void rust_helper_folio_add_anon_rmap_pte(struct folio *folio,
						       struct page *page,
						       struct vm_area_struct *vma,
						       unsigned long address)
{
	folio_add_anon_rmap_pte(folio, page, vma, address, RMAP_NONE);
}

__rust_helper void rust_helper_folio_remove_rmap_pte(struct folio *folio,
						     struct page *page,
						     struct vm_area_struct *vma)
{
	folio_remove_rmap_pte(folio, page, vma);
}

__rust_helper int rust_helper_split_huge_page(struct page *page)
{
	return split_huge_page(page);
}

__rust_helper void *rust_helper_folio_raw_mapping(const struct folio *folio)
{
	return READ_ONCE(folio->mapping);
}

__rust_helper void rust_helper_folio_set_raw_mapping(struct folio *folio,
						     void *mapping)
{
	/* Pairs with the READ_ONCE() of lockless readers. */
	WRITE_ONCE(folio->mapping, mapping);
}

__rust_helper void rust_helper_flush_anon_page(struct vm_area_struct *vma,
					       struct page *page,
					       unsigned long vmaddr)
{
	flush_anon_page(vma, page, vmaddr);
	flush_dcache_page(page);
}

#ifndef CONFIG_SWAP
__rust_helper bool rust_helper_folio_free_swap(struct folio *folio)
{
	return folio_free_swap(folio);
}
#endif

__rust_helper long rust_helper_folio_nr_pages(const struct folio *folio)
{
	return folio_nr_pages(folio);
}

__rust_helper bool rust_helper_folio_test_uptodate(const struct folio *folio)
{
	return folio_test_uptodate(folio);
}

__rust_helper bool rust_helper_PageHWPoison(const struct page *page)
{
	return PageHWPoison(page);
}

__rust_helper pgoff_t rust_helper_folio_index(const struct folio *folio)
{
	return READ_ONCE(folio->index);
}

__rust_helper struct folio *rust_helper_vma_alloc_folio(gfp_t gfp, int order,
							struct vm_area_struct *vma,
							unsigned long addr)
{
	return vma_alloc_folio(gfp, order, vma, addr);
}

__rust_helper int rust_helper_mem_cgroup_charge(struct folio *folio,
						struct mm_struct *mm, gfp_t gfp)
{
	return mem_cgroup_charge(folio, mm, gfp);
}

__rust_helper int rust_helper_copy_mc_user_highpage(struct page *to,
						    struct page *from,
						    unsigned long vaddr,
						    struct vm_area_struct *vma)
{
	return copy_mc_user_highpage(to, from, vaddr, vma);
}

__rust_helper void rust_helper_folio_set_dirty(struct folio *folio)
{
	folio_set_dirty(folio);
}

__rust_helper void rust_helper___folio_mark_uptodate(struct folio *folio)
{
	__folio_mark_uptodate(folio);
}

__rust_helper void rust_helper___folio_set_locked(struct folio *folio)
{
	__folio_set_locked(folio);
}

__rust_helper void rust_helper_count_vm_event(enum vm_event_item item)
{
	count_vm_event(item);
}

/*
 * page_address_in_vma() of an anonymous folio reads the root of the folio's
 * anon_vma, which may be freed once the folio is mapped nowhere. As in
 * folio_lock_anon_vma_read(): under the RCU read lock, a folio seen mapped has
 * an anon_vma that stays an anon_vma (SLAB_TYPESAFE_BY_RCU) until the unlock.
 * A folio mapped nowhere has no address in any VMA: -EFAULT.
 */
__rust_helper unsigned long
rust_helper_folio_address_in_vma(struct folio *folio,
				 struct vm_area_struct *vma)
{
	unsigned long addr = -EFAULT;

	rcu_read_lock();
	if (!folio_test_anon(folio) || folio_mapped(folio))
		addr = page_address_in_vma(folio, folio_page(folio, 0), vma);
	rcu_read_unlock();
	return addr;
}
