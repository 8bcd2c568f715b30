//! Connecting the way grpc-go's blocking dial does, which is what
//! grpc_health_probe's `-connect-timeout` bounds: TCP (or a Unix socket),
//! TLS when asked, and the HTTP/2 handshake up to the server's SETTINGS
//! frame. A connection is only counted as made once the server has spoken
//! HTTP/2, so a port that accepts but answers something else (an HTTP/1
//! server, a TLS server to a plaintext probe) is a connection failure, not a
//! failed call. Failed attempts are retried until the timeout, as grpc-go
//! retries them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

use super::flags::{ProbeOptions, TlsOptions};

/// A byte stream the channel can run over.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Where `-addr` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`; an empty host is this machine, as in Go's `net.Dial`.
    Tcp { host: String, port: u16 },
    /// `unix:path` or `unix://path`.
    Unix(std::path::PathBuf),
}

impl Target {
    /// Reads `-addr` as grpc-go reads a target: `dns:///` and
    /// `passthrough:///` are dropped, `unix:` names a socket.
    pub fn parse(addr: &str) -> anyhow::Result<Self> {
        if let Some(path) = addr
            .strip_prefix("unix://")
            .or_else(|| addr.strip_prefix("unix:"))
        {
            return Ok(Self::Unix(path.into()));
        }
        let addr = addr
            .strip_prefix("dns:///")
            .or_else(|| addr.strip_prefix("passthrough:///"))
            .unwrap_or(addr);
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("{addr:?} has no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse()
            .with_context(|| format!("{port:?} is not a port"))?;
        let host = if host.is_empty() { "localhost" } else { host };
        anyhow::ensure!(
            !host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok(),
            "{addr:?} is not host:port"
        );
        Ok(Self::Tcp {
            host: host.to_owned(),
            port,
        })
    }

    /// The name TLS verifies by default: the host.
    fn host(&self) -> &str {
        match self {
            Self::Tcp { host, .. } => host,
            Self::Unix(_) => "localhost",
        }
    }

    /// The URI the channel puts in `:authority`.
    fn uri(&self) -> String {
        match self {
            Self::Tcp { host, port } if host.contains(':') => format!("http://[{host}]:{port}"),
            Self::Tcp { host, port } => format!("http://{host}:{port}"),
            Self::Unix(_) => "http://localhost".to_owned(),
        }
    }
}

/// Connects to `target` by `deadline`, retrying failed attempts; the last
/// attempt's error when the deadline passes first.
pub async fn connect(
    target: &Target,
    options: &ProbeOptions,
    tls: Option<&Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> Result<Channel, anyhow::Error> {
    let mut pause = Duration::from_millis(10);
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt(target, options, tls)).await {
            Err(_) => anyhow::anyhow!("timed out"),
            // Made, but later than asked: as late as not made.
            Ok(Ok(_)) if Instant::now() > deadline => anyhow::anyhow!("timed out"),
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(error)) => error,
        };
        if options.verbose {
            eprintln!("connection attempt failed: {error:#}");
        }
        if Instant::now() + pause >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// One attempt: a stream, TLS over it when asked, and a channel over that
/// once the server has sent its HTTP/2 SETTINGS.
async fn attempt(
    target: &Target,
    options: &ProbeOptions,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Channel> {
    let stream: Box<dyn Io> = match target {
        Target::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
        Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
    };
    let stream: Box<dyn Io> = match tls {
        Some(config) => {
            let name = options
                .tls
                .as_ref()
                .and_then(|tls| tls.server_name.clone())
                .unwrap_or_else(|| target.host().to_owned());
            let name = ServerName::try_from(name).context("TLS server name")?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            Box::new(connector.connect(name, stream).await?)
        }
        None => stream,
    };
    let (stream, settings) = FirstFrame::watch(stream);
    let endpoint = Endpoint::from_shared(target.uri())
        .or_else(|_| Endpoint::from_shared("http://localhost".to_owned()))?
        .user_agent(options.user_agent.clone())?;
    // The connector hands out the stream made above, once.
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: Uri| {
        let stream = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        async move {
            stream
                .map(TokioIo::new)
                .ok_or_else(|| io::Error::other("the probe connects once"))
        }
    });
    let channel = endpoint.connect_with_connector(connector).await?;
    settings
        .await
        .map_err(|_| anyhow::anyhow!("the connection ended before the server spoke"))?
        .map_err(anyhow::Error::msg)?;
    Ok(channel)
}

/// TLS settings from the `-tls-*` flags: the system's CAs unless
/// `-tls-ca-cert` names others, no verification at all with
/// `-tls-no-verify`, a client certificate when given; ALPN h2.
pub fn tls_config(tls: &TlsOptions) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.no_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_cert {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path).with_context(|| {
                    format!(
                        "failed to load root CA certificates from file ({})",
                        path.display()
                    )
                })? {
                    roots.add(cert?)?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        anyhow::ensure!(!roots.is_empty(), "no trusted CA certificates");
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.client_identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("failed to load client certificate ({})", cert.display()))?
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("failed to load client key ({})", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// `-tls-no-verify`: any certificate is accepted (the handshake's
/// signatures are still checked, so the peer holds the key it presents).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Watches the first bytes the server sends: an HTTP/2 server's first frame
/// is SETTINGS (9-byte header: length, type 4, flags without ACK, stream 0).
struct FirstFrame {
    inner: Box<dyn Io>,
    head: Vec<u8>,
    verdict: Option<oneshot::Sender<Result<(), String>>>,
}

/// The first 9 bytes of an HTTP/2 server's connection: a SETTINGS frame.
fn is_settings_frame(head: &[u8]) -> bool {
    head.len() >= 9 && head[3] == 0x4 && head[4] & 0x1 == 0 && head[5..9] == [0, 0, 0, 0]
}

impl FirstFrame {
    fn watch(inner: Box<dyn Io>) -> (Self, oneshot::Receiver<Result<(), String>>) {
        let (verdict, verdict_rx) = oneshot::channel();
        (
            Self {
                inner,
                head: Vec::with_capacity(9),
                verdict: Some(verdict),
            },
            verdict_rx,
        )
    }

    fn judge(&mut self, read: &[u8]) {
        let Some(verdict) = self.verdict.take() else {
            return;
        };
        if read.is_empty() {
            let _ = verdict.send(Err("the server closed the connection".into()));
            return;
        }
        let wanted = 9 - self.head.len();
        self.head.extend_from_slice(&read[..read.len().min(wanted)]);
        if self.head.len() < 9 {
            self.verdict = Some(verdict);
        } else if is_settings_frame(&self.head) {
            let _ = verdict.send(Ok(()));
        } else {
            let _ = verdict.send(Err(format!(
                "the server does not speak HTTP/2 (it began {:?})",
                String::from_utf8_lossy(&self.head)
            )));
        }
    }
}

impl AsyncRead for FirstFrame {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if self.verdict.is_some() {
            match &result {
                Ok(()) => {
                    let read = buf.filled()[before..].to_vec();
                    self.judge(&read);
                }
                Err(error) => {
                    if let Some(verdict) = self.verdict.take() {
                        let _ = verdict.send(Err(error.to_string()));
                    }
                }
            }
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for FirstFrame {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_grpc_go_reads_them() {
        let tcp = |host: &str, port| Target::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(Target::parse(":50051").unwrap(), tcp("localhost", 50051));
        assert_eq!(Target::parse("127.0.0.1:1").unwrap(), tcp("127.0.0.1", 1));
        assert_eq!(
            Target::parse("dns:///svc.ns:80").unwrap(),
            tcp("svc.ns", 80)
        );
        assert_eq!(Target::parse("[::1]:9").unwrap(), tcp("::1", 9));
        assert_eq!(
            Target::parse("unix:/run/agora.sock").unwrap(),
            Target::Unix("/run/agora.sock".into())
        );
        for bad in ["127.0.0.1", "http://127.0.0.1:50051", "host:port"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_settings_frame_counts_as_http2() {
        assert!(is_settings_frame(&[0, 0, 6, 4, 0, 0, 0, 0, 0]));
        assert!(!is_settings_frame(&[0, 0, 0, 4, 1, 0, 0, 0, 0]), "an ACK");
        assert!(!is_settings_frame(b"HTTP/1.1 400 Bad Request"));
        assert!(
            !is_settings_frame(&[0x15, 3, 3, 0, 2, 2, 80, 0, 0]),
            "a TLS alert"
        );
    }
}
