//! The background task that completes PENDING payments and refunds nobody is
//! driving any more: after a crash between recording and the provider's
//! answer, or a caller that got UNAVAILABLE and never retried.
//!
//! It is the same code path as a retry with the same key (claim the lease,
//! ask the provider with the same provider key, record the answer), so it can
//! run on every replica at once: the lease lets one of them act per row.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::PaymentEngine;

/// Runs a pass every `interval` until `stop` is cancelled. A pass takes rows
/// untouched for at least `interval`, so a caller that is about to retry is
/// not raced for no reason.
pub async fn run(engine: PaymentEngine, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let pass = tokio::select! {
            () = stop.cancelled() => return,
            pass = engine.reconcile_once(interval) => pass,
        };
        match pass {
            Ok(report) if report.payments + report.refunds > 0 => {
                tracing::info!(
                    payments = report.payments,
                    refunds = report.refunds,
                    "reconciler re-drove stale pending rows"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reconciler pass failed; retrying next interval"),
        }
    }
}
