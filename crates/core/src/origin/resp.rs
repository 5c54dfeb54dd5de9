//! RESP2 over a byte stream: the codec, one connection, and a cluster-aware [`RespOrigin`].
//!
//! The stream comes from a [`Connector`]: `worker::Socket` in the worker, tokio's `TcpStream`
//! natively (CLI, bridge, tests), so both run this same code. Parsing is `redis-protocol`'s.
//!
//! Invariants:
//! - Every call is bounded by `timeout_ms`, connect and redirects included. A timeout before
//!   the command was written is [`OriginError::NotSent`]; after, [`OriginError::MayHaveRun`].
//! - A connection that failed mid-command is dropped, never reused (its reply stream is lost).
//! - MOVED updates the slot map and retries on the owner; ASK retries once with ASKING and does
//!   not. At most [`MAX_REDIRECTS`] hops.
//! - A node that cannot be reached, or that fails or goes silent mid-command, loses every slot
//!   the map gave it, so the next command for those slots goes to the seed, whose MOVED names
//!   the slot's owner now. That is how a failover is followed: a dead primary's slots are asked
//!   again, and the seed answers with the promoted replica (once the cluster has promoted one).
//!   The seed itself must be reachable (a cluster's configuration endpoint, or a node other
//!   than the ones expected to fail).

use super::{Acks, Cmd, Origin, OriginError, ServerError, Value};
use crate::keys::slot;
use futures_util::future::{select, Either};
use futures_util::lock::Mutex as AsyncMutex;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAX_REDIRECTS: usize = 5;
/// Replies larger than this are refused (a misbehaving server must not exhaust the isolate).
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// Encodes a command as a RESP2 array of bulk strings.
pub fn encode_command(args: &[String]) -> Vec<u8> {
    let parts: Vec<BorrowedFrame<'_>> = args
        .iter()
        .map(|a| BorrowedFrame::BulkString(a.as_bytes()))
        .collect();
    let frame = BorrowedFrame::Array(&parts);
    let mut buf = vec![0u8; frame.encode_len(false)];
    let n = encode_borrowed(&mut buf, &frame, false).expect("buffer sized by encode_len");
    buf.truncate(n);
    buf
}

/// One decoded reply: a value, or the server's error line.
pub type ServerReply = Result<Value, ServerError>;

/// Decodes one reply from the front of `buf`: `Ok(None)` when more bytes are needed,
/// else the reply and how many bytes it used.
pub fn decode_reply(
    buf: &[u8],
) -> Result<Option<(ServerReply, usize)>, redis_protocol::error::RedisProtocolError> {
    match decode(buf)? {
        None => Ok(None),
        Some((frame, used)) => Ok(Some((frame_to_reply(frame), used))),
    }
}

fn frame_to_reply(f: OwnedFrame) -> ServerReply {
    match f {
        OwnedFrame::Error(e) => Err(ServerError::parse(&e)),
        other => Ok(frame_to_value(other)),
    }
}

fn frame_to_value(f: OwnedFrame) -> Value {
    match f {
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
            Value::Str(String::from_utf8_lossy(&b).into_owned())
        }
        // An error nested in an array is kept as its text with the leading dash.
        OwnedFrame::Error(e) => Value::Str(format!("-{e}")),
        OwnedFrame::Integer(i) => Value::Int(i),
        OwnedFrame::Array(a) => Value::Array(a.into_iter().map(frame_to_value).collect()),
        OwnedFrame::Null => Value::Nil,
    }
}

