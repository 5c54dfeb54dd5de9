//! `flashgate load`: a flash-crowd generator against any flashgate base URL.
//!
//! Every attempt is `POST /api/events/<event>/orders` with a freshly minted identity token, an
//! `Idempotency-Key` and a JSON body, over one pooled HTTP client with `--concurrency`
//! attempts in flight. What attempt `i` sends is fixed up front by [`Plan`], a pure function
//! of `i` and the mix:
//! - its user is `load-<i mod users>`, so the first `users` attempts come from distinct users;
//! - a replay (chance `replay_fraction`, once the user has an earlier attempt) sends the key
//!   and body of that user's previous attempt `i - users`, so a replay repeats an earlier
//!   request exactly;
//! - otherwise the attempt is fresh: a new key, one sku, or two distinct skus with chance
//!   `multi_fraction`.
//!
//! The [`Report`] counts HTTP statuses and outcomes (the body's `error.code`, or `placed` /
//! `replayed` for a 201), latency percentiles and throughput, and what the origin did
//! meanwhile: the delta of `INFO commandstats` around the burst, the tool's own INFO excluded.
//! Nothing else talks to that origin during a run only if the operator makes it so.

use crate::model::{format_ms, parse_rfc3339_ms, valid_id};
use crate::origin::{Cmd, Origin};
use crate::token::{self, MIN_SECRET_LEN};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The worker's base URL, e.g. http://127.0.0.1:8787.
    #[arg(long)]
    pub base_url: String,
    /// The sale event to buy from.
    #[arg(long)]
    pub event: String,
    /// Distinct users (`load-0` … `load-<N-1>`), taken in turn.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// Purchase attempts in total.
    #[arg(long, default_value_t = 10_000)]
    pub requests: u64,
    /// Attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Skus to buy, comma-separated (default: every item of GET /api/events/<event>).
    #[arg(long, value_delimiter = ',')]
    pub skus: Vec<String>,
    /// Units per order line.
    #[arg(long, default_value_t = 1)]
    pub qty: u32,
    /// The worker's IDENTITY_SECRET, to mint the users' tokens.
    #[arg(long, env = "IDENTITY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Wait until this RFC 3339 instant, then fire the whole burst.
    #[arg(long)]
    pub start_at: Option<String>,
    /// Share of attempts that resend a user's earlier Idempotency-Key with the same body.
    #[arg(long, default_value_t = 0.0)]
    pub replay_fraction: f64,
    /// Share of fresh orders with two skus.
    #[arg(long, default_value_t = 0.0)]
    pub multi_fraction: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (there is none when stderr is not a terminal either).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not read INFO commandstats from --origin (when it is not the worker's origin).
    #[arg(long)]
    pub no_origin_stats: bool,
}

// ------------------------------------------------------------------ what each attempt sends

/// The shape of the crowd.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub users: u64,
    /// How many skus there are to choose from.
    pub skus: usize,
    pub replay_fraction: f64,
    pub multi_fraction: f64,
}

/// One planned attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The user number (`load-<user>`).
    pub user: u64,
    /// The attempt whose key and body this one sends: itself when fresh, an earlier attempt of
    /// the same user when a replay.
    pub key_of: u64,
    /// Indexes into the sku list, distinct (from `key_of`).
    pub skus: Vec<usize>,
}

/// Every attempt of a run, decided before the first is sent.
#[derive(Clone, Debug)]
pub struct Plan {
    mix: Mix,
    /// `key_of` per attempt (a replay of a replay resolves to the fresh attempt behind it).
    key_of: Vec<u64>,
}

const SALT_REPLAY: u64 = 1;
const SALT_MULTI: u64 = 2;
const SALT_SKU: u64 = 3;

/// SplitMix64: a well-mixed 64-bit hash; enough for reproducible choices (not for secrets).
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(i: u64, salt: u64) -> u64 {
    mix64(mix64(i) ^ salt)
}

/// A number in [0, 1) for attempt `i` and purpose `salt`.
fn unit(i: u64, salt: u64) -> f64 {
    (hash(i, salt) >> 11) as f64 / (1u64 << 53) as f64
}

