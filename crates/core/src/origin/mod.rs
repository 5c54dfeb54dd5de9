//! The origin (Dragonfly or Redis) behind one narrow trait.
//!
//! A command is a list of strings (the HTTP `/api` dialect accepts nothing else) plus an
//! optional routing key for clusters. Replies are [`Value`]s; failures are [`OriginError`]s.
//! An error keeps its cause ([`std::error::Error::source`]) and says whether the command may
//! have run, which is what decides a retry:
//! - [`OriginError::NotSent`]: it provably did not run (connect failed, refused before running:
//!   NOSCRIPT, MOVED, NOAUTH, ...). Retrying is safe.
//! - [`OriginError::MayHaveRun`]: it was sent and no usable reply came (timeout, broken
//!   connection, a reply the caller could not read). Only an idempotent retry is safe.
//! - [`OriginError::Server`]: the server answered with an error; its [`ServerErrorKind`] says
//!   whether it ran and how to retry ([`ServerErrorKind::retry`]).
//!
//! Two transports implement [`Origin`]: `resp` (RESP over a TCP socket; worker sockets in wasm,
//! tokio natively) and the HTTP JSON command API, whose wire formats live in `http`.

pub mod http;
pub mod resp;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A reply value, the same for both transports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// Bulk and simple strings (lossy UTF-8; flashgate stores only UTF-8).
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The first word of a server error line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerErrorKind {
    NoScript,
    Moved,
    Ask,
    CrossSlot,
    TryAgain,
    ClusterDown,
    NoAuth,
    WrongPass,
    Loading,
    Busy,
    MasterDown,
    ReadOnly,
    /// The generic `ERR`, e.g. an error raised inside a script: it may have run part-way.
    Err,
    /// Any other code, kept as sent.
    Other(String),
}

/// How a caller may retry after a server error (after redis-rs's `RetryMethod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Do not retry: the command ran, or will fail the same way.
    No,
    /// Load the script (SCRIPT LOAD) and send the command again.
    LoadScript,
    /// Send it to the node the reply names.
    Redirect,
    /// Send it again after a short wait (the server is busy, loading or failing over).
    WaitAndRetry,
}

impl ServerErrorKind {
    pub fn parse(code: &str) -> ServerErrorKind {
        use ServerErrorKind::*;
        match code {
            "NOSCRIPT" => NoScript,
            "MOVED" => Moved,
            "ASK" => Ask,
            "CROSSSLOT" => CrossSlot,
            "TRYAGAIN" => TryAgain,
            "CLUSTERDOWN" => ClusterDown,
            "NOAUTH" => NoAuth,
            "WRONGPASS" => WrongPass,
            "LOADING" => Loading,
            "BUSY" => Busy,
            "MASTERDOWN" => MasterDown,
            "READONLY" => ReadOnly,
            "ERR" => Err,
            other => Other(other.to_string()),
        }
    }

    /// Errors the server raises before running anything.
    pub fn refused_before_running(&self) -> bool {
        !matches!(self, ServerErrorKind::Err | ServerErrorKind::Other(_))
    }

    pub fn retry(&self) -> Retry {
        use ServerErrorKind::*;
        match self {
            NoScript => Retry::LoadScript,
            Moved | Ask => Retry::Redirect,
            TryAgain | ClusterDown | Loading | Busy | MasterDown => Retry::WaitAndRetry,
            CrossSlot | NoAuth | WrongPass | ReadOnly | Err | Other(_) => Retry::No,
        }
    }
}

/// An error reply from the server, e.g. `NOSCRIPT No matching script`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    pub kind: ServerErrorKind,
    /// The whole line without the leading `-`.
    pub line: String,
}

/// Where a MOVED or ASK reply sends us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub ask: bool,
    pub slot: u16,
    pub host: String,
    pub port: u16,
}

impl ServerError {
    pub fn parse(line: &str) -> ServerError {
        let line = line.strip_prefix('-').unwrap_or(line).to_string();
        let code = line.split_whitespace().next().unwrap_or("ERR");
        ServerError {
            kind: ServerErrorKind::parse(code),
            line,
        }
    }

