// SPDX-License-Identifier: GPL-2.0

#include <linux/leafops.h>
#include <linux/mm.h>
#include <linux/mm_inline.h>
#include <linux/mmu_notifier.h>
#include <linux/pagewalk.h>
#include <linux/pgtable.h>
#include <linux/rmap.h>
#include <asm/tlbflush.h>

__rust_helper pte_t rust_helper_ptep_get(pte_t *ptep)
{
	return ptep_get(ptep);
}

__rust_helper bool rust_helper_pte_present(pte_t pte)
{
	return pte_present(pte);
}

__rust_helper bool rust_helper_pte_none(pte_t pte)
{
	return pte_none(pte);
}

__rust_helper bool rust_helper_pte_special(pte_t pte)
{
	return pte_special(pte);
}

__rust_helper bool rust_helper_pte_write(pte_t pte)
{
	return pte_write(pte);
}

__rust_helper bool rust_helper_pte_dirty(pte_t pte)
{
	return pte_dirty(pte);
}

__rust_helper bool rust_helper_pte_same(pte_t a, pte_t b)
{
	return pte_same(a, b);
}

__rust_helper unsigned long rust_helper_pte_pfn(pte_t pte)
{
	return pte_pfn(pte);
}

__rust_helper pte_t rust_helper_pte_mkclean(pte_t pte)
{
	return pte_mkclean(pte);
}

__rust_helper pte_t rust_helper_pte_wrprotect(pte_t pte)
{
	return pte_wrprotect(pte);
}

__rust_helper pte_t rust_helper_pte_mkdirty(pte_t pte)
{
	return pte_mkdirty(pte);
}

__rust_helper pte_t rust_helper_pte_mkspecial(pte_t pte)
{
	return pte_mkspecial(pte);
}

__rust_helper pte_t rust_helper_pfn_pte(unsigned long pfn, pgprot_t prot)
{
	return pfn_pte(pfn, prot);
}

__rust_helper pte_t rust_helper_mk_pte(struct page *page, pgprot_t prot)
{
	return mk_pte(page, prot);
}

__rust_helper bool rust_helper_is_zero_pfn(unsigned long pfn)
{
	return is_zero_pfn(pfn);
}

__rust_helper struct page *rust_helper_zero_page(unsigned long vaddr)
{
	return ZERO_PAGE(vaddr);
}

__rust_helper void rust_helper_set_pte_at(struct mm_struct *mm,
					  unsigned long addr, pte_t *ptep,
					  pte_t pte)
{
	set_pte_at(mm, addr, ptep, pte);
}

__rust_helper void rust_helper_flush_cache_page(struct vm_area_struct *vma,
						unsigned long addr,
						unsigned long pfn)
{
	flush_cache_page(vma, addr, pfn);
}

__rust_helper bool rust_helper_mm_tlb_flush_pending(const struct mm_struct *mm)
{
	return mm_tlb_flush_pending(mm);
}

__rust_helper pte_t *rust_helper_pte_offset_map_lock(struct mm_struct *mm,
						     pmd_t *pmd,
						     unsigned long addr,
						     spinlock_t **ptlp)
{
	return pte_offset_map_lock(mm, pmd, addr, ptlp);
}

__rust_helper void rust_helper_pte_unmap_unlock(pte_t *ptep, spinlock_t *ptl)
{
	pte_unmap_unlock(ptep, ptl);
}

__rust_helper struct folio *rust_helper_pte_migration_folio(pte_t pte)
{
	const softleaf_t entry = softleaf_from_pte(pte);

	return softleaf_is_migration(entry) ? softleaf_to_folio(entry) : NULL;
}

__rust_helper void rust_helper_folio_walk_end(struct folio_walk *fw,
					      struct vm_area_struct *vma)
{
	folio_walk_end(fw, vma);
}

__rust_helper void rust_helper_folio_vma_walk_init(struct page_vma_mapped_walk *pvmw,
						   struct folio *folio,
						   struct vm_area_struct *vma,
						   unsigned long address,
						   int flags)
{
	DEFINE_FOLIO_VMA_WALK(walk, folio, vma, address, flags);

	*pvmw = walk;
}

__rust_helper void rust_helper_page_vma_mapped_walk_done(struct page_vma_mapped_walk *pvmw)
{
	page_vma_mapped_walk_done(pvmw);
}

__rust_helper void rust_helper_mmu_notifier_range_init_clear(struct mmu_notifier_range *range,
							     struct mm_struct *mm,
							     unsigned long start,
							     unsigned long end)
{
	mmu_notifier_range_init(range, MMU_NOTIFY_CLEAR, 0, mm, start, end);
}

__rust_helper void rust_helper_mmu_notifier_invalidate_range_start(struct mmu_notifier_range *range)
{
	mmu_notifier_invalidate_range_start(range);
}

__rust_helper void rust_helper_mmu_notifier_invalidate_range_end(struct mmu_notifier_range *range)
{
	mmu_notifier_invalidate_range_end(range);
}

__rust_helper void rust_helper_dec_mm_anon_counter(struct mm_struct *mm)
{
	dec_mm_counter(mm, MM_ANONPAGES);
}

__rust_helper pgprot_t rust_helper_vma_page_prot(const struct vm_area_struct *vma)
{
	return vma->vm_page_prot;
}

__rust_helper pmd_t rust_helper_pmdp_get_lockless(pmd_t *pmdp)
{
	return pmdp_get_lockless(pmdp);
}

__rust_helper pmd_t rust_helper_pmdp_get(pmd_t *pmdp)
{
	return pmdp_get(pmdp);
}

__rust_helper bool rust_helper_pmd_present(pmd_t pmd)
{
	return pmd_present(pmd);
}

__rust_helper bool rust_helper_pmd_leaf(pmd_t pmd)
{
	return pmd_leaf(pmd);
}

__rust_helper spinlock_t *rust_helper_pmd_lock(struct mm_struct *mm, pmd_t *pmd)
{
	return pmd_lock(mm, pmd);
}
