//! The real programs Agora's users run against it (grpcurl,
//! grpc_health_probe, and jq and uuidgen for the README's shell lines),
//! found on this machine or their tests skipped with a note. CI sets
//! `AGORA_REQUIRE_TOOLS=1`, which turns a missing tool into a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to 1 to fail, not skip, when a tool is missing.
pub const REQUIRE: &str = "AGORA_REQUIRE_TOOLS";

/// The path of `name`: the file `env` names, else `name` on PATH, else the
/// builds beside the project (`../shared/tools/bin`). `None` (with a note)
/// when absent, unless [`REQUIRE`] is set.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/bin");
    let found = match std::env::var_os(env) {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .chain([shared])
            .map(|dir| dir.join(name))
            .find(|path| path.is_file()),
    };
    if found.is_none() {
        let hint = format!("{name} not found: set {env} to its path or put it on PATH");
        assert!(
            std::env::var(REQUIRE).as_deref() != Ok("1"),
            "{hint} ({REQUIRE}=1 requires it)"
        );
        eprintln!("note: skipped, {hint}");
    }
    found
}

/// grpcurl (fullstorydev/grpcurl).
pub fn grpcurl() -> Option<PathBuf> {
    find("grpcurl", "AGORA_GRPCURL")
}

/// grpc_health_probe (grpc-ecosystem/grpc-health-probe).
pub fn grpc_health_probe() -> Option<PathBuf> {
    find("grpc_health_probe", "AGORA_GRPC_HEALTH_PROBE")
}

/// A PATH holding grpcurl, jq and uuidgen, for the README's and the
/// banner's shell lines; `None` when one is missing.
pub fn shell_path() -> Option<String> {
    let tools = [
        grpcurl()?,
        find("jq", "AGORA_JQ")?,
        find("uuidgen", "AGORA_UUIDGEN")?,
    ];
    let mut dirs: Vec<PathBuf> = tools
        .iter()
        .filter_map(|tool| tool.parent().map(Path::to_path_buf))
        .collect();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs)
        .ok()
        .map(|path| path.to_string_lossy().into_owned())
}

/// Runs `program` with `args`; its exit code and its standard output and
/// error together.
pub async fn run(program: &Path, args: &[String]) -> (i32, String) {
    let mut command = Command::new(program);
    command.args(args);
    output(command).await
}

/// Runs `script` with bash (`set -euo pipefail`), PATH set to `path`, plus
/// `env`; its exit code and output.
pub async fn bash(script: &str, path: &str, env: &[(&str, String)]) -> (i32, String) {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("PATH", path)
        .envs(env.iter().map(|(key, value)| (*key, value)));
    output(command).await
}

/// Runs `command` off the async threads (the suite under test shares them).
async fn output(mut command: Command) -> (i32, String) {
    let what = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the runner thread")
        .unwrap_or_else(|error| panic!("running {what}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}
