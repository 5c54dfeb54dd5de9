//! Running a simulation: the `flashgate simulate` arguments and their checks, the setup at
//! the origin (scripts loaded, the event created or looked up, the budget set), the timeline
//! (an idle second, the warm-up, the start, the crowd) and [`main`], which joins the fleet's
//! count of what it sent with what the instruments measured at the origin.

use super::fleet::{self, Orders};
use super::measure::{self, pct, Readings};
use super::meter::{Meter, PING_MS};
use super::plan::{arrivals, enters_early, group_of, sale_spec, Crowd, Mix, Skew, SECRET};
use super::report::{group_rows, render_table, FairnessReport, Patience, Report};
use super::time::{self, now_ms, sleep_until_ms, Scale};
use crate::load::order_body;
use flashgate_core::config::Config;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::{format_ms, Fairness, DEFAULT_ORIGIN_BUDGET};
use flashgate_core::net::{connect, NativeOrigin};
use flashgate_core::ops;
use flashgate_core::origin::resp::RespConfig;
use flashgate_core::origin::{Cmd, Origin};
use flashgate_core::script::{LINE, PURCHASE, VIEW};
use flashgate_core::token;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// The probe watches the idle origin this long before the warm-up.
const IDLE_MS: i64 = 1000;
/// The least time the pages poll before the start (see `fleet`): 3 s, and a little for
/// setting up the fleet. The start is then put on the next whole second, as sales start.
const WARMUP_MS: i64 = 3300;
/// EDGE_CACHE_MS of every isolate: the refresh interval of its snapshot, as deployed.
const EDGE_CACHE_MS: u64 = 1000;
/// The instruments' bound on one command (connect, write, read).
const PROBE_TIMEOUT_MS: u64 = 5000;
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("sale").required(true).args(["stock", "event"])))]
pub struct SimulateArgs {
    /// Isolates in the fleet, each its own gate.
    #[arg(long, default_value_t = 100)]
    pub isolates: usize,
    /// Distinct users (`sim-0` … `sim-<U-1>`); intent i is user i mod U.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// Purchase intents (first attempts); retries come on top.
    #[arg(long, default_value_t = 2000)]
    pub attempts: u64,
    /// Create a fresh event with one item A of this many units (caps 1/day, 1 in total).
    #[arg(long)]
    pub stock: Option<u32>,
    /// Use this existing event instead; the crowd buys its first item.
    #[arg(long)]
    pub event: Option<String>,
    /// The event's origin budget, purchase attempts per second (default: the event's, or
    /// 5000 for a fresh one).
    #[arg(long)]
    pub budget: Option<u32>,
    /// Length of the run from the start of the sale.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// ADMISSION of every isolate.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub admission: String,
    /// Connections to the origin, shared by the isolates.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// RATE_LIMIT_PER_SEC of every isolate.
    #[arg(long, default_value_t = 5)]
    pub rate_limit_per_sec: u32,
    /// ORIGIN_TIMEOUT_MS of every isolate.
    #[arg(long, default_value_t = 1500)]
    pub origin_timeout_ms: u64,
    /// Mean of the exponential arrival curve, in ms after the start.
    #[arg(long, default_value_t = 300)]
    pub arrival_ms: u64,
    /// Run the sale this many times slower than the wall clock (`simulate::time`): the fleet
    /// is one thread, and a crowd that arrives faster than it can decide is decided late
    /// (`late_p99_ms`). Every figure is in the sale's time; 1: real time; auto: as slow as
    /// the crowd and the fleet need on a 2-core machine (`time::auto_scale`).
    #[arg(long, default_value = "auto")]
    pub time_scale: Scale,
    /// Seed of the crowd's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// The fresh event's fairness: `line` (a place per shopper) or `attempt` (a chance per
    /// attempt).
    #[arg(long, default_value = "line", value_parser = ["line", "attempt"])]
    pub fairness: String,
    /// Mean patience of a shopper in seconds (exponential): a shopper waits as the page does,
    /// honouring Retry-After, and gives up after it, or sooner when the place shown is
    /// hopeless. 0: the old script, 3 retries per intent.
    #[arg(long, default_value_t = 60.0)]
    pub patience_s: f64,
    /// The share of users who retry at the rate limit, ignoring Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub hammer_share: f64,
    /// The share of (other) users who enter before the start: half 10 minutes, half 10
    /// seconds before (an entry ticket for the early window).
    #[arg(long, default_value_t = 0.0)]
    pub early_share: f64,
    /// Accounts each bot spreads its hammering over (the hammerers' users, in runs of K).
    #[arg(long, default_value_t = 1)]
    pub accounts_per_bot: u64,
    /// CROWD:ISOLATES, e.g. 0.5:0.05: that share of the attempts comes through that share of
    /// the isolates.
    #[arg(long, value_parser = Skew::parse)]
    pub skew: Option<Skew>,
}

