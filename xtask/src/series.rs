//! The patch series: `tree` (base + `git am patches/*`), `export` (worktree ->
//! `patches/` + mirror dirs, byte-for-byte reproducible) and `check` (the
//! series applies to the pinned base and every mirror dir matches it).

use crate::base::{self, BaseTree};
use crate::paths;
use crate::pin::Pin;
use crate::ui::{self, Step};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// In-tree prefix -> repository mirror dir (`/` written `-`). Longest match wins.
pub const MIRRORS: &[(&str, &str)] = &[
    ("mm/ksm-rs/", "mm-ksm-rs/"),
    ("tools/testing/selftests/", "tools-testing-selftests/"),
    ("rust/kernel/", "rust-kernel/"),
    ("rust/helpers/", "rust-helpers/"),
    ("include/", "include/"),
    ("Documentation/", "Documentation/"),
];

/// Files in a mirror dir that are not part of the series.
const MIRROR_IGNORE: &[&str] = &[".gitkeep"];

pub const COVER: &str = "0000-cover-letter.patch";

/// Where a file the series adds at `tree_path` is mirrored in the repository.
pub fn mirror_of(tree_path: &str) -> Option<String> {
    MIRRORS
        .iter()
        .filter(|(t, _)| tree_path.starts_with(t))
        .max_by_key(|(t, _)| t.len())
        .map(|(t, m)| format!("{m}{}", &tree_path[t.len()..]))
}

/// The series' patch files in order, without the cover letter.
pub fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "patch") && p.file_name().is_some_and(|n| n != COVER)
        })
        .collect();
    v.sort();
    Ok(v)
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    c
}

/// Identity used for commits `git am` creates; the exported patches do not
/// contain it (`--zero-commit`), so any fixed value keeps export reproducible.
fn am_ident(c: &mut Command) -> &mut Command {
    c.args([
        "-c",
        "user.name=ksm-rs tree",
        "-c",
        "user.email=tree@ksm-rs.invalid",
    ])
}

/// `cargo xtask tree`: a fresh kernel tree at `linux/` = base + series.
pub fn tree(pin: &Pin, force: bool) -> Result<()> {
    let base = base::ensure(pin)?;
    let dir = paths::linux();
    if dir.exists() {
        if !force {
            bail!(
                "{} exists; `cargo xtask export` any work in it, then re-run with --force to recreate it from patches/",
                dir.display()
            );
        }
        fs::remove_dir_all(&dir)?;
    }
    let step = Step::start(format!(
        "create kernel tree {} (base {})",
        dir.display(),
        &base.commit[..12]
    ));
    let mut clone = Command::new("git");
    clone
        .args(["clone", "--shared", "-b", "base"])
        .arg(&base.repo)
        .arg(&dir);
    ui::run_logged(&mut clone, &step, &paths::cache().join("clone.log"))?;
    ui::run(git(&dir).args(["checkout", "-q", "-b", "ksm-rs"]))?;
    let patches = patch_files(&paths::patches())?;
    if !patches.is_empty() {
        let mut am = git(&dir);
        am_ident(&mut am)
            .args(["am", "-q", "--committer-date-is-author-date"])
            .args(&patches);
        if let Err(e) = ui::run(&mut am) {
            let _ = ui::run(git(&dir).args(["am", "--abort"]));
            return Err(e.context("the series does not apply to the pinned base"));
        }
    }
    ui::info(format!("    {} patches applied", patches.len()));
    let head = ui::output(git(&dir).args(["rev-parse", "HEAD"]))?;
    fs::write(
        stamp_file(&dir),
        format!("{} {head}\n", series_hash(&patches)?),
    )?;
    step.done();
    Ok(())
}

/// Records which series `linux/` was made from: `<series sha256> <HEAD>`.
fn stamp_file(dir: &Path) -> PathBuf {
    dir.join(".git/ksm-rs-tree")
}

