//! What `flashgate simulate` prints: the [`Report`] of a run, as one JSON document (`--json`)
//! or as a table for a terminal. The figures are defined in `measure`.

use super::measure::Second;
use super::probe::Priority;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub event: String,
    pub sku: String,
    pub isolates: usize,
    pub connections: usize,
    pub users: u64,
    /// Purchase intents (first attempts).
    pub attempts: u64,
    /// The event's origin budget, attempts per second.
    pub budget: u32,
    /// `on` or `off`.
    pub admission: String,
    pub seed: u64,
    pub stock: u64,
    /// Units sold at the end, read at the origin.
    pub sold: u64,
    /// Units sold beyond the stock: must be 0.
    pub oversold: u64,
    /// From the start to the first reading of sold = stock; `null` if it never sold out.
    pub sellout_ms: Option<i64>,
    /// Attempts the crowd sent to isolates, retries included.
    pub sent: u64,
    /// Purchase attempts that reached the origin, measured there.
    pub origin_attempts: u64,
    /// `origin_attempts` as a percentage of `sent`.
    pub reached_origin_pct: f64,
    /// Purchases the isolates' connections sent, noted at their origin boundaries (a
    /// cross-check of `origin_attempts`).
    pub isolate_forwards: u64,
    /// Purchases of the sold-out sku the isolates forwarded after the sellout (sent or not),
    /// and how many isolates did.
    pub forwarded_after_sellout: u64,
    pub isolates_forwarding_after_sellout: usize,
    /// How long after the sellout the last of those was forwarded; `null` if none was.
    pub last_forward_after_sellout_ms: Option<i64>,
    /// The probe's PING round trips in the idle second before the warm-up.
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    /// The same over the whole sale: from the start to the last second reported.
    pub sale_p50_ms: f64,
    pub sale_p99_ms: f64,
    /// Every isolate's EDGE_CACHE_MS: how often it refreshes its snapshot.
    pub edge_cache_ms: u64,
    /// The probe's PING period, and the scheduling its thread got (`fifo`, `nice`, `normal`).
    pub probe_ms: u64,
    pub probe_priority: Priority,
    /// How late first attempts reached their isolates against the plan (see `measure`).
    pub late_p50_ms: f64,
    pub late_p99_ms: f64,
    /// How late the fleet's thread woke for a timer every 10 ms over the crowd's first two
    /// seconds: its own lag, which every first attempt shares. First attempts later than
    /// this waited for something in the fleet, not for the machine.
    pub thread_late_p99_ms: f64,
    pub thread_late_max_ms: f64,
    /// `--time-scale`: how many times slower than the wall clock the sale ran (every figure
    /// is in the sale's time).
    pub time_scale: f64,
    /// The scale was chosen by `--time-scale auto`.
    pub time_scale_auto: bool,
    pub warmup_ms: i64,
    /// Isolates that had read their snapshot before the start.
    pub warmed_isolates: usize,
    pub per_second: Vec<Second>,
    /// How each intent ended.
    pub intents: BTreeMap<String, u64>,
    /// Every answer the crowd got, by outcome.
    pub answers: BTreeMap<String, u64>,
    /// Wall time of the whole command, setup included.
    pub elapsed_s: f64,
    /// The crowd's patience and who gave up.
    pub patience: Patience,
    /// Who won, by group.
    pub fairness: FairnessReport,
}

/// Shoppers' patience (`--patience-s`) and the intents that gave up.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Patience {
    /// Mean patience in seconds; `null`: the old script ([`super::MAX_RETRIES`] retries).
    pub mean_s: Option<f64>,
    pub gave_up: u64,
    /// Of those, on a place far behind the units left (`plan::HOPELESS`).
    pub hopeless: u64,
    /// How long they had waited: median and 90th percentile, seconds.
    pub waited_p50_s: f64,
    pub waited_p90_s: f64,
}

