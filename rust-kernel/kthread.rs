// SPDX-License-Identifier: GPL-2.0

//! Kernel threads.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/freezer.h`](srctree/include/linux/freezer.h)
//!
//! [`run`] starts a kernel thread that runs a plain function. The function receives a
//! [`Kthread`], the proof that it runs in a kernel thread made by [`run`]: the operations that
//! are only valid there ([`Kthread::should_stop`], [`Kthread::set_freezable`]) are its methods.
//! [`try_to_freeze`], [`freezing`], [`set_current_nice`] and [`cond_resched`] are valid in any
//! task.

use crate::{
    bindings,
    error::{from_err_ptr, Result},
    str::CStr,
    sync::aref::ARef,
    task::Task,
};
use core::{
    ffi::{c_int, c_void},
    marker::PhantomData,
};

/// The current task, known to be a kernel thread created by [`run`].
///
/// Only [`run`] creates one, and hands it by reference to the thread function: it cannot be
/// sent to or shared with another task.
///
/// # Invariants
///
/// The current task is a kernel thread created with `kthread_create_on_node()` while the
/// reference is valid.
pub struct Kthread {
    /// Not `Send` or `Sync`: it speaks of the current task only.
    _not_send: PhantomData<*mut ()>,
}

impl Kthread {
    /// Whether this kernel thread was asked to stop (`kthread_should_stop()`).
    pub fn should_stop(&self) -> bool {
        // SAFETY: By the type invariant the current task is a kthread, as
        // `kthread_should_stop()` requires (it dereferences `to_kthread(current)`).
        unsafe { bindings::kthread_should_stop() }
    }

    /// Makes this kernel thread freezable (`set_freezable()`): it must then call
    /// [`try_to_freeze`] regularly.
    pub fn set_freezable(&self) {
        // SAFETY: By the type invariant the current task is a kthread, whose `PF_NOFREEZE`
        // flag `set_freezable()` clears.
        unsafe { bindings::set_freezable() };
    }
}

/// Creates and wakes a kernel thread named `name` that runs `f` (`kthread_run()`).
///
/// Returns the thread's task, with a reference held.
pub fn run(f: fn(&Kthread) -> i32, name: &'static CStr) -> Result<ARef<Task>> {
    /// # Safety
    ///
    /// `data` must be a `fn(&Kthread) -> i32` cast to a pointer, as [`run`] passes it, and
    /// the function must run as the thread function of a new kthread.
    unsafe extern "C" fn trampoline(data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `fn(&Kthread) -> i32` passed to `kthread_create_on_node()`
        // below.
        let f: fn(&Kthread) -> i32 =
            unsafe { core::mem::transmute::<*mut c_void, fn(&Kthread) -> i32>(data) };
        // INVARIANT: We run as the thread function of a kthread made by `run`.
        let this = Kthread {
            _not_send: PhantomData,
        };
        f(&this)
    }

    // SAFETY: `trampoline` matches the thread function type; `f` is a plain function pointer
    // that lives forever; the format is "%s" with a static NUL-terminated name.
    let task = from_err_ptr(unsafe {
        bindings::kthread_create_on_node(
            Some(trampoline),
            f as *mut c_void,
            bindings::NUMA_NO_NODE,
            crate::str::CStrExt::as_char_ptr(c"%s"),
            crate::str::CStrExt::as_char_ptr(name),
        )
    })?;
    // SAFETY: `task` is a valid new thread; take a reference before it can run and exit.
    let task = unsafe {
        bindings::get_task_struct(task);
        ARef::from_raw(core::ptr::NonNull::new_unchecked(task.cast::<Task>()))
    };
    // SAFETY: The thread was just created and is valid.
    unsafe { bindings::wake_up_process(task.as_ptr()) };
    Ok(task)
}

/// Enters the refrigerator if a freeze is in progress (`try_to_freeze()`); returns whether the
/// task was frozen.
pub fn try_to_freeze() -> bool {
    // SAFETY: Affects only the current task; may sleep, like the caller expects.
    unsafe { bindings::try_to_freeze() }
}

/// Whether the current task should freeze (`freezing(current)`).
pub fn freezing() -> bool {
    // SAFETY: Reads state of the current task.
    unsafe { bindings::freezing_current() }
}

/// Sets the nice value of the current task (`set_user_nice(current, nice)`).
pub fn set_current_nice(nice: i32) {
    // SAFETY: The current task is valid.
    unsafe { bindings::set_user_nice(bindings::get_current(), isize::try_from(nice).unwrap_or(0)) };
}

/// Gives up the CPU if a reschedule is due (`cond_resched()`).
pub fn cond_resched() {
    // SAFETY: Callable from any sleepable context.
    unsafe { bindings::cond_resched() };
}
