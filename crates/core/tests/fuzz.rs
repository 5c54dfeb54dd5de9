//! Property-based fuzzing of every parser that reads bytes or replies from outside the process:
//! the RESP reply decoder, both HTTP dialects, the purchase body, the identity token, the entry
//! ticket, and the
//! Lua scripts' replies (with the stream entries they carry). proptest on stable Rust.
//!
//! Each property runs `FLASHGATE_FUZZ_CASES` cases (default [`DEFAULT_CASES`], the short run in
//! `make test`); the long run and its figures are in docs/testing.md. Properties:
//! - no input panics (arbitrary bytes, arbitrary `Value` trees, and valid inputs mutated);
//! - encode → parse is the identity wherever an encoder exists (the RESP and JSON replies, the
//!   bridge's commands, minted tokens, purchase bodies, script replies built as the scripts
//!   build them);
//! - whatever a parser accepts from garbage re-encodes to something that parses the same way;
//! - every strict prefix of a RESP frame is "incomplete", never a value.
//!
//! A crash found here is fixed in the parser and kept as a named `#[test]` at the bottom.

use flashgate_core::change::{parse_change, StreamId};
use flashgate_core::fleet::{parse_counts, FleetFigures};
use flashgate_core::gate::line_body;
use flashgate_core::line::{mint_ticket, verify_ticket, Ticket, TicketError, Window};
use flashgate_core::model::{Caps, EventMeta, ItemInfo, Price, State};
use flashgate_core::order::{check_idempotency_key, fingerprint, parse_order, Line, MAX_QTY};
use flashgate_core::origin::http::{
    decode_response, encode_response, parse_command, Dialect, HttpConfig,
};
use flashgate_core::origin::resp::{decode_reply, encode_command};
use flashgate_core::origin::{Cmd, OriginError, ServerError, Value};
use flashgate_core::script::{
    parse_live, parse_order_index, parse_outcome, parse_settled, parse_view, LineAfter, LiveWindow,
    OrderEnd, Outcome, PlacedCounters, Settled,
};
use flashgate_core::stream::{parse_entries, parse_id, Delivery};
use flashgate_core::threshold::{LineState, SAMPLE};
use flashgate_core::token::{mint, verify, Identity};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Cases per property when `FLASHGATE_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 2_000;

fn cases() -> u32 {
    std::env::var("FLASHGATE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Runs one property for [`cases`] cases and prints its rate (`--nocapture` shows it).
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let n = cases();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let start = Instant::now();
    let result = runner.run(&strategy, test);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {n} cases in {secs:.2} s, {:.0} cases/s",
        f64::from(n) / secs
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Integers a parser must survive: small codes, the edges of i64 and u32, anything.
fn edge_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => -3i64..16,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(i64::from(u32::MAX)),
        1 => Just(i64::from(u32::MAX) + 1),
        3 => any::<i64>(),
    ]
}

/// Words the scripts' replies are made of, so that random trees often look almost right.
const WORDS: &[&str] = &[
    "id",
    "name",
    "utc_offset_min",
    "starts_at",
    "ends_at",
    "state",
    "live",
    "paused",
    "cap_item",
    "cap_total",
    "cap_qty",
    "items",
    "pay_within_ms",
    "origin_budget",
    "stock:A",
    "A",
    "B",
    "reports",
    "attempts",
    "[]",
    r#"[{"sku":"A","name":"a","price":{"amount":1,"currency":"USD"}}]"#,
    r#"{"lines":[{"sku":"A","qty":1}]}"#,
    r#"{"lines":[]}"#,
    "1-0",
    "0-0",
    "18446744073709551615-1",
    "u k 3",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ".{0,12}",
        2 => edge_int().prop_map(|i| i.to_string()),
        3 => prop::sample::select(WORDS).prop_map(String::from),
        1 => "[0-9]{1,20}-[0-9]{1,20}",
    ]
}

/// Arbitrary reply trees.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Nil),
        3 => edge_int().prop_map(Value::Int),
        3 => text().prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(Value::Array)
    })
}

/// A reply tree whose strings are any UTF-8 (what the RESP and JSON encoders must carry).
fn wire_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<i64>().prop_map(Value::Int),
        any::<String>().prop_map(Value::Str),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Value::Array)
    })
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

/// A small edit of `bytes`: flip, insert, delete, truncate or duplicate a run.
#[derive(Clone, Debug)]
enum Edit {
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Repeat(Index, Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Repeat(a, b)),
    ];
    prop::collection::vec(edit, 1..4)
}

fn mutate(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = b.len();
        match e {
            Edit::Set(i, x) if n > 0 => b[i.index(n)] = *x,
            Edit::Insert(i, x) => b.insert(i.index(n + 1), *x),
            Edit::Delete(i) if n > 0 => {
                b.remove(i.index(n));
            }
            Edit::Truncate(i) => b.truncate(i.index(n + 1)),
            Edit::Repeat(i, j) if n > 0 => {
                let (a, z) = (i.index(n), j.index(n));
                let run = b[a.min(z)..=a.max(z)].to_vec();
                b.splice(a..a, run);
            }
            _ => {}
        }
    }
    b
}

/// A small edit of a reply tree: replace, drop or add one top-level element, or wrap it.
#[derive(Clone, Debug)]
enum TreeEdit {
    Replace(Index, Value),
    Remove(Index),
    Push(Value),
    Nest(Index),
}

fn tree_edits() -> impl Strategy<Value = Vec<TreeEdit>> {
    let edit = prop_oneof![
        3 => (any::<Index>(), value()).prop_map(|(i, v)| TreeEdit::Replace(i, v)),
        1 => any::<Index>().prop_map(TreeEdit::Remove),
        1 => value().prop_map(TreeEdit::Push),
        1 => any::<Index>().prop_map(TreeEdit::Nest),
    ];
    prop::collection::vec(edit, 1..3)
}

fn mutate_tree(v: Value, edits: &[TreeEdit]) -> Value {
    let Value::Array(mut a) = v else { return v };
    for e in edits {
        let n = a.len();
        match e {
            TreeEdit::Replace(i, x) if n > 0 => a[i.index(n)] = x.clone(),
            TreeEdit::Remove(i) if n > 0 => {
                a.remove(i.index(n));
            }
            TreeEdit::Push(x) => a.push(x.clone()),
            TreeEdit::Nest(i) if n > 0 => {
                let at = i.index(n);
                a[at] = Value::Array(vec![a[at].clone()]);
            }
            _ => {}
        }
    }
    Value::Array(a)
}

// ---------------------------------------------------------------------------------------------
// RESP

/// The RESP2 bytes of a reply (strings as bulk strings), as a server sends them.
fn resp(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    fn go(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Value::Str(s) => {
                out.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(a) => {
                out.extend_from_slice(format!("*{}\r\n", a.len()).as_bytes());
                for x in a {
                    go(x, out);
                }
            }
        }
    }
    go(v, &mut out);
    out
}

/// What a decoded frame must satisfy: it used a prefix of `buf`, every strict prefix of that
/// is incomplete, and a value re-encodes to bytes that decode to itself.
fn check_decoded(buf: &[u8]) -> Result<(), TestCaseError> {
    let Ok(Some((reply, used))) = decode_reply(buf) else {
        return Ok(());
    };
    prop_assert!(used > 0 && used <= buf.len());
    prop_assert_eq!(
        decode_reply(&buf[..used]).ok(),
        Some(Some((reply.clone(), used)))
    );
    for cut in 0..used {
        prop_assert_eq!(decode_reply(&buf[..cut]).ok(), Some(None), "prefix {}", cut);
    }
    if let Ok(v) = reply {
        let again = resp(&v);
        prop_assert_eq!(decode_reply(&again).ok(), Some(Some((Ok(v), again.len()))));
    }
    Ok(())
}

#[test]
fn resp_round_trip_and_partial_reads() {
    fuzz("resp round trip, every prefix", wire_value(), |v| {
        let bytes = resp(&v);
        for cut in 0..bytes.len() {
            prop_assert_eq!(
                decode_reply(&bytes[..cut]).ok(),
                Some(None),
                "prefix {}",
                cut
            );
        }
        // Replies arrive back to back on one connection: the first is decoded alone.
        let mut two = bytes.clone();
        two.extend_from_slice(b"+OK\r\n");
        prop_assert_eq!(decode_reply(&two).ok(), Some(Some((Ok(v), bytes.len()))));
        Ok(())
    });
}

#[test]
fn resp_error_lines() {
    fuzz("resp error lines", "[A-Z]{1,10}( [^\r\n]{0,30})?", |line| {
        let bytes = format!("-{line}\r\n").into_bytes();
        let (reply, used) = decode_reply(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(reply, Err(ServerError::parse(&line)));
        check_decoded(&bytes)
    });
}

#[test]
fn resp_arbitrary_bytes() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        // Mostly RESP's own alphabet, so type bytes, lengths and CRLFs line up more often.
        prop::collection::vec(
            prop::sample::select(b"*$:+-\r\n0123456789-1?_,#=(!%~>".to_vec()),
            0..48
        ),
    ];
    fuzz("resp arbitrary bytes", bytes, |b| check_decoded(&b));
}

#[test]
fn resp_mutated_frames() {
    fuzz("resp mutated frames", (wire_value(), edits()), |(v, e)| {
        check_decoded(&mutate(resp(&v), &e))
    });
}

#[test]
fn resp_commands_decode_as_sent() {
    let args = prop::collection::vec(any::<String>(), 1..8);
    fuzz("resp command encoder", args, |args| {
        let bytes = encode_command(&args);
        let want = Value::Array(args.iter().cloned().map(Value::Str).collect());
        prop_assert_eq!(
            decode_reply(&bytes).ok(),
            Some(Some((Ok(want), bytes.len())))
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// HTTP dialects

fn dialect() -> impl Strategy<Value = Dialect> {
    prop_oneof![Just(Dialect::Dragonfly), Just(Dialect::Upstash)]
}

/// Server errors both dialects carry exactly: a coded error, or ERR with a message whose first
/// word is not itself a code. (Dragonfly drops a generic error's `ERR `, so "ERR FOO bar" reads
/// back as a FOO error; the classification, not the line, is what survives: see below.)
fn server_error() -> impl Strategy<Value = ServerError> {
    prop_oneof![
        "(NOSCRIPT|MOVED|ASK|CROSSSLOT|TRYAGAIN|BUSY|LOADING|READONLY|WEIRD)( .{0,20})?",
        "ERR( [a-z'][^ ]{0,8}( .{0,20})?)?",
    ]
    .prop_map(|l| ServerError::parse(&l))
}

#[test]
fn http_replies_round_trip() {
    let reply = prop_oneof![
        3 => wire_value().prop_map(Ok),
        1 => server_error().prop_map(Err),
    ];
    fuzz("http reply round trip", (dialect(), reply), |(d, reply)| {
        let (status, body) = encode_response(d, &reply);
        prop_assert_eq!(
            decode_response(d, status, &body),
            reply.map_err(OriginError::Server)
        );
        Ok(())
    });
}

/// What a decoded HTTP answer must satisfy: a value or server error re-encodes to an answer
/// that decodes the same (errors: to the same classification and redirect).
fn check_http(d: Dialect, status: u16, body: &str) -> Result<(), TestCaseError> {
    match decode_response(d, status, body) {
        Ok(v) => {
            let (s, b) = encode_response(d, &Ok(v.clone()));
            prop_assert_eq!(decode_response(d, s, &b), Ok(v));
        }
        Err(OriginError::Server(e)) => {
            let (s, b) = encode_response(d, &Err(e.clone()));
            let Err(OriginError::Server(again)) = decode_response(d, s, &b) else {
                return Err(TestCaseError::fail(format!("{e:?} did not survive {b}")));
            };
            prop_assert_eq!(again.kind.retry(), e.kind.retry(), "{:?} {:?}", e, again);
            prop_assert_eq!(
                again.kind.refused_before_running(),
                e.kind.refused_before_running()
            );
            prop_assert_eq!(again.redirect(), e.redirect());
        }
        // Anything else is a transport failure: it says whether the command may have run.
        Err(_) => {}
    }
    Ok(())
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(200u16),
        1 => Just(400u16),
        1 => prop::sample::select(vec![201u16, 204, 401, 404, 413, 500, 502, 503]),
        1 => any::<u16>(),
    ]
}

#[test]
fn http_arbitrary_answers() {
    let body = prop_oneof![
        ".{0,40}",
        r#"\{"(result|error)":.{0,30}\}"#,
        r#"\{"error":"-?[A-Z]{0,8} [^"]{0,10}"\}"#,
    ];
    fuzz(
        "http arbitrary answers",
        (dialect(), status(), body),
        |(d, s, b)| check_http(d, s, &b),
    );
}

#[test]
fn http_mutated_answers() {
    let reply = prop_oneof![
        3 => wire_value().prop_map(Ok),
        1 => server_error().prop_map(Err),
    ];
    fuzz(
        "http mutated answers",
        (dialect(), reply, edits()),
        |(d, reply, e)| {
            let (status, body) = encode_response(d, &reply);
            let bytes = mutate(body.into_bytes(), &e);
            check_http(d, status, &String::from_utf8_lossy(&bytes))
        },
    );
}

#[test]
fn http_commands_round_trip() {
    let args = prop::collection::vec(any::<String>(), 1..8);
    fuzz("http command round trip", (dialect(), args), |(d, args)| {
        let config = HttpConfig::new("http://127.0.0.1:1", d, None, 1).unwrap();
        let req = config.request(&Cmd::new(args.clone()));
        prop_assert_eq!(parse_command(d, req.body.as_bytes()), Ok(args));
        Ok(())
    });
}

#[test]
fn http_arbitrary_commands() {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        r#"\[("[^"]{0,6}"|-?[0-9]{1,25}(\.[0-9]+)?(e[0-9]+)?|null|true|\[\]|\{\})(,("[^"]{0,6}"|[0-9]{1,20}|null))*\]"#
            .prop_map(String::into_bytes),
    ];
    fuzz("http arbitrary commands", (dialect(), body), |(d, b)| {
        if let Ok(args) = parse_command(d, &b) {
            prop_assert!(!args.is_empty());
            let again = serde_json::Value::from(args.clone()).to_string();
            prop_assert_eq!(parse_command(d, again.as_bytes()), Ok(args));
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The purchase request

fn lines() -> impl Strategy<Value = Vec<Line>> {
    prop::collection::btree_map(id(), 1..=MAX_QTY, 1..=10)
        .prop_map(|m| m.into_iter().map(|(sku, qty)| Line { sku, qty }).collect())
}

fn body_of(lines: &[Line]) -> String {
    let items: Vec<_> = lines
        .iter()
        .map(|l| serde_json::json!({"qty": l.qty, "sku": l.sku}))
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

/// What an accepted purchase body must satisfy: the documented invariants, and its canonical
/// body parses to the same lines.
fn check_order(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(lines) = parse_order(body) {
        prop_assert!((1..=10).contains(&lines.len()));
        for (i, l) in lines.iter().enumerate() {
            prop_assert!(flashgate_core::model::valid_id(&l.sku));
            prop_assert!((1..=MAX_QTY).contains(&l.qty));
            prop_assert!(lines[..i].iter().all(|o| o.sku != l.sku));
        }
        prop_assert_eq!(parse_order(body_of(&lines).as_bytes()), Ok(lines));
    }
    Ok(())
}

#[test]
fn purchase_bodies_round_trip() {
    fuzz("purchase body round trip", lines(), |lines| {
        let body = body_of(&lines);
        let parsed = parse_order(body.as_bytes());
        prop_assert_eq!(
            parsed.as_ref().map(|l| fingerprint(l)),
            Ok(fingerprint(&lines))
        );
        prop_assert_eq!(parsed, Ok(lines));
        Ok(())
    });
}

#[test]
fn purchase_arbitrary_bodies() {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        r#"\{"items":\[(\{"sku":"[A-Za-z0-9_. -]{0,5}","qty":-?[0-9]{1,12}(\.5)?\},?){0,12}\](,"x":1)?\}"#
            .prop_map(String::into_bytes),
    ];
    fuzz("purchase arbitrary bodies", body, |b| check_order(&b));
}

#[test]
fn purchase_mutated_bodies() {
    fuzz(
        "purchase mutated bodies",
        (lines(), edits()),
        |(lines, e)| check_order(&mutate(body_of(&lines).into_bytes(), &e)),
    );
}

#[test]
fn idempotency_keys() {
    fuzz("idempotency keys", ".{0,70}", |k| {
        let ok = (8..=64).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        prop_assert_eq!(check_idempotency_key(Some(&k)).is_ok(), ok);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The identity token

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

#[test]
fn tokens_round_trip_and_resist_edits() {
    let exp = 0i64..=999_999_999_999;
    fuzz(
        "token round trip, edits refused",
        (id(), exp, edits()),
        |(user, exp, e)| {
            let t = mint(SECRET, &user, exp);
            let now = exp * 1000 - 1;
            let want = Identity {
                user: user.clone(),
                exp,
            };
            prop_assert_eq!(verify(SECRET, &t, now), Ok(want));
            let edited = mutate(t.clone().into_bytes(), &e);
            if let Ok(s) = std::str::from_utf8(&edited) {
                if s != t {
                    prop_assert!(verify(SECRET, s, now).is_err(), "{} verified", s);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn tokens_arbitrary() {
    let token = prop_oneof![
        ".{0,80}",
        "v1\\.[A-Za-z0-9_.-]{0,10}\\.[0-9-]{0,14}\\.[A-Za-z0-9_+/=-]{0,50}",
    ];
    fuzz("token arbitrary", (token, any::<i64>()), |(t, now)| {
        // Without the secret nothing verifies; whatever would, is exactly what mint makes.
        if let Ok(id) = verify(SECRET, &t, now) {
            prop_assert_eq!(mint(SECRET, &id.user, id.exp), t);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The entry ticket

#[test]
fn tickets_round_trip_and_resist_edits() {
    let window = prop_oneof![
        Just(Window::Early),
        (1i64..=99_999_999_999).prop_map(Window::Arrived)
    ];
    let exp = 1i64..=999_999_999_999;
    fuzz(
        "ticket round trip, edits refused",
        (id(), id(), window, exp, edits()),
        |(event, user, window, exp, e)| {
            let t = Ticket {
                event,
                user,
                window,
                exp,
            };
            let minted = mint_ticket(SECRET, &t);
            let now = exp * 1000 - 1;
            prop_assert_eq!(verify_ticket(SECRET, &minted, now), Ok(t.clone()));
            prop_assert_eq!(
                verify_ticket(SECRET, &minted, exp * 1000),
                Err(TicketError::Expired)
            );
            let edited = mutate(minted.clone().into_bytes(), &e);
            if let Ok(s) = std::str::from_utf8(&edited) {
                if s != minted {
                    prop_assert!(verify_ticket(SECRET, s, now).is_err(), "{} verified", s);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn tickets_arbitrary() {
    let ticket = prop_oneof![
        ".{0,80}",
        "e1\\.[A-Za-z0-9_.-]{0,10}\\.[A-Za-z0-9_.-]{0,10}\\.[0-9-]{0,12}\\.[0-9-]{0,14}\\.[A-Za-z0-9_+/=-]{0,50}",
    ];
    fuzz("ticket arbitrary", (ticket, any::<i64>()), |(t, now)| {
        // Without the secret nothing verifies; whatever would, is exactly what mint makes.
        if let Ok(v) = verify_ticket(SECRET, &t, now) {
            prop_assert_eq!(mint_ticket(SECRET, &v), t);
        }
        // An identity token is never a ticket, nor a ticket an identity token.
        let token = mint(SECRET, "alice", 1_800_000_000);
        prop_assert_eq!(
            verify_ticket(SECRET, &token, 0),
            Err(TicketError::Malformed)
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The scripts' replies

/// A reply of purchase.lua, built as the script builds it (1-based line numbers).
fn outcome_reply(o: &Outcome, doc: &str) -> Value {
    let i = |x: i64| Value::Int(x);
    let due = |d: &Option<i64>| i(d.unwrap_or(0));
    let line = |l: usize| i(l as i64 + 1);
    Value::Array(match o {
        Outcome::Placed {
            total,
            due: d,
            lines,
        } => {
            let mut v = vec![i(0), i((*total).into()), due(d)];
            for l in lines {
                v.extend([i(l.today.into()), i(l.remaining.into())]);
            }
            v
        }
        Outcome::Replayed {
            order_json,
            total,
            paid,
            due: d,
            placed,
        } => {
            let mut v = vec![
                i(1),
                Value::Str(order_json.clone()),
                i((*total).into()),
                i((*paid).into()),
                due(d),
            ];
            if let Some(p) = placed {
                let mut words = vec![p.total.to_string()];
                words.extend(p.today.iter().map(u32::to_string));
                v.push(Value::Str(words.join(" ")));
            }
            v
        }
        Outcome::EndedUnpaid { order_json, end } => vec![
            i(13),
            Value::Str(order_json.clone()),
            Value::Str(
                match end {
                    OrderEnd::Expired => "x",
                    OrderEnd::Cancelled => "c",
                }
                .into(),
            ),
        ],
        Outcome::UnknownEvent => vec![i(2)],
        Outcome::NotStarted => vec![i(3)],
        Outcome::Paused => vec![i(4)],
        Outcome::Ended => vec![i(5)],
        Outcome::UnknownItem { line: l } => vec![i(6), line(*l)],
        Outcome::SoldOut { line: l, remaining } => {
            vec![i(7), line(*l), i((*remaining).into())]
        }
        Outcome::ItemLimit {
            line: l,
            today,
            due: d,
        } => vec![i(8), line(*l), i((*today).into()), due(d)],
        Outcome::TotalLimit { total, due: d } => vec![i(9), i((*total).into()), due(d)],
        // A replay whose stored order has other lines.
        Outcome::KeyReused => vec![i(1), Value::Str(doc.to_string()), i(1), i(0), i(0)],
        Outcome::OrderQtyLimit { line: l, cap } => vec![i(11), line(*l), i((*cap).into())],
        Outcome::BadArguments => vec![i(12)],
    })
}

fn order_doc(lines: &[Line]) -> String {
    let l: Vec<_> = lines
        .iter()
        .map(|l| serde_json::json!({"sku": l.sku, "qty": l.qty, "unit_price": 1}))
        .collect();
    serde_json::json!({"id": "o_1", "lines": l}).to_string()
}

/// An attempt's lines and an outcome of it.
fn attempt_and_outcome() -> impl Strategy<Value = (Vec<Line>, Outcome)> {
    lines().prop_flat_map(|lines| {
        let n = lines.len();
        let doc = order_doc(&lines);
        let due = prop_oneof![Just(None), (1i64..=i64::MAX).prop_map(Some)];
        let after = (any::<u32>(), any::<u32>())
            .prop_map(|(today, remaining)| LineAfter { today, remaining });
        let outcome =
            prop_oneof![
                (any::<u32>(), due.clone(), prop::collection::vec(after, n))
                    .prop_map(|(total, due, lines)| Outcome::Placed { total, due, lines }),
                (
                    any::<u32>(),
                    any::<bool>(),
                    due.clone(),
                    prop::option::of((any::<u32>(), prop::collection::vec(any::<u32>(), n)))
                )
                    .prop_map(move |(total, paid, due, placed)| {
                        Outcome::Replayed {
                            order_json: doc.clone(),
                            total,
                            paid,
                            due,
                            placed: placed.map(|(total, today)| PlacedCounters { total, today }),
                        }
                    }),
                Just(Outcome::EndedUnpaid {
                    order_json: order_doc(&lines),
                    end: OrderEnd::Expired
                }),
                Just(Outcome::EndedUnpaid {
                    order_json: order_doc(&lines),
                    end: OrderEnd::Cancelled
                }),
                Just(Outcome::UnknownEvent),
                Just(Outcome::NotStarted),
                Just(Outcome::Paused),
                Just(Outcome::Ended),
                (0..n).prop_map(|line| Outcome::UnknownItem { line }),
                (0..n, any::<u32>())
                    .prop_map(|(line, remaining)| Outcome::SoldOut { line, remaining }),
                (0..n, any::<u32>(), due.clone())
                    .prop_map(|(line, today, due)| Outcome::ItemLimit { line, today, due }),
                (any::<u32>(), due).prop_map(|(total, due)| Outcome::TotalLimit { total, due }),
                Just(Outcome::KeyReused),
                (0..n, any::<u32>()).prop_map(|(line, cap)| Outcome::OrderQtyLimit { line, cap }),
                Just(Outcome::BadArguments),
            ];
        (Just(lines), outcome)
    })
}

const OTHER_DOC: &str = r#"{"lines":[{"sku":"not-in-the-attempt","qty":1}]}"#;

#[test]
fn purchase_replies_round_trip() {
    fuzz(
        "purchase.lua reply round trip",
        attempt_and_outcome(),
        |(lines, o)| {
            let reply = outcome_reply(&o, OTHER_DOC);
            prop_assert_eq!(
                parse_outcome(&reply, lines.len(), &fingerprint(&lines)),
                Ok(o)
            );
            Ok(())
        },
    );
}

#[test]
fn purchase_replies_arbitrary_and_mutated() {
    let reply = prop_oneof![
        value(),
        (attempt_and_outcome(), tree_edits())
            .prop_map(|((_, o), e)| mutate_tree(outcome_reply(&o, OTHER_DOC), &e)),
    ];
    fuzz(
        "purchase.lua arbitrary/mutated replies",
        (reply, 0usize..12),
        |(v, n)| {
            // Whatever parses names only lines of the attempt.
            match parse_outcome(&v, n, "A:1") {
                Ok(Outcome::UnknownItem { line })
                | Ok(Outcome::SoldOut { line, .. })
                | Ok(Outcome::ItemLimit { line, .. })
                | Ok(Outcome::OrderQtyLimit { line, .. }) => prop_assert!(line < n),
                Ok(Outcome::Placed { lines, .. }) => prop_assert_eq!(lines.len(), n),
                Ok(_) => {}
                Err(e) => prop_assert!(e.ran_maybe()),
            }
            Ok(())
        },
    );
}

fn settled() -> impl Strategy<Value = Settled> {
    prop_oneof![
        any::<u32>().prop_map(|units| Settled::Done { units }),
        Just(Settled::AlreadyPaid),
        Just(Settled::AlreadyExpired),
        Just(Settled::AlreadyCancelled),
        Just(Settled::NoSuchOrder),
        any::<i64>().prop_map(|pay_by| Settled::NotDue { pay_by }),
    ]
}

fn settled_reply(s: &Settled) -> Value {
    let i = Value::Int;
    Value::Array(match *s {
        Settled::Done { units } => vec![i(0), i(units.into())],
        Settled::AlreadyPaid => vec![i(1)],
        Settled::NoSuchOrder => vec![i(2)],
        Settled::AlreadyExpired => vec![i(3)],
        Settled::NotDue { pay_by } => vec![i(4), i(pay_by)],
        Settled::AlreadyCancelled => vec![i(5)],
    })
}

#[test]
fn settle_replies() {
    fuzz(
        "settle.lua replies",
        (settled(), value(), tree_edits()),
        |(s, v, e)| {
            prop_assert_eq!(parse_settled(&settled_reply(&s)), Ok(s));
            for v in [v, mutate_tree(settled_reply(&s), &e)] {
                if let Ok(again) = parse_settled(&v) {
                    prop_assert_eq!(parse_settled(&settled_reply(&again)), Ok(again));
                }
            }
            Ok(())
        },
    );
}

/// An event as the origin stores it (skus distinct).
fn meta() -> impl Strategy<Value = EventMeta> {
    let item = (id(), ".{0,10}", any::<i64>(), "[A-Z]{3}");
    (
        (id(), ".{0,20}", -840i32..=840, any::<i64>(), any::<i64>()),
        prop::sample::select(vec![
            State::Scheduled,
            State::Live,
            State::Paused,
            State::Ended,
        ]),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        prop::collection::vec(item, 0..5),
        (any::<i64>(), any::<u32>()),
    )
        .prop_map(
            |((id, name, off, starts, ends), flag, (a, b, c), items, (pay, budget))| {
                let mut seen: Vec<ItemInfo> = Vec::new();
                for (sku, name, amount, currency) in items {
                    if seen.iter().all(|i| i.sku != sku) {
                        seen.push(ItemInfo {
                            sku,
                            name,
                            price: Price { amount, currency },
                        });
                    }
                }
                EventMeta {
                    id,
                    name,
                    utc_offset_min: off,
                    starts_at: starts,
                    ends_at: ends,
                    flag,
                    caps: Caps {
                        per_item_per_day: a,
                        total: b,
                        per_order_qty: c,
                    },
                    items: seen,
                    pay_within_ms: pay,
                    origin_budget: budget,
                    fairness: flashgate_core::model::Fairness::Attempt,
                    commitment: None,
                }
            },
        )
}

fn flat(pairs: &[(String, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .flat_map(|(k, v)| [Value::Str(k.clone()), Value::Str(v.clone())])
            .collect(),
    )
}

fn meta_pairs(m: &EventMeta) -> Vec<(String, String)> {
    m.to_fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn counts() -> impl Strategy<Value = BTreeMap<String, u64>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["reports", "attempts", "forwarded", "edge:sold_out"])
            .prop_map(String::from),
        0u64..=i64::MAX as u64,
        0..4,
    )
}

fn counts_reply(c: &BTreeMap<String, u64>) -> Value {
    Value::Array(
        c.iter()
            .flat_map(|(k, &n)| [Value::Str(k.clone()), Value::Int(n as i64)])
            .collect(),
    )
}

/// A line hash: whether the event has a line, the state line.lua wrote (if any), the sampled
/// entrants per window rank, and a moment to read it at.
fn line_hash() -> impl Strategy<Value = (bool, Option<LineState>, BTreeMap<u64, u32>, i64)> {
    let state = (
        SECOND * 1000 - 10_000..SECOND * 1000 + 10_000,
        (0.0f64..5000.0, 0.0f64..500.0, 0.0f64..10_000.0),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(|(at_ms, (pos, speed, rate), (open, waiting))| LineState {
            at_ms,
            pos,
            speed,
            rate,
            gain: 1.0,
            learnt: false,
            lag_ms: 500.0,
            open,
            waiting,
            origin_sum: 0,
            counted_sec: at_ms / 1000 - 1,
            past: Default::default(),
            filling: Default::default(),
        });
    (
        any::<bool>(),
        prop::option::of(state),
        prop::collection::btree_map(0u64..5000, 0u32..1_000_000, 0..6),
        SECOND * 1000 - 20_000..SECOND * 1000 + 20_000,
    )
}

/// An event, each item's stock and sold, and the counts view.lua and live.lua read.
type EventRead = (EventMeta, Vec<(u32, u32)>, [u64; 2]);

fn event_read() -> impl Strategy<Value = EventRead> {
    meta().prop_flat_map(|m| {
        let n = m.items.len();
        (
            Just(m),
            prop::collection::vec((any::<u32>(), any::<u32>()), n),
            [0u64..=i64::MAX as u64, 0u64..=i64::MAX as u64],
        )
    })
}

const SECOND: i64 = 1_800_000_000;

#[test]
fn view_replies() {
    let fleet = [counts(), counts()];
    fuzz(
        "view.lua replies",
        (event_read(), fleet, value(), tree_edits()),
        |((m, amounts, [len, pending]), fleet, v, e)| {
            let per = |f: fn(&(u32, u32)) -> u32| {
                m.items
                    .iter()
                    .zip(&amounts)
                    .map(|(it, a)| (it.sku.clone(), f(a).to_string()))
                    .collect::<Vec<_>>()
            };
            let reply = Value::Array(vec![
                flat(&meta_pairs(&m)),
                flat(&per(|a| a.0)),
                flat(&per(|a| a.1)),
                Value::Int(len as i64),
                Value::Int(pending as i64),
                counts_reply(&fleet[0]),
                counts_reply(&fleet[1]),
            ]);
            let snap = parse_view(&reply, SECOND).unwrap().unwrap();
            prop_assert_eq!(&snap.meta, &m);
            let got: Vec<_> = snap.items.iter().map(|i| (i.stock, i.sold)).collect();
            prop_assert_eq!(got, amounts);
            prop_assert_eq!((snap.stream_len, snap.pending), (len, pending));
            let want = fleet.iter().enumerate().find_map(|(i, c)| {
                (c.get("reports").copied().unwrap_or(0) > 0).then(|| FleetFigures {
                    second: SECOND - i as i64 - 1,
                    counts: c.clone(),
                })
            });
            prop_assert_eq!(snap.fleet, want);
            for v in [v, mutate_tree(reply, &e)] {
                let _ = parse_view(&v, SECOND);
            }
            Ok(())
        },
    );
}

#[test]
fn live_replies() {
    let window = (SECOND - 3600..SECOND, 0u32..4);
    fuzz(
        "live.lua replies",
        (
            event_read(),
            window,
            [any::<u32>(), any::<u32>(), any::<u32>()],
            (any::<bool>(), any::<i64>(), 0u64..=i64::MAX as u64),
            prop::collection::vec(counts(), 4),
            (value(), tree_edits()),
            line_hash(),
        ),
        |(
            (mut m, amounts, [len, pending]),
            (first, seconds),
            [paid, expired, cancelled],
            writer,
            buckets,
            (v, e),
            (fair, state, entrants, now),
        )| {
            let w = LiveWindow { first, seconds };
            let buckets = &buckets[..seconds as usize];
            if fair {
                m.fairness = flashgate_core::model::Fairness::Line;
            }
            let mut line: Vec<(String, String)> = state
                .iter()
                .flat_map(LineState::to_fields)
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            line.extend(
                entrants
                    .iter()
                    .map(|(r, n)| (format!("n:{r}"), n.to_string())),
            );
            line.push(("claimed".into(), "12".into()));
            let mut fields = meta_pairs(&m);
            let mut sold = Vec::new();
            for (it, (stock, s)) in m.items.iter().zip(&amounts) {
                fields.push((format!("stock:{}", it.sku), stock.to_string()));
                sold.push((it.sku.clone(), s.to_string()));
            }
            let (group, lag, wpending) = writer;
            let reply = Value::Array(vec![
                flat(&fields),
                flat(&sold),
                Value::Array(vec![
                    Value::Int(pending as i64),
                    Value::Int(paid.into()),
                    Value::Int(expired.into()),
                    Value::Int(cancelled.into()),
                ]),
                Value::Array(vec![
                    Value::Int(len as i64),
                    Value::Int(group.into()),
                    Value::Int(lag),
                    Value::Int(wpending as i64),
                ]),
                Value::Array(buckets.iter().map(counts_reply).collect()),
                flat(&line),
            ]);
            let live = parse_live(&reply, w).unwrap().unwrap();
            // The line: its state as line.lua wrote it, the sampled entrants scaled up.
            let got = live.snapshot.line;
            prop_assert_eq!(got.is_some(), state.is_some());
            if let (Some(g), Some(s)) = (got, state) {
                prop_assert_eq!(
                    (g.at_ms, g.open, g.counted_sec),
                    (s.at_ms, s.open, s.counted_sec)
                );
                prop_assert!((g.pos - s.pos).abs() < 1e-6 && (g.speed - s.speed).abs() < 1e-6);
            }
            let want: BTreeMap<u64, f64> = entrants
                .iter()
                .map(|(&r, &n)| (r, f64::from(n) * SAMPLE as f64))
                .collect();
            prop_assert_eq!(&live.snapshot.entrants.0, &want);
            // The operator's summary: only for a line; never more admitted than entered.
            let body = line_body(&live.snapshot, now);
            prop_assert_eq!(body.is_some(), fair);
            if let Some(b) = body {
                prop_assert!(b.admitted <= b.entered, "{:?}", b);
                prop_assert_eq!(b.early + b.late, b.entered);
                prop_assert_eq!(b.threshold.is_some(), state.is_some());
                if state.is_none() {
                    prop_assert_eq!(b.admitted, 0);
                }
            }
            prop_assert_eq!(&live.snapshot.meta, &m);
            let got: Vec<_> = live
                .snapshot
                .items
                .iter()
                .map(|i| (i.stock, i.sold))
                .collect();
            prop_assert_eq!(got, amounts);
            prop_assert_eq!(
                (
                    live.snapshot.stream_len,
                    live.snapshot.pending,
                    live.paid,
                    live.expired,
                    live.cancelled
                ),
                (len, pending, paid.into(), expired.into(), cancelled.into())
            );
            prop_assert_eq!(live.writer.is_some(), group);
            if let Some(wl) = live.writer {
                prop_assert_eq!(wl.lag, u64::try_from(lag).ok());
                prop_assert_eq!(wl.pending, wpending);
            }
            let want: Vec<_> = buckets
                .iter()
                .zip(first..)
                .map(|(c, second)| FleetFigures {
                    second,
                    counts: c.clone(),
                })
                .collect();
            prop_assert_eq!(live.seconds, want);
            for v in [v, mutate_tree(reply, &e)] {
                let _ = parse_live(&v, w);
            }
            Ok(())
        },
    );
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let fields = prop::option::of(prop::collection::vec((".{0,8}", ".{0,8}"), 0..4));
    (any::<u64>(), any::<u64>(), fields).prop_map(|(ms, seq, fields)| Delivery {
        id: StreamId { ms, seq },
        fields,
        deliveries: 1,
    })
}

fn entries_reply(d: &[Delivery]) -> Value {
    Value::Array(
        d.iter()
            .map(|d| {
                Value::Array(vec![
                    Value::Str(d.id.to_string()),
                    d.fields.as_deref().map(flat).unwrap_or(Value::Nil),
                ])
            })
            .collect(),
    )
}

#[test]
fn stream_entries() {
    let ds = prop::collection::vec(delivery(), 0..5);
    fuzz(
        "stream entries",
        (ds, value(), tree_edits()),
        |(ds, v, e)| {
            prop_assert_eq!(parse_entries(&entries_reply(&ds)), Some(ds.clone()));
            for v in [v, mutate_tree(entries_reply(&ds), &e)] {
                if let Some(again) = parse_entries(&v) {
                    prop_assert_eq!(parse_entries(&entries_reply(&again)), Some(again));
                }
                if let Some(id) = parse_id(&v) {
                    prop_assert_eq!(StreamId::parse(&id.to_string()), Some(id));
                }
                if let Some(a) = v.as_array() {
                    let c = parse_counts(a);
                    prop_assert!(c.values().all(|&n| n <= i64::MAX as u64));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn stream_changes_and_indexes() {
    let fields = prop::collection::vec(
        (
            prop::sample::select(vec!["type", "at", "order", "x"]).prop_map(String::from),
            prop_oneof![
                text(),
                prop::sample::select(vec!["placed", "paid", "expired"]).prop_map(String::from),
                r#"\{"id":"o","event":"e","user":"u","lines":\[(\{"sku":"A","qty":-?[0-9],"unit_price":1,"currency":"USD"\},?){0,3}\],"created_at":"[0-9TZ:-]{0,24}","idempotency_key":"k"\}"#,
            ],
        ),
        0..5,
    );
    fuzz(
        "stream changes, order index",
        (fields, text()),
        |(fields, index)| {
            if let Ok(c) = parse_change("e", &fields) {
                prop_assert_eq!(c.order.event, "e");
                prop_assert!(!c.order.lines.is_empty());
                prop_assert!(c.order.lines.iter().all(|l| l.qty >= 1));
            }
            if let Some((user, key)) = parse_order_index(&index) {
                prop_assert!(index.starts_with(user) && !user.contains(' ') && !key.contains(' '));
            }
            let map: HashMap<String, String> = fields.into_iter().collect();
            let _ = EventMeta::from_fields(&map);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: crashes the fuzzer found, each with its minimal input.

/// purchase.lua's line numbers are 1-based; `x - 1` overflowed (a panic in debug builds, a
/// wrapped index in release) on a line number of i64::MIN.
#[test]
fn regression_outcome_line_number_i64_min() {
    for code in [6, 7, 8, 11] {
        let reply = Value::Array(vec![Value::Int(code), Value::Int(i64::MIN), Value::Int(1)]);
        assert!(parse_outcome(&reply, 0, "").unwrap_err().ran_maybe());
        assert!(parse_outcome(&reply, 3, "A:1").is_err());
    }
    let as_text = Value::Array(vec![Value::Int(6), Value::Str(i64::MIN.to_string())]);
    assert!(parse_outcome(&as_text, 1, "A:1").is_err());
}