impl Plan {
    pub fn new(requests: u64, mix: Mix) -> Plan {
        let users = mix.users.max(1);
        let mut key_of = Vec::with_capacity(requests as usize);
        for i in 0..requests {
            let replay = i >= users && unit(i, SALT_REPLAY) < mix.replay_fraction;
            let k = if replay {
                key_of[(i - users) as usize]
            } else {
                i
            };
            key_of.push(k);
        }
        Plan { mix, key_of }
    }

    pub fn len(&self) -> u64 {
        self.key_of.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.key_of.is_empty()
    }

    /// Attempt `i` (< [`Plan::len`]).
    pub fn attempt(&self, i: u64) -> Attempt {
        let users = self.mix.users.max(1);
        let j = self.key_of[i as usize];
        let n = self.mix.skus.max(1) as u64;
        let h = hash(j, SALT_SKU);
        let first = h % n;
        let mut skus = vec![first as usize];
        if n >= 2 && unit(j, SALT_MULTI) < self.mix.multi_fraction {
            skus.push(((first + 1 + (h >> 32) % (n - 1)) % n) as usize);
        }
        Attempt {
            user: i % users,
            key_of: j,
            skus,
        }
    }
}

/// The purchase body for these skus.
pub fn order_body(skus: &[String], pick: &[usize], qty: u32) -> String {
    let items: Vec<_> = pick
        .iter()
        .map(|&i| serde_json::json!({ "sku": skus[i], "qty": qty }))
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

/// The name an answer is counted under: `placed` or `replayed` for a 201, else the body's
/// `error.code`, `ok` for another 2xx, `http_<status>` when the body names no code.
pub fn outcome(status: u16, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if status == 201 {
        let replayed = json
            .as_ref()
            .and_then(|j| j.get("replayed"))
            .and_then(|r| r.as_bool())
            == Some(true);
        return if replayed { "replayed" } else { "placed" }.to_string();
    }
    if let Some(code) = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
    {
        return code.to_string();
    }
    if (200..300).contains(&status) {
        "ok".to_string()
    } else {
        format!("http_{status}")
    }
}

// ------------------------------------------------------------------ statistics

/// Latency of the answered attempts, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of ascending `sorted`; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64 / 100.0).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency from samples in microseconds.
pub fn latency(mut micros: Vec<u64>) -> Latency {
    micros.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50_ms: ms(percentile(&micros, 50.0)),
        p99_ms: ms(percentile(&micros, 99.0)),
        max_ms: ms(micros.last().copied().unwrap_or(0)),
    }
}

/// `cmdstat_<name>:calls=N,...` lines of `INFO commandstats` → name → calls. Names are
/// lower-cased; Redis 7 names subcommands `script|load`.
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_ascii_lowercase(), calls))
        })
        .collect()
}

/// What the origin ran during the burst.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OriginUse {
    /// Commands of every kind, except INFO (the tool's own).
    pub commands: u64,
    pub per_request: f64,
    pub evalsha: u64,
    pub eval: u64,
    /// SCRIPT and its subcommands (LOAD after a NOSCRIPT, EXISTS, …).
    pub script: u64,
    /// Every command whose count moved.
    pub by_command: BTreeMap<String, u64>,
}

/// The difference of two commandstats readings around `requests` attempts.
pub fn origin_use(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    requests: u64,
) -> OriginUse {
    let by_command: BTreeMap<String, u64> = after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, d)| d > 0)
        .collect();
    let commands: u64 = by_command.values().sum();
    let get = |k: &str| by_command.get(k).copied().unwrap_or(0);
    let script = by_command
        .iter()
        .filter(|(k, _)| *k == "script" || k.starts_with("script|"))
        .map(|(_, &n)| n)
        .sum();
    OriginUse {
        commands,
        per_request: if requests == 0 {
            0.0
        } else {
            commands as f64 / requests as f64
        },
        evalsha: get("evalsha"),
        eval: get("eval"),
        script,
        by_command,
    }
}

