//! Freed memory goes back to the system, however a binary is started.
//!
//! glibc's malloc serves a large block (an argon2id hash's 19 MiB buffer)
//! with its own `mmap` and unmaps it when freed, but only below a *sliding*
//! threshold: freeing such a block raises the threshold to its size, and from
//! then on blocks that size come from the heap and stay resident after they
//! are freed (the user service: 128 MB after eight sign-ins, 8.6 GB after 64
//! concurrent ones). A fixed threshold (`MALLOC_MMAP_THRESHOLD_`) turns the
//! sliding off, and glibc reads it only from the environment at start-up.
//!
//! So [`return_freed_memory`], the first thing every binary does, re-executes
//! the binary (`/proc/self/exe`, same arguments and environment) with
//! `MALLOC_MMAP_THRESHOLD_=1048576` when it is not set yet: one `execve` at
//! start-up, no `unsafe` (`mallopt` would need it). A threshold the operator
//! set is kept. Not glibc (musl, macOS): nothing to do.

/// The variable glibc reads its fixed mmap threshold from.
pub const MMAP_THRESHOLD_VAR: &str = "MALLOC_MMAP_THRESHOLD_";

/// The threshold set: blocks of 1 MiB and more are mapped on their own and
/// unmapped when freed.
pub const MMAP_THRESHOLD: &str = "1048576";

/// Makes this process run with a fixed mmap threshold (see the module
/// documentation); returns only if it already does, or cannot.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        if std::env::var_os(MMAP_THRESHOLD_VAR).is_some() {
            return;
        }
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new("/proc/self/exe");
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        let error = command
            .args(args)
            .env(MMAP_THRESHOLD_VAR, MMAP_THRESHOLD)
            .exec();
        // Still here: exec failed (no /proc?). Run on with glibc's defaults.
        eprintln!(
            "cannot re-execute with {MMAP_THRESHOLD_VAR} set ({error}); freed memory may stay resident"
        );
    }
}
