//! The ground everything stands on: the real worker under `wrangler dev` serves the static
//! sale page, reports its origin in `/api/health` (reachable, then not, then again), answers
//! unknown API paths with a JSON 404 and reads the demo event through the API.

mod common;

use common::*;
use flashgate_core::ops;
use serde_json::Value as Json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_health_and_unknown_paths() {
    let mut r = Redis::start();
    let w = Worker::start(&[("ORIGIN_URL", &r.url())]);
    let c = http();

    // The sale page and its fingerprinted assets, with their cache policies.
    let page = c.get(w.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let cache = page
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        cache.contains("max-age=10"),
        "short TTL for HTML: {cache:?}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("data-testid=\"event-name\""), "the sale page");
    let asset = html
        .split('"')
        .find(|s| s.starts_with("/assets/app.") && s.ends_with(".js"))
        .expect("the page links its script");
    let a = c.get(w.url(asset)).send().await.unwrap();
    assert_eq!(a.status(), 200);
    assert!(a.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));

    // Health: reachable.
    let h = c.get(w.url("/api/health")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let h: Json = h.json().await.unwrap();
    assert_eq!(h["origin"]["ok"], true);
    assert_eq!(h["transport"], "resp");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["origin"]["latency_ms"].as_i64().unwrap() >= 0);

    // Unknown API paths and wrong methods: JSON with a stable code.
    for (method, path, status, code) in [
        ("GET", "/api/nope", 404, "not_found"),
        ("POST", "/api/health/x", 404, "not_found"),
        ("DELETE", "/api/health", 405, "method_not_allowed"),
        ("PUT", "/api/events/demo/orders", 405, "method_not_allowed"),
        ("GET", "/api/events/demo/orders", 401, "unauthenticated"),
        (
            "GET",
            "/api/events/demo/orders/o_1/pay",
            405,
            "method_not_allowed",
        ),
    ] {
        let resp = c
            .request(method.parse().unwrap(), w.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: Json = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    // An event, read through the worker.
    ops::create(
        &r.origin(),
        &spec("demo", &[("A", 3)], 60_000, (1, 5, 1)),
        true,
    )
    .await
    .unwrap();
    let ev = get_json(&c, w.url("/api/events/demo")).await;
    assert_eq!(
        (ev["id"].as_str(), ev["state"].as_str()),
        (Some("demo"), Some("scheduled"))
    );
    assert_eq!(ev["items"][0]["remaining"], 3);
    let missing = c.get(w.url("/api/events/nosuch")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // Health: the origin stops, then comes back.
    let port = r.port;
    r.stop();
    let h = c.get(w.url("/api/health")).send().await.unwrap();
    assert_eq!(h.status(), 503);
    let h: Json = h.json().await.unwrap();
    assert_eq!(h["origin"]["ok"], false);
    assert!(
        h["origin"]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{h}"
    );
    let _r = Redis::start_on(port);
    let h = c.get(w.url("/api/health")).send().await.unwrap();
    assert_eq!(h.status(), 200, "recovers when the origin returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_answers_500_and_says_why_in_the_log() {
    let r = Redis::start();
    let w = Worker::start(&[("ORIGIN_URL", &r.url()), ("EDGE_CACHE_MS", "soon")]);
    let resp = http().get(w.url("/api/events/demo")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let body: Json = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "answered bare");
    let logged = || w.log_text().contains("EDGE_CACHE_MS must be a number");
    assert!(
        eventually(std::time::Duration::from_secs(10), logged),
        "logged in full: {}",
        w.log_text()
    );
}

/// static/openapi.json documents every route the gate serves and every error code it gives.
#[test]
fn openapi_lists_every_route_and_code() {
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(root().join("static/openapi.json")).unwrap())
            .unwrap();
    let codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in flashgate_core::error::Code::iter() {
        assert!(
            codes.contains(&c.as_str()),
            "{} missing from openapi.json",
            c.as_str()
        );
        let status = c.status().to_string();
        let documented = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .any(|op| {
                op["responses"][&status]["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(c.as_str()))
            });
        assert!(
            documented,
            "{} is not documented under HTTP {status}",
            c.as_str()
        );
    }
    for path in [
        "/api/health",
        "/api/events/{event}",
        "/api/events/{event}/entry",
        "/api/events/{event}/orders",
        "/api/events/{event}/orders/{id}/pay",
        "/api/events/{event}/orders/{id}/cancel",
        "/api/events/{event}/live",
        "/api/session",
        "/api/dev/session",
        "/api/stats",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
}
