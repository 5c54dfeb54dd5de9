//! The shop's database: SQLite (a file) or Postgres, through one sqlx `Any` pool, with the
//! tables created by the embedded migrations in `migrations/<backend>/`.
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
//!   the table's CHECK keeps `0 <= sold <= stock` even against code that forgets the guard.
//! - **Arrival order never quarantines a valid order.** Entries of different orders depend on
//!   each other through stock: a re-sale needs the expiry that freed its unit, and sinks may
//!   apply them in either order. So a reservation whose guard finds its sku short is decided
//!   with that sku's inventory row locked (`FOR UPDATE` in Postgres; SQLite's transaction
//!   holds the whole file), inside the entry's savepoint, by asking the consumer group
//!   ([`Backlog`]) whether it still holds, unacknowledged, an entry that may give units of
//!   that sku back. If it does, the entry is **deferred**: rolled back and left pending, to be
//!   applied again later; no failure is counted. If it holds none, every release delivered so
//!   far is in the database and none can land while the row is locked, so the database counts
//!   only orders the origin holds too: the shortfall is a real disagreement, and the change is
//!   quarantined. Any other trip (a release below zero, a sku not on sale) is quarantined at
//!   once: no later entry can mend it.
//! - A quarantined entry is kept whole (`fg_quarantine`) and can be applied again once its
//!   cause is mended ([`Store::requeue_quarantined`]); it leaves the quarantine only by being
//!   applied (or found already applied).
//! - In Postgres a transaction cannot hold its locks for long: every connection sets
//!   `idle_in_transaction_session_timeout` and `lock_timeout` ([`Options::lock_timeout_ms`]),
//!   so a sink that hangs mid-transaction (SIGSTOP, a stalled host) is cut off by the server
//!   and its locks released; its entries are then claimed by the others once idle.

use super::change::{
    decide, parse_change, Change, Effect, GuardTrip, Kind, Skip, Status, StreamId,
};
use super::error::{shown_url, SinkError};
use super::stream::{Backlog, Delivery, NoBacklog};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection, Executor, Row, Transaction};
use std::time::Duration;

/// One migration folder per backend: the same first migration (postgres/ links to sqlite/'s),
/// then what each needs (SQLite cannot change a CHECK in place). A migration, once released, is never edited: sqlx checks
/// the applied ones' checksums.
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite connection waits for another writer (another sink) before giving up.
const SQLITE_BUSY_MS: u64 = 30_000;
/// Tries of a batch that lost to lock contention (deadlock, busy) before the error is raised.
const BATCH_TRIES: u32 = 5;
/// Tries of one entry whose order row changed between reading and writing it.
const ENTRY_TRIES: u32 = 3;
/// How long a Postgres transaction may sit idle holding locks, and how long a statement waits
/// for a lock, by default.
pub const LOCK_TIMEOUT_MS: u64 = 5_000;
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
    /// A reservation found its sku short while the group still holds an entry that may give
    /// units back: rolled back and left pending, to be applied again. Not a failure.
    Deferred {
        order: String,
        trip: GuardTrip,
        /// What it waits for, as a phrase ("entry 1-0", or why the group could not say).
        behind: String,
    },
    DeadLettered(String),
    /// Not applied; left pending to be delivered again.
    Failed(String),
}

impl Outcome {
    /// Whether the entry is done with and may be acknowledged (after the commit).
    pub fn acks(&self) -> bool {
        !matches!(self, Outcome::Failed(_) | Outcome::Deferred { .. })
    }
}

/// What became of one quarantined entry applied again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requeued {
    /// Applied, or found applied already: it left the quarantine.
    Cleared(Outcome),
    /// Its guard still refuses: it stays, with the reason updated.
    Refused(GuardTrip),
    /// It cannot be applied for another reason (the database refused it, or its row no
    /// longer parses): it stays.
    Stuck(String),
}

/// A quarantined entry and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequeueLine {
    pub stream_id: String,
    pub order: String,
    pub result: Requeued,
}

