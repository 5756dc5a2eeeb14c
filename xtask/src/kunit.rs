//! `cargo xtask kunit`: `tools/testing/kunit/kunit.py run` on the kernel tree
//! with the project's `mm/ksm-rs/.kunitconfig`, on UML; with `--arch arm`, the
//! same suites at boot of a 32-bit arm guest.

use crate::build::{self, Arch, Flavour, Impl};
use crate::paths;
use crate::pin::Pin;
use crate::qemu::{self, Accel, Vm};
use crate::selftests::Summary;
use crate::series;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const KUNITCONFIG: &str = "mm/ksm-rs/.kunitconfig";

/// Parses kunit.py's "Testing complete. Ran N tests: passed: P, failed: F, ..." line.
pub fn parse_summary(log: &str) -> Option<Summary> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Testing complete. Ran "))?;
    let get = |k: &str| -> usize {
        Regex::new(&format!(r"{k}: (\d+)"))
            .expect("regex")
            .captures(line)
            .and_then(|c| c[1].parse().ok())
            .unwrap_or(0)
    };
    Some(Summary {
        passed: get("passed"),
        failed: get("failed") + get("crashed") + get("errors"),
        skipped: get("skipped"),
    })
}

pub fn run(pin: &Pin) -> Result<Summary> {
    let tree = series::ensure_tree(pin)?;
    if !tree.join(KUNITCONFIG).exists() {
        bail!("the series has no {KUNITCONFIG}");
    }
    let bdir = paths::build().join("kunit");
    std::fs::create_dir_all(&bdir)?;
    let step = Step::start(format!("kunit.py run --kunitconfig {KUNITCONFIG} (UML)"));
    let mut cmd = Command::new("python3");
    cmd.current_dir(&tree)
        .arg("tools/testing/kunit/kunit.py")
        .args(["run", "--arch=um", "--timeout=900"])
        .arg(format!("--kunitconfig={KUNITCONFIG}"))
        .arg(format!("--build_dir={}", bdir.display()))
        .arg(format!("--jobs={}", build::jobs().trim_start_matches("-j")))
        .arg("--make_options")
        .arg(pin.llvm_make_arg());
    // Reuse the same ccache as the guest builds (see build::make_cmd).
    let mk = build::make_cmd(pin, &tree);
    for a in mk
        .get_args()
        .filter(|a| a.to_string_lossy().starts_with("CC="))
    {
        cmd.arg("--make_options").arg(a);
    }
    for (k, v) in mk.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let log = bdir.join("kunit.log");
    let res = ui::run_logged(&mut cmd, &step, &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for l in text.lines().filter(|l| {
        l.contains("[PASSED]")
            || l.contains("[FAILED]")
            || l.contains("[SKIPPED]")
            || l.contains("[CRASHED]")
            || l.contains("Testing complete")
    }) {
        println!("  {l}");
    }
    let summary = parse_summary(&text);
    res?;
    step.done();
    let Some(s) = summary else {
        bail!(
            "kunit.py finished without a summary line (see {})",
            log.display()
        );
    };
    if s.passed + s.failed == 0 {
        bail!("kunit.py ran no test (see {})", log.display());
    }
    println!("kunit: {}", s.line());
    Ok(s)
}

/// Builds the Rust implementation for 32-bit arm ([`Arch::Arm`]) with the KUnit suites and the
/// rust/kernel doctests, boots it, and parses what KUnit printed before powering the guest
/// off. A splat in the log fails the run whatever the tests said.
pub fn run_arm(pin: &Pin) -> Result<Summary> {
    let tree = series::ensure_tree(pin)?;
    crate::provision::setup_arm()?;
    let fl = Flavour {
        imp: Impl::Rust,
        debug: false,
        arch: Arch::Arm,
    };
    let kernel = build::build(pin, &tree, fl, false)?;
    let step = Step::start(format!("boot [{}]: KUnit at boot", fl.name()));
    let vm = Vm {
        kernel: &kernel,
        initrd: None,
        append: "kunit_shutdown=poweroff".into(),
        timeout: Duration::from_secs(ARM_TIMEOUT_SECS),
        accel: Accel::Tcg,
        log: fl.dir().join("console.log"),
        arch: Arch::Arm,
    };
    let mut lines = Vec::new();
    let mut powered_off = false;
    let boot = qemu::boot(&vm, |l| {
        powered_off |= l.contains("reboot: Power down");
        lines.push(l.to_string());
    })?;
    let mut s = parse_console(&tree, &lines, &fl.dir().join("kunit.log"))?;
    for m in &boot.splats {
        ui::warn(format!("    splat: {m}"));
    }
    if boot.timed_out || !powered_off || !boot.splats.is_empty() {
        ui::warn(format!(
            "    the guest {} (see {})",
            if boot.timed_out {
                "timed out"
            } else if !boot.splats.is_empty() {
                "logged a splat"
            } else {
                "did not power off after KUnit"
            },
            vm.log.display()
        ));
        s.failed += 1;
    }
    step.done();
    println!("kunit [{}]: {}", fl.name(), s.line());
    Ok(s)
}

/// How long the 32-bit guest may take: it runs the KUnit suites in about 2 s of guest time.
const ARM_TIMEOUT_SECS: u64 = 600;

/// Parses the KUnit results a Rust guest printed at boot (`lines`: the
/// console up to init) with `kunit.py parse`; the console part is kept in
/// `out`. Fails if the guest ran no KUnit test.
pub fn parse_console(tree: &Path, lines: &[String], out: &Path) -> Result<Summary> {
    std::fs::write(out, lines.join("\n") + "\n")?;
    let o = Command::new("python3")
        .arg(tree.join("tools/testing/kunit/kunit.py"))
        .arg("parse")
        .arg(out)
        .output()
        .context("cannot run kunit.py parse")?;
    let text = String::from_utf8_lossy(&o.stdout);
    for l in text.lines().filter(|l| {
        l.contains("[FAILED]") || l.contains("[CRASHED]") || l.contains("Testing complete")
    }) {
        println!("  {l}");
    }
    let Some(s) = parse_summary(&text) else {
        bail!(
            "kunit.py parse found no KUnit results in the guest's boot log ({})",
            out.display()
        );
    };
    if s.passed + s.failed == 0 {
        bail!("the guest ran no KUnit test (see {})", out.display());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let s = parse_summary("[12:00:01] ===\n[12:00:02] Testing complete. Ran 42 tests: passed: 40, failed: 1, skipped: 1\n").unwrap();
        assert_eq!(
            s,
            Summary {
                passed: 40,
                failed: 1,
                skipped: 1
            }
        );
        let s = parse_summary("[x] Testing complete. Ran 7 tests: passed: 7\n").unwrap();
        assert_eq!(
            s,
            Summary {
                passed: 7,
                failed: 0,
                skipped: 0
            }
        );
        let s = parse_summary("Testing complete. Ran 3 tests: passed: 1, crashed: 2, errors: 1\n")
            .unwrap();
        assert_eq!(s.failed, 3);
        assert!(parse_summary("nothing").is_none());
    }
}
