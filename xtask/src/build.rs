//! Kernel flavours from one tree: guest config + implementation (+ debug),
//! each built out of tree in `build/<flavour>` with ccache.

use crate::kconfig::Fragment;
use crate::paths;
use crate::pin::Pin;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Impl {
    /// mm/ksm.c, the reference
    C,
    /// mm/ksm-rs/ (CONFIG_KSM_RUST)
    Rust,
}

/// The guest's architecture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86_64 (the host's), under qemu-system-x86_64
    #[default]
    #[value(name = "x86_64")]
    X86_64,
    /// arm64, cross-built with LLVM, under qemu-system-aarch64 (virt, MTE)
    Arm64,
    /// 32-bit arm (ARMv7, LPAE), cross-built with LLVM, under qemu-system-arm (virt): the
    /// KUnit suites only (`cargo xtask kunit --arch arm`)
    Arm,
}

impl Arch {
    /// The fragment with what this architecture's guest needs.
    fn fragment(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("arch-x86_64.config", ARCH_X86_64),
            Arch::Arm64 => ("arch-arm64.config", ARCH_ARM64),
            Arch::Arm => ("arch-arm.config", ARCH_ARM),
        }
    }

    /// Kbuild's `ARCH=`, when it is not the host's.
    pub fn make_arch(self) -> Option<&'static str> {
        match self {
            Arch::X86_64 => None,
            Arch::Arm64 => Some("arm64"),
            Arch::Arm => Some("arm"),
        }
    }

    /// The make target that builds the image QEMU boots, and where it lands.
    fn image(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("bzImage", "arch/x86/boot/bzImage"),
            Arch::Arm64 => ("Image", "arch/arm64/boot/Image"),
            Arch::Arm => ("zImage", "arch/arm/boot/zImage"),
        }
    }

    /// The C compiler for static guest programs.
    pub fn gcc(self) -> &'static str {
        match self {
            Arch::X86_64 => "gcc",
            Arch::Arm64 => "aarch64-linux-gnu-gcc",
            Arch::Arm => "arm-linux-gnueabihf-gcc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavour {
    pub imp: Impl,
    pub debug: bool,
    pub arch: Arch,
}

const GUEST: &str = include_str!("../configs/guest.config");
const IMPL_C: &str = include_str!("../configs/impl-c.config");
const IMPL_RUST: &str = include_str!("../configs/impl-rust.config");
const DEBUG: &str = include_str!("../configs/debug.config");
const ARCH_X86_64: &str = include_str!("../configs/arch-x86_64.config");
const ARCH_ARM64: &str = include_str!("../configs/arch-arm64.config");
const ARCH_ARM: &str = include_str!("../configs/arch-arm.config");

impl Flavour {
    /// An x86_64 flavour (the benchmark's and KUnit's architecture).
    pub fn x86(imp: Impl, debug: bool) -> Self {
        Flavour {
            imp,
            debug,
            arch: Arch::X86_64,
        }
    }

    pub fn name(&self) -> String {
        let mut n = match self.imp {
            Impl::C => "c",
            Impl::Rust => "rust",
        }
        .to_string();
        match self.arch {
            Arch::X86_64 => {}
            Arch::Arm64 => n.push_str("-arm64"),
            Arch::Arm => n.push_str("-arm"),
        }
        if self.debug {
            n.push_str("-debug");
        }
        n
    }

    /// The fragments in merge order. 32-bit arm has no guest, only KUnit at boot: its fragment
    /// stands alone.
    pub fn fragments(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = if self.arch == Arch::Arm {
            vec![self.arch.fragment()]
        } else {
            vec![("guest.config", GUEST), self.arch.fragment()]
        };
        v.push(match self.imp {
            Impl::C => ("impl-c.config", IMPL_C),
            Impl::Rust => ("impl-rust.config", IMPL_RUST),
        });
        if self.debug {
            v.push(("debug.config", DEBUG));
        }
        v
    }

    pub fn merged(&self) -> Result<Fragment> {
        let mut f = Fragment::default();
        for (name, text) in self.fragments() {
            f.merge(name, text)?;
        }
        Ok(f)
    }

    pub fn dir(&self) -> PathBuf {
        paths::build().join(self.name())
    }

