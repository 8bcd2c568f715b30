//! Starts a user service for one test and hands back typed clients.

use std::net::SocketAddr;

use agora_interceptors::auth::Role;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::{TestDatabase, TestKeys, channel, wait_until_serving, with_token};
use agora_user::{UserConfig, UserKeys};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const PASSWORD: &str = "correct horse battery staple";

/// A running user service.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: UserServiceClient<Channel>,
    pub keys: TestKeys,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    spawn_with(db, |_| {}).await
}

pub async fn spawn_with(db: &TestDatabase, adjust: impl FnOnce(&mut UserConfig)) -> TestApp {
    let keys = TestKeys::new();
    let mut config = UserConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let user_keys = UserKeys::with_verifying(keys.signing.clone(), keys.key_set.clone());
    let task = tokio::spawn(agora_user::serve(config, user_keys, listener, async {
        let _ = stopped.await;
    }));
    let channel = channel(addr);
    wait_until_serving(channel.clone(), "agora.user.v1.UserService").await;
    TestApp {
        addr,
        client: UserServiceClient::new(channel),
        keys,
        stop: Some(stop),
        task,
    }
}

impl TestApp {
    pub fn channel(&self) -> Channel {
        channel(self.addr)
    }

    /// An admin token (minted from the key the service trusts).
    pub fn admin_token(&self) -> String {
        self.keys
            .token(&uuid::Uuid::now_v7().to_string(), Role::Admin)
    }

    /// Registers a customer and signs them in: (user, token).
    pub async fn customer(&self, email: &str) -> (pb::User, String) {
        let mut client = self.client.clone();
        let user = client
            .create_user(pb::CreateUserRequest {
                email: email.into(),
                display_name: "Test Customer".into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("create user")
            .into_inner()
            .user
            .unwrap();
        let token = client
            .authenticate(pb::AuthenticateRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("authenticate")
            .into_inner()
            .access_token;
        (user, token)
    }

    pub async fn get(&self, user_id: &str, token: &str) -> Result<pb::User, tonic::Status> {
        self.client
            .clone()
            .get_user(with_token(
                pb::GetUserRequest {
                    user_id: user_id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().user.unwrap())
    }

    /// Asserts the server still answers (after a refused or failed call).
    pub async fn app_is_alive(&self) {
        agora_testkit::wait_until_serving(self.channel(), "agora.user.v1.UserService").await;
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// The field paths of a status's BadRequest violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}
