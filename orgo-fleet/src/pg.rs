//! Refs and locks in PostgreSQL: [`PgRegistry`].
//!
//! Refs are rows of `orgo_refs(key, digest)`. Locks are PostgreSQL's
//! session-level advisory locks, each held by a connection of its own: when
//! the host holding a lock dies, its connection ends and the server releases
//! the lock, so a dead host never holds a build lock forever.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orgo_snapshot::{LockGuard, LockMode, LockService, RefKey, RefService, StoreError};
use orgo_template::Digest;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{CancelToken, Client, Config, NoTls, Row, Statement};

/// The name errors give the service.
const SERVICE: &str = "registry database";

/// The schema migrations, in order: the schema's version is how many of them
/// a database has applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_refs.sql"),
    include_str!("migrations/0002_ref_times.sql"),
];

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Refs and locks in PostgreSQL, shared by every host of a fleet.
///
/// Refs go through one shared connection (tokio-postgres pipelines
/// concurrent queries on it); when that connection dies, the next call
/// connects again. Each held lock has a connection of its own, owned by its
/// [`LockGuard`]: dropping the guard closes the connection, which releases
/// the lock, and so does the death of the host, since the server ends the
/// session (and its locks) when its TCP connection ends. A host that
/// vanishes without closing its connections (power loss, a network
/// partition) keeps its locks until the server's TCP keepalives give up on
/// it (`tcp_keepalives_idle` and friends in `postgresql.conf`).
///
/// The converse holds too: a guard whose connection is lost (the server
/// restarted, or an administrator ended the session) no longer holds its
/// lock, and nothing tells its holder.
///
/// TLS is not supported yet: connect over loopback or a private network.
/// A URL that asks for TLS (`sslmode=require`) is refused rather than sent
/// in clear. Connect to the server itself, not through a pooler in
/// transaction mode, which would break session-level locks.
pub struct PgRegistry {
    config: Config,
    /// `user@host:port/db`: the server, without the password.
    target: String,
    shared: Mutex<Option<Arc<Connection>>>,
}

impl fmt::Debug for PgRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: the config holds the password.
        f.debug_struct("PgRegistry")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What this module reports as the source of a [`StoreError::Remote`].
#[derive(Debug, thiserror::Error)]
enum PgError {
    #[error("the URL is not a PostgreSQL connection string")]
    Url(#[source] tokio_postgres::Error),
    #[error(
        "TLS to the registry database is not supported yet: use `sslmode=disable` or `prefer` over a private network"
    )]
    Tls,
    #[error(
        "the database's schema is version {found}, newer than version {known}, the newest this \
         orgo knows: upgrade orgo"
    )]
    SchemaTooNew { found: i64, known: usize },
    #[error("the schema version {found} is not a version")]
    SchemaInvalid { found: i64 },
}

/// The shared connection and its prepared statements.
struct Connection {
    client: Client,
    get: Statement,
    insert: Statement,
    upsert: Statement,
    delete: Statement,
    list: Statement,
}

