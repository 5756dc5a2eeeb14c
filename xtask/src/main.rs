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
use build::{Arch, Flavour, Impl};
use clap::{Parser, Subcommand};
use qemu::Accel;
use selftests::Summary;
use std::process::Command;

/// The implementation `demo` uses.
const DEFAULT_IMPL: Impl = Impl::Rust;

/// What `test` runs the selftests on without `--impl`: the Rust implementation, and mm/ksm.c
/// as the reference that the same tests must pass on.
const TEST_IMPLS: [Impl; 2] = [Impl::Rust, Impl::C];

/// The architectures `cargo xtask test` runs on by default (32-bit arm: KUnit only).
const TEST_ARCHES: [Arch; 3] = [Arch::X86_64, Arch::Arm64, Arch::Arm];

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
    Setup {
        /// Also what `--arch arm64` needs (cross tools, arm64 busybox and libnuma), or `--arch
        /// arm` (the emulator)
        #[arg(long, value_enum, default_value = "x86_64")]
        arch: Arch,
    },
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
        /// The guest's architecture (arm64: cross-built, run under qemu-system-aarch64 with MTE)
        #[arg(long, value_enum, default_value = "x86_64")]
        arch: Arch,
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
        /// The guest's architecture (arm64: cross-built, run under qemu-system-aarch64 with MTE)
        #[arg(long, value_enum, default_value = "x86_64")]
        arch: Arch,
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
    /// Run the KUnit suites (mm/ksm-rs/.kunitconfig) with kunit.py on UML, or with `--arch arm`
    /// at boot of a 32-bit arm guest (with the rust/kernel doctests)
    Kunit {
        /// `arm`: ARMv7 under qemu-system-arm (x86_64 and arm64 guests run KUnit at boot of
        /// `cargo xtask selftests --impl rust`)
        #[arg(long, value_enum)]
        arch: Option<Arch>,
    },
    /// Boot the KSM kernel and watch it merge the memory of a small workload
    Demo {
        #[arg(long, value_enum)]
        r#impl: Option<Impl>,
        /// The guest's architecture (arm64: cross-built, run under qemu-system-aarch64 with MTE)
        #[arg(long, value_enum, default_value = "x86_64")]
        arch: Arch,
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
        /// merge-small, merge-thp, sparse, smart, advisor
        #[arg(long)]
        only: Vec<String>,
        /// Also count the guest instructions of each workload's main phase per kernel symbol
        /// (a QEMU TCG plugin; slower, same figures)
        #[arg(long)]
        profile: bool,
        /// Give the guest CPU no SSE 4.2, so that both implementations checksum pages with
        /// xxhash (the Rust KSM otherwise uses CRC-32C): the ports compared on one algorithm;
        /// writes build/bench-xxhash/
        #[arg(long)]
        xxhash: bool,
    },
    /// Everything: setup, host unit tests, check, build, boot, selftests on x86_64 (Rust and C
    /// unless --impl picks one) and on arm64 (Rust), KUnit at boot of each Rust guest and of a
    /// 32-bit arm one
    Test {
        #[arg(long, value_enum)]
        r#impl: Option<Impl>,
        /// Only this architecture (all by default; arm64 and arm run the Rust implementation)
        #[arg(long, value_enum)]
        arch: Option<Arch>,
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
        Cmd::Setup { arch } => {
            provision::setup(&pin)?;
            match arch {
                Arch::X86_64 => {}
                Arch::Arm64 => provision::setup_arm64()?,
                Arch::Arm => provision::setup_arm()?,
            }
            Ok(())
        }
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
            arch,
            debug,
            clippy,
        } => {
            let tree = series::ensure_tree(&pin)?;
            let fl = Flavour {
                imp: r#impl,
                debug,
                arch,
            };
            let img = build::build(&pin, &tree, fl, clippy)?;
            println!("{}", img.display());
            Ok(())
        }
        Cmd::Selftests {
            r#impl,
            arch,
            debug,
            accel,
            only,
            repeat,
            stress_secs,
        } => {
            if arch == Arch::Arm64 {
                provision::setup_arm64()?;
            }
            let fl = Flavour {
                imp: r#impl,
                debug,
                arch,
            };
            let s = selftests::run(&pin, fl, accel, &only, repeat, stress_secs)?;
            if s.failed > 0 {
                bail!("{} selftest(s) failed", s.failed);
            }
            Ok(())
        }
        Cmd::Kunit { arch } => {
            let s = match arch {
                None => kunit::run(&pin)?,
                Some(Arch::Arm) => kunit::run_arm(&pin)?,
                Some(a) => bail!(
                    "--arch {a:?}: its Rust guests run KUnit at boot \
                     (cargo xtask selftests --impl rust --arch ...)"
                ),
            };
            if s.failed > 0 {
                bail!("{} KUnit test(s) failed", s.failed);
            }
            Ok(())
        }
        Cmd::Demo {
            r#impl,
            arch,
            accel,
        } => {
            provision::setup(&pin)?;
            if arch == Arch::Arm64 {
                provision::setup_arm64()?;
            }
            demo::run(&pin, r#impl.unwrap_or(DEFAULT_IMPL), arch, accel)
        }
        Cmd::Bench {
            r#impl,
            no_build,
            only,
            profile,
            xxhash,
        } => bench::run(
            &pin,
            &bench::Options {
                imp: r#impl,
                no_build,
                only,
                profile,
                xxhash,
            },
        ),
        Cmd::Test {
            r#impl,
            arch,
            accel,
        } => {
            let impls: Vec<Impl> = r#impl.map_or(TEST_IMPLS.to_vec(), |i| vec![i]);
            let arches: Vec<Arch> = arch.map_or(TEST_ARCHES.to_vec(), |a| vec![a]);
            test(&pin, &impls, &arches, accel)
        }
    }
}

