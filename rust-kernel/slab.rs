// SPDX-License-Identifier: GPL-2.0

//! Dedicated slab caches.
//!
//! C header: [`include/linux/slab.h`](srctree/include/linux/slab.h).
//!
//! A [`KmemCache<T>`] hands out memory for objects of one type `T`. Subsystems that allocate
//! many objects of one kind use one rather than `kmalloc`: the objects pack without rounding up
//! to a kmalloc size class, and the cache has its own line in `/proc/slabinfo` and its own
//! `slab_debug` switch. KSM's rmap items and stable nodes are such objects.
//!
//! # Examples
//!
//! ```
//! use kernel::slab::KmemCache;
//!
//! struct Item {
//!     key: u64,
//!     value: u64,
//! }
//!
//! let cache = KmemCache::<Item>::new(c"rust_doctest_items")?;
//! let mut item = cache.alloc(Item { key: 1, value: 2 }, GFP_KERNEL)?;
//! item.value += 40;
//! assert_eq!(item.key + item.value, 43);
//! // The object goes back to the cache here, and the cache is destroyed after it.
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    prelude::*,
};
use core::{
    marker::PhantomData,
    mem,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

/// A slab cache for objects of type `T`.
///
/// Objects are allocated with [`KmemCache::alloc`] as [`CacheBox`]es that borrow the cache, so
/// the cache cannot be destroyed while any of its objects is alive.
///
/// # Invariants
///
/// `cache` points to a live `struct kmem_cache` whose objects are `size_of::<T>()` bytes large and
/// aligned to at least `align_of::<T>()`. It is destroyed only when this value is dropped.
pub struct KmemCache<T> {
    cache: NonNull<bindings::kmem_cache>,
    _t: PhantomData<T>,
}

// SAFETY: A `struct kmem_cache` may be used and destroyed from any thread; moving the cache to
// another thread can move `T`s there (through `CacheBox`), hence the `T: Send` bound.
unsafe impl<T: Send> Send for KmemCache<T> {}

// SAFETY: Allocating from and freeing to a `struct kmem_cache` is safe from any number of threads
// at once; a shared cache can be used to allocate `T`s on several threads, hence `T: Send`.
unsafe impl<T: Send> Sync for KmemCache<T> {}

impl<T> KmemCache<T> {
    /// Creates a cache named `name` for objects of type `T`.
    ///
    /// The name is what `/proc/slabinfo` shows; the cache keeps a pointer to it, hence
    /// `'static`. Fails with `EINVAL` for zero-sized or huge types, `ENOMEM` when the cache cannot
    /// be created.
    pub fn new(name: &'static CStr) -> Result<Self> {
        let size = u32::try_from(mem::size_of::<T>()).map_err(|_| EINVAL)?;
        let align = u32::try_from(mem::align_of::<T>()).map_err(|_| EINVAL)?;
        if size == 0 {
            return Err(EINVAL);
        }
        let mut args = bindings::kmem_cache_args {
            align,
            ..Default::default()
        };
        // SAFETY: `name` is NUL-terminated and lives forever, as the cache keeps the pointer;
        // `args` is valid for the duration of the call, which only reads it.
        let ptr =
            unsafe { bindings::__kmem_cache_create_args(name.as_char_ptr(), size, &mut args, 0) };
        let cache = NonNull::new(ptr).ok_or(ENOMEM)?;
        // INVARIANT: The cache was just created for objects of `size` bytes aligned to `align`.
        Ok(Self {
            cache,
            _t: PhantomData,
        })
    }

    /// Allocates an object from the cache and moves `value` into it.
    pub fn alloc(&self, value: T, flags: Flags) -> Result<CacheBox<'_, T>, AllocError> {
        // SAFETY: By the type invariant, `self.cache` is a live cache.
        let raw = unsafe { bindings::kmem_cache_alloc_noprof(self.cache.as_ptr(), flags.as_raw()) };
        let ptr = NonNull::new(raw.cast::<T>()).ok_or(AllocError)?;
        // SAFETY: By the type invariant, the object is large and aligned enough for a `T`, and
        // nothing else refers to memory that was just allocated.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: `ptr` holds an initialised `T` allocated from `self`, owned by the new box.
        Ok(CacheBox { ptr, cache: self })
    }
}

impl<T> Drop for KmemCache<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the cache is live, and nothing uses it after this. Every
        // `CacheBox` borrows `self`, so none is left; an object given up with
        // `CacheBox::into_raw` and never taken back is still allocated, and then
        // `kmem_cache_destroy()` warns and keeps the cache (and the object's memory) instead of
        // freeing it. Taking such an object back would need a `&KmemCache` that no longer
        // exists, so it can only leak.
        unsafe { bindings::kmem_cache_destroy(self.cache.as_ptr()) };
    }
}

/// An owned `T` in memory allocated from a [`KmemCache<T>`], freed back to it on drop.
///
/// # Invariants
///
/// `ptr` points to an initialised `T` in an object allocated from `cache`, owned by this box.
pub struct CacheBox<'a, T> {
    ptr: NonNull<T>,
    cache: &'a KmemCache<T>,
}

// SAFETY: A `CacheBox` owns its `T` like a `KBox` does, and freeing to a `KmemCache` (which is
// `Sync` for `T: Send`) may happen on any thread.
unsafe impl<T: Send> Send for CacheBox<'_, T> {}

// SAFETY: Through `&CacheBox` only `&T` can be reached.
unsafe impl<T: Sync> Sync for CacheBox<'_, T> {}