impl PgRegistry {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`,
    /// `postgresql://...`, or libpq's `host=... user=...` form) and brings its
    /// schema up to date.
    ///
    /// Fails if the URL asks for TLS (not supported yet), if the server
    /// cannot be reached, or if the database's schema is newer than this
    /// version of orgo knows. No error names the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config = parse(url)?;
        let registry = Self {
            target: describe(&config),
            config,
            shared: Mutex::new(None),
        };
        let connection = registry.open().await?;
        *registry.shared.lock().await = Some(Arc::new(connection));
        Ok(registry)
    }

    /// A new shared connection: connected, the schema checked (and brought
    /// up to date), the queries prepared. A reconnection checks the schema
    /// again, in case a newer orgo migrated it in between.
    async fn open(&self) -> Result<Connection, StoreError> {
        let mut client = self.open_client().await?;
        migrate(&mut client).await?;
        prepare(client).await
    }

    /// A new client, its connection driven by a task of its own.
    async fn open_client(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(remote(format!("connect to `{}`", self.target)))?;
        tokio::spawn(async move {
            // Its end shows in the client as closed; nothing to report here.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Deletes the refs under `prefix` (`leases`) that nobody set for
    /// longer than `ttl`; their keys. A host sets the leases of the
    /// computers it runs again while it is alive, so the leases this
    /// removes are those of hosts that are gone, which would otherwise keep
    /// what they leased from gc forever.
    pub async fn expire_refs(
        &self,
        prefix: &RefKey,
        ttl: Duration,
    ) -> Result<Vec<RefKey>, StoreError> {
        let c = self.connection().await?;
        let rows = c
            .client
            .query(
                "DELETE FROM orgo_refs
                 WHERE (key = $1 OR starts_with(key, $1 || '/'))
                   AND set_at < now() - make_interval(secs => $2)
                 RETURNING key",
                &[&prefix.as_str(), &ttl.as_secs_f64()],
            )
            .await
            .map_err(remote(format!("expire refs under `{prefix}`")))?;
        let mut keys = rows
            .iter()
            .map(|row| RefKey::new(row.get(0)))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        Ok(keys)
    }

    /// The shared connection, connecting again if it died.
    async fn connection(&self) -> Result<Arc<Connection>, StoreError> {
        let mut shared = self.shared.lock().await;
        if let Some(connection) = shared.as_ref()
            && !connection.client.is_closed()
        {
            return Ok(connection.clone());
        }
        *shared = None;
        let connection = Arc::new(self.open().await?);
        *shared = Some(connection.clone());
        Ok(connection)
    }
}

/// Parses `url`, refusing TLS and defaulting the connect timeout.
fn parse(url: &str) -> Result<Config, StoreError> {
    let invalid = |source| StoreError::Remote {
        service: SERVICE,
        op: "parse the database URL".to_owned(),
        source: Box::new(source),
    };
    let mut config: Config = url.parse().map_err(|e| invalid(PgError::Url(e)))?;
    if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(invalid(PgError::Tls));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("orgo");
    }
    Ok(config)
}

/// `user@host:port/db`, for messages: everything but the password.
fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "{}@{}/{}",
        config.get_user().unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

/// Maps a client error to [`StoreError::Remote`] for `op`.
fn remote(op: String) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Remote {
        service: SERVICE,
        op,
        source: Box::new(source),
    }
}

/// Applies the migrations `client`'s database lacks, in one transaction
/// under an advisory lock, so that hosts starting at once take turns;
/// refuses a schema newer than [`MIGRATIONS`].
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let op = || "apply the schema migrations".to_owned();
    let tx = client.transaction().await.map_err(remote(op()))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&advisory_key("orgo schema\0migrate")],
    )
    .await
    .map_err(remote(op()))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS orgo_schema (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            version bigint NOT NULL
        )",
    )
    .await
    .map_err(remote(op()))?;
    let found: i64 = tx
        .query_opt("SELECT version FROM orgo_schema", &[])
        .await
        .map_err(remote(op()))?
        .map_or(0, |row| row.get(0));
    let applied = check_version(found)?;
    for migration in &MIGRATIONS[applied..] {
        tx.batch_execute(migration).await.map_err(remote(op()))?;
    }
    if applied < MIGRATIONS.len() {
        let known = i64::try_from(MIGRATIONS.len()).expect("a few migrations fit an i64");
        tx.execute(
            "INSERT INTO orgo_schema (version) VALUES ($1)
             ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
            &[&known],
        )
        .await
        .map_err(remote(op()))?;
    }
    tx.commit().await.map_err(remote(op()))
}

/// How many migrations a database at schema version `found` has applied.
fn check_version(found: i64) -> Result<usize, StoreError> {
    let refuse = |source| StoreError::Remote {
        service: SERVICE,
        op: "check the schema version".to_owned(),
        source: Box::new(source),
    };
    let applied = usize::try_from(found).map_err(|_| refuse(PgError::SchemaInvalid { found }))?;
    if applied > MIGRATIONS.len() {
        return Err(refuse(PgError::SchemaTooNew {
            found,
            known: MIGRATIONS.len(),
        }));
    }
    Ok(applied)
}

