//! The operator's views: an event file read from disk, the status as a table or JSON, and the
//! live screen (`event status --watch`: live.lua once a second, the same read as
//! `GET /api/events/{event}/live`), rendered from what flashgate-core's operations read.

use flashgate_core::fleet::FleetFigures;
use flashgate_core::gate::{line_body, live_body, LineBody};
use flashgate_core::model::{format_ms, now_ms, EventSpec};
use flashgate_core::origin::Origin;
use flashgate_core::script::{read_live, LiveView, LiveWindow, Snapshot};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

/// Reads an event file (`.json` or `.toml`).
pub fn read_spec(path: &str) -> Result<EventSpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if path.ends_with(".toml") {
        toml::from_str(&text).map_err(|e| format!("{path} is not a valid event file: {e}"))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{path} is not a valid event file: {e}"))
    }
}

/// A status table for a terminal.
pub fn status_table(s: &Snapshot, now_ms: i64) -> String {
    let m = &s.meta;
    let mut out = format!(
        "event {} ({}): {}\nstarts {}  ends {}  caps: {}/item/day, {} total, {}/order\n\n{:<20} {:>10} {:>10} {:>10}\n",
        m.id, m.name, s.state(now_ms).as_str(), format_ms(m.starts_at), format_ms(m.ends_at),
        m.caps.per_item_per_day, m.caps.total, m.caps.per_order_qty, "sku", "stock", "sold", "remaining"
    );
    for (info, v) in m.items.iter().zip(&s.items) {
        out += &format!(
            "{:<20} {:>10} {:>10} {:>10}\n",
            info.sku,
            v.stock,
            v.sold,
            v.remaining()
        );
    }
    out += &format!(
        "\norders awaiting payment: {}\norder changes not yet written to the database: {}\n",
        s.pending, s.stream_len
    );
    if let Some(l) = line_body(s, now_ms) {
        out += &format!("line: {}\n", line_text(&l));
    }
    out
}

/// A count with thousands separators: 3,100.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The line in words: "1,240 of 3,100 entered admitted (2,000 early, 1,100 late), 400/s".
pub fn line_text(l: &LineBody) -> String {
    let how = match (l.threshold, l.open) {
        (None, _) => "; drawn at the start".to_string(),
        (Some(_), true) => ", open: admitted as they arrive".to_string(),
        (Some(_), false) => format!(", {}/s", thousands(l.rate.round() as u64)),
    };
    format!(
        "{} of {} entered admitted ({} early, {} late){how}",
        thousands(l.admitted),
        thousands(l.entered),
        thousands(l.early),
        thousands(l.late)
    )
}

pub fn status_json(s: &Snapshot, now_ms: i64) -> serde_json::Value {
    let items: Vec<_> = s.meta.items.iter().zip(&s.items)
        .map(|(i, v)| serde_json::json!({ "sku": i.sku, "stock": v.stock, "sold": v.sold, "remaining": v.remaining() }))
        .collect();
    serde_json::json!({ "id": s.meta.id, "name": s.meta.name, "state": s.state(now_ms).as_str(), "flag": s.meta.flag.as_str(), "items": items, "orders_pending": s.pending, "stream_len": s.stream_len, "line": line_body(s, now_ms) })
}

/// The live view of `id` over the last `minutes` at `now`, and how long the read took (ms).
pub async fn live<O: Origin>(
    o: &O,
    id: &str,
    now: i64,
    minutes: u32,
) -> Result<(LiveView, i64), String> {
    let t0 = std::time::Instant::now();
    let v = read_live(o, id, LiveWindow::last_minutes(now, minutes))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("there is no event {id} at this origin"))?;
    Ok((v, t0.elapsed().as_millis() as i64))
}

/// Clears a terminal and puts the cursor home (ANSI).
const CLEAR: &str = "\x1b[H\x1b[2J";

