//! `cargo xtask demo`: boot the KSM kernel, run processes holding identical
//! memory and show KSM merging it.

use crate::build::{self, Arch, Flavour, Impl};
use crate::guest::{self, Program};
use crate::pin::Pin;
use crate::qemu::{self, Accel};
use crate::series;
use crate::ui::{self, Step};
use anyhow::{bail, Result};
use std::time::Duration;

const DEMO_C: &str = include_str!("../guest/ksm-demo.c");
const DEMO_PLAN: &str = include_str!("../guest/demo-plan.sh");

pub fn run(pin: &Pin, imp: Impl, arch: Arch, accel: Accel) -> Result<()> {
    let fl = Flavour {
        imp,
        debug: false,
        arch,
    };
    let tree = series::ensure_tree(pin)?;
    let kernel = build::build(pin, &tree, fl, false)?;
    let programs = [Program::Guest {
        name: "ksm-demo",
        source: DEMO_C,
    }];
    let initrd = guest::image(pin, &tree, fl, "demo", &programs, DEMO_PLAN)?;
    let step = Step::start(format!("boot [{}] and run the demo", fl.name()));
    let mut max_sharing = 0u64;
    let mut saved = None;
    let boot = qemu::boot(
        &qemu::Vm {
            kernel: &kernel,
            initrd: Some(&initrd),
            append: String::new(),
            timeout: Duration::from_secs(400),
            accel,
            log: fl.dir().join("demo-console.log"),
            arch,
        },
        |line| {
            if let Some(rest) = line.strip_prefix("demo:") {
                println!("{rest}");
                if let Some(v) = field(rest, "pages_sharing=") {
                    max_sharing = max_sharing.max(v);
                }
                if rest.contains("memory saved:") {
                    saved = Some(rest.trim().to_string());
                }
            } else if line.starts_with("ksm-rs-guest:") {
                ui::info(format!("    {line}"));
            }
        },
    )?;
    step.done();
    if !boot.splats.is_empty() {
        bail!(
            "kernel log has {} splat(s): {}",
            boot.splats.len(),
            boot.splats[0]
        );
    }
    if boot.timed_out {
        bail!("demo guest timed out");
    }
    match saved {
        Some(s) if max_sharing > 0 => {
            println!("\nKSM [{}] merged pages: {s}", fl.name());
            Ok(())
        }
        _ => bail!("the demo saw no pages merged"),
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    let i = line.find(key)? + key.len();
    line[i..].split_whitespace().next()?.parse().ok()
}
