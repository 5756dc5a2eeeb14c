//! The base kernel: download through a private apt configuration, verify,
//! extract atomically and turn into a git commit that is the same on every
//! machine (fixed author, committer and dates), so `patches/` always names the
//! same `base-commit`.

use crate::pin::{in_series, upstream_version, Pin};
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Identity and date of the synthetic base commit.
const BASE_IDENT: [(&str, &str); 6] = [
    ("GIT_AUTHOR_NAME", "ksm-rs base"),
    ("GIT_AUTHOR_EMAIL", "base@ksm-rs.invalid"),
    ("GIT_AUTHOR_DATE", "2000-01-01T00:00:00Z"),
    ("GIT_COMMITTER_NAME", "ksm-rs base"),
    ("GIT_COMMITTER_EMAIL", "base@ksm-rs.invalid"),
    ("GIT_COMMITTER_DATE", "2000-01-01T00:00:00Z"),
];

/// A ready base tree: a git repository whose `HEAD` is the base commit.
pub struct BaseTree {
    pub repo: PathBuf,
    pub commit: String,
    pub version: String,
}

fn apt_root() -> PathBuf {
    crate::paths::cache().join("apt")
}

/// apt options that keep every bit of state private to our cache directory.
fn apt_opts(pin: &Pin) -> Result<Vec<String>> {
    let line = format!(
        "deb [signed-by={}] {} {} {}\n",
        pin.base.keyring, pin.base.archive, pin.base.suite, pin.base.component
    );
    private_apt(&apt_root(), &line)
}

/// apt options for a private configuration under `root` with one sources
/// line: its own lists and cache, no system sources or installed packages.
pub fn private_apt(root: &Path, sources_line: &str) -> Result<Vec<String>> {
    for d in ["lists/partial", "cache/archives/partial", "etc"] {
        fs::create_dir_all(root.join(d))?;
    }
    let list = root.join("etc/sources.list");
    fs::write(&list, sources_line)?;
    Ok(vec![
        format!("Dir::Etc::SourceList={}", list.display()),
        "Dir::Etc::SourceParts=/dev/null".into(),
        format!("Dir::State::Lists={}", root.join("lists").display()),
        format!("Dir::Cache={}", root.join("cache").display()),
        "Dir::State::Status=/dev/null".into(),
        "APT::Sandbox::User=root".into(),
        "Acquire::Retries=3".into(),
    ])
}

fn apt(prog: &str, opts: &[String]) -> Command {
    let mut c = Command::new(prog);
    for o in opts {
        c.arg("-o").arg(o);
    }
    c
}

/// Parses `apt-cache policy` output for the candidate and all listed versions.
pub fn parse_policy(text: &str) -> (Option<String>, Vec<String>) {
    let mut cand = None;
    let mut versions = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix("Candidate:") {
            let c = c.trim();
            if c != "(none)" {
                cand = Some(c.to_string());
            }
        } else if t.starts_with("Version table:") {
            in_table = true;
        } else if in_table {
            let t = t.trim_start_matches("*** ");
            // Version lines have two fields ("VERSION PRIORITY"); origin lines more.
            let f: Vec<&str> = t.split_whitespace().collect();
            if f.len() == 2 && f[1].bytes().all(|b| b.is_ascii_digit()) {
                versions.push(f[0].to_string());
            }
        }
    }
    (cand, versions)
}

