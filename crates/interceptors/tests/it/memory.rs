//! Freed memory goes back to the system: a binary that starts with
//! `memory::return_freed_memory()` (every Agora binary) keeps a low resident
//! size after many argon2-sized buffers were used and freed at once, the
//! pattern of concurrent sign-ins.

use std::process::Command;

/// The resident size of this process, in MiB, from /proc.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// Eight threads at a time each fill and free a 19 MiB buffer (one argon2id
/// hash's memory), 64 in all; the resident size after.
fn sign_in_burst() -> u64 {
    for _ in 0..8 {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut buffer = vec![0u8; 19 * 1024 * 1024];
                    for page in buffer.chunks_mut(4096) {
                        page[0] = 1;
                    }
                    std::hint::black_box(&buffer);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
    rss_mib()
}

fn run_child(mode: &str) -> u64 {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memory::freed_buffers_are_returned_to_the_system",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AGORA_MEMORY_CHILD", mode)
        .env_remove(agora_interceptors::memory::MMAP_THRESHOLD_VAR)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split("RSS_MIB=").nth(1))
        .unwrap_or_else(|| panic!("no figure in {stdout}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn freed_buffers_are_returned_to_the_system() {
    match std::env::var("AGORA_MEMORY_CHILD").as_deref() {
        Ok("fixed") => {
            agora_interceptors::memory::return_freed_memory();
            assert!(std::env::var_os(agora_interceptors::memory::MMAP_THRESHOLD_VAR).is_some());
            println!("RSS_MIB={}", sign_in_burst());
            return;
        }
        Ok(_) => {
            println!("RSS_MIB={}", sign_in_burst());
            return;
        }
        Err(_) => {}
    }
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        eprintln!("skipping: not glibc");
        return;
    }
    let fixed = run_child("fixed");
    let sliding = run_child("sliding");
    println!(
        "after 64 freed 19 MiB buffers: {fixed} MiB resident (fixed threshold), {sliding} MiB (glibc default)"
    );
    assert!(fixed < 64, "{fixed} MiB stayed resident");
}