// ------------------------------------------------------------------ the report

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub base_url: String,
    pub event: String,
    /// Attempts sent.
    pub requests: u64,
    pub users: u64,
    pub concurrency: usize,
    /// From the first attempt to the last answer.
    pub elapsed_s: f64,
    /// Answered attempts per second.
    pub throughput_rps: f64,
    /// HTTP status → count; `failed` for attempts that got no answer.
    pub statuses: BTreeMap<String, u64>,
    /// Outcome (see [`outcome`]) → count; `transport_error` for attempts that got no answer.
    pub codes: BTreeMap<String, u64>,
    pub latency: Latency,
    /// `None` when the origin was not read (`--no-origin-stats`, or it could not be reached).
    pub origin: Option<OriginUse>,
    /// The first transport error, if any, to say why attempts failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

fn count_rows(out: &mut String, title: &str, m: &BTreeMap<String, u64>, total: u64) {
    *out += &format!("  {title:<24} {:>9} {:>8}\n", "count", "share");
    for (k, n) in m {
        let share = if total == 0 {
            0.0
        } else {
            *n as f64 * 100.0 / total as f64
        };
        *out += &format!("  {k:<24} {n:>9} {share:>7.2}%\n");
    }
}

/// The closing table for a terminal.
pub fn render_table(r: &Report) -> String {
    let mut out = format!(
        "flashgate load: {} attempts on {} (event {}), {} users, {} in flight\n\n",
        r.requests, r.base_url, r.event, r.users, r.concurrency
    );
    out += &format!("  {:<24} {:>9.2} s\n", "elapsed", r.elapsed_s);
    out += &format!("  {:<24} {:>9.1} req/s\n", "throughput", r.throughput_rps);
    let l = &r.latency;
    out += &format!(
        "  {:<24} p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms\n\n",
        "latency", l.p50_ms, l.p99_ms, l.max_ms
    );
    count_rows(&mut out, "HTTP status", &r.statuses, r.requests);
    out += "\n";
    count_rows(&mut out, "outcome", &r.codes, r.requests);
    out += "\n";
    match &r.origin {
        Some(o) => {
            out += &format!(
                "  {:<24} {:>9}   ({:.4} per attempt; INFO counts Lua's redis.call()s too)\n",
                "origin commands", o.commands, o.per_request
            );
            out += &format!(
                "  {:<24} {:>9}\n  {:<24} {:>9}\n  {:<24} {:>9}\n",
                "  evalsha", o.evalsha, "  eval", o.eval, "  script", o.script
            );
            for (k, n) in o.by_command.iter().filter(|(k, _)| {
                !matches!(k.as_str(), "evalsha" | "eval") && !k.starts_with("script")
            }) {
                out += &format!("  {:<24} {n:>9}\n", format!("  {k}"));
            }
        }
        None => out += "  origin commands          not measured\n",
    }
    if let Some(e) = &r.first_error {
        out += &format!("\n  first transport error: {e}\n");
    }
    out
}

// ------------------------------------------------------------------ running it

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, u64>,
    codes: BTreeMap<String, u64>,
    micros: Vec<u64>,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for (k, n) in o.statuses {
            *self.statuses.entry(k).or_insert(0) += n;
        }
        for (k, n) in o.codes {
            *self.codes.entry(k).or_insert(0) += n;
        }
        self.micros.extend(o.micros);
        self.first_error = self.first_error.take().or(o.first_error);
    }
}

struct Shared {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    /// Token expiry, Unix seconds.
    exp: i64,
    skus: Vec<String>,
    qty: u32,
    /// Prefix of this run's idempotency keys.
    run: String,
    plan: Plan,
    next: AtomicU64,
    bar: ProgressBar,
}

