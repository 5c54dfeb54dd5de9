//! The sink's errors. Each keeps its cause ([`std::error::Error::source`]) and displays as one
//! sentence for a terminal; [`SinkError::is_transient`] says whether a long-running sink may
//! wait and try again.

use flashgate_core::origin::{OriginError, Value};
use std::fmt;

#[derive(Debug)]
pub enum SinkError {
    /// A flag or URL that cannot work.
    Usage(String),
    /// An event the origin does not know, or a snapshot it cannot give (a sentence from
    /// [`flashgate_core::ops`]).
    Event(String),
    OpenDb {
        url: String,
        source: sqlx::Error,
    },
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    Db {
        doing: String,
        source: sqlx::Error,
    },
    Origin {
        doing: String,
        source: OriginError,
    },
    /// The origin answered something this code does not understand.
    Reply {
        doing: String,
        got: Value,
    },
}

impl SinkError {
    pub fn db(doing: impl Into<String>) -> impl FnOnce(sqlx::Error) -> SinkError {
        let doing = doing.into();
        move |source| SinkError::Db { doing, source }
    }

    /// Whether waiting may cure it (the database or the origin is down or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Db { .. } | SinkError::Origin { .. })
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Usage(m) | SinkError::Event(m) => f.write_str(m),
            SinkError::OpenDb { url, source } => match source {
                // "error communicating with database: " says nothing the URL does not.
                sqlx::Error::Io(e) => write!(f, "cannot open database {url}: {e}"),
                e => write!(f, "cannot open database {url}: {e}"),
            },
            SinkError::Migrate { url, source } => {
                write!(
                    f,
                    "cannot create or update the order tables in {url}: {source}"
                )
            }
            SinkError::Db { doing, source } => write!(f, "database error {doing}: {source}"),
            SinkError::Origin { doing, source } => write!(f, "cannot {doing}: {source}"),
            SinkError::Reply { doing, got } => {
                write!(f, "cannot {doing}: the origin answered {got:?}")
            }
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::OpenDb { source, .. } | SinkError::Db { source, .. } => Some(source),
            SinkError::Migrate { source, .. } => Some(source),
            SinkError::Origin { source, .. } => Some(source),
            SinkError::Usage(_) | SinkError::Event(_) | SinkError::Reply { .. } => None,
        }
    }
}

/// `url` with its password, if any, replaced by `***`.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(p) => p,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown_url("postgres://shop:s3cret@db:5432/orders"),
            "postgres://shop:***@db:5432/orders"
        );
        assert_eq!(
            shown_url("postgres://shop@db/orders"),
            "postgres://shop@db/orders"
        );
        assert_eq!(shown_url("sqlite://orders.db"), "sqlite://orders.db");
    }

    #[test]
    fn keeps_its_cause() {
        let e = SinkError::Origin {
            doing: "read the stream fg:{E}:stream".into(),
            source: OriginError::not_sent("connect 127.0.0.1:1: refused"),
        };
        assert_eq!(
            e.to_string(),
            "cannot read the stream fg:{E}:stream: origin unreachable: connect 127.0.0.1:1: refused"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.is_transient());
        assert!(!SinkError::Usage("x".into()).is_transient());
    }
}
