//! `cargo xtask selftests`: every KSM case `run_vmtests.sh` runs in the `ksm`
//! and `ksm_numa` categories, `ksm_tests -D` and `-C`, the KSM cases of
//! `rmap` and `merge`, and our own selftests, in one guest boot.

use crate::build::{self, Arch, Flavour, Impl};
use crate::guest::{self, sh_quote, Program};
use crate::ktap::{Outcome, Report};
use crate::paths;
use crate::pin::Pin;
use crate::qemu::{self, Accel};
use crate::series;
use crate::ui::{self, Step};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Clone)]
pub struct Case {
    pub program: Program,
    pub args: &'static [&'static str],
    /// Per-case limit in the guest (seconds), generous for TCG.
    pub limit: u32,
}

impl Case {
    pub fn name(&self) -> String {
        std::iter::once(self.program.name())
            .chain(self.args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

const KSM_TESTS: Program = Program::Selftest {
    dir: "mm",
    name: "ksm_tests",
    libs: &["numa"],
};
const KSM_FUNCTIONAL: Program = Program::Selftest {
    dir: "mm",
    name: "ksm_functional_tests",
    libs: &[],
};
const RMAP: Program = Program::Selftest {
    dir: "mm",
    name: "rmap",
    libs: &["numa"],
};
const MERGE: Program = Program::Selftest {
    dir: "mm",
    name: "merge",
    libs: &[],
};
const KSM_ABI: Program = Program::Selftest {
    dir: "mm",
    name: "ksm_abi_tests",
    libs: &[],
};
const KSM_STRESS: Program = Program::Selftest {
    dir: "mm",
    name: "ksm_stress",
    libs: &[],
};

/// How long the plan's ksm_stress runs (seconds); `--stress-secs` runs it longer.
const STRESS_SECS: &str = "30";

/// How much longer each case may take on a `--debug` kernel.
const DEBUG_LIMIT_SCALE: u32 = 3;

/// How much longer each case may take in an arm64 guest (TCG translating
/// another architecture, with MTE).
const ARM64_LIMIT_SCALE: u32 = 2;

/// The plan, in run order.
pub fn plan() -> Vec<Case> {
    let c = |program: Program, args: &'static [&'static str], limit| Case {
        program,
        args,
        limit,
    };
    vec![
        // run_vmtests.sh -t ksm
        c(KSM_TESTS, &["-H", "-s", "100"], 300),
        c(KSM_TESTS, &["-P", "-s", "100"], 300),
        c(KSM_TESTS, &["-M", "-p", "10"], 180),
        c(KSM_TESTS, &["-U"], 180),
        c(KSM_TESTS, &["-Z", "-p", "10", "-z", "0"], 180),
        c(KSM_TESTS, &["-Z", "-p", "10", "-z", "1"], 180),
        c(KSM_FUNCTIONAL, &[], 600),
        // run_vmtests.sh -t ksm_numa
        c(KSM_TESTS, &["-N", "-m", "1"], 180),
        c(KSM_TESTS, &["-N", "-m", "0"], 180),
        // unmerge and COW-break timing
        c(KSM_TESTS, &["-D", "-s", "100"], 300),
        c(KSM_TESTS, &["-C"], 180),
        // the KSM cases of rmap and merge
        c(RMAP, &["-t", "ksm", "-t", "ksm_and_mremap"], 300),
        c(MERGE, &["-t", "ksm_merge"], 180),
        // ours (tools-testing-selftests/)
        c(KSM_ABI, &[], 600),
        c(KSM_STRESS, &["-t", STRESS_SECS], 240),
        // --debug only: allocation failures injected (needs FAULT_INJECTION)
        c(KSM_STRESS, &["-t", "60", "-f"], 240),
    ]
}

/// One line of `expected-failures.txt`: `impl | test | reason`.
#[derive(Debug, PartialEq)]
pub struct Xfail {
    pub imp: String,
    pub test: String,
    pub reason: String,
}

pub fn parse_xfails(text: &str, known: &[String]) -> Result<Vec<Xfail>> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t.splitn(3, '|').map(str::trim).collect();
        let [imp, test, reason] = f[..] else {
            bail!(
                "expected-failures.txt:{}: want `impl | test | reason`",
                i + 1
            );
        };
        if imp != "c" && imp != "rust" {
            bail!(
                "expected-failures.txt:{}: impl must be c or rust, not {imp:?}",
                i + 1
            );
        }
        if reason.is_empty() {
            bail!(
                "expected-failures.txt:{}: every expected failure needs a reason",
                i + 1
            );
        }
        if !known.iter().any(|k| k == test) {
            bail!("expected-failures.txt:{}: no such test {test:?}", i + 1);
        }
        v.push(Xfail {
            imp: imp.into(),
            test: test.into(),
            reason: reason.into(),
        });
    }
    Ok(v)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    pub fn add(&mut self, o: Summary) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

/// Classifies the guest's report against the plan and the expected failures.
/// Returns the summary and one printable verdict line per test.
pub fn judge(
    report: &Report,
    names: &[String],
    xfails: &[&Xfail],
    splats: &[String],
    timed_out: bool,
) -> (Summary, Vec<String>) {
    let mut s = Summary::default();
    let mut lines = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let r = report.results.iter().find(|r| r.number as usize == i + 1);
        let xf = xfails.iter().find(|x| &x.test == name);
        let directive = r.map(|r| r.directive.clone()).unwrap_or_default();
        let (verdict, why) = match (r.map(|r| r.outcome), xf) {
            (None, _) => ("FAIL", "no result (guest died or timed out)".to_string()),
            (Some(Outcome::Fail), Some(x)) => ("XFAIL", format!("expected failure: {}", x.reason)),
            (Some(Outcome::Pass), Some(_)) => (
                "FAIL",
                "unexpectedly passed: remove it from expected-failures.txt".into(),
            ),
            (Some(Outcome::Pass), None) => ("PASS", directive),
            (Some(Outcome::Skip), _) => ("SKIP", directive),
            (Some(Outcome::Fail), None) => ("FAIL", directive),
        };
        match verdict {
            "PASS" => s.passed += 1,
            "SKIP" | "XFAIL" => s.skipped += 1,
            _ => s.failed += 1,
        }
        lines.push(format!(
            "{verdict:5} {name}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!("  ({why})")
            }
        ));
    }
    if !splats.is_empty() {
        s.failed += 1;
        lines.push(format!(
            "FAIL  kernel log: {} splat(s), first: {}",
            splats.len(),
            splats[0]
        ));
    }
    if timed_out {
        s.failed += 1;
        lines.push("FAIL  guest: hard timeout".into());
    }
    (s, lines)
}

