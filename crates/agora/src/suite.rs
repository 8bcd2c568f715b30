//! Starts every service in this process, each on its own port with its own
//! SQLite file and metrics port, and stops them together on Ctrl-C or SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use agora_interceptors::auth::{Role, TokenIssuer, TokenSettings};
use agora_interceptors::{ServeArgs, health, shutdown};
use agora_inventory::InventoryConfig;
use agora_order::{OrderConfig, OrderKeys};
use agora_payment::PaymentConfig;
use agora_user::{UserConfig, UserKeys};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dev_keys::{self, DevKeys};

/// One service of the suite once bound.
struct Running {
    label: &'static str,
    grpc_service: &'static str,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Runs the suite until a shutdown signal.
pub async fn run(data_dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let keys = dev_keys::load_or_create(data_dir)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let mut services = Vec::new();

    let mut user = UserConfig::defaults();
    user.database_url = sqlite_url(data_dir, "user");
    prepare(&mut user.serve, &keys, 50151);
    let listener = bind(user.listen, "user").await?;
    let user_keys = UserKeys::with_verifying(keys.signing.clone(), keys.key_set.clone());
    let metrics = user.serve.metrics_listen;
    services.push(spawn(
        "user",
        "agora.user.v1.UserService",
        listener,
        metrics,
        |listener| agora_user::serve(user, user_keys, listener, stopped()),
    )?);

    let mut payment = PaymentConfig::defaults();
    payment.database_url = sqlite_url(data_dir, "payment");
    prepare(&mut payment.serve, &keys, 50153);
    let listener = bind(payment.listen, "payment").await?;
    let metrics = payment.serve.metrics_listen;
    let key_set = keys.key_set.clone();
    services.push(spawn(
        "payment",
        "agora.payment.v1.PaymentService",
        listener,
        metrics,
        |listener| agora_payment::serve(payment, key_set, listener, stopped()),
    )?);

    let mut inventory = InventoryConfig::defaults();
    inventory.database_url = sqlite_url(data_dir, "inventory");
    inventory.seed_demo = true;
    prepare(&mut inventory.serve, &keys, 50154);
    let listener = bind(inventory.listen, "inventory").await?;
    let metrics = inventory.serve.metrics_listen;
    let key_set = keys.key_set.clone();
    services.push(spawn(
        "inventory",
        "agora.inventory.v1.InventoryService",
        listener,
        metrics,
        |listener| agora_inventory::serve(inventory, key_set, listener, stopped()),
    )?);

    // Order calls the other three; its dev service key is the dev signing key,
    // which they all trust through jwks.json.
    let mut order = OrderConfig::defaults();
    order.database_url = sqlite_url(data_dir, "order");
    prepare(&mut order.serve, &keys, 50152);
    let listener = bind(order.listen, "order").await?;
    let metrics = order.serve.metrics_listen;
    let order_keys = OrderKeys {
        verifying: keys.key_set.clone(),
        service: keys.signing.clone(),
    };
    services.insert(
        1,
        spawn(
            "order",
            "agora.order.v1.OrderService",
            listener,
            metrics,
            |listener| agora_order::serve(order, order_keys, listener, stopped()),
        )?,
    );

    // Every service SERVING, checked over gRPC as a probe would.
    let waits = services.iter().map(|service| {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.addr))
            .expect("a socket address is a valid URI")
            .connect_lazy();
        health::wait_until_serving(channel, service.grpc_service, Duration::from_secs(30))
    });
    for result in futures::future::join_all(waits).await {
        result?;
    }

    let issuer = TokenIssuer::new(&keys.signing, TokenSettings::default())?;
    let admin = issuer.issue("dev-admin", Role::Admin, Duration::from_secs(12 * 3600))?;
    print_banner(&services, &admin.token, started.elapsed());

    shutdown::signal().await;
    let _ = stop_tx.send(true);
    let mut failed = None;
    for service in services {
        match service.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failed = Some(error.context(service.label)),
            Err(error) => failed = Some(anyhow::Error::new(error).context(service.label)),
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    println!("agora stopped cleanly");
    Ok(())
}

/// Dev keys and a metrics port (`127.0.0.1:metrics_port`) for one service.
fn prepare(serve: &mut ServeArgs, keys: &DevKeys, metrics_port: u16) {
    serve.jwt_jwks_file = Some(keys.jwks_file.clone());
    serve.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
}

async fn bind(addr: SocketAddr, label: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding the {label} service to {addr} (is another suite running?)")
    })
}

fn spawn<F>(
    label: &'static str,
    grpc_service: &'static str,
    listener: TcpListener,
    metrics: Option<SocketAddr>,
    serve: impl FnOnce(TcpListener) -> F,
) -> anyhow::Result<Running>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let addr = listener.local_addr()?;
    Ok(Running {
        label,
        grpc_service,
        addr,
        metrics,
        task: tokio::spawn(serve(listener)),
    })
}

fn sqlite_url(data_dir: &Path, service: &str) -> String {
    format!("sqlite://{}/{service}.db?mode=rwc", data_dir.display())
}

fn print_banner(services: &[Running], admin_token: &str, elapsed: Duration) {
    println!("\nAgora is up ({elapsed:.0?}). Ctrl-C stops it.\n");
    for service in services {
        let metrics = service
            .metrics
            .map(|m| format!("metrics http://{m}/metrics"))
            .unwrap_or_default();
        println!(
            "  {:<10} {}   {:<38} SERVING   {metrics}",
            service.label, service.addr, service.grpc_service
        );
    }
    println!(
        r#"
Try it (grpcurl; README.md has the whole walkthrough):
  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext -d '{{"email":"ada@example.com","display_name":"Ada","password":"correct horse battery staple"}}' \
    127.0.0.1:50051 agora.user.v1.UserService/CreateUser
  TOKEN=$(grpcurl -plaintext -d '{{"email":"ada@example.com","password":"correct horse battery staple"}}' \
    127.0.0.1:50051 agora.user.v1.UserService/Authenticate | jq -r .accessToken)
  grpcurl -plaintext -d '{{"page_size":10}}' 127.0.0.1:50054 agora.inventory.v1.InventoryService/ListProducts
  ORDER=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{{"lines":[{{"sku":"SKU-MUG","quantity":2}}],"payment_method_token":"tok_visa","request_id":"'$(uuidgen)'"}}' \
    127.0.0.1:50052 agora.order.v1.OrderService/PlaceOrder | jq -r .order.orderId)
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"'$ORDER'"}}' 127.0.0.1:50052 agora.order.v1.OrderService/WatchOrder
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"'$ORDER'","reason":"changed my mind"}}' \
    127.0.0.1:50052 agora.order.v1.OrderService/CancelOrder

Admin token (12 h; new ones with `cargo run -- token --role admin`):
  export AGORA_ADMIN_TOKEN={admin_token}
  grpcurl -plaintext -H "authorization: Bearer $AGORA_ADMIN_TOKEN" 127.0.0.1:50051 agora.user.v1.UserService/ListUsers
  grpcurl -plaintext -H "authorization: Bearer $AGORA_ADMIN_TOKEN" -d '{{"sku":"SKU-MUG","delta":5,"reason":"restock","request_id":"restock-1"}}' \
    127.0.0.1:50054 agora.inventory.v1.InventoryService/AdjustStock
"#
    );
}
