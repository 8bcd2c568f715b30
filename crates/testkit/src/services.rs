//! The services, each started for a test over real gRPC on a database of the
//! scenario's backend and trusting the scenario's [`Keys`]: the one way every
//! integration test (and the suite-level ones) brings a service up.

use std::sync::Arc;

use agora_interceptors::auth::{KeySet, Role, ServiceKeys, SigningKey};
use agora_inventory::InventoryConfig;
use agora_notification::{NotificationConfig, NotificationKeys, Notifier};
use agora_order::{OrderConfig, OrderKeys, ServeOptions};
use agora_payment::{PaymentConfig, PaymentProvider};
use agora_proto::user::v1 as user_pb;
use agora_user::{UserConfig, UserKeys};
use tonic::transport::Channel;

use crate::{TestDatabase, TestKeys, TestServer};

/// Health names of the services, which are also their gRPC names.
pub const USER: &str = "agora.user.v1.UserService";
/// See [`USER`].
pub const INVENTORY: &str = "agora.inventory.v1.InventoryService";
/// See [`USER`].
pub const PAYMENT: &str = "agora.payment.v1.PaymentService";
/// See [`USER`].
pub const ORDER: &str = "agora.order.v1.OrderService";
/// See [`USER`].
pub const NOTIFICATION: &str = "agora.notification.v1.NotificationService";

/// The password [`sign_up`] registers customers with.
pub const PASSWORD: &str = "correct horse battery staple";

/// A scenario's keys: `people` signs customers' and admins' tokens, as the
/// user service does; `order_service` is the order service's own key, whose
/// `service`-role tokens the other services trust.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Signs people's tokens (and the user service's Authenticate answers).
    pub people: TestKeys,
    /// The order service's own signing key.
    pub order_service: SigningKey,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

impl Keys {
    /// Fresh random keys.
    pub fn new() -> Self {
        Self {
            people: TestKeys::new(),
            order_service: SigningKey::generate("agora-order").expect("a signing key"),
        }
    }

    /// What user, inventory and payment trust: people's tokens and the order
    /// service's service tokens.
    pub fn downstream_key_set(&self) -> KeySet {
        let mut keys = self.people.key_set.clone();
        keys.insert(self.order_service.public_jwk())
            .expect("an Ed25519 key");
        keys
    }

    /// The order service's keys.
    pub fn order_keys(&self) -> OrderKeys {
        OrderKeys {
            verifying: self.people.key_set.clone(),
            service: self.order_service.clone(),
        }
    }

    /// The keys of a service that only reads the revocation list (payment,
    /// inventory): it trusts what they trust and signs its service tokens
    /// with the people key, which the user service trusts.
    pub fn service_keys(&self) -> ServiceKeys {
        ServiceKeys {
            verifying: self.downstream_key_set(),
            service: self.people.signing.clone(),
        }
    }

    /// A token for `subject` with `role`.
    pub fn token(&self, subject: &str, role: Role) -> String {
        self.people.token(subject, role)
    }

    /// An admin's token (a fresh admin each time).
    pub fn admin_token(&self) -> String {
        self.token(&uuid::Uuid::now_v7().to_string(), Role::Admin)
    }

    /// A customer's token for `user_id`.
    pub fn customer_token(&self, user_id: &str) -> String {
        self.token(user_id, Role::Customer)
    }

    /// A `service`-role token, as the order service sends.
    pub fn service_token(&self) -> String {
        self.token(agora_order::SERVICE_SUBJECT, Role::Service)
    }
}

/// The user service on `db`, signing with the people key; `adjust` changes
/// its settings first.
pub async fn start_user(
    db: &TestDatabase,
    keys: &Keys,
    adjust: impl FnOnce(&mut UserConfig),
) -> TestServer {
    let mut config = UserConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    adjust(&mut config);
    let keys = UserKeys::with_verifying(keys.people.signing.clone(), keys.downstream_key_set());
    TestServer::start(USER, |listener, shutdown| {
        agora_user::serve(config, keys, listener, shutdown)
    })
    .await
}

/// The inventory service on `db` (not following revocations unless `adjust`
/// sets `serve.revocation_poll` and `serve.revocation_url`; the same for
/// payment and notification).
pub async fn start_inventory(
    db: &TestDatabase,
    keys: &Keys,
    adjust: impl FnOnce(&mut InventoryConfig),
) -> TestServer {
    let mut config = InventoryConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.serve.revocation_poll = std::time::Duration::ZERO;
    adjust(&mut config);
    let keys = keys.service_keys();
    TestServer::start(INVENTORY, |listener, shutdown| {
        agora_inventory::serve(config, keys, listener, shutdown)
    })
    .await
}

/// The payment service on `db`, calling `provider`; its reconciler is off
/// unless `adjust` turns it on.
pub async fn start_payment(
    db: &TestDatabase,
    keys: &Keys,
    provider: Arc<dyn PaymentProvider>,
    adjust: impl FnOnce(&mut PaymentConfig),
) -> TestServer {
    let mut config = PaymentConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.reconcile_interval = std::time::Duration::ZERO;
    config.serve.revocation_poll = std::time::Duration::ZERO;
    adjust(&mut config);
    let keys = keys.service_keys();
    TestServer::start(PAYMENT, |listener, shutdown| {
        agora_payment::serve_with_provider(config, keys, provider, listener, shutdown)
    })
    .await
}

/// The order service with `config` (its database and downstream addresses
/// set by the caller).
pub async fn start_order(config: OrderConfig, keys: &Keys, options: ServeOptions) -> TestServer {
    let keys = keys.order_keys();
    TestServer::start(ORDER, |listener, shutdown| {
        agora_order::serve_with(config, keys, options, listener, shutdown)
    })
    .await
}

/// The notification service on `db`, consuming the feeds of the order
/// service at `order` and the payment service at `payment`, sending through
/// `notifier`. Its service tokens are signed with the people key, which
/// every service trusts.
pub async fn start_notification(
    db: &TestDatabase,
    keys: &Keys,
    order: std::net::SocketAddr,
    payment: std::net::SocketAddr,
    notifier: Arc<dyn Notifier>,
    adjust: impl FnOnce(&mut NotificationConfig),
) -> TestServer {
    let mut config = NotificationConfig::defaults();
    config.database.database_url = Some(db.url().to_owned());
    config.order_url = format!("http://{order}");
    config.payment_url = format!("http://{payment}");
    config.notify_retry_base = std::time::Duration::from_millis(10);
    config.feed_reconnect = std::time::Duration::from_millis(100);
    // A crashed replica's hold on a feed expires fast.
    config.feed_lease_ttl = std::time::Duration::from_secs(1);
    config.serve.rate_limit_per_second = 0;
    config.serve.revocation_poll = std::time::Duration::ZERO;
    adjust(&mut config);
    let keys = NotificationKeys {
        verifying: keys.people.key_set.clone(),
        service: keys.people.signing.clone(),
    };
    TestServer::start(NOTIFICATION, |listener, shutdown| {
        agora_notification::serve_with(config, keys, notifier, listener, shutdown)
    })
    .await
}

/// Registers a customer with [`PASSWORD`] through the user service and signs
/// them in: (the user, an access token).
pub async fn sign_up(user: Channel, email: &str) -> (user_pb::User, String) {
    let mut client = user_pb::user_service_client::UserServiceClient::new(user);
    let created = client
        .create_user(user_pb::CreateUserRequest {
            email: email.into(),
            display_name: "Test Customer".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user
        .expect("the created user");
    let token = client
        .authenticate(user_pb::AuthenticateRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .access_token;
    (created, token)
}