fn check(a: &SimulateArgs) -> Result<(), String> {
    let within = |name: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{name} must be {lo} to {hi}"))
        }
    };
    within("--isolates", a.isolates as u64, 1, 100_000)?;
    within("--users", a.users, 1, 10_000_000)?;
    within("--attempts", a.attempts, 1, 10_000_000)?;
    within("--seconds", a.seconds, 1, 3600)?;
    within("--connections", a.connections as u64, 1, 4096)?;
    within("--arrival-ms", a.arrival_ms, 0, 3_600_000)?;
    if a.stock == Some(0) {
        return Err("--stock must be at least 1".into());
    }
    for (name, v) in [
        ("--hammer-share", a.hammer_share),
        ("--early-share", a.early_share),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} must be 0 to 1"));
        }
    }
    if !(0.0..=86_400.0).contains(&a.patience_s) {
        return Err("--patience-s must be 0 to 86400".into());
    }
    if a.accounts_per_bot == 0 {
        return Err("--accounts-per-bot must be at least 1".into());
    }
    if a.budget == Some(0) {
        return Err("--budget must be at least 1 attempt per second".into());
    }
    Ok(())
}

/// The vars a worker isolate would read, as the simulator sets them.
fn isolate_config(
    a: &SimulateArgs,
    origin: &str,
    password: Option<&str>,
) -> Result<Config, String> {
    let rate = a.rate_limit_per_sec.to_string();
    let timeout = a.origin_timeout_ms.to_string();
    let refresh = EDGE_CACHE_MS.to_string();
    Config::from_lookup(|name| {
        let v = match name {
            "ORIGIN_URL" => origin,
            "ORIGIN_PASSWORD" => password?,
            "IDENTITY_SECRET" => SECRET,
            "RATE_LIMIT_PER_SEC" => &rate,
            "EDGE_CACHE_MS" => &refresh,
            "ORIGIN_TIMEOUT_MS" => &timeout,
            "ADMISSION" => &a.admission,
            _ => return None,
        };
        Some(v.to_string())
    })
    .map_err(|e| format!("the isolates' configuration is invalid: {e}"))
}

/// The sale the crowd meets.
struct Sale {
    event: String,
    sku: String,
    stock: u64,
    budget: u32,
    /// Units sold before the start.
    sold_before: u64,
    t0_ms: i64,
}

/// Loads both scripts, so that no EVALSHA of the run meets NOSCRIPT (it would count twice).
async fn load_scripts(o: &NativeOrigin) -> Result<(), String> {
    for s in [&*PURCHASE, &*VIEW, &*LINE] {
        o.call(&Cmd::new(["SCRIPT", "LOAD", s.source]))
            .await
            .map_err(|e| format!("cannot load {} at the origin: {e}", s.name))?;
    }
    Ok(())
}

/// Creates the fresh event of `--stock`.
async fn create_sale(
    o: &NativeOrigin,
    a: &SimulateArgs,
    stock: u32,
    run: &str,
    t0_ms: i64,
) -> Result<Sale, String> {
    let budget = a.budget.unwrap_or(DEFAULT_ORIGIN_BUDGET);
    let fairness = Fairness::parse(&a.fairness).unwrap_or_default();
    ops::create(o, &sale_spec(run, t0_ms, stock, budget, fairness), false).await?;
    Ok(Sale {
        event: run.to_string(),
        sku: "A".into(),
        stock: u64::from(stock),
        budget,
        sold_before: 0,
        t0_ms,
    })
}

/// Looks up `--event`, sets `--budget` on it, and starts the crowd at its start or at
/// `earliest`, whichever is later.
async fn existing_sale(
    o: &NativeOrigin,
    a: &SimulateArgs,
    id: &str,
    earliest: i64,
) -> Result<Sale, String> {
    if let Some(b) = a.budget {
        ops::set_budget(o, id, b).await?;
    }
    let s = ops::status(o, id).await?;
    let (Some(info), Some(item)) = (s.meta.items.first(), s.items.first()) else {
        return Err(format!("event {id} has no items"));
    };
    let t0_ms = s.meta.starts_at.max(earliest);
    if t0_ms > earliest + 60_000 {
        return Err(format!(
            "event {id} starts at {}, more than a minute from now; start it first (flashgate event start {id})",
            format_ms(s.meta.starts_at)
        ));
    }
    Ok(Sale {
        event: id.to_string(),
        sku: info.sku.clone(),
        stock: u64::from(item.stock),
        budget: s.meta.origin_budget,
        sold_before: u64::from(item.sold),
        t0_ms,
    })
}