    /// `MOVED 3999 127.0.0.1:6381` or `ASK ...`.
    pub fn redirect(&self) -> Option<Redirect> {
        let ask = match self.kind {
            ServerErrorKind::Moved => false,
            ServerErrorKind::Ask => true,
            _ => return None,
        };
        let mut w = self.line.split_whitespace().skip(1);
        let slot = w.next()?.parse().ok()?;
        let (host, port) = w.next()?.rsplit_once(':')?;
        Some(Redirect {
            ask,
            slot,
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

impl StdError for ServerError {}

/// The underlying error of an [`OriginError`], shared so that errors stay cheap to clone.
#[derive(Clone)]
pub struct Cause(Arc<dyn StdError + Send + Sync>);

impl Cause {
    pub fn new(e: impl StdError + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }
    /// A cause that is only a message (e.g. a JavaScript error's text in the worker).
    pub fn msg(m: impl Into<String>) -> Cause {
        Cause::new(std::io::Error::other(m.into()))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

/// Two causes are equal when they read the same (tests compare errors).
impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum OriginError {
    /// The command did not reach the server or was refused before it ran: safe to retry.
    NotSent { what: String, cause: Option<Cause> },
    /// The command was sent and no usable reply came (timeout, cut-off connection, a reply
    /// that could not be read): it may have run. Only an idempotent retry is safe.
    MayHaveRun { what: String, cause: Option<Cause> },
    /// The server answered with an error.
    Server(ServerError),
}

impl OriginError {
    pub fn not_sent(what: impl Into<String>) -> OriginError {
        OriginError::NotSent {
            what: what.into(),
            cause: None,
        }
    }

    pub fn may_have_run(what: impl Into<String>) -> OriginError {
        OriginError::MayHaveRun {
            what: what.into(),
            cause: None,
        }
    }

    /// Attaches the underlying error (kept as [`std::error::Error::source`]).
    pub fn caused_by(mut self, e: impl StdError + Send + Sync + 'static) -> OriginError {
        if let OriginError::NotSent { cause, .. } | OriginError::MayHaveRun { cause, .. } =
            &mut self
        {
            *cause = Some(Cause::new(e));
        }
        self
    }

    /// Attaches a cause that is only a message.
    pub fn caused_by_msg(mut self, m: impl Into<String>) -> OriginError {
        if let OriginError::NotSent { cause, .. } | OriginError::MayHaveRun { cause, .. } =
            &mut self
        {
            *cause = Some(Cause::msg(m));
        }
        self
    }

    /// Whether the command may have run (so a retry must be idempotent).
    pub fn ran_maybe(&self) -> bool {
        match self {
            OriginError::NotSent { .. } => false,
            OriginError::MayHaveRun { .. } => true,
            OriginError::Server(e) => !e.kind.refused_before_running(),
        }
    }

    /// How to retry, for the errors a retry can help.
    pub fn retry(&self) -> Retry {
        match self {
            OriginError::NotSent { .. } => Retry::WaitAndRetry,
            OriginError::MayHaveRun { .. } => Retry::No,
            OriginError::Server(e) => e.kind.retry(),
        }
    }

    pub fn is_noscript(&self) -> bool {
        matches!(self, OriginError::Server(e) if e.kind == ServerErrorKind::NoScript)
    }
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, what, cause) = match self {
            OriginError::NotSent { what, cause } => ("origin unreachable", what, cause),
            OriginError::MayHaveRun { what, cause } => ("origin did not answer", what, cause),
            OriginError::Server(e) => return write!(f, "origin error: {}", e.line),
        };
        write!(f, "{head}: {what}")?;
        if let Some(c) = cause {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl StdError for OriginError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            OriginError::NotSent { cause, .. } | OriginError::MayHaveRun { cause, .. } => {
                cause.as_ref().map(|c| &*c.0 as &(dyn StdError + 'static))
            }
            OriginError::Server(e) => Some(e),
        }
    }
}

/// One command. `route` names a key whose cluster slot should serve it (for commands such as
/// SCRIPT LOAD that carry no key of their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub args: Vec<String>,
    pub route: Option<String>,
}

impl Cmd {
    pub fn new<I, S>(args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            args: args.into_iter().map(Into::into).collect(),
            route: None,
        }
    }
    pub fn routed(mut self, key: &str) -> Cmd {
        self.route = Some(key.to_string());
        self
    }
}

/// How many replicas must acknowledge a write before it is answered as done, and how long to
/// wait for them (`ORIGIN_REPLICA_ACKS`, `ORIGIN_REPLICA_ACK_MS`): `WAIT replicas timeout_ms`
/// after the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acks {
    pub replicas: u32,
    pub timeout_ms: u64,
}

impl Acks {
    /// The WAIT command for these acks, routed like `cmd` (to the node that ran it).
    pub fn wait_cmd(self, cmd: &Cmd) -> Cmd {
        let mut wait = Cmd::new([
            "WAIT".to_string(),
            self.replicas.to_string(),
            self.timeout_ms.to_string(),
        ]);
        wait.route = cmd
            .route
            .clone()
            .or_else(|| resp::routing_key(&cmd.args).map(str::to_string));
        wait
    }

    /// `Ok` when `acked` replicas are enough; else the write is not known to survive the loss
    /// of the node that made it, which the caller must treat as "may have run".
    pub fn check(self, what: &str, acked: u32) -> Result<(), OriginError> {
        if acked >= self.replicas {
            return Ok(());
        }
        Err(OriginError::may_have_run(format!(
            "{what} was acknowledged by {acked} of {} replicas within {} ms",
            self.replicas, self.timeout_ms
        )))
    }
}

/// WAIT's reply: the number of replicas that acknowledged.
fn parse_acked(v: &Value) -> Result<u32, OriginError> {
    v.as_int()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| OriginError::may_have_run(format!("WAIT answered {v:?}")))
}

/// The origin, as the gate sees it: one command, one reply. Every origin owns a timer for
/// its timeouts; the gate borrows it to wait for another request's refresh.
#[allow(async_fn_in_trait)]
pub trait Origin {
    async fn call(&self, cmd: &Cmd) -> Result<Value, OriginError>;
    fn sleep(&self, ms: u64) -> impl std::future::Future<Output = ()>;

    /// The replicas a write must reach before it counts ([`Acks`]); `None`: none.
    fn replica_acks(&self) -> Option<Acks> {
        None
    }

    /// `cmd`, then `WAIT` for `acks` on the node that ran it; answers `cmd`'s reply and how
    /// many replicas acknowledged every write made so far. This default sends two requests
    /// (Dragonfly's WAIT counts every connection's writes); RESP pipelines the two on one
    /// connection in one round trip. A WAIT that fails after `cmd` ran is "may have run".
    async fn call_then_wait(&self, cmd: &Cmd, acks: Acks) -> Result<(Value, u32), OriginError> {
        let v = self.call(cmd).await?;
        let acked = self
            .call(&acks.wait_cmd(cmd))
            .await
            .map_err(|e| OriginError::may_have_run("WAIT after a write").caused_by(e))?;
        Ok((v, parse_acked(&acked)?))
    }
}

/// A Lua script: its source and SHA1, computed once.
pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
    pub sha1: String,
}

impl Script {
    pub fn new(name: &'static str, source: &'static str) -> Script {
        Script {
            name,
            source,
            sha1: sha1_smol::Sha1::from(source).digest().to_string(),
        }
    }

