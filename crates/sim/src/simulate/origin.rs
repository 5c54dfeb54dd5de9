//! The origin as the simulated isolates reach it: a [`Pool`] of real RESP connections shared
//! by the fleet, and for each isolate an [`IsolateOrigin`] that notes at its boundary every
//! purchase it sends ([`Tap`]): when, from which isolate, for which skus.
//!
//! The pool runs on an I/O thread of its own: K connections, each taking the next command
//! from one queue as soon as it is free. So the origin's traffic flows while the fleet's one
//! thread is busy deciding, as real isolates' sockets would, and the fleet's thread spends
//! itself on the gate alone. A command must start within the isolate's ORIGIN_TIMEOUT_MS of
//! its call or it is not sent (the wait for a connection has no counterpart in the worker,
//! where each isolate has its own sockets); once sent, the connection's own ORIGIN_TIMEOUT_MS
//! bounds it and says, as in the worker, whether a command without a reply may have run.
//!
//! A purchase is recognised by its command alone (EVALSHA of purchase.lua's SHA1 whose first
//! key is the event's meta hash), NOSCRIPT retries included, and noted with the moment the
//! isolate called its origin (its decision to forward) and whether a connection sent it.

use super::measure::Forward;
use super::time::{self, now_ms};
use flashgate_core::keys::EventKeys;
use flashgate_core::net::NativeOrigin;
use flashgate_core::origin::{Cmd, Origin, OriginError, Value};
use flashgate_core::script::PURCHASE;
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Mutex};

/// A command for the pool and by when it must start.
struct Job {
    cmd: Cmd,
    start_by: Instant,
    done: oneshot::Sender<Done>,
}

/// What the pool did with a command.
struct Done {
    /// Whether a connection sent it (else none was free in time).
    sent: bool,
    result: Result<Value, OriginError>,
}

/// K connections to the origin on an I/O thread of their own, serving one queue.
pub struct Pool {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    timeout: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One connection: the next command as soon as it is free.
async fn serve(conn: NativeOrigin, queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let next = queue.lock().await.recv().await;
        let Some(job) = next else { return };
        let done = if Instant::now() >= job.start_by {
            Done {
                sent: false,
                result: Err(OriginError::not_sent("no free connection in time")),
            }
        } else {
            Done {
                sent: true,
                result: conn.call(&job.cmd).await,
            }
        };
        // The caller may be gone (cut off at the end of the run).
        let _ = job.done.send(done);
    }
}

impl Pool {
    /// Starts the I/O thread with `conns` (at least one); commands must start within
    /// `timeout_ms` of their call.
    pub fn start(conns: Vec<NativeOrigin>, timeout_ms: u64) -> Result<Pool, String> {
        if conns.is_empty() {
            return Err("the pool needs at least one connection".into());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the origin pool's runtime: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("flashgate-simulate-io".into())
            .spawn(move || {
                let queue = Arc::new(Mutex::new(rx));
                let local = tokio::task::LocalSet::new();
                for c in conns {
                    local.spawn_local(serve(c, queue.clone()));
                }
                rt.block_on(local);
            })
            .map_err(|e| format!("cannot start the origin pool's thread: {e}"))?;
        Ok(Pool {
            jobs: Some(tx),
            // The sale's time: a slowed sale waits as long for its origin in its own time.
            timeout: time::span(timeout_ms as f64),
            thread: Some(thread),
        })
    }

    async fn run(&self, cmd: &Cmd) -> Done {
        let (done, answer) = oneshot::channel();
        let job = Job {
            cmd: cmd.clone(),
            start_by: Instant::now() + self.timeout,
            done,
        };
        let stopped = || Done {
            sent: false,
            result: Err(OriginError::not_sent("the simulator's origin pool stopped")),
        };
        match &self.jobs {
            Some(q) if q.send(job).is_ok() => answer.await.unwrap_or_else(|_| stopped()),
            _ => stopped(),
        }
    }
}

impl Drop for Pool {
    /// Closes the queue; the I/O thread ends once its connections have finished.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The skus of a purchase.lua call on the event whose meta key is `meta`, from the command's
/// arguments (`EVALSHA sha numkeys KEYS... ARGV...`, KEYS[1] the meta hash, ARGV[8] the number
/// of lines, ARGV[9] the fresh flag, then sku and quantity per line; see `script::PurchaseCall`);
/// `None` for any other command.
pub fn purchase_skus(args: &[String], meta: &str) -> Option<Vec<String>> {
    let (name, rest) = args.split_first()?;
    if !name.eq_ignore_ascii_case("EVALSHA") || rest.first()? != &PURCHASE.sha1 {
        return None;
    }
    let numkeys: usize = rest.get(1)?.parse().ok()?;
    let keys = rest.get(2..2 + numkeys)?;
    if keys.first()? != meta {
        return None;
    }
    // ARGV: 5 fixed arguments, then sku, qty per line (purchase.lua).
    let argv = rest.get(2 + numkeys..)?;
    if argv.len() < 7 || (argv.len() - 5) % 2 != 0 {
        return None;
    }
    Some(argv[5..].iter().step_by(2).cloned().collect())
}

/// Every purchase the isolates sent for one event, in the order they were sent.
pub struct Tap {
    meta: String,
    t0_ms: i64,
    log: RefCell<Vec<Forward>>,
}

impl Tap {
    /// A tap for `event`, timing purchases in milliseconds after `t0_ms` (Unix ms). Its log
    /// is in the order the answers came back, not necessarily the order of the calls.
    pub fn new(event: &str, t0_ms: i64) -> Tap {
        Tap {
            meta: EventKeys::new(event).meta,
            t0_ms,
            log: RefCell::new(Vec::new()),
        }
    }

