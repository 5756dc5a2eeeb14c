// SPDX-License-Identifier: GPL-2.0

//! The `ksm` trace events of include/trace/events/ksm.h, emitted where mm/ksm.c emits them and
//! with the same arguments, so that existing tools read them unchanged.
//!
//! glue.c defines the tracepoints (`CREATE_TRACE_POINTS`) and the `rust_do_trace_*` functions
//! that call them (`CREATE_RUST_TRACE_POINTS`): mm/ksm.c, which defines them otherwise, is not
//! built. Each wrapper below costs a static branch when its event is off.
//!
//! The events record the pointers they are given (`mm`, `rmap_item`, the KSM page) and print
//! them with `%p`; they never dereference them, so any pointer is fine to pass, and the events
//! are declared safe to call.

use kernel::{
    ffi::{c_int, c_ulong, c_void},
    mm::Mm,
    tracepoint::declare_trace,
};

declare_trace! {
    // SAFETY: The events of include/trace/events/ksm.h store the values they are given, and
    // print the pointers with `%p`, never following them: any arguments are fine.
    unsafe {
        fn ksm_start_scan(seq: c_int, rmap_entries: u32);
        fn ksm_stop_scan(seq: c_int, rmap_entries: u32);
        fn ksm_enter(mm: *mut c_void);
        fn ksm_exit(mm: *mut c_void);
        fn ksm_merge_one_page(pfn: c_ulong, rmap_item: *mut c_void, mm: *mut c_void, err: c_int);
        fn ksm_merge_with_ksm_page(
            ksm_page: *mut c_void,
            pfn: c_ulong,
            rmap_item: *mut c_void,
            mm: *mut c_void,
            err: c_int,
        );
        fn ksm_remove_ksm_page(pfn: c_ulong);
        fn ksm_remove_rmap_item(pfn: c_ulong, rmap_item: *mut c_void, mm: *mut c_void);
        fn ksm_advisor(scan_time: i64, pages_to_scan: c_ulong, cpu_percent: u32);
    }
}

fn mm_ptr(mm: &Mm) -> *mut c_void {
    mm.as_raw().cast()
}

/// The address of an rmap item, which the events print as its identity.
fn item_ptr<T>(item: &T) -> *mut c_void {
    core::ptr::from_ref(item).cast_mut().cast()
}

/// A full scan starts: its sequence number and the number of rmap items (C truncates both).
pub(crate) fn start_scan(seq: usize, rmap_items: usize) {
    ksm_start_scan(seq as c_int, rmap_items as u32);
}

/// A full scan ends, before its sequence number is incremented.
pub(crate) fn stop_scan(seq: usize, rmap_items: usize) {
    ksm_stop_scan(seq as c_int, rmap_items as u32);
}

/// `mm` was registered with KSM.
pub(crate) fn enter(mm: &Mm) {
    ksm_enter(mm_ptr(mm));
}

/// `mm` is exiting and was unregistered (now or, through ksmd, later).
pub(crate) fn exit(mm: &Mm) {
    ksm_exit(mm_ptr(mm));
}

/// A page of `item`, in `mm`, was (or, with an error, was not) merged with the zero page at
/// `zero_pfn`.
pub(crate) fn merge_one_page<T>(zero_pfn: usize, item: &T, mm: &Mm, err: i32) {
    ksm_merge_one_page(zero_pfn, item_ptr(item), mm_ptr(mm), err);
}

/// A page of `item`, in `mm` at `pfn`, was (or was not) merged with the KSM page `kpage`
/// (null: the page itself was to become a KSM page).
pub(crate) fn merge_with_ksm_page<T>(kpage: *mut c_void, pfn: usize, item: &T, mm: &Mm, err: i32) {
    ksm_merge_with_ksm_page(kpage, pfn, item_ptr(item), mm_ptr(mm), err);
}

/// The stable node of the KSM page at `kpfn` is removed.
pub(crate) fn remove_ksm_page(kpfn: usize) {
    ksm_remove_ksm_page(kpfn);
}

/// A sharing mapping (`item`, in `mm`) of the KSM page at `kpfn` is forgotten with its stable
/// node.
pub(crate) fn remove_rmap_item<T>(kpfn: usize, item: &T, mm: &Mm) {
    ksm_remove_rmap_item(kpfn, item_ptr(item), mm_ptr(mm));
}

/// The scan-time advisor set `pages_to_scan` after a scan of `scan_time` seconds that used
/// `cpu_percent` of a CPU.
pub(crate) fn advisor(scan_time: i64, pages_to_scan: usize, cpu_percent: u32) {
    ksm_advisor(scan_time, pages_to_scan, cpu_percent);
}
