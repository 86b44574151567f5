//! PostgreSQL for the benchmarks (issue 14): the connection (`--pg`, `--pg-conn`, or
//! `KLUIS_TEST_PG`), one uniquely named schema per store, every schema dropped at the end.

use std::sync::Mutex;

use vault_core::danger_test_hooks::PgStore;
use vault_core::danger_test_hooks::{EngineConfig, Mode};
use vault_core::PgTarget;

/// The schemas of one benchmark run on one PostgreSQL database: each store gets its own schema,
/// named `kb_<run id>_<label>`, and every one of them is dropped (`DROP SCHEMA … CASCADE`) when
/// this is dropped.
pub struct PgBench {
    conn: String,
    run: String,
    made: Mutex<Vec<String>>,
}

impl PgBench {
    /// The run's schemas on `conn` (a libpq string or `postgres://` URL); checks it parses.
    pub fn new(conn: &str) -> Result<PgBench, String> {
        PgTarget::parse(conn).map_err(|e| e.to_string())?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(PgBench {
            conn: conn.to_owned(),
            run: format!("{}_{nanos:x}", std::process::id()),
            made: Mutex::new(Vec::new()),
        })
    }

    /// The schema for `label` (any text; characters outside `a-z0-9_` become `_`), remembered
    /// for [`PgBench::drop_schemas`]; the same label gives the same schema.
    pub fn target(&self, label: &str) -> PgTarget {
        let clean: String = label
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '_' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .collect();
        let mut name = format!("kb_{}_{clean}", self.run);
        name.truncate(63);
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.clone());
        match PgTarget::parse(&self.conn).and_then(|t| t.with_schema(&name)) {
            Ok(t) => t,
            Err(e) => panic!("schema {name}: {e}"),
        }
    }

    /// The connection string (libpq or URL) of this run.
    pub fn conn(&self) -> &str {
        &self.conn
    }

    /// The target for an existing schema `name` made by another process's run (not dropped by
    /// this one): for the worker processes of `throughput --pg --instances`.
    pub fn existing(&self, name: &str) -> PgTarget {
        match PgTarget::parse(&self.conn).and_then(|t| t.with_schema(name)) {
            Ok(t) => t,
            Err(e) => panic!("schema {name}: {e}"),
        }
    }

    /// A plaintext baseline store in a schema of its own (kluis's default engine settings).
    pub fn plain_store(&self, label: &str) -> Result<PgStore, vault_core::StorageError> {
        PgStore::open(&self.target(label), &EngineConfig::default(), Mode::Create)
    }

    /// Drops every schema made so far; returns how many could not be dropped.
    pub fn drop_schemas(&self) -> usize {
        let mut names: Vec<String> =
            std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner()));
        names.sort();
        names.dedup();
        if names.is_empty() {
            return 0;
        }
        let Ok(mut client) = self
            .conn
            .parse::<postgres::Config>()
            .and_then(|c| c.connect(postgres::NoTls))
        else {
            return names.len();
        };
        names
            .iter()
            .filter(|n| {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{n}\" CASCADE"))
                    .is_err()
            })
            .count()
    }
}

impl Drop for PgBench {
    fn drop(&mut self) {
        self.drop_schemas();
    }
}

/// The connection for `--pg`: `--pg-conn VALUE` if given, else `KLUIS_TEST_PG`. Removes
/// `--pg` and `--pg-conn VALUE` from `args`; `Ok(None)` without `--pg` or `--pg-conn`.
pub fn take_pg_args(args: &mut Vec<String>) -> Result<Option<String>, String> {
    let mut conn = None;
    if let Some(p) = args.iter().position(|a| a == "--pg-conn") {
        conn = Some(args.get(p + 1).cloned().ok_or("--pg-conn needs a value")?);
        args.drain(p..(p + 2).min(args.len()));
    }
    if let Some(p) = args.iter().position(|a| a == "--pg") {
        args.remove(p);
        if conn.is_none() {
            conn = Some(std::env::var("KLUIS_TEST_PG").map_err(|_| {
                "--pg: set KLUIS_TEST_PG (or give --pg-conn), e.g. under .ci/with-postgres"
            })?);
        }
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pg_args_and_schema_names() {
        let mut args: Vec<String> = ["20000", "--pg-conn", "host=/tmp user=u", "--pg", "--json"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            take_pg_args(&mut args).unwrap().as_deref(),
            Some("host=/tmp user=u")
        );
        assert_eq!(args, ["20000", "--json"]);
        assert_eq!(take_pg_args(&mut args).unwrap(), None);
        let pg = PgBench::new("host=/tmp user=u dbname=postgres").unwrap();
        let t = pg.target("ops-4_Kluis");
        assert!(t.schema().starts_with("kb_") && t.schema().ends_with("_ops_4_kluis"));
        assert_eq!(pg.target("ops-4_Kluis"), t);
        assert!(PgBench::new("not a connection string ===").is_err());
        pg.made.lock().unwrap().clear(); // no server here: nothing to drop
    }
}
