// SPDX-License-Identifier: GPL-2.0

//! ksmd: the scanning thread, and the scan cursor's walk over all mergeable pages.

use crate::{
    merge::cmp_and_merge_page,
    mm_slot,
    node::{self, ItemRef, UnstableInfo},
    page::PageRef,
    state::{self, ksmd_should_run},
    unmerge::remove_trailing_rmap_items,
    unstable_tree::remove_rmap_item_from_tree,
    Ksm, KsmGuard, MMLIST,
};
use core::ops::ControlFlow;
use kernel::{
    kthread,
    mm::{
        folio::Folio,
        pgtable::{self, VmaMmapRead},
        virt::flags,
        MMF_VM_MERGEABLE,
    },
    new_condvar, new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{aref::ARef, atomic::Relaxed, CondVar, Mutex, SetOnce},
    time::msecs_to_jiffies,
};

/// What ksmd sleeps on.
#[pin_data]
pub(crate) struct Waits {
    /// Protects the check-then-sleep of ksmd against lost wake-ups.
    #[pin]
    lock: Mutex<()>,
    /// Woken when `run` starts scanning (C: `ksm_thread_wait`).
    #[pin]
    thread_wait: CondVar,
    /// Woken when `sleep_millisecs` changes (C: `ksm_iter_wait`).
    #[pin]
    iter_wait: CondVar,
}

static WAITS: SetOnce<Pin<KBox<Waits>>> = SetOnce::new();

/// Creates the wait queues and starts ksmd.
pub(crate) fn start() -> Result {
    let w = KBox::pin_init(
        pin_init!(Waits {
            lock <- new_mutex!(()),
            thread_wait <- new_condvar!("ksm_thread_wait"),
            iter_wait <- new_condvar!("ksm_iter_wait"),
        }),
        GFP_KERNEL,
    )?;
    WAITS.populate(w);
    kthread::run(ksm_scan_thread, c"ksmd")?;
    Ok(())
}

/// Wakes ksmd after `run` changed (C: `wake_up_interruptible(&ksm_thread_wait)`).
pub(crate) fn wake_thread() {
    if let Some(w) = WAITS.as_ref() {
        drop(w.lock.lock());
        w.thread_wait.notify_all();
    }
}

/// Wakes ksmd from its sleep between batches (C: `wake_up_interruptible(&ksm_iter_wait)`).
#[cfg(CONFIG_SYSFS)]
pub(crate) fn wake_iter() {
    if let Some(w) = WAITS.as_ref() {
        drop(w.lock.lock());
        w.iter_wait.notify_all();
    }
}

fn ksm_scan_thread(t: &kthread::Kthread) -> i32 {
    // Populated by start() before the thread is created.
    let Some(w) = WAITS.as_ref() else {
        kernel::warn_on!(true);
        return EINVAL.to_errno();
    };
    t.set_freezable();
    kthread::set_current_nice(5);
    while !t.should_stop() {
        {
            let mut g = crate::lock_ksm();
            if should_run() {
                ksm_do_scan(&mut g, state::PAGES_TO_SCAN.load(Relaxed));
            }
        }
        kthread::try_to_freeze();
        let mut l = w.lock.lock();
        if should_run() {
            // Sleep between batches; a change of sleep_millisecs wakes us early. With 0 there
            // is no sleep at all (a zero timeout would still wait for the next tick).
            let ms = state::SLEEP_MILLISECS.load(Relaxed);
            if ms != 0 {
                let _ = w
                    .iter_wait
                    .wait_interruptible_timeout(&mut l, msecs_to_jiffies(ms));
            }
        } else {
            while !should_run() && !t.should_stop() {
                if w.thread_wait.wait_interruptible_freezable(&mut l) {
                    break;
                }
            }
        }
    }
    0
}

/// Whether ksmd has work: `run` is 1 and some mm is registered (`ksmd_should_run()`).
fn should_run() -> bool {
    ksmd_should_run() && !MMLIST.lock().is_empty()
}

/// Scans up to `n` pages (`ksm_do_scan()`).
fn ksm_do_scan(g: &mut KsmGuard, n: u32) {
    let ksm = &mut g.ksm();
    for _ in 0..n {
        if kthread::freezing() {
            return;
        }
        kthread::cond_resched();
        let Some((item, page)) = scan_get_next_rmap_item(ksm) else {
            return;
        };
        cmp_and_merge_page(ksm, page, item);
        state::PAGES_SCANNED.add(ksm, 1);
    }
}

