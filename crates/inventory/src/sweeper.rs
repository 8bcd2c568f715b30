//! The background task that gives expired holds back.
//!
//! A HELD reservation past its `expire_time` still counts in `reserved` until
//! someone expires it. The sweeper does so every interval; CommitReservation
//! also refuses (and expires) a due reservation on its own, so the sweep's
//! timing only decides how soon the units become available again, never
//! whether an expired hold can be sold.

use std::time::Duration;

use agora_interceptors::api::errors::error_chain;
use tokio_util::sync::CancellationToken;

use crate::store::Reservations;

/// Sweeps every `interval` until `stop` is cancelled. Several replicas may
/// sweep the same database: each reservation still expires exactly once.
pub async fn run(reservations: Reservations, interval: Duration, stop: CancellationToken) {
    let mut failing = false;
    loop {
        match reservations.expire_due().await {
            Ok(expired) => {
                if failing {
                    tracing::info!("reservation sweep recovered");
                    failing = false;
                }
                if expired > 0 {
                    tracing::info!(expired, "expired reservations released");
                }
            }
            // Logged once per outage, not once per interval; health already
            // reports an unreachable database.
            Err(error) if !failing => {
                tracing::warn!(error = %error_chain(&error), "reservation sweep failed; will retry");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