/// `cargo xtask test`: the README's test command, and what CI runs.
///
/// The selftests on x86_64 for each of `impls`, then on arm64 for the Rust
/// implementation (`arches` picks); every Rust guest also runs the KUnit
/// suites at boot, so the UML run of `cargo xtask kunit` is not needed here.
/// Last, the KUnit suites on 32-bit arm (`cargo xtask kunit --arch arm`).
fn test(pin: &pin::Pin, impls: &[Impl], arches: &[Arch], accel: Accel) -> Result<()> {
    let mut phases: Vec<(String, std::time::Duration, String)> = Vec::new();
    let mut total = Summary::default();
    let t = std::time::Instant::now();
    let mut flavours = Vec::new();
    if arches.contains(&Arch::X86_64) {
        flavours.extend(impls.iter().map(|&imp| Flavour::x86(imp, false)));
    }
    if arches.contains(&Arch::Arm64) && impls.contains(&Impl::Rust) {
        flavours.push(Flavour {
            imp: Impl::Rust,
            debug: false,
            arch: Arch::Arm64,
        });
    }
    let arm_kunit = arches.contains(&Arch::Arm) && impls.contains(&Impl::Rust);
    if flavours.is_empty() && !arm_kunit {
        bail!("nothing to test: arm64 and arm run the Rust implementation only (--impl {impls:?}, --arch {arches:?})");
    }
    provision::setup(pin)?;
    if flavours.iter().any(|f| f.arch == Arch::Arm64) {
        provision::setup_arm64()?;
    }
    phases.push(("setup".into(), t.elapsed(), "ok".into()));

    let step = ui::Step::start("host unit tests (cargo test -p xtask)");
    ui::run(
        Command::new("cargo")
            .args(["test", "--quiet", "--release", "--package", "xtask"])
            .current_dir(paths::repo()),
    )?;
    phases.push(("host unit tests".into(), step.done(), "ok".into()));

    let t = std::time::Instant::now();
    series::check(pin)?;
    phases.push(("check".into(), t.elapsed(), "ok".into()));

    for fl in flavours {
        let t = std::time::Instant::now();
        let s = selftests::run(pin, fl, accel, &[], 1, None)?;
        let what = if fl.imp == Impl::Rust {
            "selftests+kunit"
        } else {
            "selftests"
        };
        phases.push((format!("{what} [{}]", fl.name()), t.elapsed(), s.line()));
        total.add(s);
    }
    if arm_kunit {
        let t = std::time::Instant::now();
        let s = kunit::run_arm(pin)?;
        phases.push(("kunit [rust-arm]".into(), t.elapsed(), s.line()));
        total.add(s);
    }

    println!("\ncargo xtask test [impl {impls:?}, arch {arches:?}]:");
    for (name, d, res) in &phases {
        println!("  {name:<30} {:>8}  {res}", ui::fmt_dur(*d));
    }
    println!("{}", total.line());
    if total.failed > 0 {
        bail!("{} test(s) failed", total.failed);
    }
    Ok(())
}
