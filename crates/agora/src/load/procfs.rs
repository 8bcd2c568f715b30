//! CPU time and peak memory of the suite's processes, from /proc: which
//! process listens on each service's port, its user + system CPU ticks, and
//! its peak resident set (`VmHWM`). Linux only; elsewhere the figures are
//! simply missing from the report.

use std::collections::BTreeMap;

use super::Targets;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// A process serving some of the suite.
#[derive(Clone, Debug)]
pub struct Process {
    /// Which services it serves (or what it is).
    pub label: String,
    /// Its process id.
    pub pid: u32,
}

impl Process {
    /// This very process.
    pub fn this(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            pid: std::process::id(),
        }
    }

    /// User + system CPU time so far, in milliseconds.
    pub fn cpu(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name may hold spaces and parentheses: fields start
        // after the last ')'. There, index 0 is the state, 11 utime, 12 stime.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks * 1000 / TICKS_PER_SECOND)
    }

    /// Peak resident set size, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }
}

/// The processes listening on the suite's gRPC ports (one for the
/// one-process suite, four for separate binaries), labelled by the services
/// each serves, and this load generator.
pub fn suite_processes(targets: &Targets) -> Vec<Process> {
    let listening = listening_inodes();
    let mut by_pid: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (service, addr) in &targets.grpc {
        let Some(inode) = listening.get(&addr.port()) else {
            continue;
        };
        if let Some(pid) = owner_of(*inode) {
            by_pid.entry(pid).or_default().push(service);
        }
    }
    let mut processes: Vec<Process> = by_pid
        .into_iter()
        .map(|(pid, services)| Process {
            label: services.join("+"),
            pid,
        })
        .collect();
    processes.push(Process::this("load generator"));
    processes
}

/// Socket inode of each TCP port in LISTEN state.
fn listening_inodes() -> BTreeMap<u16, u64> {
    let mut inodes = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != "0A" {
                continue;
            }
            let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            else {
                continue;
            };
            if let Ok(inode) = inode.parse() {
                inodes.insert(port, inode);
            }
        }
    }
    inodes
}

/// The process holding socket `inode` open.
fn owner_of(inode: u64) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .is_ok_and(|target| target.as_os_str() == wanted.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}
