//! Starts every service in this process, each on its own port with its own
//! SQLite file, and stops them together on Ctrl-C or SIGTERM.

use std::path::Path;
use std::time::{Duration, Instant};

use agora_interceptors::auth::{Role, TokenIssuer, TokenSettings};
use agora_interceptors::{health, shutdown};
use agora_user::{UserConfig, UserKeys};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::dev_keys;

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

    let mut user = UserConfig::defaults();
    user.database_url = sqlite_url(data_dir, "user");
    user.serve.jwt_jwks_file = Some(keys.jwks_file.clone());
    let user_listener = TcpListener::bind(user.listen)
        .await
        .with_context(|| format!("binding the user service to {}", user.listen))?;
    let user_addr = user_listener.local_addr()?;
    let user_keys = UserKeys::with_verifying(keys.signing.clone(), keys.key_set.clone());
    let user_task = tokio::spawn(agora_user::serve(user, user_keys, user_listener, stopped()));

    let channel =
        tonic::transport::Channel::from_shared(format!("http://{user_addr}"))?.connect_lazy();
    health::wait_until_serving(
        channel,
        "agora.user.v1.UserService",
        Duration::from_secs(10),
    )
    .await?;

    let issuer = TokenIssuer::new(&keys.signing, TokenSettings::default())?;
    let admin = issuer.issue("dev-admin", Role::Admin, Duration::from_secs(12 * 3600))?;
    print_banner(&user_addr.to_string(), &admin.token, started.elapsed());

    shutdown::signal().await;
    let _ = stop_tx.send(true);
    user_task.await??;
    println!("agora stopped cleanly");
    Ok(())
}

fn sqlite_url(data_dir: &Path, service: &str) -> String {
    format!("sqlite://{}/{service}.db?mode=rwc", data_dir.display())
}

fn print_banner(user_addr: &str, admin_token: &str, elapsed: Duration) {
    println!(
        r#"
Agora is up ({elapsed:.0?}). Ctrl-C stops it.

  user       {user_addr}   agora.user.v1.UserService   SERVING

Try it (grpcurl):
  grpcurl -plaintext {user_addr} list
  grpcurl -plaintext -d '{{"email":"ada@example.com","display_name":"Ada","password":"correct horse battery staple"}}' \
    {user_addr} agora.user.v1.UserService/CreateUser
  grpcurl -plaintext -d '{{"email":"ada@example.com","password":"correct horse battery staple"}}' \
    {user_addr} agora.user.v1.UserService/Authenticate

Admin token (12 h; new ones with `cargo run -- token --role admin`):
  export AGORA_ADMIN_TOKEN={admin_token}
  grpcurl -plaintext -H "authorization: Bearer $AGORA_ADMIN_TOKEN" {user_addr} agora.user.v1.UserService/ListUsers
"#
    );
}
