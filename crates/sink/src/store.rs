//! The shop's database: SQLite (a file) or Postgres, through one sqlx `Any` pool, with the
//! tables created by the embedded migrations in `migrations/`.
//!
//! Invariants:
//! - One batch is one transaction. Nothing is acknowledged before it commits, so a crash
//!   anywhere leaves the entries pending, to be applied again.
//! - A batch is first tried without savepoints (two round trips fewer per entry). The first
//!   entry that needs one (a guard that refuses, an error of its own, a lost race) abandons
//!   that try, and the batch is redone with a savepoint per entry: nothing of the first try
//!   commits, so both ways end alike.
//! - A batch of nothing but first deliveries of `placed` entries (a sale's usual batch) is
//!   first tried set-wise: one multi-row INSERT of the orders, one of their lines, and one
//!   guarded update per sku with the batch's sum. It writes what the entry-wise try writes;
//!   any surprise (an order row that exists, a guard that refuses the sum) abandons it for
//!   the careful try, which finds the entry at fault.
//! - Applying an entry again is harmless: an order row is inserted only if absent (`ON CONFLICT
//!   DO NOTHING` on its id) and its status only moves from `pending`, under the row's lock
//!   (`SELECT … FOR UPDATE` in Postgres, `BEGIN IMMEDIATE` in SQLite); quarantine and dead
//!   letters are keyed by the entry's stream id.
//! - `sold` changes only through guarded updates (`sold + qty <= stock`, `sold >= qty`), and
//!   the table's CHECK keeps `0 <= sold <= stock` even against code that forgets the guard. A
//!   guard that refuses rolls the entry's savepoint back and quarantines the change.

use super::change::{
    decide, parse_change, Change, Effect, GuardTrip, Kind, Skip, Status, StreamId,
};
use super::error::{shown_url, SinkError};
use super::stream::Delivery;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection, Executor, Row, Transaction};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a SQLite connection waits for another writer (another sink) before giving up.
const SQLITE_BUSY_MS: u64 = 30_000;
/// Tries of a batch that lost to lock contention (deadlock, busy) before the error is raised.
const BATCH_TRIES: u32 = 5;
/// Tries of one entry whose order row changed between reading and writing it.
const ENTRY_TRIES: u32 = 3;
/// Rows per multi-row INSERT of the set-wise try: at 10 parameters a row, far below SQLite's
/// 32,766 and Postgres's 65,535 bind parameters per statement.
const ROWS_PER_INSERT: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Which database `url` names, and the URL sqlx should open (SQLite files are created).
pub fn parse_db_url(url: &str) -> Result<(Backend, String), SinkError> {
    if url.starts_with("sqlite:") {
        if url.contains("mode=") {
            return Ok((Backend::Sqlite, url.to_string()));
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        Ok((Backend::Sqlite, format!("{url}{sep}mode=rwc")))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, url.to_string()))
    } else {
        Err(SinkError::Usage(format!(
            "--db {} must be sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE",
            shown_url(url)
        )))
    }
}

/// What became of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The change was written (`Insert` or `Transition`).
    Applied(Effect),
    /// Nothing to write: a duplicate or a stale change.
    Skipped(Skip),
    /// An earlier delivery already quarantined or dead-lettered this entry.
    Settled,
    /// Deleted from the stream while pending: nothing to apply.
    Gone,
    Quarantined {
        order: String,
        trip: GuardTrip,
    },
    DeadLettered(String),
    /// Not applied; left pending to be delivered again.
    Failed(String),
}

