// SPDX-License-Identifier: GPL-2.0

//! Static sysfs attribute groups and the parsers their `store` callbacks use.
//!
//! C headers: [`include/linux/sysfs.h`](srctree/include/linux/sysfs.h),
//! [`include/linux/kobject.h`](srctree/include/linux/kobject.h) and
//! [`include/linux/kstrtox.h`](srctree/include/linux/kstrtox.h).
//!
//! An [`Attribute`] is a `struct kobj_attribute`: a file with a name, a mode and `show`/`store`
//! callbacks. Attributes are collected in an [`AttributeList`] and named by an
//! [`AttributeGroup`], which [`AttributeGroup::register`] creates as a directory of files under
//! an existing kobject such as `/sys/kernel/mm` (`sysfs_create_group()`). All three live in
//! `static`s, as their C counterparts do; [`attribute_group!`] declares the list and the group
//! in one go.
//!
//! A `show` callback writes the file's contents through an [`Emitter`], which behaves like
//! `sysfs_emit()`. A `store` callback receives the written bytes as [`Input`] and returns
//! `Ok(())` to accept them (the `write()` then returns the number of bytes written) or an error,
//! whose negative errno the `write()` fails with. [`kstrtouint`], [`kstrtoint`], [`kstrtoul`],
//! [`kstrtobool`] and [`streq`] are the C parsers, so a Rust attribute accepts and rejects
//! exactly what a C attribute using them does.
//!
//! # Examples
//!
//! ```
//! use core::fmt::Write;
//! use kernel::prelude::*;
//! use kernel::sync::atomic::{Atomic, Relaxed};
//! use kernel::sysfs::{self, Attribute, Emitter, Input};
//!
//! static LIMIT: Atomic<u32> = Atomic::new(100);
//!
//! fn limit_show(out: &mut Emitter<'_>) -> Result {
//!     writeln!(out, "{}", LIMIT.load(Relaxed))?;
//!     Ok(())
//! }
//!
//! fn limit_store(input: Input<'_>) -> Result {
//!     LIMIT.store(sysfs::kstrtouint(input.as_c_str(), 10)?, Relaxed);
//!     Ok(())
//! }
//!
//! static LIMIT_ATTR: Attribute = Attribute::new_rw(c"limit", limit_show, limit_store);
//!
//! kernel::attribute_group! {
//!     /// `/sys/kernel/mm/example`.
//!     static EXAMPLE_GROUP = c"example", [LIMIT_ATTR];
//! }
//!
//! fn init() -> Result {
//!     // Creates /sys/kernel/mm/example/limit, mode 0644, for as long as the kernel runs.
//!     EXAMPLE_GROUP.register(sysfs::Parent::Mm)?.make_permanent();
//!     Ok(())
//! }
//!
//! // Callbacks can be tested without sysfs.
//! limit_store(Input::from_c_str(c"42\n"))?;
//! let mut page = [0u8; 16];
//! let mut out = Emitter::new(&mut page);
//! limit_show(&mut out)?;
//! assert_eq!(out.as_bytes(), b"42\n");
//! assert_eq!(limit_store(Input::from_c_str(c"-1")), Err(EINVAL));
//! # let _ = init;
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    error::to_result,
    ffi::{c_char, c_uint},
    fmt,
    page::PAGE_SIZE,
    prelude::*,
    str::as_char_ptr_in_const_context,
    types::Opaque,
};
use core::ptr::NonNull;