/// Decides which version to fetch: the pin, or the newest of the same series
/// (with a warning) when the archive no longer serves the pinned one.
pub fn choose_version(
    pin: &Pin,
    candidate: Option<&str>,
    served: &[String],
) -> Result<(String, bool)> {
    if served.iter().any(|v| v == &pin.base.version) {
        return Ok((pin.base.version.clone(), true));
    }
    let Some(c) = candidate else {
        bail!(
            "{} is not served by {} {} at all (pinned {})",
            pin.base.package,
            pin.base.archive,
            pin.base.suite,
            pin.base.version
        );
    };
    match upstream_version(c) {
        Some(u) if in_series(&u, &pin.base.series) => Ok((c.to_string(), false)),
        _ => bail!(
            "newest served {} is {c}, not a {}.y version",
            pin.base.package,
            pin.base.series
        ),
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn base_dir() -> PathBuf {
    crate::paths::cache().join("base")
}

fn dir_name(version: &str) -> String {
    version.replace(['~', '+', ':'], "_")
}

/// Returns the base tree, fetching and building it when it is not cached.
pub fn ensure(pin: &Pin) -> Result<BaseTree> {
    // A cached tree of the pinned version needs no network at all.
    if let Some(t) = cached(&pin.base.version)? {
        return Ok(t);
    }
    let step = Step::start(format!(
        "fetch base kernel {} {}",
        pin.base.package, pin.base.version
    ));
    let opts = apt_opts(pin)?;
    let mut upd = apt("apt-get", &opts);
    upd.args(["-q", "update"]);
    ui::run_logged(&mut upd, &step, &apt_root().join("update.log"))
        .context("private apt-get update failed (is deb.debian.org reachable?)")?;
    let mut pol = apt("apt-cache", &opts);
    pol.args(["policy", &pin.base.package]);
    let (cand, served) = parse_policy(&ui::output(&mut pol)?);
    let (version, pinned) = choose_version(pin, cand.as_deref(), &served)?;
    if !pinned {
        ui::warn(format!(
            "\n\n    !!! pinned {} {} is no longer served; using the newest {}.y: {version} !!!\n    \
             !!! checksums cannot be checked against the pin; update kernel-base.toml !!!\n",
            pin.base.package, pin.base.version, pin.base.series
        ));
        if let Some(t) = cached(&version)? {
            step.done();
            return Ok(t);
        }
    }
    let dl = crate::paths::cache().join("downloads");
    fs::create_dir_all(&dl)?;
    let deb = dl.join(format!(
        "{}_{}_all.deb",
        pin.base.package,
        version.replace(':', "%3a")
    ));
    let deb_ok = deb.exists() && (!pinned || sha256_file(&deb)? == pin.base.deb_sha256);
    if !deb_ok {
        let _ = fs::remove_file(&deb);
        ui::info(format!(
            "    downloading {} ({version}) ...",
            pin.base.package
        ));
        let mut get = apt("apt-get", &opts);
        get.current_dir(&dl)
            .args(["-q", "download", &format!("{}={version}", pin.base.package)]);
        ui::run_logged(&mut get, &step, &dl.join("download.log"))?;
        if !deb.exists() {
            bail!("apt-get download did not produce {}", deb.display());
        }
    }
    let deb_sha = sha256_file(&deb)?;
    if pinned && deb_sha != pin.base.deb_sha256 {
        let _ = fs::remove_file(&deb);
        bail!(
            "{}: sha256 {deb_sha} does not match the pinned {} — refusing to use it",
            deb.display(),
            pin.base.deb_sha256
        );
    }
    ui::info(format!(
        "    {} sha256 {deb_sha} ok",
        deb.file_name().unwrap_or_default().to_string_lossy()
    ));
    let t = extract(pin, &deb, &version, pinned, &step)?;
    step.done();
    Ok(t)
}

fn cached(version: &str) -> Result<Option<BaseTree>> {
    let repo = base_dir().join(dir_name(version));
    if !repo.join(".git").is_dir() {
        return Ok(None);
    }
    let commit = ui::output(Command::new("git").arg("-C").arg(&repo).args([
        "rev-parse",
        "--verify",
        "HEAD^{commit}",
    ]))?;
    Ok(Some(BaseTree {
        repo,
        commit,
        version: version.to_string(),
    }))
}

/// Extracts the tarball into a scratch dir, commits it, then renames it into
/// place: an interrupted run leaves only a `*.partial-*` dir, removed next time.
fn extract(pin: &Pin, deb: &Path, version: &str, pinned: bool, step: &Step) -> Result<BaseTree> {
    let bd = base_dir();
    fs::create_dir_all(&bd)?;
    for e in fs::read_dir(&bd)? {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".partial-"))
        {
            ui::info(format!("    removing leftover {}", p.display()));
            fs::remove_dir_all(&p)?;
        }
    }
    let scratch = bd.join(format!(
        "{}.partial-{}",
        dir_name(version),
        std::process::id()
    ));
    fs::create_dir_all(&scratch)?;
    let tarball = scratch.join("source.tar.xz");
    ui::info("    extracting the source tarball from the .deb ...");
    let tb_member = format!("./{}", pin.base.tarball.trim_start_matches("./"));
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" > "$3""#)
        .args([
            "sh".as_ref(),
            deb.as_os_str(),
            tb_member.as_ref(),
            tarball.as_os_str(),
        ]);
    ui::run(&mut sh)?;
    let tb_sha = sha256_file(&tarball)?;
    if pinned && tb_sha != pin.base.tarball_sha256 {
        bail!(
            "{}: sha256 {tb_sha} does not match the pinned {}",
            pin.base.tarball,
            pin.base.tarball_sha256
        );
    }
    ui::info(format!("    {} sha256 {tb_sha} ok", pin.base.tarball));
    let src = scratch.join("linux");
    fs::create_dir_all(&src)?;
    ui::info("    unpacking ...");
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("--strip-components=1");
    ui::run_logged(&mut tar, step, &scratch.join("tar.log"))?;
    fs::remove_file(&tarball)?;
    ui::info("    committing the base tree ...");
    let git = |args: &[&str]| -> Command {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(&src)
            .args(["-c", "core.autocrlf=false", "-c", "core.fileMode=true"]);
        c.args(args);
        for (k, v) in BASE_IDENT {
            c.env(k, v);
        }
        c
    };
    ui::run(&mut git(&["init", "-q", "-b", "base"]))?;
    ui::run_logged(
        &mut git(&["add", "-A", "-f", "."]),
        step,
        &scratch.join("git-add.log"),
    )?;
    let msg = format!(
        "Linux {} ({} {version})",
        upstream_version(version).unwrap_or_default(),
        pin.base.package
    );
    ui::run(&mut git(&["commit", "-q", "--no-verify", "-m", &msg]))?;
    ui::run(&mut git(&["tag", "ksm-rs-base"]))?;
    let final_dir = bd.join(dir_name(version));
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&src, &final_dir)?;
    fs::remove_dir_all(&scratch)?;
    cached(version)?.context("base tree vanished after creation")
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "linux-source-7.3:
  Installed: (none)
  Candidate: 7.3.6-1~bpo13+1
  Version table:
     7.3.6-1~bpo13+1 100
        100 http://deb.debian.org/debian trixie-backports/main amd64 Packages
     7.3.4-1~bpo13+1 100
        100 http://deb.debian.org/debian trixie-backports/main amd64 Packages
