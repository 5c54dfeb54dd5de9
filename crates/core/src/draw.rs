//! `flashgate event verify-draw`: recomputes every order's place from the revealed seed and
//! checks that the line had reached it when the order was placed.
//!
//! What it reads at the origin: the event (its commitment, start and fairness), the seed
//! (checked against the commitment), the order index (`o:<order id>` → user, key), each
//! order's window (`w:<key>` in its user's hash, recorded by purchase.lua) and creation time
//! (its document), and the line's history (Unix second → the highest threshold any isolate
//! could use in it, written by line.lua). An order is in turn iff its place is below the
//! highest threshold of its second or any earlier one (the threshold only grows).

use crate::keys::EventKeys;
use crate::line::{self, Seed, Window};
use crate::model::{parse_rfc3339_ms, Fairness};
use crate::origin::{Cmd, Origin, Value};
use crate::threshold::position;
use std::collections::BTreeMap;

/// One order checked against the line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Checked {
    pub order: String,
    pub user: String,
    /// The order's window: 0 early, else the Unix second of arrival.
    pub window: u64,
    pub place: f64,
    /// The highest threshold the line could have had when the order was placed.
    pub threshold: f64,
    pub created_ms: i64,
}

/// What `verify-draw` found.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DrawReport {
    pub event: String,
    pub seed: String,
    pub commitment: String,
    /// Orders checked and found in turn.
    pub in_turn: u64,
    /// Orders placed for a shopper whose place had not come up.
    pub out_of_turn: Vec<Checked>,
    /// Orders without a recorded window (placed before the line, or by `fairness = attempt`).
    pub unchecked: u64,
}

async fn call<O: Origin>(o: &O, args: Vec<String>) -> Result<Value, String> {
    o.call(&Cmd { args, route: None })
        .await
        .map_err(|e| e.to_string())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::Int(i) => i.to_string(),
                    other => other.as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The history's running maximum: second → the highest threshold up to it.
fn running_max(flat: &[String]) -> BTreeMap<i64, f64> {
    let mut by_sec: BTreeMap<i64, f64> = BTreeMap::new();
    for c in flat.chunks(2) {
        if let [s, v] = c {
            if let (Ok(s), Ok(v)) = (s.parse(), v.parse::<f64>()) {
                let e = by_sec.entry(s).or_insert(v);
                *e = e.max(v);
            }
        }
    }
    let mut top = f64::NEG_INFINITY;
    for v in by_sec.values_mut() {
        top = top.max(*v);
        *v = top;
    }
    by_sec
}

/// Checks every order of `event` against the line.
pub async fn verify_draw<O: Origin>(o: &O, event: &str, now: i64) -> Result<DrawReport, String> {
    let s = crate::ops::status(o, event).await?;
    let m = &s.meta;
    if m.fairness != Fairness::Line {
        return Err(format!(
            "event {event} has fairness = {}: there is no draw to verify",
            m.fairness.as_str()
        ));
    }
    let commitment = m
        .commitment
        .clone()
        .ok_or_else(|| format!("event {event} has no commitment: it was made before the line"))?;
    if s.state(now) == crate::model::State::Scheduled {
        return Err(format!(
            "event {event} has not started: its seed stays secret until the start"
        ));
    }
    let k = EventKeys::new(event);
    let seed_hex = call(o, vec!["GET".into(), k.seed()]).await?;
    let seed = seed_hex
        .as_str()
        .and_then(Seed::from_hex)
        .ok_or_else(|| format!("event {event} has no seed at the origin"))?;
    if !line::reveals(&seed, &commitment) {
        return Err(format!(
            "the seed of event {event} does not match its commitment {commitment}: the draw was changed"
        ));
    }
    let history = running_max(&strings(
        &call(o, vec!["HGETALL".into(), k.line_history()]).await?,
    ));
    let start_sec = m.starts_at.div_euclid(1000);
    let mut report = DrawReport {
        event: event.to_string(),
        seed: seed.to_hex(),
        commitment,
        ..DrawReport::default()
    };
    let mut cursor = "0".to_string();
    loop {
        let page = call(
            o,
            vec![
                "HSCAN".into(),
                k.orders.clone(),
                cursor.clone(),
                "MATCH".into(),
                "o:*".into(),
                "COUNT".into(),
                "500".into(),
            ],
        )
        .await?;
        let a = page.as_array().ok_or("HSCAN gave an unexpected reply")?;
        cursor = a.first().and_then(Value::as_str).unwrap_or("0").to_string();
        let fields = a.get(1).map(strings).unwrap_or_default();
        for c in fields.chunks(2) {
            let [id, entry] = c else { continue };
            let mut parts = entry.split(' ');
            let (Some(user), Some(key)) = (parts.next(), parts.next()) else {
                continue;
            };
            let got = call(
                o,
                vec![
                    "HMGET".into(),
                    k.user(user),
                    format!("w:{key}"),
                    format!("i:{key}"),
                ],
            )
            .await?;
            let got = strings(&got);
            let (Some(w), Some(doc)) =
                (got.first().and_then(|w| w.parse::<u64>().ok()), got.get(1))
            else {
                report.unchecked += 1;
                continue;
            };
            let created_ms = serde_json::from_str::<serde_json::Value>(doc)
                .ok()
                .and_then(|d| parse_rfc3339_ms(d.get("created_at")?.as_str()?))
                .unwrap_or(i64::MAX);
            let place = position(line::place_key(
                &seed,
                event,
                user,
                Window::from_u64(w),
                start_sec,
            ));
            let threshold = history
                .range(..=created_ms.div_euclid(1000))
                .next_back()
                .map_or(f64::NEG_INFINITY, |(_, v)| *v);
            if place < threshold {
                report.in_turn += 1;
            } else {
                report.out_of_turn.push(Checked {
                    order: id.trim_start_matches("o:").to_string(),
                    user: user.to_string(),
                    window: w,
                    place,
                    threshold,
                    created_ms,
                });
            }
        }
        if cursor == "0" {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_only_grows() {
        let flat: Vec<String> = ["10", "1.5", "12", "1.2", "11", "2.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let h = running_max(&flat);
        assert_eq!(h[&10], 1.5);
        assert_eq!(h[&11], 2.0);
        assert_eq!(h[&12], 2.0, "a lower value later does not lower the line");
    }
}
