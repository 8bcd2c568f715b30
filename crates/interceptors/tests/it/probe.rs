//! A test service served through the real `ServiceHost`: the user contract,
//! answered by a stub whose behaviour the request picks, so each layer can be
//! driven on purpose (panic, block, report the principal).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_interceptors::auth::{Access, KeySet, Principal, Role, ServicePolicy, TokenVerifier};
use agora_interceptors::client::DownstreamChannel;
use agora_interceptors::{ServeArgs, ServiceHost};
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_proto::user::v1::user_service_server::{UserService, UserServiceServer};
use agora_testkit::TestKeys;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The probe's access rules. UpdateUser is deliberately left out.
pub const PROBE_POLICY: ServicePolicy = ServicePolicy {
    service: "agora.user.v1.UserService",
    methods: &[
        ("CreateUser", Access::Public),
        ("GetUser", Access::Authenticated),
        ("ListUsers", Access::Roles(&[Role::Admin])),
        ("DeleteUser", Access::Roles(&[Role::Service])),
        ("Authenticate", Access::Public),
    ],
};

/// Shared state the test inspects.
pub struct ProbeState {
    /// Calls that reached a handler.
    pub entered: AtomicUsize,
    /// Blocks `GetUser{user_id: "block"}` until the test adds permits.
    pub gate: Arc<Semaphore>,
    /// Where `GetUser{user_id: "relay"}` forwards to (as GetUser "leaf"),
    /// with the token it sends there.
    pub relay: std::sync::OnceLock<(UserServiceClient<DownstreamChannel>, String)>,
}

impl Default for ProbeState {
    fn default() -> Self {
        Self {
            entered: AtomicUsize::new(0),
            gate: Arc::new(Semaphore::new(0)),
            relay: std::sync::OnceLock::new(),
        }
    }
}

#[derive(Clone)]
struct Probe {
    state: Arc<ProbeState>,
}

#[tonic::async_trait]
impl UserService for Probe {
    async fn create_user(
        &self,
        _: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        self.state.entered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::CreateUserResponse { user: None }))
    }

    /// Answers with the caller's subject as the user id; "panic" panics and
    /// "block" waits for the gate.
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        self.state.entered.fetch_add(1, Ordering::SeqCst);
        let principal = Principal::of(&request)?;
        match request.get_ref().user_id.as_str() {
            "panic" => panic!("probe asked to panic"),
            "block" => {
                let _permit = self.state.gate.acquire().await.expect("gate open");
            }
            "relay" => {
                let (client, token) = self.state.relay.get().expect("a relay target");
                let leaf = pb::GetUserRequest {
                    user_id: "leaf".into(),
                };
                return client
                    .clone()
                    .get_user(agora_testkit::with_token(leaf, token))
                    .await;
            }
            _ => {}
        }
        Ok(Response::new(pb::GetUserResponse {
            user: Some(pb::User {
                user_id: principal.subject,
                role: match principal.role {
                    Role::Customer => pb::Role::Customer,
                    Role::Admin => pb::Role::Admin,
                    Role::Service => pb::Role::Service,
                } as i32,
                ..Default::default()
            }),
        }))
    }

    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        unreachable!("no policy is declared, so the auth layer never lets this through")
    }

    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.state.entered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.state.entered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::ListUsersResponse::default()))
    }

    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Status::unimplemented("not in the probe"))
    }

    async fn revoke_tokens(
        &self,
        _: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        Err(Status::unimplemented("not in the probe"))
    }

    async fn list_revocations(
        &self,
        _: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        Err(Status::unimplemented("not in the probe"))
    }
}

/// A probe served by a real ServiceHost.
pub struct ProbeApp {
    pub addr: SocketAddr,
    pub keys: TestKeys,
    pub state: Arc<ProbeState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ProbeApp {
    pub async fn start(adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::start_with_keys(TestKeys::new(), None, adjust).await
    }

    /// Starts a probe trusting `keys` (plus `extra` keys, for rotation tests).
    pub async fn start_with_keys(
        keys: TestKeys,
        extra: Option<KeySet>,
        adjust: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        let mut settings = ServeArgs::default();
        adjust(&mut settings);
        let mut key_set = keys.key_set.clone();
        if let Some(extra) = extra {
            key_set.merge(&extra).unwrap();
        }
        let verifier = TokenVerifier::new(key_set, &keys.settings);
        let settings_tls = settings.tls.tls_cert_file.is_some();
        let state = Arc::new(ProbeState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        // Configured as every real service is (size limit, compression).
        let server = agora_interceptors::grpc_server!(
            UserServiceServer::new(Probe {
                state: state.clone(),
            }),
            settings
        );
        let host = ServiceHost::new(settings, verifier).add_service(server, &PROBE_POLICY);
        let tls = settings_tls;
        let task = tokio::spawn(host.serve(listener, async {
            let _ = stopped.await;
        }));
        // A TLS host is polled by its test, which holds the client certificates.
        if !tls {
            agora_testkit::wait_until_serving(agora_testkit::channel(addr), "").await;
        }
        Self {
            addr,
            keys,
            state,
            stop: Some(stop),
            task,
        }
    }

    pub fn channel(&self) -> Channel {
        agora_testkit::channel(self.addr)
    }

    pub fn client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel())
    }

    /// GetUser with `token` (or none), answering the caller's subject.
    pub async fn whoami(&self, token: Option<&str>) -> Result<pb::User, Status> {
        let message = pb::GetUserRequest {
            user_id: "whoami".into(),
        };
        let request = match token {
            Some(token) => agora_testkit::with_token(message, token),
            None => Request::new(message),
        };
        self.client()
            .get_user(request)
            .await
            .map(|r| r.into_inner().user.unwrap_or_default())
    }

    /// Stops the host; returns how long the stop took and the serve result.
    pub async fn stop(mut self) -> (Duration, anyhow::Result<()>) {
        let started = std::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = self.task.await.expect("serve task");
        (started.elapsed(), result)
    }
}
