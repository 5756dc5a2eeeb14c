// SPDX-License-Identifier: GPL-2.0

#include <linux/freezer.h>
#include <linux/kthread.h>
#include <linux/sched.h>

__rust_helper bool rust_helper_try_to_freeze(void)
{
	return try_to_freeze();
}

__rust_helper bool rust_helper_freezing_current(void)
{
	return freezing(current);
}

__rust_helper int rust_helper_cond_resched(void)
{
	return cond_resched();
}

#ifndef CONFIG_FREEZER
__rust_helper void rust_helper_set_freezable(void)
{
	set_freezable();
}
#endif
