// SPDX-License-Identifier: GPL-2.0

//! CRC-32C, the Castagnoli CRC.
//!
//! C header: [`include/linux/crc32.h`](srctree/include/linux/crc32.h).
//!
//! [`crc32c`] calls the kernel's CRC library, which uses the CPU's CRC instructions where it
//! has them (SSE 4.2 on x86, the CRC32 extension on arm64, ...); [`crc32c_optimized`] tells
//! whether it does on this machine, for users that choose a checksum by its speed. A CRC
//! detects change cheaply; it does not resist an adversary choosing the input.
//!
//! # Examples
//!
//! ```
//! use kernel::crc32::crc32c;
//!
//! // The check value of CRC-32C, which inverts the CRC at both ends.
//! assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
//! // A CRC can be computed piece by piece.
//! assert_eq!(crc32c(crc32c(!0, b"1234"), b"56789"), crc32c(!0, b"123456789"));
//! ```

use crate::bindings;

/// Returns the CRC-32C of `input`, continuing from `crc` (`crc32c()`).
///
/// `crc` is `!0` (recommended) or `0` for a new CRC, or the result of a call over the input
/// that precedes this one. As in C, the result is not inverted.
#[inline]
pub fn crc32c(crc: u32, input: &[u8]) -> u32 {
    // SAFETY: `input` is valid for reads of `input.len()` bytes for the duration of the call and
    // `crc32c()` only reads that many bytes from it; it has no other preconditions.
    unsafe { bindings::crc32c(crc, input.as_ptr().cast(), input.len()) }
}

/// Whether [`crc32c`] uses the CPU's CRC instructions on this machine
/// (`crc32_optimizations() & CRC32C_OPTIMIZATION`).
///
/// Where the CRC library finds out at `subsys_initcall` time (x86: `lib/crc/x86/crc32.h`),
/// this returns `false` until then, e.g. in the initcalls of `mm/`, which run before those of
/// `lib/`; ask from a `late_initcall` or later.
#[inline]
pub fn crc32c_optimized() -> bool {
    // SAFETY: `crc32_optimizations()` has no preconditions.
    let flags = unsafe { bindings::crc32_optimizations() };
    flags & bindings::CRC32C_OPTIMIZATION != 0
}

#[cfg(CONFIG_RUST_CRC32_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_crc32)]
mod tests {
    use super::*;
    use crate::page::PAGE_SIZE;

    /// Values of the bitwise definition (polynomial 0x82f63b78, least significant bit first,
    /// no inversion), whichever implementation the library picked.
    #[test]
    fn crc32c_known_values() {
        assert_eq!(crc32c(0, b""), 0);
        assert_eq!(crc32c(!0, b""), !0);
        assert_eq!(crc32c(!0, b"123456789"), !0xe306_9283);
        assert_eq!(crc32c(0, b"a"), 0x93ad_1061);
        assert_eq!(crc32c(!0, &[0u8; 32]), !0x8a91_36aa);
    }

    /// Inputs of a page and unaligned ones, as the CPU paths handle them in pieces.
    #[test]
    fn crc32c_in_pieces() -> Result<(), crate::error::Error> {
        let mut v =
            crate::alloc::KVec::from_elem(0u8, PAGE_SIZE + 7, crate::alloc::flags::GFP_KERNEL)?;
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i * 31 + 7) as u8;
        }
        let whole = crc32c(!0, &v);
        for split in [1, 3, 8, 63, 64, 1000, PAGE_SIZE] {
            assert_eq!(crc32c(crc32c(!0, &v[..split]), &v[split..]), whole);
        }
        assert_eq!(bitwise(!0, &v[1..]), crc32c(!0, &v[1..]));
        Ok(())
    }

    fn bitwise(mut crc: u32, input: &[u8]) -> u32 {
        for &b in input {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }
}
