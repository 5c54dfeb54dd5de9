//! `flashgate orders sink-bench`: the sink's throughput on N placed entries against a plain
//! batched INSERT of the same rows into the same database, in one run. It uses a scratch event
//! `sinkbench-<pid>` at the origin and removes that event's keys and rows afterwards.
//!
//! The two differ by what the sink does per order on top of the insert: reading its status
//! under a lock, a savepoint, the guarded inventory update, and the stream round trips (read,
//! ack, trim).

use super::store::{Backend, Store};
use super::stream::stream_key;
use super::{Config, NoSweep, SinkError};
use flashgate_core::keys::EventKeys;
use flashgate_core::model::{format_ms, Caps, EventSpec, ItemSpec};
use flashgate_core::order::{Order, OrderLine};
use flashgate_core::origin::{Cmd, Origin};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const SKU: &str = "B";

fn origin_err(doing: &str) -> impl FnOnce(flashgate_core::origin::OriginError) -> SinkError + '_ {
    move |source| SinkError::Origin {
        doing: doing.to_string(),
        source,
    }
}

/// Runs both and answers the report, e.g.
/// `{"db":"sqlite","orders":10000,"batch":100,"sink":{"seconds":…,"orders_per_s":…},
/// "plain_insert":{"seconds":…,"rows_per_s":…},"sink_vs_plain":…}`.
pub async fn run<O: Origin>(
    origin: &O,
    db: &str,
    orders: u32,
    batch: usize,
) -> Result<serde_json::Value, SinkError> {
    let event = format!("sinkbench-{}", std::process::id());
    let now = super::now_ms();
    let spec = EventSpec {
        id: event.clone(),
        name: "sink bench".into(),
        utc_offset: "+00:00".into(),
        starts_at: format_ms(now),
        ends_at: format_ms(now + 86_400_000),
        caps: Caps {
            per_item_per_day: 1,
            total: 1,
            per_order_qty: 1,
        },
        items: vec![ItemSpec {
            sku: SKU.into(),
            name: "bench".into(),
            price: 1000,
            currency: "USD".into(),
            stock: orders,
        }],
        pay_within: flashgate_core::model::DEFAULT_PAY_WITHIN_SECS,
        origin_budget: flashgate_core::model::DEFAULT_ORIGIN_BUDGET,
        fairness: Default::default(),
    };
    flashgate_core::ops::create(origin, &spec, true)
        .await
        .map_err(SinkError::Event)?;
    let docs: Vec<Order> = (0..orders)
        .map(|i| {
            let line = OrderLine {
                sku: SKU.into(),
                qty: 1,
                unit_price: 1000,
                currency: "USD".into(),
            };
            Order::new(
                &event,
                &format!("u{i}"),
                &format!("bench-{i:08}"),
                vec![line],
                now,
                now + 900_000,
            )
        })
        .collect();
    let key = stream_key(&event);
    for d in &docs {
        let doc = serde_json::to_string(d).expect("orders serialize");
        let at = now.to_string();
        let cmd = Cmd::new([
            "XADD", &key, "*", "type", "placed", "order", &doc, "at", &at,
        ]);
        origin
            .call(&cmd)
            .await
            .map_err(origin_err("add bench entries to"))?;
    }

    let store = Store::open(db, 2).await?;
    let result = measure(origin, &store, &event, &docs, batch).await;
    let cleaned = cleanup(origin, &store, &event).await;
    store.pool().close().await;
    let (sink_s, plain_s) = result?;
    cleaned?;
    let n = f64::from(orders);
    Ok(json!({
        "db": match store.backend() { Backend::Sqlite => "sqlite", Backend::Postgres => "postgres" },
        "orders": orders,
        "batch": batch,
        "sink": { "seconds": sink_s, "orders_per_s": (n / sink_s).round() },
        "plain_insert": { "seconds": plain_s, "rows_per_s": (n / plain_s).round() },
        "sink_vs_plain": ((plain_s / sink_s) * 1000.0).round() / 1000.0,
    }))
}

