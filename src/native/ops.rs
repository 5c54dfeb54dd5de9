//! The operator's data-control operations: create and preload an event, flip its state,
//! read its status, and watch it live (`event status --watch`: live.lua once a second, the
//! same read as `GET /api/events/{event}/live`). Errors are sentences for a terminal.

use crate::fleet::FleetFigures;
use crate::gate::live_body;
use crate::keys::EventKeys;
use crate::model::{format_ms, EventSpec, NewEvent, State};
use crate::origin::{Cmd, Origin, Value};
use crate::script::{parse_view, read_live, view_call, LiveView, LiveWindow, Snapshot, VIEW};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

async fn call<O: Origin>(o: &O, args: Vec<String>) -> Result<Value, String> {
    o.call(&Cmd { args, route: None })
        .await
        .map_err(|e| e.to_string())
}

/// Reads an event file (`.json` or `.toml`).
pub fn read_spec(path: &str) -> Result<EventSpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if path.ends_with(".toml") {
        toml::from_str(&text).map_err(|e| format!("{path} is not a valid event file: {e}"))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{path} is not a valid event file: {e}"))
    }
}

/// The event's snapshot (view.lua). Its pending orders are those tracked (track.lua), so the
/// stream is tracked first when the event exists: the count includes every placed order.
pub async fn status<O: Origin>(o: &O, id: &str) -> Result<Snapshot, String> {
    let s = read_status(o, id).await?;
    match super::orders::track(o, id).await {
        Ok(0) => Ok(s),
        Ok(_) => read_status(o, id).await,
        Err(e) => Err(format!("cannot track the orders of event {id}: {e}")),
    }
}

async fn read_status<O: Origin>(o: &O, id: &str) -> Result<Snapshot, String> {
    let now = super::now_ms();
    let (keys, args) = view_call(&EventKeys::new(id), now, &[]);
    let v = VIEW
        .eval(o, &keys, &args)
        .await
        .map_err(|e| e.to_string())?;
    parse_view(&v, now.div_euclid(1000))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("there is no event {id} at this origin"))
}

/// Creates (or with `replace`, recreates from scratch) an event and preloads its stock.
/// The meta hash is written last: an event exists once it is complete.
pub async fn create<O: Origin>(o: &O, spec: &EventSpec, replace: bool) -> Result<NewEvent, String> {
    let ev = spec.validate()?;
    let k = EventKeys::new(&ev.meta.id);
    let exists = call(o, vec!["EXISTS".into(), k.meta.clone()])
        .await?
        .as_int()
        == Some(1);
    if exists && !replace {
        return Err(format!("event {} already exists; pass --replace to recreate it (this clears its sales, buyers and orders)", ev.meta.id));
    }
    if exists {
        delete_users(o, &k).await?;
    }
    // Keys of earlier layouts: a stock hash (version 1), a sold hash (before sold moved into
    // meta).
    let id = &ev.meta.id;
    let legacy = [format!("fg:{{{id}}}:stock"), format!("fg:{{{id}}}:sold")];
    for key in [&k.meta, &k.orders, &k.pending, &k.stream]
        .into_iter()
        .chain(&legacy)
    {
        call(o, vec!["DEL".into(), key.clone()]).await?;
    }
    let mut hset = vec!["HSET".to_string(), k.meta.clone()];
    for (f, v) in ev.meta.to_fields() {
        hset.push(f.to_string());
        hset.push(v);
    }
    for (sku, n) in &ev.stock {
        hset.push(format!("stock:{sku}"));
        hset.push(n.to_string());
    }
    call(o, hset).await?;
    Ok(ev)
}

