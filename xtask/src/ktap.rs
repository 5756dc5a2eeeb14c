//! KTAP results and kernel-console failure detection.

use regex::Regex;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub number: u32,
    pub name: String,
    pub outcome: Outcome,
    /// Text after `#` (reason for a skip, exit status of a failure).
    pub directive: String,
}

/// A parsed top-level KTAP stream (indented subtest lines are ignored).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub planned: Option<u32>,
    pub results: Vec<TestResult>,
}

fn result_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r"^(not ok|ok) (\d+)(?: -)?(?: ([^#]*?))?\s*(?:#\s*(.*))?$").expect("regex")
    })
}

/// Parses one top-level result line.
pub fn parse_result(line: &str) -> Option<TestResult> {
    let c = result_re().captures(line.trim_end())?;
    let ok = &c[1] == "ok";
    let directive = c.get(4).map_or("", |m| m.as_str()).trim().to_string();
    let up = directive.to_ascii_uppercase();
    let outcome = if up.starts_with("SKIP") {
        Outcome::Skip
    } else if ok || up.starts_with("TODO") || up.starts_with("XFAIL") {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    Some(TestResult {
        number: c[2].parse().ok()?,
        name: c.get(3).map_or("", |m| m.as_str()).trim().to_string(),
        outcome,
        directive,
    })
}

impl Report {
    /// Feeds one console line; returns the result if it was a top-level one.
    pub fn feed(&mut self, line: &str) -> Option<TestResult> {
        if let Some(p) = line.strip_prefix("1..") {
            if let Ok(n) = p.trim().parse() {
                self.planned = Some(n);
            }
            return None;
        }
        let r = parse_result(line)?;
        self.results.push(r.clone());
        Some(r)
    }

    #[cfg(test)]
    pub fn parse(text: &str) -> Report {
        let mut r = Report::default();
        for l in text.lines() {
            r.feed(l);
        }
        r
    }

    #[cfg(test)]
    pub fn count(&self, o: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == o).count()
    }

    /// Planned tests that never reported (guest died or hung mid-plan).
    #[cfg(test)]
    pub fn missing(&self) -> Vec<u32> {
        let n = self.planned.unwrap_or(0);
        (1..=n)
            .filter(|k| !self.results.iter().any(|r| r.number == *k))
            .collect()
    }
}

/// The kernel-log splats that fail a run whatever the tests said.
const SPLATS: &[&str] = &[
    r"Oops",
    r"BUG:",
    r"kernel BUG at",
    r"WARNING:",
    r"------------\[ cut here \]------------",
    r"KASAN:",
    r"UBSAN:",
    r"KFENCE:",
    r"general protection fault",
    r"Unable to handle kernel",
    r"Kernel panic",
    r"possible circular locking dependency",
    r"possible recursive locking",
    r"inconsistent lock state",
    r"suspicious RCU usage",
    r"DEBUG_LOCKS_WARN_ON",
    r"detected stall",
    r"rcu_.*stall",
    r"blocked for more than",
    r"soft lockup",
    r"hard LOCKUP",
    r"list_(add|del) corruption",
    r"Call Trace:",
    r"rust_panic",
    r"panicked at",
];

fn printk_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    // A printk record with CONFIG_PRINTK_TIME, possibly after user output on
    // the same line.
    R.get_or_init(|| Regex::new(r"\[\s*\d+\.\d{6}\]\s?(.*)$").expect("regex"))
}

fn splat_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(&SPLATS.join("|")).expect("regex"))
}

/// If `line` is a kernel message reporting an oops, BUG, WARN, KASAN,
/// lockdep or RCU-stall, returns the message.
pub fn splat(line: &str) -> Option<&str> {
    let msg = printk_re().captures(line)?.get(1)?.as_str();
    splat_re().is_match(msg).then_some(msg)
}

/// Finds the splats of a kernel log, line by line ([`splat`]), except the
/// stack dump of an OOM-killer report: tests that drive a memory cgroup into
/// OOM on purpose (ksm_abi_tests) expect that report, and its `Call Trace:`
/// is no bug. Any other splat inside the report still counts.
#[derive(Default)]
pub struct SplatScanner {
    in_oom_report: bool,
}

