//! `cargo xtask setup`: installs what a fresh Debian 12 machine lacks. As
//! root it installs; otherwise it prints the exact commands and stops.

use crate::pin::Pin;
use crate::ui::{self, Step};
use anyhow::{bail, Result};
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