/// Builds, boots and runs the plan for a flavour.
pub fn run(
    pin: &Pin,
    fl: Flavour,
    accel: Accel,
    only: &[String],
    repeat: u32,
    stress_secs: Option<u32>,
) -> Result<Summary> {
    let Flavour { imp, debug, arch } = fl;
    if arch == Arch::Arm {
        bail!("32-bit arm runs the KUnit suites only: cargo xtask kunit --arch arm");
    }
    let all_names: Vec<String> = plan().iter().map(Case::name).collect();
    let xf_text =
        std::fs::read_to_string(paths::repo().join("expected-failures.txt")).unwrap_or_default();
    let all_xf = parse_xfails(&xf_text, &all_names)?;
    let cases: Vec<Case> = plan()
        .into_iter()
        .filter(|c| debug || !c.args.contains(&"-f"))
        .filter(|c| only.is_empty() || only.iter().any(|o| c.name().contains(o.as_str())))
        .collect();
    if cases.is_empty() {
        bail!(
            "--only {only:?} matches no test; the tests are:\n  {}",
            all_names.join("\n  ")
        );
    }
    let cases: Vec<Case> = cases
        .into_iter()
        .map(|mut c| {
            if let (
                Some(secs),
                Program::Selftest {
                    name: "ksm_stress", ..
                },
            ) = (stress_secs, &c.program)
            {
                // A long run: the arguments and the limit grow with it (leaked
                // once per invocation, the plan wants `'static` strings).
                let t: &'static str = Box::leak(secs.to_string().into_boxed_str());
                let mut args = vec!["-t", t];
                args.extend(c.args.iter().filter(|a| **a == "-f"));
                c.args = Box::leak(args.into_boxed_slice());
                c.limit = secs + 240;
            }
            c
        })
        .flat_map(|c| std::iter::repeat_n(c, repeat as usize))
        .collect();
    let names: Vec<String> = cases.iter().map(Case::name).collect();
    let tree = series::ensure_tree(pin)?;
    let kernel = build::build(pin, &tree, fl, false)?;
    let imp_name = if imp == Impl::C { "c" } else { "rust" };
    let xfails: Vec<&Xfail> = all_xf.iter().filter(|x| x.imp == imp_name).collect();
    // Debug kernels (KASAN, lockdep, page poisoning, ...) run these tests many times slower
    // than production ones: ksm_functional_tests takes 6 to 8 minutes under TCG there.
    let scale = if fl.debug { DEBUG_LIMIT_SCALE } else { 1 }
        * if arch == Arch::Arm64 {
            ARM64_LIMIT_SCALE
        } else {
            1
        };
    let mut plan_sh = format!("echo 'KTAP version 1'\necho '1..{}'\n", cases.len());
    for c in &cases {
        let mut cmd = format!(
            "run_test {} {} ./{}",
            sh_quote(&c.name()),
            c.limit * scale,
            c.program.name()
        );
        for a in c.args {
            write!(cmd, " {}", sh_quote(a))?;
        }
        plan_sh.push_str(&cmd);
        plan_sh.push('\n');
    }
    let programs: Vec<Program> = cases.iter().map(|c| c.program.clone()).collect();
    let initrd = guest::image(pin, &tree, fl, "selftests", &programs, &plan_sh)?;
    let step = Step::start(format!(
        "boot [{}] and run {} selftests",
        fl.name(),
        cases.len()
    ));
    let limit: u32 = cases
        .iter()
        .map(|c| c.limit * scale)
        .sum::<u32>()
        .min(2400 * scale)
        + 180;
    let log = fl.dir().join("selftests-console.log");
    let mut report = Report::default();
    let mut current: Vec<String> = Vec::new();
    let mut speeds: Vec<String> = Vec::new();
    let mut nested: std::collections::BTreeMap<String, usize> = Default::default();
    // What the kernel printed before init: the KUnit suites of a Rust guest.
    let mut boot_lines: Vec<String> = Vec::new();
    let mut booted = false;
    let boot = qemu::boot(
        &qemu::Vm {
            kernel: &kernel,
            initrd: Some(&initrd),
            append: String::new(),
            timeout: Duration::from_secs(limit.into()),
            accel,
            log: log.clone(),
            arch,
        },
        |line| {
            if !booted {
                // Kernel output may share the line; what came before init is
                // KUnit's, never a selftest result.
                booted = line.contains("ksm-rs-guest: booted");
                if !booted {
                    boot_lines.push(line.to_string());
                    return;
                }
            }
            if line.starts_with("ksm-rs-guest:") || line.starts_with("# [") {
                ui::info(format!("    {line}"));
            }
            if line.starts_with("    ") {
                // Throughput the timing tests report (ksm_tests -P/-H/-D).
                if line.contains("MiB/s") {
                    // The case now running is the one after the last reported result.
                    let case = names.get(report.results.len()).map_or("?", String::as_str);
                    speeds.push(format!("{case}: {}", line.trim()));
                }
                current.push(line.to_string());
            } else if let Some(r) = report.feed(line) {
                let tag = match r.outcome {
                    Outcome::Pass => "ok  ",
                    Outcome::Skip => "skip",
                    Outcome::Fail => "FAIL",
                };
                ui::info(format!("    {tag} {} {}", r.name, r.directive));
                if let Some(k) = nested_skips(&current).filter(|k| *k > 0) {
                    ui::warn(format!("{}: {k} subtest(s) skipped inside it", r.name));
                    nested.insert(r.name.clone(), k);
                }
                if r.outcome == Outcome::Fail {
                    for l in current.iter().rev().take(25).rev() {
                        eprintln!("      |{l}");
                    }
                }
                current.clear();
            }
        },
    )?;
    step.done();
    let (mut summary, lines) = judge(&report, &names, &xfails, &boot.splats, boot.timed_out);
    println!(
        "\nselftests [{}] (console log: {}):",
        fl.name(),
        log.display()
    );
    for l in &lines {
        println!("  {l}");
    }
    for (name, k) in &nested {
        println!("  note: {name}: {k} subtest(s) skipped inside it (see the console log)");
    }
    for sp in &speeds {
        println!("  speed: {sp}");
    }
    for s in &boot.splats {
        println!("  kernel: {s}");
    }
    if imp == Impl::Rust {
        let out = fl.dir().join("kunit-console.log");
        match crate::kunit::parse_console(&tree, &boot_lines, &out) {
            Ok(k) => {
                println!("kunit [{}] (at boot of the guest): {}", fl.name(), k.line());
                summary.add(k);
            }
            Err(e) => {
                println!("kunit [{}]: FAIL: {e:#}", fl.name());
                summary.failed += 1;
            }
        }
    }
    println!("{}", summary.line());
    Ok(summary)
}

