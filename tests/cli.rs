//! The operator's `flashgate` command line against a real redis-server: events from TOML,
//! JSON and flags, the state verbs, status, tokens, paying and expiring orders, and errors that are one
//! sentence with a non-zero exit.

mod common;

use common::*;
use serde_json::Value as Json;

fn fails_with(origin: &str, args: &[&str], sentence: &str) {
    let out = cli_output(origin, args);
    assert!(!out.status.success(), "flashgate {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("flashgate: ") && err.contains(sentence),
        "flashgate {args:?}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn events_from_files_and_flags_and_the_state_verbs() {
    let r = Redis::start();
    let url = r.url();
    let dir = std::env::temp_dir().join(format!("flashgate-cli-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();

    let toml = dir.join("sale.toml");
    std::fs::write(
        &toml,
        r#"
id = "toml-sale"
name = "From TOML"
utc_offset = "+08:00"
starts_at = "2030-01-01T10:00:00+08:00"
ends_at = "2030-01-02T10:00:00+08:00"
caps = { per_item_per_day = 1, total = 3, per_order_qty = 1 }
[[items]]
sku = "KB"
name = "Keyboard"
price = 8999
currency = "USD"
stock = 40
"#,
    )
    .unwrap();
    let out = cli(&url, &["event", "create", "--file", toml.to_str().unwrap()]);
    assert!(
        out.contains("created event toml-sale with 1 items (40 units)"),
        "{out}"
    );
    fails_with(
        &url,
        &["event", "create", "--file", toml.to_str().unwrap()],
        "already exists; pass --replace",
    );

    let status: Json =
        serde_json::from_str(&cli(&url, &["event", "status", "toml-sale", "--json"])).unwrap();
    assert_eq!(status["state"], "scheduled");
    assert_eq!(status["items"][0]["remaining"], 40);
    assert_eq!(status["orders_pending"], 0);
    let table = cli(&url, &["event", "status", "toml-sale"]);
    assert!(
        table.contains("KB") && table.contains("orders awaiting payment: 0"),
        "{table}"
    );

    // The verbs, and the transitions they refuse.
    assert!(cli(&url, &["event", "start", "toml-sale"]).contains("is now live"));
    fails_with(&url, &["event", "resume", "toml-sale"], "cannot be resumed");
    assert!(cli(&url, &["event", "pause", "toml-sale"]).contains("is now paused"));
    fails_with(&url, &["event", "start", "toml-sale"], "use resume");
    assert!(cli(&url, &["event", "resume", "toml-sale"]).contains("is now live"));
    assert!(cli(&url, &["event", "end", "toml-sale"]).contains("is now ended"));
    fails_with(
        &url,
        &["event", "end", "toml-sale"],
        "cannot be ended again",
    );
    assert_eq!(
        r.cli(&["HGET", "fg:{toml-sale}:meta", "state"]).trim(),
        "ended"
    );

    // From flags.
    let out = cli(
        &url,
        &[
            "event",
            "create",
            "--id",
            "flags",
            "--name",
            "From flags",
            "--starts-in",
            "60",
            "--item",
            "A:Alpha:100:EUR:5",
            "--item",
            "B:Beta:250:EUR:7",
            "--cap-total",
            "4",
        ],
    );
    assert!(out.contains("2 items (12 units)"), "{out}");
    assert_eq!(r.cli(&["HGET", "fg:{flags}:meta", "cap_total"]).trim(), "4");

    // Errors are sentences.
    fails_with(&url, &["event", "status", "nope"], "there is no event nope");
    fails_with(&url, &["event", "start", "nope"], "there is no event nope");
    fails_with(
        &url,
        &["event", "create", "--file", "/nonexistent.json"],
        "cannot read /nonexistent.json",
    );
    fails_with(
        &url,
        &[
            "event",
            "create",
            "--id",
            "x",
            "--item",
            "A:Alpha:oops:EUR:5",
        ],
        "price must be whole minor units",
    );
    fails_with(
        &url,
        &[
            "event",
            "create",
            "--id",
            "bad id",
            "--item",
            "A:Alpha:1:EUR:5",
        ],
        "must match",
    );
    fails_with(
        "redis://127.0.0.1:1",
        &["event", "status", "x"],
        "origin unreachable",
    );
    fails_with(
        &url,
        &["token", "--user", "alice", "--secret", "short"],
        "at least 16 bytes",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_paying_and_expiring_orders_through_the_worker() {
    let r = Redis::start();
    let url = r.url();
    cli(
        &url,
        &[
            "event",
            "create",
            "--id",
            "pay",
            "--starts-in=-5",
            "--item",
            "A:Alpha:100:EUR:5",
            "--cap-total",
            "5",
            "--pay-within",
            "2",
        ],
    );
    let w = Worker::start(&[("ORIGIN_URL", &url)]);
    let c = http();
    let buy = |t: String, u: usize| {
        c.post(w.url("/api/events/pay/orders"))
            .bearer_auth(t)
            .header("idempotency-key", format!("key-pay-{u}"))
            .json(&serde_json::json!({"items":[{"sku":"A","qty":1}]}))
            .send()
    };
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for u in 0..3 {
        let user = format!("cli{u}");
        let t = cli(
            &url,
            &["token", "--user", &user, "--ttl", "60", "--secret", SECRET],
        );
        let resp = buy(t.trim().to_string(), u).await.unwrap();
        assert_eq!(resp.status(), 201);
        let b: Json = resp.json().await.unwrap();
        assert_eq!(b["order"]["lines"][0]["unit_price"], 100);
        assert!(b["order"]["pay_by"].is_string(), "{b}");
        ids.push(b["order"]["id"].as_str().unwrap().to_string());
        tokens.push(t.trim().to_string());
    }
    let out = cli(&url, &["orders", "pay", &ids[0], "--event", "pay"]);
    assert_eq!(out.trim(), format!("order {} is paid", ids[0]));
    // Nothing is due yet; after the 2 s window the two unpaid orders expire.
    let none = cli(&url, &["orders", "expire", "--event", "pay"]);
    assert!(none.starts_with("expired 0 orders"), "{none}");
    let t0 = std::time::Instant::now();
    let mut expired = 0;
    while expired < 2 && t0.elapsed() < std::time::Duration::from_secs(10) {
        let out = cli(&url, &["orders", "expire", "--event", "pay"]);
        expired += out
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(expired, 2, "both unpaid orders expired");
    let status: Json =
        serde_json::from_str(&cli(&url, &["event", "status", "pay", "--json"])).unwrap();
    assert_eq!(
        (
            status["items"][0]["sold"].as_u64(),
            status["orders_pending"].as_u64()
        ),
        (Some(1), Some(0)),
        "{status}"
    );
    // A retry of an expired order's key answers with that order, expired.
    let resp = buy(tokens[1].clone(), 1).await.unwrap();
    assert_eq!(resp.status(), 410);
    let b: Json = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "order_expired");
    assert_eq!(b["error"]["order"]["id"], ids[1]);
    // The paid order stays paid; paying an expired or unknown order is one clear sentence.
    let again = cli(&url, &["orders", "pay", &ids[0], "--event", "pay"]);
    assert!(again.contains("already paid"), "{again}");
    fails_with(
        &url,
        &["orders", "pay", &ids[1], "--event", "pay"],
        "expired before it was paid",
    );
    fails_with(
        &url,
        &["orders", "pay", "o_nope", "--event", "pay"],
        "there is no order o_nope in event pay",
    );
}
