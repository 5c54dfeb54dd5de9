//! The native programs' origin connection (feature `tokio-net`): the same [`RespOrigin`] as
//! the worker, with tokio's `TcpStream` in place of a Workers socket.

use crate::origin::resp::{Connector, RespConfig, RespOrigin, SlotMap};
use std::future::Future;
use tokio::net::TcpStream;

pub struct TokioConnector;

impl Connector for TokioConnector {
    type Stream = TcpStream;

    async fn connect(&self, host: &str, port: u16, tls: bool) -> std::io::Result<TcpStream> {
        if tls {
            return Err(std::io::Error::other("rediss:// is supported by the worker only; from the CLI, reach the origin through a TLS tunnel"));
        }
        let s = TcpStream::connect((host, port)).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep(std::time::Duration::from_millis(ms))
    }
}

pub type NativeOrigin = RespOrigin<TokioConnector>;

/// A native RESP origin for `url` (`redis://[user:pass@]host:port`).
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
    Ok(RespOrigin::new(TokioConnector, c, SlotMap::default()))
}
