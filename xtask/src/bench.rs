//! `cargo xtask bench`: a deterministic A/B benchmark of ksmd's CPU cost,
//! mm/ksm.c against the Rust KSM, built from the same tree.
//!
//! Every workload boots each flavour once under single-threaded TCG with
//! `-icount shift=0,sleep=off`: a guest instruction is one nanosecond of
//! guest time and idle time is skipped, so guest time counts instructions and
//! a run repeats to the tick. The guest program (`guest/ksm-bench.c`) reads
//! ksmd's utime+stime from `/proc/<ksmd>/stat` and its CPU clock in ns, and
//! prints `bench:` lines this module parses into a table, JSON and a PNG.

use crate::build::{self, Flavour, Impl};
use crate::guest::{self, Program};
use crate::paths;
use crate::pin::Pin;
use crate::qemu::{self, Accel};
use crate::series;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BENCH_C: &str = include_str!("../guest/ksm-bench.c");
const PLUGIN_C: &str = include_str!("../guest/ksm-bench-plugin.c");

/// How many symbols a profile lists.
const PROFILE_TOP: usize = 20;

/// The flavours, in the order each workload boots them.
const IMPLS: [Impl; 2] = [Impl::C, Impl::Rust];

/// A workload of `ksm-bench`, one guest boot per flavour.
pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "unique",
        about: "256 MiB of distinct base pages: 2 warm-up full scans, then 3 measured",
    },
    Workload {
        name: "dup50",
        about: "the same, 50 % of the pages copies (16 per content)",
    },
    Workload {
        name: "dup90",
        about: "the same, 90 % of the pages copies (16 per content)",
    },
    Workload {
        name: "converge",
        about: "4 processes x 64 MiB (THP), 7/8 of the pages from 64 shared patterns: until pages_sharing stops growing",
    },
    Workload {
        name: "merge",
        about: "128 MiB of one content (base pages): merge (2 full scans), MADV_UNMERGEABLE, merge again, COW-write every page",
    },
    Workload {
        name: "merge-small",
        about: "merge's first phase in batches of 10 pages without sleeping (ksm_tests -P's settings)",
    },
    Workload {
        name: "merge-thp",
        about: "128 MiB of one content in THPs: merge (2 full scans)",
    },
    Workload {
        name: "sparse",
        about: "a 32 TiB MAP_NORESERVE mergeable area holding 2 pages, sleep_millisecs 0: full scans in 2 s of guest time",
    },
    Workload {
        name: "smart",
        about: "unique with smart_scan 1",
    },
    Workload {
        name: "advisor",
        about: "unique with advisor_mode scan-time, advisor_target_scan_time 2 s",
    },
];

/// One `bench: result` line: deltas over a phase, counters at its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub phase: String,
    pub ksmd_ticks: u64,
    pub ksmd_ns: u64,
    pub guest_ns: u64,
    pub scans: u64,
    pub pages_sharing: u64,
    pub pages_shared: u64,
    pub pages_unshared: u64,
    pub pages_to_scan: u64,
}

/// One `bench: sample` line, time relative to the start of the measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_ns: u64,
    pub ksmd_ns: u64,
    pub full_scans: u64,
    pub pages_sharing: u64,
}

/// What one boot of one flavour reported for one workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    pub workload: String,
    pub flavour: String,
    pub user_hz: u64,
    pub measures: Vec<Measure>,
    pub samples: Vec<Sample>,
    pub done: bool,
    pub error: Option<String>,
    pub wall_ms: u64,
    /// With --profile: guest instructions of the workload's main phase per
    /// kernel symbol, most first (all of them in `profile_total`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<(String, u64)>,
    #[serde(default)]
    pub profile_total: u64,
}