/// Finds the item for `addr` at the item cursor, in the list of the slot being scanned,
/// dropping items of addresses that are no longer mapped, or allocates one there
/// (`get_next_rmap_item()`). The cursor stays in front of the item.
fn get_next_rmap_item<'g>(ksm: &mut Ksm<'g>, addr: usize) -> Option<ItemRef<'g>> {
    while let Some(item) = node::cursor_item(ksm) {
        let a = item.address().addr();
        if a == addr {
            return Some(item);
        }
        if a > addr {
            break;
        }
        remove_rmap_item_from_tree(ksm, item);
        node::free_at_cursor(ksm);
    }
    node::alloc_at_cursor(ksm, addr)
}

/// How many scans to skip a page that failed to merge `age` times (`skip_age()`): it is
/// scanned once every `skip_age(age) + 1` scans.
fn skip_age(age: u8) -> u8 {
    match age {
        0..=3 => 1,
        4..=5 => 2,
        6..=8 => 4,
        _ => 8,
    }
}

/// Smart scan's decision for a page that is not merged, at its visit in the full scan `seqnr`:
/// counts the visit in the page's age, and says whether to skip the page. Young pages are
/// always scanned; older ones once per period of `skip_age(age) + 1` scans: in the first scan,
/// a period or more after their last, where `seqnr + oldchecksum` is a multiple of the period.
///
/// The unstable tree is rebuilt on every scan, so two pages of the same content only meet in
/// it when both are scanned in the same scan. Two such pages have the same `oldchecksum` once
/// old enough to be skipped (a page's first scan records its checksum), so they are in step,
/// however many scans apart they were first scanned. The checksum spreads the other pages over
/// the scans of their period, and a page whose checksum changed still waits a whole period.
/// (On 32-bit, an item back from the stable tree keeps its age, with a checksum of 0 until its
/// next scan, as in C: that scan may come one period late.)
fn smart_scan_skips(info: &mut UnstableInfo, seqnr: usize) -> bool {
    let age = info.age;
    info.age = age.saturating_add(1);
    if age < 3 {
        return false;
    }
    let period = usize::from(skip_age(age)) + 1;
    if usize::from(info.skipped) + 1 >= period
        && seqnr.wrapping_add(info.oldchecksum as usize) % period == 0
    {
        info.skipped = 0;
        return false;
    }
    info.skipped = info.skipped.saturating_add(1);
    true
}

/// Smart scan: whether to skip a page that keeps failing to merge (`should_skip_rmap_item()`).
fn should_skip_rmap_item<'g>(ksm: &mut Ksm<'g>, folio: &Folio, item: ItemRef<'g>) -> bool {
    if !state::SMART_SCAN.load(Relaxed) {
        return false;
    }
    // Never skip KSM pages, nor stable items (they carry no age).
    if folio.is_ksm() || item.address().is_stable() {
        return false;
    }
    let mut info = item.unstable_info();
    let skip = smart_scan_skips(&mut info, ksm.seqnr());
    item.set_unstable_info(info);
    if !skip {
        return false;
    }
    state::PAGES_SKIPPED.add(ksm, 1);
    remove_rmap_item_from_tree(ksm, item);
    true
}

