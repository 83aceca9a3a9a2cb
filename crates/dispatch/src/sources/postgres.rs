//! PostgresSource: one CloudEvent per row inserted, updated or deleted in a set of
//! PostgreSQL tables, read from a logical replication slot with the built-in `pgoutput`
//! plugin.
//!
//! At start the source connects (the password, when one is given, from an environment
//! variable of the server or a file, read at every connection), creates the publication
//! of its tables when it does not exist (and adds tables the spec names and it lacks), and
//! the slot (after the publication: changes from the slot's creation on are reported).
//! Then it polls the slot over SQL every [`POLL_INTERVAL`] while idle:
//! `pg_logical_slot_peek_binary_changes` returns whole transactions, which are decoded
//! (`pg_walstream`), delivered in commit order, and only then confirmed with
//! `pg_replication_slot_advance`: a crash delivers again at most what was in flight (at
//! least once). While no published change comes, the slot is moved over the WAL other
//! tables write (once everything before it was seen), so it does not hold WAL forever.
//!
//! An event: type `dev.serval.postgres.insert`, `.update`, `.delete` (and `.truncate`,
//! one per table), subject `schema.table`, source `postgresql://host:port/database`, id
//! `<commit LSN>-<index of the change in its transaction>` (the same when delivered
//! again), time the commit's. Its data is JSON: `{"row": {…}}` for an insert, `{"row":
//! {…}, "old": {…}}` for an update (`old` only when the table's replica identity gives it:
//! all columns with `REPLICA IDENTITY FULL`, the key when the key changed), `{"old":
//! {…}}` for a delete (the key, or all columns with `FULL`). Columns are JSON numbers and
//! booleans when their type is (integers, floats, numerics of up to 15 digits, bool),
//! parsed JSON for `json`/`jsonb`, `null` for NULL, else their text; a TOASTed value an
//! update did not change is left out. Changes of tables the publication has but the spec
//! does not name are passed over.
//!
//! The lag is the WAL (in bytes) written since the last change the source confirmed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures_util::future::BoxFuture;
use pg_walstream::{ColumnValue, EventType, Lsn, PgOutputDecoder, RowData, format_lsn, parse_lsn};
use serde_json::{Map, Value};
use serval_eventing::CloudEvent;
use serval_model::PostgresSource;
use tokio::sync::watch;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use super::{Backoff, SourceContext, SourceTask};
use crate::DispatchError;

/// The event type of an inserted row.
pub const INSERT_EVENT_TYPE: &str = "dev.serval.postgres.insert";
/// The event type of an updated row.
pub const UPDATE_EVENT_TYPE: &str = "dev.serval.postgres.update";
/// The event type of a deleted row.
pub const DELETE_EVENT_TYPE: &str = "dev.serval.postgres.delete";
/// The event type of a truncated table.
pub const TRUNCATE_EVENT_TYPE: &str = "dev.serval.postgres.truncate";

/// The wait between two polls of the slot that found nothing.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Changes (rows of the slot: begins, commits, descriptions, rows) one poll asks for; the
/// transaction that passes it is returned whole.
const PEEK_CHANGES: i32 = 1000;
/// Events delivered before the slot is advanced over them (fewer with small transactions).
const DELIVERY_CHUNK: usize = 256;
/// How often the lag is measured (and the slot moved over unpublished WAL).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

const PEEK_SQL: &str = "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                        'proto_version', '1', 'publication_names', $3)";
const ADVANCE_SQL: &str = "SELECT 1 FROM pg_replication_slot_advance($1, $2::text::pg_lsn)";
/// The lag, and an LSN the slot may move to when the next poll finds nothing: the insert
/// position (a record boundary: every commit that began before it ended by it) once it is
/// flushed (so the poll, which reads to the flushed end, sees every commit before it).
const STATUS_SQL: &str = "SELECT GREATEST(w.wr - s.confirmed_flush_lsn, 0)::bigint, \
                          CASE WHEN w.ins <= w.fl AND w.ins > s.confirmed_flush_lsn THEN w.ins::text END \
                          FROM pg_replication_slots s, \
                          (SELECT pg_current_wal_lsn() AS wr, pg_current_wal_insert_lsn() AS ins, \
                          pg_current_wal_flush_lsn() AS fl) w \
                          WHERE s.slot_name = $1";

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Password {
    /// An environment variable of the server.
    Env(String),
    File(PathBuf),
}