    /// The kernel image QEMU boots (`bzImage` on x86_64, `Image` on arm64, `zImage` on arm).
    pub fn bzimage(&self) -> PathBuf {
        self.dir().join(self.arch.image().1)
    }
}

/// Fails clearly when the tree has no `config KSM_RUST` yet.
pub fn ensure_impl_available(tree: &Path, imp: Impl) -> Result<()> {
    if imp == Impl::Rust {
        let kconfig = fs::read_to_string(tree.join("mm/Kconfig")).unwrap_or_default();
        if !kconfig.lines().any(|l| l.trim() == "config KSM_RUST") {
            bail!(
                "--impl rust: CONFIG_KSM_RUST does not exist yet in this series (mm/Kconfig has no \
                 `config KSM_RUST`; the Rust implementation is still to be written). Use --impl c."
            );
        }
    }
    Ok(())
}

/// Environment for every kernel make: ccache in our cache, paths relative to
/// the repository so that a fresh clone elsewhere still hits the cache.
pub fn make_cmd(pin: &Pin, tree: &Path) -> Command {
    make_cmd_arch(pin, tree, Arch::X86_64)
}

/// [`make_cmd`] for `arch`: LLVM cross-builds without a `CROSS_COMPILE`.
pub fn make_cmd_arch(pin: &Pin, tree: &Path, arch: Arch) -> Command {
    let mut c = Command::new("make");
    c.arg("-C").arg(tree).arg(pin.llvm_make_arg());
    if let Some(a) = arch.make_arch() {
        c.arg(format!("ARCH={a}"));
    }
    let ccache = paths::cache().join("ccache");
    if ui::have("ccache") {
        c.arg(format!("CC=ccache clang-{}", pin.tools.llvm));
        c.env("CCACHE_DIR", &ccache)
            .env("CCACHE_BASEDIR", paths::repo())
            .env("CCACHE_NOHASHDIR", "1")
            // Kbuild maps the source path away with these (so objects do not
            // depend on where the tree is); keep their absolute values out of
            // the hash too, or a clone at another path never hits.
            .env(
                "CCACHE_IGNOREOPTIONS",
                "-fmacro-prefix-map=* -ffile-prefix-map=* -fdebug-prefix-map=*",
            )
            .env("CCACHE_MAXSIZE", "5G");
    }
    c
}

pub fn jobs() -> String {
    format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    )
}

