//! The fleet and its crowd, on a thread of their own: a current-thread tokio runtime with a
//! `LocalSet`, because a [`Gate`] is not `Send` (an isolate is single-threaded too).
//!
//! Each isolate is its own [`Gate`], built from the same [`Config`] the worker shell reads
//! from its vars, with its own `EdgeState`; it is called exactly as the shell calls it, with
//! the request as plain data, the wall clock as `now`, and no outside rate limiter. The
//! isolates reach the origin through the shared [`Pool`], each through its own
//! [`IsolateOrigin`] so that every purchase it forwards is noted with its isolate.
//!
//! Until the start, every isolate serves `GET /api/events/<event>` whenever its snapshot is
//! due (pages polling), at a moment of its own, so that it refreshes and reports its counts
//! about once a second and the fleet's figures count the whole fleet before the start; then
//! each planned intent arrives at its time and isolate, and is retried per [`next`]. The run ends when every intent has ended, or at
//! `end_ms`.

use super::measure::Forward;
use super::origin::{IsolateOrigin, Pool, Tap};
use super::plan::{after, pick_isolate, Arrival, Busy, Group, Next, Skew, SECRET};
use super::time::{self, now_ms, sleep_until_ms};
use crate::load::outcome;
use flashgate_core::config::Config;
use flashgate_core::gate::{ApiRequest, Gate, NoLimiter};
use flashgate_core::line::{mint_ticket, Ticket, Window};
use flashgate_core::net::connect;
use indicatif::ProgressBar;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tokio::task::JoinSet;

/// The period of the timer that measures the thread's own lag from the start on, and how long
/// it runs (sale ms).
const PACE_MS: i64 = 10;
const PACE_FOR_MS: i64 = 2000;

/// How long after its snapshot is due for a refresh an isolate's page polls again.
const POLL_SLACK_MS: i64 = 20;

/// Everything the fleet thread needs, decided before it starts.
pub struct Orders {
    pub config: Config,
    pub origin_url: String,
    pub origin_password: Option<String>,
    pub connections: usize,
    pub isolates: usize,
    pub event: String,
    /// The order body every intent sends.
    pub body: String,
    /// `Bearer <token>` per user number.
    pub authorization: Vec<String>,
    /// Prefix of this run's Idempotency-Keys.
    pub run: String,
    pub arrivals: Vec<Arrival>,
    /// The start of the sale and the end of the run, Unix ms.
    pub t0_ms: i64,
    pub end_ms: i64,
    pub seed: u64,
    /// Each user's group (`plan::group_of`), and whether they enter before the start.
    pub groups: Vec<Group>,
    pub early: Vec<bool>,
    /// Mean patience of a shopper in ms (exponential); `None`: the old script's retries.
    pub patience_ms: Option<f64>,
    /// A hammerer's retry interval (the per-user rate limit).
    pub hammer_ms: u64,
    pub skew: Option<Skew>,
}

/// What the crowd did, by its own count. The origin's side is measured elsewhere.
#[derive(Debug, Default)]
pub struct CrowdLog {
    /// Attempts sent to isolates in each second from the start (retries included).
    pub sent: Vec<u64>,
    /// Every answer by outcome (`placed`, `sold_out`, `origin_unavailable`, …).
    pub answers: BTreeMap<String, u64>,
    /// How each intent ended: its last outcome, `gave_up` after the last retry, or
    /// `unfinished` when the run ended first.
    pub intents: BTreeMap<String, u64>,
    /// How late each intent's first attempt reached its isolate against the plan, in µs.
    pub late_us: Vec<u64>,
    /// How late the fleet's thread woke for a timer set every [`PACE_MS`] over the crowd's
    /// first seconds, in µs: the thread's own lag, the most any first attempt should wait.
    pub thread_late_us: Vec<u64>,
    /// Every purchase an isolate forwarded, at its origin boundary.
    pub forwards: Vec<Forward>,
    pub warmup_ms: i64,
    /// Isolates that had read their snapshot before the start.
    pub warmed: usize,
    /// When the last intent ended (or the run was cut off), ms after the start.
    pub finished_ms: i64,
    /// Per user: attempts sent, and units won (placed).
    pub user_attempts: Vec<u64>,
    pub user_won: Vec<u64>,
    /// How long each intent that gave up had waited (ms from its first attempt), and how
    /// many of them gave up on a hopeless place.
    pub gave_up_ms: Vec<u64>,
    pub hopeless: u64,
}