/// `key=value` words of a line, in order.
pub fn kv(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

fn num(m: &BTreeMap<&str, &str>, key: &str) -> Result<u64> {
    let v = m.get(key).with_context(|| format!("no {key}="))?;
    v.parse()
        .with_context(|| format!("{key}={v} is not a number"))
}

impl Run {
    /// Feeds one console line; returns the text of a `bench:` line, if it was one.
    pub fn feed<'l>(&mut self, line: &'l str) -> Result<Option<&'l str>> {
        let Some(rest) = line.strip_prefix("bench: ") else {
            return Ok(None);
        };
        if let Some(msg) = rest.strip_prefix("error ") {
            let m = msg.split_once("msg=").map_or(msg, |(_, m)| m);
            self.error = Some(m.to_string());
            return Ok(Some(rest));
        }
        let m = kv(rest);
        let kind = rest.split_whitespace().next().unwrap_or("");
        match kind {
            "start" => self.user_hz = num(&m, "user_hz")?,
            "result" => self.measures.push(Measure {
                phase: m.get("phase").context("no phase=")?.to_string(),
                ksmd_ticks: num(&m, "ksmd_ticks")?,
                ksmd_ns: num(&m, "ksmd_ns")?,
                guest_ns: num(&m, "guest_ns")?,
                scans: num(&m, "scans")?,
                pages_sharing: num(&m, "pages_sharing")?,
                pages_shared: num(&m, "pages_shared")?,
                pages_unshared: num(&m, "pages_unshared")?,
                pages_to_scan: num(&m, "pages_to_scan")?,
            }),
            "sample" => self.samples.push(Sample {
                t_ns: num(&m, "t_ns")?,
                ksmd_ns: num(&m, "ksmd_ns")?,
                full_scans: num(&m, "full_scans")?,
                pages_sharing: num(&m, "pages_sharing")?,
            }),
            "done" => self.done = true,
            _ => bail!("unknown bench line: {line}"),
        }
        Ok(Some(rest))
    }

    pub fn measure(&self, phase: &str) -> Option<&Measure> {
        self.measures.iter().find(|m| m.phase == phase)
    }
}

/// How a phase is shown: its label and whether it is divided by its scans.
fn phase_view(phase: &str) -> Option<(&'static str, bool)> {
    Some(match phase {
        "warmup" => ("first 2 full scans", false),
        "steady" => ("per full scan", true),
        "converge" => ("until converged", false),
        "merge" | "merge-small" | "merge-thp" => ("128 MiB, 2 full scans", false),
        "unmerge" => ("128 MiB MADV_UNMERGEABLE", false),
        "cow" => ("128 MiB COW writes", false),
        "sparse" => ("per empty full scan", true),
        _ => return None,
    })
}

/// Whether ksmd does the work of a phase (else the calling process does, and
/// guest time is what matters).
fn ksmd_phase(phase: &str) -> bool {
    !matches!(phase, "unmerge" | "cow")
}

/// One table row: a phase of a workload on both flavours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub workload: String,
    pub phase: String,
    pub per: String,
    /// ksmd CPU ms (per unit), guest ms (per unit), ticks (total), pages_sharing
    pub c: Option<Vals>,
    pub rust: Option<Vals>,
    /// Rust/C of ksmd CPU (or of guest time where ksmd does not do the work).
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vals {
    pub ksmd_ms: f64,
    pub guest_ms: f64,
    pub ksmd_ticks: u64,
    pub scans: u64,
    pub pages_sharing: u64,
    pub pages_to_scan: u64,
}

fn vals(m: &Measure, per_scan: bool) -> Vals {
    let div = if per_scan { m.scans.max(1) as f64 } else { 1.0 };
    Vals {
        ksmd_ms: m.ksmd_ns as f64 / 1e6 / div,
        guest_ms: m.guest_ns as f64 / 1e6 / div,
        ksmd_ticks: m.ksmd_ticks,
        scans: m.scans,
        pages_sharing: m.pages_sharing,
        pages_to_scan: m.pages_to_scan,
    }
}

/// The rows of a workload from its C and Rust runs, in the guest's phase order.
pub fn rows(workload: &str, c: Option<&Run>, rust: Option<&Run>) -> Vec<Row> {
    let mut phases: Vec<String> = Vec::new();
    for r in [c, rust].into_iter().flatten() {
        for m in &r.measures {
            if !phases.contains(&m.phase) {
                phases.push(m.phase.clone());
            }
        }
    }
    let mut out = Vec::new();
    for phase in phases {
        let Some((per, per_scan)) = phase_view(&phase) else {
            continue;
        };
        let v = |r: Option<&Run>| r.and_then(|r| r.measure(&phase)).map(|m| vals(m, per_scan));
        let (cv, rv) = (v(c), v(rust));
        let ratio = match (&cv, &rv) {
            (Some(c), Some(r)) => {
                let (a, b) = if ksmd_phase(&phase) {
                    (c.ksmd_ms, r.ksmd_ms)
                } else {
                    (c.guest_ms, r.guest_ms)
                };
                (a > 0.0).then(|| b / a)
            }
            _ => None,
        };
        out.push(Row {
            workload: workload.to_string(),
            phase,
            per: per.to_string(),
            c: cv,
            rust: rv,
            ratio,
        });
    }
    out
}

