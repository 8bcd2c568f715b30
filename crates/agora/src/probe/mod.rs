//! `agora health`: a drop-in for grpc_health_probe v0.4.56, so images need
//! no extra binary and exec probes written for the probe work unchanged.
//!
//! Same flags ([`flags`]: Go-style `-flag value`, `--flag`, `-flag=value`),
//! same messages on standard error and the same exit codes:
//!
//! | code | when |
//! | --- | --- |
//! | 0 | the service is SERVING |
//! | 1 | invalid arguments (unknown flag, bad value, flags that do not go together, TLS files that do not load) |
//! | 2 | no connection within `-connect-timeout` (refused, unreachable, not HTTP/2, TLS handshake failed) |
//! | 3 | the Check call failed (UNIMPLEMENTED, NOT_FOUND for an unknown service, past `-rpc-timeout`, …) |
//! | 4 | the service answered, but not SERVING |

pub mod connect;
pub mod flags;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use connect::Target;
use flags::{Parsed, ProbeOptions, format_go_duration};

/// grpc_health_probe's exit codes (0 is SERVING).
pub const INVALID_ARGUMENTS: u8 = 1;
/// No connection within the connect timeout.
pub const CONNECTION_FAILED: u8 = 2;
/// The Check call failed.
pub const RPC_FAILED: u8 = 3;
/// Answered, not SERVING.
pub const UNHEALTHY: u8 = 4;

/// Runs the probe with grpc_health_probe's command line `args`; the exit code.
pub async fn run(args: &[String]) -> ExitCode {
    match flags::parse(args) {
        Ok(Parsed::Probe(options)) => ExitCode::from(check(&options).await),
        Ok(Parsed::Version) => {
            println!(
                "agora health {} (grpc_health_probe v0.4.56 flags and exit codes)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(INVALID_ARGUMENTS)
        }
    }
}

fn nanos(duration: Duration) -> i128 {
    duration.as_nanos() as i128
}

/// Probes as `options` say, printing what grpc_health_probe prints; the exit
/// code.
pub async fn check(options: &ProbeOptions) -> u8 {
    let verbose = |line: &str| {
        if options.verbose {
            eprintln!("{line}");
        }
    };
    verbose(&format!(
        "parsed options:\n> addr={} conn_timeout={} rpc_timeout={}\n> tls={}",
        options.addr,
        format_go_duration(nanos(options.connect_timeout)),
        format_go_duration(nanos(options.rpc_timeout)),
        options.tls.is_some(),
    ));
    let tls = match options.tls.as_ref().map(connect::tls_config).transpose() {
        Ok(config) => config.map(Arc::new),
        Err(error) => {
            eprintln!("failed to initialize tls credentials. error={error:#}");
            return INVALID_ARGUMENTS;
        }
    };

    verbose("establishing connection");
    let connect_started = Instant::now();
    let deadline = connect_started + options.connect_timeout;
    let connected = match Target::parse(&options.addr) {
        Ok(target) => connect::connect(&target, options, tls.as_ref(), deadline).await,
        // grpc-go cannot dial it either, and keeps trying until the timeout.
        Err(error) => {
            tokio::time::sleep_until(deadline).await;
            Err(error)
        }
    };
    let channel = match connected {
        Ok(channel) => channel,
        Err(error) => {
            verbose(&format!("last connection error: {error:#}"));
            eprintln!(
                "timeout: failed to connect service {:?} within {}",
                options.addr,
                format_go_duration(nanos(options.connect_timeout))
            );
            return CONNECTION_FAILED;
        }
    };
    let connect_took = connect_started.elapsed();
    verbose(&format!(
        "connection established (took {})",
        format_go_duration(nanos(connect_took))
    ));

    let rpc_started = Instant::now();
    let answer = match call(channel, options).await {
        Ok(answer) if rpc_started.elapsed() <= options.rpc_timeout => Ok(answer),
        // Answered after the deadline: grpc-go reports the deadline.
        Ok(_) => Err(tonic::Status::deadline_exceeded(
            "context deadline exceeded",
        )),
        Err(status) => Err(status),
    };
    let rpc_took = rpc_started.elapsed();
    let status = match answer {
        Ok(status) => status,
        Err(status) => {
            match status.code() {
                tonic::Code::Unimplemented => eprintln!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    status.message()
                ),
                tonic::Code::DeadlineExceeded => eprintln!(
                    "timeout: health rpc did not complete within {}",
                    format_go_duration(nanos(options.rpc_timeout))
                ),
                code => eprintln!(
                    "error: health rpc failed: rpc error: code = {} desc = {}",
                    agora_interceptors::metrics::go_code_name(code),
                    status.message()
                ),
            }
            return RPC_FAILED;
        }
    };
    if status != ServingStatus::Serving as i32 {
        let name = ServingStatus::try_from(status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN");
        eprintln!("service unhealthy (responded with {name:?})");
        return UNHEALTHY;
    }
    verbose(&format!(
        "time elapsed: connect={} rpc={}",
        format_go_duration(nanos(connect_took)),
        format_go_duration(nanos(rpc_took))
    ));
    eprintln!("status: SERVING");
    0
}

/// The Check call, bounded by `-rpc-timeout` here and (as `grpc-timeout`) on
/// the server.
async fn call(
    channel: tonic::transport::Channel,
    options: &ProbeOptions,
) -> Result<i32, tonic::Status> {
    let mut client = HealthClient::new(channel);
    if options.gzip {
        client = client
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: options.service.clone(),
    });
    request.set_timeout(options.rpc_timeout);
    for (key, value) in &options.rpc_headers {
        let bad_key = || {
            tonic::Status::internal(format!(
                "header key {key:?} contains illegal characters not in [0-9a-z-_.]"
            ))
        };
        if key.ends_with("-bin") {
            let key = MetadataKey::from_bytes(key.as_bytes()).map_err(|_| bad_key())?;
            request
                .metadata_mut()
                .append_bin(key, MetadataValue::from_bytes(value.as_bytes()));
        } else {
            let key = MetadataKey::from_bytes(key.as_bytes()).map_err(|_| bad_key())?;
            let value = value.parse().map_err(|_| {
                tonic::Status::internal(format!("header {key:?} has a value that is not text"))
            })?;
            request.metadata_mut().append(key, value);
        }
    }
    match tokio::time::timeout(options.rpc_timeout, client.check(request)).await {
        Ok(reply) => reply.map(|reply| reply.into_inner().status),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "context deadline exceeded",
        )),
    }
}

/// True when `service` at `addr` answers SERVING within `timeout` (quietly).
pub async fn is_serving(addr: SocketAddr, service: &str, timeout: Duration) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
    else {
        return false;
    };
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    matches!(
        HealthClient::new(channel).check(request).await,
        Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32
    )
}