/// A PostgresSource made ready to run.
pub struct PostgresTask {
    config: tokio_postgres::Config,
    /// `postgresql://host:port/database`: the events' source, and how messages name the
    /// database (never with a password).
    origin: String,
    password: Option<Password>,
    /// `(schema, table)`.
    tables: Vec<(String, String)>,
    slot: String,
    publication: String,
}

/// Checks a PostgresSource's spec (its URL parses, its names are PostgreSQL's) and makes
/// its task.
pub fn task(source: &PostgresSource) -> Result<Arc<dyn SourceTask>, DispatchError> {
    Ok(Arc::new(checked(source)?))
}

fn checked(source: &PostgresSource) -> Result<PostgresTask, DispatchError> {
    let spec = &source.spec;
    let invalid = |field: &str, message: String| DispatchError::invalid_field("PostgresSource", field, message);
    if !(spec.connection.starts_with("postgresql://") || spec.connection.starts_with("postgres://")) {
        return Err(invalid("spec.connection", "must be a libpq URL (postgresql://user@host:port/database)".into()));
    }
    let mut config = tokio_postgres::Config::from_str(&spec.connection)
        .map_err(|e| invalid("spec.connection", format!("cannot be parsed: {}", describe(&e))))?;
    if config.get_hosts().is_empty() {
        return Err(invalid("spec.connection", "names no host (postgresql://user@host:port/database)".into()));
    }
    if config.get_user().is_none() {
        return Err(invalid("spec.connection", "names no user (postgresql://user@host:port/database)".into()));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("serval-postgressource");
    }
    config.keepalives_idle(Duration::from_secs(10));
    let password = match (&spec.password_env, &spec.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid("spec.passwordFile", "give passwordEnv or passwordFile, not both".into()));
        }
        (Some(name), None) if name.is_empty() || name.contains(['=', '\0']) => {
            return Err(invalid("spec.passwordEnv", format!("{name:?} is not an environment variable's name")));
        }
        (Some(name), None) => Some(Password::Env(name.clone())),
        (None, Some(path)) if !path.starts_with('/') => {
            return Err(invalid("spec.passwordFile", "must be an absolute path".into()));
        }
        (None, Some(path)) => Some(Password::File(PathBuf::from(path))),
        (None, None) => None,
    };
    let mut tables = Vec::new();
    for (i, name) in spec.tables.iter().enumerate() {
        let table = name
            .split_once('.')
            .filter(|(s, t)| valid_name(s) && valid_name(t) && !t.contains('.'))
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .ok_or_else(|| invalid(&format!("spec.tables[{i}]"), format!("{name:?} must be schema.table")))?;
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    if tables.is_empty() {
        return Err(invalid("spec.tables", "name at least one schema.table".into()));
    }
    let slot = &spec.slot;
    if slot.is_empty() || slot.len() > MAX_NAME || !slot.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_')) {
        return Err(invalid(
            "spec.slot",
            format!("{slot:?} must be 1 to {MAX_NAME} lower-case letters, digits and underscores"),
        ));
    }
    if !valid_name(&spec.publication) {
        return Err(invalid("spec.publication", format!("{:?} must be 1 to {MAX_NAME} bytes", spec.publication)));
    }
    let origin = origin_of(&config);
    Ok(PostgresTask { config, origin, password, tables, slot: slot.clone(), publication: spec.publication.clone() })
}

/// How long dropping a deleted source's slot keeps trying (its session may still hold it).
const DROP_TRIES: u32 = 20;

/// Drops the replication slot of a deleted source, so that it holds no WAL: tried until
/// the source's own session has let it go (a slot in use cannot be dropped); a slot that is
/// gone already is fine. The publication stays (other readers may share it). `Err` says why
/// the slot is left.
pub async fn drop_slot(source: &PostgresSource) -> Result<(), String> {
    let task = checked(source).map_err(|e| e.to_string())?;
    let sql = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1";
    let mut last = String::new();
    for _ in 0..DROP_TRIES {
        match task.connect().await {
            Ok(client) => match client.execute(sql, &[&task.slot]).await {
                Ok(_) => return Ok(()),
                Err(e) => last = describe(&e),
            },
            Err(problem) => last = problem.message,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("the replication slot {} of {} was not dropped: {last}", task.slot, task.origin))
}

/// Whether `name` can be a PostgreSQL identifier (quoted).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.contains('\0')
}