/// Advances the cursor to the next anonymous page of a mergeable area and returns its item
/// and page (`scan_get_next_rmap_item()`); `None` at the end of a full scan or when there is
/// nothing to scan.
fn scan_get_next_rmap_item<'g>(ksm: &mut Ksm<'g>) -> Option<(ItemRef<'g>, PageRef)> {
    // Where the cursor is, once per page scanned: the mm of the slot the scanner holds, or (at
    // the head) a look at the mm list.
    let mut cursor = mm_slot::cursor_mm(ksm);
    if matches!(cursor, mm_slot::Cursor::Empty) {
        return None;
    }
    if matches!(cursor, mm_slot::Cursor::Head) {
        // Start of a full scan.
        crate::advisor::start_scan();
        crate::trace::start_scan(ksm.seqnr(), state::RMAP_ITEMS.get());
        // Pages held in per-CPU LRU caches have raised counts that stop write_protect_page():
        // drain them once per scan.
        kernel::mm::lru_add_drain_all();
        // Drop the stale stable nodes once per full scan: on the trees (the searches only look
        // at nodes of the same checksum) and on the migrate list.
        crate::stable_tree::prune_stale_nodes(ksm);
        if state::MERGE_ACROSS_NODES.load(Relaxed) == 0 {
            crate::stable_tree::prune_migrate_list(ksm);
        }
        // Empty since the last scan ended, unless `run = 2` failed in the middle of one.
        ksm.reset_unstable_tree();
        // The cursor moves to the first slot, the item cursor to its first item. A racing exit
        // may have removed the last mm.
        if !mm_slot::start_pass(ksm) {
            return None;
        }
        ksm.address = 0;
        cursor = mm_slot::cursor_mm(ksm);
    }
    loop {
        // The walk may free the slot (finish_mm()), and with it the slot's reference on the
        // mm: hold an `mm_users` reference of our own for the whole walk, and use the mm
        // through it. It cannot be had when the mm is exiting: then all its items go.
        //
        // If the process exits while we hold it, our `mmput()` is the last and tears the
        // address space down here, with the thread mutex held: not `mmput_async()`, which
        // would leave the teardown to a worker, so that KSM pages of a process that has
        // exited and been reaped could still be mapped, and a sysfs store that needs them
        // gone (`run = 2` then `merge_across_nodes`, `max_page_sharing`) could fail with
        // EBUSY where mm/ksm.c succeeds (there the exiting process tears down its own mm).
        // Every `mm_users` reference of KSM is taken and dropped under the thread mutex, so
        // whoever takes the mutex next finds the teardown done. Nothing the teardown does
        // takes the thread mutex (`__ksm_exit()` takes `MMLIST` only), but it may wait:
        // `exit_aio()` waits for the process's in-flight AIO, and sysfs stores wait for
        // ksmd meanwhile (in C, the exiting process waits). Not holding `mm_users` at all,
        // as C, would avoid it: that is the larger rework of how ksmd and exit race.
        //
        // The cursor is on a slot (`start_pass()`, `next_slot()`).
        let mm_slot::Cursor::Slot(mmu) = cursor else {
            kernel::warn_on!(true);
            return None;
        };
        let outcome = mmu.as_ref().map(|mmu| {
            let mg = &mmu.mmap_read_lock();
            let mut vma_opt = VmaMmapRead::find(mg, ksm.address);
            while let Some(vma) = vma_opt {
                let next_addr = vma.end();
                if vma.flags() & flags::MERGEABLE != 0 {
                    if ksm.address < vma.start() {
                        ksm.address = vma.start();
                    }
                    if vma.anon_vma().is_none() {
                        ksm.address = vma.end();
                    }
                    while ksm.address < vma.end() {
                        let mut page: Option<PageRef> = None;
                        let r = pgtable::walk_pages(vma, ksm.address, vma.end(), |e| {
                            if let Some((f, index)) = e.normal_folio() {
                                if !f.is_zone_device() && f.is_anon() {
                                    page = Some(PageRef {
                                        folio: ARef::from(f),
                                        index,
                                    });
                                    return Ok(ControlFlow::Break(e.addr()));
                                }
                            }
                            Ok(ControlFlow::Continue(()))
                        });
                        match (r, page) {
                            (Ok(Some(a)), Some(page)) => {
                                ksm.address = a;
                                pgtable::flush_anon_page(vma, &page.folio, page.index, a);
                                let Some(item) = get_next_rmap_item(ksm, a) else {
                                    return Outcome::Stop;
                                };
                                node::cursor_step(ksm);
                                if should_skip_rmap_item(ksm, &page.folio, item) {
                                    ksm.address += PAGE_SIZE;
                                    kthread::cond_resched();
                                    continue;
                                }
                                ksm.address += PAGE_SIZE;
                                return Outcome::Found(item, page);
                            }
                            _ => ksm.address = vma.end(),
                        }
                        kthread::cond_resched();
                    }
                }
                vma_opt = VmaMmapRead::find(mg, next_addr.max(ksm.address));
            }
            // Done with this mm: finish it while still holding its mmap lock, so that a
            // racing MADV_MERGEABLE (mmap lock held for write) sees either the mm registered
            // or MMF_VM_MERGEABLE clear, and registers it again.
            Outcome::Next(finish_mm(ksm))
        });
        let more = match outcome {
            Some(Outcome::Found(item, page)) => return Some((item, page)),
            Some(Outcome::Stop) => return None,
            Some(Outcome::Next(more)) => more,
            None => {
                // Exiting: forget everything of this mm.
                ksm.address = 0;
                mm_slot::rewind_items(ksm);
                finish_mm(ksm)
            }
        };
        if !more {
            break;
        }
        ksm.address = 0;
        cursor = mm_slot::cursor_mm(ksm);
    }
    crate::advisor::stop_scan();
    crate::trace::stop_scan(ksm.seqnr(), state::RMAP_ITEMS.get());
    // The items of the scan that ended are one scan old now, and are no longer taken out of
    // their tree when freed (`remove_rmap_item_from_tree()`): the trees are emptied with the
    // count, before any can be freed (by `run=2` before the next scan starts, say), so that
    // they never point to one.
    ksm.end_full_scan();
    state::FULL_SCANS.set(ksm, ksm.seqnr());
    None
}

enum Outcome<'g> {
    Found(ItemRef<'g>, PageRef),
    Stop,
    /// Whether there is a next slot.
    Next(bool),
}