async fn send_all(s: Arc<Shared>) -> Tally {
    let mut t = Tally::default();
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= s.plan.len() {
            return t;
        }
        let a = s.plan.attempt(i);
        let token = token::mint(&s.secret, &format!("load-{}", a.user), s.exp);
        let t0 = Instant::now();
        let sent = s
            .client
            .post(&s.url)
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", format!("{}-{}", s.run, a.key_of))
            .body(order_body(&s.skus, &a.skus, s.qty))
            .send()
            .await;
        let answered = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        match answered {
            Ok((status, body)) => {
                t.micros.push(t0.elapsed().as_micros() as u64);
                *t.statuses.entry(status.to_string()).or_insert(0) += 1;
                *t.codes.entry(outcome(status, &body)).or_insert(0) += 1;
            }
            Err(e) => {
                *t.statuses.entry("failed".into()).or_insert(0) += 1;
                *t.codes.entry("transport_error".into()).or_insert(0) += 1;
                t.first_error.get_or_insert_with(|| error_chain(&e));
            }
        }
        s.bar.inc(1);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg += &format!(": {c}");
        cur = c.source();
    }
    msg
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The skus of an event, from the worker's public view.
async fn event_skus(
    client: &reqwest::Client,
    base: &str,
    event: &str,
) -> Result<Vec<String>, String> {
    let url = format!("{base}/api/events/{event}");
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("GET {url} did not answer JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "GET {url} answered {status}: {body}; pass --skus to skip this lookup"
        ));
    }
    let skus: Vec<String> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|it| it["sku"].as_str().map(String::from))
        .collect();
    if skus.is_empty() {
        return Err(format!("event {event} lists no items"));
    }
    Ok(skus)
}

async fn commandstats(o: &super::NativeOrigin) -> Result<BTreeMap<String, u64>, String> {
    let v = o
        .call(&Cmd::new(["INFO", "commandstats"]))
        .await
        .map_err(|e| e.to_string())?;
    let text = v.as_str().ok_or("INFO did not answer text")?;
    Ok(parse_commandstats(text))
}

fn check(args: &LoadArgs) -> Result<(), String> {
    if !valid_id(&args.event) {
        return Err("--event must match [A-Za-z0-9_-]{1,64}".into());
    }
    if args.users == 0 || args.requests == 0 || args.concurrency == 0 || args.qty == 0 {
        return Err("--users, --requests, --concurrency and --qty must be at least 1".into());
    }
    if args.requests > 100_000_000 {
        return Err("--requests may be at most 100000000".into());
    }
    for (name, f) in [
        ("--replay-fraction", args.replay_fraction),
        ("--multi-fraction", args.multi_fraction),
    ] {
        if !(0.0..=1.0).contains(&f) {
            return Err(format!("{name} must be between 0 and 1"));
        }
    }
    if args.secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the secret must be at least {MIN_SECRET_LEN} bytes (the worker's IDENTITY_SECRET)"
        ));
    }
    if let Some(bad) = args.skus.iter().find(|s| !valid_id(s)) {
        return Err(format!("sku {bad:?} must match [A-Za-z0-9_-]{{1,64}}"));
    }
    Ok(())
}