impl<'a, T> CacheBox<'a, T> {
    /// Gives up ownership, returning the object's address; [`CacheBox::from_raw`] takes it back.
    ///
    /// Intrusive structures (trees, lists) keep objects as raw pointers this way. An object not
    /// taken back before its cache is dropped is leaked, with the cache (see [`KmemCache`]'s
    /// `Drop`).
    ///
    /// The provenance of the pointer is exposed, so that `from_raw()` may be given the object's
    /// address through any pointer: its owner may reach the object through shared references
    /// meanwhile, and keep pointers derived from them.
    pub fn into_raw(self) -> NonNull<T> {
        let ptr = self.ptr;
        mem::forget(self);
        // Expose the provenance that `from_raw()` takes back.
        let _ = ptr.as_ptr().expose_provenance();
        ptr
    }

    /// Gives up ownership, returning a reference to the object that lasts as long as the cache
    /// is borrowed: the object is not freed unless [`CacheBox::from_raw`] takes it back, as for
    /// [`CacheBox::into_raw`].
    pub fn leak(self) -> &'a mut T {
        let ptr = self.into_raw();
        // SAFETY: An initialised `T` that the box owned (type invariant) and nothing else
        // references; it is not freed before the cache is dropped, which the borrow `'a` of the
        // cache prevents, unless `from_raw()` takes it back, whose caller promises not to use
        // the reference any more.
        unsafe { &mut *ptr.as_ptr() }
    }

    /// Takes back ownership of an object given up with [`CacheBox::into_raw`] or
    /// [`CacheBox::leak`].
    ///
    /// # Safety
    ///
    /// `ptr` must have the address of an object that [`CacheBox::into_raw`] or
    /// [`CacheBox::leak`] gave up on a box of `cache`, and that was not taken back already; the
    /// reference returned by `leak()`, and any derived from it, must no longer be used. `ptr`
    /// may have any provenance (it may come from a shared reference to the object): the box
    /// takes back the provenance that `into_raw()` exposed.
    pub unsafe fn from_raw(cache: &'a KmemCache<T>, ptr: NonNull<T>) -> Self {
        // The exposed provenance of the allocation, which is valid for writes and for freeing.
        let exposed = core::ptr::with_exposed_provenance_mut::<T>(ptr.as_ptr().addr());
        // SAFETY: The address of `ptr`, which is not null.
        let ptr = unsafe { NonNull::new_unchecked(exposed) };
        // INVARIANT: By the safety requirements, `ptr` is an initialised `T` allocated from
        // `cache` that nothing else owns, with the provenance of its allocation.
        Self { ptr, cache }
    }
}

impl<T> Deref for CacheBox<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: By the type invariant, `ptr` points to an initialised `T` this box owns.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for CacheBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: By the type invariant, `ptr` points to an initialised `T` this box owns, and
        // `&mut self` makes this the only reference.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for CacheBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the box owns an initialised `T`, dropped only here.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: By the type invariant the object was allocated from `self.cache`, which is
        // live because the box borrows it; nothing uses the object after this.
        unsafe { bindings::kmem_cache_free(self.cache.cache.as_ptr(), self.ptr.as_ptr().cast()) };
    }
}

#[cfg(CONFIG_RUST_SLAB_KUNIT_TEST)]
#[macros::kunit_tests(rust_kernel_slab)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn alloc_many_and_read_back() -> Result {
        let cache = KmemCache::<[u64; 5]>::new(c"rust_slab_test_arrays")?;
        let mut boxes = KVec::new();
        for i in 0..200u64 {
            boxes.push(
                cache.alloc([i, i + 1, i + 2, i + 3, i + 4], GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        for (i, b) in (0u64..).zip(boxes.iter()) {
            assert_eq!(**b, [i, i + 1, i + 2, i + 3, i + 4]);
        }
        boxes[7][0] = 1000;
        assert_eq!(boxes[7][0], 1000);
        Ok(())
    }

    struct CountDrops<'a>(&'a Cell<u32>);

    impl Drop for CountDrops<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn drop_runs_the_destructor_once() -> Result {
        let drops = Cell::new(0);
        let cache = KmemCache::<CountDrops<'_>>::new(c"rust_slab_test_drops")?;
        let a = cache.alloc(CountDrops(&drops), GFP_KERNEL)?;
        let b = cache.alloc(CountDrops(&drops), GFP_KERNEL)?;
        drop(a);
        assert_eq!(drops.get(), 1);
        let raw = b.into_raw();
        assert_eq!(drops.get(), 1);
        // SAFETY: `raw` comes from `into_raw` on a box of `cache` and is taken back once.
        drop(unsafe { CacheBox::from_raw(&cache, raw) });
        assert_eq!(drops.get(), 2);
        Ok(())
    }

    #[repr(C, align(64))]
    struct Aligned {
        byte: u8,
    }

    #[test]
    fn objects_are_aligned() -> Result {
        let cache = KmemCache::<Aligned>::new(c"rust_slab_test_aligned")?;
        for _ in 0..16 {
            let b = cache.alloc(Aligned { byte: 7 }, GFP_KERNEL)?;
            assert_eq!(b.ptr.as_ptr().addr() % 64, 0);
            assert_eq!(b.byte, 7);
        }
        Ok(())
    }

    #[test]
    fn zero_sized_types_are_refused() {
        assert!(matches!(KmemCache::<()>::new(c"rust_slab_test_zst"), Err(e) if e == EINVAL));
    }
}
