//! Keeps the benchmark harness from rotting: runs `.ci/bench.sh --smoke` (tiny counts, but the
//! real pieces: redis-server, `wrangler dev` with the built worker, `flashgate load`, MONITOR,
//! redis-benchmark, `flashgate simulate`, a primary with a replica for the replicated
//! acknowledgements, and the report writer) into a temporary file, and
//! checks that every table of the report is there with numbers in it. At these counts the
//! numbers mean nothing, so only what holds at any load is asserted about them: the harness
//! saw each forwarded attempt reach the origin, and neither the crowd nor the simulated fleet
//! oversold.
//!
//! Needs what `make integration` provides: the worker bundle (build/) and the tools from
//! `make setup` (redis-server, redis-benchmark, wrangler in node_modules).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The text of the section whose heading starts with `heading`, up to the next `## `.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading:?} in\n{md}"));
    let body = &md[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// The cells of the first table row in `text` whose first cell is `first`.
fn row(text: &str, first: &str) -> Vec<String> {
    let prefix = format!("| {first} |");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{text}"));
    line.trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

/// The number a cell starts with: `1,234`, `0.50×`, `4.50 %`, `533,384 B (521 KiB)`.
fn number(cell: &str) -> f64 {
    let lead: String = cell
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    lead.parse()
        .unwrap_or_else(|_| panic!("{cell:?} does not start with a number"))
}

fn run_smoke(root: &Path, out: &Path) {
    let started = Instant::now();
    let run = Command::new("bash")
        .arg(root.join(".ci/bench.sh"))
        .arg("--smoke")
        .current_dir(root)
        .env("BENCH_OUT", out)
        .env("FLASHGATE_BIN", env!("CARGO_BIN_EXE_flashgate"))
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        run.status.success(),
        ".ci/bench.sh --smoke failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    eprintln!("bench smoke took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn bench_harness_smoke() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let out = std::env::temp_dir().join(format!("flashgate-bench-smoke-{}.md", std::process::id()));
    run_smoke(&root, &out);
    let md = std::fs::read_to_string(&out).expect("the smoke run wrote BENCH_OUT");
    let _ = std::fs::remove_file(&out);
    assert!(md.contains("SMOKE RUN"), "a smoke report says so");

    let edge = section(&md, "## 1. ");
    for s in ["not_started", "sold_out", "capped", "forwarded"] {
        let r = row(edge, s);
        assert!(number(&r[3]) > 0.0, "{s}: req/s in {r:?}");
        assert!(number(&r[7]) >= number(&r[6]), "{s}: p99 ≥ p50 in {r:?}");
    }

    let origin = section(&md, "## 2. ");
    let fwd = row(origin, "forwarded");
    assert_eq!(number(&fwd[3]), 50.0, "{fwd:?}");
    assert!(
        number(&fwd[6]) >= 1.0,
        "MONITOR saw an EVALSHA for every forwarded attempt: {fwd:?}"
    );
    for s in ["capped", "not_started", "sold_out"] {
        number(&row(origin, s)[6]);
    }

    let crowd = section(&md, "## 3. ");
    for phase in ["burst that sells out", "after sell-out"] {
        let r = row(crowd, phase);
        assert!(number(&r[1]) > 0.0 && r[6].ends_with('%'), "{phase}: {r:?}");
    }
    let sold = row(&md, "flash crowd: units sold / stock");
    let (s, stock) = sold[1].split_once(" / ").expect("sold / stock");
    assert!(number(s) <= number(stock), "never oversold: {sold:?}");

    let lua = section(&md, "## 4. ");
    for script in ["seed.lua", "purchase.lua"] {
        assert!(number(&row(lua, script)[1]) > 0.0, "{script} calls/s");
    }
    assert!(
        number(
            &row(
                &md,
                "purchase.lua vs seed script, success path (redis-benchmark EVALSHA)"
            )[1]
        ) > 0.0
    );
    assert!(number(&row(&md, "purchase.lua vs seed script, sold-out path")[1]) > 0.0);

    let sink = section(&md, "## 5. ");
    for db in ["sqlite", "postgres"] {
        let r = row(sink, db);
        assert!(number(&r[1]) > 0.0 && number(&r[2]) > 0.0, "{db}: {r:?}");
    }
    // The fleet simulator: every combination ran, reached the origin, and never oversold.
    let sim = section(&md, "## 7. ");
    for isolates in ["1 isolate", "10 isolates"] {
        for admission in ["off", "on"] {
            let r = row(sim, &format!("{isolates}, admission {admission}"));
            assert!(number(&r[1]) > 0.0, "origin attempts: {r:?}");
            let (sold, stock) = r[4].split_once(" / ").expect("sold / stock (oversold)");
            assert!(
                number(sold) <= number(stock) && r[4].ends_with("(0)"),
                "never oversold: {r:?}"
            );
            assert!(r[6].contains(" → "), "idle → sale p99: {r:?}");
        }
    }
    assert!(row(
        &md,
        "simulator, 10 isolates, admission on: sold / stock, oversold"
    )[1]
    .ends_with(", 0"));

    // The line: both long sales ran and never oversold; the mixed crowd has its hammerers.
    let long = section(&md, "## 7b. ");
    let sold = row(long, "units sold / stock (oversold)");
    for cell in &sold[1..] {
        let (s, stock) = cell.split_once(" / ").expect("sold / stock (oversold)");
        assert!(
            number(s) <= number(stock) && cell.ends_with("(0)"),
            "never oversold: {sold:?}"
        );
    }
    assert_eq!(sold.len(), 3, "attempt and line: {sold:?}");
    let hammer = row(section(&md, "## 7c. "), "hammer");
    assert!(number(&hammer[1]) > 0.0, "hammerers: {hammer:?}");
    assert!(
        number(&hammer[2]) > 0.0 && number(&hammer[5]) > 0.0,
        "hammerers' attempts, attempt and line: {hammer:?}"
    );

    // Replicated acknowledgements: both settings placed every attempt, with numbers.
    let acks = section(&md, "## 8. ");
    for setting in ["`ORIGIN_REPLICA_ACKS=0`", "`ORIGIN_REPLICA_ACKS=1`"] {
        let r = row(acks, setting);
        assert!(r[1].starts_with("placed 100.0 %"), "{setting}: {r:?}");
        assert!(
            number(&r[2]) > 0.0 && number(&r[4]) >= number(&r[3]),
            "{setting}: {r:?}"
        );
        assert!(number(&r[6]) > 0.0, "the writer: {r:?}");
    }

    let wasm = row(section(&md, "## 6. "), "flashgate (build/index_bg.wasm)");
    assert!(
        number(&wasm[1]) > number(&wasm[2]) && number(&wasm[2]) > 10_000.0,
        "raw > gzip > 0: {wasm:?}"
    );
}