/// The event's fairness setting and each group's share of the units won.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FairnessReport {
    pub mode: String,
    pub groups: Vec<GroupRow>,
}

/// One group of the crowd: `win_ratio` is its share of the units won over its share of users.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupRow {
    pub name: String,
    pub users: u64,
    pub attempts: u64,
    pub won: u64,
    pub win_ratio: Option<f64>,
}

/// The group rows from per-user attempts and units won.
pub fn group_rows(groups: &[super::plan::Group], attempts: &[u64], won: &[u64]) -> Vec<GroupRow> {
    let (all_users, all_won) = (groups.len() as f64, won.iter().sum::<u64>() as f64);
    super::plan::Group::ALL
        .iter()
        .filter_map(|g| {
            let of = |v: &[u64]| -> u64 {
                (groups.iter().zip(v))
                    .filter(|(x, _)| *x == g)
                    .map(|(_, n)| n)
                    .sum()
            };
            let users = groups.iter().filter(|x| *x == g).count() as u64;
            (users > 0).then(|| {
                let won_g = of(won);
                GroupRow {
                    name: g.name().to_string(),
                    users,
                    attempts: of(attempts),
                    won: won_g,
                    win_ratio: (all_won > 0.0)
                        .then(|| (won_g as f64 / all_won) / (users as f64 / all_users)),
                }
            })
        })
        .collect()
}