/// Prepares the refs' statements on `client`.
async fn prepare(client: Client) -> Result<Connection, StoreError> {
    let op = || "prepare the ref queries".to_owned();
    let (get, insert, upsert, delete, list) = futures::try_join!(
        client.prepare("SELECT digest FROM orgo_refs WHERE key = $1"),
        client.prepare(
            "INSERT INTO orgo_refs (key, digest) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        ),
        client.prepare(
            "INSERT INTO orgo_refs (key, digest) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET digest = excluded.digest, set_at = now()"
        ),
        client.prepare("DELETE FROM orgo_refs WHERE key = $1"),
        // Not LIKE: `_` is a LIKE wildcard and a key's character.
        client.prepare(
            "SELECT key FROM orgo_refs WHERE key = $1 OR starts_with(key, $1 || '/')
             ORDER BY key COLLATE \"C\""
        ),
    )
    .map_err(remote(op()))?;
    Ok(Connection {
        client,
        get,
        insert,
        upsert,
        delete,
        list,
    })
}

/// The stored digest of `key`'s row.
fn digest_of(key: &RefKey, row: &Row) -> Result<Digest, StoreError> {
    let text: &str = row.get(0);
    text.parse().map_err(|e| StoreError::Invalid {
        what: "ref",
        location: key.to_string(),
        reason: format!("{e}"),
    })
}

/// A 64-bit advisory lock key for `name`: the first 8 bytes of its SHA-256.
fn advisory_key(name: &str) -> i64 {
    let hash = Sha256::digest(name.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first)
}

/// The advisory lock key of the lock named `name`.
fn lock_key(name: &RefKey) -> i64 {
    advisory_key(&format!("orgo lock\0{name}"))
}

#[async_trait]
impl RefService for PgRegistry {
    async fn get_ref(&self, key: &RefKey) -> Result<Option<Digest>, StoreError> {
        let c = self.connection().await?;
        let row = c
            .client
            .query_opt(&c.get, &[&key.as_str()])
            .await
            .map_err(remote(format!("get ref `{key}`")))?;
        row.map(|row| digest_of(key, &row)).transpose()
    }

    async fn create_ref(
        &self,
        key: &RefKey,
        digest: &Digest,
    ) -> Result<Option<Digest>, StoreError> {
        let c = self.connection().await?;
        let op = || format!("create ref `{key}`");
        let text = digest.to_string();
        // Loops only while another host deletes the row between the two
        // statements.
        loop {
            let inserted = c
                .client
                .execute(&c.insert, &[&key.as_str(), &text])
                .await
                .map_err(remote(op()))?;
            if inserted == 1 {
                return Ok(None);
            }
            let row = c
                .client
                .query_opt(&c.get, &[&key.as_str()])
                .await
                .map_err(remote(op()))?;
            if let Some(row) = row {
                return digest_of(key, &row).map(Some);
            }
        }
    }

    async fn set_ref(&self, key: &RefKey, digest: &Digest) -> Result<(), StoreError> {
        let c = self.connection().await?;
        c.client
            .execute(&c.upsert, &[&key.as_str(), &digest.to_string()])
            .await
            .map_err(remote(format!("set ref `{key}`")))?;
        Ok(())
    }

    async fn delete_ref(&self, key: &RefKey) -> Result<bool, StoreError> {
        let c = self.connection().await?;
        let deleted = c
            .client
            .execute(&c.delete, &[&key.as_str()])
            .await
            .map_err(remote(format!("delete ref `{key}`")))?;
        Ok(deleted > 0)
    }

    async fn list_refs(&self, prefix: &RefKey) -> Result<Vec<RefKey>, StoreError> {
        let c = self.connection().await?;
        let rows = c
            .client
            .query(&c.list, &[&prefix.as_str()])
            .await
            .map_err(remote(format!("list refs under `{prefix}`")))?;
        rows.iter()
            .map(|row| {
                let key: &str = row.get(0);
                RefKey::new(key)
            })
            .collect()
    }
}

/// A lock's own connection: aborting its task closes the socket, which ends
/// the session on the server and with it the lock.
struct LockConnection {
    _client: Client,
    task: JoinHandle<()>,
}

impl Drop for LockConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Cancels the lock request on the server if dropped while armed: a caller
/// that stops waiting (a timeout) leaves no waiter queued behind.
struct CancelOnDrop(Option<CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(token) = self.0.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Best effort: the closed socket ends the wait anyway once
                // the server notices it.
                let _ = token.cancel_query(NoTls).await;
            });
        }
    }
}