/// `event status <id> --watch`: the live view every second until Ctrl-C, as a table (the
/// screen redrawn) or, with `json`, one JSON document per line (the API's body). A failed
/// first read is the command's error; later failures are shown and retried.
pub async fn watch<O: Origin>(o: &O, id: &str, json: bool) -> Result<(), String> {
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let clear = !json && std::io::stdout().is_terminal();
    for frame in 0u64.. {
        let now = now_ms();
        let shown = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = live(o, id, now, 1) => r,
        };
        let text = match shown {
            Ok((v, read_ms)) if json => {
                serde_json::to_string(&live_body(&v, now, read_ms)).unwrap_or_default() + "\n"
            }
            Ok((v, read_ms)) => live_table(&v, now, read_ms),
            Err(e) if frame == 0 => return Err(e),
            Err(e) if json => {
                eprintln!("flashgate: {e}; retrying in a second");
                String::new()
            }
            Err(e) => format!("flashgate: {e}; retrying in a second\n"),
        };
        let mut out = std::io::stdout().lock();
        let sep = if clear {
            CLEAR
        } else if json || frame == 0 {
            ""
        } else {
            "\n"
        };
        if write!(out, "{sep}{text}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(()); // the reader went away (a closed pipe)
        }
        drop(out);
        // Wake just after the next second starts: the second before it is then complete.
        let wait = 1100 - now_ms().rem_euclid(1000);
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
        }
    }
    Ok(())
}

