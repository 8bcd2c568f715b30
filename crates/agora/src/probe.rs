//! `agora health`: a grpc_health_probe work-alike, so images need no extra binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// grpc_health_probe's exit codes (0 is SERVING).
pub const INVALID_ARGUMENTS: u8 = 1;
const CONNECTION_FAILED: u8 = 2;
const RPC_FAILED: u8 = 3;
const UNHEALTHY: u8 = 4;

/// Checks `service` at `addr` and prints the outcome the way grpc_health_probe does.
pub async fn check(addr: &str, service: &str, timeout: Duration) -> ExitCode {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
        Err(error) => {
            eprintln!("error: bad address {addr:?}: {error}");
            return ExitCode::from(INVALID_ARGUMENTS);
        }
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => {
            eprintln!("error: connection to {addr} failed: {error}");
            return ExitCode::from(CONNECTION_FAILED);
        }
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    match reply.map(|r| r.into_inner().status) {
        Ok(status) if status == ServingStatus::Serving as i32 => {
            println!("status: SERVING");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            let name = ServingStatus::try_from(status)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            eprintln!("service unhealthy (responded with {name:?})");
            ExitCode::from(UNHEALTHY)
        }
        Err(status) => {
            eprintln!(
                "error: health rpc failed: {:?}: {}",
                status.code(),
                status.message()
            );
            ExitCode::from(RPC_FAILED)
        }
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
