//! The provider lease that `payments` and `refunds` rows both carry: whoever
//! holds it may call the provider for the row until `lease_until`, and
//! `attempts` is its fencing token. A claim bumps the token; every write that
//! gives the lease back or records a provider answer names the token it was
//! taken with and the PENDING state, so a holder that lost its lease changes
//! nothing.
//!
//! The statements are the same for both tables but for the table and id
//! column. sqlx takes only `&'static str`, so each table has its own set,
//! written once by `lease_statements!` at compile time and picked by the
//! id's type ([`LeasedId`]).

use std::fmt;

use sqlx::Row;

use super::{PaymentStore, parse_stored};
use crate::domain::{ParseError, PaymentId, RefundId};
use crate::error::PaymentError;

/// The lease statements of one table.
#[derive(Debug)]
pub struct LeaseStatements {
    /// `$1` id, `$2` now, `$3` new `lease_until`; returns the new `attempts`.
    claim: &'static str,
    /// `$1` id, `$2` fence, `$3` now.
    release: &'static str,
    /// `$1` now, `$2` untouched since, `$3` limit; returns the ids as `id`.
    stale: &'static str,
}

/// The [`LeaseStatements`] of `$table`, whose key column is `$id`.
macro_rules! lease_statements {
    ($table:literal, $id:literal) => {
        LeaseStatements {
            claim: concat!(
                "UPDATE ",
                $table,
                " SET attempts = attempts + 1, lease_until = $3, updated_at = $2 \
                 WHERE ",
                $id,
                " = $1 AND state = 'PENDING' AND lease_until < $2 \
                 RETURNING attempts"
            ),
            release: concat!(
                "UPDATE ",
                $table,
                " SET lease_until = 0, updated_at = $3 \
                 WHERE ",
                $id,
                " = $1 AND state = 'PENDING' AND attempts = $2"
            ),
            stale: concat!(
                "SELECT ",
                $id,
                " AS id FROM ",
                $table,
                " WHERE state = 'PENDING' AND lease_until < $1 AND updated_at <= $2 \
                 ORDER BY ",
                $id,
                " LIMIT $3"
            ),
        }
    };
}

/// The id of a row that carries a provider lease: a payment's or a refund's.
pub trait LeasedId: Copy + fmt::Display + Send + Sync + 'static {
    /// Its table's statements.
    const LEASE: LeaseStatements;

    /// Parses an id read back from the table.
    fn from_stored(stored: &str) -> Result<Self, ParseError>;
}

impl LeasedId for PaymentId {
    const LEASE: LeaseStatements = lease_statements!("payments", "payment_id");

    fn from_stored(stored: &str) -> Result<Self, ParseError> {
        PaymentId::parse(stored)
    }
}

impl LeasedId for RefundId {
    const LEASE: LeaseStatements = lease_statements!("refunds", "refund_id");

    fn from_stored(stored: &str) -> Result<Self, ParseError> {
        RefundId::parse(stored)
    }
}

impl PaymentStore {
    /// Takes the provider lease of a PENDING row whose lease is free or
    /// expired, until `lease_until`; returns the new fencing token, or `None`
    /// when someone else holds the lease or the row is no longer PENDING.
    pub async fn claim<I: LeasedId>(
        &self,
        id: I,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>, PaymentError> {
        let row = sqlx::query(I::LEASE.claim)
            .bind(id.to_string())
            .bind(now)
            .bind(lease_until)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(row
            .map(|row| row.try_get::<i64, _>("attempts"))
            .transpose()?)
    }

    /// Gives the lease taken with `fence` back after a transient provider
    /// failure, so the next retry may call the provider again at once. False
    /// when the lease was lost meanwhile.
    pub async fn release<I: LeasedId>(
        &self,
        id: I,
        fence: i64,
        now: i64,
    ) -> Result<bool, PaymentError> {
        let result = sqlx::query(I::LEASE.release)
            .bind(id.to_string())
            .bind(fence)
            .bind(now)
            .execute(self.db.writer())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Up to `limit` PENDING rows whose lease expired before `now` and that
    /// nobody touched since `untouched_since`, oldest first: the rows nobody
    /// is driving any more, for the reconciler.
    pub async fn stale<I: LeasedId>(
        &self,
        now: i64,
        untouched_since: i64,
        limit: i64,
    ) -> Result<Vec<I>, PaymentError> {
        let rows = sqlx::query(I::LEASE.stale)
            .bind(now)
            .bind(untouched_since)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| parse_stored(I::from_stored, row.try_get("id")?))
            .collect()
    }
}
