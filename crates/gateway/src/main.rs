//! `agora-gateway`: HTTP/JSON, gRPC-Web and gRPC in front of the four
//! services, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use agora_gateway::{Gateway, GatewayConfig};
use anyhow::Context as _;
use clap::Parser as _;

fn main() -> ExitCode {
    let config = GatewayConfig::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agora-gateway: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        if !config.print_openapi {
            agora_interceptors::telemetry::init(config.log_format);
        }
        match run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("agora-gateway failed: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    if let Some(url) = &config.probe {
        return probe(url).await;
    }
    let gateway = Gateway::new(&config)?;
    if config.print_openapi {
        println!("{}", String::from_utf8_lossy(&gateway.openapi()));
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "agora-gateway listening");
    gateway
        .serve(listener, agora_interceptors::shutdown::signal())
        .await
}

/// GET `url` within two seconds; an error unless the answer is 2xx.
async fn probe(url: &str) -> anyhow::Result<()> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = url.parse().context("the probe URL")?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(2), client.get(uri))
        .await
        .context("no answer within 2 s")??;
    anyhow::ensure!(
        answer.status().is_success(),
        "{url} answered {}",
        answer.status()
    );
    Ok(())
}
