//! The pinned base kernel (`kernel-base.toml`).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub package: String,
    pub version: String,
    /// The major.minor series any fallback must stay on (e.g. "7.3").
    pub series: String,
    pub archive: String,
    pub suite: String,
    pub component: String,
    pub keyring: String,
    pub deb_sha256: String,
    pub tarball: String,
    pub tarball_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    pub bindgen: String,
    pub llvm: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub base: Base,
    pub tools: Tools,
}

fn check_sha(field: &str, v: &str) -> Result<()> {
    if v.len() != 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        bail!("{field} must be 64 lowercase hex digits, got {v:?}");
    }
    Ok(())
}

impl Pin {
    pub fn parse(text: &str) -> Result<Pin> {
        let pin: Pin = toml::from_str(text).context("malformed pin file")?;
        check_sha("base.deb_sha256", &pin.base.deb_sha256)?;
        check_sha("base.tarball_sha256", &pin.base.tarball_sha256)?;
        if !pin.base.package.ends_with(&pin.base.series) {
            bail!(
                "base.package {:?} is not the package of series {:?}",
                pin.base.package,
                pin.base.series
            );
        }
        if upstream_version(&pin.base.version).is_none_or(|u| !in_series(&u, &pin.base.series)) {
            bail!(
                "base.version {:?} is not a {}.y Debian version",
                pin.base.version,
                pin.base.series
            );
        }
        if pin.tools.llvm.is_empty() || !pin.tools.llvm.bytes().all(|b| b.is_ascii_digit()) {
            bail!("tools.llvm must be a number such as \"19\"");
        }
        Ok(pin)
    }

    pub fn load(path: &Path) -> Result<Pin> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Pin::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// `LLVM=-19` as passed to make.
    pub fn llvm_make_arg(&self) -> String {
        format!("LLVM=-{}", self.tools.llvm)
    }
}

/// The upstream part of a Debian version: `7.3.4-1~bpo13+1` -> `7.3.4`.
pub fn upstream_version(debian: &str) -> Option<String> {
    let v = debian.split_once(':').map_or(debian, |(_, r)| r);
    let up = v.rsplit_once('-').map_or(v, |(u, _)| u);
    let ok = !up.is_empty()
        && up
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| up.to_string())
}

/// Whether upstream version `7.3.4` belongs to series `7.3`.
pub fn in_series(upstream: &str, series: &str) -> bool {
    upstream == series
        || upstream
            .strip_prefix(series)
            .is_some_and(|r| r.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../kernel-base.toml");

    #[test]
    fn repo_pin_parses() {
        let p = Pin::parse(GOOD).unwrap();
        assert_eq!(p.base.package, "linux-source-7.3");
        assert_eq!(upstream_version(&p.base.version).as_deref(), Some("7.3.4"));
        assert_eq!(p.llvm_make_arg(), "LLVM=-19");
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(
            upstream_version("7.3.4-1~bpo13+1").as_deref(),
            Some("7.3.4")
        );
        assert_eq!(upstream_version("1:7.3.10-2").as_deref(), Some("7.3.10"));
        assert_eq!(upstream_version("7.3~rc5-1"), None);
        assert!(in_series("7.3.4", "7.3"));
        assert!(in_series("7.3", "7.3"));
        assert!(!in_series("7.30.1", "7.3"));
        assert!(!in_series("7.4.1", "7.3"));
    }

    #[test]
    fn bad_sha_rejected() {
        let bad = GOOD.replace("703e369d", "703E369D");
        let e = Pin::parse(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("deb_sha256"), "{e:#}");
        let short = GOOD.replace("76df1affb19f", "76df");
        assert!(Pin::parse(&short).is_err());
    }

    #[test]
    fn unknown_field_and_wrong_series_rejected() {
        assert!(Pin::parse(&GOOD.replace("[tools]", "[tools]\nextra = 1")).is_err());
        let e = Pin::parse(&GOOD.replace("7.3.4-1~bpo13+1", "7.4.1-1")).unwrap_err();
        assert!(format!("{e:#}").contains("not a 7.3.y"), "{e:#}");
        assert!(Pin::parse(&GOOD.replace("llvm = \"19\"", "llvm = \"-19\"")).is_err());
    }
}
