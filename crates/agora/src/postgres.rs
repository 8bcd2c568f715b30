//! The suite on PostgreSQL (`agora --postgres URL`): one database per service
//! on one server, named `<prefix><service>` (`agora_user`, `agora_order`, …),
//! created when missing. Each service then applies its own migrations, as it
//! does on SQLite.

use std::collections::BTreeMap;

use anyhow::Context;
use sqlx::Connection;

use crate::suite::Service;

/// Creates each service's database on the server `url` points at (any
/// database there will do for connecting) unless it exists, and returns each
/// service's URL by label.
pub async fn create_databases(
    url: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<&'static str, String>> {
    anyhow::ensure!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "--postgres takes a postgres:// URL"
    );
    anyhow::ensure!(
        !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "the database prefix may hold only a-z, 0-9 and _"
    );
    let mut conn = sqlx::postgres::PgConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    let mut urls = BTreeMap::new();
    for service in Service::ALL {
        let name = format!("{prefix}{}", service.label());
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut conn)
                .await
                .context("listing the server's databases")?;
        if exists.is_none() {
            // The name is checked above: safe to quote into the statement.
            match sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
            {
                Ok(_) => tracing::info!(database = %name, "created"),
                // Created meanwhile by another suite starting: fine.
                Err(sqlx::Error::Database(error))
                    if matches!(error.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!("creating {name}")));
                }
            }
        }
        urls.insert(service.label(), with_database(url, &name));
    }
    conn.close().await.ok();
    Ok(urls)
}

/// `url` with its database name replaced by `name` (query kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    match (
        url[authority_start..].find('@'),
        url[authority_start..].find(':'),
    ) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}***{}",
            &url[..authority_start + colon + 1],
            &url[authority_start + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://pg@localhost:5432/postgres", "agora_user"),
            "postgres://pg@localhost:5432/agora_user"
        );
        assert_eq!(
            with_database("postgres://pg@localhost?sslmode=disable", "agora_order"),
            "postgres://pg@localhost/agora_order?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://pg:secret@localhost/x"),
            "postgres://pg:***@localhost/x"
        );
    }
}