/// Configures and builds `bzImage` for a flavour; returns its path.
pub fn build(pin: &Pin, tree: &Path, fl: Flavour, clippy: bool) -> Result<PathBuf> {
    ensure_impl_available(tree, fl.imp)?;
    let dir = fl.dir();
    fs::create_dir_all(&dir)?;
    let step = Step::start(format!("build kernel [{}]", fl.name()));
    let mut merged = fl.merged()?;
    if fl.imp == Impl::Rust {
        // The KUnit suites of the series run at boot of every Rust guest
        // (selftests.rs parses their KTAP), on each architecture.
        let kunit = fs::read_to_string(tree.join(crate::kunit::KUNITCONFIG))
            .with_context(|| format!("the series has no {}", crate::kunit::KUNITCONFIG))?;
        merged.merge(crate::kunit::KUNITCONFIG, &kunit)?;
        merged.merge(
            "build.rs",
            "CONFIG_KUNIT_DEFAULT_ENABLED=y\nCONFIG_KUNIT_AUTORUN_ENABLED=y\n",
        )?;
    }
    for (sym, old, new, origin) in &merged.overrides {
        ui::info(format!("    {origin}: {sym} {old} -> {new}"));
    }
    let allconfig = dir.join("ksm-rs.allconfig");
    fs::write(&allconfig, merged.render())?;
    // Resolve into a scratch file; only replace .config when it changed, so an
    // unchanged flavour rebuilds nothing.
    let scratch = dir.join(".config.ksm-rs-new");
    let mut cfg = make_cmd_arch(pin, tree, fl.arch);
    cfg.arg(format!("O={}", dir.display()))
        .arg(format!("KCONFIG_ALLCONFIG={}", allconfig.display()))
        .env("KCONFIG_CONFIG", ".config.ksm-rs-new")
        .arg("allnoconfig");
    ui::run_logged(&mut cfg, &step, &dir.join("config.log"))?;
    let resolved = fs::read_to_string(&scratch).context("allnoconfig wrote no config")?;
    let bad = merged.verify(&resolved);
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("  CONFIG: {b}");
        }
        bail!(
            "Kconfig did not honour {} line(s) of the [{}] fragments",
            bad.len(),
            fl.name()
        );
    }
    if fs::read_to_string(dir.join(".config")).ok().as_deref() != Some(&resolved) {
        fs::rename(&scratch, dir.join(".config"))?;
    } else {
        fs::remove_file(&scratch)?;
    }
    let mut mk = make_cmd_arch(pin, tree, fl.arch);
    mk.arg(format!("O={}", dir.display())).arg(jobs());
    if clippy {
        mk.arg("CLIPPY=1");
    }
    mk.arg(fl.arch.image().0);
    ui::run_logged(&mut mk, &step, &dir.join("build.log"))?;
    let img = fl.bzimage();
    if !img.exists() {
        bail!("build finished but {} is missing", img.display());
    }
    // Warnings from rustc/clippy in our code are errors for the project.
    let log = fs::read_to_string(dir.join("build.log")).unwrap_or_default();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("warning:") && !l.contains("ccache"))
        .collect();
    if !warns.is_empty() {
        ui::warn(format!(
            "{} compiler warning(s) in {}:",
            warns.len(),
            dir.join("build.log").display()
        ));
        for w in warns.iter().take(20) {
            eprintln!("    {w}");
        }
    }
    step.done();
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_fragments_merge() {
        let c = Flavour::x86(Impl::C, false).merged().unwrap();
        assert_eq!(
            c.values["CONFIG_KSM"],
            crate::kconfig::Value::Set("y".into())
        );
        assert_eq!(c.values["CONFIG_KSM_RUST"], crate::kconfig::Value::Unset);
        let r = Flavour::x86(Impl::Rust, true).merged().unwrap();
        assert_eq!(
            r.values["CONFIG_KSM_RUST"],
            crate::kconfig::Value::Set("y".into())
        );
        assert_eq!(
            r.values["CONFIG_KASAN"],
            crate::kconfig::Value::Set("y".into())
        );
        assert!(r.values.contains_key("CONFIG_RUST"));
        assert_eq!(Flavour::x86(Impl::Rust, true).name(), "rust-debug");
        let a = Flavour {
            imp: Impl::Rust,
            debug: false,
            arch: Arch::Arm64,
        };
        assert_eq!(a.name(), "rust-arm64");
        assert!(a.bzimage().ends_with("rust-arm64/arch/arm64/boot/Image"));
        let m = a.merged().unwrap();
        assert_eq!(
            m.values["CONFIG_ARM64_MTE"],
            crate::kconfig::Value::Set("y".into())
        );
        assert!(!m.values.contains_key("CONFIG_X86_MCE"));
        let a = Flavour {
            imp: Impl::Rust,
            debug: false,
            arch: Arch::Arm,
        };
        assert_eq!(a.name(), "rust-arm");
        assert!(a.bzimage().ends_with("rust-arm/arch/arm/boot/zImage"));
        let m = a.merged().unwrap();
        // 32-bit: not the 64-bit guest's fragment.
        assert!(!m.values.contains_key("CONFIG_64BIT"));
        assert_eq!(
            m.values["CONFIG_ARM_LPAE"],
            crate::kconfig::Value::Set("y".into())
        );
        assert_eq!(
            m.values["CONFIG_KSM_RUST"],
            crate::kconfig::Value::Set("y".into())
        );
    }

    #[test]
    fn rust_impl_needs_kconfig_symbol() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("mm")).unwrap();
        fs::write(d.path().join("mm/Kconfig"), "config KSM\n\tbool\n").unwrap();
        let e = ensure_impl_available(d.path(), Impl::Rust).unwrap_err();
        assert!(e.to_string().contains("does not exist yet"));
        assert!(ensure_impl_available(d.path(), Impl::C).is_ok());
        fs::write(
            d.path().join("mm/Kconfig"),
            "config KSM\n\tbool\n\nconfig KSM_RUST\n\tbool\n",
        )
        .unwrap();
        assert!(ensure_impl_available(d.path(), Impl::Rust).is_ok());
    }
}
