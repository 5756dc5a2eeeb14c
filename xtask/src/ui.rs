//! Progress output and subprocess helpers.
//!
//! Every long step prints when it starts and ends with its elapsed time. While a
//! subprocess runs, a spinner shows its newest output line on a terminal; without
//! a terminal (CI) a heartbeat line is printed every 30 seconds instead, so a
//! log always shows that work is progressing and where.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static T0: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the whole xtask run; elapsed times are relative to it.
pub fn init() {
    T0.get_or_init(Instant::now);
}

/// Formats a duration as `1m05s` or `4.2s`.
pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn stamp() -> String {
    format!("[{:>7}]", fmt_dur(T0.get_or_init(Instant::now).elapsed()))
}

/// Prints an informational line with the global elapsed time.
pub fn info(msg: impl AsRef<str>) {
    eprintln!("{} {}", stamp(), msg.as_ref());
}

/// Prints a loud warning.
pub fn warn(msg: impl AsRef<str>) {
    eprintln!("{} WARNING: {}", stamp(), msg.as_ref());
}

/// A named long-running step.
pub struct Step {
    name: String,
    start: Instant,
}

impl Step {
    pub fn start(name: impl Into<String>) -> Step {
        let name = name.into();
        info(format!("==> {name}"));
        Step {
            name,
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn done(self) -> Duration {
        let d = self.start.elapsed();
        info(format!("<== {} ({})", self.name, fmt_dur(d)));
        d
    }
}

/// Formats a command for messages.
pub fn show_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", show_cmd(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {}", show_cmd(cmd), status);
    }
    Ok(())
}

/// Runs a command and returns its stdout (trimmed); fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run `{}`", show_cmd(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed with {}:\n{}",
            show_cmd(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// Runs a long command with its output going to `log`, showing progress.
///
/// On failure the last 40 lines of output are printed and the error names the log.
pub fn run_logged(cmd: &mut Command, step: &Step, log: &Path) -> Result<()> {
    let mut logf = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    writeln!(logf, "$ {}", show_cmd(cmd))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", show_cmd(cmd)))?;
    let (rx, readers) = line_channel(&mut child);
    let tty = std::io::stderr().is_terminal();
    let pb = tty.then(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("  {spinner} [{elapsed}] {wide_msg}").expect("style"),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    });
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut last_beat = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                writeln!(logf, "{line}")?;
                if let Some(pb) = &pb {
                    pb.set_message(line.clone());
                }
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if pb.is_none() && last_beat.elapsed() >= Duration::from_secs(30) {
            last_beat = Instant::now();
            info(format!(
                "    ... {} so far; last: {}",
                fmt_dur(step.elapsed()),
                tail.back().map(String::as_str).unwrap_or("(no output yet)")
            ));
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait()?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if !status.success() {
        for l in &tail {
            eprintln!("    | {l}");
        }
        bail!(
            "`{}` failed with {} (full log: {})",
            show_cmd(cmd),
            status,
            log.display()
        );
    }
    Ok(())
}

/// Reads a child's stdout and stderr, line by line, into one channel.
///
/// Bytes that are not UTF-8 are replaced rather than ending the read, so a
/// child can never block on a full pipe nobody drains. Join the returned
/// threads after the channel disconnects.
pub fn line_channel(
    child: &mut std::process::Child,
) -> (mpsc::Receiver<String>, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>);
    for r in [out, err].into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut br = BufReader::new(r);
            let mut buf = Vec::new();
            while br.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let s = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                buf.clear();
                if tx.send(s).is_err() {
                    break;
                }
            }
        }));
    }
    (rx, readers)
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_channel_survives_invalid_utf8_and_merges_stderr() {
        let mut child = Command::new("sh")
            .args(["-c", r"printf 'a\n\377\377\nb'; printf 'e\n' >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (rx, readers) = line_channel(&mut child);
        let mut lines: Vec<String> = rx.iter().collect();
        for r in readers {
            r.join().unwrap();
        }
        child.wait().unwrap();
        lines.sort();
        assert_eq!(lines, vec!["a", "b", "e", "\u{fffd}\u{fffd}"]);
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_dur(Duration::from_millis(4200)), "4.2s");
        assert_eq!(fmt_dur(Duration::from_secs(65)), "1m05s");
    }
}