/// Ends the walk of one mm: frees the items above the cursor (their areas are gone), moves
/// the cursor on, and unregisters the mm if the walk found nothing mergeable (or the mm
/// exited), as ksm_exit() would. Returns whether there is a next slot: the cursor and the
/// item cursor are on it.
fn finish_mm(ksm: &mut Ksm<'_>) -> bool {
    remove_trailing_rmap_items(ksm);
    let remove = ksm.address == 0;
    let (more, removed) = mm_slot::next_slot(ksm, |_| remove);
    if let Some(slot) = removed {
        // Only MMF_VM_MERGEABLE: an mm with MMF_VM_MERGE_ANY may just not have mapped
        // anything yet, and keeps that setting. Dropping the slot frees it: all its items
        // went above.
        slot.mm().flags_clear(MMF_VM_MERGEABLE);
    }
    more
}

#[kernel::macros::kunit_tests(ksm_rs_ksmd)]
mod tests {
    use super::*;

    #[test]
    fn smart_scan_backs_off() {
        // Pages that keep failing are skipped for more and more scans, up to 8.
        assert_eq!(skip_age(0), 1);
        assert_eq!(skip_age(3), 1);
        assert_eq!(skip_age(4), 2);
        assert_eq!(skip_age(5), 2);
        assert_eq!(skip_age(6), 4);
        assert_eq!(skip_age(8), 4);
        assert_eq!(skip_age(9), 8);
        assert_eq!(skip_age(u8::MAX), 8);
    }

    /// A page's smart scan record as `cmp_and_merge_page()` leaves it: new, or with a checksum.
    fn info(oldchecksum: u32, age: u8) -> UnstableInfo {
        UnstableInfo {
            oldchecksum,
            age,
            skipped: 0,
        }
    }

    /// Whether a page of checksum `sum` first scanned in scan `start`, and another of the same
    /// content first scanned `late` scans later, are both scanned, each after its first scan
    /// (which only records the checksum), in a common scan: how many scans after the later
    /// one's first.
    fn twins_meet(start: usize, late: usize, sum: u32) -> Option<usize> {
        let (mut a, mut b) = (info(0, 0), info(0, 0));
        let scan = |info: &mut UnstableInfo, seqnr| {
            let first = info.age == 0;
            let skipped = smart_scan_skips(info, seqnr);
            // cmp_and_merge_page() records the checksum.
            info.oldchecksum = sum;
            !skipped && !first
        };
        for seqnr in start..start + late + 64 {
            let a_in_tree = scan(&mut a, seqnr);
            if seqnr >= start + late && scan(&mut b, seqnr) && a_in_tree {
                return Some(seqnr - start - late);
            }
        }
        None
    }

    #[test]
    fn smart_scan_lets_late_twins_meet() {
        // Whenever the twins were first scanned (over the 90 phases of the periods 2, 3, 5 and
        // 9), they meet within 26 scans of the later one's first. With periods counted per
        // page, a third of these pairs never met.
        for sum in [0, 7, u32::MAX] {
            for start in 0..90 {
                for late in 0..200 {
                    assert!(twins_meet(start, late, sum).is_some_and(|m| m < 26));
                }
            }
        }
        // Young pages are always scanned.
        assert!((0..3).all(|age| (0..9).all(|s| !smart_scan_skips(&mut info(5, age), s))));
        // Old ones once per period, offset by the checksum: a page of checksum 2 and period 9,
        // not scanned for a period, is scanned in scan 16 and then in scan 25.
        let mut old = info(2, 200);
        old.skipped = 8;
        let (mut scanned, mut n) = ([0usize; 2], 0);
        for s in 10..30 {
            if !smart_scan_skips(&mut old, s) {
                if let Some(slot) = scanned.get_mut(n) {
                    *slot = s;
                }
                n += 1;
            }
        }
        assert!(n == 2 && scanned == [16, 25]);
        // Pages of other checksums spread over the scans of their period.
        for s in 0..9 {
            let n = (0..9u32)
                .filter(|&c| {
                    let mut i = info(c, 9);
                    i.skipped = 8;
                    !smart_scan_skips(&mut i, s)
                })
                .count();
            assert_eq!(n, 1);
        }
        // A page whose checksum changes at every scan still waits a whole period.
        let mut volatile = info(0, 9);
        let mut last = None;
        for s in 0..900usize {
            if !smart_scan_skips(&mut volatile, s) {
                if let Some(l) = last {
                    assert!(s - l >= 9);
                }
                last = Some(s);
                volatile.oldchecksum = volatile
                    .oldchecksum
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(1);
            }
        }
        // The age saturates.
        let mut oldest = info(0, u8::MAX);
        smart_scan_skips(&mut oldest, 1);
        assert_eq!(oldest.age, u8::MAX);
    }
}
