//! Counting what a crowd got and what it cost: the outcome an answer is counted under, the
//! [`Tally`] each sender keeps, latency percentiles, and the origin's `INFO commandstats`
//! read, parsed and subtracted. The tests in `tests/` measure origin commands with these same
//! functions, so they count exactly what `flashgate load` reports.

use flashgate_core::origin::{Cmd, Origin};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// The attempts one sender made: every attempt adds one to `statuses` and one to `codes`;
/// only answered ones add a latency sample.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Tally {
    /// HTTP status → count; `failed` for attempts that got no answer.
    pub statuses: BTreeMap<String, u64>,
    /// [`outcome`] → count; `transport_error` for attempts that got no answer.
    pub codes: BTreeMap<String, u64>,
    /// Latency of each answered attempt, in microseconds.
    pub micros: Vec<u64>,
    /// The first transport error.
    pub first_error: Option<String>,
}

impl Tally {
    /// An attempt answered `status` with `body` after `micros`.
    pub fn answered(&mut self, status: u16, body: &[u8], micros: u64) {
        self.micros.push(micros);
        *self.statuses.entry(status.to_string()).or_insert(0) += 1;
        *self.codes.entry(outcome(status, body)).or_insert(0) += 1;
    }

    /// An attempt that got no answer; `why` is asked only for the first.
    pub fn failed(&mut self, why: impl FnOnce() -> String) {
        *self.statuses.entry("failed".into()).or_insert(0) += 1;
        *self.codes.entry("transport_error".into()).or_insert(0) += 1;
        self.first_error.get_or_insert_with(why);
    }

    pub fn merge(&mut self, o: Tally) {
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

/// `INFO commandstats` from `o`, parsed (see [`parse_commandstats`]).
pub async fn commandstats(o: &impl Origin) -> Result<BTreeMap<String, u64>, String> {
    let v = o
        .call(&Cmd::new(["INFO", "commandstats"]))
        .await
        .map_err(|e| e.to_string())?;
    let text = v.as_str().ok_or("INFO did not answer text")?;
    Ok(parse_commandstats(text))
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

/// Calls added between two commandstats readings: only the commands whose count grew, INFO
/// (the reader's own) left out. A counter that went down (CONFIG RESETSTAT) counts as 0.
pub fn commandstats_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, d)| d > 0)
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
    let by_command = commandstats_delta(before, after);
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

#[cfg(test)]
pub(super) fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tallies_count_every_attempt_once_and_merge() {
        let mut a = Tally::default();
        a.answered(201, br#"{"order":{},"replayed":false}"#, 1500);
        a.failed(|| "connection refused".into());
        let mut b = Tally::default();
        b.answered(410, br#"{"error":{"code":"sold_out"}}"#, 700);
        b.failed(|| "timed out".into());
        b.failed(|| unreachable!("only the first error is kept"));
        a.merge(b);
        assert_eq!(
            a,
            Tally {
                statuses: map(&[("201", 1), ("410", 1), ("failed", 3)]),
                codes: map(&[("placed", 1), ("sold_out", 1), ("transport_error", 3)]),
                micros: vec![1500, 700],
                first_error: Some("connection refused".into()),
            }
        );
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
        assert_eq!(commandstats_delta(&before, &after), u.by_command);
        // A counter reset (CONFIG RESETSTAT) never yields a huge delta.
        assert_eq!(origin_use(&after, &before, 1).commands, 0);
        assert_eq!(commandstats_delta(&after, &before), BTreeMap::new());
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
}
