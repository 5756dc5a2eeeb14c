// SPDX-License-Identifier: GPL-2.0

#include <linux/crc32.h>

/* An inline stub when CONFIG_CRC32_ARCH is not set. */
__rust_helper u32 rust_helper_crc32_optimizations(void)
{
	return crc32_optimizations();
}