impl SplatScanner {
    pub fn feed<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        let msg = printk_re().captures(line)?.get(1)?.as_str();
        if msg.contains("invoked oom-killer:") {
            self.in_oom_report = true;
        } else if msg.contains("out of memory: Killed process")
            || msg.contains("Out of memory: Killed process")
        {
            self.in_oom_report = false;
        }
        let m = splat(line)?;
        (!(self.in_oom_report && m.starts_with("Call Trace:"))).then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_report_is_no_splat() {
        let mut s = SplatScanner::default();
        assert_eq!(
            s.feed("[   16.463205] t invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0"),
            None
        );
        assert_eq!(s.feed("[   16.463877] Call Trace:"), None);
        assert!(s
            .feed("[   16.463900] BUG: unable to handle page fault")
            .is_some());
        assert_eq!(
            s.feed("[   16.471725] Memory cgroup out of memory: Killed process 508 (t)"),
            None
        );
        assert_eq!(s.feed("[   17.000000] Call Trace:"), Some("Call Trace:"));
    }

    #[test]
    fn results() {
        let r = parse_result("ok 1 ksm_tests -M -p 10").unwrap();
        assert_eq!(
            (r.number, r.name.as_str(), r.outcome),
            (1, "ksm_tests -M -p 10", Outcome::Pass)
        );
        let r = parse_result("not ok 12 - rmap -t ksm # exit=1").unwrap();
        assert_eq!(
            (r.number, r.name.as_str(), r.outcome, r.directive.as_str()),
            (12, "rmap -t ksm", Outcome::Fail, "exit=1")
        );
        let r = parse_result("ok 3 ksm_tests -N -m 1 # SKIP need 2 NUMA nodes").unwrap();
        assert_eq!(
            (r.outcome, r.directive.as_str()),
            (Outcome::Skip, "SKIP need 2 NUMA nodes")
        );
        let r = parse_result("not ok 4 flaky # TODO known").unwrap();
        assert_eq!(r.outcome, Outcome::Pass);
        assert!(parse_result("    ok 1 nested").is_none());
        assert!(parse_result("okay 1").is_none());
        assert!(parse_result("# ok 1 x").is_none());
    }

    #[test]
    fn report_plan_and_missing() {
        let r = Report::parse("KTAP version 1\n1..4\n    KTAP version 1\n    1..2\n    ok 1 sub\n    not ok 2 sub\nok 1 a\nnot ok 2 b\nok 4 d # SKIP x\n");
        assert_eq!(r.planned, Some(4));
        assert_eq!(
            (
                r.count(Outcome::Pass),
                r.count(Outcome::Fail),
                r.count(Outcome::Skip)
            ),
            (1, 1, 1)
        );
        assert_eq!(r.missing(), vec![3]);
    }

    #[test]
    fn splats_only_in_kernel_messages() {
        assert!(
            splat("[   12.345678] WARNING: CPU: 1 PID: 57 at mm/ksm.c:123 foo+0x1/0x2").is_some()
        );
        assert!(splat("[    1.000000] BUG: KASAN: slab-use-after-free in ksm_scan").is_some());
        assert!(
            splat("[    3.100000] ======================================================\n")
                .is_none()
        );
        assert!(
            splat("[    3.100001] WARNING: possible circular locking dependency detected")
                .is_some()
        );
        assert!(
            splat("[   99.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:").is_some()
        );
        assert!(splat("[    5.000000] Kernel panic - not syncing: Fatal exception").is_some());
        assert!(splat(
            "[    5.000000] Oops: general protection fault, probably for non-canonical address"
        )
        .is_some());
        assert!(splat(
            "some user output[    7.123456] BUG: sleeping function called from invalid context"
        )
        .is_some());
        // User space saying the words is not a kernel splat.
        assert!(splat("# WARNING: this test is slow").is_none());
        assert!(splat("ok 1 BUG: fixed").is_none());
        // Ordinary kernel messages pass.
        assert!(splat("[    0.000000] Linux version 7.3.4").is_none());
        assert!(splat("[    0.500000] ksm: ksmd started").is_none());
    }
}