/// How [`Store::open_with`] connects.
#[derive(Clone, Debug)]
pub struct Options {
    pub max_connections: u32,
    /// Postgres: `idle_in_transaction_session_timeout` and `lock_timeout`, in ms.
    pub lock_timeout_ms: u64,
    /// Postgres: the connections' `application_name` (the sink's consumer name).
    pub name: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_connections: 2,
            lock_timeout_ms: LOCK_TIMEOUT_MS,
            name: None,
        }
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
    Deferred {
        trip: GuardTrip,
        behind: String,
    },
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
        let opts = Options {
            max_connections,
            ..Options::default()
        };
        Store::open_with(url, &opts).await
    }

    /// [`Store::open`] with every option.
    pub async fn open_with(url: &str, opts: &Options) -> Result<Store, SinkError> {
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
        let session = session_settings(backend, opts);
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                let session = session.clone();
                Box::pin(async move {
                    for sql in &session {
                        conn.execute(sql.as_str()).await?;
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
            let migrator = match self.backend {
                Backend::Sqlite => &SQLITE_MIGRATOR,
                Backend::Postgres => &POSTGRES_MIGRATOR,
            };
            match migrator.run(&self.pool).await {
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
        backlog: &impl Backlog,
    ) -> Result<Vec<Outcome>, SinkError> {
        let mut tries = 0;
        let mut careful = false;
        loop {
            tries += 1;
            let try_ = Try {
                event,
                max_deliveries,
                now_ms,
                careful,
                backlog,
            };
            match self.apply_once(&try_, batch).await {
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

    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            // Take the write lock first: a deferred transaction that reads and then writes
            // fails at once, without waiting, when another connection wrote in between.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    async fn apply_once<B: Backlog>(
        &self,
        t: &Try<'_, B>,
        batch: &[Delivery],
    ) -> Result<Vec<Outcome>, Abort> {
        let (event, careful) = (t.event, t.careful);
        let mut tx = self.begin().await?;
        if !careful {
            if let Some(placed) = fresh_placements(event, batch) {
                return match place_all(&mut tx, self.backend, event, &placed).await {
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
            out.push(self.entry(&mut tx, t, d).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// One entry. `Err` abandons the whole try; a fault of the entry itself is its outcome
    /// (`careful`), or calls for a careful try (not `careful`).
    async fn entry<B: Backlog>(
        &self,
        tx: &mut Transaction<'static, Any>,
        t: &Try<'_, B>,
        d: &Delivery,
    ) -> Result<Outcome, Abort> {
        let (event, now_ms) = (t.event, t.now_ms);
        let Some(fields) = &d.fields else {
            return Ok(Outcome::Gone);
        };
        if d.deliveries > 1 && settled(tx, event, d.id).await? {
            return Ok(Outcome::Settled);
        }
        let failure = match parse_change(event, fields) {
            Err(e) => e.to_string(),
            Ok(change) if !t.careful => match self.try_change(tx, &change).await {
                Ok(Step::Done(outcome)) => return Ok(outcome),
                Ok(_) => return Err(Abort::Redo),
                Err(e) if self.is_entry_fault(&e) => return Err(Abort::Redo),
                Err(e) => return Err(Abort::Db(e)),
            },
            Ok(change) => match self.change(tx, &change, Some((d.id, t.backlog))).await {
                Ok(Step::Done(outcome)) => return Ok(outcome),
                Ok(Step::Deferred { trip, behind }) => {
                    return Ok(Outcome::Deferred {
                        order: change.order.id.clone(),
                        trip,
                        behind,
                    })
                }
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
        if d.deliveries >= t.max_deliveries {
            dead_letter(tx, event, d, fields, &failure, now_ms).await?;
            return Ok(Outcome::DeadLettered(failure));
        }
        Ok(Outcome::Failed(failure))
    }

    /// Applies one change in a savepoint of its own, reading the order's status again if
    /// another sink changed the row between our read and our write. A shortfall is put to
    /// `backlog` (the entry's id and the group) before the savepoint is rolled back, while the
    /// short sku's row is still locked; without one, every trip is final.
    async fn change(
        &self,
        tx: &mut Transaction<'static, Any>,
        c: &Change,
        backlog: Option<(StreamId, &impl Backlog)>,
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
                Ok(Step::Tripped(trip)) => {
                    let step = match (trip.short_of(), backlog) {
                        (Some(sku), Some((id, backlog))) => {
                            match backlog.release_pending(id, sku).await {
                                Ok(None) => Step::Tripped(trip),
                                Ok(Some(entry)) => Step::Deferred {
                                    trip,
                                    behind: format!("entry {entry}, which may give units back"),
                                },
                                Err(e) => Step::Deferred {
                                    trip,
                                    behind: format!("the group's pending entries ({e})"),
                                },
                            }
                        }
                        _ => Step::Tripped(trip),
                    };
                    sp.rollback().await?;
                    return Ok(step);
                }
                Ok(deferred) => {
                    sp.rollback().await?;
                    return Ok(deferred);
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
                     idempotency_key, paid_at, expired_at, cancelled_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (id) DO NOTHING",
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
                .bind(at(Status::Cancelled))
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
                    if let Some(trip) =
                        move_stock(sp, self.backend, &o.event, &mut lines, true).await?
                    {
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
                    Status::Cancelled => {
                        "UPDATE fg_orders SET status = 'cancelled', cancelled_at = $1, \
                         updated_at = $1 WHERE id = $2 AND status = 'pending'"
                    }
                    Status::Expired | Status::Pending => {
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
                    if let Some(trip) =
                        move_stock(sp, self.backend, &o.event, &mut lines, false).await?
                    {
                        return Ok(Step::Tripped(trip));
                    }
                }
            }
        }
        Ok(Step::Done(Outcome::Applied(effect)))
    }

    /// Applies every quarantined entry of `event` again, oldest stream entry first, each in a
    /// transaction of its own, with every trip final. An entry that applies (or finds its
    /// change applied already) leaves the quarantine in the same transaction; one whose guard
    /// still refuses stays, with its reason brought up to date.
    pub async fn requeue_quarantined(&self, event: &str) -> Result<Vec<RequeueLine>, SinkError> {
        let doing = || format!("requeuing the quarantined entries of event {event}");
        let rows = sqlx::query(
            "SELECT stream_id, order_id, kind, order_json, at FROM fg_quarantine WHERE event = $1",
        )
        .bind(event)
        .fetch_all(&self.pool)
        .await
        .map_err(SinkError::db(doing()))?;
        let mut rows = rows
            .iter()
            .map(|r| {
                Ok::<_, sqlx::Error>((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<String, _>(1)?,
                    vec![
                        ("type".to_string(), r.try_get::<String, _>(2)?),
                        ("order".to_string(), r.try_get::<String, _>(3)?),
                        ("at".to_string(), r.try_get::<i64, _>(4)?.to_string()),
                    ],
                ))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(SinkError::db(doing()))?;
        rows.sort_by_key(|(id, ..)| StreamId::parse(id));
        let mut out = Vec::with_capacity(rows.len());
        for (stream_id, order, fields) in rows {
            let result = self
                .requeue_one(event, &stream_id, &fields)
                .await
                .map_err(SinkError::db(doing()))?;
            out.push(RequeueLine {
                stream_id,
                order,
                result,
            });
        }
        Ok(out)
    }

    async fn requeue_one(
        &self,
        event: &str,
        stream_id: &str,
        fields: &[(String, String)],
    ) -> Result<Requeued, sqlx::Error> {
        let change = match parse_change(event, fields) {
            Ok(c) => c,
            Err(e) => return Ok(Requeued::Stuck(e.to_string())),
        };
        let mut tx = self.begin().await?;
        let result = match self.change(&mut tx, &change, None::<(_, &NoBacklog)>).await {
            Ok(Step::Done(outcome)) => {
                sqlx::query("DELETE FROM fg_quarantine WHERE event = $1 AND stream_id = $2")
                    .bind(event)
                    .bind(stream_id)
                    .execute(&mut *tx)
                    .await?;
                Requeued::Cleared(outcome)
            }
            Ok(Step::Tripped(trip)) => {
                sqlx::query(
                    "UPDATE fg_quarantine SET reason = $1 WHERE event = $2 AND stream_id = $3",
                )
                .bind(trip.to_string())
                .bind(event)
                .bind(stream_id)
                .execute(&mut *tx)
                .await?;
                Requeued::Refused(trip)
            }
            Ok(Step::Deferred { trip, .. }) => Requeued::Refused(trip),
            Ok(Step::Raced) => Requeued::Stuck(format!(
                "order {} kept changing under {ENTRY_TRIES} tries",
                change.order.id
            )),
            Err(e) if self.is_entry_fault(&e) => {
                Requeued::Stuck(format!("the database refused it: {e}"))
            }
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        Ok(result)
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

/// One try of a batch: what every entry of it is applied with.
struct Try<'a, B> {
    event: &'a str,
    max_deliveries: u64,
    now_ms: i64,
    /// Each entry in a savepoint of its own (after a faster try met a surprise).
    careful: bool,
    backlog: &'a B,
}

/// The statements every new connection runs first.
fn session_settings(backend: Backend, opts: &Options) -> Vec<String> {
    match backend {
        Backend::Sqlite => vec![format!("PRAGMA busy_timeout = {SQLITE_BUSY_MS}")],
        Backend::Postgres => {
            let ms = opts.lock_timeout_ms.max(1);
            let mut v = vec![
                format!("SET idle_in_transaction_session_timeout = {ms}"),
                format!("SET lock_timeout = {ms}"),
            ];
            if let Some(name) = &opts.name {
                // A setting takes no bind parameters; keep the name to characters that need
                // no quoting.
                let name: String = name
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c))
                    .take(60)
                    .collect();
                v.push(format!("SET application_name = 'flashgate-sink:{name}'"));
            }
            v
        }
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
    backend: Backend,
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
    if move_stock(tx, backend, event, &mut sums, true)
        .await?
        .is_some()
    {
        return Err(Abort::Redo); // the careful try quarantines the order at fault
    }
    Ok(changes
        .iter()
        .map(|c| Outcome::Applied(decide(None, c.kind.target())))
        .collect())
}

/// Adds (`reserve`) or takes back each line's units under the guard; the first line whose
/// guard refuses is named, with its inventory row locked until the transaction (or its
/// savepoint's parent) ends, and the guard tried once more under that lock: a trip is
/// decided on a row no other sink can change meanwhile. Lines go in sku order, so concurrent
/// batches lock rows alike.
async fn move_stock(
    sp: &mut Transaction<'_, Any>,
    backend: Backend,
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
    // An UPDATE whose guard fails locks nothing in Postgres; SQLite's transaction holds the
    // file already.
    let read = match backend {
        Backend::Postgres => {
            "SELECT stock, sold FROM fg_inventory WHERE event = $1 AND sku = $2 FOR UPDATE"
        }
        Backend::Sqlite => "SELECT stock, sold FROM fg_inventory WHERE event = $1 AND sku = $2",
    };
    for (sku, qty) in lines.iter() {
        let mut locked = None;
        loop {
            let n = sqlx::query(sql)
                .bind(*qty)
                .bind(event)
                .bind(sku)
                .execute(&mut **sp)
                .await?
                .rows_affected();
            if n > 0 {
                break;
            }
            if let Some(row) = locked {
                return Ok(Some(GuardTrip::explain(sku, *qty, row, reserve)));
            }
            locked = Some(
                sqlx::query(read)
                    .bind(event)
                    .bind(sku)
                    .fetch_optional(&mut **sp)
                    .await?
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()?,
            );
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