    fn note(&self, isolate: usize, cmd: &Cmd, called_ms: i64, sent: bool) {
        if let Some(skus) = purchase_skus(&cmd.args, &self.meta) {
            self.log.borrow_mut().push(Forward {
                at_ms: called_ms - self.t0_ms,
                isolate,
                skus,
                sent,
            });
        }
    }

    pub fn into_log(self) -> Vec<Forward> {
        self.log.into_inner()
    }
}

/// One isolate's origin: the shared pool, seen through the tap.
pub struct IsolateOrigin<'a> {
    pub pool: &'a Pool,
    pub tap: &'a Tap,
    pub isolate: usize,
}

impl Origin for IsolateOrigin<'_> {
    async fn call(&self, cmd: &Cmd) -> Result<Value, OriginError> {
        let called_ms = now_ms();
        let done = self.pool.run(cmd).await;
        self.tap.note(self.isolate, cmd, called_ms, done.sent);
        done.result
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        time::sleep(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::plan::{sale_spec, SECRET};
    use flashgate_core::config::Config;
    use flashgate_core::gate::{ApiRequest, Gate, NoLimiter};
    use flashgate_core::origin::fake::FakeOrigin;

    fn evalsha(sha: &str, keys: &[String], args: &[String]) -> Vec<String> {
        let mut v = vec![
            "EVALSHA".to_string(),
            sha.to_string(),
            keys.len().to_string(),
        ];
        v.extend(keys.iter().cloned());
        v.extend(args.iter().cloned());
        v
    }

    /// A flat array of field, value pairs, as HGETALL answers.
    fn flat(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
        Value::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [Value::Str(k), Value::Str(v)])
                .collect(),
        )
    }

