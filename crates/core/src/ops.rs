//! The operator's data-control operations at the origin: create and preload an event, flip
//! its state, set its budget, read its status. The CLI, the order writer and the simulator
//! share them; the CLI's views render what they read. Errors are sentences for a terminal.

use crate::keys::EventKeys;
use crate::model::{EventSpec, NewEvent, State};
use crate::origin::{Cmd, Origin, Value};
use crate::script::{parse_view, view_call, Snapshot, VIEW};

async fn call<O: Origin>(o: &O, args: Vec<String>) -> Result<Value, String> {
    o.call(&Cmd { args, route: None })
        .await
        .map_err(|e| e.to_string())
}

/// The event's snapshot (view.lua). Its pending orders are those tracked (track.lua), so the
/// stream is tracked first when the event exists: the count includes every placed order.
pub async fn status<O: Origin>(o: &O, id: &str) -> Result<Snapshot, String> {
    let s = read_status(o, id).await?;
    match crate::orders::track(o, id).await {
        Ok(0) => Ok(s),
        Ok(_) => read_status(o, id).await,
        Err(e) => Err(format!("cannot track the orders of event {id}: {e}")),
    }
}

async fn read_status<O: Origin>(o: &O, id: &str) -> Result<Snapshot, String> {
    let now = crate::model::now_ms();
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
    for key in [k.line(), k.line_seen(), k.line_history()] {
        call(o, vec!["DEL".into(), key]).await?;
    }
    // The draw's seed: secret at the origin until the start; its commitment is public.
    let seed = random_seed()?;
    call(o, vec!["SET".into(), k.seed(), seed.to_hex()]).await?;
    let mut ev = ev;
    ev.meta.commitment = Some(crate::line::commitment(&seed));
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

/// 32 bytes from the operating system's random source.
#[cfg(not(target_arch = "wasm32"))]
pub fn random_seed() -> Result<crate::line::Seed, String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| format!("cannot draw a seed: {e}"))?;
    Ok(crate::line::Seed(b))
}

/// Events are created by the native programs only.
#[cfg(target_arch = "wasm32")]
pub fn random_seed() -> Result<crate::line::Seed, String> {
    Err("events are created with the flashgate CLI".into())
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
}
