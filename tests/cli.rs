//! The operator's `flashgate` command line against a real redis-server: events from TOML,
//! JSON and flags, the state verbs, status, tokens, draining the queue, and errors that are one
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
    assert_eq!(status["orders_queued"], 0);
    let table = cli(&url, &["event", "status", "toml-sale"]);
    assert!(
        table.contains("KB") && table.contains("orders queued: 0"),
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
async fn tokens_and_draining_orders_through_the_worker() {
    let r = Redis::start();
    let url = r.url();
    cli(
        &url,
        &[
            "event",
            "create",
            "--id",
            "drain",
            "--starts-in=-5",
            "--item",
            "A:Alpha:100:EUR:5",
            "--cap-total",
            "5",
        ],
    );
    let w = Worker::start(&[("ORIGIN_URL", &url)]);
    let c = http();
    let mut ids = Vec::new();
    for u in 0..3 {
        let t = cli(
            &url,
            &[
                "token",
                "--user",
                &format!("cli{u}"),
                "--ttl",
                "60",
                "--secret",
                SECRET,
            ],
        );
        let resp = c
            .post(w.url("/api/events/drain/orders"))
            .bearer_auth(t.trim())
            .header("idempotency-key", format!("key-drain-{u}"))
            .json(&serde_json::json!({"items":[{"sku":"A","qty":1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let b: Json = resp.json().await.unwrap();
        ids.push(b["order"]["id"].as_str().unwrap().to_string());
    }
    let out = cli(&url, &["orders", "drain", "drain", "--max", "2"]);
    let drained: Vec<Json> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        drained
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ids[..2],
        "in order, at most --max"
    );
    assert_eq!(drained[0]["lines"][0]["unit_price"], 100);
    let out = cli(&url, &["orders", "drain", "drain"]);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(
        cli(&url, &["orders", "drain", "drain"]).trim(),
        "",
        "the queue is empty"
    );
    let status: Json =
        serde_json::from_str(&cli(&url, &["event", "status", "drain", "--json"])).unwrap();
    assert_eq!(
        (
            status["items"][0]["sold"].as_u64(),
            status["orders_queued"].as_u64()
        ),
        (Some(3), Some(0))
    );
}
