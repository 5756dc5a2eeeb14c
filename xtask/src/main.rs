//! ksm-rs developer tool. See README.md; `cargo xtask --help` lists commands.

mod base;
mod bench;
mod build;
mod demo;
mod guest;
mod kconfig;
mod ktap;
mod kunit;
mod paths;
mod pin;
mod provision;
mod qemu;
mod selftests;
mod series;
mod ui;

use anyhow::{bail, Result};
use build::{Flavour, Impl};
use clap::{Parser, Subcommand};
use qemu::Accel;
use selftests::Summary;
use std::process::Command;

/// The implementation `demo` uses.
const DEFAULT_IMPL: Impl = Impl::Rust;

/// What `test` runs the selftests on without `--impl`: the Rust implementation, and mm/ksm.c
/// as the reference that the same tests must pass on.
const TEST_IMPLS: [Impl; 2] = [Impl::Rust, Impl::C];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ksm-rs: KSM in Rust as a Linux 7.3 mm/ patch series"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing packages, rust-src and bindgen-cli (as root), else print the commands
    Setup,
    /// Download, verify and commit the pinned base kernel into the cache
    Fetch,
    /// Create linux/ = pinned base + `git am patches/*`
    Tree {
        /// Recreate linux/ even if it exists (discards unexported commits)
        #[arg(long)]
        force: bool,
    },
    /// Regenerate patches/ and the mirror dirs from linux/ (reproducibly)
    Export,
    /// Check the series applies to the pinned base and the mirrors match it
    Check,
    /// Build a kernel flavour
    Build {
        #[arg(long, value_enum, default_value = "c")]
        r#impl: Impl,
        /// Add lockdep, KASAN, DEBUG_VM, DEBUG_LIST and friends
        #[arg(long)]
        debug: bool,
        /// Build Rust code with CLIPPY=1
        #[arg(long)]
        clippy: bool,
    },
    /// Build, boot and run all KSM selftests; ends with `N passed, N failed, N skipped`
    Selftests {
        #[arg(long, value_enum, default_value = "c")]
        r#impl: Impl,
        #[arg(long)]
        debug: bool,
        #[arg(long, value_enum, default_value = "auto")]
        accel: Accel,
        /// Run only the tests whose name contains this text (may be repeated)
        #[arg(long)]
        only: Vec<String>,
        /// Run each selected test this many times in the one boot (flakiness hunting)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
        /// Run ksm_stress this many seconds instead of the plan's short run
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3600))]
        stress_secs: Option<u32>,
    },
    /// Run the KUnit suites (mm/ksm-rs/.kunitconfig) with kunit.py on UML
    Kunit,
    /// Boot the KSM kernel and watch it merge the memory of a small workload
    Demo {
        #[arg(long, value_enum)]
        r#impl: Option<Impl>,
        #[arg(long, value_enum, default_value = "auto")]
        accel: Accel,
    },
    /// Deterministic A/B benchmark of ksmd's CPU cost, mm/ksm.c against Rust, under QEMU
    /// TCG with -icount (not part of `test`); writes build/bench/bench.{json,png}
    Bench {
        /// Only this flavour (no Rust/C ratios); both by default
        #[arg(long, value_enum)]
        r#impl: Option<Impl>,
        /// Use build/c and build/rust as they are instead of building them
        #[arg(long)]
        no_build: bool,
        /// Run only this workload (may be repeated): unique, dup50, dup90, converge, merge,
        /// merge-thp, sparse, smart, advisor
        #[arg(long)]
        only: Vec<String>,
        /// Also count the guest instructions of each workload's main phase per kernel symbol
        /// (a QEMU TCG plugin; slower, same figures)
        #[arg(long)]
        profile: bool,
    },
    /// Everything: setup, host unit tests, check, build, boot, selftests (Rust and C unless
    /// --impl picks one), KUnit
    Test {
        #[arg(long, value_enum)]
        r#impl: Option<Impl>,
        #[arg(long, value_enum, default_value = "auto")]
        accel: Accel,
    },
}