struct Fleet {
    gates: Vec<Gate>,
    pool: Pool,
    tap: Tap,
    orders: Orders,
    /// The purchase path and the event page's path.
    path: String,
    page: String,
    rng: RefCell<fastrand::Rng>,
    log: RefCell<CrowdLog>,
    bar: ProgressBar,
    /// Each user's entry ticket once entered (early users before the start, the others at
    /// their first attempt), as the page holds it.
    tickets: RefCell<Vec<Option<Rc<str>>>>,
    /// Each user's `fg_mark` cookie (`name=value`) once an order of theirs was placed: every
    /// tab of the browser sends it, as the page's do.
    marks: RefCell<Vec<Option<Rc<str>>>>,
}

impl Fleet {
    fn origin(&self, isolate: usize) -> IsolateOrigin<'_> {
        IsolateOrigin {
            pool: &self.pool,
            tap: &self.tap,
            isolate,
        }
    }

    fn count_sent(&self, now: i64) {
        let second = ((now - self.orders.t0_ms).max(0) / 1000) as usize;
        let mut c = self.log.borrow_mut();
        if c.sent.len() <= second {
            c.sent.resize(second + 1, 0);
        }
        c.sent[second] += 1;
    }

    fn end(&self, how: String) {
        *self.log.borrow_mut().intents.entry(how).or_insert(0) += 1;
        self.bar.inc(1);
    }

    /// The user's entry ticket: made when they enter (here, for a late shopper, at the
    /// first attempt: the page's entry call; early users entered before the start).
    fn ticket(&self, user: u64, now: i64) -> Rc<str> {
        let mut t = self.tickets.borrow_mut();
        t[user as usize]
            .get_or_insert_with(|| {
                let window = if self.orders.early[user as usize] {
                    Window::Early
                } else {
                    Window::at(now, self.orders.t0_ms)
                };
                let ticket = Ticket {
                    event: self.orders.event.clone(),
                    user: format!("sim-{user}"),
                    window,
                    exp: self.orders.end_ms / 1000 + 3600,
                };
                Rc::from(mint_ticket(SECRET.as_bytes(), &ticket))
            })
            .clone()
    }

    /// One intent, from its first attempt to its end.
    async fn intent(self: Rc<Self>, a: Arrival) {
        let key = format!("{}-{}", self.orders.run, a.intent);
        let auth = &self.orders.authorization[a.user as usize];
        let group = self.orders.groups[a.user as usize];
        let hammer_ms = (group == Group::Hammer).then_some(self.orders.hammer_ms);
        let patience = self.orders.patience_ms.map(|mean| {
            let u = self.rng.borrow_mut().f64();
            (-mean * (1.0 - u).ln()) as u64
        });
        let mut isolate = a.isolate;
        let first = now_ms();
        for tries in 1.. {
            let now = now_ms();
            if now >= self.orders.end_ms {
                return self.end("unfinished".into());
            }
            self.count_sent(now);
            self.log.borrow_mut().user_attempts[a.user as usize] += 1;
            if tries == 1 {
                let late = now - (self.orders.t0_ms + a.at_ms);
                self.log
                    .borrow_mut()
                    .late_us
                    .push(late.max(0) as u64 * 1000);
            }
            let ticket = self.ticket(a.user, now);
            let mark = self.marks.borrow()[a.user as usize].clone();
            let req = ApiRequest {
                method: "POST",
                path: &self.path,
                query: None,
                authorization: Some(auth),
                content_type: Some("application/json"),
                idempotency_key: Some(&key),
                entry: Some(&ticket),
                cookie: mark.as_deref(),
                body: self.orders.body.as_bytes(),
                declared_len: None,
                roll: self.rng.borrow_mut().f64(),
                ..ApiRequest::default()
            };
            let origin = self.origin(isolate);
            // Boxed, so that an intent waiting to retry holds no pipeline state.
            let handled =
                Box::pin(self.gates[isolate].handle(&origin, &NoLimiter, &req, now, &now_ms)).await;
            let r = handled.reply;
            if let Some(c) = r.header("set-cookie").filter(|c| c.starts_with("fg_mark=")) {
                let pair = c.split(';').next().unwrap_or(c);
                self.marks.borrow_mut()[a.user as usize] = Some(Rc::from(pair));
            }
            let got = outcome(r.status, r.body.as_bytes());
            *self
                .log
                .borrow_mut()
                .answers
                .entry(got.clone())
                .or_insert(0) += 1;
            if got == "placed" {
                self.log.borrow_mut().user_won[a.user as usize] += 1;
            }
            let busy = Busy::of(r.body.as_bytes());
            let waited = (now_ms() - first).max(0) as u64;
            match after(
                r.status,
                r.header("retry-after"),
                busy,
                hammer_ms,
                (waited, patience),
                tries,
            ) {
                Next::Done => return self.end(got),
                Next::GiveUp => {
                    let mut log = self.log.borrow_mut();
                    log.gave_up_ms.push(waited);
                    log.hopeless += u64::from(busy.hopeless());
                    drop(log);
                    return self.end("gave_up".into());
                }
                Next::Retry { after_ms } => {
                    time::sleep(after_ms).await;
                    let n = self.gates.len();
                    isolate = pick_isolate(&mut self.rng.borrow_mut(), n, self.orders.skew);
                }
            }
        }
    }

    /// The early entrants are in line before the start: each of their pages (one per intent)
    /// sends an attempt
    /// (answered `not_started` at the edge) at a moment of its own in the last seconds before
    /// the start, so the fleet counts the early window's entrants before the line is drawn.
    async fn enter_early(self: &Rc<Self>) {
        let end = self.orders.t0_ms - 200;
        let from = now_ms();
        // Every tab of an early user: each of their intents, with its own Idempotency-Key.
        let mut at: Vec<(i64, u64, u64)> = (self.orders.arrivals.iter())
            .filter(|a| self.orders.early[a.user as usize])
            .map(|a| {
                let r = self.rng.borrow_mut().f64();
                (
                    from + ((end - from).max(0) as f64 * r) as i64,
                    a.user,
                    a.intent,
                )
            })
            .collect();
        at.sort_unstable();
        for (t, u, intent) in at {
            sleep_until_ms(t).await;
            let now = now_ms();
            let ticket = self.ticket(u, now);
            let key = format!("{}-{intent}", self.orders.run);
            let req = ApiRequest {
                method: "POST",
                path: &self.path,
                authorization: Some(&self.orders.authorization[u as usize]),
                content_type: Some("application/json"),
                idempotency_key: Some(&key),
                entry: Some(&ticket),
                body: self.orders.body.as_bytes(),
                roll: self.rng.borrow_mut().f64(),
                ..ApiRequest::default()
            };
            let n = self.gates.len();
            let i = pick_isolate(&mut self.rng.borrow_mut(), n, self.orders.skew);
            let origin = self.origin(i);
            Box::pin(self.gates[i].handle(&origin, &NoLimiter, &req, now, &now_ms)).await;
        }
    }

    /// Isolate `i` serves one event page, and so reads its snapshot when it is due.
    async fn serve_page(&self, i: usize) {
        let req = ApiRequest {
            method: "GET",
            path: &self.page,
            ..ApiRequest::default()
        };
        let origin = self.origin(i);
        Box::pin(self.gates[i].handle(&origin, &NoLimiter, &req, now_ms(), &now_ms)).await;
    }

    /// Pages poll until the start, as in a fleet whose pages poll all the time: each isolate
    /// serves an event page whenever its snapshot is due for a refresh (every EDGE_CACHE_MS
    /// plus [`POLL_SLACK_MS`]), the isolates' first polls spread evenly over one interval. So
    /// each isolate refreshes, and reports its counts, about once a second at a moment of its
    /// own, and once every isolate has refreshed, each full second counts about the whole fleet
    /// in the fleet's figures: what admission control reads at the start to size its shares.
    /// (A snapshot carries the last full second's figures, so it takes 3 s of polling before a
    /// start on a whole second.) Answers how long the pages polled, and the polls still
    /// running at the start: the crowd does not wait for them. (A page served a moment after
    /// the start may claim the line's first tick, and its claimer then waits `SETTLE_MS`
    /// for its second read, as every claimer does. An isolate of a real fleet that waits
    /// holds up nobody else; when the crowd waited for it, every first attempt planned in
    /// the first 80 ms came late, the line entered the first second a tick late, and that
    /// second got half the budget.)
    async fn warm_up(self: &Rc<Self>) -> (i64, JoinSet<()>) {
        let began = now_ms();
        let period = self.orders.config.edge.cache_ms + POLL_SLACK_MS;
        let (n, end) = (self.gates.len() as i64, self.orders.t0_ms);
        let mut polls = JoinSet::new();
        for i in 0..self.gates.len() {
            let f = self.clone();
            polls.spawn_local(async move {
                let mut at = began + i as i64 * period / n;
                while at < end {
                    sleep_until_ms(at).await;
                    f.serve_page(i).await;
                    at += period;
                }
            });
        }
        sleep_until_ms(end).await;
        (now_ms() - began, polls)
    }

    /// Wakes every [`PACE_MS`] from the start for [`PACE_FOR_MS`] (or to the end of the run)
    /// and notes how late each wake-up was: the lag of the thread itself, which every task
    /// on it shares. A first attempt later than this waited for something in the fleet.
    async fn pace(self: Rc<Self>) {
        let (t0, end) = (self.orders.t0_ms, self.orders.end_ms);
        let mut at = t0;
        while at < (t0 + PACE_FOR_MS).min(end) {
            sleep_until_ms(at).await;
            let late = (now_ms() - at).max(0) as u64 * 1000;
            self.log.borrow_mut().thread_late_us.push(late);
            at += PACE_MS;
        }
    }

    /// Sends each intent at its time; returns when all have ended or at the end of the run.
    async fn send_crowd(self: &Rc<Self>) {
        let mut running = JoinSet::new();
        let end = self.orders.end_ms;
        for &a in &self.orders.arrivals {
            let at = self.orders.t0_ms + a.at_ms;
            if at >= end {
                break;
            }
            sleep_until_ms(at).await;
            running.spawn_local(self.clone().intent(a));
        }
        let wait = time::span((end - now_ms()).max(0) as f64);
        let _ = tokio::time::timeout(wait, async { while running.join_next().await.is_some() {} })
            .await;
        // Cut off what is still running, and wait until it has let go of the fleet.
        running.abort_all();
        while running.join_next().await.is_some() {}
    }
}

