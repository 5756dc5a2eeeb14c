// SPDX-License-Identifier: GPL-2.0

#include <linux/crc32.h>

#ifndef CONFIG_CRC32_ARCH
/* An inline stub returning 0; otherwise the exported function is bound. */
__rust_helper u32 rust_helper_crc32_optimizations(void)
{
	return crc32_optimizations();
}
#endif
