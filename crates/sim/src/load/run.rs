//! Running a crowd: the `flashgate load` arguments and their checks, the one pooled HTTP
//! client with `--concurrency` senders taking attempts from a shared counter, the progress
//! bar, and the origin's commandstats read around the burst.

use super::plan::{order_body, CrowdPlan, Mix};
use super::report::{render_table, Report};
use super::stats::{commandstats, latency, origin_use, Tally};
use flashgate_core::model::now_ms;
use flashgate_core::model::{format_ms, parse_rfc3339_ms, valid_id};
use flashgate_core::token::{self, MIN_SECRET_LEN};
use indicatif::{ProgressBar, ProgressStyle};
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

/// What every sender of a run shares: the client, the plan and the counter of the next
/// attempt to send.
struct RunState {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    /// Token expiry, Unix seconds.
    exp: i64,
    skus: Vec<String>,
    qty: u32,
    /// Prefix of this run's idempotency keys.
    run: String,
    plan: CrowdPlan,
    next: AtomicU64,
    bar: ProgressBar,
}

/// Sends planned attempts until none is left; what they got, counted.
async fn send_all(s: Arc<RunState>) -> Tally {
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
            Ok((status, body)) => t.answered(status, &body, t0.elapsed().as_micros() as u64),
            Err(e) => t.failed(|| error_chain(&e)),
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

/// Runs the crowd `args` describe and prints its report; INFO commandstats is read from
/// `origin` around the burst unless `--no-origin-stats`.
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
        Some(flashgate_core::net::connect(origin, password, 5000)?)
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
    let shared = Arc::new(RunState {
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
        plan: CrowdPlan::new(args.requests, mix),
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
