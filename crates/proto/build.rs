//! Compiles every `.proto` under the workspace's `proto/` folder with the pure-Rust
//! `protox` compiler (no `protoc` needed on a fresh machine), then hands the resulting
//! descriptor set to tonic-prost-build. The encoded descriptor set is also written to
//! `OUT_DIR` so the servers can offer it through gRPC reflection.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The package's folder at run time, not at compile time (`env!`), and
    // change-tracking paths relative to it: cargo shares this build script
    // between checkouts of the workspace (git worktrees with one target
    // folder), and absolute paths would point it at another checkout's files.
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../../proto").canonicalize()?;
    let mut files = Vec::new();
    collect_protos(&root, &mut files)?;
    files.sort();
    let relative =
        |path: &Path| Path::new("../../proto").join(path.strip_prefix(&root).unwrap_or(path));
    println!("cargo:rerun-if-changed={}", relative(&root).display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", relative(file).display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    let descriptors = compiler.file_descriptor_set();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by the compiler rather than from `descriptors`: prost's types
    // drop extension options, and the gateway reads its routes from the
    // `google.api.http` option of each method.
    std::fs::write(
        out_dir.join("agora_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