";

    fn pin() -> Pin {
        Pin::parse(include_str!("../../kernel-base.toml")).unwrap()
    }

    #[test]
    fn policy_parsing() {
        let (c, v) = parse_policy(POLICY);
        assert_eq!(c.as_deref(), Some("7.3.6-1~bpo13+1"));
        assert_eq!(v, vec!["7.3.6-1~bpo13+1", "7.3.4-1~bpo13+1"]);
        let (c, v) =
            parse_policy("foo:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n");
        assert!(c.is_none() && v.is_empty());
    }

    #[test]
    fn pinned_version_preferred() {
        let (c, v) = parse_policy(POLICY);
        let (ver, pinned) = choose_version(&pin(), c.as_deref(), &v).unwrap();
        assert_eq!(ver, "7.3.4-1~bpo13+1");
        assert!(pinned);
    }

    #[test]
    fn fallback_to_newest_same_series() {
        let (ver, pinned) =
            choose_version(&pin(), Some("7.3.9-1~bpo13+1"), &["7.3.9-1~bpo13+1".into()]).unwrap();
        assert_eq!(ver, "7.3.9-1~bpo13+1");
        assert!(!pinned);
        assert!(choose_version(&pin(), Some("7.4.1-1"), &["7.4.1-1".into()]).is_err());
        assert!(choose_version(&pin(), None, &[]).is_err());
    }

    #[test]
    fn sha256_of_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
