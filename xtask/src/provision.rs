//! `cargo xtask setup`: installs what a fresh Debian 12 machine lacks. As
//! root it installs; otherwise it prints the exact commands and stops.

use crate::pin::Pin;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages the project needs (the LLVM ones take the pinned suffix).
pub fn packages(pin: &Pin) -> Vec<String> {
    let v = &pin.tools.llvm;
    let mut p: Vec<String> = [
        format!("clang-{v}"),
        format!("lld-{v}"),
        format!("llvm-{v}"),
        format!("libclang-{v}-dev"),
    ]
    .into();
    p.extend(
        [
            "make",
            "gcc",
            "libc6-dev",
            "flex",
            "bison",
            "bc",
            "libelf-dev",
            "libssl-dev",
            "cpio",
            "xz-utils",
            "perl",
            "python3",
            "git",
            "qemu-system-x86",
            "busybox-static",
            "libnuma-dev",
            "ccache",
            "dpkg",
            // the text font of `cargo xtask bench`'s plot
            "fonts-dejavu-core",
        ]
        .map(String::from),
    );
    p
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn is_root() -> bool {
    ui::output(Command::new("id").arg("-u")).is_ok_and(|u| u == "0")
}

/// Parses `bindgen 0.72.1` into (0, 72, 1).
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let v = s
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut it = v.split(['.', '-']).map(|x| x.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    home.join("bin").join(name)
}

pub fn setup(pin: &Pin) -> Result<()> {
    let step = Step::start("setup: check and install the toolchain");
    let missing: Vec<String> = packages(pin)
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    let root = is_root();
    let mut todo: Vec<String> = Vec::new();
    if !missing.is_empty() {
        let cmd = format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}", missing.join(" "));
        if root {
            ui::info(format!("    installing: {}", missing.join(" ")));
            let mut c = Command::new("sh");
            c.args(["-c", &cmd]);
            ui::run_logged(&mut c, &step, &std::env::temp_dir().join("ksm-rs-apt.log"))?;
        } else {
            todo.push(format!("sudo sh -c '{cmd}'"));
        }
    }
    // rust-src for the toolchain rust-toolchain.toml selects.
    let sysroot = ui::output(Command::new("rustc").args(["--print", "sysroot"]))?;
    if !PathBuf::from(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        ui::info("    rustup component add rust-src");
        ui::run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }
    // bindgen-cli at the pinned version (PATH or ~/.cargo/bin).
    let want = parse_version(&pin.tools.bindgen).expect("pin checked");
    let have = ["bindgen".into(), cargo_bin("bindgen")]
        .iter()
        .find_map(|b: &PathBuf| ui::output(Command::new(b).arg("--version")).ok())
        .and_then(|o| parse_version(&o));
    if have != Some(want) {
        ui::info(format!(
            "    cargo install --locked bindgen-cli --version {} (have {have:?})",
            pin.tools.bindgen
        ));
        let mut c = Command::new("cargo");
        c.args([
            "install",
            "--locked",
            "bindgen-cli",
            "--version",
            &pin.tools.bindgen,
        ]);
        ui::run_logged(
            &mut c,
            &step,
            &std::env::temp_dir().join("ksm-rs-bindgen.log"),
        )?;
    }
    if !todo.is_empty() {
        eprintln!("Not root: run these, then re-run the command:");
        for t in &todo {
            eprintln!("    {t}");
        }
        bail!("missing packages: {}", missing.join(" "));
    }
    step.done();
    Ok(())
}

/// Host packages for arm64 guests: a cross libc for static guest programs
/// (the kernel itself is cross-built by LLVM).
const ARM64_HOST_PACKAGES: [&str; 2] = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];

/// The arm64 emulator, from bookworm-backports and unpacked into
/// [`arm64_qemu_root`]: bookworm's QEMU 7.2 keeps one MTE tag per page pair
/// instead of one per 16-byte granule (its `allocation_tag_mem()` drops the
/// page offset; fixed in QEMU 8.0 by "target/arm: Fix physical address
/// resolution for MTE"), so tagged memory cannot be tested on it.
const ARM64_QEMU_SUITE: &str = "bookworm-backports";
const ARM64_QEMU_PACKAGES: [&str; 3] =
    ["qemu-system-arm", "qemu-system-common", "qemu-system-data"];