fn progress(attempts: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} intents {wide_bar} {pos}/{len} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(attempts).with_style(style)
}

/// How late at p99 the first attempts may reach their isolates before the report says the
/// figures are partly the machine's: the line's ticks are 250 ms apart, and a crowd decided
/// a fifth of a tick late already moves its first second.
const LATE_WARN_MS: f64 = 50.0;

/// A warning when the fleet fell behind its crowd, with the scale to run at instead.
fn fell_behind(r: &Report) -> Option<String> {
    (r.late_p99_ms > LATE_WARN_MS).then(|| {
        format!(
            "the fleet fell behind its crowd ({:.0} ms late at p99, {:.0} at p50): the figures are partly this machine's, not the gate's; run again with --time-scale {}",
            r.late_p99_ms,
            r.late_p50_ms,
            (r.time_scale * 2.0).ceil().min(time::MAX_SCALE)
        )
    })
}

/// Runs the simulation `a` describes against the origin at `origin` and prints its report.
pub async fn main(a: SimulateArgs, origin: &str, password: Option<String>) -> Result<(), String> {
    let began = std::time::Instant::now();
    check(&a)?;
    let scale = match a.time_scale {
        Scale::Fixed(k) => k,
        Scale::Auto => time::auto_scale(a.attempts, a.arrival_ms, a.isolates),
    };
    time::set_scale(scale);
    let config = isolate_config(&a, origin, password.as_deref())?;
    let admin = connect(origin, password.clone(), 5000)?;
    admin
        .call(&Cmd::new(["PING"]))
        .await
        .map_err(|e| format!("cannot reach the origin at {origin}: {e}"))?;
    load_scripts(&admin).await?;

    let run = format!("sim-{:x}", now_ms() ^ (i64::from(std::process::id()) << 40));
    let earliest = now_ms() + IDLE_MS + WARMUP_MS + a.isolates as i64 / 10;
    let t0_ms = (earliest + 999) / 1000 * 1000;
    let sale = match (&a.event, a.stock) {
        (Some(id), _) => existing_sale(&admin, &a, id, t0_ms).await?,
        (None, Some(stock)) => create_sale(&admin, &a, stock, &run, t0_ms).await?,
        (None, None) => return Err("give --stock or --event".into()),
    };
    let end_ms = sale.t0_ms + a.seconds as i64 * 1000;
    let exp = end_ms / 1000 + 3600;
    let authorization = (0..a.users)
        .map(|u| {
            let t = token::mint(SECRET.as_bytes(), &format!("sim-{u}"), exp);
            format!("Bearer {t}")
        })
        .collect();
    let crowd = Crowd {
        users: a.users,
        intents: a.attempts,
        isolates: a.isolates,
        mean_ms: a.arrival_ms as f64,
        horizon_ms: a.seconds as i64 * 1000,
        skew: a.skew,
    };
    let mix = Mix {
        hammer: a.hammer_share,
        early: a.early_share,
    };
    // A bot's accounts are consecutive users: all of them hammer, or none.
    let k = a.accounts_per_bot;
    let groups: Vec<_> = (0..a.users).map(|u| group_of(u / k, mix)).collect();
    let early: Vec<bool> = (0..a.users).map(|u| enters_early(u / k, mix)).collect();
    let plan = arrivals(&crowd, &mut fastrand::Rng::with_seed(a.seed));

    let mut probed = RespConfig::from_url(origin, PROBE_TIMEOUT_MS)?;
    if probed.password.is_none() {
        probed.password = password.clone();
    }
    let meter = Meter::start(&probed, &sale.event, &sale.sku, sale.t0_ms, a.seconds)?;
    sleep_until_ms(now_ms() + IDLE_MS).await;
    let warm_from = now_ms() - sale.t0_ms;
    let bar = progress(a.attempts);
    let orders = Orders {
        config,
        origin_url: origin.to_string(),
        origin_password: password,
        connections: a.connections,
        isolates: a.isolates,
        event: sale.event.clone(),
        body: order_body(std::slice::from_ref(&sale.sku), &[0], 1),
        authorization,
        run,
        arrivals: plan,
        t0_ms: sale.t0_ms,
        end_ms,
        seed: a.seed,
        groups: groups.clone(),
        early,
        patience_ms: (a.patience_s > 0.0).then_some(a.patience_s * 1000.0),
        hammer_ms: 1000 / u64::from(a.rate_limit_per_sec.max(1)),
        skew: a.skew,
    };
    let fleet = fleet::spawn(orders, bar.clone());
    let log = tokio::task::spawn_blocking(move || fleet.join())
        .await
        .map_err(|e| format!("the fleet could not be joined: {e}"))?
        .map_err(|_| "the fleet's thread panicked".to_string())??;
    bar.finish_and_clear();
    let last_edge = ((log.finished_ms + 999) / 1000).clamp(1, a.seconds as i64) as u64;
    let m = meter.finish(last_edge).await?;

    let meta_key = EventKeys::new(&sale.event).meta;
    let sold = admin
        .call(&Cmd::new([
            "HGET".to_string(),
            meta_key,
            format!("sold:{}", sale.sku),
        ]))
        .await
        .map_err(|e| format!("cannot read the units sold at the origin: {e}"))?
        .as_int()
        .unwrap_or(0)
        .max(0) as u64;
    let sellout = measure::sellout_ms(&m.sold, sale.stock);
    let readings = Readings {
        commands: &m.commands,
        pings: &m.pings,
        sold: &m.sold,
        forwards: &log.forwards,
        sent: &log.sent,
        sold_before: sale.sold_before,
    };
    let per_second = measure::per_second(&readings, &sale.sku, sellout);
    let origin_attempts: u64 = per_second.iter().map(|s| s.origin_attempts).sum();
    let sent: u64 = log.sent.iter().sum();
    let after: Vec<_> = log
        .forwards
        .iter()
        .filter(|f| sellout.is_some_and(|s| f.at_ms >= s) && f.skus.contains(&sale.sku))
        .collect();
    let idle = measure::ping_percentiles(&m.pings, i64::MIN, warm_from);
    let sale_pings = measure::ping_percentiles(&m.pings, 0, last_edge as i64 * 1000);
    let late = measure::p50_p99_ms(log.late_us);
    let thread_late_max_ms = log.thread_late_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
    let thread_late = measure::p50_p99_ms(log.thread_late_us);
    let gave_up = {
        let mut w = log.gave_up_ms.clone();
        w.sort_unstable();
        let at = |p: f64| crate::load::percentile(&w, p) as f64 / 1000.0;
        (at(50.0), at(90.0))
    };
    let fairness_mode = match &a.event {
        Some(_) => ops::status(&admin, &sale.event)
            .await
            .map(|s| s.meta.fairness.as_str().to_string())
            .unwrap_or_default(),
        None => a.fairness.clone(),
    };
    let report = Report {
        event: sale.event,
        sku: sale.sku.clone(),
        isolates: a.isolates,
        connections: a.connections,
        users: a.users,
        attempts: a.attempts,
        budget: sale.budget,
        admission: a.admission.clone(),
        seed: a.seed,
        stock: sale.stock,
        sold,
        oversold: sold.saturating_sub(sale.stock),
        sellout_ms: sellout,
        sent,
        origin_attempts,
        reached_origin_pct: pct(origin_attempts, sent),
        isolate_forwards: log.forwards.iter().filter(|f| f.sent).count() as u64,
        forwarded_after_sellout: after.len() as u64,
        last_forward_after_sellout_ms: sellout
            .and_then(|s| measure::last_forward_after(&log.forwards, &sale.sku, s)),
        isolates_forwarding_after_sellout: measure::forwarding_isolates(
            &log.forwards,
            &sale.sku,
            sellout.unwrap_or(i64::MAX),
            i64::MAX,
        ),
        idle_p50_ms: idle.0,
        idle_p99_ms: idle.1,
        sale_p50_ms: sale_pings.0,
        sale_p99_ms: sale_pings.1,
        edge_cache_ms: EDGE_CACHE_MS,
        probe_ms: PING_MS,
        probe_priority: m.priority,
        late_p50_ms: late.0,
        late_p99_ms: late.1,
        thread_late_p99_ms: thread_late.1,
        thread_late_max_ms,
        time_scale: time::slow().scale,
        time_scale_auto: a.time_scale == Scale::Auto,
        warmup_ms: log.warmup_ms,
        warmed_isolates: log.warmed,
        per_second,
        intents: log.intents,
        answers: log.answers,
        elapsed_s: began.elapsed().as_secs_f64(),
        patience: Patience {
            mean_s: (a.patience_s > 0.0).then_some(a.patience_s),
            gave_up: log.gave_up_ms.len() as u64,
            hopeless: log.hopeless,
            waited_p50_s: gave_up.0,
            waited_p90_s: gave_up.1,
        },
        fairness: FairnessReport {
            mode: fairness_mode,
            groups: group_rows(&groups, &log.user_attempts, &log.user_won),
        },
    };
    if let Some(why) = fell_behind(&report) {
        eprintln!("flashgate simulate: {why}");
    }
    if a.json {
        let doc = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        println!("{doc}");
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}