    /// EVALSHA; on NOSCRIPT (the script did not run) load it on the node that owns the first
    /// key and try once more. In steady state this is exactly one origin command.
    pub async fn eval<O: Origin>(
        &self,
        origin: &O,
        keys: &[String],
        args: &[String],
    ) -> Result<Value, OriginError> {
        let cmd = self.evalsha(keys, args);
        match origin.call(&cmd).await {
            Err(e) if e.is_noscript() => {
                self.load(origin, keys).await?;
                origin.call(&cmd).await
            }
            r => r,
        }
    }

    /// [`Script::eval`] for a script that writes: with the origin's [`Acks`], the EVALSHA is
    /// followed by WAIT in the same round trip, and the answer says how many replicas
    /// acknowledged (`None`: none asked for). The caller decides which replies need them (a
    /// refusal wrote nothing).
    pub async fn eval_acked<O: Origin>(
        &self,
        origin: &O,
        keys: &[String],
        args: &[String],
    ) -> Result<(Value, Option<(Acks, u32)>), OriginError> {
        let Some(acks) = origin.replica_acks() else {
            return Ok((self.eval(origin, keys, args).await?, None));
        };
        let cmd = self.evalsha(keys, args);
        let (v, acked) = match origin.call_then_wait(&cmd, acks).await {
            Err(e) if e.is_noscript() => {
                self.load(origin, keys).await?;
                origin.call_then_wait(&cmd, acks).await?
            }
            r => r?,
        };
        Ok((v, Some((acks, acked))))
    }

    fn evalsha(&self, keys: &[String], args: &[String]) -> Cmd {
        let mut argv = Vec::with_capacity(3 + keys.len() + args.len());
        argv.push("EVALSHA".to_string());
        argv.push(self.sha1.clone());
        argv.push(keys.len().to_string());
        argv.extend(keys.iter().cloned());
        argv.extend(args.iter().cloned());
        Cmd {
            args: argv,
            route: None,
        }
    }

