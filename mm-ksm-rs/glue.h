/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Functions shared between the C and Rust halves of mm/ksm-rs. Listed in
 * rust/bindings/bindings_helper.h so that both sides are checked against
 * one declaration.
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
int ksm_rs_madvise(struct vm_area_struct *vma, unsigned long start,
		   unsigned long end, int advice, vm_flags_t *vm_flags);

/* Implemented in C (glue.c): mm/internal.h is private to mm/. */
void ksm_rs_get_anon_vma(struct anon_vma *anon_vma);
void ksm_rs_put_anon_vma(struct anon_vma *anon_vma);
void ksm_rs_anon_vma_lock_read(struct anon_vma *anon_vma);
bool ksm_rs_anon_vma_trylock_read(struct anon_vma *anon_vma);
void ksm_rs_anon_vma_unlock_read(struct anon_vma *anon_vma);
void ksm_rs_collect_procs(struct anon_vma *av, unsigned long index,
			  unsigned long addr, const struct page *page,
			  struct list_head *to_kill, int force_early);

#endif /* _MM_KSM_RS_GLUE_H */