/// sha256 over the names and contents of the patch files.
pub fn series_hash(patches: &[PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in patches {
        h.update(p.file_name().expect("file").as_encoded_bytes());
        h.update([0]);
        h.update(fs::read(p)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Returns `linux/`, creating it from patches/ when missing, and recreating
/// it when patches/ changed (e.g. after a pull) and linux/ holds no work of
/// its own. A tree with local commits is built as it is, with a warning.
pub fn ensure_tree(pin: &Pin) -> Result<PathBuf> {
    let dir = paths::linux();
    if !dir.join(".git").exists() {
        tree(pin, false)?;
        return Ok(dir);
    }
    let now = series_hash(&patch_files(&paths::patches())?)?;
    let stamp = fs::read_to_string(stamp_file(&dir)).unwrap_or_default();
    let mut it = stamp.split_whitespace();
    let (made_from, made_head) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    if made_from == now {
        return Ok(dir);
    }
    let head = ui::output(git(&dir).args(["rev-parse", "HEAD"]))?;
    let dirty = ui::output(git(&dir).args(["status", "--porcelain", "--untracked-files=no"]))?;
    if head == made_head && dirty.is_empty() {
        ui::info("    patches/ changed since linux/ was made and linux/ has no work of its own: recreating it");
        tree(pin, true)?;
    } else {
        ui::warn("linux/ differs from patches/ (local work, or patches/ changed): building linux/ as it is; `cargo xtask export` or `cargo xtask tree --force`");
    }
    Ok(dir)
}

/// Cover-letter subject and blurb kept across exports.
#[derive(Debug, PartialEq)]
pub struct CoverText {
    pub subject: String,
    pub blurb: String,
}

fn shortlog_start() -> Regex {
    Regex::new(r"(?m)^\S.* \(\d+\):$").expect("regex")
}

/// Reads subject and blurb from an existing cover letter.
pub fn parse_cover(text: &str) -> Option<CoverText> {
    let subj_re = Regex::new(r"(?m)^Subject: \[[^\]]*\] (.*)$").expect("regex");
    let subject = subj_re.captures(text)?.get(1)?.as_str().to_string();
    let (_, body) = text.split_once("\n\n")?;
    let end = shortlog_start().find(body)?.start();
    Some(CoverText {
        subject,
        blurb: body[..end].trim_end().to_string(),
    })
}

/// Puts subject and blurb into git's generated cover letter.
pub fn fill_cover(generated: &str, c: &CoverText) -> Result<String> {
    if !generated.contains("*** SUBJECT HERE ***") || !generated.contains("*** BLURB HERE ***") {
        bail!("git format-patch produced an unexpected cover letter");
    }
    Ok(generated
        .replace("*** SUBJECT HERE ***", &c.subject)
        .replace("*** BLURB HERE ***", &c.blurb))
}

fn default_cover() -> CoverText {
    CoverText {
        subject: "mm: Kernel Samepage Merging in Rust".into(),
        blurb: "(describe the series here)".into(),
    }
}

/// `cargo xtask export`: `linux/` -> `patches/` and the mirror dirs.
pub fn export(pin: &Pin) -> Result<()> {
    let base = base::ensure(pin)?;
    let dir = paths::linux();
    if !dir.join(".git").exists() {
        bail!(
            "no kernel tree at {}; run `cargo xtask tree` first",
            dir.display()
        );
    }
    let step = Step::start("export patches/ and mirrors from linux/");
    let dirty = ui::output(git(&dir).args(["status", "--porcelain", "--untracked-files=no"]))?;
    if !dirty.is_empty() {
        bail!("linux/ has uncommitted changes; commit them first:\n{dirty}");
    }
    let untracked = ui::output(git(&dir).args(["status", "--porcelain", "--untracked-files=all"]))?;
    for l in untracked.lines().filter(|l| l.starts_with("??")) {
        ui::warn(format!(
            "untracked file in linux/ is not exported: {}",
            &l[3..]
        ));
    }
    let range = format!("{}..HEAD", base.commit);
    let count: usize = ui::output(git(&dir).args(["rev-list", "--count", &range]))?.parse()?;
    if count == 0 {
        bail!("linux/ has no commits on top of the base: nothing to export");
    }
    // Added files must all have a mirror; check before writing anything.
    let added = ui::output(git(&dir).args([
        "diff",
        "--name-only",
        "--diff-filter=A",
        &base.commit,
        "HEAD",
    ]))?;
    let mut mirror: BTreeMap<String, String> = BTreeMap::new();
    for f in added.lines().filter(|l| !l.is_empty()) {
        let m = mirror_of(f).with_context(|| {
            format!(
                "the series adds {f}, which is under no mirror root; add one to series::MIRRORS"
            )
        })?;
        mirror.insert(m, f.to_string());
    }
    let head_author = ui::output(git(&dir).args(["log", "-1", "--format=%an%x00%ae%x00%aI"]))?;
    let mut ident = head_author.split('\0');
    let (name, email, date) = (
        ident.next().unwrap_or_default().to_string(),
        ident.next().unwrap_or_default().to_string(),
        ident.next().unwrap_or_default().to_string(),
    );
    let tmp = paths::build().join("export.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let mut fp = git(&dir);
    fp.args([
        "-c",
        "core.abbrev=12",
        "-c",
        "diff.noprefix=false",
        "-c",
        "diff.mnemonicPrefix=false",
        "-c",
        "diff.renames=true",
        "-c",
        "diff.algorithm=myers",
        "-c",
        "format.signOff=false",
        "-c",
        "format.numbered=auto",
        "format-patch",
        "-q",
        "--zero-commit",
        "--no-signature",
        "--cover-letter",
        "--no-thread",
        "--subject-prefix=PATCH",
    ])
    .arg(format!("--base={}", base.commit))
    .arg("-o")
    .arg(&tmp)
    .arg(&range)
    // The cover letter's From and Date are the committer's: make them the
    // newest patch's author so that they do not change between exports.
    .env("GIT_COMMITTER_NAME", &name)
    .env("GIT_COMMITTER_EMAIL", &email)
    .env("GIT_COMMITTER_DATE", &date);
    ui::run(&mut fp)?;
    let pdir = paths::patches();
    fs::create_dir_all(&pdir)?;
    let cover_text = fs::read_to_string(pdir.join(COVER))
        .ok()
        .and_then(|t| parse_cover(&t))
        .unwrap_or_else(default_cover);
    let gen_cover = fs::read_to_string(tmp.join(COVER))?;
    fs::write(tmp.join(COVER), fill_cover(&gen_cover, &cover_text)?)?;
    for e in fs::read_dir(&pdir)? {
        let p = e?.path();
        if p.extension().is_some_and(|e| e == "patch") {
            fs::remove_file(p)?;
        }
    }
    for e in fs::read_dir(&tmp)? {
        let p = e?.path();
        fs::rename(&p, pdir.join(p.file_name().expect("file")))?;
    }
    fs::remove_dir_all(&tmp)?;
    // Mirrors: write what the series adds, drop what it no longer adds.
    let repo = paths::repo();
    for (m, f) in &mirror {
        let blob = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["show", &format!("HEAD:{f}")])
            .output()?;
        if !blob.status.success() {
            bail!("cannot read {f} from linux/ HEAD");
        }
        let dst = repo.join(m);
        fs::create_dir_all(dst.parent().expect("parent"))?;
        if fs::read(&dst).ok().as_deref() != Some(&blob.stdout[..]) {
            fs::write(&dst, &blob.stdout)?;
        }
    }
    for stale in mirror_files(&repo)?
        .into_iter()
        .filter(|f| !mirror.contains_key(f))
    {
        ui::info(format!("    removing {stale} (no longer in the series)"));
        fs::remove_file(repo.join(&stale))?;
    }
    // linux/ now is exactly what patches/ describes.
    let head = ui::output(git(&dir).args(["rev-parse", "HEAD"]))?;
    fs::write(
        stamp_file(&dir),
        format!("{} {head}\n", series_hash(&patch_files(&pdir)?)?),
    )?;
    ui::info(format!(
        "    {count} patches + cover letter; {} mirrored files",
        mirror.len()
    ));
    step.done();
    Ok(())
}

/// Files currently in the repository's mirror dirs (relative paths).
fn mirror_files(repo: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) -> Result<()> {
        for e in fs::read_dir(d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else if !MIRROR_IGNORE.iter().any(|i| e.file_name() == *i) {
                out.push(
                    p.strip_prefix(root)
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for (_, m) in MIRRORS {
        let d = repo.join(m);
        if d.is_dir() {
            walk(repo, &d, &mut out)?;
        }
    }
    out.sort();
    Ok(out)
}

/// Sanity of the series files themselves: numbering, sign-off, cover text.
pub fn lint_series(patches: &[(String, String)], cover: Option<&str>) -> Vec<String> {
    let mut errs = Vec::new();
    let n = patches.len();
    let subj = Regex::new(r"(?m)^Subject: \[PATCH(?: (\d+)/(\d+))?\] (.+)$").expect("regex");
    for (i, (name, text)) in patches.iter().enumerate() {
        match subj.captures(text) {
            None => errs.push(format!("{name}: no `Subject: [PATCH ...]` line")),
            Some(c) => {
                let (k, total) = (c.get(1).map(|m| m.as_str()), c.get(2).map(|m| m.as_str()));
                // git format-patch pads the number to the width of the total (01/14).
                let want_k = format!("{:0width$}", i + 1, width = n.to_string().len());
                let want_n = n.to_string();
                let numbered_ok = if n == 1 {
                    k.is_none() || k == Some("1")
                } else {
                    k == Some(&want_k) && total == Some(&want_n)
                };
                if !numbered_ok {
                    errs.push(format!("{name}: subject is not numbered {}/{n}", i + 1));
                }
            }
        }
        if !text.contains("\nSigned-off-by: ") {
            errs.push(format!("{name}: no Signed-off-by"));
        }
    }
    match cover {
        None => errs.push(format!("{COVER} is missing")),
        Some(c) if c.contains("*** SUBJECT HERE ***") || c.contains("*** BLURB HERE ***") => {
            errs.push(format!("{COVER} still has git's placeholder text"))
        }
        Some(c) if !c.contains("base-commit: ") => {
            errs.push(format!("{COVER} has no base-commit line"))
        }
        Some(_) => {}
    }
    errs
}

/// `cargo xtask check`: the series applies cleanly to the pinned base, is
/// well-formed and checkpatch-clean, and every mirror dir is byte-identical
/// to what the series produces.
pub fn check(pin: &Pin) -> Result<()> {
    let base = base::ensure(pin)?;
    let step = Step::start("check the series against the pinned base");
    let pdir = paths::patches();
    let patches = patch_files(&pdir)?;
    let texts: Vec<(String, String)> = patches
        .iter()
        .map(|p| {
            Ok((
                p.file_name().expect("file").to_string_lossy().into_owned(),
                fs::read_to_string(p)?,
            ))
        })
        .collect::<Result<_>>()?;
    let cover = fs::read_to_string(pdir.join(COVER)).ok();
    let mut errors = lint_series(&texts, cover.as_deref());
    if let Some(c) = &cover {
        if !c.contains(&format!("base-commit: {}", base.commit)) {
            errors.push(format!(
                "{COVER}: base-commit is not the pinned base {}",
                base.commit
            ));
        }
    }
    // Apply to the base in an index only: no 80k-file checkout needed.
    let scratch = scratch_index(&base)?;
    for p in &patches {
        let out = git(&scratch)
            .args(["apply", "--cached", "--whitespace=error-all"])
            .arg(p)
            .output()?;
        if !out.status.success() {
            bail!(
                "{} does not apply to the pinned base {}:\n{}",
                p.display(),
                &base.commit[..12],
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
    }
    ui::info(format!(
        "    {} patches apply cleanly to {}",
        patches.len(),
        &base.commit[..12]
    ));
    // checkpatch, from the base tree.
    if !patches.is_empty() {
        let out = Command::new("perl")
            .arg(base.repo.join("scripts/checkpatch.pl"))
            // FILE_PATH_CHANGES only asks whether MAINTAINERS needs updating
            // for added files; ours are covered by directory patterns (rust/ in
            // RUST, mm/ksm-rs/ in MEMORY MANAGEMENT - KSM IN RUST, the KSM
            // selftests in MEMORY MANAGEMENT - KSM). UNKNOWN_COMMIT_ID: the
            // base is a source package without upstream history, so no
            // Fixes: tag could be looked up (the tags were checked by hand).
            .args(["--no-tree", "--quiet", "--no-summary", "--show-types"])
            .args(["--ignore", "FILE_PATH_CHANGES,UNKNOWN_COMMIT_ID"])
            .args(&patches)
            .output()?;
        if !out.status.success() {
            errors.push(format!(
                "checkpatch:\n{}",
                String::from_utf8_lossy(&out.stdout).trim_end()
            ));
        } else {
            ui::info("    checkpatch: clean");
        }
    }
    // Mirrors.
    let added = ui::output(git(&scratch).args([
        "diff",
        "--cached",
        "--name-only",
        "--diff-filter=A",
        &base.commit,
    ]))?;
    let repo = paths::repo();
    let mut expected = BTreeMap::new();
    for f in added.lines().filter(|l| !l.is_empty()) {
        match mirror_of(f) {
            Some(m) => {
                expected.insert(m, f.to_string());
            }
            None => errors.push(format!(
                "the series adds {f}, which is under no mirror root"
            )),
        }
    }
    for (m, f) in &expected {
        let blob = git(&scratch).args(["show", &format!(":{f}")]).output()?;
        match fs::read(repo.join(m)) {
            Err(_) => errors.push(format!("{m}: missing (the series adds {f}); run `cargo xtask export`")),
            Ok(have) if have != blob.stdout => errors.push(format!(
                "{m}: differs from {f} in the series (edited without re-export? edit linux/{f}, commit, `cargo xtask export`)"
            )),
            Ok(_) => {}
        }
    }
    for f in mirror_files(&repo)? {
        if !expected.contains_key(&f) {
            errors.push(format!("{f}: in a mirror dir but not added by the series"));
        }
    }
    fs::remove_dir_all(&scratch)?;
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("  CHECK FAILED: {e}");
        }
        bail!("check failed: {} problem(s)", errors.len());
    }
    ui::info(format!(
        "    {} mirrored files match the series",
        expected.len()
    ));
    step.done();
    Ok(())
}

fn scratch_index(base: &BaseTree) -> Result<PathBuf> {
    let scratch = paths::build().join("check-index");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    fs::create_dir_all(paths::build())?;
    ui::run(
        Command::new("git")
            .args(["clone", "-q", "--shared", "--no-checkout"])
            .arg(&base.repo)
            .arg(&scratch),
    )?;
    ui::run(git(&scratch).args(["read-tree", &base.commit]))?;
    Ok(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_mapping() {
        assert_eq!(
            mirror_of("mm/ksm-rs/ksm.rs").as_deref(),
            Some("mm-ksm-rs/ksm.rs")
        );
        assert_eq!(
            mirror_of("mm/ksm-rs/.kunitconfig").as_deref(),
            Some("mm-ksm-rs/.kunitconfig")
        );
        assert_eq!(
            mirror_of("tools/testing/selftests/mm/ksm_rs.c").as_deref(),
            Some("tools-testing-selftests/mm/ksm_rs.c")
        );
        assert_eq!(
            mirror_of("include/linux/ksm.h").as_deref(),
            Some("include/linux/ksm.h")
        );
        assert_eq!(
            mirror_of("rust/kernel/mm/ksm.rs").as_deref(),
            Some("rust-kernel/mm/ksm.rs")
        );
        assert_eq!(mirror_of("mm/ksm.c"), None);
        assert_eq!(mirror_of("mm/ksm-rsx/a"), None);
    }

    const GEN: &str = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: A U Thor <a@example.org>
Date: Sat, 21 Nov 2026 12:00:00 +0000
Subject: [PATCH 0/2] *** SUBJECT HERE ***

*** BLURB HERE ***

A U Thor (2):
  selftests/mm: one
  mm: two

 x | 1 +
 1 file changed, 1 insertion(+)


base-commit: c49b871d213042f39da2b346ac0d49967e0c2b05
";

    #[test]
    fn cover_roundtrip() {
        let c = CoverText {
            subject: "mm: KSM in Rust".into(),
            blurb: "Why:\n\nBecause (really):\n  it is faster.".into(),
        };
        let filled = fill_cover(GEN, &c).unwrap();
        assert!(filled.contains("Subject: [PATCH 0/2] mm: KSM in Rust\n"));
        assert_eq!(parse_cover(&filled), Some(c));
        assert!(fill_cover(&filled, &default_cover()).is_err());
    }

    #[test]
    fn lint_catches_numbering_signoff_and_placeholders() {
        let p = |k: usize, n: usize, so: bool| {
            format!(
                "From 0 Mon\nSubject: [PATCH {k}/{n}] x\n\nbody\n{}---\n",
                if so { "\nSigned-off-by: A <a@b>\n" } else { "" }
            )
        };
        let good = vec![
            ("0001".to_string(), p(1, 2, true)),
            ("0002".to_string(), p(2, 2, true)),
        ];
        let cover = fill_cover(GEN, &default_cover()).unwrap();
        assert!(lint_series(&good, Some(&cover)).is_empty());
        let bad = vec![
            ("0001".to_string(), p(1, 3, true)),
            ("0002".to_string(), p(2, 2, false)),
        ];
        let errs = lint_series(&bad, Some(GEN));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(lint_series(&good, None)
            .iter()
            .any(|e| e.contains("missing")));
        // Ten patches or more: git pads the number (01/10).
        let ten: Vec<_> = (1..=10)
            .map(|k| {
                let text = format!(
                    "From 0 Mon\nSubject: [PATCH {k:02}/10] x\n\nbody\n\nSigned-off-by: A <a@b>\n---\n"
                );
                (format!("{k:04}"), text)
            })
            .collect();
        assert!(
            lint_series(&ten, Some(&cover)).is_empty(),
            "{:?}",
            lint_series(&ten, Some(&cover))
        );
        let mut unpadded = ten.clone();
        unpadded[0].1 = p(1, 10, true);
        assert_eq!(lint_series(&unpadded, Some(&cover)).len(), 1);
    }
}