/// Where the backported QEMU is unpacked.
pub fn arm64_qemu_root() -> PathBuf {
    crate::paths::cache().join("arm64-qemu")
}

/// The arm64 emulator (see [`ARM64_QEMU_SUITE`]).
pub fn arm64_qemu() -> PathBuf {
    arm64_qemu_root().join("usr/bin/qemu-system-aarch64")
}

/// Downloads the QEMU packages through a private apt configuration (the
/// system's sources and installed QEMU are not touched) and unpacks them.
fn fetch_arm64_qemu(step: &Step) -> Result<()> {
    let apt = crate::paths::cache().join("apt-arm64-qemu");
    std::fs::create_dir_all(apt.join("debs"))?;
    let mut opts = crate::base::private_apt(
        &apt,
        &format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian {ARM64_QEMU_SUITE} main\n"
        ),
    )?;
    opts.push("APT::Architecture=amd64".into());
    let apt_get = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        for o in &opts {
            c.arg("-o").arg(o);
        }
        c.args(args).current_dir(apt.join("debs"));
        c
    };
    ui::info(format!(
        "    fetching {} from {ARM64_QEMU_SUITE}",
        ARM64_QEMU_PACKAGES.join(" ")
    ));
    ui::run_logged(
        &mut apt_get(&["update"]),
        step,
        &std::env::temp_dir().join("ksm-rs-arm64-qemu-update.log"),
    )?;
    let debs = apt.join("debs");
    for e in std::fs::read_dir(&debs)? {
        std::fs::remove_file(e?.path())?;
    }
    let mut args = vec!["download"];
    args.extend(ARM64_QEMU_PACKAGES);
    ui::run_logged(
        &mut apt_get(&args),
        step,
        &std::env::temp_dir().join("ksm-rs-arm64-qemu-download.log"),
    )?;
    let root = arm64_qemu_root();
    let _ = std::fs::remove_dir_all(&root);
    for e in std::fs::read_dir(&debs)? {
        ui::run_logged(
            Command::new("dpkg-deb").arg("-x").arg(e?.path()).arg(&root),
            step,
            &std::env::temp_dir().join("ksm-rs-arm64-qemu-unpack.log"),
        )?;
    }
    let v = arm64_qemu_version();
    if let Err(e) = &v {
        // Never leave a QEMU behind that the fast path would take.
        let _ = std::fs::remove_dir_all(&root);
        bail!("{ARM64_QEMU_SUITE}: {e:#}");
    }
    Ok(())
}

/// The 32-bit arm emulator, from the same packages as [`arm64_qemu`].
pub fn arm_qemu() -> PathBuf {
    arm64_qemu_root().join("usr/bin/qemu-system-arm")
}

/// What `--arch arm` needs: the emulator only (its guest has no user space, and LLVM
/// cross-builds the kernel).
pub fn setup_arm() -> Result<()> {
    let step = Step::start("setup: 32-bit arm emulator");
    if arm64_qemu_version().is_err() || !arm_qemu().exists() {
        if !is_root() {
            bail!("--arch arm needs root once, to fetch QEMU from {ARM64_QEMU_SUITE}");
        }
        fetch_arm64_qemu(&step)?;
    }
    step.done();
    Ok(())
}

/// The unpacked QEMU's version line, if it runs and is 8.0 or later.
fn arm64_qemu_version() -> Result<String> {
    let v = ui::output(Command::new(arm64_qemu()).arg("--version"))
        .context("the unpacked qemu-system-aarch64 does not run")?;
    let major = parse_version(&v).map_or(0, |v| v.0);
    if major < 8 {
        bail!("QEMU {major}; MTE needs 8.0 or later");
    }
    Ok(v.lines().next().unwrap_or_default().to_string())
}