fn main() {
    ui::init();
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // The kernel build needs bindgen from ~/.cargo/bin.
    std::env::set_var("PATH", provision::path_with_cargo_bin());
    let pin = pin::Pin::load(&paths::repo().join("kernel-base.toml"))?;
    match cli.cmd {
        Cmd::Setup => provision::setup(&pin),
        Cmd::Fetch => {
            let b = base::ensure(&pin)?;
            println!(
                "base {} at {} (commit {})",
                b.version,
                b.repo.display(),
                b.commit
            );
            Ok(())
        }
        Cmd::Tree { force } => series::tree(&pin, force),
        Cmd::Export => series::export(&pin),
        Cmd::Check => series::check(&pin),
        Cmd::Build {
            r#impl,
            debug,
            clippy,
        } => {
            let tree = series::ensure_tree(&pin)?;
            let img = build::build(&pin, &tree, Flavour { imp: r#impl, debug }, clippy)?;
            println!("{}", img.display());
            Ok(())
        }
        Cmd::Selftests {
            r#impl,
            debug,
            accel,
            only,
            repeat,
            stress_secs,
        } => {
            let s = selftests::run(&pin, r#impl, debug, accel, &only, repeat, stress_secs)?;
            if s.failed > 0 {
                bail!("{} selftest(s) failed", s.failed);
            }
            Ok(())
        }
        Cmd::Kunit => {
            let s = kunit::run(&pin)?;
            if s.failed > 0 {
                bail!("{} KUnit test(s) failed", s.failed);
            }
            Ok(())
        }
        Cmd::Demo { r#impl, accel } => {
            provision::setup(&pin)?;
            demo::run(&pin, r#impl.unwrap_or(DEFAULT_IMPL), accel)
        }
        Cmd::Bench {
            r#impl,
            no_build,
            only,
            profile,
        } => bench::run(
            &pin,
            &bench::Options {
                imp: r#impl,
                no_build,
                only,
                profile,
            },
        ),
        Cmd::Test { r#impl, accel } => {
            let impls: Vec<Impl> = r#impl.map_or(TEST_IMPLS.to_vec(), |i| vec![i]);
            test(&pin, &impls, accel)
        }
    }
}

/// `cargo xtask test`: the README's test command, and what CI runs.
fn test(pin: &pin::Pin, impls: &[Impl], accel: Accel) -> Result<()> {
    let mut phases: Vec<(&str, std::time::Duration, String)> = Vec::new();
    let mut total = Summary::default();
    let t = std::time::Instant::now();
    provision::setup(pin)?;
    phases.push(("setup", t.elapsed(), "ok".into()));

    let step = ui::Step::start("host unit tests (cargo test -p xtask)");
    ui::run(
        Command::new("cargo")
            .args(["test", "--quiet", "--release", "--package", "xtask"])
            .current_dir(paths::repo()),
    )?;
    phases.push(("host unit tests", step.done(), "ok".into()));

    let t = std::time::Instant::now();
    series::check(pin)?;
    phases.push(("check", t.elapsed(), "ok".into()));

    for &imp in impls {
        let t = std::time::Instant::now();
        let s = selftests::run(pin, imp, false, accel, &[], 1, None)?;
        let name = match imp {
            Impl::Rust => "selftests [rust]",
            Impl::C => "selftests [c]",
        };
        phases.push((name, t.elapsed(), s.line()));
        total.add(s);
    }

    let t = std::time::Instant::now();
    let k = kunit::run(pin);
    match &k {
        Ok(k) => {
            phases.push(("kunit", t.elapsed(), k.line()));
            total.add(*k);
        }
        Err(e) => {
            eprintln!("kunit: {e:#}");
            phases.push(("kunit", t.elapsed(), "ERROR".into()));
            total.failed += 1;
        }
    }

    println!("\ncargo xtask test [impl {impls:?}]:");
    for (name, d, res) in &phases {
        println!("  {name:<26} {:>8}  {res}", ui::fmt_dur(*d));
    }
    println!("{}", total.line());
    if total.failed > 0 {
        bail!("{} test(s) failed", total.failed);
    }
    Ok(())
}
