//! The shop's databases for tests: a SQLite file in a temporary directory or a throwaway
//! Postgres ([`super::pg::Postgres`]), and readers of the order writer's tables.

use super::free_port;
use super::pg::Postgres;
use sqlx::{AnyPool, Row};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct Db {
    pub url: String,
    _pg: Option<Postgres>,
    dir: Option<PathBuf>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!(
            "flashgate-sink-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Db {
            url: format!("sqlite://{}", dir.join("orders.db").display()),
            _pg: None,
            dir: Some(dir),
        }
    }

    pub fn postgres() -> Db {
        let pg = Postgres::start();
        Db {
            url: pg.url(),
            _pg: Some(pg),
            dir: None,
        }
    }

    pub fn both() -> [Db; 2] {
        [Db::sqlite(), Db::postgres()]
    }

    pub async fn pool(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A redis-server with one event on sale.
/// order id → status.
pub async fn orders(pool: &AnyPool) -> BTreeMap<String, String> {
    sqlx::query("SELECT id, status FROM fg_orders")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect()
}

/// sku → (stock, sold).
pub async fn inventory(pool: &AnyPool, event: &str) -> BTreeMap<String, (i64, i64)> {
    sqlx::query("SELECT sku, stock, sold FROM fg_inventory WHERE event = $1")
        .bind(event)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), (r.get(1), r.get(2))))
        .collect()
}

pub async fn count(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(pool).await.unwrap().get(0)
}
