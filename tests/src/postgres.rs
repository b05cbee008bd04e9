//! A PostgreSQL schema of its own for one test, on the real database (`DATABASE_URL`, by
//! default the local one), through `psql`; dropped when the value is.

use std::process::Command;

/// The database the tests use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_string())
}

/// A schema for one test.
pub struct Schema {
    pub name: String,
}

impl Schema {
    /// Creates a fresh schema named after `test`.
    pub fn new(test: &str) -> Schema {
        let schema = Schema {
            name: format!("tf_{test}_{:08x}", rand::random::<u32>()),
        };
        schema.psql(&format!("CREATE SCHEMA {}", schema.name));
        schema
    }

    /// The store URL of a scheduler whose tables are in this schema (and whose connections
    /// are named after it in `pg_stat_activity`).
    pub fn store_url(&self) -> String {
        let url = database_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{separator}options=-c%20search_path%3D{0}&application_name={0}",
            self.name
        )
    }

    /// Like [`Schema::store_url`], through `address` (host:port, e.g. a proxy's) instead of
    /// the database's own.
    pub fn store_url_via(&self, address: &str) -> String {
        let url = self.store_url();
        let start = url
            .find('@')
            .map_or(url.find("://").map_or(0, |at| at + 3), |at| at + 1);
        let end = url[start..].find('/').map_or(url.len(), |at| start + at);
        format!("{}{address}{}", &url[..start], &url[end..])
    }

    /// The database's own address (host:port).
    pub fn address(&self) -> String {
        let url = database_url();
        let start = url
            .find('@')
            .map_or(url.find("://").map_or(0, |at| at + 3), |at| at + 1);
        let end = url[start..].find('/').map_or(url.len(), |at| start + at);
        let authority = &url[start..end];
        match authority.contains(':') {
            true => authority.to_string(),
            false => format!("{authority}:5432"),
        }
    }

    /// Runs `sql` (with this schema first on the search path); returns what it printed.
    pub fn psql(&self, sql: &str) -> String {
        let output = Command::new("psql")
            .args([&database_url(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("SET search_path TO {}; {sql}", self.name))
            .output()
            .expect("psql is installed (Debian's postgresql-client)");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&database_url(), "-X", "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .output();
    }
}