    /// SCRIPT LOAD on the node that owns the first key.
    async fn load<O: Origin>(&self, origin: &O, keys: &[String]) -> Result<(), OriginError> {
        let mut load = Cmd::new(["SCRIPT", "LOAD", self.source]);
        load.route = keys.first().cloned();
        let sha = origin.call(&load).await?;
        if sha.as_str() != Some(self.sha1.as_str()) {
            return Err(OriginError::not_sent(format!(
                "SCRIPT LOAD of {} answered {sha:?}",
                self.name
            )));
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    //! A scripted fake origin for tests (here, and with the `test-support` feature in other crates):
    //! canned replies in order, failures on demand, and a log of every command.
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    #[derive(Default)]
    pub struct FakeOrigin {
        pub replies: RefCell<VecDeque<Result<Value, OriginError>>>,
        pub log: RefCell<Vec<Cmd>>,
    }

    impl FakeOrigin {
        pub fn push(&self, r: Result<Value, OriginError>) -> &Self {
            self.replies.borrow_mut().push_back(r);
            self
        }
        pub fn commands(&self) -> Vec<String> {
            self.log
                .borrow()
                .iter()
                .map(|c| c.args[..2.min(c.args.len())].join(" "))
                .collect()
        }
    }

    impl Origin for FakeOrigin {
        async fn call(&self, cmd: &Cmd) -> Result<Value, OriginError> {
            self.log.borrow_mut().push(cmd.clone());
            self.replies
                .borrow_mut()
                .pop_front()
                .unwrap_or_else(|| Err(OriginError::not_sent("fake: no reply queued")))
        }
        fn sleep(&self, _ms: u64) -> impl std::future::Future<Output = ()> {
            std::future::ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeOrigin;
    use super::*;
    use futures_util::FutureExt;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        f.now_or_never().expect("fake futures are ready at once")
    }

    #[test]
    fn sha1_matches_redis() {
        // SCRIPT LOAD "return 1" answers this on every Redis.
        assert_eq!(
            Script::new("t", "return 1").sha1,
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    #[test]
    fn noscript_loads_then_retries_once() {
        let s = Script::new("t", "return 1");
        let o = FakeOrigin::default();
        o.push(Err(OriginError::Server(ServerError::parse(
            "-NOSCRIPT No matching script",
        ))))
        .push(Ok(Value::Str(s.sha1.clone())))
        .push(Ok(Value::Int(1)));
        let keys = vec!["fg:{e}:meta".to_string()];
        assert_eq!(block(s.eval(&o, &keys, &[])), Ok(Value::Int(1)));
        assert_eq!(
            o.commands(),
            [
                "EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
                "SCRIPT LOAD",
                "EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
            ]
        );
        assert_eq!(
            o.log.borrow()[1].route.as_deref(),
            Some("fg:{e}:meta"),
            "loaded where the key lives"
        );
    }

    #[test]
    fn steady_state_is_one_command_and_errors_pass_through() {
        let s = Script::new("t", "return 1");
        let o = FakeOrigin::default();
        o.push(Ok(Value::Int(7)));
        assert_eq!(block(s.eval(&o, &[], &[])), Ok(Value::Int(7)));
        o.push(Err(OriginError::may_have_run("timeout")));
        assert!(block(s.eval(&o, &[], &[])).unwrap_err().ran_maybe());
        assert_eq!(o.log.borrow().len(), 2);
    }

    #[test]
    fn error_classes() {
        let moved = ServerError::parse("-MOVED 3999 127.0.0.1:6381");
        assert_eq!(
            moved.redirect(),
            Some(Redirect {
                ask: false,
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert!(!OriginError::Server(moved.clone()).ran_maybe());
        assert_eq!(moved.kind.retry(), Retry::Redirect);
        let ask = ServerError::parse("ASK 1 [::1]:7000");
        assert_eq!(ask.redirect().unwrap().host, "[::1]");
        let err = OriginError::Server(ServerError::parse("ERR Error running script"));
        assert!(err.ran_maybe());
        assert_eq!(err.retry(), Retry::No);
        assert!(!OriginError::not_sent("refused").ran_maybe());
        assert_eq!(
            ServerError::parse("-WEIRD thing").kind,
            ServerErrorKind::Other("WEIRD".into())
        );
        assert!(OriginError::Server(ServerError::parse("WEIRD thing")).ran_maybe());
        assert_eq!(
            ServerError::parse("LOADING Redis is loading").kind.retry(),
            Retry::WaitAndRetry
        );
    }

    #[test]
    fn errors_keep_their_cause() {
        use std::error::Error;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = OriginError::not_sent("connect 127.0.0.1:1").caused_by(io);
        assert_eq!(
            e.to_string(),
            "origin unreachable: connect 127.0.0.1:1: refused"
        );
        let src = e.source().expect("a source");
        assert_eq!(
            src.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        let server = OriginError::Server(ServerError::parse("-NOSCRIPT x"));
        assert!(server.source().is_some());
    }
}