/// The `skip:N` of a kselftest's closing `# Totals:` line, if any.
pub fn nested_skips(lines: &[String]) -> Option<usize> {
    let t = lines.iter().rev().find(|l| l.contains("# Totals:"))?;
    let i = t.find("skip:")? + "skip:".len();
    t[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        plan().iter().map(Case::name).collect()
    }

    #[test]
    fn plan_covers_the_required_cases() {
        let n = names();
        for want in [
            "ksm_tests -M -p 10",
            "ksm_tests -U",
            "ksm_tests -Z -p 10 -z 0",
            "ksm_tests -Z -p 10 -z 1",
            "ksm_tests -P -s 100",
            "ksm_tests -H -s 100",
            "ksm_tests -N -m 1",
            "ksm_tests -N -m 0",
            "ksm_tests -D -s 100",
            "ksm_tests -C",
            "ksm_functional_tests",
            "rmap -t ksm -t ksm_and_mremap",
            "merge -t ksm_merge",
            "ksm_abi_tests",
            "ksm_stress -t 30",
            "ksm_stress -t 60 -f",
        ] {
            assert!(n.iter().any(|x| x == want), "missing {want}");
        }
        let uniq: std::collections::BTreeSet<_> = n.iter().collect();
        assert_eq!(uniq.len(), n.len(), "duplicate case names");
    }

    #[test]
    fn xfail_file() {
        let known = names();
        let x = parse_xfails(
            "# c | x | y\n\nrust | ksm_tests -U | unmerge not written yet\n",
            &known,
        )
        .unwrap();
        assert_eq!(
            x,
            vec![Xfail {
                imp: "rust".into(),
                test: "ksm_tests -U".into(),
                reason: "unmerge not written yet".into()
            }]
        );
        assert!(parse_xfails("rust | ksm_tests -U |", &known).is_err());
        assert!(parse_xfails("go | ksm_tests -U | r", &known).is_err());
        assert!(parse_xfails("rust | nosuch | r", &known).is_err());
        assert!(parse_xfails("rust ksm_tests -U", &known).is_err());
        // The repository's own list must always parse.
        let repo = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../expected-failures.txt"
        ))
        .unwrap();
        parse_xfails(&repo, &known).unwrap();
    }

    #[test]
    fn nested_skip_count() {
        let l = |s: &str| s.to_string();
        assert_eq!(
            nested_skips(&[
                l("    ok 1 x"),
                l("    # Totals: pass:9 fail:0 xfail:0 xpass:0 skip:2 error:0")
            ]),
            Some(2)
        );
        assert_eq!(nested_skips(&[l("    ok 1 x")]), None);
    }

    #[test]
    fn judging() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = Report::parse(
            "1..5\nok 1 a\nnot ok 2 b # exit=1\nok 3 c # SKIP (exit 4)\nnot ok 4 d # exit=1\n",
        );
        let xd = Xfail {
            imp: "rust".into(),
            test: "d".into(),
            reason: "todo".into(),
        };
        let (s, lines) = judge(&r, &names, &[&xd], &[], false);
        assert_eq!(
            s,
            Summary {
                passed: 1,
                failed: 2,
                skipped: 2
            }
        );
        assert!(lines[3].starts_with("XFAIL"));
        assert!(lines[4].contains("no result"));
        let xa = Xfail {
            imp: "rust".into(),
            test: "a".into(),
            reason: "x".into(),
        };
        let (s, _) = judge(&r, &names, &[&xa], &["BUG: x".into()], true);
        assert_eq!(s.failed, 6);
        assert_eq!(
            Summary {
                passed: 3,
                failed: 0,
                skipped: 1
            }
            .line(),
            "3 passed, 0 failed, 1 skipped"
        );
    }
}
