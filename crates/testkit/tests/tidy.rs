//! Rules the code base holds itself to, checked on every `cargo test`
//! (after rust-analyzer's `tidy.rs`): a rule that only lives in a document
//! drifts; one that fails the build does not.
//!
//! - Every Rust file opens with a `//!` comment saying what it is for.
//! - Generated protobuf types (`agora_proto`) stay at each service's edge:
//!   in a service crate they may appear only in its adapter modules, where
//!   requests are parsed into domain types and answers converted back.

use std::path::{Path, PathBuf};

/// Modules of a service crate that may use generated types: the gRPC
/// adapter (`grpc.rs` or `grpc/`), the calls to other services
/// (`downstream.rs` or `downstream/`), and the conversion of domain events
/// into their wire form (`events.rs` or `events/`).
const ADAPTERS: &[&str] = &["grpc", "downstream", "events"];

/// The workspace's `crates/` folder.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/testkit has a parent")
        .to_path_buf()
}

/// Every `.rs` file below `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A crate whose `src/` holds a gRPC adapter is a bounded context's service.
fn is_service_crate(krate: &Path) -> bool {
    krate.join("src/grpc.rs").exists() || krate.join("src/grpc").is_dir()
}

/// Whether `file` (under a service crate's `src/`) is an adapter module.
fn is_adapter(src: &Path, file: &Path) -> bool {
    let relative = file.strip_prefix(src).expect("file under src");
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    let stem = first.trim_end_matches(".rs");
    ADAPTERS.contains(&stem)
}

#[test]
fn every_module_says_what_it_is_for() {
    let missing: Vec<_> = rust_files(&crates_dir())
        .into_iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).expect("readable source");
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` comment saying what they are for: {missing:#?}"
    );
}

#[test]
fn generated_types_stay_in_adapter_modules() {
    let mut offenders = Vec::new();
    let mut services = 0;
    for entry in std::fs::read_dir(crates_dir()).expect("crates/") {
        let krate = entry.expect("crate folder").path();
        if !is_service_crate(&krate) {
            continue;
        }
        services += 1;
        let src = krate.join("src");
        for file in rust_files(&src) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            if text.contains("agora_proto") && !is_adapter(&src, &file) {
                offenders.push(file);
            }
        }
    }
    assert!(
        services >= 4,
        "the four services were not found under crates/"
    );
    assert!(
        offenders.is_empty(),
        "generated protobuf types used outside a service's adapter modules \
         ({ADAPTERS:?}); convert to domain types there instead: {offenders:#?}"
    );
}
