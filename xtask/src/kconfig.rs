//! Kconfig fragments: parsing, merging (later fragments win, as
//! `scripts/kconfig/merge_config.sh` does) and checking that the resolved
//! `.config` really has every value a fragment asked for.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A value asked for: `y`, `m`, a number/string, or "is not set".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Set(String),
    Unset,
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Set(v) => f.write_str(v),
            Value::Unset => f.write_str("is not set"),
        }
    }
}

/// Symbols in the order first seen, with their final values.
#[derive(Debug, Default, Clone)]
pub struct Fragment {
    pub order: Vec<String>,
    pub values: BTreeMap<String, Value>,
    /// `(symbol, old, new, where)` for every value a later fragment changed.
    pub overrides: Vec<(String, Value, Value, String)>,
}

/// Parses one line; `Ok(None)` for blanks and comments.
fn parse_line(line: &str) -> Result<Option<(String, Value)>> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = t.strip_prefix("# ") {
        if let Some(sym) = rest.strip_suffix(" is not set") {
            if let Some(name) = sym.strip_prefix("CONFIG_") {
                if valid_name(name) {
                    return Ok(Some((sym.to_string(), Value::Unset)));
                }
            }
        }
        return Ok(None);
    }
    if t.starts_with('#') {
        return Ok(None);
    }
    if let Some((sym, val)) = t.split_once('=') {
        if let Some(name) = sym.strip_prefix("CONFIG_") {
            if valid_name(name) && !val.is_empty() {
                return Ok(Some((sym.to_string(), Value::Set(val.to_string()))));
            }
        }
    }
    bail!("not a Kconfig assignment: {t:?}")
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl Fragment {
    /// Parses `text` (named `origin` in errors) and merges it over `self`.
    pub fn merge(&mut self, origin: &str, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            let Some((sym, val)) =
                parse_line(line).map_err(|e| anyhow::anyhow!("{origin}:{}: {e}", i + 1))?
            else {
                continue;
            };
            match self.values.insert(sym.clone(), val.clone()) {
                None => self.order.push(sym),
                Some(old) if old != val => self.overrides.push((sym, old, val, origin.to_string())),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The merged fragment in `.config` syntax (for `KCONFIG_ALLCONFIG`).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for sym in &self.order {
            match &self.values[sym] {
                Value::Set(v) => writeln!(s, "{sym}={v}").unwrap(),
                Value::Unset => writeln!(s, "# {sym} is not set").unwrap(),
            }
        }
        s
    }

    /// Compares the resolved `.config` with what was asked for; returns one
    /// message per symbol that Kconfig did not honour (a dependency missing,
    /// a typo, a symbol that does not exist in this tree).
    pub fn verify(&self, dotconfig: &str) -> Vec<String> {
        let got: BTreeMap<String, Value> = dotconfig
            .lines()
            .filter_map(|l| parse_line(l).ok().flatten())
            .collect();
        let mut bad = Vec::new();
        for sym in &self.order {
            let want = &self.values[sym];
            let have = got.get(sym.as_str());
            let ok = match (want, have) {
                (Value::Unset, None | Some(Value::Unset)) => true,
                (Value::Set(n), Some(Value::Unset) | None) if n == "n" => true,
                (Value::Set(w), Some(Value::Set(h))) => w == h,
                _ => false,
            };
            if !ok {
                let have = have.map_or_else(
                    || "absent (unknown symbol or unmet dependency)".to_string(),
                    |v| v.to_string(),
                );
                bad.push(format!("{sym}: asked for {want}, got {have}"));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_later_wins_and_records_override() {
        let mut f = Fragment::default();
        f.merge(
            "a",
            "CONFIG_A=y\n# comment\n\nCONFIG_B=\"x y\"\n# CONFIG_C is not set\n",
        )
        .unwrap();
        f.merge("b", "CONFIG_A=n\nCONFIG_C=y\nCONFIG_B=\"x y\"\n")
            .unwrap();
        assert_eq!(f.order, vec!["CONFIG_A", "CONFIG_B", "CONFIG_C"]);
        assert_eq!(f.values["CONFIG_A"], Value::Set("n".into()));
        assert_eq!(f.values["CONFIG_C"], Value::Set("y".into()));
        assert_eq!(f.overrides.len(), 2);
        assert_eq!(f.render(), "CONFIG_A=n\nCONFIG_B=\"x y\"\nCONFIG_C=y\n");
    }

    #[test]
    fn garbage_is_an_error_with_location() {
        let mut f = Fragment::default();
        let e = f.merge("frag.config", "CONFIG_A=y\nKSM=y\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "frag.config:2: not a Kconfig assignment: \"KSM=y\""
        );
        assert!(f.merge("x", "CONFIG_lower=y").is_err());
        assert!(f.merge("x", "CONFIG_A=").is_err());
    }

    #[test]
    fn verify_reports_unhonoured_symbols() {
        let mut f = Fragment::default();
        f.merge("a", "CONFIG_KSM=y\nCONFIG_NR_CPUS=4\n# CONFIG_KSM_RUST is not set\nCONFIG_GONE=n\nCONFIG_NUMA=y\nCONFIG_TYPO=y\n")
            .unwrap();
        let dot = "CONFIG_KSM=y\nCONFIG_NR_CPUS=8\n# CONFIG_NUMA is not set\n";
        let bad = f.verify(dot);
        assert_eq!(
            bad,
            vec![
                "CONFIG_NR_CPUS: asked for 4, got 8",
                "CONFIG_NUMA: asked for y, got is not set",
                "CONFIG_TYPO: asked for y, got absent (unknown symbol or unmet dependency)",
            ]
        );
        assert!(f
            .verify("CONFIG_KSM=y\nCONFIG_NR_CPUS=4\nCONFIG_NUMA=y\nCONFIG_TYPO=y\n")
            .is_empty());
        // A symbol asked to be unset but enabled is reported.
        assert_eq!(
            f.verify(
                "CONFIG_KSM_RUST=y\nCONFIG_KSM=y\nCONFIG_NR_CPUS=4\nCONFIG_NUMA=y\nCONFIG_TYPO=y\n"
            )
            .len(),
            1
        );
    }
}
