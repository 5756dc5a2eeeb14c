//! The guest image: statically linked selftests built from the kernel tree,
//! busybox, an init that runs a plan and powers off, packed as a newc cpio.

use crate::build::{Arch, Flavour};
use crate::pin::Pin;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const INIT: &str = include_str!("../guest/init.sh");
const PLAN_LIB: &str = include_str!("../guest/plan-lib.sh");

/// A program to put in the image: `tools/testing/selftests/<dir>/<name>.c`
/// (with the mm selftest helpers) or one of our guest programs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Program {
    Selftest {
        dir: &'static str,
        name: &'static str,
        libs: &'static [&'static str],
    },
    Guest {
        name: &'static str,
        source: &'static str,
    },
}

impl Program {
    pub fn name(&self) -> &'static str {
        match self {
            Program::Selftest { name, .. } | Program::Guest { name, .. } => name,
        }
    }
}

/// Compiles one program statically with the tree's uapi headers (`tree` and
/// `hdr`; our guest programs can do with the libc's).
fn compile(
    tree: Option<&Path>,
    hdr: Option<&Path>,
    out_dir: &Path,
    p: &Program,
    arch: Arch,
) -> Result<PathBuf> {
    let out = out_dir.join(p.name());
    let mut cc = Command::new(arch.gcc());
    cc.args([
        "-static",
        "-O2",
        "-Wall",
        "-U_FORTIFY_SOURCE",
        "-D_GNU_SOURCE",
    ]);
    match p {
        Program::Selftest { dir, name, libs } => {
            let (Some(tree), Some(hdr)) = (tree, hdr) else {
                bail!("{name}: a selftest needs the kernel tree and its headers");
            };
            let st = tree.join("tools/testing/selftests");
            let d = st.join(dir);
            cc.arg("-I").arg(&st).arg("-I").arg(&d).arg("-I").arg(tree);
            cc.arg("-isystem")
                .arg(hdr)
                .arg("-isystem")
                .arg(tree.join("tools/include/uapi"));
            cc.arg(d.join(format!("{name}.c")));
            if *dir == "mm" {
                cc.arg(d.join("vm_util.c"))
                    .arg(d.join("hugepage_settings.c"));
            }
            cc.args(["-lrt", "-lpthread", "-lm"]);
            if arch == Arch::Arm64 {
                // libnuma from Debian's arm64 package (see provision.rs).
                let root = crate::provision::arm64_root();
                cc.arg("-I").arg(root.join("usr/include"));
                cc.arg("-L").arg(root.join("usr/lib/aarch64-linux-gnu"));
            }
            for l in *libs {
                cc.arg(format!("-l{l}"));
            }
        }
        Program::Guest { name, source } => {
            let src = out_dir.join(format!("{name}.c"));
            fs::write(&src, source)?;
            if let Some(hdr) = hdr {
                cc.arg("-isystem").arg(hdr);
            }
            cc.arg(&src);
        }
    }
    cc.arg("-o").arg(&out);
    let o = cc
        .output()
        .with_context(|| format!("cannot run gcc for {}", p.name()))?;
    if !o.status.success() {
        bail!(
            "building {} failed:\n{}",
            p.name(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(out)
}

/// A newc ("070701") cpio archive with fixed ownership and times.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            namesize as u32,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    pub fn file(&mut self, name: &str, data: &[u8], exec: bool) {
        self.entry(name, if exec { 0o100755 } else { 0o100644 }, data);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }
}

/// Builds `build/<flavour>/<image>.cpio` holding `programs` and `plan` (a
/// shell fragment that calls `run_test`).
pub fn image(
    pin: &Pin,
    tree: &Path,
    fl: Flavour,
    image: &str,
    programs: &[Program],
    plan: &str,
) -> Result<PathBuf> {
    let step = Step::start(format!(
        "build guest image `{image}` ({} programs)",
        programs.len()
    ));
    let dir = fl.dir();
    // uapi headers of this very tree, as the selftests' KHDR_INCLUDES.
    let mut hdrs = crate::build::make_cmd_arch(pin, tree, fl.arch);
    hdrs.arg(format!("O={}", dir.display())).arg("headers");
    ui::run_logged(&mut hdrs, &step, &dir.join("headers.log"))?;
    let hdr = dir.join("usr/include");
    let out = pack(&dir, image, programs, plan, Some(tree), Some(&hdr), fl.arch)?;
    step.done();
    Ok(out)
}

/// Packs `<dir>/<image>.cpio` holding `programs` (compiled into
/// `<dir>/guest-bin`) and `plan`, for `arch`; selftest programs need `tree`
/// and `hdr`.
pub fn pack(
    dir: &Path,
    image: &str,
    programs: &[Program],
    plan: &str,
    tree: Option<&Path>,
    hdr: Option<&Path>,
    arch: Arch,
) -> Result<PathBuf> {
    let bin_dir = dir.join("guest-bin");
    fs::create_dir_all(&bin_dir)?;
    let mut cpio = Cpio::default();
    for d in ["bin", "tests", "proc", "sys", "dev", "tmp", "run", "etc"] {
        cpio.dir(d);
    }
    let busybox = match arch {
        Arch::X86_64 => PathBuf::from("/bin/busybox"),
        Arch::Arm64 => crate::provision::arm64_root().join("bin/busybox"),
        Arch::Arm => bail!("32-bit arm guests have no user space (`cargo xtask kunit --arch arm`)"),
    };
    if !busybox.exists() {
        bail!(
            "{} is missing (`cargo xtask setup`{})",
            busybox.display(),
            if arch == Arch::Arm64 {
                " --arch arm64"
            } else {
                ""
            }
        );
    }
    cpio.file("bin/busybox", &fs::read(&busybox)?, true);
    cpio.file("init", INIT.as_bytes(), true);
    cpio.file("plan.sh", format!("{PLAN_LIB}\n{plan}").as_bytes(), false);
    let uniq: BTreeSet<&Program> = programs.iter().collect();
    for p in uniq {
        let exe = compile(tree, hdr, &bin_dir, p, arch)?;
        cpio.file(&format!("tests/{}", p.name()), &fs::read(&exe)?, true);
    }
    let out = dir.join(format!("{image}.cpio"));
    let mut f = fs::File::create(&out)?;
    f.write_all(&cpio.finish())?;
    ui::info(format!(
        "    {} ({} KiB)",
        out.display(),
        fs::metadata(&out)?.len() / 1024
    ));
    Ok(out)
}

/// Shell-quotes one word for the plan.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back (name, mode, data) entries of a newc archive.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let total = b.len();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert_eq!((total - b.len() + next) % 4, 0);
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return v;
            }
            v.push((name, mode, data));
        }
    }

    #[test]
    fn cpio_roundtrip() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", b"#!/bin/sh\n", true);
        c.file("bin/x", b"12345", false);
        let v = parse(&c.finish());
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(v[1], ("init".into(), 0o100755, b"#!/bin/sh\n".to_vec()));
        assert_eq!(v[2], ("bin/x".into(), 0o100644, b"12345".to_vec()));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("-s"), "-s");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
