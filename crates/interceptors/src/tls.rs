//! TLS and mutual TLS (rustls, through tonic) for servers and for channels to
//! downstreams, configured by PEM file paths.
//!
//! Off by default: inside a cluster many teams terminate TLS in a mesh. When a
//! server has a certificate it speaks only TLS; with a client CA it also
//! requires every caller to present a certificate that CA signed (mTLS).
//! Kubernetes' native gRPC probes cannot speak TLS: with TLS on, probe with
//! `agora health` as an exec probe instead (see deploy/README.md).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Server TLS settings, shared by every service (`ServeArgs`).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTlsArgs {
    /// PEM certificate chain the server presents. With `--tls-key-file`,
    /// turns TLS on for the gRPC port (the metrics port stays plain HTTP).
    #[arg(long, env = "AGORA_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    #[arg(long, env = "AGORA_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM bundle of the CAs that sign client certificates. Set: every caller
    /// must present a certificate one of them signed (mutual TLS).
    #[arg(long, env = "AGORA_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server's TLS configuration, or `None` when TLS is off.
    pub fn load(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (cert, key) = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) if self.tls_client_ca_file.is_none() => return Ok(None),
            _ => anyhow::bail!(
                "TLS needs both AGORA_TLS_CERT_FILE and AGORA_TLS_KEY_FILE (and a client CA only with them)"
            ),
        };
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.tls_client_ca_file {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }
}

/// TLS settings for channels to downstreams (`https://` addresses).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsArgs {
    /// PEM bundle of the CAs trusted to sign downstream servers' certificates;
    /// required for `https://` downstream addresses.
    #[arg(long, env = "AGORA_DOWNSTREAM_TLS_CA_FILE")]
    pub downstream_tls_ca_file: Option<PathBuf>,

    /// PEM client certificate chain presented to downstreams that require
    /// mutual TLS.
    #[arg(
        long,
        env = "AGORA_DOWNSTREAM_TLS_CERT_FILE",
        requires = "downstream_tls_key_file"
    )]
    pub downstream_tls_cert_file: Option<PathBuf>,

    /// PEM private key of that client certificate.
    #[arg(
        long,
        env = "AGORA_DOWNSTREAM_TLS_KEY_FILE",
        requires = "downstream_tls_cert_file"
    )]
    pub downstream_tls_key_file: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The channels' TLS configuration, or `None` when no CA is configured.
    pub fn load(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.downstream_tls_ca_file else {
            anyhow::ensure!(
                self.downstream_tls_cert_file.is_none(),
                "a downstream client certificate needs AGORA_DOWNSTREAM_TLS_CA_FILE too"
            );
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        match (
            &self.downstream_tls_cert_file,
            &self.downstream_tls_key_file,
        ) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => anyhow::bail!("a downstream client certificate needs both its cert and key files"),
        }
        Ok(Some(config))
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