impl Outcome {
    /// Whether the entry is done with and may be acknowledged (after the commit).
    pub fn acks(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}

/// Why a try of a batch was abandoned.
enum Abort {
    Db(sqlx::Error),
    /// An entry needs its own savepoint: redo the batch with one per entry.
    Redo,
}

impl From<sqlx::Error> for Abort {
    fn from(e: sqlx::Error) -> Abort {
        Abort::Db(e)
    }
}

/// What one try of an entry came to inside its savepoint.
enum Step {
    Done(Outcome),
    Tripped(GuardTrip),
    /// The order row changed between our read and our write (another sink): read again.
    Raced,
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL without its password.
    pub url: String,
}

impl Store {
    /// Opens (creating a SQLite file if missing) and migrates the database.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, SinkError> {
        sqlx::any::install_default_drivers();
        let (backend, full) = parse_db_url(url)?;
        let shown = shown_url(url);
        let opened = |source| SinkError::OpenDb {
            url: shown.clone(),
            source,
        };
        // One direct connection first: a pool only says it timed out; this says why.
        let probe = sqlx::AnyConnection::connect(&full).await.map_err(opened)?;
        probe.close().await.map_err(opened)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(&*format!("PRAGMA busy_timeout = {SQLITE_BUSY_MS}"))
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&full)
            .await
            .map_err(opened)?;
        if backend == Backend::Sqlite {
            // Readers do not block the writer; kept in the file once set.
            pool.execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(opened)?;
        }
        let store = Store {
            pool,
            backend,
            url: shown,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs the migrations. Postgres serializes concurrent runs with an advisory lock; SQLite
    /// does not, so a sink that starts beside another may find the tables half made by it:
    /// it tries again, and then sees them applied.
    async fn migrate(&self) -> Result<(), SinkError> {
        let mut tries = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(_) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(source) => {
                    return Err(SinkError::Migrate {
                        url: self.url.clone(),
                        source,
                    })
                }
            }
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records the origin's stock of each sku of `event`; `sold` is kept.
    pub async fn set_stock(&self, event: &str, items: &[(String, i64)]) -> Result<(), SinkError> {
        for (sku, stock) in items {
            sqlx::query(
                "INSERT INTO fg_inventory (event, sku, stock, sold) VALUES ($1, $2, $3, 0) \
                 ON CONFLICT (event, sku) DO UPDATE SET stock = excluded.stock",
            )
            .bind(event)
            .bind(sku)
            .bind(*stock)
            .execute(&self.pool)
            .await
            .map_err(SinkError::db(format!(
                "setting the stock of {event}/{sku} to {stock} (is it below what the database counts as sold?)"
            )))?;
        }
        Ok(())
    }

    /// Applies a batch of entries of `event`'s stream in one transaction and answers what
    /// became of each, in order. An entry that fails its `max_deliveries`-th delivery goes to
    /// the dead letters. A batch that loses to lock contention is tried again whole.
    pub async fn apply(
        &self,
        event: &str,
        batch: &[Delivery],
        max_deliveries: u64,
        now_ms: i64,
    ) -> Result<Vec<Outcome>, SinkError> {
        let mut tries = 0;
        let mut careful = false;
        loop {
            tries += 1;
            match self
                .apply_once(event, batch, max_deliveries, now_ms, careful)
                .await
            {
                Ok(out) => return Ok(out),
                Err(Abort::Redo) => {
                    careful = true;
                    tries -= 1;
                }
                Err(Abort::Db(e)) if tries < BATCH_TRIES && self.is_contention(&e) => {
                    tokio::time::sleep(Duration::from_millis(20 << tries)).await;
                }
                Err(Abort::Db(source)) => {
                    return Err(SinkError::Db {
                        doing: format!("writing {} entries of event {event}", batch.len()),
                        source,
                    })
                }
            }
        }
    }

    async fn apply_once(
        &self,
        event: &str,
        batch: &[Delivery],
        max_deliveries: u64,
        now_ms: i64,
        careful: bool,
    ) -> Result<Vec<Outcome>, Abort> {
        let mut tx = match self.backend {
            // Take the write lock first: a deferred transaction that reads and then writes
            // fails at once, without waiting, when another connection wrote in between.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        if !careful {
            if let Some(placed) = fresh_placements(event, batch) {
                return match place_all(&mut tx, event, &placed).await {
                    Ok(out) => {
                        tx.commit().await?;
                        Ok(out)
                    }
                    Err(Abort::Db(e)) if self.is_entry_fault(&e) => Err(Abort::Redo),
                    Err(e) => Err(e),
                };
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            out.push(
                self.entry(&mut tx, event, d, max_deliveries, now_ms, careful)
                    .await?,
            );
        }
        tx.commit().await?;
        Ok(out)
    }

    /// One entry. `Err` abandons the whole try; a fault of the entry itself is its outcome
    /// (`careful`), or calls for a careful try (not `careful`).
    async fn entry(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &str,
        d: &Delivery,
        max_deliveries: u64,
        now_ms: i64,
        careful: bool,
    ) -> Result<Outcome, Abort> {
        let Some(fields) = &d.fields else {
            return Ok(Outcome::Gone);
        };
        if d.deliveries > 1 && settled(tx, event, d.id).await? {
            return Ok(Outcome::Settled);
        }
        let failure = match parse_change(event, fields) {
            Err(e) => e.to_string(),
            Ok(change) if !careful => match self.try_change(tx, &change).await {
                Ok(Step::Done(outcome)) => return Ok(outcome),
                Ok(_) => return Err(Abort::Redo),
                Err(e) if self.is_entry_fault(&e) => return Err(Abort::Redo),
                Err(e) => return Err(Abort::Db(e)),
            },
            Ok(change) => match self.change(tx, &change).await {
                Ok(Step::Done(outcome)) => return Ok(outcome),
                Ok(Step::Tripped(trip)) => {
                    quarantine(tx, event, d.id, &change, &trip, now_ms).await?;
                    return Ok(Outcome::Quarantined {
                        order: change.order.id.clone(),
                        trip,
                    });
                }
                Ok(Step::Raced) => {
                    format!(
                        "order {} kept changing under {ENTRY_TRIES} tries",
                        change.order.id
                    )
                }
                Err(e) if self.is_entry_fault(&e) => format!("the database refused it: {e}"),
                Err(e) => return Err(Abort::Db(e)),
            },
        };
        if d.deliveries >= max_deliveries {
            dead_letter(tx, event, d, fields, &failure, now_ms).await?;
            return Ok(Outcome::DeadLettered(failure));
        }
        Ok(Outcome::Failed(failure))
    }

    /// Applies one change in a savepoint of its own, reading the order's status again if
    /// another sink changed the row between our read and our write.
    async fn change(
        &self,
        tx: &mut Transaction<'static, Any>,
        c: &Change,
    ) -> Result<Step, sqlx::Error> {
        for _ in 0..ENTRY_TRIES {
            let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
            let step = self.try_change(&mut sp, c).await;
            match step {
                Ok(Step::Done(o)) => {
                    sp.commit().await?;
                    return Ok(Step::Done(o));
                }
                Ok(Step::Raced) => sp.rollback().await?,
                Ok(tripped) => {
                    sp.rollback().await?;
                    return Ok(tripped);
                }
                Err(e) => {
                    sp.rollback().await?;
                    return Err(e);
                }
            }
        }
        Ok(Step::Raced)
    }

    async fn try_change(
        &self,
        sp: &mut Transaction<'_, Any>,
        c: &Change,
    ) -> Result<Step, sqlx::Error> {
        let o = &c.order;
        let select = match self.backend {
            Backend::Postgres => "SELECT status FROM fg_orders WHERE id = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT status FROM fg_orders WHERE id = $1",
        };
        let current = sqlx::query(select)
            .bind(&o.id)
            .fetch_optional(&mut **sp)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?;
        let current = match current.as_deref().map(Status::parse) {
            None => None,
            Some(Some(s)) => Some(s),
            Some(None) => {
                return Err(sqlx::Error::Decode(
                    format!("order {} has an unknown status {current:?}", o.id).into(),
                ))
            }
        };
        let effect = decide(current, c.kind.target());
        match effect {
            Effect::Nothing(skip) => return Ok(Step::Done(Outcome::Skipped(skip))),
            Effect::Insert { status, reserve } => {
                let at = |s| (status == s).then_some(c.at_ms);
                let n = sqlx::query(
                    "INSERT INTO fg_orders (id, event, user_id, status, created_at, pay_by, \
                     idempotency_key, paid_at, expired_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&o.id)
                .bind(&o.event)
                .bind(&o.user)
                .bind(status.as_str())
                .bind(&o.created_at)
                .bind(o.pay_by.as_deref())
                .bind(&o.idempotency_key)
                .bind(at(Status::Paid))
                .bind(at(Status::Expired))
                .bind(c.at_ms)
                .execute(&mut **sp)
                .await?
                .rows_affected();
                if n == 0 {
                    return Ok(Step::Raced);
                }
                for l in &o.lines {
                    sqlx::query(
                        "INSERT INTO fg_order_lines (order_id, sku, qty, unit_price, currency) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&o.id)
                    .bind(&l.sku)
                    .bind(l.qty)
                    .bind(l.unit_price)
                    .bind(&l.currency)
                    .execute(&mut **sp)
                    .await?;
                }
                if reserve {
                    let mut lines: Vec<_> =
                        o.lines.iter().map(|l| (l.sku.clone(), l.qty)).collect();
                    if let Some(trip) = move_stock(sp, &o.event, &mut lines, true).await? {
                        return Ok(Step::Tripped(trip));
                    }
                }
            }
            Effect::Transition { to, release } => {
                let sql = match to {
                    Status::Paid => {
                        "UPDATE fg_orders SET status = 'paid', paid_at = $1, updated_at = $1 \
                         WHERE id = $2 AND status = 'pending'"
                    }
                    _ => {
                        "UPDATE fg_orders SET status = 'expired', expired_at = $1, updated_at = $1 \
                         WHERE id = $2 AND status = 'pending'"
                    }
                };
                let n = sqlx::query(sql)
                    .bind(c.at_ms)
                    .bind(&o.id)
                    .execute(&mut **sp)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Ok(Step::Raced);
                }
                if release {
                    // The stored lines are what was reserved.
                    let mut lines =
                        sqlx::query("SELECT sku, qty FROM fg_order_lines WHERE order_id = $1")
                            .bind(&o.id)
                            .fetch_all(&mut **sp)
                            .await?
                            .iter()
                            .map(|r: &AnyRow| {
                                Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))
                            })
                            .collect::<Result<Vec<_>, sqlx::Error>>()?;
                    if let Some(trip) = move_stock(sp, &o.event, &mut lines, false).await? {
                        return Ok(Step::Tripped(trip));
                    }
                }
            }
        }
        Ok(Step::Done(Outcome::Applied(effect)))
    }

    /// Lock waits that another try may win: a deadlock or serialization failure in Postgres,
    /// SQLITE_BUSY or SQLITE_LOCKED (with any extended code) in SQLite.
    fn is_contention(&self, e: &sqlx::Error) -> bool {
        let sqlx::Error::Database(d) = e else {
            return false;
        };
        let code = d.code();
        match self.backend {
            Backend::Postgres => matches!(code.as_deref(), Some("40001" | "40P01" | "55P03")),
            Backend::Sqlite => code
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        }
    }

    /// An error of this entry's own (a constraint it breaks, a value the database refuses),
    /// as opposed to one of the connection or of contention.
    fn is_entry_fault(&self, e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(_) | sqlx::Error::Decode(_)) && !self.is_contention(e)
    }
}

