//! Boots a kernel + initramfs in QEMU, streams the serial console, enforces a
//! hard timeout (printing the last console lines) and scans every kernel
//! message for splats.

use crate::build::Arch;
use crate::ktap;
use crate::paths;
use crate::ui;
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when a cached probe showed guests run under it, else TCG
    Auto,
    Kvm,
    Tcg,
}

pub struct Vm<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub append: String,
    pub timeout: Duration,
    pub accel: Accel,
    pub log: PathBuf,
    pub arch: Arch,
}

pub struct Boot {
    pub timed_out: bool,
    pub splats: Vec<String>,
}

/// Memory per NUMA node and the CPU count of the guest.
const NODE_MB: u32 = 1024;
const CPUS: u32 = 2;
/// Size of the hot-pluggable DIMM: four 128 MiB memory blocks.
const DIMM_MB: u32 = 512;

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Kvm,
    /// Multi-threaded TCG: one host thread per vCPU.
    Tcg,
    /// Single-threaded TCG with `-icount shift=0,sleep=off`: every guest
    /// instruction advances the virtual clock by 1 ns and idle time is skipped,
    /// so guest time counts instructions and runs repeat exactly.
    TcgIcount,
}

/// No devices but a serial console on stdio; no reboot.
fn console_only(c: &mut Command) {
    c.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
}

/// One NUMA node per CPU, `NODE_MB` each.
fn numa_nodes(c: &mut Command) {
    for n in 0..CPUS {
        c.args([
            "-object",
            &format!("memory-backend-ram,id=m{n},size={NODE_MB}M"),
        ]);
        c.args(["-numa", &format!("node,nodeid={n},cpus={n},memdev=m{n}")]);
    }
}

fn qemu_cmd(vm: &Vm, engine: Engine, extra: &[String]) -> Command {
    match vm.arch {
        Arch::X86_64 => {}
        Arch::Arm64 => return qemu_cmd_arm64(vm, engine, extra),
        Arch::Arm => return qemu_cmd_arm(vm, engine, extra),
    }
    let mut c = Command::new("qemu-system-x86_64");
    console_only(&mut c);
    match engine {
        Engine::Kvm => {
            c.args(["-accel", "kvm", "-cpu", "host"]);
        }
        Engine::Tcg => {
            c.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
        }
        Engine::TcgIcount => {
            // icount needs single-threaded TCG; the RTC follows the virtual clock too.
            c.args(["-accel", "tcg", "-cpu", "max"]);
            c.args(["-icount", "shift=0,sleep=off", "-rtc", "clock=vm"]);
        }
    }
    c.args(extra);
    // One socket per CPU and node: a package split across NUMA nodes makes
    // the guest WARN in set_cpu_sibling_map() (topology_sane()).
    let boot_mb = NODE_MB * CPUS;
    // The benchmark keeps the plain layout its published figures were measured on.
    let dimm = engine != Engine::TcgIcount;
    let mem = if dimm {
        format!("{boot_mb}M,slots=1,maxmem={}M", boot_mb + DIMM_MB)
    } else {
        format!("{boot_mb}M")
    };
    c.args([
        "-smp",
        &format!("{CPUS},sockets={CPUS},cores=1,threads=1"),
        "-m",
        &mem,
    ]);
    numa_nodes(&mut c);
    if dimm {
        // Hot-pluggable memory on the last node: the guest finds it through ACPI
        // and onlines it movable (CONFIG_MHP_DEFAULT_ONLINE_TYPE_ONLINE_MOVABLE),
        // so its blocks can go offline again (ksm_abi_tests does that with KSM
        // pages on them).
        c.args([
            "-object",
            &format!("memory-backend-ram,id=hp0,size={DIMM_MB}M"),
            "-device",
            &format!("pc-dimm,id=dimm0,memdev=hp0,node={}", CPUS - 1),
        ]);
    }
    // slab_nomerge: the KSM slab caches keep their own /sys/kernel/slab
    // entries, so that ksm_stress can see that they are empty at the end
    // (the benchmark keeps the default).
    let nomerge = if dimm { " slab_nomerge" } else { "" };
    boot_args(&mut c, vm, &format!("console=ttyS0{nomerge}"));
    c
}

