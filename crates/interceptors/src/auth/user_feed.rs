//! The user service's `ListRevocations` as a [`RevocationFeed`]: how every
//! service other than the user service learns which tokens are revoked,
//! calling with its own `service`-role token through the shared client stack.

use std::sync::Arc;
use std::time::Duration;

use agora_proto::user::v1 as pb;
use pb::user_service_client::UserServiceClient;
use tonic::Request;

use super::revocations::{FeedRead, Revocation, RevocationBatch, RevocationFeed};
use crate::api::time::{parse_timestamp, timestamp_from_micros};
use crate::client::{BearerSource, Downstream, DownstreamChannel};
use crate::metrics::GrpcMetrics;

const LIST_REVOCATIONS: &str = "/agora.user.v1.UserService/ListRevocations";

/// Longest one page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most pages one read follows (1,000 revocations each): a bound on a read,
/// far above the revocations of one token lifetime.
const MAX_PAGES: usize = 1000;

/// Reads revocations from the user service.
#[derive(Clone, Debug)]
pub struct UserServiceFeed {
    client: UserServiceClient<DownstreamChannel>,
}

impl UserServiceFeed {
    /// A feed calling the user service at `url` with `credentials`.
    pub fn connect(
        url: &str,
        credentials: Arc<dyn BearerSource>,
        tls: Option<tonic::transport::ClientTlsConfig>,
        metrics: &GrpcMetrics,
    ) -> anyhow::Result<Self> {
        let channel = Downstream::builder("user", url)
            .retryable(&[LIST_REVOCATIONS])
            .tls(tls)
            .bearer(credentials)
            .metrics(metrics)
            .build()?;
        Ok(Self {
            client: UserServiceClient::new(channel),
        })
    }
}

impl RevocationFeed for UserServiceFeed {
    fn read(&self, since: i64) -> FeedRead<'_> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let mut batch = RevocationBatch::default();
            let mut page_token = String::new();
            for page in 0..MAX_PAGES {
                let mut request = Request::new(pb::ListRevocationsRequest {
                    since: Some(timestamp_from_micros(since)),
                    page_size: 1000,
                    page_token,
                });
                request.set_timeout(PAGE_TIMEOUT);
                let answer = client
                    .list_revocations(request)
                    .await
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
                    .into_inner();
                if page == 0 {
                    // The first page's clock: nothing committed after it is
                    // assumed seen.
                    batch.horizon = micros(answer.horizon_time.as_ref())?;
                    batch.read_at = micros(answer.read_time.as_ref())?;
                }
                for revocation in answer.revocations {
                    batch.revocations.push(Revocation {
                        revoked_at: micros(revocation.revoke_time.as_ref())?,
                        subject: revocation.subject,
                    });
                }
                if answer.next_page_token.is_empty() {
                    return Ok(batch);
                }
                page_token = answer.next_page_token;
            }
            Err(format!("more than {MAX_PAGES} pages of revocations"))
        })
    }
}

fn micros(timestamp: Option<&prost_types::Timestamp>) -> Result<i64, String> {
    let timestamp = timestamp.ok_or("the user service sent a revocation without a time")?;
    parse_timestamp(timestamp)
        .map_err(|e| format!("a bad time from the user service: {}", e.message()))
}