/// Debian's arm64 packages unpacked into [`arm64_root`]: the guest's
/// busybox, and libnuma for the selftests that link it.
const ARM64_TARGET_PACKAGES: [&str; 2] = ["busybox-static:arm64", "libnuma-dev:arm64"];

/// Where the arm64 packages are unpacked (not installed: they would replace
/// the host's busybox).
pub fn arm64_root() -> PathBuf {
    crate::paths::cache().join("arm64-root")
}

/// What `--arch arm64` needs besides [`setup`]: host packages, and the arm64
/// busybox and libnuma unpacked into [`arm64_root`].
pub fn setup_arm64() -> Result<()> {
    let step = Step::start("setup: arm64 cross tools and guest packages");
    let missing: Vec<&str> = ARM64_HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    let root = arm64_root();
    let unpacked = root.join("bin/busybox").exists()
        && root.join("usr/lib/aarch64-linux-gnu/libnuma.a").exists();
    let have_qemu = arm64_qemu_version().is_ok();
    if missing.is_empty() && unpacked && have_qemu {
        if let Ok(v) = arm64_qemu_version() {
            ui::info(format!("    arm64 guests run on {v}"));
        }
        step.done();
        return Ok(());
    }
    if !is_root() {
        bail!(
            "--arch arm64 needs root once, to install {} and to fetch arm64 packages",
            ARM64_HOST_PACKAGES.join(" ")
        );
    }
    if !have_qemu {
        fetch_arm64_qemu(&step)?;
    }
    if let Ok(v) = arm64_qemu_version() {
        ui::info(format!("    arm64 guests run on {v}"));
    }
    let log = std::env::temp_dir().join("ksm-rs-apt-arm64.log");
    let foreign =
        ui::output(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
    let mut cmd = String::new();
    if !foreign.lines().any(|l| l.trim() == "arm64") {
        cmd.push_str("dpkg --add-architecture arm64 && ");
    }
    // Also before the arm64 downloads: the lists may be old or purged.
    cmd.push_str("apt-get update && ");
    if !missing.is_empty() {
        ui::info(format!("    installing: {}", missing.join(" ")));
        cmd.push_str(&format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {} && ",
            missing.join(" ")
        ));
    }
    cmd.push_str("true");
    ui::run_logged(Command::new("sh").args(["-c", &cmd]), &step, &log)?;
    if !unpacked {
        let debs = crate::paths::cache().join("arm64-debs");
        let _ = std::fs::remove_dir_all(&debs);
        std::fs::create_dir_all(&debs)?;
        ui::info(format!(
            "    unpacking {} into {}",
            ARM64_TARGET_PACKAGES.join(" "),
            root.display()
        ));
        ui::run_logged(
            Command::new("apt-get")
                .arg("download")
                .args(ARM64_TARGET_PACKAGES)
                .current_dir(&debs),
            &step,
            &std::env::temp_dir().join("ksm-rs-arm64-download.log"),
        )?;
        for e in std::fs::read_dir(&debs)? {
            let deb = e?.path();
            ui::run_logged(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
                &step,
                &std::env::temp_dir().join("ksm-rs-arm64-unpack.log"),
            )?;
        }
    }
    step.done();
    Ok(())
}

/// PATH with ~/.cargo/bin, so the kernel build finds bindgen.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let cb = cargo_bin("");
    if !paths.contains(&cb) {
        paths.push(cb);
    }
    std::env::join_paths(paths).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("bindgen 0.72.1"), Some((0, 72, 1)));
        assert_eq!(parse_version("0.73.2"), Some((0, 73, 2)));
        assert_eq!(parse_version("bindgen"), None);
    }

    #[test]
    fn package_list_uses_pinned_llvm() {
        let pin = Pin::parse(include_str!("../../kernel-base.toml")).unwrap();
        let p = packages(&pin);
        assert!(p.contains(&"clang-19".to_string()) && p.contains(&"libclang-19-dev".to_string()));
        assert!(p.contains(&"busybox-static".to_string()));
    }
}