/// One RESP connection: a stream and its read buffer.
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::with_capacity(512),
        }
    }

    /// Sends one command and reads its reply. `sent` is set once the bytes are written.
    pub async fn request(
        &mut self,
        args: &[String],
        sent: &AtomicBool,
    ) -> Result<ServerReply, OriginError> {
        self.send(&encode_command(args), sent).await?;
        self.read_reply().await
    }

    /// Sends two commands in one write (a pipeline: one round trip) and reads both replies.
    pub async fn request_pair(
        &mut self,
        first: &[String],
        second: &[String],
        sent: &AtomicBool,
    ) -> Result<(ServerReply, ServerReply), OriginError> {
        let mut bytes = encode_command(first);
        bytes.extend(encode_command(second));
        self.send(&bytes, sent).await?;
        let a = self.read_reply().await?;
        Ok((a, self.read_reply().await?))
    }

    async fn send(&mut self, bytes: &[u8], sent: &AtomicBool) -> Result<(), OriginError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| OriginError::not_sent("write").caused_by(e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| OriginError::may_have_run("flush").caused_by(e))?;
        sent.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn read_reply(&mut self) -> Result<ServerReply, OriginError> {
        loop {
            let decoded = decode_reply(&self.buf)
                .map_err(|e| OriginError::may_have_run("bad RESP from origin").caused_by(e))?;
            if let Some((reply, used)) = decoded {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(OriginError::may_have_run("reply too large"));
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| OriginError::may_have_run("read").caused_by(e))?;
            if n == 0 {
                return Err(OriginError::may_have_run("origin closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Opens byte streams to origin nodes and provides a timer.
#[allow(async_fn_in_trait)]
pub trait Connector {
    type Stream: AsyncRead + AsyncWrite + Unpin;
    async fn connect(&self, host: &str, port: u16, tls: bool) -> io::Result<Self::Stream>;
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

/// Where and how to reach a RESP origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespConfig {
    pub seed: Node,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout_ms: u64,
    /// Replicas every write script must reach before it counts (`None`: do not wait).
    pub acks: Option<Acks>,
}

impl RespConfig {
    /// `redis://[user:password@]host[:port]` or `rediss://...` (TLS).
    pub fn from_url(url: &str, timeout_ms: u64) -> Result<RespConfig, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err(format!(
                "origin URL {url:?} must start with redis:// or rediss://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h.to_string(),
                p.parse()
                    .map_err(|_| format!("bad port in origin URL {url:?}"))?,
            ),
            _ => (hostport.to_string(), 6379),
        };
        if host.is_empty() {
            return Err(format!("origin URL {url:?} has no host"));
        }
        Ok(RespConfig {
            seed: Node { host, port },
            tls,
            username,
            password,
            timeout_ms,
            acks: None,
        })
    }
}

/// Slot → node, learned from MOVED replies; shared by every RespOrigin of one isolate/process.
pub type SlotMap = Arc<Mutex<HashMap<u16, Node>>>;

/// A RESP origin: one connection per node, opened on first use, following cluster redirects.
pub struct RespOrigin<C: Connector> {
    connector: C,
    config: RespConfig,
    slots: SlotMap,
    conns: AsyncMutex<HashMap<Node, Conn<C::Stream>>>,
}

impl<C: Connector> RespOrigin<C> {
    pub fn new(connector: C, config: RespConfig, slots: SlotMap) -> RespOrigin<C> {
        RespOrigin {
            connector,
            config,
            slots,
            conns: AsyncMutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &RespConfig {
        &self.config
    }

    fn node_for(&self, cmd: &Cmd) -> Node {
        let key = cmd.route.as_deref().or_else(|| routing_key(&cmd.args));
        key.and_then(|k| self.slots.lock().ok()?.get(&slot(k)).cloned())
            .unwrap_or_else(|| self.config.seed.clone())
    }

    async fn open(&self, node: &Node) -> Result<Conn<C::Stream>, OriginError> {
        let stream = self
            .connector
            .connect(&node.host, node.port, self.config.tls)
            .await
            .map_err(|e| {
                OriginError::not_sent(format!("connect {}:{}", node.host, node.port)).caused_by(e)
            })?;
        let mut conn = Conn::new(stream);
        if let Some(pw) = &self.config.password {
            let mut auth = vec!["AUTH".to_string()];
            auth.extend(self.config.username.clone());
            auth.push(pw.clone());
            let ignored = AtomicBool::new(false);
            match conn.request(&auth, &ignored).await {
                Ok(Ok(_)) => {}
                // AUTH failed: nothing of the caller's ran.
                Ok(Err(e)) => return Err(OriginError::Server(e)),
                Err(e) => return Err(OriginError::not_sent("AUTH").caused_by(e)),
            }
        }
        Ok(conn)
    }

    /// One command (and `then`, pipelined after it) on one node, reusing its connection.
    async fn on_node(
        &self,
        node: &Node,
        args: &[String],
        then: Option<&[String]>,
        asking: bool,
        sent: &AtomicBool,
    ) -> Result<(ServerReply, Option<ServerReply>), OriginError> {
        let mut conns = self.conns.lock().await;
        let conn = match conns.remove(node) {
            Some(c) => c,
            None => self.open(node).await?,
        };
        let mut conn = conn;
        if asking {
            let ignored = AtomicBool::new(false);
            if let Err(e) = conn.request(&["ASKING".to_string()], &ignored).await {
                return Err(OriginError::not_sent("ASKING").caused_by(e));
            }
        }
        let reply = match then {
            None => (conn.request(args, sent).await?, None),
            Some(then) => {
                let (a, b) = conn.request_pair(args, then, sent).await?;
                (a, Some(b))
            }
        };
        conns.insert(node.clone(), conn);
        Ok(reply)
    }

    /// `cmd` (and `then` after it on the same connection), following cluster redirects.
    /// `at` is set to the node each hop goes to (the caller forgets it when the call fails).
    async fn call_routed(
        &self,
        cmd: &Cmd,
        then: Option<&[String]>,
        sent: &AtomicBool,
        at: &Mutex<Option<Node>>,
    ) -> Result<(Value, Option<ServerReply>), OriginError> {
        let mut node = self.node_for(cmd);
        let mut asking = false;
        for _ in 0..=MAX_REDIRECTS {
            if let Ok(mut a) = at.lock() {
                *a = Some(node.clone());
            }
            match self.on_node(&node, &cmd.args, then, asking, sent).await? {
                (Ok(v), next) => return Ok((v, next)),
                (Err(e), _) => match e.redirect() {
                    Some(r) => {
                        let to = Node {
                            host: r.host.trim_matches(|c| c == '[' || c == ']').to_string(),
                            port: r.port,
                        };
                        if !r.ask {
                            if let Ok(mut s) = self.slots.lock() {
                                s.insert(r.slot, to.clone());
                            }
                        }
                        asking = r.ask;
                        node = to;
                        sent.store(false, Ordering::SeqCst);
                    }
                    None => return Err(OriginError::Server(e)),
                },
            }
        }
        Err(OriginError::not_sent("too many cluster redirects"))
    }

    /// Drops every slot the map gives `node` (it failed, or went silent): the next command for
    /// them asks the seed again, which redirects to whoever owns them now.
    fn forget(&self, node: &Node) {
        if let Ok(mut s) = self.slots.lock() {
            s.retain(|_, n| n != node);
        }
    }
}

/// The key a command is routed by: EVAL/EVALSHA's first key, else the first argument.
pub(crate) fn routing_key(args: &[String]) -> Option<&str> {
    let name = args.first()?.to_ascii_uppercase();
    match name.as_str() {
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" => {
            (args.get(2)?.parse::<usize>().ok()? > 0).then(|| args.get(3).map(String::as_str))?
        }
        "PING" | "INFO" | "SCRIPT" | "CLUSTER" | "AUTH" | "HELLO" | "CONFIG" | "DBSIZE"
        | "FLUSHALL" | "TIME" => None,
        _ => args.get(1).map(String::as_str),
    }
}

impl<C: Connector> RespOrigin<C> {
    /// [`RespOrigin::call_routed`] within the command timeout (plus `extra_ms`).
    async fn timed(
        &self,
        cmd: &Cmd,
        then: Option<&[String]>,
        extra_ms: u64,
    ) -> Result<(Value, Option<ServerReply>), OriginError> {
        let sent = AtomicBool::new(false);
        let at = Mutex::new(None);
        let work = std::pin::pin!(self.call_routed(cmd, then, &sent, &at));
        let limit = self.config.timeout_ms + extra_ms;
        let timer = std::pin::pin!(self.connector.sleep(limit));
        let failed_at = || at.lock().ok().and_then(|mut a| a.take());
        match select(work, timer).await {
            Either::Left((r, _)) => {
                if r.as_ref()
                    .is_err_and(|e| !matches!(e, OriginError::Server(_)))
                {
                    // The connection may be mid-reply; never reuse it.
                    self.conns.lock().await.clear();
                    if let Some(n) = failed_at() {
                        self.forget(&n);
                    }
                }
                r
            }
            Either::Right(((), _)) => {
                if let Some(n) = failed_at() {
                    self.forget(&n);
                }
                // The request's connection is out of the map until it completes, so it is
                // never reused mid-reply (and the map's lock may still be held here).
                let msg = format!("no reply within {limit} ms");
                if sent.load(Ordering::SeqCst) {
                    Err(OriginError::may_have_run(msg))
                } else {
                    Err(OriginError::not_sent(msg))
                }
            }
        }
    }
}

impl<C: Connector> Origin for RespOrigin<C> {
    async fn call(&self, cmd: &Cmd) -> Result<Value, OriginError> {
        Ok(self.timed(cmd, None, 0).await?.0)
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        self.connector.sleep(ms)
    }

    fn replica_acks(&self) -> Option<Acks> {
        self.config.acks
    }

    /// EVALSHA and WAIT pipelined on the connection of the node that runs the script: one
    /// round trip (WAIT counts the writes of its own connection, so it must follow there).
    async fn call_then_wait(&self, cmd: &Cmd, acks: Acks) -> Result<(Value, u32), OriginError> {
        let wait = acks.wait_cmd(cmd).args;
        let (v, waited) = self.timed(cmd, Some(&wait), acks.timeout_ms).await?;
        let acked = match waited {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                return Err(OriginError::may_have_run("WAIT after a write")
                    .caused_by(OriginError::Server(e)))
            }
            None => return Err(OriginError::may_have_run("WAIT got no reply")),
        };
        Ok((v, super::parse_acked(&acked)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis_protocol::resp2::types::Resp2Frame;

    #[test]
    fn golden_command_bytes() {
        let b = encode_command(&[
            "EVALSHA".into(),
            "abc".into(),
            "1".into(),
            "fg:{e}:meta".into(),
        ]);
        assert_eq!(
            b,
            b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$11\r\nfg:{e}:meta\r\n"
        );
        assert_eq!(encode_command(&["".into()]), b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn golden_replies() {
        let r = |b: &[u8]| decode_reply(b).unwrap().unwrap();
        assert_eq!(r(b":42\r\n"), (Ok(Value::Int(42)), 5));
        assert_eq!(r(b"+OK\r\n").0, Ok(Value::Str("OK".into())));
        assert_eq!(r(b"$-1\r\n").0, Ok(Value::Nil));
        assert_eq!(
            r(b"*3\r\n:0\r\n$2\r\nhi\r\n*0\r\n").0,
            Ok(Value::Array(vec![
                Value::Int(0),
                Value::Str("hi".into()),
                Value::Array(vec![])
            ]))
        );
        let e = r(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
            .0
            .unwrap_err();
        assert_eq!(e.kind, crate::origin::ServerErrorKind::NoScript);
        assert_eq!(
            r(b"-MOVED 3999 127.0.0.1:6381\r\n")
                .0
                .unwrap_err()
                .redirect()
                .unwrap()
                .port,
            6381
        );
        assert_eq!(decode_reply(b"*2\r\n:1\r\n").unwrap(), None, "incomplete");
        assert!(decode_reply(b"?what\r\n").is_err());
    }

    #[test]
    fn urls() {
        let c = RespConfig::from_url("redis://127.0.0.1:7001", 100).unwrap();
        assert_eq!(
            (c.seed.host.as_str(), c.seed.port, c.tls, c.password),
            ("127.0.0.1", 7001, false, None)
        );
        let c = RespConfig::from_url("rediss://default:s3cret@db.example.com", 100).unwrap();
        assert_eq!(
            (
                c.seed.port,
                c.tls,
                c.username.as_deref(),
                c.password.as_deref()
            ),
            (6379, true, Some("default"), Some("s3cret"))
        );
        let c = RespConfig::from_url("redis://:pw@h:1/", 100).unwrap();
        assert_eq!(
            (c.username, c.password.as_deref(), c.seed.port),
            (None, Some("pw"), 1)
        );
        assert!(RespConfig::from_url("http://x", 1).is_err());
        assert!(RespConfig::from_url("redis://h:notaport", 1).is_err());
    }

    #[test]
    fn routing_keys() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            routing_key(&s(&["EVALSHA", "x", "2", "k1", "k2"])),
            Some("k1")
        );
        assert_eq!(routing_key(&s(&["EVALSHA", "x", "0"])), None);
        assert_eq!(routing_key(&s(&["hget", "k", "f"])), Some("k"));
        assert_eq!(routing_key(&s(&["SCRIPT", "LOAD", "return 1"])), None);
    }

    fn value() -> impl Strategy<Value = OwnedFrame> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(OwnedFrame::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(OwnedFrame::BulkString),
            "[a-zA-Z ]{0,20}".prop_map(|s| OwnedFrame::SimpleString(s.into_bytes())),
            Just(OwnedFrame::Null),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(OwnedFrame::Array)
        })
    }

    proptest! {
        /// Any reply split at any point decodes to "incomplete" until its last byte arrives.
        #[test]
        fn partial_reads(frame in value(), cut in any::<prop::sample::Index>()) {
            let mut buf = vec![0u8; frame.encode_len(false)];
            let n = redis_protocol::resp2::encode::encode(&mut buf, &frame, false).unwrap();
            buf.truncate(n);
            let at = cut.index(buf.len());
            prop_assert_eq!(decode_reply(&buf[..at]).unwrap(), None);
            let (reply, used) = decode_reply(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(reply, Ok(frame_to_value(frame)));
        }
    }
}
