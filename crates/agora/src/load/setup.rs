//! The load run's set-up over gRPC: customers signed up and in, products
//! created and topped up by an admin, and the stock read back to check that
//! nothing was oversold.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use agora_proto::inventory::v1 as inventory_pb;
use agora_proto::r#type::v1::Money;
use agora_proto::user::v1 as user_pb;
use anyhow::Context;
use futures::StreamExt;
use inventory_pb::inventory_service_client::InventoryServiceClient;
use user_pb::user_service_client::UserServiceClient;

use super::authorized;
use crate::dev_accounts;
use crate::suite::{authenticate, channel_to};

const CALL: Duration = Duration::from_secs(30);

/// Signs up `count` new customers (a few at a time: each password is an
/// argon2 hash) and returns their access tokens.
pub(super) async fn customers(user: SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
    let channel = channel_to(user);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let tokens = futures::stream::iter(0..count)
        .map(|i| {
            let channel = channel.clone();
            let email = format!("load-{}-{i}@example.com", &run[..12]);
            async move {
                let password = format!("load-password-{i}-{email}");
                let mut users = UserServiceClient::new(channel.clone());
                let mut request = tonic::Request::new(user_pb::CreateUserRequest {
                    email: email.clone(),
                    display_name: format!("Load customer {i}"),
                    password: password.clone(),
                });
                request.set_timeout(CALL);
                users
                    .create_user(request)
                    .await
                    .with_context(|| format!("CreateUser {email}"))?;
                let reply = authenticate(channel, &email, &password)
                    .await
                    .with_context(|| format!("Authenticate {email}"))?;
                anyhow::Ok(reply.access_token)
            }
        })
        .buffer_unordered(4);
    tokens.collect::<Vec<_>>().await.into_iter().collect()
}

/// An admin token for a running suite: the seeded admin signs in with the
/// password the launcher keeps under `data_dir`.
pub(super) async fn admin_token(user: SocketAddr, data_dir: &Path) -> anyhow::Result<String> {
    let accounts = dev_accounts::load(data_dir)?.with_context(|| {
        format!(
            "no development passwords under {}: pass --admin-token (or AGORA_ADMIN_TOKEN), \
             or --data-dir of the running suite",
            data_dir.display()
        )
    })?;
    let reply = authenticate(
        channel_to(user),
        &accounts.admin.email,
        &accounts.admin.password,
    )
    .await
    .context("signing the seeded admin in")?;
    Ok(reply.access_token)
}

/// Creates products `LOAD-0001`… (`count` of them; existing ones are kept)
/// and tops each up to `stock` available units. Returns their skus.
pub(super) async fn stock(
    inventory: SocketAddr,
    admin: &str,
    count: usize,
    stock: i64,
) -> anyhow::Result<Vec<String>> {
    let mut client = InventoryServiceClient::new(channel_to(inventory));
    let mut skus = Vec::with_capacity(count);
    for i in 1..=count {
        let sku = format!("LOAD-{i:04}");
        let product = inventory_pb::Product {
            sku: sku.clone(),
            name: format!("Load test product {i}"),
            description: "Made by agora load.".to_owned(),
            price: Some(Money {
                currency_code: "EUR".to_owned(),
                amount_minor: 100,
            }),
            ..Default::default()
        };
        match client
            .create_product(authorized(
                inventory_pb::CreateProductRequest {
                    product: Some(product),
                },
                admin,
                CALL,
            ))
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => {
                return Err(anyhow::Error::new(status).context(format!("CreateProduct {sku}")));
            }
        }
        let available = available_one(&mut client, &sku).await?;
        let mut missing = stock - available;
        while missing > 0 {
            let delta = missing.min(1_000_000_000);
            client
                .adjust_stock(authorized(
                    inventory_pb::AdjustStockRequest {
                        sku: sku.clone(),
                        delta,
                        reason: "agora load top-up".to_owned(),
                        request_id: uuid::Uuid::new_v4().to_string(),
                    },
                    admin,
                    CALL,
                ))
                .await
                .with_context(|| format!("AdjustStock {sku}"))?;
            missing -= delta;
        }
        skus.push(sku);
    }
    Ok(skus)
}

/// On-hand, reserved and available units of each sku, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stock {
    /// Units on hand.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
    /// Units that may still be ordered.
    pub available: i64,
}

/// The summed stock of `skus`.
pub(super) async fn available(inventory: SocketAddr, skus: &[String]) -> anyhow::Result<Stock> {
    let mut client = InventoryServiceClient::new(channel_to(inventory));
    let mut total = Stock::default();
    for sku in skus {
        let product = product(&mut client, sku).await?;
        total.on_hand += product.on_hand;
        total.reserved += product.reserved;
        total.available += product.available;
    }
    Ok(total)
}

async fn available_one(
    client: &mut InventoryServiceClient<tonic::transport::Channel>,
    sku: &str,
) -> anyhow::Result<i64> {
    Ok(product(client, sku).await?.available)
}

async fn product(
    client: &mut InventoryServiceClient<tonic::transport::Channel>,
    sku: &str,
) -> anyhow::Result<inventory_pb::Product> {
    let mut request = tonic::Request::new(inventory_pb::GetProductRequest {
        sku: sku.to_owned(),
    });
    request.set_timeout(CALL);
    client
        .get_product(request)
        .await
        .with_context(|| format!("GetProduct {sku}"))?
        .into_inner()
        .product
        .with_context(|| format!("GetProduct {sku} answered no product"))
}
