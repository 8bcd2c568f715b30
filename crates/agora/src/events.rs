//! `agora events tail`: follows the domain events of a running suite through
//! each service's event feed (`agora.events.v1.EventFeedService`), printing
//! one line per event, in commit order per service.
//!
//! The wire types are only read here, to print them.

use std::net::SocketAddr;

use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use futures::StreamExt;
use tonic::metadata::MetadataValue;

use crate::suite::{Service, channel_to};

/// The services that produce events, with the address each feed is at.
pub fn producers(address: impl Fn(Service) -> SocketAddr) -> Vec<(Service, SocketAddr)> {
    [
        Service::User,
        Service::Order,
        Service::Payment,
        Service::Inventory,
    ]
    .into_iter()
    .map(|service| (service, address(service)))
    .collect()
}

/// One line for `event` received with `cursor` from `service`.
pub fn line(service: Service, cursor: &str, event: &pb::Event) -> String {
    let time = event
        .time
        .as_ref()
        .map(|t| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32),
            )
            .to_string()
        })
        .unwrap_or_default();
    let payload = event
        .payload
        .as_ref()
        .map(|p| format!("{p:?}"))
        .unwrap_or_default();
    format!(
        "{time} {:<9} {cursor:<8} {} {} #{} {payload}",
        service.label(),
        event.r#type,
        event.subject,
        event.sequence
    )
}

/// Follows the feeds of `producers` (from `from` when given: a cursor from
/// an earlier line, so meaningful with one service), keeping events of
/// `types` (all when empty), printing each line with `print`, until a feed
/// fails or ends. `token` must be an admin's or a service's.
pub async fn tail(
    producers: Vec<(Service, SocketAddr)>,
    types: Vec<String>,
    from: Option<String>,
    token: &str,
    print: impl Fn(String) + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut feeds = futures::stream::SelectAll::new();
    for (service, addr) in producers {
        let mut request = tonic::Request::new(pb::SubscribeRequest {
            cursor: from.clone().unwrap_or_default(),
            types: types.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        let stream = EventFeedServiceClient::new(channel_to(addr))
            .subscribe(request)
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "subscribing to the {} feed at {addr}: {:?} {}",
                    service.label(),
                    status.code(),
                    status.message()
                )
            })?
            .into_inner();
        feeds.push(stream.map(move |message| (service, message)));
    }
    while let Some((service, message)) = feeds.next().await {
        let message = message.map_err(|status| {
            anyhow::anyhow!(
                "the {} feed failed: {:?} {}",
                service.label(),
                status.code(),
                status.message()
            )
        })?;
        if let Some(event) = &message.event {
            print(line(service, &message.cursor, event));
        }
    }
    Ok(())
}
