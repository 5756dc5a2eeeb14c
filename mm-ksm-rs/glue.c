// SPDX-License-Identifier: GPL-2.0
/*
 * C side of the Rust KSM (mm/ksm-rs/ksm.rs).
 *
 * Only what Rust cannot express, or what is private to mm/ (mm/internal.h),
 * goes here: the subsys_initcall, the exported ksm_madvise() wrapper, the
 * ksm_zero_pages definition that include/linux/ksm.h declares, the VMA flags
 * that only some architectures define, the ksm trace events, the memory
 * hotplug notifier, the
 * anon_vma helpers the KSM reverse map needs and the per-task part of
 * collect_procs_ksm().
 */

#include <linux/export.h>
#include <linux/init.h>
#include <linux/ksm.h>
#include <linux/memory.h>
#include <linux/rmap.h>
#include <linux/sched/signal.h>

#include "../internal.h"
#include "glue.h"

/*
 * The ksm trace events: mm/ksm.c, which defines them otherwise, is not built.
 * CREATE_RUST_TRACE_POINTS adds the rust_do_trace_*() functions that the Rust
 * code (trace.rs) calls.
 */
#define CREATE_TRACE_POINTS
#define CREATE_RUST_TRACE_POINTS
#include <trace/events/ksm.h>

/* The number of zero pages placed by KSM, see ksm_map_zero_page(). */
atomic_long_t ksm_zero_pages = ATOMIC_LONG_INIT(0);

/*
 * Architecture VMA flags that make an area unmergeable, as mm/ksm.c's
 * ksm_compatible() tests them: they are macros that only some architectures
 * define.
 */
const vm_flags_t ksm_rs_arch_unmergeable = 0
#ifdef VM_SAO
	| VM_SAO
#endif
#ifdef VM_SPARC_ADI
	| VM_SPARC_ADI
#endif
	;

void ksm_rs_get_anon_vma(struct anon_vma *anon_vma)
{
	get_anon_vma(anon_vma);
}

void ksm_rs_put_anon_vma(struct anon_vma *anon_vma)
{
	put_anon_vma(anon_vma);
}

/*
 * Whether a swapped-in anonymous folio's anon_vma has the root of the faulting
 * VMA's (ksm_might_need_to_copy()). Nothing need map the folio, so its
 * anon_vma may have been freed: mm/ksm.c reads its root racily, and so does
 * this. The RCU read lock only keeps an anon_vma freed during the read an
 * anon_vma (SLAB_TYPESAFE_BY_RCU; maybe another one, so a stale answer stays
 * possible, as in mm/ksm.c); one freed before it may be on a slab page that
 * went back to the page allocator. The read is kept in C rather than made a
 * Rust reference to memory that may be gone.
 */
bool ksm_rs_same_anon_root(struct folio *folio, struct vm_area_struct *vma)
{
	struct anon_vma *anon_vma;
	bool same;

	rcu_read_lock();
	anon_vma = folio_anon_vma(folio);
	same = anon_vma && vma->anon_vma &&
	       READ_ONCE(anon_vma->root) == vma->anon_vma->root;
	rcu_read_unlock();
	return same;
}

/*
 * ksm_madvise() is implemented in Rust (ksm_rs_madvise() in hooks.rs). It is
 * exported to modules (KVM on powerpc), and EXPORT_SYMBOL_GPL() wants the C
 * definition it follows.
 */
int ksm_madvise(struct vm_area_struct *vma, unsigned long start,
		unsigned long end, int advice, vm_flags_t *vm_flags)
{
	return ksm_rs_madvise(vma, start, end, advice, vm_flags);
}
EXPORT_SYMBOL_GPL(ksm_madvise);

#ifdef CONFIG_MEMORY_HOTREMOVE
/*
 * mm/ksm.c's ksm_memory_callback(): the stable tree must not keep nodes of
 * pages in memory that goes offline. The work is done in Rust (hotremove.rs).
 */
static int ksm_memory_callback(struct notifier_block *self,
			       unsigned long action, void *arg)
{
	struct memory_notify *mn = arg;

	switch (action) {
	case MEM_GOING_OFFLINE:
		ksm_rs_memory_going_offline();
		break;
	case MEM_OFFLINE:
		ksm_rs_memory_offline(mn->start_pfn, mn->nr_pages);
		break;
	case MEM_CANCEL_OFFLINE:
		ksm_rs_memory_cancel_offline();
		break;
	}
	return NOTIFY_OK;
}
#endif

static int __init ksm_init(void)
{
	int err = ksm_rs_init();

	if (err)
		return err;
#ifdef CONFIG_MEMORY_HOTREMOVE
	/* There is no significance to this priority 100 */
	hotplug_memory_notifier(ksm_memory_callback, KSM_CALLBACK_PRI);
#endif
	return 0;
}
subsys_initcall(ksm_init);

/*
 * The page checksum is chosen once the CRC library knows whether the CPU
 * computes CRC-32C, which it finds out in its subsys_initcall in lib/: after
 * ksm_init(), since lib/ links after mm/.
 */
static int __init ksm_checksum_init(void)
{
	ksm_rs_choose_checksum();
	return 0;
}
late_initcall(ksm_checksum_init);

#ifdef CONFIG_MEMORY_FAILURE
/*
 * The per-task part of collect_procs_ksm() for one rmap item of a KSM page:
 * task_early_kill() and add_to_kill_ksm() are private to mm/.
 */
void ksm_rs_collect_procs(struct anon_vma *av, unsigned long index,
			  unsigned long addr, const struct ksm_rs_collect *c)
{
	const struct page *page = c->page;
	struct list_head *to_kill = c->to_kill;
	int force_early = c->force_early;
	struct task_struct *tsk;

	anon_vma_lock_read(av);
	rcu_read_lock();
	for_each_process(tsk) {
		struct anon_vma_chain *vmac;
		struct task_struct *t = task_early_kill(tsk, force_early);

		if (!t)
			continue;
		anon_rmap_tree_foreach(vmac, av, index, index) {
			struct vm_area_struct *vma = vmac->vma;

			if (vma->vm_mm == t->mm)
				add_to_kill_ksm(t, page, vma, to_kill, addr);
		}
	}
	rcu_read_unlock();
	anon_vma_unlock_read(av);
}
#endif