/// A share as a percentage, or `-` when there is nothing to divide.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The live view as a terminal screen: items, orders, the order writer, the fleet's last
/// second and last window, and the decisions over the window by code and place.
pub fn live_table(v: &LiveView, now: i64, read_ms: i64) -> String {
    let s = &v.snapshot;
    let m = &s.meta;
    let mut out = format!(
        "event {} ({}): {}   {}   origin read {read_ms} ms   Ctrl-C to stop\n\n{:<20} {:>10} {:>10} {:>10}\n",
        m.id, m.name, s.state(now).as_str(), format_ms(now), "sku", "stock", "sold", "remaining"
    );
    for (info, it) in m.items.iter().zip(&s.items) {
        let left = if it.remaining() == 0 {
            "sold out".to_string()
        } else {
            it.remaining().to_string()
        };
        out += &format!(
            "{:<20} {:>10} {:>10} {:>10}\n",
            info.sku, it.stock, it.sold, left
        );
    }
    out += &format!(
        "\norders         {} pending, {} paid, {} expired, {} cancelled\n",
        s.pending, v.paid, v.expired, v.cancelled
    );
    out += &match v.writer {
        None => format!(
            "order writer   none has started; {} order changes wait in the stream\n",
            s.stream_len
        ),
        Some(w) => format!(
            "order writer   {} not yet read, {} being written ({} in the stream)\n",
            w.lag
                .map_or("an unknown number".to_string(), |n| n.to_string()),
            w.pending,
            s.stream_len
        ),
    };
    if let Some(l) = line_body(s, now) {
        out += &format!("line           {}\n", line_text(&l));
    }

    let last = v.seconds.last().cloned().unwrap_or_default();
    let mut total = FleetFigures::default();
    for f in &v.seconds {
        for (k, n) in &f.counts {
            *total.counts.entry(k.clone()).or_insert(0) += n;
        }
    }
    let span = format!("last {} s", v.seconds.len());
    out += &format!("\n{:<20} {:>12} {:>12}\n", "fleet", "last second", span);
    for (label, name) in [
        ("attempts", "attempts"),
        ("candidates", "candidates"),
        ("forwarded", "forwarded"),
        ("shed (busy)", "shed"),
        ("placed", "origin:placed"),
    ] {
        out += &format!(
            "{label:<20} {:>12} {:>12}\n",
            last.get(name),
            total.get(name)
        );
    }
    out += &format!(
        "{:<20} {:>12} {:>12}\n{:<20} {:>12} {:>12}\n",
        "origin share",
        percent(last.get("forwarded"), last.get("attempts")),
        percent(total.get("forwarded"), total.get("attempts")),
        "isolates",
        last.isolates(),
        v.seconds
            .iter()
            .map(FleetFigures::isolates)
            .max()
            .unwrap_or(0),
    );
    out += &format!("origin budget        {:>12} attempts/s\n", m.origin_budget);

    let mut by_code: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, &n) in &total.counts {
        match k.split_once(':') {
            Some(("edge", code)) => by_code.entry(code).or_default().0 += n,
            Some((_, code)) => by_code.entry(code).or_default().1 += n,
            None => {}
        }
    }
    let mut rows: Vec<_> = by_code.into_iter().collect();
    rows.sort_by_key(|(code, (e, o))| (std::cmp::Reverse(e + o), *code));
    out += &format!(
        "\n{:<20} {:>12} {:>12}\n",
        format!("decisions, {span}"),
        "at edge",
        "at origin"
    );
    if rows.is_empty() {
        out += "(none reported)\n";
    }
    for (code, (e, o)) in rows {
        out += &format!("{code:<20} {e:>12} {o:>12}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_screen() {
        use flashgate_core::script::{live_reply, parse_live, sample_live};
        let v = sample_live();
        let screen = live_table(&v, 1_798_761_610_250, 2);
        let want = "\
event e (E): live   2027-01-01T00:00:10.250Z   origin read 2 ms   Ctrl-C to stop

sku                       stock       sold  remaining
A                            10          4          6
B                             5          5   sold out

orders         3 pending, 2 paid, 1 expired, 4 cancelled
order writer   0 not yet read, 2 being written (9 in the stream)
line           1,420 of 1,440 entered admitted (1,200 early, 240 late), 100/s

fleet                 last second     last 2 s
attempts                        4           16
candidates                      0            5
forwarded                       1            5
shed (busy)                     0            1
placed                          0            3
origin share                  25%          31%
isolates                        1            2
origin budget                 300 attempts/s

decisions, last 2 s       at edge    at origin
sold_out                       10            2
placed                          0            3
busy                            1            0
";
        assert_eq!(screen, want);
        let w = LiveWindow {
            first: 1_798_761_608,
            seconds: 2,
        };
        let none = parse_live(&live_reply([0, 0, 0], &[&[], &[]]), w)
            .unwrap()
            .unwrap();
        let screen = live_table(&none, 1_798_761_610_250, 0);
        assert!(screen.contains("order writer   none has started; 9 order changes wait"));
        assert!(screen.contains("origin share                    -            -"));
        assert!(screen.contains("(none reported)"));
    }

    #[test]
    fn the_line_in_words() {
        use flashgate_core::model::Fairness;
        use flashgate_core::script::{live_reply_with_line, parse_live};
        let l = LineBody {
            threshold: Some(12.5),
            admitted: 1240,
            entered: 3100,
            early: 2000,
            late: 1100,
            rate: 399.6,
            open: false,
        };
        assert_eq!(
            line_text(&l),
            "1,240 of 3,100 entered admitted (2,000 early, 1,100 late), 400/s"
        );
        let open = LineBody { open: true, ..l };
        assert!(line_text(&open).ends_with("late), open: admitted as they arrive"));
        let before = LineBody {
            threshold: None,
            admitted: 0,
            ..l
        };
        assert!(line_text(&before).starts_with("0 of 3,100"));
        assert!(line_text(&before).ends_with("; drawn at the start"));
        assert_eq!(
            [0, 7, 999, 1000, 1_234_567].map(thousands),
            ["0", "7", "999", "1,000", "1,234,567"]
        );

        // The status table and JSON: a line event shows its line, an attempt event none.
        let w = LiveWindow {
            first: 7,
            seconds: 1,
        };
        let v = parse_live(&live_reply_with_line([0, 0, 0], &[&[]], &[("n:0", "3")]), w)
            .unwrap()
            .unwrap();
        let mut s = v.snapshot;
        let now = 1_798_761_610_250;
        assert!(status_table(&s, now).ends_with(
            "\nline: 0 of 12 entered admitted (12 early, 0 late); drawn at the start\n"
        ));
        assert_eq!(status_json(&s, now)["line"]["entered"], 12);
        s.meta.fairness = Fairness::Attempt;
        assert!(!status_table(&s, now).contains("line:"));
        assert_eq!(status_json(&s, now)["line"], serde_json::Value::Null);
    }
}
