//! grpc.health.v1, following the protocol exactly.
//!
//! tonic-health's server answers `Watch` on an unknown service with NOT_FOUND and
//! has no way to flip every service at once, so this module keeps its own state and
//! only borrows the generated types:
//! - `Check` on an unknown service is NOT_FOUND;
//! - `Watch` on an unknown service sends SERVICE_UNKNOWN and keeps the stream open
//!   (the service may be registered later), then sends every change;
//! - readiness flips every service (and the overall "") together;
//! - on shutdown every service goes NOT_SERVING, that is sent to every watcher,
//!   and the Watch streams end, so they never hold the drain open.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

#[derive(Clone, Debug, Default, PartialEq)]
struct HealthState {
    statuses: BTreeMap<String, ServingStatus>,
    closing: bool,
}

/// The serving status of every service on one port. Cheap to clone; every clone
/// shares the same state.
#[derive(Clone, Debug)]
pub struct HealthRegistry {
    state: Arc<watch::Sender<HealthState>>,
}

impl HealthRegistry {
    /// A registry for these services plus the overall "" entry, all NOT_SERVING
    /// until readiness says otherwise.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let mut statuses = BTreeMap::new();
        statuses.insert(String::new(), ServingStatus::NotServing);
        for service in services {
            statuses.insert(service.to_owned(), ServingStatus::NotServing);
        }
        let (state, _) = watch::channel(HealthState {
            statuses,
            closing: false,
        });
        Self {
            state: Arc::new(state),
        }
    }

    /// Sets every service, and the overall entry, to SERVING or NOT_SERVING.
    /// Ignored once shutdown has begun.
    pub fn set_all_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.state.send_if_modified(|state| {
            if state.closing {
                return false;
            }
            let mut changed = false;
            for value in state.statuses.values_mut() {
                changed |= *value != status;
                *value = status;
            }
            changed
        });
    }

    /// The status of one service, `None` when it is not registered.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.state.borrow().statuses.get(service).copied()
    }

    /// Starts shutdown: everything NOT_SERVING, watchers told, then their streams end.
    pub fn shut_down(&self) {
        self.state.send_modify(|state| {
            state.closing = true;
            for value in state.statuses.values_mut() {
                *value = ServingStatus::NotServing;
            }
        });
    }

    /// The gRPC service answering Check and Watch from this registry.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            registry: self.clone(),
        })
    }
}

/// Implements grpc.health.v1.Health over a [`HealthRegistry`].
#[derive(Clone, Debug)]
pub struct HealthService {
    registry: HealthRegistry,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.registry.status(&service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status as i32,
            })),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let receiver = self.registry.state.subscribe();
        // State carried between items: the receiver, the last status sent, and
        // whether the stream is over.
        let initial = (receiver, None::<ServingStatus>, false);
        let stream = futures::stream::unfold(initial, move |(mut rx, last, done)| {
            let service = service.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let (status, closing) = {
                        let state = rx.borrow_and_update();
                        let status = state
                            .statuses
                            .get(&service)
                            .copied()
                            .unwrap_or(ServingStatus::ServiceUnknown);
                        (status, state.closing)
                    };
                    if last != Some(status) {
                        let reply = HealthCheckResponse {
                            status: status as i32,
                        };
                        return Some((Ok(reply), (rx, Some(status), closing)));
                    }
                    if closing {
                        return None;
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Polls `Check` on `channel` until `service` is SERVING, the way a readiness
/// probe does; fails after `timeout`. For launchers and tests, which must never
/// sleep a fixed time hoping a server is up.
pub async fn wait_until_serving(
    channel: tonic::transport::Channel,
    service: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let reply = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(reply, Ok(status) if status == ServingStatus::Serving as i32) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{service:?} not SERVING after {timeout:?}: {reply:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