/// Four significant digits, without a trailing exponent.
pub fn sig(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.digits$}")
}

fn opt<T>(v: &Option<Vals>, f: impl Fn(&Vals) -> T) -> Option<T> {
    v.as_ref().map(f)
}

fn cell(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// The printed table: one block per workload.
pub fn table(blocks: &[(&Workload, Vec<Row>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<11} {:<25} {:>10} {:>10} {:>6}  {:>10} {:>10} {:>6}  {:>11}  {:>13}",
        "phase", "", "ksmd CPU ms", "", "", "guest ms", "", "", "ksmd ticks", "pages_sharing"
    );
    let _ = writeln!(
        s,
        "{:<11} {:<25} {:>10} {:>10} {:>6}  {:>10} {:>10} {:>6}  {:>11}  {:>13}",
        "", "", "mm/ksm.c", "Rust", "R/C", "mm/ksm.c", "Rust", "R/C", "C / Rust", "C / Rust"
    );
    for (w, rows) in blocks {
        let _ = writeln!(s, "{}: {}", w.name, w.about);
        for r in rows {
            let gr = match (&r.c, &r.rust) {
                (Some(c), Some(x)) if c.guest_ms > 0.0 => {
                    Some(format!("{:.2}", x.guest_ms / c.guest_ms))
                }
                _ => None,
            };
            let kr = match (&r.c, &r.rust) {
                (Some(c), Some(x)) if c.ksmd_ms > 0.0 => {
                    Some(format!("{:.2}", x.ksmd_ms / c.ksmd_ms))
                }
                _ => None,
            };
            let _ = writeln!(
                s,
                "  {:<9} {:<25} {:>10} {:>10} {:>6}  {:>10} {:>10} {:>6}  {:>11}  {:>13}",
                r.phase,
                r.per,
                cell(opt(&r.c, |v| sig(v.ksmd_ms))),
                cell(opt(&r.rust, |v| sig(v.ksmd_ms))),
                cell(kr),
                cell(opt(&r.c, |v| sig(v.guest_ms))),
                cell(opt(&r.rust, |v| sig(v.guest_ms))),
                cell(gr),
                format!(
                    "{} / {}",
                    cell(opt(&r.c, |v| v.ksmd_ticks.to_string())),
                    cell(opt(&r.rust, |v| v.ksmd_ticks.to_string()))
                ),
                format!(
                    "{} / {}",
                    cell(opt(&r.c, |v| v.pages_sharing.to_string())),
                    cell(opt(&r.rust, |v| v.pages_sharing.to_string()))
                ),
            );
        }
    }
    s
}

/// A kernel image the bench ran, identified by content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Kernel {
    pub flavour: String,
    pub bzimage: String,
    pub sha256: String,
    /// mtime of the bzImage
    #[serde(default)]
    pub built_unix: u64,
}

/// What `bench.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub generated_unix: u64,
    pub qemu: String,
    pub settings: String,
    pub kernels: Vec<Kernel>,
    /// sha256 of guest/ksm-bench.c: runs compare only with the same workloads.
    #[serde(default)]
    pub guest_sha256: String,
    pub runs: Vec<Run>,
    pub rows: Vec<Row>,
}

/// Differences between two reports of the same kernels over the phases the
/// table shows: (largest |Δ ticks|, largest relative Δ of ksmd ns, number of
/// measures compared).
pub fn compare(a: &Report, b: &Report) -> (u64, f64, usize) {
    let (mut dt, mut dn, mut n) = (0u64, 0f64, 0usize);
    for ra in &a.runs {
        let Some(rb) = b
            .runs
            .iter()
            .find(|r| r.workload == ra.workload && r.flavour == ra.flavour)
        else {
            continue;
        };
        for ma in ra
            .measures
            .iter()
            .filter(|m| phase_view(&m.phase).is_some())
        {
            if let Some(mb) = rb.measure(&ma.phase) {
                n += 1;
                dt = dt.max(ma.ksmd_ticks.abs_diff(mb.ksmd_ticks));
                if ma.ksmd_ns > 0 {
                    dn = dn.max(ma.ksmd_ns.abs_diff(mb.ksmd_ns) as f64 / ma.ksmd_ns as f64);
                }
            }
        }
    }
    (dt, dn, n)
}