async fn run(orders: Orders, bar: ProgressBar) -> Result<CrowdLog, String> {
    let timeout = orders.config.origin.timeout_ms();
    let conns = (0..orders.connections.max(1))
        .map(|_| connect(&orders.origin_url, orders.origin_password.clone(), timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let gates = (0..orders.isolates)
        .map(|_| Gate::new(orders.config.clone()))
        .collect();
    let fleet = Rc::new(Fleet {
        gates,
        pool: Pool::start(conns, timeout)?,
        tap: Tap::new(&orders.event, orders.t0_ms),
        path: format!("/api/events/{}/orders", orders.event),
        page: format!("/api/events/{}", orders.event),
        rng: RefCell::new(fastrand::Rng::with_seed(orders.seed ^ 0x5eed)),
        log: RefCell::new(CrowdLog {
            user_attempts: vec![0; orders.authorization.len()],
            user_won: vec![0; orders.authorization.len()],
            ..CrowdLog::default()
        }),
        tickets: RefCell::new(vec![None; orders.authorization.len()]),
        marks: RefCell::new(vec![None; orders.authorization.len()]),
        orders,
        bar,
    });
    let pace = tokio::task::spawn_local(fleet.clone().pace());
    let ((warmup_ms, mut polls), ()) =
        futures_util::future::join(fleet.warm_up(), fleet.enter_early()).await;
    let warmed = fleet
        .gates
        .iter()
        .filter(|g| g.state.borrow().stats.view_reads > 0)
        .count();
    // The thread may reach the start a moment late: that is no delay worth a word.
    let overran = now_ms() - fleet.orders.t0_ms;
    if overran > POLL_SLACK_MS {
        eprintln!("flashgate simulate: the warm-up ended {overran} ms after the start (pages polled for {warmup_ms} ms); the first arrivals are late");
    }
    fleet.send_crowd().await;
    while polls.join_next().await.is_some() {}
    pace.abort();
    let _ = pace.await;
    let unfinished =
        fleet.orders.arrivals.len() as u64 - fleet.log.borrow().intents.values().sum::<u64>();
    let finished_ms = now_ms() - fleet.orders.t0_ms;
    let fleet = Rc::try_unwrap(fleet).map_err(|_| "an intent outlived the run".to_string())?;
    let mut crowd = fleet.log.into_inner();
    if unfinished > 0 {
        *crowd.intents.entry("unfinished".into()).or_insert(0) += unfinished;
    }
    crowd.forwards = fleet.tap.into_log();
    crowd.warmup_ms = warmup_ms;
    crowd.warmed = warmed;
    crowd.finished_ms = finished_ms;
    Ok(crowd)
}

/// Runs the fleet on a thread of its own and answers what the crowd did.
pub fn spawn(
    orders: Orders,
    bar: ProgressBar,
) -> std::thread::JoinHandle<Result<CrowdLog, String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the fleet's runtime: {e}"))?;
        tokio::task::LocalSet::new().block_on(&rt, run(orders, bar))
    })
}
