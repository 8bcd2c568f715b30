//! A user service for one test, with its typed client and the calls most
//! scenarios need. Starting it, tokens and error details come from
//! `agora_testkit`.

use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
pub use agora_testkit::PASSWORD;
use agora_testkit::services::{self, USER};
use agora_testkit::{Keys, TestDatabase, TestServer, sign_up, with_token};
use agora_user::UserConfig;
use tonic::transport::Channel;

/// A running user service.
pub struct TestApp {
    pub server: TestServer,
    pub client: UserServiceClient<Channel>,
    pub keys: Keys,
}

pub async fn spawn_app(db: &TestDatabase) -> TestApp {
    spawn_with(db, |_| {}).await
}

pub async fn spawn_with(db: &TestDatabase, adjust: impl FnOnce(&mut UserConfig)) -> TestApp {
    let keys = Keys::new();
    let server = services::start_user(db, &keys, adjust).await;
    TestApp {
        client: UserServiceClient::new(server.channel()),
        server,
        keys,
    }
}

impl TestApp {
    pub fn channel(&self) -> Channel {
        self.server.channel()
    }

    /// An admin token (minted from the key the service trusts).
    pub fn admin_token(&self) -> String {
        self.keys.admin_token()
    }

    /// Registers a customer and signs them in: (user, token).
    pub async fn customer(&self, email: &str) -> (pb::User, String) {
        sign_up(self.channel(), email).await
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
        agora_testkit::wait_until_serving(self.channel(), USER).await;
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.shut_down().await
    }
}