/// Deletes the per-user hashes of an event (SCAN on the node that owns the event's slot).
async fn delete_users<O: Origin>(o: &O, k: &EventKeys) -> Result<(), String> {
    let pattern = k.user("*");
    let mut cursor = "0".to_string();
    loop {
        let cmd = Cmd::new(["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]).routed(&k.meta);
        let v = o.call(&cmd).await.map_err(|e| e.to_string())?;
        let a = v
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or("SCAN gave an unexpected reply")?;
        cursor = a[0].as_str().unwrap_or("0").to_string();
        for key in a[1].as_array().unwrap_or(&[]) {
            if let Some(key) = key.as_str() {
                call(o, vec!["DEL".into(), key.to_string()]).await?;
            }
        }
        if cursor == "0" {
            return Ok(());
        }
    }
}

/// The operator's verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Pause,
    Resume,
    End,
}

/// Which flags a verb may move from, and where to.
pub fn transition(verb: Verb, from: State) -> Result<State, String> {
    use State::*;
    let to = match (verb, from) {
        (Verb::Start, Scheduled) => Live,
        (Verb::Pause, Live | Scheduled) => Paused,
        (Verb::Resume, Paused) => Live,
        (Verb::End, Scheduled | Live | Paused) => Ended,
        (v, f) => {
            return Err(format!(
                "the event is {}; it cannot be {}",
                f.as_str(),
                match v {
                    Verb::Start => "started (use resume for a paused sale)",
                    Verb::Pause => "paused",
                    Verb::Resume => "resumed",
                    Verb::End => "ended again",
                }
            ))
        }
    };
    Ok(to)
}

/// Flips the event's flag; answers the new flag.
pub async fn set_state<O: Origin>(o: &O, id: &str, verb: Verb) -> Result<State, String> {
    let k = EventKeys::new(id);
    let cur = call(o, vec!["HGET".into(), k.meta.clone(), "state".into()]).await?;
    let cur = cur
        .as_str()
        .ok_or_else(|| format!("there is no event {id} at this origin"))?;
    let from =
        State::parse(cur).ok_or_else(|| format!("event {id} has an unknown state {cur:?}"))?;
    let to = transition(verb, from)?;
    call(
        o,
        vec!["HSET".into(), k.meta, "state".into(), to.as_str().into()],
    )
    .await?;
    Ok(to)
}

/// Sets the event's origin budget (purchase attempts per second); isolates pick it up with
/// their next snapshot.
pub async fn set_budget<O: Origin>(o: &O, id: &str, per_sec: u32) -> Result<(), String> {
    if per_sec == 0 {
        return Err("the origin budget must be at least 1 attempt per second".into());
    }
    let k = EventKeys::new(id);
    let exists = call(o, vec!["EXISTS".into(), k.meta.clone()]).await?;
    if exists.as_int() != Some(1) {
        return Err(format!("there is no event {id} at this origin"));
    }
    let budget = per_sec.to_string();
    call(
        o,
        vec!["HSET".into(), k.meta, "origin_budget".into(), budget],
    )
    .await?;
    Ok(())
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
    out
}

pub fn status_json(s: &Snapshot, now_ms: i64) -> serde_json::Value {
    let items: Vec<_> = s.meta.items.iter().zip(&s.items)
        .map(|(i, v)| serde_json::json!({ "sku": i.sku, "stock": v.stock, "sold": v.sold, "remaining": v.remaining() }))
        .collect();
    serde_json::json!({ "id": s.meta.id, "name": s.meta.name, "state": s.state(now_ms).as_str(), "flag": s.meta.flag.as_str(), "items": items, "orders_pending": s.pending, "stream_len": s.stream_len })
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
        let now = super::now_ms();
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
        let wait = 1100 - super::now_ms().rem_euclid(1000);
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
        "\norders         {} pending, {} paid, {} expired\n",
        s.pending, v.paid, v.expired
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
    fn transitions() {
        assert_eq!(transition(Verb::Start, State::Scheduled), Ok(State::Live));
        assert_eq!(transition(Verb::Pause, State::Live), Ok(State::Paused));
        assert_eq!(transition(Verb::Resume, State::Paused), Ok(State::Live));
        assert_eq!(transition(Verb::End, State::Paused), Ok(State::Ended));
        assert!(transition(Verb::Start, State::Ended)
            .unwrap_err()
            .contains("cannot be started"));
        assert!(transition(Verb::Resume, State::Live).is_err());
    }

    #[test]
    fn the_live_screen() {
        use crate::script::{live_reply, parse_live, sample_live};
        let v = sample_live();
        let screen = live_table(&v, 1_798_761_610_250, 2);
        let want = "\
event e (E): live   2027-01-01T00:00:10.250Z   origin read 2 ms   Ctrl-C to stop

sku                       stock       sold  remaining
A                            10          4          6
B                             5          5   sold out

orders         3 pending, 2 paid, 1 expired
order writer   0 not yet read, 2 being written (9 in the stream)

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
}