/// The kernel, initramfs and command line (`args` first, then the VM's), and
/// the console on pipes.
fn boot_args(c: &mut Command, vm: &Vm, args: &str) {
    c.arg("-kernel").arg(vm.kernel);
    if let Some(i) = vm.initrd {
        c.arg("-initrd").arg(i);
    }
    c.args([
        "-append",
        &format!("{args} panic=-1 oops=panic printk.time=1 {}", vm.append),
    ]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

/// arm64: the `virt` machine with MTE (TCG only: KVM would need the host's
/// MTE), GICv3, 2 NUMA nodes from the device tree, a PL011 console.
///
/// No memory can go offline: `virt` hot-plugs DIMMs only when booted through
/// ACPI firmware, and `movablecore=` makes the top block of each node movable
/// although it holds the node's memmap, so it never goes offline (and holds
/// the first pages allocated). ksm_abi_tests skips its hot-remove cases.
fn qemu_cmd_arm64(vm: &Vm, engine: Engine, extra: &[String]) -> Command {
    let mut c = Command::new(crate::provision::arm64_qemu());
    c.arg("-L")
        .arg(crate::provision::arm64_qemu_root().join("usr/share/qemu"));
    console_only(&mut c);
    c.args(["-machine", "virt,mte=on,gic-version=3", "-cpu", "max"]);
    match engine {
        Engine::Kvm | Engine::Tcg => {
            c.args(["-accel", "tcg,thread=multi"]);
        }
        Engine::TcgIcount => {
            c.args([
                "-accel",
                "tcg",
                "-icount",
                "shift=0,sleep=off",
                "-rtc",
                "clock=vm",
            ]);
        }
    }
    c.args(extra);
    c.args([
        "-smp",
        &format!("{CPUS},sockets={CPUS},cores=1,threads=1"),
        "-m",
        &format!("{}M", NODE_MB * CPUS),
    ]);
    numa_nodes(&mut c);
    boot_args(&mut c, vm, "console=ttyAMA0 slab_nomerge");
    c
}

/// 32-bit arm: the `virt` machine with a Cortex-A15 (ARMv7 with LPAE), below 4 GiB of
/// addresses (`highmem=off`: the kernel has no PCIe or memory above), one NUMA node, a
/// PL011 console. Its guest runs KUnit at boot and powers off.
fn qemu_cmd_arm(vm: &Vm, engine: Engine, extra: &[String]) -> Command {
    let mut c = Command::new(crate::provision::arm_qemu());
    c.arg("-L")
        .arg(crate::provision::arm64_qemu_root().join("usr/share/qemu"));
    console_only(&mut c);
    c.args(["-machine", "virt,highmem=off", "-cpu", "cortex-a15"]);
    match engine {
        Engine::Kvm | Engine::Tcg => {
            c.args(["-accel", "tcg,thread=multi"]);
        }
        Engine::TcgIcount => {
            c.args(["-accel", "tcg", "-icount", "shift=0,sleep=off"]);
        }
    }
    c.args(extra);
    c.args(["-smp", &CPUS.to_string(), "-m", &format!("{NODE_MB}M")]);
    boot_args(&mut c, vm, "console=ttyAMA0");
    c
}

fn kvm_probe_file() -> PathBuf {
    paths::cache().join("kvm-probe")
}

/// Whether guests run under KVM here: boots the kernel without an initramfs
/// (it panics at once, cannot mount root) under KVM with a short timeout.
/// The answer is cached per machine.
fn kvm_works(kernel: &Path) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    if let Ok(s) = std::fs::read_to_string(kvm_probe_file()) {
        return s.trim() == "works";
    }
    ui::info("    probing KVM (a boot that must panic within 20 s) ...");
    let log = paths::build().join("kvm-probe.log");
    let vm = Vm {
        kernel,
        initrd: None,
        append: String::new(),
        timeout: Duration::from_secs(20),
        accel: Accel::Kvm,
        log,
        arch: Arch::X86_64,
    };
    let mut saw_panic = false;
    let ok = run_with(&vm, Engine::Kvm, &[], |l| {
        saw_panic |= l.contains("Kernel panic")
    })
    .is_ok_and(|b| !b.timed_out)
        && saw_panic;
    let verdict = if ok { "works" } else { "hangs" };
    ui::info(format!(
        "    KVM probe: guests {verdict} under KVM; using {}",
        if ok { "KVM" } else { "TCG" }
    ));
    let _ = std::fs::create_dir_all(paths::cache());
    let _ = std::fs::write(kvm_probe_file(), verdict);
    ok
}

/// Boots the VM; `on_line` sees every console line as it arrives.
pub fn boot(vm: &Vm, on_line: impl FnMut(&str)) -> Result<Boot> {
    let kvm = match vm.accel {
        Accel::Tcg => false,
        // No arm host: TCG whatever was asked.
        Accel::Kvm if vm.arch != Arch::X86_64 => {
            ui::warn("--accel kvm: arm guests run under TCG here");
            false
        }
        _ if vm.arch != Arch::X86_64 => false,
        Accel::Kvm => true,
        Accel::Auto => kvm_works(vm.kernel),
    };
    let engine = if kvm { Engine::Kvm } else { Engine::Tcg };
    run_with(vm, engine, &[], on_line)
}

/// Boots the VM deterministically: single-threaded TCG with
/// `-icount shift=0,sleep=off` whatever `vm.accel` says; `extra` goes on
/// QEMU's command line (e.g. `-plugin ...`).
pub fn boot_icount(vm: &Vm, extra: &[String], on_line: impl FnMut(&str)) -> Result<Boot> {
    run_with(vm, Engine::TcgIcount, extra, on_line)
}

fn run_with(
    vm: &Vm,
    engine: Engine,
    extra: &[String],
    mut on_line: impl FnMut(&str),
) -> Result<Boot> {
    if !vm.kernel.exists() {
        bail!("no kernel at {}", vm.kernel.display());
    }
    let mut cmd = qemu_cmd(vm, engine, extra);
    let mut log =
        File::create(&vm.log).with_context(|| format!("cannot create {}", vm.log.display()))?;
    writeln!(log, "$ {}", ui::show_cmd(&cmd))?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("cannot start QEMU (run `cargo xtask setup`)")?;
    let (rx, readers) = ui::line_channel(&mut child);
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut splats = Vec::new();
    let mut scanner = ktap::SplatScanner::default();
    let mut timed_out = false;
    loop {
        let left = vm.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if let Some(m) = scanner.feed(&line) {
                    splats.push(m.to_string());
                }
                if tail.len() == 30 {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                on_line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    let tail: Vec<String> = tail.into();
    if timed_out {
        writeln!(
            log,
            "*** ksm-rs: guest killed after {:?} timeout",
            vm.timeout
        )?;
        ui::warn(format!(
            "guest did not finish within {}; last console lines (full log {}):",
            ui::fmt_dur(vm.timeout),
            vm.log.display()
        ));
        for l in &tail {
            eprintln!("    | {l}");
        }
    }
    Ok(Boot { timed_out, splats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(engine: Engine) -> String {
        let vm = Vm {
            kernel: Path::new("/k"),
            initrd: None,
            append: "x=1".into(),
            timeout: Duration::from_secs(1),
            accel: Accel::Auto,
            log: PathBuf::from("/l"),
            arch: Arch::X86_64,
        };
        ui::show_cmd(&qemu_cmd(&vm, engine, &["-plugin".into(), "p.so".into()]))
    }

    #[test]
    fn icount_is_single_threaded_tcg() {
        let a = args(Engine::TcgIcount);
        assert!(a.contains("-accel tcg -cpu max -icount shift=0,sleep=off -rtc clock=vm"));
        assert!(!a.contains("thread=multi") && a.contains("-plugin p.so"));
        let a = args(Engine::Tcg);
        assert!(a.contains("-accel tcg,thread=multi") && !a.contains("icount"));
        assert!(args(Engine::Kvm).contains("-accel kvm -cpu host"));
    }
}