/// The `show` callback of an [`Attribute`]: writes the file's contents into `out`.
///
/// An error fails the `read()` with its errno.
pub type ShowFn = fn(out: &mut Emitter<'_>) -> Result;

/// The `store` callback of an [`Attribute`]: takes what was written to the file.
///
/// `Ok(())` makes the `write()` return the number of bytes written, an error fails the `write()`
/// with its errno.
pub type StoreFn = fn(input: Input<'_>) -> Result;

/// A sysfs file of a kobject, a `struct kobj_attribute`.
///
/// Meant to be a `static`: sysfs refers to it for as long as a group containing it is
/// registered.
///
/// # Invariants
///
/// - `kattr.attr.name` points to a `'static` NUL-terminated string.
/// - `kattr.show_const` is [`show_callback`] if `show` is `Some` and NULL otherwise, and
///   `kattr.store_const` is [`store_callback`] if `store` is `Some` and NULL otherwise; the other
///   callback fields are NULL.
/// - `kattr` is at offset 0 (the struct is `repr(C)`), so a pointer to `kattr` is also a pointer
///   to the [`Attribute`].
#[repr(C)]
pub struct Attribute {
    kattr: Opaque<bindings::kobj_attribute>,
    show: Option<ShowFn>,
    store: Option<StoreFn>,
}

// SAFETY: An `Attribute` is never changed after construction; sysfs only reads it, and the
// callbacks are plain functions that may be called from any thread.
unsafe impl Sync for Attribute {}

impl Attribute {
    /// An attribute with the given mode and callbacks.
    const fn new(
        name: &'static CStr,
        mode: bindings::umode_t,
        show: Option<ShowFn>,
        store: Option<StoreFn>,
    ) -> Self {
        // SAFETY: `struct kobj_attribute` is made of a name pointer, an integer mode, optional
        // lockdep data and optional function pointers: all-zeroes (NULL, 0, `None`) is valid.
        let mut kattr: bindings::kobj_attribute = unsafe { core::mem::zeroed() };
        kattr.attr.name = as_char_ptr_in_const_context(name);
        kattr.attr.mode = mode;
        if show.is_some() {
            kattr.__bindgen_anon_1.show_const = Some(show_callback);
        }
        if store.is_some() {
            kattr.__bindgen_anon_2.store_const = Some(store_callback);
        }
        // INVARIANT: `name` is `'static`, the callbacks are installed exactly for the `Some`s.
        Self {
            kattr: Opaque::new(kattr),
            show,
            store,
        }
    }

    /// A read-only attribute, mode 0444 (C: `__ATTR_RO()`).
    pub const fn new_ro(name: &'static CStr, show: ShowFn) -> Self {
        Self::new(name, 0o444, Some(show), None)
    }

    /// A read-write attribute, mode 0644 (C: `__ATTR_RW()`).
    pub const fn new_rw(name: &'static CStr, show: ShowFn, store: StoreFn) -> Self {
        Self::new(name, 0o644, Some(show), Some(store))
    }

    /// A write-only attribute, mode 0200 (C: `__ATTR_WO()`).
    pub const fn new_wo(name: &'static CStr, store: StoreFn) -> Self {
        Self::new(name, 0o200, None, Some(store))
    }

    /// The `struct attribute` that attribute lists point to.
    const fn as_attribute_ptr(&self) -> *mut bindings::attribute {
        // CAST: `attr` is the first field of the `repr(C)` `struct kobj_attribute`.
        self.kattr.get().cast()
    }
}

/// Returns the [`Attribute`] that sysfs passes `kattr` of.
///
/// # Safety
///
/// `kattr` must point to the `kattr` field of a live [`Attribute`].
unsafe fn attribute_of<'a>(kattr: *const bindings::kobj_attribute) -> &'a Attribute {
    // SAFETY: By the safety requirements `kattr` points to the `kattr` field of an `Attribute`,
    // which is at offset 0 by its type invariants.
    unsafe { &*kattr.cast::<Attribute>() }
}

/// The C `show` callback of every [`Attribute`] with a `show` function.
///
/// # Safety
///
/// `kattr` must point to the `kattr` field of an [`Attribute`] and `buf` to a buffer of
/// [`PAGE_SIZE`] initialised bytes that nothing else accesses during the call, as
/// `kobj_attr_show()` passes them.
unsafe extern "C" fn show_callback(
    _kobj: *mut bindings::kobject,
    kattr: *const bindings::kobj_attribute,
    buf: *mut c_char,
) -> isize {
    // SAFETY: By the safety requirements, `kattr` is the `kattr` of an `Attribute`; this callback
    // is only installed in those (type invariants), and sysfs only calls it with its own.
    let attribute = unsafe { attribute_of(kattr) };
    let Some(show) = attribute.show else {
        // Unreachable by the type invariants; it is what `kobj_attr_show()` answers.
        return EIO.to_errno() as isize;
    };
    // SAFETY: By the safety requirements, `buf` is valid for reads and writes of `PAGE_SIZE`
    // initialised bytes (`sysfs_kf_seq_show()` zeroes them) and exclusively ours for the call.
    let page = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE) };
    let mut out = Emitter::new(page);
    match show(&mut out) {
        // The length is below `PAGE_SIZE`, so it fits.
        Ok(()) => out.len() as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// The C `store` callback of every [`Attribute`] with a `store` function.
///
/// # Safety
///
/// `kattr` must point to the `kattr` field of an [`Attribute`] and `buf` to `count` bytes
/// followed by a NUL, unchanged during the call, as `kernfs_fop_write_iter()` passes them.
unsafe extern "C" fn store_callback(
    _kobj: *mut bindings::kobject,
    kattr: *const bindings::kobj_attribute,
    buf: *const c_char,
    count: usize,
) -> isize {
    // SAFETY: As in `show_callback()`.
    let attribute = unsafe { attribute_of(kattr) };
    let Some(store) = attribute.store else {
        // Unreachable by the type invariants; it is what `kobj_attr_store()` answers.
        return EIO.to_errno() as isize;
    };
    // SAFETY: By the safety requirements, `buf` is valid for reads of `count + 1` bytes, which
    // do not change during the call.
    let bytes_with_nul = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), count + 1) };
    // INVARIANT: By the safety requirements, the last byte is a NUL.
    let input = Input { bytes_with_nul };
    match store(input) {
        // kernfs writes at most `PAGE_SIZE` bytes at a time, so `count` fits.
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// A NULL-terminated array of pointers to `N - 1` attributes, the `attrs` of a C
/// `struct attribute_group`.
///
/// Usually declared by [`attribute_group!`].
///
/// # Invariants
///
/// The first `N - 1` entries point to the `struct attribute` of `'static` [`Attribute`]s, the
/// last one is NULL.
#[repr(transparent)]
pub struct AttributeList<const N: usize>(Opaque<[*mut bindings::attribute; N]>);

// SAFETY: The list is never changed after construction, sysfs only reads it, and the attributes
// it points to are `Sync`.
unsafe impl<const N: usize> Sync for AttributeList<N> {}

impl<const N: usize> AttributeList<N> {
    /// A list of the `M` attributes `attrs`, in that order; `N` must be `M + 1` (checked at
    /// compile time).
    pub const fn new<const M: usize>(attrs: [&'static Attribute; M]) -> Self {
        const { assert!(N == M + 1, "an AttributeList<N> holds N - 1 attributes") };
        let mut ptrs = [core::ptr::null_mut(); N];
        let mut i = 0;
        while i < M {
            ptrs[i] = attrs[i].as_attribute_ptr();
            i += 1;
        }
        // INVARIANT: The first `M == N - 1` entries point to the attributes, the last stays NULL.
        Self(Opaque::new(ptrs))
    }
}

/// A named group of attributes: a directory of files under a kobject (C: a named
/// `struct attribute_group`).
///
/// Usually declared by [`attribute_group!`].
///
/// # Invariants
///
/// `name` is a `'static` NUL-terminated string, `attrs` points to a `'static`
/// [`AttributeList`], and all other fields are NULL.
#[repr(transparent)]
pub struct AttributeGroup(Opaque<bindings::attribute_group>);

// SAFETY: The group is never changed after construction, sysfs only reads it, and the list it
// points to is `Sync`.
unsafe impl Sync for AttributeGroup {}

impl AttributeGroup {
    /// A group called `name` with the attributes in `attrs`.
    pub const fn new<const N: usize>(
        name: &'static CStr,
        attrs: &'static AttributeList<N>,
    ) -> Self {
        // SAFETY: `struct attribute_group` is made of pointers and optional function pointers:
        // all-zeroes (NULL, `None`) is valid.
        let mut group: bindings::attribute_group = unsafe { core::mem::zeroed() };
        group.name = as_char_ptr_in_const_context(name);
        // CAST: `AttributeList<N>` is a transparent array of `N` `*mut attribute`.
        group.__bindgen_anon_2.attrs = attrs.0.get().cast();
        // INVARIANT: Both are `'static`, nothing else is set.
        Self(Opaque::new(group))
    }

    /// Creates the group's directory and files under `parent` (C: `sysfs_create_group()`).
    ///
    /// The files exist until the returned [`Registration`] is dropped. Fails with `EEXIST` if
    /// `parent` already has an entry of that name and `EINVAL` if `parent` does not exist (yet).
    pub fn register(&'static self, parent: Parent) -> Result<Registration> {
        let kobj = NonNull::new(parent.as_ptr()).ok_or(EINVAL)?;
        // SAFETY: `kobj` is a kobject that is never freed (`Parent`'s invariant). `self.0.get()`
        // is a valid group whose attributes are `Attribute`s (type invariants), all `'static`,
        // so they outlive the registration.
        to_result(unsafe { bindings::sysfs_create_group(kobj.as_ptr(), self.0.get()) })?;
        // INVARIANT: The group has just been created under `kobj`.
        Ok(Registration { kobj, group: self })
    }
}

/// A kobject that exists for the lifetime of the kernel, to register groups under.
///
/// # Invariants
///
/// The C globals these stand for are set once at boot and their kobjects are never freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    /// `/sys/kernel` (C: `kernel_kobj`).
    Kernel,
    /// `/sys/kernel/mm` (C: `mm_kobj`).
    Mm,
}

impl Parent {
    /// The kobject, or NULL if its creation failed (or has not happened yet).
    fn as_ptr(self) -> *mut bindings::kobject {
        match self {
            // SAFETY: `kernel_kobj` is only written by `ksysfs_init()` during boot, before sysfs
            // users run; reading the pointer value is fine.
            Self::Kernel => unsafe { bindings::kernel_kobj },
            // SAFETY: `mm_kobj` is only written by `mm_sysfs_init()` during boot, before sysfs
            // users run; reading the pointer value is fine.
            Self::Mm => unsafe { bindings::mm_kobj },
        }
    }
}

/// A registered [`AttributeGroup`]; dropping it removes the group's files
/// (C: `sysfs_remove_group()`), waiting for running callbacks to return.
///
/// # Invariants
///
/// `group` is registered under `kobj`, which is never freed.
#[must_use = "dropping the registration removes the files again"]
pub struct Registration {
    kobj: NonNull<bindings::kobject>,
    group: &'static AttributeGroup,
}

// SAFETY: `sysfs_remove_group()` may be called from any thread.
unsafe impl Send for Registration {}

// SAFETY: A `&Registration` allows nothing.
unsafe impl Sync for Registration {}

impl Registration {
    /// Keeps the group registered for the rest of the kernel's life, as built-in code that never
    /// unregisters does.
    ///
    /// A loadable module must instead keep the [`Registration`] and drop it before it is
    /// unloaded.
    pub fn make_permanent(self) {
        core::mem::forget(self);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `self.group` is registered under the live `self.kobj`.
        unsafe { bindings::sysfs_remove_group(self.kobj.as_ptr(), self.group.0.get()) };
    }
}

/// Declares a `static` [`AttributeGroup`] and its [`AttributeList`].
///
/// The attributes are paths of `static` [`Attribute`]s, each optionally preceded by attributes
/// such as `#[cfg(...)]`, in the order in which the C code would list them.
///
/// # Examples
///
/// ```
/// use kernel::prelude::*;
/// use kernel::sysfs::{Attribute, Emitter};
///
/// fn one_show(out: &mut Emitter<'_>) -> Result {
///     Ok(core::fmt::Write::write_str(out, "1\n")?)
/// }
///
/// static ONE: Attribute = Attribute::new_ro(c"one", one_show);
/// static NUMA_ONE: Attribute = Attribute::new_ro(c"numa_one", one_show);
///
/// kernel::attribute_group! {
///     /// `/sys/kernel/example`.
///     pub static EXAMPLE = c"example", [
///         ONE,
///         #[cfg(CONFIG_NUMA)]
///         NUMA_ONE,
///     ];
/// }
/// ```
#[macro_export]
macro_rules! attribute_group {
    (
        $(#[$meta:meta])*
        $vis:vis static $name:ident = $group_name:expr, [
            $( $(#[$attr_meta:meta])* $attr:path ),* $(,)?
        ];
    ) => {
        $(#[$meta])*
        $vis static $name: $crate::sysfs::AttributeGroup = {
            // The number of attributes left by the `cfg`s.
            const LEN: usize = <[()]>::len(&[$( $(#[$attr_meta])* () ),*]);
            static ATTRS: $crate::sysfs::AttributeList<{ LEN + 1 }> =
                $crate::sysfs::AttributeList::new([$( $(#[$attr_meta])* &$attr ),*]);
            $crate::sysfs::AttributeGroup::new($group_name, &ATTRS)
        };
    };
}

/// Writes the contents of a sysfs file, like `sysfs_emit()` does.
///
/// Output beyond the size of the buffer less one byte (a page in `show` callbacks) is dropped,
/// and the text is kept NUL-terminated. Writing never fails.
///
/// # Invariants
///
/// `len < buf.len()` unless `buf` is empty (then `len == 0`), and `buf[len]` is NUL when it
/// exists.
pub struct Emitter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Emitter<'a> {
    /// An emitter writing into `buf`, which it empties.
    ///
    /// `show` callbacks get one for the sysfs page; this is for testing them.
    pub fn new(buf: &'a mut [u8]) -> Self {
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        // INVARIANT: Empty, and NUL-terminated if there is room.
        Self { buf, len: 0 }
    }

    /// The number of bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far, without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for Emitter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Room for the NUL: as `vscnprintf()`, keep at most `buf.len() - 1` bytes.
        let room = self.buf.len().saturating_sub(self.len + 1);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if let Some(nul) = self.buf.get_mut(self.len) {
            *nul = 0;
        }
        // INVARIANT: `len` grew by at most `room`, so it stays below `buf.len()` (or at 0 for an
        // empty buffer), and the byte after the text is NUL.
        Ok(())
    }
}

/// What was written to a sysfs file, as a `store` callback receives it.
///
/// # Invariants
///
/// `bytes_with_nul` ends with a NUL byte (the one sysfs adds after the written bytes).
#[derive(Clone, Copy)]
pub struct Input<'a> {
    bytes_with_nul: &'a [u8],
}

impl<'a> Input<'a> {
    /// An input of the bytes of `s`; this is for testing `store` callbacks.
    pub fn from_c_str(s: &'a CStr) -> Self {
        // INVARIANT: `to_bytes_with_nul()` ends with the NUL.
        Self {
            bytes_with_nul: s.to_bytes_with_nul(),
        }
    }

    /// All the bytes written, which may include NUL bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        let len = self.bytes_with_nul.len().saturating_sub(1);
        &self.bytes_with_nul[..len]
    }

    /// The bytes written up to the first NUL: the string that C `store` callbacks parse.
    pub fn as_c_str(&self) -> &'a CStr {
        // By the type invariants there is a NUL, so the fallback is never used.
        CStr::from_bytes_until_nul(self.bytes_with_nul).unwrap_or(c"")
    }
}

/// Parses `s` as an `unsigned int` in `base` (C: `kstrtouint()`).
///
/// Accepts an optional `+`, digits (a `0x` prefix in base 16, and the base from the prefix if
/// `base` is 0) and one optional trailing newline. Fails with `ERANGE` if the value does not
/// fit and `EINVAL` for anything else, such as an empty string or a `-` sign.
pub fn kstrtouint(s: &CStr, base: u32) -> Result<u32> {
    let mut res = 0;
    // SAFETY: `s` is NUL-terminated and valid for reads, `res` for a write.
    to_result(unsafe { bindings::kstrtouint(s.as_char_ptr(), base as c_uint, &mut res) })?;
    Ok(res)
}

/// Parses `s` as an `int` in `base` (C: `kstrtoint()`).
///
/// As [`kstrtouint`], but also accepts a `-` sign.
pub fn kstrtoint(s: &CStr, base: u32) -> Result<i32> {
    let mut res = 0;
    // SAFETY: `s` is NUL-terminated and valid for reads, `res` for a write.
    to_result(unsafe { bindings::kstrtoint(s.as_char_ptr(), base as c_uint, &mut res) })?;
    Ok(res)
}

/// Parses `s` as an `unsigned long` in `base` (C: `kstrtoul()`).
///
/// As [`kstrtouint`], for the wider type.
pub fn kstrtoul(s: &CStr, base: u32) -> Result<usize> {
    let mut res = 0;
    // SAFETY: `s` is NUL-terminated and valid for reads, `res` for a write.
    to_result(unsafe { bindings::kstrtoul(s.as_char_ptr(), base as c_uint, &mut res) })?;
    Ok(res)
}

/// Parses `s` as a boolean (C: `kstrtobool()`).
///
/// Only the first character counts, or the first two for `o`: `true` for strings starting with
/// `y`, `t`, `e`, `1` or `on`, `false` for `n`, `f`, `d`, `0` or `of` (letters in either case);
/// whatever follows is ignored. `EINVAL` for anything else.
pub fn kstrtobool(s: &CStr) -> Result<bool> {
    let mut res = false;
    // SAFETY: `s` is NUL-terminated and valid for reads, `res` for a write.
    to_result(unsafe { bindings::kstrtobool(s.as_char_ptr(), &mut res) })?;
    Ok(res)
}

/// Whether `a` and `b` are equal, ignoring one trailing newline on either (C: `sysfs_streq()`).
pub fn streq(a: &CStr, b: &CStr) -> bool {
    // SAFETY: Both are NUL-terminated and valid for reads.
    unsafe { bindings::sysfs_streq(a.as_char_ptr(), b.as_char_ptr()) }
}

#[cfg(CONFIG_RUST_SYSFS_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_sysfs)]
mod tests {
    use super::*;
    use crate::sync::atomic::{Atomic, Relaxed};
    use core::fmt::Write;

    #[test]
    fn uint() {
        assert_eq!(kstrtouint(c"5", 10), Ok(5));
        assert_eq!(kstrtouint(c"5\n", 10), Ok(5));
        assert_eq!(kstrtouint(c"+5", 10), Ok(5));
        assert_eq!(kstrtouint(c"0", 10), Ok(0));
        assert_eq!(kstrtouint(c"4294967295", 10), Ok(u32::MAX));
        assert_eq!(kstrtouint(c"4294967296", 10), Err(ERANGE));
        assert_eq!(kstrtouint(c"99999999999999999999", 10), Err(ERANGE));
        assert_eq!(kstrtouint(c"", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"\n", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"-1", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"-0", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"abc", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c" 5", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"5 ", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"5\n\n", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"0x10", 10), Err(EINVAL));
        assert_eq!(kstrtouint(c"0x10", 16), Ok(16));
        assert_eq!(kstrtouint(c"010", 0), Ok(8));
    }

    #[test]
    fn int() {
        assert_eq!(kstrtoint(c"5\n", 10), Ok(5));
        assert_eq!(kstrtoint(c"-1", 10), Ok(-1));
        assert_eq!(kstrtoint(c"-2147483648", 10), Ok(i32::MIN));
        assert_eq!(kstrtoint(c"2147483647", 10), Ok(i32::MAX));
        assert_eq!(kstrtoint(c"2147483648", 10), Err(ERANGE));
        assert_eq!(kstrtoint(c"-2147483649", 10), Err(ERANGE));
        assert_eq!(kstrtoint(c"--1", 10), Err(EINVAL));
        assert_eq!(kstrtoint(c"", 10), Err(EINVAL));
        assert_eq!(kstrtoint(c"abc", 10), Err(EINVAL));
    }

    #[test]
    fn ulong() {
        assert_eq!(kstrtoul(c"30000\n", 10), Ok(30000));
        #[cfg(CONFIG_64BIT)]
        {
            assert_eq!(kstrtoul(c"4294967296", 10), Ok(4_294_967_296));
            assert_eq!(kstrtoul(c"18446744073709551615", 10), Ok(usize::MAX));
            assert_eq!(kstrtoul(c"18446744073709551616", 10), Err(ERANGE));
        }
        #[cfg(not(CONFIG_64BIT))]
        {
            assert_eq!(kstrtoul(c"4294967295", 10), Ok(usize::MAX));
            assert_eq!(kstrtoul(c"4294967296", 10), Err(ERANGE));
        }
        assert_eq!(kstrtoul(c"-1", 10), Err(EINVAL));
        assert_eq!(kstrtoul(c"", 10), Err(EINVAL));
        assert_eq!(kstrtoul(c"1a", 10), Err(EINVAL));
    }

    #[test]
    fn bool() {
        for s in [
            c"y", c"Y", c"1", c"on", c"On", c"oN", c"yes", c"1\n", c"y?", c"true", c"T", c"enable",
            c"E",
        ] {
            assert_eq!(kstrtobool(s), Ok(true));
        }
        for s in [
            c"n", c"N", c"0", c"off", c"OF", c"no", c"0\n", c"false", c"F", c"disable", c"D",
        ] {
            assert_eq!(kstrtobool(s), Ok(false));
        }
        for s in [c"", c"\n", c"2", c"o", c"ox", c"-1", c" 1", c"x"] {
            assert_eq!(kstrtobool(s), Err(EINVAL));
        }
    }

    #[test]
    fn sysfs_streq() {
        assert!(streq(c"none", c"none"));
        assert!(streq(c"none\n", c"none"));
        assert!(streq(c"none", c"none\n"));
        assert!(!streq(c"none\n\n", c"none"));
        assert!(!streq(c"non", c"none"));
        assert!(!streq(c"none ", c"none"));
        assert!(!streq(c"", c"none"));
    }

    #[test]
    fn input() {
        let input = Input::from_c_str(c"12\n");
        assert_eq!(input.as_bytes(), b"12\n");
        assert_eq!(input.as_c_str(), c"12\n");
        // C parsers stop at the first NUL, which is what `as_c_str()` gives them.
        let input = Input {
            bytes_with_nul: b"5\0x\0",
        };
        assert_eq!(input.as_bytes(), b"5\0x");
        assert_eq!(input.as_c_str(), c"5");
        assert_eq!(kstrtouint(input.as_c_str(), 10), Ok(5));
    }

    #[test]
    fn emitter_truncates_like_sysfs_emit() -> Result {
        let mut page = KVec::from_elem(0xffu8, PAGE_SIZE, GFP_KERNEL)?;
        let mut out = Emitter::new(&mut page);
        assert!(out.is_empty());
        writeln!(out, "{}", 4_294_967_295u32)?;
        assert_eq!(out.as_bytes(), b"4294967295\n");
        for _ in 0..PAGE_SIZE {
            write!(out, "{}", 0xabu8)?;
        }
        assert_eq!(out.len(), PAGE_SIZE - 1);
        assert_eq!(page[PAGE_SIZE - 1], 0);

        let mut small = [0xffu8; 4];
        let mut out = Emitter::new(&mut small);
        write!(out, "{}", -12345i32)?;
        assert_eq!(out.as_bytes(), b"-12");
        assert_eq!(small, *b"-12\0");

        let mut out = Emitter::new(&mut []);
        write!(out, "x")?;
        assert_eq!(out.len(), 0);
        Ok(())
    }

    static VALUE: Atomic<u32> = Atomic::new(7);

    fn value_show(out: &mut Emitter<'_>) -> Result {
        writeln!(out, "{}", VALUE.load(Relaxed))?;
        Ok(())
    }

    fn value_store(input: Input<'_>) -> Result {
        let v = kstrtouint(input.as_c_str(), 10)?;
        if v > 100 {
            return Err(EINVAL);
        }
        VALUE.store(v, Relaxed);
        Ok(())
    }

    static VALUE_ATTR: Attribute = Attribute::new_rw(c"value", value_show, value_store);
    static VALUE_RO_ATTR: Attribute = Attribute::new_ro(c"value_ro", value_show);

    crate::attribute_group! {
        static TEST_GROUP = c"rust_sysfs_kunit", [
            VALUE_ATTR,
            #[cfg(any())]
            VALUE_ATTR,
            VALUE_RO_ATTR,
        ];
    }

    #[test]
    fn callbacks_as_sysfs_calls_them() -> Result {
        // SAFETY: The group was declared by `attribute_group!`, so `attrs` is valid.
        let attrs = unsafe { (*TEST_GROUP.0.get()).__bindgen_anon_2.attrs };
        // SAFETY: The list has two attributes and a NULL, `cfg(any())` removed the third.
        let (rw, ro, end) = unsafe { (*attrs, *attrs.add(1), *attrs.add(2)) };
        assert!(end.is_null());
        // SAFETY: The entries point to the `struct attribute` at the start of `kobj_attribute`s.
        let (rw, ro) = unsafe {
            (
                &*rw.cast::<bindings::kobj_attribute>(),
                &*ro.cast::<bindings::kobj_attribute>(),
            )
        };
        assert_eq!(rw.attr.mode, 0o644);
        assert_eq!(ro.attr.mode, 0o444);
        // SAFETY: Set by `Attribute::new()` to a static string.
        assert_eq!(unsafe { CStr::from_char_ptr(rw.attr.name) }, c"value");
        // SAFETY: Reading the function pointers `Attribute::new()` set.
        let (show, store, ro_store) = unsafe {
            (
                rw.__bindgen_anon_1.show_const.ok_or(EINVAL)?,
                rw.__bindgen_anon_2.store_const.ok_or(EINVAL)?,
                ro.__bindgen_anon_2.store_const,
            )
        };
        assert!(ro_store.is_none());

        let mut page = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        // SAFETY: `rw` is the `kattr` of `VALUE_ATTR` and `page` a page-sized buffer.
        let n = unsafe { show(core::ptr::null_mut(), rw, page.as_mut_ptr()) };
        assert_eq!(n, 2);
        assert_eq!(&page[..3], b"7\n\0");

        for (written, ret, value) in [
            (&b"42\n\0"[..], 3, 42),
            (b"101\0", EINVAL.to_errno() as isize, 42),
            (b"4294967296\0", ERANGE.to_errno() as isize, 42),
            (b"0\0", 1, 0),
        ] {
            // SAFETY: `rw` is the `kattr` of `VALUE_ATTR`, `written` is NUL-terminated.
            let n = unsafe {
                store(
                    core::ptr::null_mut(),
                    rw,
                    written.as_ptr(),
                    written.len() - 1,
                )
            };
            assert_eq!(n, ret);
            assert_eq!(VALUE.load(Relaxed), value);
        }
        Ok(())
    }

    #[test]
    fn register_and_remove() -> Result {
        let registration = TEST_GROUP.register(Parent::Kernel)?;
        drop(registration);
        // Gone again, so it can be created anew.
        let registration = TEST_GROUP.register(Parent::Kernel)?;
        drop(registration);
        Ok(())
    }
}
