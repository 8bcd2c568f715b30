//! Database pool gauges and the write-transaction counter, read from the pool
//! at scrape time so they are never stale and cost nothing between scrapes.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::db::Database;

/// Reports the pool of the observed [`Database`], if any, on each scrape.
/// Clones share the observed database.
#[derive(Clone, Debug, Default)]
pub struct PoolCollector {
    database: Arc<Mutex<Option<Database>>>,
}

impl PoolCollector {
    /// Reports `database`'s pool from now on (a service owns one database, so
    /// this replaces any earlier one rather than emitting duplicate series).
    pub fn observe(&self, database: Database) {
        *self.database.lock().unwrap_or_else(PoisonError::into_inner) = Some(database);
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(database) = self
            .database
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let pool = database.pool();
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let max = i64::from(pool.options().get_max_connections());

        let mut connections = encoder.encode_descriptor(
            "agora_db_pool_connections",
            "Open connections of the database pool, by state.",
            None,
            MetricType::Gauge,
        )?;
        // The two reads are not atomic; never report a negative in_use.
        for (state, value) in [("idle", idle.min(size)), ("in_use", (size - idle).max(0))] {
            let labels = [("state", state)];
            ConstGauge::new(value).encode(connections.encode_family(&labels)?)?;
        }

        let max_connections = encoder.encode_descriptor(
            "agora_db_pool_max_connections",
            "Most connections the database pool may open.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(max).encode(max_connections)?;

        let writes = encoder.encode_descriptor(
            "agora_db_write_transactions",
            "Write transactions begun on the service's database.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(database.write_transactions()).encode(writes)
    }
}
