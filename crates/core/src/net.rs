//! The native programs' origin connection (feature `tokio-net`): the same [`RespOrigin`] as
//! the worker, with tokio's `TcpStream` in place of a Workers socket, and rustls for
//! `rediss://`.
//!
//! Invariants for `rediss://`:
//! - The server's certificate must chain to a trusted root (webpki-roots' Mozilla roots, plus
//!   the CA in [`ORIGIN_CA_ENV`] when it is set) and be valid now for the URL's host, which is
//!   also the SNI name. An IP address host must be in the certificate's IP SANs.
//! - It fails closed: any handshake failure is a connect error that names the cause (e.g.
//!   `invalid peer certificate: UnknownIssuer`); there is no fallback to plaintext.

use crate::origin::resp::{Connector, RespConfig, RespOrigin, SlotMap};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A PEM file of CA certificates to trust for `rediss://`, besides the public roots.
pub const ORIGIN_CA_ENV: &str = "FLASHGATE_ORIGIN_CA";

/// Opens TCP connections, wrapped in TLS when the origin URL is `rediss://`.
pub struct TokioConnector {
    tls: Option<Arc<ClientConfig>>,
}

impl TokioConnector {
    /// Plain TCP only: a `rediss://` connect fails.
    pub fn plain() -> TokioConnector {
        TokioConnector { tls: None }
    }

    /// Trusts the public roots and the PEM certificates in `ca` (if any).
    pub fn with_tls(ca: Option<&std::path::Path>) -> Result<TokioConnector, String> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!("{ORIGIN_CA_ENV}={shown}: cannot read a PEM certificate: {e}")
                })?;
            if certs.is_empty() {
                return Err(format!("{ORIGIN_CA_ENV}={shown} holds no PEM certificate"));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{ORIGIN_CA_ENV}={shown}: not a usable CA: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TokioConnector {
            tls: Some(Arc::new(config)),
        })
    }
}

/// A connection to one origin node: plain, or TLS over TCP.
pub enum NetStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connector for TokioConnector {
    type Stream = NetStream;

    async fn connect(&self, host: &str, port: u16, tls: bool) -> io::Result<NetStream> {
        let config = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(c)) => Some(c.clone()),
            (true, None) => return Err(io::Error::other("this connection was set up without TLS")),
        };
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let Some(config) = config else {
            return Ok(NetStream::Plain(tcp));
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a TLS server name: {e}"),
            )
        })?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
        Ok(NetStream::Tls(Box::new(stream)))
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep(std::time::Duration::from_millis(ms))
    }
}

pub type NativeOrigin = RespOrigin<TokioConnector>;

/// A native RESP origin for `url` (`redis://[user:pass@]host:port`, or `rediss://` for TLS,
/// verified against the public roots and the CA in [`ORIGIN_CA_ENV`]).
pub fn connect(
    url: &str,
    password: Option<String>,
    timeout_ms: u64,
) -> Result<NativeOrigin, String> {
    connect_acked(url, password, timeout_ms, None)
}

/// [`connect`], with every write script waiting for `acks` replicas.
pub fn connect_acked(
    url: &str,
    password: Option<String>,
    timeout_ms: u64,
    acks: Option<crate::origin::Acks>,
) -> Result<NativeOrigin, String> {
    let mut c = RespConfig::from_url(url, timeout_ms)?;
    if c.password.is_none() {
        c.password = password;
    }
    c.acks = acks;
    let connector = if c.tls {
        let ca = std::env::var_os(ORIGIN_CA_ENV).filter(|v| !v.is_empty());
        TokioConnector::with_tls(ca.as_deref().map(std::path::Path::new))?
    } else {
        TokioConnector::plain()
    };
    Ok(RespOrigin::new(connector, c, SlotMap::default()))
}