/// The batch as changes, if every entry is the first delivery of a `placed` entry of a
/// distinct order; `None` sends the batch down the entry-wise path.
fn fresh_placements(event: &str, batch: &[Delivery]) -> Option<Vec<Change>> {
    let mut ids = std::collections::HashSet::new();
    batch
        .iter()
        .map(|d| {
            let c = parse_change(event, d.fields.as_ref()?).ok()?;
            let fresh = d.deliveries == 1 && c.kind == Kind::Placed;
            (fresh && ids.insert(c.order.id.clone())).then_some(c)
        })
        .collect()
}

/// `INSERT INTO <table> (<columns>) VALUES ($1, …), (…), …` for `rows` rows.
fn insert_sql(table_columns: &str, columns: usize, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table_columns} VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * columns + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// The set-wise try of fresh placements (see the module's invariants): `Abort::Redo` on any
/// surprise, for the careful try to sort out.
async fn place_all(
    tx: &mut Transaction<'static, Any>,
    event: &str,
    changes: &[Change],
) -> Result<Vec<Outcome>, Abort> {
    for chunk in changes.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(
            "fg_orders (id, event, user_id, status, created_at, pay_by, idempotency_key, \
             paid_at, expired_at, updated_at)",
            10,
            chunk.len(),
        ) + " ON CONFLICT (id) DO NOTHING";
        let mut q = sqlx::query(&sql);
        for c in chunk {
            let o = &c.order;
            q = q
                .bind(&o.id)
                .bind(&o.event)
                .bind(&o.user)
                .bind(Status::Pending.as_str())
                .bind(&o.created_at)
                .bind(o.pay_by.as_deref())
                .bind(&o.idempotency_key)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(c.at_ms);
        }
        if q.execute(&mut **tx).await?.rows_affected() != chunk.len() as u64 {
            return Err(Abort::Redo); // an order row exists already
        }
    }
    let lines: Vec<_> = changes
        .iter()
        .flat_map(|c| c.order.lines.iter().map(move |l| (&c.order.id, l)))
        .collect();
    for chunk in lines.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(
            "fg_order_lines (order_id, sku, qty, unit_price, currency)",
            5,
            chunk.len(),
        );
        let mut q = sqlx::query(&sql);
        for (id, l) in chunk {
            q = q
                .bind(*id)
                .bind(&l.sku)
                .bind(l.qty)
                .bind(l.unit_price)
                .bind(&l.currency);
        }
        q.execute(&mut **tx).await?;
    }
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for (_, l) in &lines {
        *sums.entry(l.sku.clone()).or_default() += l.qty;
    }
    let mut sums: Vec<_> = sums.into_iter().collect();
    if move_stock(tx, event, &mut sums, true).await?.is_some() {
        return Err(Abort::Redo); // the careful try quarantines the order at fault
    }
    Ok(changes
        .iter()
        .map(|c| Outcome::Applied(decide(None, c.kind.target())))
        .collect())
}

