//! Keeps a balanced channel's endpoints equal to the addresses a DNS name
//! resolves to, so a Kubernetes headless service's pods are all used and pods
//! that come and go are picked up.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Uri;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// How one downstream address is turned into endpoints.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http`, or `https` with TLS.
    pub scheme: String,
    /// TLS settings for `https`, with the host name as the name to verify.
    pub tls: Option<ClientTlsConfig>,
    /// The host name or literal IP to resolve.
    pub host: String,
    /// The port every endpoint uses.
    pub port: u16,
    /// The URI whose authority goes out in `:authority`, whatever address the
    /// connection went to.
    pub origin: Uri,
    /// How long to wait for one connection.
    pub connect_timeout: Duration,
}

impl Target {
    /// The target for `uri` (`scheme://host:port`): `http://` in plain text,
    /// `https://` over TLS with `tls` (which must then be given).
    pub fn parse(
        uri: &str,
        connect_timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let origin: Uri = uri.parse()?;
        let scheme = origin.scheme_str().unwrap_or("http").to_owned();
        match (scheme.as_str(), &tls) {
            ("http", None) | ("https", Some(_)) => {}
            ("https", None) => anyhow::bail!(
                "{uri} is https:// but no downstream CA is configured (AGORA_DOWNSTREAM_TLS_CA_FILE)"
            ),
            ("http", Some(_)) => anyhow::bail!(
                "TLS is configured for downstreams but {uri} is http://; use https://"
            ),
            _ => anyhow::bail!("unsupported scheme in downstream address {uri}"),
        }
        let host = origin
            .host()
            .ok_or_else(|| anyhow::anyhow!("downstream address has no host: {uri}"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = origin
            .port_u16()
            .ok_or_else(|| anyhow::anyhow!("downstream address has no port: {uri}"))?;
        // Certificates are checked against the name in the address, whatever
        // IP address it resolved to.
        let tls = tls.map(|tls| tls.domain_name(host.clone()));
        Ok(Self {
            scheme,
            tls,
            host,
            port,
            origin,
            connect_timeout,
        })
    }

    fn endpoint(&self, address: SocketAddr) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(format!("{}://{address}", self.scheme))?
            .origin(self.origin.clone())
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        Ok(endpoint)
    }
}

/// Feeds `changes` until the channel is dropped: a literal IP once, a name
/// every `every`, adding and removing endpoints only when the set changes. A
/// failed lookup keeps the last known set.
pub async fn run(target: Target, every: Duration, changes: Sender<Change<SocketAddr, Endpoint>>) {
    let mut current = HashSet::new();
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        let address = SocketAddr::new(ip, target.port);
        apply(&target, &mut current, HashSet::from([address]), &changes).await;
        changes.closed().await;
        return;
    }
    loop {
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(addresses) => {
                let resolved = addresses.collect::<HashSet<_>>();
                if resolved.is_empty() {
                    tracing::warn!(host = %target.host, "name resolved to no address; keeping the last set");
                } else {
                    apply(&target, &mut current, resolved, &changes).await;
                }
            }
            Err(error) => {
                tracing::warn!(host = %target.host, %error, "resolving downstream failed; keeping the last set");
            }
        }
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn apply(
    target: &Target,
    current: &mut HashSet<SocketAddr>,
    resolved: HashSet<SocketAddr>,
    changes: &Sender<Change<SocketAddr, Endpoint>>,
) {
    for gone in current.difference(&resolved) {
        tracing::info!(host = %target.host, address = %gone, "downstream endpoint removed");
        if changes.send(Change::Remove(*gone)).await.is_err() {
            return;
        }
    }
    for added in resolved.difference(current) {
        match target.endpoint(*added) {
            Ok(endpoint) => {
                tracing::info!(host = %target.host, address = %added, "downstream endpoint added");
                if changes
                    .send(Change::Insert(*added, endpoint))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => tracing::warn!(address = %added, %error, "bad endpoint address"),
        }
    }
    *current = resolved;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_literal_addresses() {
        let target = Target::parse("http://inventory:50054", Duration::from_secs(1), None).unwrap();
        assert_eq!((target.host.as_str(), target.port), ("inventory", 50054));
        let target = Target::parse("http://[::1]:7", Duration::from_secs(1), None).unwrap();
        assert_eq!(target.host, "::1");
        assert!(Target::parse("https://inventory:50054", Duration::from_secs(1), None).is_err());
        assert!(Target::parse("http://inventory", Duration::from_secs(1), None).is_err());
    }
}
