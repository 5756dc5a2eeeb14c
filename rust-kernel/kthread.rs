// SPDX-License-Identifier: GPL-2.0

//! Kernel threads.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h),
//! [`include/linux/freezer.h`](srctree/include/linux/freezer.h)
//!
//! [`run`] starts a kernel thread that runs a plain function; the thread itself uses
//! [`should_stop`], [`set_freezable`], [`try_to_freeze`] and [`freezing`].

use crate::{
    bindings,
    error::{from_err_ptr, Result},
    str::CStr,
    sync::aref::ARef,
    task::Task,
};
use core::ffi::{c_int, c_void};

/// Creates and wakes a kernel thread named `name` that runs `f` (`kthread_run()`).
///
/// Returns the thread's task, with a reference held.
pub fn run(f: fn() -> i32, name: &'static CStr) -> Result<ARef<Task>> {
    /// # Safety
    ///
    /// `data` must be a `fn() -> i32` cast to a pointer, as [`run`] passes it.
    unsafe extern "C" fn trampoline(data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `fn() -> i32` passed to `kthread_create_on_node()` below.
        let f: fn() -> i32 = unsafe { core::mem::transmute::<*mut c_void, fn() -> i32>(data) };
        f()
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

/// Whether the current kernel thread was asked to stop (`kthread_should_stop()`).
pub fn should_stop() -> bool {
    // SAFETY: Callable from any kernel thread.
    unsafe { bindings::kthread_should_stop() }
}

/// Makes the current kernel thread freezable (`set_freezable()`).
pub fn set_freezable() {
    // SAFETY: Affects only the current task.
    unsafe { bindings::set_freezable() };
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
