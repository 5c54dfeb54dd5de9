//! Native (non-wasm) tools: the operator's operations, the HTTP bridge and the load
//! generator. They reach the origin through the same [`RespOrigin`] as the worker, with
//! tokio's `TcpStream` in place of a Workers socket.

pub mod bridge;
pub mod load;
pub mod ops;
pub mod orders;
pub mod simulate;
pub mod sink;

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

/// The wall clock in Unix milliseconds (0 if it reads before 1970). The core takes `now` as
/// an argument; the native tools read it here.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A native RESP origin for `url` (`redis://[user:pass@]host:port`).
pub fn connect(
    url: &str,
    password: Option<String>,
    timeout_ms: u64,
) -> Result<NativeOrigin, String> {
    let mut c = RespConfig::from_url(url, timeout_ms)?;
    if c.password.is_none() {
        c.password = password;
    }
    Ok(RespOrigin::new(TokioConnector, c, SlotMap::default()))
}