/// Seconds for the sink to drain the stream, then for the plain insert of the same orders.
async fn measure<O: Origin>(
    origin: &O,
    store: &Store,
    event: &str,
    docs: &[Order],
    batch: usize,
) -> Result<(f64, f64), SinkError> {
    let cfg = Config {
        events: vec![event.to_string()],
        consumer: "bench".into(),
        batch,
        claim_idle_ms: 30_000,
        max_deliveries: 5,
        once: true,
        progress: false,
    };
    let t0 = Instant::now();
    let totals = super::run(origin, store, &cfg, &NoSweep, &AtomicBool::new(false)).await?;
    let sink_s = t0.elapsed().as_secs_f64();
    if totals.applied != docs.len() as u64 {
        return Err(SinkError::Usage(format!(
            "the bench sink applied {} of {} orders",
            totals.applied,
            docs.len()
        )));
    }
    delete_rows(store, event).await?;
    let t0 = Instant::now();
    for chunk in docs.chunks(batch.max(1)) {
        plain_insert(store, chunk).await?;
    }
    Ok((sink_s, t0.elapsed().as_secs_f64()))
}

/// One transaction: a multi-row INSERT of the orders and one of their lines.
async fn plain_insert(store: &Store, docs: &[Order]) -> Result<(), SinkError> {
    let failed = SinkError::db("in the plain insert");
    let values = |cols: usize, rows: usize| {
        (0..rows)
            .map(|r| {
                let ps: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
                format!("({})", ps.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let orders_sql = format!(
        "INSERT INTO fg_orders (id, event, user_id, status, created_at, idempotency_key, updated_at) VALUES {}",
        values(7, docs.len())
    );
    let mut q = sqlx::query(&orders_sql);
    for d in docs {
        q = q
            .bind(&d.id)
            .bind(&d.event)
            .bind(&d.user)
            .bind("pending")
            .bind(&d.created_at)
            .bind(&d.idempotency_key)
            .bind(0i64);
    }
    let lines: Vec<(&str, &OrderLine)> = docs
        .iter()
        .flat_map(|d| d.lines.iter().map(move |l| (d.id.as_str(), l)))
        .collect();
    let lines_sql = format!(
        "INSERT INTO fg_order_lines (order_id, sku, qty, unit_price, currency) VALUES {}",
        values(5, lines.len())
    );
    let mut ql = sqlx::query(&lines_sql);
    for (id, l) in &lines {
        ql = ql
            .bind(*id)
            .bind(&l.sku)
            .bind(i64::from(l.qty))
            .bind(l.unit_price)
            .bind(&l.currency);
    }
    let go = async {
        let mut tx = store.pool().begin().await?;
        q.execute(&mut *tx).await?;
        ql.execute(&mut *tx).await?;
        tx.commit().await
    };
    go.await.map_err(failed)
}

async fn delete_rows(store: &Store, event: &str) -> Result<(), SinkError> {
    for sql in [
        "DELETE FROM fg_order_lines WHERE order_id IN (SELECT id FROM fg_orders WHERE event = $1)",
        "DELETE FROM fg_orders WHERE event = $1",
    ] {
        sqlx::query(sql)
            .bind(event)
            .execute(store.pool())
            .await
            .map_err(SinkError::db("removing the bench rows"))?;
    }
    Ok(())
}

async fn cleanup<O: Origin>(origin: &O, store: &Store, event: &str) -> Result<(), SinkError> {
    delete_rows(store, event).await?;
    for table in ["fg_inventory", "fg_quarantine", "fg_dead_letters"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE event = $1"))
            .bind(event)
            .execute(store.pool())
            .await
            .map_err(SinkError::db("removing the bench rows"))?;
    }
    let k = EventKeys::new(event);
    for key in [k.stream, k.meta, k.orders, k.pending] {
        origin
            .call(&Cmd::new(["DEL", &key]))
            .await
            .map_err(origin_err("remove the bench keys"))?;
    }
    Ok(())
}
