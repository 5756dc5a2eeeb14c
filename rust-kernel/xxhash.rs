// SPDX-License-Identifier: GPL-2.0

//! xxHash, the fast non-cryptographic hash.
//!
//! C header: [`include/linux/xxhash.h`](srctree/include/linux/xxhash.h).
//!
//! xxHash detects change cheaply (KSM uses it to notice pages that are still being written,
//! btrfs and zstd as a checksum); it does not resist an adversary choosing the input.
//!
//! # Examples
//!
//! ```
//! use kernel::xxhash::{xxh32, xxh64};
//!
//! assert_eq!(xxh64(b"abc", 0), 0x44bc_2cf5_ad77_0999);
//! assert_eq!(xxh32(b"abc", 0), 0x32d1_53ff);
//! ```

use crate::bindings;

/// Returns the 32-bit xxHash (XXH32) of `input` with `seed`.
#[inline]
pub fn xxh32(input: &[u8], seed: u32) -> u32 {
    // SAFETY: `input` is valid for reads of `input.len()` bytes for the duration of the call and
    // `xxh32` only reads that many bytes from it; it has no other preconditions.
    unsafe { bindings::xxh32(input.as_ptr().cast(), input.len(), seed) }
}

/// Returns the 64-bit xxHash (XXH64) of `input` with `seed`.
#[inline]
pub fn xxh64(input: &[u8], seed: u64) -> u64 {
    // SAFETY: `input` is valid for reads of `input.len()` bytes for the duration of the call and
    // `xxh64` only reads that many bytes from it; it has no other preconditions.
    unsafe { bindings::xxh64(input.as_ptr().cast(), input.len(), seed) }
}

/// Returns the word-sized xxHash of `input`, as the C `xxhash()` does: XXH64 on 64-bit
/// architectures and XXH32 (with the low 32 bits of `seed`) on 32-bit ones, whichever is faster.
#[inline]
pub fn xxhash(input: &[u8], seed: u64) -> usize {
    #[cfg(CONFIG_64BIT)]
    {
        // The cast is lossless: `usize` is 64 bits wide here.
        xxh64(input, seed) as usize
    }
    #[cfg(not(CONFIG_64BIT))]
    {
        // Truncating the seed is what the C `xxhash()` does on 32-bit.
        xxh32(input, seed as u32) as usize
    }
}

#[cfg(CONFIG_RUST_XXHASH_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_xxhash)]
mod tests {
    use super::*;
    use crate::prelude::*;

    // Reference values from the xxHash specification's implementation.
    const QUOTE: &[u8] = b"Nobody inspects the spammish repetition";

    #[test]
    fn xxh32_known_values() {
        assert_eq!(xxh32(b"", 0), 0x02cc_5d05);
        assert_eq!(xxh32(b"", 1), 0x0b2c_b792);
        assert_eq!(xxh32(b"abc", 0), 0x32d1_53ff);
        assert_eq!(xxh32(b"abc", 1), 0xaa3d_a8ff);
        assert_eq!(xxh32(QUOTE, 0), 0xe229_3b2f);
        assert_eq!(xxh32(QUOTE, 1), 0x5344_69ea);
    }

    #[test]
    fn xxh64_known_values() {
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(b"", 1), 0xd5af_ba13_36a3_be4b);
        assert_eq!(xxh64(b"abc", 0), 0x44bc_2cf5_ad77_0999);
        assert_eq!(xxh64(b"abc", 1), 0xbea9_ca81_9932_8908);
        assert_eq!(xxh64(QUOTE, 0), 0xfbce_a83c_8a37_8bf1);
        assert_eq!(xxh64(QUOTE, 1), 0x43f4_2544_8d95_4db6);
    }

    #[test]
    fn xxh64_of_pages() -> Result {
        // Page-sized inputs, as KSM hashes them: all zeroes and a filled page. Allocated: two
        // pages on the stack would overflow 32-bit kernel stacks.
        let zero = KVec::from_elem(0u8, 4096, GFP_KERNEL)?;
        let filled = KVec::from_elem(0x11u8, 4096, GFP_KERNEL)?;
        assert_eq!(xxh64(&zero, 0), 0xac86_9b6f_32d8_bbdb);
        assert_eq!(xxh64(&filled, 0), 0x90e1_6c6b_acdb_4f93);
        Ok(())
    }

    #[test]
    fn xxhash_is_the_word_sized_hash() {
        #[cfg(CONFIG_64BIT)]
        assert_eq!(xxhash(QUOTE, 1), xxh64(QUOTE, 1) as usize);
        #[cfg(not(CONFIG_64BIT))]
        assert_eq!(xxhash(QUOTE, 1), xxh32(QUOTE, 1) as usize);
    }
}
