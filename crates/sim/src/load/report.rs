//! What `flashgate load` prints at the end: the [`Report`] of a run, serialized as one JSON
//! object (`--json`) or rendered as a table for a terminal.

use super::stats::{Latency, OriginUse};
use serde::Serialize;
use std::collections::BTreeMap;

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
    /// Outcome (see [`outcome`](super::outcome)) → count; `transport_error` for attempts that
    /// got no answer.
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

#[cfg(test)]
mod tests {
    use super::super::stats::{map, origin_use};
    use super::*;

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
