//! An executable README: every shell block of README.md that uses grpcurl,
//! and every command line of the banner `cargo run` prints, run as written
//! with the real grpcurl (and jq, uuidgen) against a running suite. Only the
//! addresses change (the suite runs on free ports) and `cargo run -q --`
//! becomes the built `agora`, pointed at the suite's data folder.

use agora::suite::{Service, Storage, Suite};

use crate::tools;

/// The README's shell blocks that call grpcurl, in order, as one script.
fn readme_script() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(block), "```") => {
                let block = block.join("\n");
                if block.contains("grpcurl ") {
                    blocks.push(block);
                }
                current = None;
            }
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    assert!(
        blocks.len() >= 4,
        "the README's grpcurl blocks: {blocks:#?}"
    );
    blocks.join("\n\n")
}

/// `script` with the standard addresses replaced by `suite`'s.
fn on(suite: &Suite, script: &str) -> String {
    let mut script = script.replace("cargo run -q --", "\"$AGORA\"");
    for service in Service::ALL {
        script = script.replace(
            &format!("127.0.0.1:{}", service.standard_port()),
            &suite.addr(service).to_string(),
        );
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_grpcurl_examples_run_as_written() {
    let Some(path) = tools::shell_path() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let suite = crate::start(Storage::Dir(data.path().to_owned())).await;
    let script = on(&suite, &readme_script());
    let env = [
        ("AGORA", env!("CARGO_BIN_EXE_agora").to_owned()),
        ("AGORA_DATA_DIR", data.path().display().to_string()),
    ];
    let (code, output) = tools::bash(&format!("set -x\n{script}"), &path, &env).await;
    assert_eq!(code, 0, "the README's examples failed:\n{output}");
    // What the examples claim, seen in their output.
    for expected in [
        "\"displayName\": \"Ada L.\"",
        "ORDER_STATE_CONFIRMED",
        "PAYMENT_STATE_CAPTURED",
        "RESERVATION_STATE_RELEASED",
        "status: SERVING",
    ] {
        assert!(output.contains(expected), "no {expected} in:\n{output}");
    }
    suite.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banners_command_lines_run_as_printed() {
    let Some(path) = tools::shell_path() else {
        return;
    };
    let suite = crate::start(Storage::Ephemeral).await;
    let banner = agora::banner::render(&suite);
    let commands: Vec<&str> = banner
        .lines()
        .skip_while(|line| !line.starts_with("Ready tokens"))
        .filter(|line| line.starts_with("  "))
        .collect();
    assert!(
        commands
            .iter()
            .filter(|line| line.contains("grpcurl "))
            .count()
            >= 7,
        "{banner}"
    );
    let (code, output) = tools::bash(&format!("set -x\n{}", commands.join("\n")), &path, &[]).await;
    assert_eq!(code, 0, "the banner's lines failed:\n{output}");
    assert!(output.contains("ORDER_STATE_CANCELLED"), "{output}");
    assert!(output.contains("PAYMENT_DECLINED"), "{output}");
    // The curl walkthrough through the gateway: compact JSON (grpcurl's has
    // spaces), the SSE events of the watch, the cancelled order.
    assert!(
        commands
            .iter()
            .filter(|line| line.contains("curl "))
            .count()
            >= 6,
        "{banner}"
    );
    assert!(output.contains("data: {\"order\":"), "{output}");
    assert!(
        output.contains("\"state\":\"ORDER_STATE_CONFIRMED\""),
        "{output}"
    );
    assert!(
        output.contains("\"state\":\"ORDER_STATE_CANCEL"),
        "{output}"
    );
    suite.stop().await.expect("a clean stop");
}