    /// The commands a real gate sends for one purchase of `A` in the live event `sale`: a
    /// snapshot read (answered), then the purchase (left unanswered).
    async fn gate_commands() -> Vec<Cmd> {
        let now = now_ms();
        let ev = sale_spec("sale", now - 1000, 5, 100, Default::default())
            .validate()
            .unwrap();
        let meta = ev.meta.to_fields().into_iter().map(|(k, v)| (k.into(), v));
        let stock = ev.stock.iter().map(|(k, n)| (k.clone(), n.to_string()));
        let view = [
            flat(meta),
            flat(stock),
            flat([]),
            Value::Int(0),
            Value::Int(0),
            flat([]),
            flat([]),
        ];
        let fake = FakeOrigin::default();
        fake.push(Ok(Value::Array(view.to_vec())));
        let config = Config::from_lookup(|k| match k {
            "ORIGIN_URL" => Some("redis://127.0.0.1:1".into()),
            "IDENTITY_SECRET" => Some(SECRET.into()),
            _ => None,
        });
        let gate = Gate::new(config.unwrap());
        let auth = format!(
            "Bearer {}",
            flashgate_core::token::mint(SECRET.as_bytes(), "u1", now / 1000 + 60)
        );
        let req = ApiRequest {
            method: "POST",
            path: "/api/events/sale/orders",
            authorization: Some(&auth),
            content_type: Some("application/json"),
            idempotency_key: Some("key-0001"),
            body: br#"{"items":[{"sku":"A","qty":1}]}"#,
            ..ApiRequest::default()
        };
        let handled = gate.handle(&fake, &NoLimiter, &req, now, &now_ms).await;
        assert_eq!(handled.reply.status, 503, "{}", handled.reply.body);
        fake.log.take()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn recognises_purchases_as_the_gate_sends_them() {
        let sent = gate_commands().await;
        let [view, buy] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        let meta = EventKeys::new("sale").meta;
        assert_eq!(purchase_skus(&buy.args, &meta), Some(vec!["A".to_string()]));
        assert_eq!(purchase_skus(&view.args, &meta), None, "a snapshot read");
        let other = EventKeys::new("other").meta;
        assert_eq!(purchase_skus(&buy.args, &other), None, "another event");
        assert_eq!(purchase_skus(&buy.args[..6], &meta), None, "cut short");
        for args in [
            vec![],
            vec!["PING".to_string()],
            vec!["EVALSHA".to_string()],
        ] {
            assert_eq!(purchase_skus(&args, &meta), None);
        }
        // Two lines: both skus, in order.
        let argv: Vec<String> = ["1", "k", "{}", "2", "1", "B", "1", "A", "3"]
            .map(String::from)
            .to_vec();
        let two = evalsha(&PURCHASE.sha1, std::slice::from_ref(&meta), &argv);
        assert_eq!(
            purchase_skus(&two, &meta),
            Some(vec!["B".to_string(), "A".to_string()])
        );
    }

    fn origin_at(port: u16, timeout_ms: u64) -> NativeOrigin {
        flashgate_core::net::connect(&format!("redis://127.0.0.1:{port}"), None, timeout_ms)
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_tap_notes_purchases_and_whether_they_were_sent() {
        // Nothing listens on port 1: every call fails, but only after a connection tried.
        let pool = Pool::start((0..3).map(|_| origin_at(1, 200)).collect(), 500).unwrap();
        let tap = Tap::new("sale", now_ms());
        let meta = EventKeys::new("sale").meta;
        let argv: Vec<String> = ["1", "k", "{}", "2", "1", "A", "1"]
            .map(String::from)
            .to_vec();
        let buy = evalsha(&PURCHASE.sha1, std::slice::from_ref(&meta), &argv);
        for (isolate, args) in [(4, buy.clone()), (2, vec!["PING".into()]), (7, buy)] {
            let o = IsolateOrigin {
                pool: &pool,
                tap: &tap,
                isolate,
            };
            let e = o.call(&Cmd { args, route: None }).await.unwrap_err();
            assert!(e.to_string().contains("connect 127.0.0.1:1"), "{e}");
        }
        let log = tap.into_log();
        assert_eq!(
            log.iter()
                .map(|f| (f.isolate, f.skus.clone(), f.sent))
                .collect::<Vec<_>>(),
            vec![
                (4, vec!["A".to_string()], true),
                (7, vec!["A".to_string()], true)
            ]
        );
        assert!(log.iter().all(|f| (0..5000).contains(&f.at_ms)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_command_that_gets_no_connection_in_time_is_not_sent() {
        // A server that accepts and never answers keeps the pool's one connection busy.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let pool = Pool::start(vec![origin_at(port, 300)], 100).unwrap();
        let tap = Tap::new("sale", now_ms());
        let o = IsolateOrigin {
            pool: &pool,
            tap: &tap,
            isolate: 0,
        };
        let ping = Cmd::new(["PING"]);
        let (first, second) = tokio::join!(o.call(&ping), o.call(&ping));
        let (first, second) = (first.unwrap_err(), second.unwrap_err());
        assert!(first.ran_maybe(), "sent, then silence: {first}");
        assert!(!second.ran_maybe(), "never sent: {second}");
        assert!(
            second.to_string().contains("no free connection"),
            "{second}"
        );
        drop(silent);
    }
}