#[async_trait]
impl LockService for PgRegistry {
    async fn lock(&self, name: &RefKey, mode: LockMode) -> Result<LockGuard, StoreError> {
        let op = || format!("lock `{name}`");
        let (client, connection) = self.config.connect(NoTls).await.map_err(remote(format!(
            "{} on `{}`",
            op(),
            self.target
        )))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut cancel = CancelOnDrop(Some(client.cancel_token()));
        let connection = LockConnection {
            _client: client,
            task,
        };
        let function = match mode {
            LockMode::Exclusive => "pg_advisory_lock",
            LockMode::Shared => "pg_advisory_lock_shared",
        };
        // One round trip: no timeout may end the wait or the idle session
        // holding the lock (those the server knows), then the lock. The key
        // is a number, quoted so that `i64::MIN` parses.
        let sql = format!(
            "SELECT set_config(name, '0', false) FROM pg_settings
             WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_session_timeout');
             SELECT {function}('{}'::bigint)",
            lock_key(name)
        );
        connection
            ._client
            .batch_execute(&sql)
            .await
            .map_err(remote(op()))?;
        cancel.0 = None;
        Ok(LockGuard::new(connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://orgo:s3cr3t-pa55@127.0.0.1:1/registry";

    #[test]
    fn debug_hides_the_password() {
        let config = parse(URL).expect("parse");
        let registry = PgRegistry {
            target: describe(&config),
            config,
            shared: Mutex::new(None),
        };
        let debug = format!("{registry:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("orgo@127.0.0.1:1/registry"), "{debug}");
    }

    #[tokio::test]
    async fn a_connect_error_hides_the_password() {
        // Port 1 on loopback: nothing listens there.
        let error = PgRegistry::connect(URL).await.expect_err("nothing listens");
        let text = chain(&error);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.starts_with("registry database: connect to `orgo@127.0.0.1:1/registry`"),
            "{text}"
        );
        let debug = format!("{error:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[tokio::test]
    async fn tls_is_refused() {
        let error = PgRegistry::connect(&format!("{URL}?sslmode=require"))
            .await
            .expect_err("TLS is refused");
        let text = chain(&error);
        assert!(text.contains("TLS"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn key_value_urls_parse() {
        let config =
            parse("host=127.0.0.1 port=5433 user=orgo password=s3cr3t dbname=refs").expect("parse");
        assert_eq!(describe(&config), "orgo@127.0.0.1:5433/refs");
    }

    #[test]
    fn schema_versions() {
        assert_eq!(check_version(0).expect("empty"), 0);
        assert_eq!(check_version(1).expect("older"), 1);
        assert_eq!(check_version(2).expect("current"), 2);
        let text = chain(&check_version(3).expect_err("newer"));
        assert!(text.contains("version 3, newer than version 2"), "{text}");
        assert!(check_version(-1).is_err());
    }

    #[test]
    fn lock_keys_differ_by_name() {
        let a = RefKey::new("a").expect("key");
        let b = RefKey::new("b").expect("key");
        assert_ne!(lock_key(&a), lock_key(&b));
        assert_eq!(lock_key(&a), lock_key(&a));
    }

    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}
