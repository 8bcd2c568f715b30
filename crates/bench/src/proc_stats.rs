//! What a process has used, read from /proc: CPU time (nanoseconds, summed
//! over its threads from `schedstat`), write system calls (`io`), and memory
//! (`status`).

use std::time::Duration;

use anyhow::Context as _;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub cpu: Duration,
    pub write_syscalls: u64,
}

impl Snapshot {
    /// Reads `pid`'s counters now.
    pub fn take(pid: u32) -> anyhow::Result<Self> {
        let mut cpu_ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let path = task?.path().join("schedstat");
            // A thread may exit between listing and reading.
            if let Ok(text) = std::fs::read_to_string(path) {
                cpu_ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .context("reading /proc/PID/io (needs the same user or root)")?;
        let write_syscalls = field(&io, "syscw:").context("syscw in /proc/PID/io")?;
        Ok(Self {
            cpu: Duration::from_nanos(cpu_ns),
            write_syscalls,
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            write_syscalls: self.write_syscalls.saturating_sub(earlier.write_syscalls),
        }
    }
}

/// Resident memory now and at its peak, in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok((
        field(&status, "VmRSS:").context("VmRSS")?,
        field(&status, "VmHWM:").context("VmHWM")?,
    ))
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}