/// Adds (`reserve`) or takes back each line's units under the guard; the first line whose
/// guard refuses is named. Lines go in sku order, so concurrent batches lock rows alike.
async fn move_stock(
    sp: &mut Transaction<'_, Any>,
    event: &str,
    lines: &mut [(String, i64)],
    reserve: bool,
) -> Result<Option<GuardTrip>, sqlx::Error> {
    lines.sort();
    let sql = if reserve {
        "UPDATE fg_inventory SET sold = sold + $1 WHERE event = $2 AND sku = $3 AND sold + $1 <= stock"
    } else {
        "UPDATE fg_inventory SET sold = sold - $1 WHERE event = $2 AND sku = $3 AND sold >= $1"
    };
    for (sku, qty) in lines.iter() {
        let n = sqlx::query(sql)
            .bind(*qty)
            .bind(event)
            .bind(sku)
            .execute(&mut **sp)
            .await?
            .rows_affected();
        if n == 0 {
            let row =
                sqlx::query("SELECT stock, sold FROM fg_inventory WHERE event = $1 AND sku = $2")
                    .bind(event)
                    .bind(sku)
                    .fetch_optional(&mut **sp)
                    .await?
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()?;
            return Ok(Some(GuardTrip::explain(sku, *qty, row, reserve)));
        }
    }
    Ok(None)
}