pub async fn main(args: LoadArgs, origin: &str, password: Option<String>) -> Result<(), String> {
    check(&args)?;
    let start_at = match &args.start_at {
        Some(s) => Some(
            parse_rfc3339_ms(s)
                .ok_or_else(|| format!("--start-at {s:?} is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    let base = args.base_url.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let skus = if args.skus.is_empty() {
        event_skus(&client, &base, &args.event).await?
    } else {
        args.skus.clone()
    };

    let stats_origin = if args.no_origin_stats {
        None
    } else {
        Some(super::connect(origin, password, 5000)?)
    };
    let before = match &stats_origin {
        Some(o) => match commandstats(o).await {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("flashgate load: origin commands will not be counted: INFO commandstats on {origin} failed: {e}");
                None
            }
        },
        None => None,
    };

    let mix = Mix {
        users: args.users,
        skus: skus.len(),
        replay_fraction: args.replay_fraction,
        multi_fraction: args.multi_fraction,
    };
    let bar = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(args.requests);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {wide_bar} {pos}/{len} {per_sec:>12} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let shared = Arc::new(Shared {
        client,
        url: format!("{base}/api/events/{}/orders", args.event),
        secret: args.secret.clone().into_bytes(),
        exp: now_ms() / 1000 + 86_400,
        skus,
        qty: args.qty,
        run: format!(
            "lg{:012x}",
            (now_ms() as u64 ^ (u64::from(std::process::id()) << 40)) & 0xffff_ffff_ffff
        ),
        plan: Plan::new(args.requests, mix),
        next: AtomicU64::new(0),
        bar,
    });

    if let Some(at) = start_at {
        let wait = at - now_ms();
        if wait > 0 {
            eprintln!(
                "flashgate load: waiting {:.1} s for {}",
                wait as f64 / 1000.0,
                format_ms(at)
            );
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
    let t0 = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.min(args.requests as usize))
        .map(|_| tokio::spawn(send_all(shared.clone())))
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.map_err(|e| format!("a load task failed: {e}"))?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    shared.bar.finish_and_clear();

    let origin_use = match (&stats_origin, &before) {
        (Some(o), Some(b)) => match commandstats(o).await {
            Ok(after) => Some(origin_use(b, &after, args.requests)),
            Err(e) => {
                eprintln!("flashgate load: origin commands not counted: INFO commandstats failed after the run: {e}");
                None
            }
        },
        _ => None,
    };
    let answered = tally.micros.len() as u64;
    let report = Report {
        base_url: base,
        event: args.event.clone(),
        requests: args.requests,
        users: args.users,
        concurrency: args.concurrency,
        elapsed_s: elapsed,
        throughput_rps: if elapsed > 0.0 {
            answered as f64 / elapsed
        } else {
            0.0
        },
        statuses: tally.statuses,
        codes: tally.codes,
        latency: latency(tally.micros),
        origin: origin_use,
        first_error: tally.first_error,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(
            percentile(&v, 0.1),
            1,
            "the lowest rank is the first sample"
        );
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[1, 2], 50.0), 1);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
        assert_eq!(percentile(&[], 99.0), 0);
        // p99 of 1000 samples is the 990th: one slow outlier does not move it.
        let mut w = vec![1000u64; 999];
        w.push(9_000_000);
        assert_eq!(percentile(&w, 99.0), 1000);
    }

    #[test]
    fn latency_sorts_and_converts_to_ms() {
        let l = latency(vec![3000, 1000, 2000, 250_000]);
        assert_eq!(
            l,
            Latency {
                p50_ms: 2.0,
                p99_ms: 250.0,
                max_ms: 250.0
            }
        );
        assert_eq!(latency(vec![]), Latency::default());
    }

    #[test]
    fn commandstats_parser() {
        // As Redis 7.0 prints it (CRLF lines, a section header, subcommands with `|`).
        let info = "# Commandstats\r\n\
            cmdstat_evalsha:calls=1250,usec=93512,usec_per_call=74.81,rejected_calls=0,failed_calls=2\r\n\
            cmdstat_script|load:calls=2,usec=150,usec_per_call=75.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_INFO:calls=3,usec=300,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_hset:calls=4,usec=12,usec_per_call=3.00\r\n\
            cmdstat_broken:usec=1\r\n\
            not a stat line\r\n";
        assert_eq!(
            parse_commandstats(info),
            map(&[
                ("evalsha", 1250),
                ("script|load", 2),
                ("info", 3),
                ("hset", 4)
            ])
        );
        assert!(parse_commandstats("").is_empty());
    }

    #[test]
    fn origin_deltas_leave_out_info() {
        let before = map(&[("evalsha", 100), ("info", 1), ("hset", 4)]);
        let after = map(&[
            ("evalsha", 150),
            ("info", 2),
            ("hset", 4),
            ("script|load", 1),
            ("eval", 3),
        ]);
        let u = origin_use(&before, &after, 100);
        assert_eq!((u.commands, u.evalsha, u.eval, u.script), (54, 50, 3, 1));
        assert_eq!(u.per_request, 0.54);
        assert_eq!(
            u.by_command,
            map(&[("eval", 3), ("evalsha", 50), ("script|load", 1)])
        );
        // A counter reset (CONFIG RESETSTAT) never yields a huge delta.
        assert_eq!(origin_use(&after, &before, 1).commands, 0);
        assert_eq!(origin_use(&before, &before, 0).per_request, 0.0);
    }

    #[test]
    fn outcomes_by_status_and_body() {
        assert_eq!(outcome(201, br#"{"order":{},"replayed":false}"#), "placed");
        assert_eq!(outcome(201, br#"{"order":{},"replayed":true}"#), "replayed");
        assert_eq!(
            outcome(
                410,
                br#"{"error":{"code":"sold_out","message":"A is sold out"}}"#
            ),
            "sold_out"
        );
        assert_eq!(outcome(200, br#"{"ok":true}"#), "ok");
        assert_eq!(outcome(502, b"Bad Gateway"), "http_502");
    }

    #[test]
    fn plans_cycle_users_and_replay_exactly() {
        let mix = Mix {
            users: 10,
            skus: 3,
            replay_fraction: 0.5,
            multi_fraction: 0.5,
        };
        let p = Plan::new(1000, mix.clone());
        let mut replays = 0;
        let mut multi = 0;
        for i in 0..1000 {
            let a = p.attempt(i);
            assert_eq!(a.user, i % 10);
            assert!(a.key_of <= i);
            assert_eq!(
                a.key_of % 10,
                a.user,
                "a replay resends the same user's key"
            );
            assert_eq!(
                p.attempt(a.key_of),
                Attempt {
                    user: a.user,
                    key_of: a.key_of,
                    skus: a.skus.clone()
                },
                "and the same body"
            );
            if a.key_of != i {
                replays += 1;
            }
            if a.skus.len() == 2 {
                assert_ne!(a.skus[0], a.skus[1]);
                multi += 1;
            }
            assert!(a.skus.iter().all(|&s| s < 3));
        }
        assert!(
            (450..=545).contains(&replays),
            "about half of the 990 eligible: {replays}"
        );
        assert!((400..=600).contains(&multi), "{multi}");
        for i in 0..10 {
            assert_eq!(p.attempt(i).key_of, i, "a user's first attempt is fresh");
        }
        let fresh = Plan::new(
            100,
            Mix {
                replay_fraction: 0.0,
                multi_fraction: 0.0,
                ..mix
            },
        );
        assert!((0..100).all(|i| fresh.attempt(i).key_of == i && fresh.attempt(i).skus.len() == 1));
        let one_sku = Plan::new(
            50,
            Mix {
                users: 5,
                skus: 1,
                replay_fraction: 1.0,
                multi_fraction: 1.0,
            },
        );
        assert!(
            (0..50).all(|i| one_sku.attempt(i).skus == [0] && one_sku.attempt(i).key_of == i % 5)
        );
    }

    #[test]
    fn golden_order_body() {
        let skus = vec!["A".to_string(), "B".to_string()];
        assert_eq!(
            order_body(&skus, &[1, 0], 2),
            r#"{"items":[{"qty":2,"sku":"B"},{"qty":2,"sku":"A"}]}"#
        );
    }

    #[test]
    fn table_has_every_part() {
        let r = Report {
            base_url: "http://127.0.0.1:8787".into(),
            event: "demo".into(),
            requests: 4,
            users: 2,
            concurrency: 2,
            elapsed_s: 2.0,
            throughput_rps: 2.0,
            statuses: map(&[("201", 1), ("410", 3)]),
            codes: map(&[("placed", 1), ("sold_out", 3)]),
            latency: Latency {
                p50_ms: 1.5,
                p99_ms: 9.0,
                max_ms: 12.25,
            },
            origin: Some(origin_use(
                &map(&[]),
                &map(&[("evalsha", 2), ("hget", 1)]),
                4,
            )),
            first_error: None,
        };
        let t = render_table(&r);
        for want in [
            "4 attempts on http://127.0.0.1:8787 (event demo)",
            "2.0 req/s",
            "p50 1.50 ms   p99 9.00 ms   max 12.25 ms",
            "sold_out",
            "75.00%",
            "(0.7500 per attempt; INFO counts Lua's redis.call()s too)",
            "  hget",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        assert!(render_table(&Report { origin: None, ..r }).contains("not measured"));
    }
}
