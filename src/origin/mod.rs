//! The origin (Dragonfly or Redis) behind one narrow trait.
//!
//! A command is a list of strings (the HTTP `/api` dialect accepts nothing else) plus an
//! optional routing key for clusters. Replies are [`Value`]s; failures are [`OriginError`]s
//! that say whether the command may have run, which is what decides a retry:
//! - [`OriginError::NotSent`]: it provably did not run (connect failed, NOSCRIPT, MOVED, ...);
//! - [`OriginError::Unknown`]: it may have run (timeout or broken connection after sending).
//!
//! Two transports implement [`Origin`]: `resp` (RESP over a TCP socket; worker sockets in wasm,
//! tokio natively) and the HTTP JSON command API, whose wire formats live in `http`.

pub mod http;
pub mod resp;

use std::fmt;

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

/// An error reply from the server, e.g. `NOSCRIPT No matching script`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// The first word (`NOSCRIPT`, `MOVED`, `ERR`, ...).
    pub code: String,
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
        let code = line.split_whitespace().next().unwrap_or("ERR").to_string();
        ServerError { code, line }
    }

    /// `MOVED 3999 127.0.0.1:6381` or `ASK ...`.
    pub fn redirect(&self) -> Option<Redirect> {
        let ask = match self.code.as_str() {
            "MOVED" => false,
            "ASK" => true,
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

    /// Errors the server raises before running anything.
    fn refused_before_running(&self) -> bool {
        matches!(
            self.code.as_str(),
            "NOSCRIPT"
                | "MOVED"
                | "ASK"
                | "CROSSSLOT"
                | "TRYAGAIN"
                | "CLUSTERDOWN"
                | "NOAUTH"
                | "WRONGPASS"
                | "LOADING"
                | "BUSY"
                | "MASTERDOWN"
                | "READONLY"
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginError {
    /// The command did not reach the server or was refused before it ran: safe to retry.
    NotSent(String),
    /// The command was sent and no reply came in time (or the reply was cut off): it may
    /// have run. Only an idempotent retry is safe.
    Unknown(String),
    /// The server answered with an error.
    Server(ServerError),
}

impl OriginError {
    pub fn may_have_run(&self) -> bool {
        match self {
            OriginError::NotSent(_) => false,
            OriginError::Unknown(_) => true,
            OriginError::Server(e) => !e.refused_before_running(),
        }
    }
    pub fn is_noscript(&self) -> bool {
        matches!(self, OriginError::Server(e) if e.code == "NOSCRIPT")
    }
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::NotSent(m) => write!(f, "origin unreachable: {m}"),
            OriginError::Unknown(m) => write!(f, "origin did not answer: {m}"),
            OriginError::Server(e) => write!(f, "origin error: {}", e.line),
        }
    }
}

impl std::error::Error for OriginError {}

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

/// The origin, as the gate sees it: one command, one reply. Every origin owns a timer for
/// its timeouts; the gate borrows it to wait for another request's refresh.
#[allow(async_fn_in_trait)]
pub trait Origin {
    async fn call(&self, cmd: &Cmd) -> Result<Value, OriginError>;
    fn sleep(&self, ms: u64) -> impl std::future::Future<Output = ()>;
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
        let mut argv = Vec::with_capacity(3 + keys.len() + args.len());
        argv.push("EVALSHA".to_string());
        argv.push(self.sha1.clone());
        argv.push(keys.len().to_string());
        argv.extend(keys.iter().cloned());
        argv.extend(args.iter().cloned());
        let cmd = Cmd {
            args: argv,
            route: None,
        };
        match origin.call(&cmd).await {
            Err(e) if e.is_noscript() => {
                let mut load = Cmd::new(["SCRIPT", "LOAD", self.source]);
                load.route = keys.first().cloned();
                let sha = origin.call(&load).await?;
                if sha.as_str() != Some(self.sha1.as_str()) {
                    return Err(OriginError::NotSent(format!(
                        "SCRIPT LOAD of {} answered {sha:?}",
                        self.name
                    )));
                }
                origin.call(&cmd).await
            }
            r => r,
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted fake origin for core tests: canned replies in order, failures on demand,
    //! and a log of every command.
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
                .unwrap_or_else(|| Err(OriginError::NotSent("fake: no reply queued".into())))
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
        o.push(Err(OriginError::Unknown("timeout".into())));
        assert!(block(s.eval(&o, &[], &[])).unwrap_err().may_have_run());
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
        assert!(!OriginError::Server(moved).may_have_run());
        let ask = ServerError::parse("ASK 1 [::1]:7000");
        assert_eq!(ask.redirect().unwrap().host, "[::1]");
        assert!(OriginError::Server(ServerError::parse("ERR Error running script")).may_have_run());
        assert!(!OriginError::NotSent("refused".into()).may_have_run());
    }
}
