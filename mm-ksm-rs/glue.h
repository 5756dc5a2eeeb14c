/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Functions and data shared between the C and Rust halves of mm/ksm-rs. The
 * Rust side declares them again in extern blocks next to their users.
 */
#ifndef _MM_KSM_RS_GLUE_H
#define _MM_KSM_RS_GLUE_H

#include <linux/types.h>

struct anon_vma;
struct list_head;
struct page;
struct vm_area_struct;

/* Implemented in Rust. */
int ksm_rs_init(void);
void ksm_rs_choose_checksum(void);
int ksm_rs_madvise(struct vm_area_struct *vma, unsigned long start,
		   unsigned long end, int advice, vm_flags_t *vm_flags);
void ksm_rs_memory_going_offline(void);
void ksm_rs_memory_offline(unsigned long start_pfn, unsigned long nr_pages);
void ksm_rs_memory_cancel_offline(void);

/* Defined in C (glue.c). */
/* Arch-specific flags that ksm_compatible() refuses (VM_SAO, VM_SPARC_ADI). */
extern const vm_flags_t ksm_rs_arch_unmergeable;

/* Implemented in C (glue.c): mm/internal.h is private to mm/. */
void ksm_rs_get_anon_vma(struct anon_vma *anon_vma);
void ksm_rs_put_anon_vma(struct anon_vma *anon_vma);
bool ksm_rs_same_anon_root(struct folio *folio, struct vm_area_struct *vma);
/* What collect_procs_ksm() was called with (hooks.rs: kill::Collect). */
struct ksm_rs_collect {
	const struct page *page;
	struct list_head *to_kill;
	int force_early;
};
void ksm_rs_collect_procs(struct anon_vma *av, unsigned long index,
			  unsigned long addr, const struct ksm_rs_collect *c);

#endif /* _MM_KSM_RS_GLUE_H */
