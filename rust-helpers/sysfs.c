// SPDX-License-Identifier: GPL-2.0

#include <linux/kstrtox.h>

__rust_helper int rust_helper_kstrtoul(const char *s, unsigned int base,
				       unsigned long *res)
{
	return kstrtoul(s, base, res);
}