pub fn out_dir(xxhash: bool) -> PathBuf {
    paths::build().join(if xxhash { "bench-xxhash" } else { "bench" })
}

/// With `--xxhash`: a guest CPU without SSE 4.2, so that the Rust KSM checksums pages with
/// xxhash as `mm/ksm.c` does instead of choosing CRC-32C (the last `-cpu` wins).
const NO_CRC32C_CPU: [&str; 2] = ["-cpu", "max,-sse4.2"];

fn sha256_file(p: &Path) -> Result<String> {
    let data = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(hex::encode(Sha256::digest(&data)))
}

/// The guest plan: run the workloads named by `ksmbench=a,b` on the kernel command line.
const PLAN: &str = r#"
for w in $(sed -n 's/.*ksmbench=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' '); do
	./ksm-bench "$w" 2>&1
done
"#;

pub struct Options {
    /// One flavour only (no ratios); both when None.
    pub imp: Option<Impl>,
    pub no_build: bool,
    pub only: Vec<String>,
    pub profile: bool,
    /// Both implementations checksum pages with xxhash ([`NO_CRC32C_CPU`]).
    pub xxhash: bool,
}

pub fn run(pin: &Pin, opts: &Options) -> Result<()> {
    let workloads: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| opts.only.is_empty() || opts.only.iter().any(|o| w.name == o))
        .collect();
    if workloads.is_empty() {
        bail!(
            "--only {:?} matches no workload; they are: {}",
            opts.only,
            WORKLOADS
                .iter()
                .map(|w| w.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let flavours: Vec<Flavour> = IMPLS
        .iter()
        .filter(|&&i| opts.imp.is_none_or(|o| o == i))
        .map(|&imp| Flavour::x86(imp, false))
        .collect();
    let mut kernels = Vec::new();
    if opts.no_build {
        for fl in &flavours {
            if !fl.bzimage().exists() {
                bail!(
                    "--no-build: {} is missing (run `cargo xtask build --impl {}`)",
                    fl.bzimage().display(),
                    fl.name()
                );
            }
        }
    } else {
        crate::provision::setup(pin)?;
        let tree = series::ensure_tree(pin)?;
        for fl in &flavours {
            build::build(pin, &tree, *fl, false)?;
        }
    }
    let dir = out_dir(opts.xxhash);
    fs::create_dir_all(&dir)?;
    // Boot copies, so that a flavour rebuilt while the bench runs cannot mix
    // two kernels into one report.
    let mut images = Vec::new();
    for fl in &flavours {
        let kdir = dir.join(format!("kernel-{}", fl.name()));
        fs::create_dir_all(&kdir)?;
        let (img, map) = (kdir.join("bzImage"), kdir.join("System.map"));
        fs::copy(fl.bzimage(), &img)?;
        fs::copy(fl.dir().join("System.map"), &map)?;
        let built = fs::metadata(fl.bzimage())?
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        kernels.push(Kernel {
            flavour: fl.name(),
            bzimage: fl.bzimage().display().to_string(),
            sha256: sha256_file(&img)?,
            built_unix: built,
        });
        images.push((img, map));
    }
    // One image for both flavours: the program needs no kernel headers.
    let step = Step::start("build guest image `bench`");
    let initrd = guest::pack(
        &dir,
        "bench",
        &[Program::Guest {
            name: "ksm-bench",
            source: BENCH_C,
        }],
        PLAN,
        None,
        None,
        build::Arch::X86_64,
    )?;
    let plugin = if opts.profile {
        Some(build_plugin(&dir)?)
    } else {
        None
    };
    step.done();

    let mut runs: Vec<Run> = Vec::new();
    let mut blocks: Vec<(&Workload, Vec<Row>)> = Vec::new();
    let mut failures = Vec::new();
    for w in &workloads {
        for (fl, (img, map)) in flavours.iter().zip(&images) {
            let r = boot_one(&initrd, *fl, img, map, w, plugin.as_deref(), opts.xxhash)?;
            if let Some(e) = &r.error {
                failures.push(format!("{} [{}]: {e}", w.name, fl.name()));
            }
            runs.push(r);
        }
        let find = |imp: Impl| {
            runs.iter()
                .find(|r| r.workload == w.name && r.flavour == Flavour::x86(imp, false).name())
        };
        let rs = rows(w.name, find(Impl::C), find(Impl::Rust));
        for r in &rs {
            if let Some(x) = r.ratio {
                ui::info(format!(
                    "    {} {} ({}): Rust/C {:.3}",
                    w.name, r.phase, r.per, x
                ));
            }
        }
        blocks.push((w, rs));
    }

    let report = Report {
        generated_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        qemu:
            "qemu-system-x86_64 -accel tcg -icount shift=0,sleep=off, 2 vCPUs, 2 NUMA nodes x 1 GiB"
                .into(),
        settings: format!(
            "smart_scan 0, pages_to_scan 1000, sleep_millisecs 20 unless the workload says \
             otherwise; page checksums: {}",
            if opts.xxhash {
                "xxhash on both (guest CPU without SSE 4.2)"
            } else {
                "the Rust KSM's CRC-32C (SSE 4.2), mm/ksm.c's xxhash"
            }
        ),
        kernels,
        guest_sha256: hex::encode(Sha256::digest(BENCH_C)),
        runs,
        rows: blocks.iter().flat_map(|(_, r)| r.clone()).collect(),
    };
    let json = dir.join("bench.json");
    let prev = dir.join("bench.prev.json");
    if json.exists() {
        fs::rename(&json, &prev)?;
    }
    fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let png = dir.join("bench.png");
    let plotted = plot(&report, &png);

    println!(
        "\ncargo xtask bench: ksmd CPU (utime+stime; ms from its CPU clock) and guest time\n\
         under QEMU TCG -icount shift=0,sleep=off; R/C = Rust / mm/ksm.c\n"
    );
    print!("{}", table(&blocks));
    if let Some(a) = fs::read_to_string(&prev)
        .ok()
        .and_then(|t| serde_json::from_str::<Report>(&t).ok())
    {
        let ids = |r: &Report| -> Vec<(String, String)> {
            r.kernels
                .iter()
                .map(|k| (k.flavour.clone(), k.sha256.clone()))
                .collect()
        };
        if ids(&a) == ids(&report) && a.guest_sha256 == report.guest_sha256 {
            let (dt, dn, n) = compare(&a, &report);
            println!(
                "\nrepeatability against the previous run of the same kernels ({}): {n} measures, \
                 ksmd CPU differs by at most {dt} tick(s), {:.3} %",
                prev.display(),
                dn * 100.0
            );
        }
    }
    println!("\nJSON: {}", json.display());
    match plotted {
        Ok(()) => println!("PNG:  {}", png.display()),
        Err(e) => ui::warn(format!("no plot: {e:#}")),
    }
    for r in report.runs.iter().filter(|r| !r.profile.is_empty()) {
        println!(
            "\nprofile [{}] {}: {} guest instructions in the main phase (all CPUs), top {}:",
            r.flavour,
            r.workload,
            r.profile_total,
            r.profile.len()
        );
        for (sym, n) in &r.profile {
            println!(
                "  {:>6.2} %  {:>13}  {sym}",
                *n as f64 * 100.0 / r.profile_total.max(1) as f64,
                n
            );
        }
    }
    if !failures.is_empty() {
        bail!("{} run(s) failed: {}", failures.len(), failures.join("; "));
    }
    Ok(())
}

/// Builds the TCG plugin of --profile; returns its path.
fn build_plugin(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("ksm-bench-plugin.c");
    let so = dir.join("ksm-bench-plugin.so");
    fs::write(&src, PLUGIN_C)?;
    ui::output(
        std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&so)
            .arg(&src),
    )?;
    Ok(so)
}

/// Text symbols of a System.map, sorted by address.
pub fn parse_system_map(text: &str) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let kind = it.next()?;
            let name = it.next()?;
            matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// A Rust symbol without its hash, C ones as they are.
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Sums the plugin's per-block counts per symbol: (top symbols, total).
pub fn profile(blocks: &str, map: &[(u64, String)], top: usize) -> (Vec<(String, u64)>, u64) {
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    for l in blocks.lines().filter(|l| !l.starts_with('#')) {
        let Some((a, n)) = l.split_once(' ') else {
            continue;
        };
        let (Ok(a), Ok(n)) = (u64::from_str_radix(a, 16), n.trim().parse::<u64>()) else {
            continue;
        };
        total += n;
        let name = if a < 0xffff_8000_0000_0000 {
            "[user space]".to_string()
        } else {
            match map.partition_point(|(s, _)| *s <= a) {
                0 => "[kernel, no symbol]".to_string(),
                i => demangle(&map[i - 1].1),
            }
        };
        *per.entry(name).or_default() += n;
    }
    let mut v: Vec<(String, u64)> = per.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(top);
    (v, total)
}

/// Boots one flavour for one workload (profiled with `plugin` if given).
fn boot_one(
    initrd: &Path,
    fl: Flavour,
    kernel: &Path,
    system_map: &Path,
    w: &Workload,
    plugin: Option<&Path>,
    xxhash: bool,
) -> Result<Run> {
    let step = Step::start(format!(
        "bench [{}] {}{}",
        fl.name(),
        w.name,
        if plugin.is_some() { " (profiled)" } else { "" }
    ));
    let log = out_dir(xxhash).join(format!("{}-{}.log", w.name, fl.name()));
    let prof = out_dir(xxhash).join(format!("{}-{}.blocks", w.name, fl.name()));
    let _ = fs::remove_file(&prof);
    let mut extra: Vec<String> = plugin
        .map(|so| {
            vec![
                "-plugin".to_string(),
                format!("{},out={}", so.display(), prof.display()),
            ]
        })
        .unwrap_or_default();
    if xxhash {
        extra.extend(NO_CRC32C_CPU.map(String::from));
    }
    let mut run = Run {
        workload: w.name.into(),
        flavour: fl.name(),
        ..Run::default()
    };
    let mut parse_err: Option<String> = None;
    let boot = qemu::boot_icount(
        &qemu::Vm {
            kernel,
            initrd: Some(initrd),
            // The Rust flavour carries the KUnit suites for the selftests;
            // they stay off here, as the C kernel has none.
            append: format!("ksmbench={} kunit.enable=0", w.name),
            timeout: Duration::from_secs(1200),
            accel: Accel::Tcg,
            log: log.clone(),
            arch: build::Arch::X86_64,
        },
        &extra,
        |line| match run.feed(line) {
            Ok(Some(rest)) if !rest.starts_with("sample") => {
                ui::info(format!("    {rest}"));
            }
            Ok(_) => {}
            Err(e) => {
                parse_err.get_or_insert(format!("{e:#}"));
            }
        },
    )?;
    run.wall_ms = step.done().as_millis() as u64;
    if run.error.is_none() {
        run.error = parse_err
            .or_else(|| boot.splats.first().map(|s| format!("kernel log: {s}")))
            .or_else(|| boot.timed_out.then(|| "guest timed out".to_string()))
            .or_else(|| (!run.done).then(|| format!("no `done` line (see {})", log.display())));
    }
    if let Some(e) = &run.error {
        ui::warn(format!("{} [{}]: {e}", w.name, fl.name()));
    }
    if plugin.is_some() {
        let blocks = fs::read_to_string(&prof)
            .with_context(|| format!("the profiling plugin wrote no {}", prof.display()))?;
        let map = fs::read_to_string(system_map)
            .with_context(|| format!("cannot read {}", system_map.display()))?;
        (run.profile, run.profile_total) = profile(&blocks, &parse_system_map(&map), PROFILE_TOP);
    }
    Ok(run)
}

/// Where the plot's text font comes from (Debian's fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn plot_err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

/// The PNG: pages_sharing over guest time for `converge` on both flavours,
/// and the Rust/C ratio of every row.
pub fn plot(report: &Report, png: &Path) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::FontStyle;
    static FONT_BYTES: std::sync::OnceLock<Option<&'static [u8]>> = std::sync::OnceLock::new();
    let font = FONT_BYTES.get_or_init(|| {
        let b = fs::read(FONT).ok()?;
        let b: &'static [u8] = Box::leak(b.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, b).ok()?;
        Some(b)
    });
    if font.is_none() {
        bail!("cannot load the font {FONT} (apt-get install fonts-dejavu-core, or `cargo xtask setup`)");
    }
    let root = BitMapBackend::new(png, (1500, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(680);

    let conv: Vec<&Run> = report
        .runs
        .iter()
        .filter(|r| r.workload == "converge" && !r.samples.is_empty())
        .collect();
    let xmax = conv
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t_ns as f64 / 1e9))
        .fold(1.0f64, f64::max);
    let ymax = conv
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.pages_sharing as f64))
        .fold(1.0f64, f64::max)
        * 1.05;
    let mut ch = ChartBuilder::on(&left)
        .caption(
            "converge: pages_sharing over guest time",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(plot_err)?;
    ch.configure_mesh()
        .x_desc("guest time since run=1 (s) = guest instructions / 1e9")
        .y_desc("pages_sharing")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    for r in &conv {
        let (color, name) = if r.flavour == "c" {
            (BLUE, "mm/ksm.c")
        } else {
            (RED, "Rust")
        };
        ch.draw_series(LineSeries::new(
            r.samples
                .iter()
                .map(|s| (s.t_ns as f64 / 1e9, s.pages_sharing as f64)),
            color.stroke_width(2),
        ))
        .map_err(plot_err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    ch.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(plot_err)?;

    let bars: Vec<(String, f64)> = report
        .rows
        .iter()
        .filter_map(|r| {
            let label = if r.phase == r.workload {
                r.phase.clone()
            } else {
                format!("{} {}", r.workload, r.phase)
            };
            Some((label, r.ratio?))
        })
        .collect();
    let n = bars.len().max(1);
    let rmax = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 1.15;
    let mut ch = ChartBuilder::on(&right)
        .caption(
            "Rust / mm/ksm.c: ksmd CPU (guest time for unmerge, cow)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(190)
        // Integer ranges are inclusive: 0..n-1 makes n segments.
        .build_cartesian_2d(0f64..rmax, (0..n - 1).into_segmented())
        .map_err(plot_err)?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < bars.len() => bars[bars.len() - 1 - i].0.clone(),
        _ => String::new(),
    };
    ch.configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .y_label_style(("sans-serif", 15))
        .x_label_style(("sans-serif", 14))
        .x_desc("ratio (1.0 = same cost; below 1 the Rust KSM is cheaper)")
        .draw()
        .map_err(plot_err)?;
    let m = bars.len();
    ch.draw_series(bars.iter().enumerate().map(|(i, (_, r))| {
        let y = m - 1 - i;
        // Within 1 % counts as the same cost.
        let color = if *r > 1.01 {
            RED.mix(0.7)
        } else if *r < 0.99 {
            GREEN.mix(0.7)
        } else {
            BLACK.mix(0.35)
        };
        let mut b = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(y)),
                (*r, SegmentValue::Exact(y + 1)),
            ],
            color.filled(),
        );
        b.set_margin(4, 4, 0, 0);
        b
    }))
    .map_err(plot_err)?;
    ch.draw_series(bars.iter().enumerate().map(|(i, (_, r))| {
        Text::new(
            format!("{r:.2}"),
            (*r, SegmentValue::CenterOf(m - 1 - i)),
            ("sans-serif", 14),
        )
    }))
    .map_err(plot_err)?;
    ch.draw_series(LineSeries::new(
        [(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
        BLACK.stroke_width(1),
    ))
    .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_lines() {
        let mut r = Run::default();
        assert_eq!(r.feed("[    1.0] random kernel line").unwrap(), None);
        r.feed("bench: start w=unique ksmd_pid=31 user_hz=100 page=4096")
            .unwrap();
        r.feed(
            "bench: result w=unique phase=steady ksmd_ticks=210 ksmd_ns=2100000123 guest_ns=6000000000 \
             scans=3 pages_sharing=5 pages_shared=1 pages_unshared=65530 pages_to_scan=1000",
        )
        .unwrap();
        r.feed("bench: sample w=unique t_ns=20000000 ksmd_ns=1000 full_scans=0 pages_sharing=0")
            .unwrap();
        r.feed("bench: done w=unique").unwrap();
        assert_eq!(r.user_hz, 100);
        assert!(r.done);
        let m = r.measure("steady").unwrap();
        assert_eq!((m.ksmd_ticks, m.ksmd_ns, m.scans), (210, 2100000123, 3));
        assert_eq!(m.pages_unshared, 65530);
        assert_eq!(r.samples.len(), 1);
        assert!(r.feed("bench: result w=x phase=p ksmd_ticks=oops").is_err());
        assert!(r.feed("bench: bogus").is_err());
        r.feed("bench: error w=unique msg=no ksmd thread (errno 2: No such file)")
            .unwrap();
        assert_eq!(
            r.error.as_deref(),
            Some("no ksmd thread (errno 2: No such file)")
        );
    }

    fn run(flavour: &str, ns: u64, ticks: u64) -> Run {
        Run {
            workload: "unique".into(),
            flavour: flavour.into(),
            user_hz: 100,
            measures: vec![
                Measure {
                    phase: "steady".into(),
                    ksmd_ns: ns,
                    ksmd_ticks: ticks,
                    guest_ns: 3 * ns,
                    scans: 3,
                    ..Measure::default()
                },
                Measure {
                    phase: "unmerge".into(),
                    guest_ns: ns,
                    ..Measure::default()
                },
                Measure {
                    phase: "whatever".into(),
                    ..Measure::default()
                },
            ],
            done: true,
            ..Run::default()
        }
    }

    #[test]
    fn rows_and_ratios() {
        let c = run("c", 3_000_000_000, 300);
        let r = run("rust", 3_900_000_000, 390);
        let rows = rows("unique", Some(&c), Some(&r));
        assert_eq!(rows.len(), 2, "unknown phases are left out");
        assert_eq!(rows[0].per, "per full scan");
        assert!((rows[0].c.as_ref().unwrap().ksmd_ms - 1000.0).abs() < 1e-9);
        assert!((rows[0].ratio.unwrap() - 1.3).abs() < 1e-9);
        // unmerge: no ksmd work, the ratio is of guest time.
        assert!((rows[1].ratio.unwrap() - 1.3).abs() < 1e-9);
        let only_c = rows_only_c(&c);
        assert!(only_c[0].ratio.is_none() && only_c[0].rust.is_none());
        let t = table(&[(&WORKLOADS[0], rows)]);
        assert!(t.contains("per full scan") && t.contains("1.30") && t.contains("300 / 390"));
    }

    fn rows_only_c(c: &Run) -> Vec<Row> {
        rows("unique", Some(c), None)
    }

    #[test]
    fn compares_reports() {
        let rep = |rust_ticks| Report {
            generated_unix: 0,
            qemu: String::new(),
            settings: String::new(),
            kernels: vec![],
            guest_sha256: String::new(),
            runs: vec![run("c", 1_000_000, 100), run("rust", 1_000_000, rust_ticks)],
            rows: vec![],
        };
        assert_eq!(compare(&rep(100), &rep(100)), (0, 0.0, 4));
        assert_eq!(compare(&rep(100), &rep(101)).0, 1);
    }

    #[test]
    fn plots_a_png() {
        if !Path::new(FONT).exists() {
            eprintln!("no {FONT}: plot not tested");
            return;
        }
        let mut c = run("c", 3_000_000_000, 300);
        let mut r = run("rust", 3_900_000_000, 390);
        for (x, k) in [(&mut c, 1u64), (&mut r, 2)] {
            x.workload = "converge".into();
            x.samples = (0..50)
                .map(|i| Sample {
                    t_ns: i * 100_000_000,
                    pages_sharing: (i * 1000 / k).min(30000),
                    ..Sample::default()
                })
                .collect();
        }
        let rows = rows("converge", Some(&c), Some(&r));
        let rep = Report {
            generated_unix: 0,
            qemu: String::new(),
            settings: String::new(),
            kernels: vec![],
            guest_sha256: String::new(),
            runs: vec![c, r],
            rows,
        };
        let d = tempfile::tempdir().unwrap();
        let out = std::env::var_os("KSM_RS_PLOT_TEST")
            .map_or_else(|| d.path().join("t.png"), PathBuf::from);
        plot(&rep, &out).unwrap();
        assert!(fs::read(&out).unwrap().starts_with(b"\x89PNG"));
    }

    #[test]
    fn profiles_by_symbol() {
        let map = parse_system_map(
            "ffffffff81000000 T _text\nffffffff81001000 t memcmp\nffffffff81002000 D data\n\
             ffffffff81003000 T _RNvNtCs1a2b_6ksm_rs4scan4next\n",
        );
        assert_eq!(map.len(), 3);
        let (top, total) = profile(
            "# windows 1\nffffffff81001010 50\nffffffff81001100 25\n400000 5\n\
             ffffffff81003004 30\nffffffff81000001 1\n",
            &map,
            3,
        );
        assert_eq!(total, 111);
        assert_eq!(
            top,
            vec![
                ("memcmp".to_string(), 75),
                ("ksm_rs::scan::next".to_string(), 30),
                ("[user space]".to_string(), 5)
            ]
        );
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig(1234.567), "1235");
        assert_eq!(sig(123.4567), "123.5");
        assert_eq!(sig(0.012345), "0.01235");
        assert_eq!(sig(0.0), "0");
    }

    #[test]
    fn workload_names_match_the_guest_program() {
        for w in WORKLOADS {
            assert!(
                BENCH_C.contains(&format!("\"{}\"", w.name)),
                "ksm-bench.c does not know {}",
                w.name
            );
        }
    }
}