/// The report as a table for a terminal.
pub fn render_table(r: &Report) -> String {
    let mut out = format!(
        "flashgate simulate: {} isolates, {} attempts from {} users, event {} ({} units of {}), origin budget {}/s, admission {}\n\n",
        r.isolates, r.attempts, r.users, r.event, r.stock, r.sku, r.budget, r.admission
    );
    out += &format!(
        "  {:>4} {:>9} {:>16} {:>9} {:>9} {:>7} {:>20}\n",
        "t(s)", "sent", "origin attempts", "p50 ms", "p99 ms", "sold", "isolates forwarding"
    );
    for s in &r.per_second {
        let fwd = s
            .forwarding_isolates_after_sellout
            .map_or("-".to_string(), |n| n.to_string());
        out += &format!(
            "  {:>4} {:>9} {:>16} {:>9.2} {:>9.2} {:>7} {:>20}\n",
            s.t, s.sent, s.origin_attempts, s.origin_p50_ms, s.origin_p99_ms, s.sold, fwd
        );
    }
    let sellout = r
        .sellout_ms
        .map_or("never".to_string(), |ms| format!("after {ms} ms"));
    let joined = |m: &BTreeMap<String, u64>| {
        let all: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        all.join(", ")
    };
    let rows = [
        (
            "sold out",
            format!(
                "{sellout} ({} of {} sold, {} oversold)",
                r.sold, r.stock, r.oversold
            ),
        ),
        (
            "reached the origin",
            format!(
                "{:.2}% ({} of {} attempts sent to isolates)",
                r.reached_origin_pct, r.origin_attempts, r.sent
            ),
        ),
        (
            "forwarded after sellout",
            format!(
                "{} purchases from {} isolates{}",
                r.forwarded_after_sellout,
                r.isolates_forwarding_after_sellout,
                r.last_forward_after_sellout_ms
                    .map_or(String::new(), |ms| format!(", the last {ms} ms after it"))
            ),
        ),
        (
            "idle origin",
            format!("p50 {:.2} ms, p99 {:.2} ms", r.idle_p50_ms, r.idle_p99_ms),
        ),
        (
            "origin during the sale",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (PING every {} ms, probe thread {})",
                r.sale_p50_ms,
                r.sale_p99_ms,
                r.probe_ms,
                r.probe_priority.name()
            ),
        ),
        (
            "warmed up",
            format!(
                "{} of {} isolates in {} ms",
                r.warmed_isolates, r.isolates, r.warmup_ms
            ),
        ),
        (
            "first attempts arrived",
            format!(
                "p50 {:.0} ms, p99 {:.0} ms behind the plan (the thread: p99 {:.0} ms, max {:.0} ms)",
                r.late_p50_ms, r.late_p99_ms, r.thread_late_p99_ms, r.thread_late_max_ms
            ),
        ),
        (
            "sale's clock",
            format!(
                "{}{}",
                if r.time_scale == 1.0 {
                    "the wall clock".to_string()
                } else {
                    format!("{}× slower than the wall clock", r.time_scale)
                },
                if r.time_scale_auto { " (auto)" } else { "" }
            ),
        ),
        ("intents ended", joined(&r.intents)),
        (
            "gave up",
            format!(
                "{} intents ({} on a hopeless place), after p50 {:.1} s, p90 {:.1} s{}",
                r.patience.gave_up,
                r.patience.hopeless,
                r.patience.waited_p50_s,
                r.patience.waited_p90_s,
                r.patience
                    .mean_s
                    .map_or(" (3 retries each)".to_string(), |m| format!(
                        " (patience: mean {m:.0} s)"
                    ))
            ),
        ),
        ("answers", joined(&r.answers)),
        ("ran for", format!("{:.1} s", r.elapsed_s)),
    ];
    out += "\n";
    for (label, value) in rows {
        out += &format!("  {label:<26} {value}\n");
    }
    out += &format!(
        "\n  fairness = {}\n  {:<12} {:>8} {:>10} {:>7} {:>10}\n",
        r.fairness.mode, "group", "users", "attempts", "won", "win ratio"
    );
    for g in &r.fairness.groups {
        let ratio = g.win_ratio.map_or("-".to_string(), |x| format!("{x:.2}"));
        out += &format!(
            "  {:<12} {:>8} {:>10} {:>7} {:>10}\n",
            g.name, g.users, g.attempts, g.won, ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_run() -> Report {
        Report {
            event: "sim-1".into(),
            sku: "A".into(),
            isolates: 20,
            users: 300,
            attempts: 600,
            budget: 200,
            admission: "off".into(),
            stock: 50,
            sold: 50,
            sellout_ms: Some(312),
            sent: 640,
            origin_attempts: 160,
            reached_origin_pct: 25.0,
            forwarded_after_sellout: 9,
            isolates_forwarding_after_sellout: 4,
            idle_p99_ms: 0.25,
            sale_p50_ms: 0.125,
            sale_p99_ms: 0.5,
            probe_ms: 2,
            probe_priority: Priority::Fifo,
            last_forward_after_sellout_ms: Some(840),
            per_second: vec![Second {
                t: 0,
                sent: 600,
                origin_attempts: 150,
                origin_p50_ms: 0.5,
                origin_p99_ms: 3.25,
                sold: 50,
                forwarding_isolates_after_sellout: Some(4),
            }],
            intents: BTreeMap::from([("placed".to_string(), 50)]),
            ..Report::default()
        }
    }

    #[test]
    fn the_table_shows_every_figure() {
        let r = small_run();
        let t = render_table(&r);
        for want in [
            "20 isolates, 600 attempts from 300 users, event sim-1 (50 units of A), origin budget 200/s, admission off",
            "     0       600              150      0.50      3.25      50                    4",
            "after 312 ms (50 of 50 sold, 0 oversold)",
            "25.00% (160 of 640 attempts sent to isolates)",
            "9 purchases from 4 isolates, the last 840 ms after it",
            "p99 0.25 ms",
            "p50 0.12 ms, p99 0.50 ms (PING every 2 ms, probe thread fifo)",
            "placed 50",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        let never = render_table(&Report {
            sellout_ms: None,
            ..r.clone()
        });
        assert!(never.contains("never (50 of 50 sold"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["probe_priority"], "fifo");
        assert_eq!(json["last_forward_after_sellout_ms"], 840);
    }
}
