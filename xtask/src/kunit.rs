//! `cargo xtask kunit`: `tools/testing/kunit/kunit.py run` on the kernel tree
//! with the project's `mm/ksm-rs/.kunitconfig`, on UML.

use crate::build;
use crate::paths;
use crate::pin::Pin;
use crate::selftests::Summary;
use crate::series;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::path::Path;
use std::process::Command;

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
