// SPDX-License-Identifier: GPL-2.0

//! Memory hot-remove: keeping the stable tree off memory that goes offline (C:
//! `ksm_memory_callback()` and `wait_while_offlining()`).
//!
//! Offlining migrates every page still in use out of the memory block; a KSM page that moves
//! updates its stable node's `kpfn` (`folio_migrate_ksm()`). But a node whose page was freed
//! stays in the stable tree until a lookup finds it stale through its `struct page`, and that
//! `struct page` goes away with the memory. So, as in C:
//!
//! - `MEM_GOING_OFFLINE` takes the thread mutex (waiting for ksmd's batch or a sysfs write to
//!   finish) and sets [`OFFLINING`]. Until offlining ends, [`crate::lock_ksm`] does not return:
//!   ksmd and the sysfs writes that walk the trees wait. `break_ksm()`, rmap walks and the other
//!   `ksm.h` entry points do not take the mutex and go on: they do not look pages up by `kpfn`.
//! - `MEM_OFFLINE` removes the nodes whose `kpfn` is in the offlined range, then ends offlining.
//! - `MEM_CANCEL_OFFLINE` ends offlining: clears [`OFFLINING`] and wakes the waiters.
//!
//! Unlike C, `MEM_OFFLINE` removes the nodes with the thread mutex held: the trees are data of
//! the mutex ([`crate::Ksm`]). That cannot wait long, nor deadlock: everyone else who takes the
//! mutex while [`OFFLINING`] is set drops it at once (offlining runs under `mem_hotplug_lock`,
//! which no holder of the mutex waits for).
//!
//! Lock order: the notifier runs under `device_hotplug_lock` and `mem_hotplug_lock` and takes
//! the thread mutex inside them (see the crate's lock order). The `lock` of the waiters below is
//! never held together with the thread mutex, and nothing nests inside it.
//!
//! Like C, ksmd and the sysfs writers sleep uninterruptibly while memory goes offline, which
//! takes as long as migrating its pages does: a long offline can set off hung task warnings.

use crate::{node::locked, KsmGuard};
use core::ffi::c_ulong;
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        CondVar, Mutex, SetOnce,
    },
};

/// Whether memory is going offline (C: `ksm_run & KSM_RUN_OFFLINE`). Changed only with the
/// thread mutex held; read with it held by [`lock_online`], and by the waiters under
/// [`Waiters::lock`].
static OFFLINING: Atomic<bool> = Atomic::new(false);

/// Those who wait for offlining to end (C: `wait_on_bit(&ksm_run, ...)`).
#[pin_data]
struct Waiters {
    /// Makes the waiters' test of [`OFFLINING`] and their sleep atomic with respect to the
    /// wake-up, so that none is lost.
    #[pin]
    lock: Mutex<()>,
    /// Woken when offlining ends.
    #[pin]
    done: CondVar,
}

static WAITERS: SetOnce<Pin<KBox<Waiters>>> = SetOnce::new();

/// Sets up the wait queue, before anything can take the thread mutex through
/// [`crate::lock_ksm`] and before the memory notifier is registered.
pub(crate) fn init() -> Result {
    let w = KBox::pin_init(
        pin_init!(Waiters {
            lock <- new_mutex!(()),
            done <- new_condvar!("ksm_offline_wait"),
        }),
        GFP_KERNEL,
    )?;
    // Called once, from init().
    kernel::warn_on!(!WAITERS.populate(w));
    Ok(())
}

/// Locks the thread mutex once no memory is going offline (C: `mutex_lock(&ksm_thread_mutex)`
/// followed by `wait_while_offlining()`).
pub(crate) fn lock_online() -> KsmGuard {
    loop {
        let g = locked::lock();
        if !OFFLINING.load(Relaxed) {
            return g;
        }
        drop(g);
        let Some(w) = WAITERS.as_ref() else {
            // init() failed, so KSM did not start and no notifier sets OFFLINING.
            kernel::warn_on!(true);
            return locked::lock();
        };
        let mut l = w.lock.lock();
        // Uninterruptible, as C: ksmd and the sysfs writers have nothing to do but wait.
        while OFFLINING.load(Relaxed) {
            w.done.wait(&mut l);
        }
    }
}

/// Ends offlining: clears [`OFFLINING`] (the caller holds the thread mutex) and wakes all who
/// wait for it.
fn end_offlining(g: KsmGuard) {
    OFFLINING.store(false, Relaxed);
    drop(g);
    if let Some(w) = WAITERS.as_ref() {
        // A waiter tests OFFLINING and goes to sleep under `lock`: taking it here makes sure
        // that every waiter either saw the store above or is already on the wait queue.
        drop(w.lock.lock());
        w.done.notify_all();
    }
}

/// `MEM_GOING_OFFLINE`: memory is about to be offlined (called from glue.c's notifier).
#[no_mangle]
pub extern "C" fn ksm_rs_memory_going_offline() {
    let _g = locked::lock();
    OFFLINING.store(true, Relaxed);
}

/// `MEM_OFFLINE`: the `nr_pages` pages from `start_pfn` are offline; their stable nodes go
/// (called from glue.c's notifier).
///
/// # Safety
///
/// The pages must have gone offline.
#[no_mangle]
pub unsafe extern "C" fn ksm_rs_memory_offline(start_pfn: c_ulong, nr_pages: c_ulong) {
    // `unsigned long` is `usize` on every architecture Rust supports in the kernel.
    let (start, nr) = (start_pfn as usize, nr_pages as usize);
    let mut g = locked::lock();
    // SAFETY: The memory went offline, as the caller guarantees, and stays so until we return:
    // our caller holds the memory hotplug lock, which onlining takes.
    let offline = unsafe { crate::node::Offline::new(start..start.saturating_add(nr)) };
    crate::stable_tree::remove_range(&mut g.ksm(), &offline);
    end_offlining(g);
}

/// `MEM_CANCEL_OFFLINE`: offlining failed, the memory stays (called from glue.c's notifier).
#[no_mangle]
pub extern "C" fn ksm_rs_memory_cancel_offline() {
    end_offlining(locked::lock());
}