/// `postgresql://host:port/database` of a connection (its first host).
fn origin_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) if host.contains(':') => format!("[{host}]"),
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string().replace('%', "%25").replace('/', "%2F"),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("postgresql://{host}:{port}/{database}")
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why the source is not ready now: a reason (CamelCase) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    message: String,
}

impl Problem {
    fn new(reason: &'static str, message: impl Into<String>) -> Problem {
        Problem { reason, message: message.into() }
    }
}

/// The database cannot be reached (or is going away, or not yet accepting connections).
const UNREACHABLE: &str = "PostgresUnreachable";
/// What [`PostgresTask::connect`] is doing, for [`PostgresTask::failed`].
const CONNECTING: &str = "connecting";

/// A transaction whose changes are being decoded.
struct Open {
    /// Its commit's LSN: the first half of its events' ids.
    final_lsn: u64,
    time: Option<String>,
    /// Row changes seen so far (of every table: ids stay the same whatever the spec).
    changes: usize,
    events: Vec<CloudEvent>,
}

/// A decoded transaction: its events, and the LSN the slot moves to once they were delivered.
#[derive(Debug)]
struct Transaction {
    events: Vec<CloudEvent>,
    end_lsn: u64,
}

impl SourceTask for PostgresTask {
    fn run(self: Arc<Self>, context: SourceContext, mut stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut backoff = Backoff::default();
            // Ready once the slot exists: changes from then on are reported.
            context
                .health
                .not_ready("Connecting", format!("connecting to {} to read the slot {}", self.origin, self.slot));
            loop {
                let mut inner = stopped.clone();
                let outcome = tokio::select! {
                    outcome = self.session(&context, &mut inner, &mut backoff) => outcome,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                match outcome {
                    Ok(()) => return,
                    Err(problem) => {
                        if problem.reason == UNREACHABLE {
                            context.health.set_lag(None);
                        }
                        tracing::warn!(
                            "postgressource {}/{}: {}: {}",
                            context.namespace,
                            context.name,
                            problem.reason,
                            problem.message
                        );
                        context.health.not_ready(problem.reason, problem.message);
                        if !backoff.sleep(&mut stopped).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}

impl PostgresTask {
    /// Connects, prepares the publication and slot, and reports changes until stopped
    /// (`Ok`) or something fails (`Err`, why).
    async fn session(
        &self,
        context: &SourceContext,
        stopped: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), Problem> {
        let client = self.connect().await?;
        self.prepare(&client).await?;
        context.health.ready();
        let statement = |sql: &'static str| {
            let client = &client;
            async move { client.prepare(sql).await.map_err(|e| self.failed("preparing to read changes", &e)) }
        };
        let (peek, advance, status) =
            (statement(PEEK_SQL).await?, statement(ADVANCE_SQL).await?, statement(STATUS_SQL).await?);
        let publications = quote_ident(&self.publication);
        let mut next_status = Instant::now();
        loop {
            let mut idle_to: Option<String> = None;
            if Instant::now() >= next_status {
                next_status = Instant::now() + STATUS_INTERVAL;
                let row =
                    client.query_opt(&status, &[&self.slot]).await.map_err(|e| self.failed("reading the slot", &e))?;
                let Some(row) = row else {
                    return Err(Problem::new(
                        "SlotNotFound",
                        format!("the replication slot {} was dropped", self.slot),
                    ));
                };
                let lag: Option<i64> = row.try_get(0).map_err(|e| self.failed("reading the slot", &e))?;
                context.health.set_lag(lag.map(|l| l.max(0) as u64));
                idle_to = row.try_get(1).map_err(|e| self.failed("reading the slot", &e))?;
            }
            let rows = client
                .query(&peek, &[&self.slot, &PEEK_CHANGES, &publications])
                .await
                .map_err(|e| self.failed("reading changes", &e))?;
            backoff.reset();
            let mut messages = Vec::with_capacity(rows.len());
            for row in &rows {
                let lsn: String = row.try_get(0).map_err(|e| self.failed("reading changes", &e))?;
                let data: Vec<u8> = row.try_get(1).map_err(|e| self.failed("reading changes", &e))?;
                let lsn =
                    parse_lsn(&lsn).map_err(|e| Problem::new("ChangesNotReadable", format!("LSN {lsn:?}: {e}")))?;
                messages.push((lsn, data));
            }
            let transactions = self.decode(messages)?;
            if transactions.is_empty() {
                if rows.is_empty()
                    && let Some(lsn) = idle_to
                {
                    // Nothing published committed before `lsn`: the slot need not keep it.
                    client
                        .execute(&advance, &[&self.slot, &lsn])
                        .await
                        .map_err(|e| self.failed("advancing the slot", &e))?;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            let mut events = Vec::new();
            let mut count = transactions.len();
            for transaction in transactions {
                count -= 1;
                events.extend(transaction.events);
                if events.len() >= DELIVERY_CHUNK || count == 0 {
                    if !events.is_empty() && context.sink.deliver(std::mem::take(&mut events), stopped).await.is_err() {
                        return Ok(());
                    }
                    let lsn = format_lsn(transaction.end_lsn);
                    client
                        .execute(&advance, &[&self.slot, &lsn])
                        .await
                        .map_err(|e| self.failed("advancing the slot", &e))?;
                }
            }
        }
    }

    /// A connection, with the password when one is given.
    async fn connect(&self) -> Result<Client, Problem> {
        let mut config = self.config.clone();
        match &self.password {
            Some(Password::Env(name)) => {
                let password = std::env::var(name).map_err(|_| {
                    Problem::new(
                        "PasswordNotFound",
                        format!("the environment variable {name} (spec.passwordEnv) is not set on the server"),
                    )
                })?;
                config.password(password);
            }
            Some(Password::File(path)) => {
                let password = std::fs::read_to_string(path).map_err(|e| {
                    Problem::new("PasswordNotFound", format!("cannot read {} (spec.passwordFile): {e}", path.display()))
                })?;
                config.password(password.trim_end_matches(['\r', '\n']));
            }
            None => {}
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| self.failed(CONNECTING, &e))?;
        let origin = self.origin.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgressource: the connection to {origin} ended: {}", describe(&e));
            }
        });
        Ok(client)
    }

    /// Makes sure the publication (with every table) and the slot exist.
    async fn prepare(&self, client: &Client) -> Result<(), Problem> {
        let setup = |doing: &str, e: tokio_postgres::Error| self.failed(doing, &e);
        let level: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| setup("reading wal_level", e))?;
        if level != "logical" {
            return Err(Problem::new(
                "LogicalReplicationOff",
                format!("{} has wal_level = {level}: set wal_level = logical and restart PostgreSQL", self.origin),
            ));
        }
        let publication = quote_ident(&self.publication);
        let all_tables: Option<bool> = client
            .query_opt("SELECT puballtables FROM pg_publication WHERE pubname = $1", &[&self.publication])
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(|e| setup("reading the publication", e))?;
        match all_tables {
            None => {
                let tables = self.quoted_tables(&self.tables);
                client
                    .batch_execute(&format!("CREATE PUBLICATION {publication} FOR TABLE {tables}"))
                    .await
                    .map_err(|e| setup(&format!("creating the publication {}", self.publication), e))?;
            }
            Some(false) => {
                let published: Vec<(String, String)> = client
                    .query(
                        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1",
                        &[&self.publication],
                    )
                    .await
                    .and_then(|rows| rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect())
                    .map_err(|e| setup("reading the publication's tables", e))?;
                let missing: Vec<(String, String)> =
                    self.tables.iter().filter(|t| !published.contains(t)).cloned().collect();
                if !missing.is_empty() {
                    let tables = self.quoted_tables(&missing);
                    client
                        .batch_execute(&format!("ALTER PUBLICATION {publication} ADD TABLE {tables}"))
                        .await
                        .map_err(|e| setup(&format!("adding tables to the publication {}", self.publication), e))?;
                }
            }
            Some(true) => {}
        }
        let slot = client
            .query_opt(
                "SELECT slot_type, plugin::text, database = current_database() FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| setup("reading the slot", e))?;
        match slot {
            None => {
                client
                    .execute("SELECT 1 FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&self.slot])
                    .await
                    .map_err(|e| setup(&format!("creating the replication slot {}", self.slot), e))?;
            }
            Some(row) => {
                let usable = row.try_get::<_, String>(0).is_ok_and(|t| t == "logical")
                    && row.try_get::<_, Option<String>>(1).is_ok_and(|p| p.as_deref() == Some("pgoutput"))
                    && row.try_get::<_, Option<bool>>(2).is_ok_and(|same| same == Some(true));
                if !usable {
                    return Err(Problem::new(
                        "SlotNotUsable",
                        format!(
                            "the replication slot {} exists but is not a pgoutput logical slot of {}: \
                             name another spec.slot, or drop it",
                            self.slot, self.origin
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn quoted_tables(&self, tables: &[(String, String)]) -> String {
        tables.iter().map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t))).collect::<Vec<_>>().join(", ")
    }

    /// What a failed statement means for the source.
    fn failed(&self, doing: &str, e: &tokio_postgres::Error) -> Problem {
        let code = e.code().map(|c| c.code()).unwrap_or_default();
        if code.starts_with("28") {
            return Problem::new(
                "PostgresAuthenticationFailed",
                format!("cannot log in to {}: {}", self.origin, describe(e)),
            );
        }
        let lost = e.as_db_error().is_none()
            && (e.is_closed()
                || doing == CONNECTING
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()));
        if lost || code.starts_with("08") || code.starts_with("57P") {
            return Problem::new(UNREACHABLE, format!("cannot reach {}: {}", self.origin, describe(e)));
        }
        let reason = match code {
            "55006" => "SlotInUse",
            "42501" => "PermissionDenied",
            _ if doing.starts_with("reading changes") => "ChangesNotReadable",
            _ => "ReplicationSetupFailed",
        };
        Problem::new(reason, format!("{doing} on {}: {}", self.origin, describe(e)))
    }

    /// The transactions of one poll's messages (`(lsn, pgoutput message)`), each with its
    /// events; a row change that cannot be decoded is an error.
    fn decode(&self, messages: Vec<(u64, Vec<u8>)>) -> Result<Vec<Transaction>, Problem> {
        let unreadable = |lsn: u64, why: String| {
            Problem::new(
                "ChangesNotReadable",
                format!("the change at {} of slot {}: {why}", format_lsn(lsn), self.slot),
            )
        };
        // Each poll is a new decoding session: it describes every relation again.
        let mut decoder = PgOutputDecoder::with_protocol_version(1);
        let mut done = Vec::new();
        let mut open: Option<Open> = None;
        for (lsn, data) in messages {
            let tag = data.first().copied();
            let change = decoder.decode_message(data, Lsn::new(lsn)).map_err(|e| unreadable(lsn, e.to_string()))?;
            let Some(change) = change else {
                if matches!(tag, Some(b'I' | b'U' | b'D')) {
                    return Err(unreadable(lsn, "it names a relation no Relation message described".into()));
                }
                continue;
            };
            let changed = |open: &mut Option<Open>| -> Result<(), Problem> {
                match open {
                    Some(tx) => {
                        tx.changes += 1;
                        Ok(())
                    }
                    None => Err(unreadable(lsn, "a change outside of a transaction".into())),
                }
            };
            match change.event_type {
                EventType::Begin { final_lsn, commit_timestamp, .. } => {
                    open = Some(Open {
                        final_lsn: final_lsn.value(),
                        time: rfc3339(commit_timestamp.timestamp_micros()),
                        changes: 0,
                        events: Vec::new(),
                    });
                }
                EventType::Commit { end_lsn, .. } => {
                    let tx = open.take().ok_or_else(|| unreadable(lsn, "a commit without a begin".into()))?;
                    done.push(Transaction { events: tx.events, end_lsn: end_lsn.value() });
                }
                EventType::Insert { schema, table, relation_oid, data } => {
                    changed(&mut open)?;
                    if self.wanted(&schema, &table) {
                        let types = column_types(&decoder, relation_oid);
                        let data = serde_json::json!({ "row": row_json(&data, &types, None) });
                        self.push(&mut open, INSERT_EVENT_TYPE, &schema, &table, data)?;
                    }
                }
                EventType::Update { schema, table, relation_oid, old_data, new_data, key_columns, .. } => {
                    changed(&mut open)?;
                    if self.wanted(&schema, &table) {
                        let types = column_types(&decoder, relation_oid);
                        let mut data = Map::new();
                        data.insert("row".into(), row_json(&new_data, &types, None));
                        if let Some(old) = old_data {
                            data.insert("old".into(), row_json(&old, &types, Some(&key_columns)));
                        }
                        self.push(&mut open, UPDATE_EVENT_TYPE, &schema, &table, Value::Object(data))?;
                    }
                }
                EventType::Delete { schema, table, relation_oid, old_data, key_columns, .. } => {
                    changed(&mut open)?;
                    if self.wanted(&schema, &table) {
                        let types = column_types(&decoder, relation_oid);
                        let data = serde_json::json!({ "old": row_json(&old_data, &types, Some(&key_columns)) });
                        self.push(&mut open, DELETE_EVENT_TYPE, &schema, &table, data)?;
                    }
                }
                EventType::Truncate { tables, cascade, restart_identity } => {
                    for name in tables {
                        changed(&mut open)?;
                        let Some((schema, table)) = name.split_once('.') else { continue };
                        if self.wanted(schema, table) {
                            let data = serde_json::json!({ "cascade": cascade, "restartIdentity": restart_identity });
                            self.push(&mut open, TRUNCATE_EVENT_TYPE, schema, table, data)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(done)
    }

    fn wanted(&self, schema: &str, table: &str) -> bool {
        self.tables.iter().any(|(s, t)| s == schema && t == table)
    }

    /// Adds the event of the open transaction's latest change.
    fn push(&self, open: &mut Option<Open>, kind: &str, schema: &str, table: &str, data: Value) -> Result<(), Problem> {
        let Some(tx) = open else { return Ok(()) };
        // The same change always gets the same id: a redelivery is recognisable.
        let mut event = CloudEvent::builder()
            .id(format!("{}-{}", format_lsn(tx.final_lsn), tx.changes - 1))
            .source(self.origin.as_str())
            .event_type(kind)
            .subject(format!("{schema}.{table}"))
            .datacontenttype("application/json")
            .data(data);
        if let Some(time) = &tx.time {
            event = event.time(time.as_str());
        }
        let event = event
            .build()
            .map_err(|e| Problem::new("ChangesNotReadable", format!("an event of {schema}.{table}: {e}")))?;
        tx.events.push(event);
        Ok(())
    }
}

/// The type of each column of a relation the decoder was told about.
fn column_types(decoder: &PgOutputDecoder, relation: u32) -> HashMap<Arc<str>, u32> {
    decoder
        .state()
        .get_relation(relation)
        .map(|r| r.columns.iter().map(|c| (c.name.clone(), c.type_id)).collect())
        .unwrap_or_default()
}

/// A row as a JSON object (only the columns `only` names, when given).
fn row_json(row: &RowData, types: &HashMap<Arc<str>, u32>, only: Option<&[Arc<str>]>) -> Value {
    let mut object = Map::new();
    for (name, value) in row.iter() {
        if only.is_some_and(|keys| !keys.contains(name)) {
            continue;
        }
        object.insert(name.to_string(), column_json(value, types.get(name).copied().unwrap_or(0)));
    }
    Value::Object(object)
}

/// Type OIDs of `pg_type`.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
}

/// A column's value as JSON, by its type.
fn column_json(value: &ColumnValue, type_id: u32) -> Value {
    let text = match value {
        ColumnValue::Null => return Value::Null,
        ColumnValue::Binary(bytes) => return base64::engine::general_purpose::STANDARD.encode(bytes).into(),
        ColumnValue::Text(bytes) => String::from_utf8_lossy(bytes),
    };
    let number = |n: Option<serde_json::Number>| n.map(Value::Number);
    let typed = match type_id {
        oid::BOOL => match text.as_ref() {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => text.parse::<i64>().ok().map(Value::from),
        oid::FLOAT4 | oid::FLOAT8 => number(text.parse::<f64>().ok().and_then(serde_json::Number::from_f64)),
        oid::NUMERIC => match text.parse::<i64>() {
            Ok(n) => Some(Value::from(n)),
            // Only as many digits as a double keeps.
            Err(_) if text.chars().filter(char::is_ascii_digit).count() <= 15 => {
                number(text.parse::<f64>().ok().and_then(serde_json::Number::from_f64))
            }
            Err(_) => None,
        },
        oid::JSON | oid::JSONB => serde_json::from_str(&text).ok(),
        _ => None,
    };
    typed.unwrap_or_else(|| Value::String(text.into_owned()))
}

/// Microseconds since the Unix epoch in RFC 3339 (`None` before the epoch).
fn rfc3339(micros: i64) -> Option<String> {
    let time = SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).ok()?);
    Some(humantime::format_rfc3339_micros(time).to_string())
}

/// A tokio-postgres error with what the server said, or what went wrong underneath.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use pg_walstream::{ColumnData, ColumnInfo, LogicalReplicationMessage, TupleData, encode_message_to_bytes};

    use super::*;

    fn source(spec: serde_json::Value) -> PostgresSource {
        let mut base = serde_json::json!({
            "connection": "postgresql://app@db.example:5433/shop",
            "tables": ["public.orders"],
            "slot": "serval_orders",
            "publication": "Orders",
            "sink": {"uri": "http://127.0.0.1:1/"},
        });
        for (k, v) in spec.as_object().expect("object") {
            base[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sources.serval.dev/v1alpha1", "kind": "PostgresSource",
            "metadata": {"name": "orders"}, "spec": base,
        }))
        .expect("a PostgresSource")
    }

    fn field_of(e: DispatchError) -> String {
        match e {
            DispatchError::Invalid { source, .. } => source.errors[0].field.clone(),
            other => panic!("not a 422: {other}"),
        }
    }

    #[test]
    fn a_spec_that_cannot_run_is_refused_naming_its_field() {
        assert!(task(&source(serde_json::json!({}))).is_ok());
        for (spec, field) in [
            (serde_json::json!({"connection": "postgresql://app@db:notaport/shop"}), "spec.connection"),
            (serde_json::json!({"connection": "host=db user=app"}), "spec.connection"),
            (serde_json::json!({"connection": "postgresql://db/shop"}), "spec.connection"),
            (serde_json::json!({"tables": ["orders"]}), "spec.tables[0]"),
            (serde_json::json!({"tables": ["public.orders", "a.b.c"]}), "spec.tables[1]"),
            (serde_json::json!({"slot": "Has-Dash"}), "spec.slot"),
            (serde_json::json!({"publication": ""}), "spec.publication"),
            (serde_json::json!({"passwordEnv": "A", "passwordFile": "/p"}), "spec.passwordFile"),
            (serde_json::json!({"passwordFile": "relative"}), "spec.passwordFile"),
        ] {
            let e = task(&source(spec.clone())).err().unwrap_or_else(|| panic!("{spec} should be refused"));
            assert_eq!(field_of(e), field, "{spec}");
        }
    }

    #[test]
    fn the_origin_never_shows_the_password() {
        let config = tokio_postgres::Config::from_str("postgresql://app:secret@db.example:5433/shop").expect("url");
        assert_eq!(origin_of(&config), "postgresql://db.example:5433/shop");
        let config = tokio_postgres::Config::from_str("postgresql://app@[::1]/").expect("url");
        assert_eq!(origin_of(&config), "postgresql://[::1]:5432/app");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn columns_become_json_by_their_type() {
        let text = ColumnValue::text;
        assert_eq!(column_json(&text("t"), oid::BOOL), Value::Bool(true));
        assert_eq!(column_json(&text("42"), oid::INT8), serde_json::json!(42));
        assert_eq!(column_json(&text("12.50"), oid::NUMERIC), serde_json::json!(12.5));
        assert_eq!(column_json(&text("123456789012345678.5"), oid::NUMERIC), serde_json::json!("123456789012345678.5"));
        assert_eq!(column_json(&text("NaN"), oid::FLOAT8), serde_json::json!("NaN"));
        assert_eq!(column_json(&text("{\"a\":[1]}"), oid::JSONB), serde_json::json!({"a": [1]}));
        assert_eq!(column_json(&text("hello"), 25), serde_json::json!("hello"));
        assert_eq!(column_json(&ColumnValue::Null, oid::INT4), Value::Null);
    }

    fn encoded(message: LogicalReplicationMessage) -> Vec<u8> {
        encode_message_to_bytes(&message, 1).to_vec()
    }

    fn relation(id: u32, name: &str) -> LogicalReplicationMessage {
        LogicalReplicationMessage::Relation {
            relation_id: id,
            namespace: "public".into(),
            relation_name: name.into(),
            replica_identity: b'd',
            columns: vec![ColumnInfo::new(1, "id".into(), oid::INT4, -1), ColumnInfo::new(0, "item".into(), 25, -1)],
        }
    }

    fn tuple(id: &str, item: &str) -> TupleData {
        TupleData::new(vec![ColumnData::text(id.as_bytes().to_vec()), ColumnData::text(item.as_bytes().to_vec())])
    }

    #[test]
    fn a_transaction_becomes_one_event_per_row_of_the_named_tables() {
        let task = task_of(&source(serde_json::json!({})));
        let begin = LogicalReplicationMessage::Begin { final_lsn: 0x1_0000_0100, timestamp: 0, xid: 7 };
        let commit = LogicalReplicationMessage::Commit {
            flags: 0,
            commit_lsn: 0x1_0000_0100,
            end_lsn: 0x1_0000_0130,
            timestamp: 0,
        };
        let messages = vec![
            (1, encoded(begin)),
            (2, encoded(relation(10, "orders"))),
            (3, encoded(LogicalReplicationMessage::Insert { relation_id: 10, tuple: tuple("1", "tea") })),
            (4, encoded(relation(11, "other"))),
            (5, encoded(LogicalReplicationMessage::Insert { relation_id: 11, tuple: tuple("9", "x") })),
            (
                6,
                encoded(LogicalReplicationMessage::Delete {
                    relation_id: 10,
                    old_tuple: tuple("1", ""),
                    key_type: 'K',
                }),
            ),
            (7, encoded(commit)),
        ];
        let transactions = task.decode(messages).expect("decodes");
        assert_eq!(transactions.len(), 1);
        assert_eq!(transactions[0].end_lsn, 0x1_0000_0130);
        let events = &transactions[0].events;
        assert_eq!(events.len(), 2, "{events:?}");
        let json: Vec<Value> = events.iter().map(|e| serde_json::to_value(e).expect("json")).collect();
        assert_eq!(json[0]["id"], "1/100-0");
        assert_eq!(json[0]["type"], INSERT_EVENT_TYPE);
        assert_eq!(json[0]["subject"], "public.orders");
        assert_eq!(json[0]["source"], "postgresql://db.example:5433/shop");
        assert_eq!(json[0]["data"], serde_json::json!({"row": {"id": 1, "item": "tea"}}));
        assert_eq!(json[1]["id"], "1/100-2", "the other table's change keeps its index");
        assert_eq!(json[1]["type"], DELETE_EVENT_TYPE);
        assert_eq!(json[1]["data"], serde_json::json!({"old": {"id": 1}}), "the key only");

        // A row change whose relation was never described is an error, not a silent skip.
        let orphan = vec![
            (1, encoded(LogicalReplicationMessage::Begin { final_lsn: 5, timestamp: 0, xid: 8 })),
            (2, encoded(LogicalReplicationMessage::Insert { relation_id: 12, tuple: tuple("1", "x") })),
        ];
        let problem = task.decode(orphan).expect_err("an unknown relation");
        assert_eq!(problem.reason, "ChangesNotReadable");
    }

    fn task_of(source: &PostgresSource) -> Arc<PostgresTask> {
        let spec = &source.spec;
        let config = tokio_postgres::Config::from_str(&spec.connection).expect("url");
        Arc::new(PostgresTask {
            origin: origin_of(&config),
            config,
            password: None,
            tables: vec![("public".into(), "orders".into())],
            slot: spec.slot.clone(),
            publication: spec.publication.clone(),
        })
    }
}