/// Whether an earlier delivery of this entry was quarantined or dead-lettered (a crash may
/// have come between that commit and the acknowledgement).
async fn settled(
    tx: &mut Transaction<'static, Any>,
    event: &str,
    id: StreamId,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT 1 FROM fg_quarantine WHERE event = $1 AND stream_id = $2 \
         UNION ALL SELECT 1 FROM fg_dead_letters WHERE event = $1 AND stream_id = $2",
    )
    .bind(event)
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

async fn quarantine(
    tx: &mut Transaction<'static, Any>,
    event: &str,
    id: StreamId,
    c: &Change,
    trip: &GuardTrip,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO fg_quarantine (event, stream_id, order_id, kind, order_json, reason, at, \
         quarantined_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (event, stream_id) DO NOTHING",
    )
    .bind(event)
    .bind(id.to_string())
    .bind(&c.order.id)
    .bind(c.kind.as_str())
    .bind(&c.order_json)
    .bind(trip.to_string())
    .bind(c.at_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn dead_letter(
    tx: &mut Transaction<'static, Any>,
    event: &str,
    d: &Delivery,
    fields: &[(String, String)],
    error: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let raw = serde_json::to_string(fields).expect("pairs of strings serialize");
    sqlx::query(
        "INSERT INTO fg_dead_letters (event, stream_id, fields, error, deliveries, dead_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event, stream_id) DO NOTHING",
    )
    .bind(event)
    .bind(d.id.to_string())
    .bind(raw)
    .bind(error)
    .bind(i64::try_from(d.deliveries).unwrap_or(i64::MAX))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let (b, u) = parse_db_url("sqlite://orders.db").unwrap();
        assert_eq!(
            (b, u.as_str()),
            (Backend::Sqlite, "sqlite://orders.db?mode=rwc")
        );
        let (_, u) = parse_db_url("sqlite:///var/x.db?cache=shared").unwrap();
        assert_eq!(u, "sqlite:///var/x.db?cache=shared&mode=rwc");
        let (_, u) = parse_db_url("sqlite://x.db?mode=ro").unwrap();
        assert_eq!(u, "sqlite://x.db?mode=ro");
        assert_eq!(
            parse_db_url("postgresql://a@h/db").unwrap().0,
            Backend::Postgres
        );
        let e = parse_db_url("mysql://root:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mysql://root:***@h/db") && e.contains("sqlite://PATH"),
            "{e}"
        );
    }

    #[test]
    fn multi_row_inserts_number_their_parameters_row_by_row() {
        assert_eq!(
            insert_sql("t (a, b)", 2, 3),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)"
        );
    }

    #[test]
    fn only_failures_stay_pending() {
        assert!(!Outcome::Failed("x".into()).acks());
        for o in [
            Outcome::Skipped(Skip::Duplicate),
            Outcome::Settled,
            Outcome::Gone,
            Outcome::DeadLettered("x".into()),
            Outcome::Quarantined {
                order: "o_1".into(),
                trip: GuardTrip::UnknownSku { sku: "A".into() },
            },
        ] {
            assert!(o.acks(), "{o:?}");
        }
    }
}
