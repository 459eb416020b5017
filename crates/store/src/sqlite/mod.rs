//! [`SqliteStore`]: the embedded default [`Store`], one SQLite file in WAL mode.

#[cfg(test)]
mod plans;
mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{ffi, params, Connection, OptionalExtension, Params, Row, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use schema::SCHEMA_VERSION;

use crate::error::{ConsumeError, StoreError};
use crate::model::{
    AuditEvent, AuditFilter, CertificateRecord, IssuedToken, JoinTokenRecord, Labels, Millis,
    NewEnrollment, Node, NodeFacts, NodeStatus, PresenceUpdate, RoleBinding, Tenant, TokenKind,
    User, DEFAULT_TUNNEL_MODE, ROLES,
};
use crate::model::{LastCommand, NodeCommands, Policy, PolicyLevel};
use crate::model::{
    NewRemoteAccess, RemoteAccess, RemoteAccessFilter, RemoteAccessState, StatusIndicator,
    REMOTE_ACCESS_ID_PREFIX,
};
use crate::store::Store;

/// Prepared statements kept per connection (the store has about 70 distinct ones).
const STATEMENT_CACHE: usize = 256;

/// A [`Store`] backed by one SQLite connection.
///
/// Calls are serialised by a mutex; each is a short query, so async callers may call it
/// directly for light traffic or through `spawn_blocking`.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    ///
    /// The parent directory must exist. A new file is created with mode 0600 on unix (SQLite
    /// gives its `-wal` and `-shm` files the same mode). The connection uses WAL,
    /// `synchronous=FULL` (audit must survive power loss), foreign keys and a 5 s busy
    /// timeout. Fails with [`StoreError::SchemaTooNew`] if a newer build migrated the file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Backend(format!("opening SQLite database {}: {e}", path.display()))
        })?;
        let store = Self::init(conn, true).map_err(|e| with_path_context(e, path))?;
        Ok(store)
    }

    /// A private in-memory database (for tests and throwaway servers).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Backend(format!("opening in-memory SQLite database: {e}")))?;
        Self::init(conn, false)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::current_version(&self.lock())
    }

    fn init(mut conn: Connection, wal: bool) -> Result<Self, StoreError> {
        let cfg = |what: &'static str| {
            move |e: rusqlite::Error| {
                StoreError::Backend(format!("configuring SQLite ({what}): {e}"))
            }
        };
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(cfg("busy_timeout"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(cfg("foreign_keys"))?;
        let fk: bool = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .map_err(cfg("foreign_keys"))?;
        if !fk {
            return Err(StoreError::Backend(
                "this SQLite build cannot enforce foreign keys, which tenant isolation relies on"
                    .into(),
            ));
        }
        if wal {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(cfg("journal_mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!(
                    "SQLite refused WAL journal mode (got {mode:?}); is the file on a network \
                     filesystem?"
                )));
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(cfg("synchronous"))?;
        // Every query goes through `prepare_cached`; rusqlite keeps 16 by default, fewer
        // than one stream's authorization and audit use, so statements were compiled
        // again on every stream.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn, crate::now_millis())?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock unwinds through rusqlite's Transaction, which rolls
        // back, so the connection is still consistent and the poison can be ignored.
        self.conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {
            // The umask may have narrowed the mode; make sure it is exactly 0600.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
                StoreError::Backend(format!(
                    "setting permissions of {} to 0600: {e}",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!(
            "creating database file {} (does its directory exist and is it writable?): {e}",
            path.display()
        ))),
    }
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

fn with_path_context(e: StoreError, path: &Path) -> StoreError {
    match e {
        StoreError::Backend(msg) => StoreError::Backend(format!("{}: {msg}", path.display())),
        other => other,
    }
}

// === helpers ===

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Wraps a driver error with what was being attempted.
fn backend(what: impl std::fmt::Display) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| storage_error(e, &what)
}

/// A driver error as a [`StoreError`]: [`StoreError::Full`] when the disk is full.
fn storage_error(e: rusqlite::Error, what: &dyn std::fmt::Display) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full(format!("{what}: {e}"))
        }
        _ => StoreError::Backend(format!("{what}: {e}")),
    }
}

fn constraint_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Some(f.extended_code)
        }
        _ => None,
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        constraint_code(e),
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

fn is_fk_violation(e: &rusqlite::Error) -> bool {
    constraint_code(e) == Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Maps an INSERT's error: unique violation -> Conflict, foreign key -> NotFound.
fn insert_error(
    e: rusqlite::Error,
    conflict: impl FnOnce() -> String,
    missing_parent: impl FnOnce() -> String,
    what: &str,
) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(conflict())
    } else if is_fk_violation(&e) {
        StoreError::NotFound(missing_parent())
    } else {
        storage_error(e, &what)
    }
}

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::InvalidInput(format!("encoding {what} as JSON: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn col<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    idx: usize,
    what: &str,
) -> Result<T, StoreError> {
    row.get(idx)
        .map_err(|e| StoreError::Corrupt(format!("{what}: column {idx}: {e}")))
}

fn col_u32(row: &Row<'_>, idx: usize, what: &str) -> Result<u32, StoreError> {
    let v: i64 = col(row, idx, what)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: {v} is not a valid count")))
}

fn query_all<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: fn(&Row<'_>) -> Result<T, StoreError>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend(what))?;
    let mut rows = stmt.query(params).map_err(backend(what))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend(what))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn query_opt<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: fn(&Row<'_>) -> Result<T, StoreError>,
    what: &str,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend(what))?;
    let mut rows = stmt.query(params).map_err(backend(what))?;
    match rows.next().map_err(backend(what))? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Runs an UPDATE/DELETE and turns "no row matched" into NotFound.
fn exec_one<P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    not_found: impl FnOnce() -> String,
    what: &str,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(backend(what))?;
    if n == 0 {
        Err(StoreError::NotFound(not_found()))
    } else {
        Ok(())
    }
}

// === row decoding ===

const TENANT_COLS: &str = "id, name, created_at";

fn tenant_row(row: &Row<'_>) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: col(row, 0, "tenant")?,
        name: col(row, 1, "tenant")?,
        created_at: col(row, 2, "tenant")?,
    })
}

const USER_COLS: &str =
    "id, tenant_id, name, password_hash, created_at, disabled, credentials_changed_at";

fn user_row(row: &Row<'_>) -> Result<User, StoreError> {
    Ok(User {
        id: col(row, 0, "user")?,
        tenant_id: col(row, 1, "user")?,
        name: col(row, 2, "user")?,
        password_hash: col(row, 3, "user")?,
        created_at: col(row, 4, "user")?,
        disabled: col(row, 5, "user")?,
        credentials_changed_at: col(row, 6, "user")?,
    })
}

const ROLE_COLS: &str = "id, tenant_id, user_id, role, selector, created_at";

fn role_row(row: &Row<'_>) -> Result<RoleBinding, StoreError> {
    let id: String = col(row, 0, "role binding")?;
    let selector: String = col(row, 4, "role binding")?;
    Ok(RoleBinding {
        tenant_id: col(row, 1, "role binding")?,
        user_id: col(row, 2, "role binding")?,
        role: col(row, 3, "role binding")?,
        selector: from_json(&selector, &format!("selector of role binding {id}"))?,
        created_at: col(row, 5, "role binding")?,
        id,
    })
}

const TOKEN_COLS: &str = "id, tenant_id, secret_hash, created_by, created_at, expires_at, \
                          uses_allowed, uses, labels, revoked_at";

fn token_row(row: &Row<'_>) -> Result<JoinTokenRecord, StoreError> {
    const W: &str = "join token";
    let id: String = col(row, 0, W)?;
    let uses_allowed: Option<i64> = col(row, 6, W)?;
    let uses_allowed = uses_allowed
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("join token {id}: uses_allowed {v}")))
        })
        .transpose()?;
    let labels: String = col(row, 8, W)?;
    Ok(JoinTokenRecord {
        tenant_id: col(row, 1, W)?,
        secret_hash: col(row, 2, W)?,
        created_by: col(row, 3, W)?,
        created_at: col(row, 4, W)?,
        expires_at: col(row, 5, W)?,
        uses_allowed,
        uses: col_u32(row, 7, W)?,
        labels: from_json(&labels, &format!("labels of join token {id}"))?,
        revoked_at: col(row, 9, W)?,
        id,
    })
}

const NODE_COLS: &str = "id, tenant_id, name, labels, status, last_seen, agent_version, os, \
                         hostname, addresses, cert_serial, cert_not_after, tunnel_mode, \
                         revoked_at, created_at, actions";

fn node_row(row: &Row<'_>) -> Result<Node, StoreError> {
    const W: &str = "node";
    let id: String = col(row, 0, W)?;
    let labels: String = col(row, 3, W)?;
    let status: String = col(row, 4, W)?;
    let addresses: String = col(row, 9, W)?;
    let actions: String = col(row, 15, W)?;
    Ok(Node {
        tenant_id: col(row, 1, W)?,
        name: col(row, 2, W)?,
        labels: from_json(&labels, &format!("labels of node {id}"))?,
        status: status
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("status of node {id}: {e}")))?,
        last_seen: col(row, 5, W)?,
        agent_version: col(row, 6, W)?,
        os: col(row, 7, W)?,
        hostname: col(row, 8, W)?,
        addresses: from_json(&addresses, &format!("addresses of node {id}"))?,
        cert_serial: col(row, 10, W)?,
        cert_not_after: col(row, 11, W)?,
        tunnel_mode: col(row, 12, W)?,
        revoked_at: col(row, 13, W)?,
        created_at: col(row, 14, W)?,
        actions: from_json(&actions, &format!("actions of node {id}"))?,
        id,
    })
}

const CERT_COLS: &str = "serial, tenant_id, node_id, issued_at, not_after, revoked_at";

fn cert_row(row: &Row<'_>) -> Result<CertificateRecord, StoreError> {
    const W: &str = "certificate";
    Ok(CertificateRecord {
        serial: col(row, 0, W)?,
        tenant_id: col(row, 1, W)?,
        node_id: col(row, 2, W)?,
        issued_at: col(row, 3, W)?,
        not_after: col(row, 4, W)?,
        revoked_at: col(row, 5, W)?,
    })
}

const AUDIT_COLS: &str =
    "seq, time, tenant_id, actor, source, node_id, session_id, action, outcome, detail";

fn audit_row(row: &Row<'_>) -> Result<AuditEvent, StoreError> {
    const W: &str = "audit event";
    let seq: i64 = col(row, 0, W)?;
    let detail: String = col(row, 9, W)?;
    Ok(AuditEvent {
        time: col(row, 1, W)?,
        tenant_id: col(row, 2, W)?,
        actor: col(row, 3, W)?,
        source: col(row, 4, W)?,
        node_id: col(row, 5, W)?,
        session_id: col(row, 6, W)?,
        action: col(row, 7, W)?,
        outcome: col(row, 8, W)?,
        detail: from_json(&detail, &format!("detail of audit event {seq}"))?,
        seq,
    })
}

const REMOTE_ACCESS_COLS: &str = "resource_id, tenant_id, instance, expiration_timestamp, \
    local_port, login_user, kind, target, endpoint, allowed_cidrs, desired_state, \
    current_state, configuration_status, configuration_status_indicator, \
    configuration_status_timestamp, created_by, created_at, updated_at, created_by_id";

fn remote_access_row(row: &Row<'_>) -> Result<RemoteAccess, StoreError> {
    const W: &str = "remote access";
    let id: String = col(row, 0, W)?;
    let local_port: Option<i64> = col(row, 4, W)?;
    let local_port = local_port
        .map(|p| {
            u16::try_from(p)
                .map_err(|_| StoreError::Corrupt(format!("remote access {id}: local_port {p}")))
        })
        .transpose()?;
    let cidrs: String = col(row, 9, W)?;
    let state = |idx: usize| -> Result<RemoteAccessState, StoreError> {
        let s: String = col(row, idx, W)?;
        s.parse()
            .map_err(|e| StoreError::Corrupt(format!("remote access {id}: {e}")))
    };
    let indicator: String = col(row, 13, W)?;
    Ok(RemoteAccess {
        tenant_id: col(row, 1, W)?,
        instance: col(row, 2, W)?,
        expiration_timestamp: col(row, 3, W)?,
        local_port,
        user: col(row, 5, W)?,
        kind: col(row, 6, W)?,
        target: col(row, 7, W)?,
        endpoint: col(row, 8, W)?,
        allowed_cidrs: from_json(&cidrs, &format!("allowed_cidrs of remote access {id}"))?,
        desired_state: state(10)?,
        current_state: state(11)?,
        configuration_status: col(row, 12, W)?,
        configuration_status_indicator: indicator
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("remote access {id}: {e}")))?,
        configuration_status_timestamp: col(row, 14, W)?,
        created_by: col(row, 15, W)?,
        created_at: col(row, 16, W)?,
        updated_at: col(row, 17, W)?,
        created_by_id: col(row, 18, W)?,
        resource_id: id,
    })
}

/// `rmtacconf-` + 8 lowercase alphanumerics.
fn new_remote_access_id() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(REMOTE_ACCESS_ID_PREFIX.len() + 8);
    id.push_str(REMOTE_ACCESS_ID_PREFIX);
    for _ in 0..8 {
        id.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    id
}

/// Attempts at finding an unused remote access id (36^8 ids: a collision is rare, two in a
/// row rarer still).
const REMOTE_ACCESS_ID_ATTEMPTS: usize = 8;

/// Status of a configuration that waits for its node.
const REMOTE_ACCESS_INITIAL_STATUS: &str = "waiting for the node";

const DELETED: &str = "REMOTE_ACCESS_STATE_DELETED";

// === impl Store for SqliteStore ===

impl Store for SqliteStore {
    fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let tenant = Tenant {
            id: new_id(),
            name: name.to_owned(),
            created_at: crate::now_millis(),
        };
        self.lock()
            .execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![tenant.id, tenant.name, tenant.created_at],
            )
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("tenant {name:?}"),
                    String::new,
                    "creating tenant",
                )
            })?;
        Ok(tenant)
    }

    fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {TENANT_COLS} FROM tenants WHERE name = ?1"),
            [name],
            tenant_row,
            "looking up tenant by name",
        )
    }

    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"),
            [id],
            tenant_row,
            "looking up tenant",
        )
    }

    fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        query_all(
            &self.lock(),
            &format!("SELECT {TENANT_COLS} FROM tenants ORDER BY name"),
            [],
            tenant_row,
            "listing tenants",
        )
    }

    fn create_user(
        &self,
        tenant_id: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let user = User {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
            created_at: crate::now_millis(),
            disabled: false,
            credentials_changed_at: 0,
        };
        self.lock()
            .execute(
                "INSERT INTO users (id, tenant_id, name, password_hash, created_at, disabled)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                params![
                    user.id,
                    user.tenant_id,
                    user.name,
                    user.password_hash,
                    user.created_at
                ],
            )
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("user {name:?} in tenant {tenant_id}"),
                    || format!("tenant {tenant_id}"),
                    "creating user",
                )
            })?;
        Ok(user)
    }

    fn user_by_name(&self, tenant_id: &str, name: &str) -> Result<Option<User>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND name = ?2"),
            [tenant_id, name],
            user_row,
            "looking up user by name",
        )
    }

    fn user(&self, tenant_id: &str, id: &str) -> Result<Option<User>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND id = ?2"),
            [tenant_id, id],
            user_row,
            "looking up user",
        )
    }

    fn list_users(&self, tenant_id: &str) -> Result<Vec<User>, StoreError> {
        query_all(
            &self.lock(),
            &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 ORDER BY name"),
            [tenant_id],
            user_row,
            "listing users",
        )
    }

    fn delete_user(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        exec_one(
            &self.lock(),
            "DELETE FROM users WHERE tenant_id = ?1 AND id = ?2",
            [tenant_id, id],
            || format!("user {id} in tenant {tenant_id}"),
            "deleting user",
        )
    }

    fn set_password(
        &self,
        tenant_id: &str,
        id: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        exec_one(
            &self.lock(),
            "UPDATE users SET password_hash = ?3, credentials_changed_at = ?4
             WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, id, password_hash, crate::now_millis()],
            || format!("user {id} in tenant {tenant_id}"),
            "setting password",
        )
    }

    fn set_user_disabled(
        &self,
        tenant_id: &str,
        id: &str,
        disabled: bool,
    ) -> Result<(), StoreError> {
        exec_one(
            &self.lock(),
            "UPDATE users SET disabled = ?3 WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, id, disabled],
            || format!("user {id} in tenant {tenant_id}"),
            "setting user disabled flag",
        )
    }

    fn find_user_by_name_any_tenant(&self, name: &str) -> Result<Vec<User>, StoreError> {
        query_all(
            &self.lock(),
            &format!("SELECT {USER_COLS} FROM users WHERE name = ?1 ORDER BY created_at, id"),
            [name],
            user_row,
            "looking up user by name in all tenants",
        )
    }

    fn bind_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: &str,
        selector: &Labels,
    ) -> Result<RoleBinding, StoreError> {
        if !ROLES.contains(&role) {
            return Err(StoreError::InvalidInput(format!(
                "unknown role {role:?} (expected one of {})",
                ROLES.join(", ")
            )));
        }
        let binding = RoleBinding {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.to_owned(),
            role: role.to_owned(),
            selector: selector.clone(),
            created_at: crate::now_millis(),
        };
        let selector_json = to_json(&binding.selector, "role selector")?;
        self.lock()
            .execute(
                "INSERT INTO role_bindings (id, tenant_id, user_id, role, selector, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    binding.id,
                    binding.tenant_id,
                    binding.user_id,
                    binding.role,
                    selector_json,
                    binding.created_at
                ],
            )
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("role binding {}", binding.id),
                    || format!("user {user_id} in tenant {tenant_id}"),
                    "binding role",
                )
            })?;
        Ok(binding)
    }

    fn list_role_bindings(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<RoleBinding>, StoreError> {
        query_all(
            &self.lock(),
            &format!(
                "SELECT {ROLE_COLS} FROM role_bindings
                 WHERE tenant_id = ?1 AND user_id {user}
                 ORDER BY created_at, id",
                // A literal condition per case, so the planner can use the user index
                // (`?2 IS NULL OR user_id = ?2` would read every binding of the tenant).
                user = if user_id.is_some() {
                    "= ?2"
                } else {
                    "IS NOT ?2"
                }
            ),
            params![tenant_id, user_id],
            role_row,
            "listing role bindings",
        )
    }

    fn unbind_role(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        exec_one(
            &self.lock(),
            "DELETE FROM role_bindings WHERE tenant_id = ?1 AND id = ?2",
            [tenant_id, id],
            || format!("role binding {id} in tenant {tenant_id}"),
            "removing role binding",
        )
    }

    fn create_join_token(&self, rec: &JoinTokenRecord) -> Result<(), StoreError> {
        if let Some(allowed) = rec.uses_allowed {
            if rec.uses > allowed {
                return Err(StoreError::InvalidInput(format!(
                    "join token {}: uses {} exceeds uses_allowed {allowed}",
                    rec.id, rec.uses
                )));
            }
        }
        let labels = to_json(&rec.labels, "join token labels")?;
        self.lock()
            .execute(
                &format!("INSERT INTO join_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    rec.id,
                    rec.tenant_id,
                    rec.secret_hash,
                    rec.created_by,
                    rec.created_at,
                    rec.expires_at,
                    rec.uses_allowed,
                    rec.uses,
                    labels,
                    rec.revoked_at
                ],
            )
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("join token {}", rec.id),
                    || format!("tenant {}", rec.tenant_id),
                    "creating join token",
                )
            })?;
        Ok(())
    }

    fn join_token(&self, tenant_id: &str, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {TOKEN_COLS} FROM join_tokens WHERE tenant_id = ?1 AND id = ?2"),
            [tenant_id, id],
            token_row,
            "looking up join token",
        )
    }

    fn join_token_any_tenant(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {TOKEN_COLS} FROM join_tokens WHERE id = ?1"),
            [id],
            token_row,
            "looking up join token",
        )
    }

    fn list_join_tokens(&self, tenant_id: &str) -> Result<Vec<JoinTokenRecord>, StoreError> {
        query_all(
            &self.lock(),
            &format!(
                "SELECT {TOKEN_COLS} FROM join_tokens WHERE tenant_id = ?1 ORDER BY created_at, id"
            ),
            [tenant_id],
            token_row,
            "listing join tokens",
        )
    }

    fn revoke_join_token(
        &self,
        tenant_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE tenant_id = ?1 AND id = ?2",
                params![tenant_id, id, now],
            )
            .map_err(backend("revoking join token"))?;
        Ok(n > 0)
    }

    fn consume_join_token(&self, id: &str, now: Millis) -> Result<JoinTokenRecord, ConsumeError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting join token transaction"))?;
        let result = consume_token(&tx, id, now)?;
        tx.commit()
            .map_err(backend("committing join token transaction"))?;
        result
    }

    fn enroll_node(&self, e: &NewEnrollment) -> Result<(JoinTokenRecord, Node), ConsumeError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting enrolment"))?;
        let token = consume_token(&tx, &e.token_id, e.now)??;
        let node = new_node(e.node_id.clone(), &e.tenant_id, &e.name, &e.labels);
        insert_node(&tx, &node)?;
        insert_certificate(&tx, &e.cert)?;
        tx.execute(
            "UPDATE nodes SET cert_serial = ?2, cert_not_after = ?3 WHERE id = ?1",
            params![node.id, e.cert.serial, e.cert.not_after],
        )
        .map_err(backend("setting node certificate"))?;
        if !e.enrolled_with.is_empty() {
            tx.execute(
                "UPDATE nodes SET enrolled_with = ?2 WHERE id = ?1",
                params![node.id, e.enrolled_with],
            )
            .map_err(backend("recording what the node enrolled with"))?;
        }
        let addresses = to_json(&e.facts.addresses, "node addresses")?;
        let actions = to_json(&e.facts.actions, "node actions")?;
        tx.execute(
            SET_NODE_FACTS,
            params![
                node.id,
                e.facts.agent_version,
                e.facts.os,
                e.facts.hostname,
                addresses,
                e.facts.tunnel_mode,
                actions
            ],
        )
        .map_err(backend("updating node facts"))?;
        let audit = AuditEvent {
            node_id: Some(node.id.clone()),
            ..e.audit.clone()
        };
        insert_audit(&tx, &audit)?;
        tx.commit().map_err(backend("committing enrolment"))?;
        // What was written, as `node` would read it back.
        let node = Node {
            cert_serial: Some(e.cert.serial.clone()),
            cert_not_after: Some(e.cert.not_after),
            agent_version: e.facts.agent_version.clone(),
            os: e.facts.os.clone(),
            hostname: e.facts.hostname.clone(),
            addresses: e.facts.addresses.clone(),
            tunnel_mode: e.facts.tunnel_mode.clone(),
            actions: e.facts.actions.clone(),
            ..node
        };
        Ok((token, node))
    }

    fn node_enrolled_with(&self, node_id: &str) -> Result<Option<String>, StoreError> {
        let with: Option<String> = self
            .lock()
            .query_row(
                "SELECT enrolled_with FROM nodes WHERE id = ?1",
                [node_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend("reading what a node enrolled with"))?;
        Ok(with.filter(|w| !w.is_empty()))
    }

    fn reissue_enrollment(
        &self,
        cert: &CertificateRecord,
        replaced: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting re-enrolment"))?;
        insert_certificate(&tx, cert)?;
        let n = tx
            .execute(
                "UPDATE nodes SET cert_serial = ?3, cert_not_after = ?4
                 WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                params![cert.tenant_id, cert.node_id, cert.serial, cert.not_after],
            )
            .map_err(backend("setting node certificate"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("node {}", cert.node_id)));
        }
        if let Some(old) = replaced {
            tx.execute(
                "UPDATE certificates SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE serial = ?1 AND node_id = ?2",
                params![old, cert.node_id, cert.issued_at],
            )
            .map_err(backend("revoking the replaced certificate"))?;
        }
        insert_audit(&tx, audit)?;
        tx.commit().map_err(backend("committing re-enrolment"))?;
        Ok(())
    }

    fn create_node(
        &self,
        tenant_id: &str,
        name: &str,
        labels: &Labels,
    ) -> Result<Node, StoreError> {
        let node = new_node(new_id(), tenant_id, name, labels);
        insert_node(&self.lock(), &node)?;
        Ok(node)
    }

    fn node(&self, tenant_id: &str, id: &str) -> Result<Option<Node>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {NODE_COLS} FROM nodes WHERE tenant_id = ?1 AND id = ?2"),
            [tenant_id, id],
            node_row,
            "looking up node",
        )
    }

    fn node_by_id_or_name(&self, tenant_id: &str, key: &str) -> Result<Option<Node>, StoreError> {
        let conn = self.lock();
        let by_id = query_opt(
            &conn,
            &format!("SELECT {NODE_COLS} FROM nodes WHERE tenant_id = ?1 AND id = ?2"),
            [tenant_id, key],
            node_row,
            "looking up node",
        )?;
        if by_id.is_some() {
            return Ok(by_id);
        }
        // The live node of that name (unique: nodes_live_name), else the newest revoked
        // one. Two lookups, each an index search: one query ordering by "live first"
        // would sort every node of the name.
        let live = query_opt(
            &conn,
            &format!(
                "SELECT {NODE_COLS} FROM nodes
                 WHERE tenant_id = ?1 AND name = ?2 AND revoked_at IS NULL"
            ),
            [tenant_id, key],
            node_row,
            "looking up node by name",
        )?;
        if live.is_some() {
            return Ok(live);
        }
        query_opt(
            &conn,
            &format!(
                "SELECT {NODE_COLS} FROM nodes
                 WHERE tenant_id = ?1 AND name = ?2
                 ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ),
            [tenant_id, key],
            node_row,
            "looking up revoked node by name",
        )
    }

    fn node_any_tenant(&self, id: &str) -> Result<Option<Node>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
            [id],
            node_row,
            "looking up node",
        )
    }

    fn list_nodes(&self, tenant_id: &str) -> Result<Vec<Node>, StoreError> {
        query_all(
            &self.lock(),
            &format!(
                "SELECT {NODE_COLS} FROM nodes WHERE tenant_id = ?1 ORDER BY name, created_at, id"
            ),
            [tenant_id],
            node_row,
            "listing nodes",
        )
    }

    fn set_node_labels(
        &self,
        tenant_id: &str,
        node_id: &str,
        labels: &Labels,
    ) -> Result<bool, StoreError> {
        let labels = to_json(labels, "node labels")?;
        let n = self
            .lock()
            .execute(
                "UPDATE nodes SET labels = ?3
                 WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                params![tenant_id, node_id, labels],
            )
            .map_err(backend("setting node labels"))?;
        Ok(n == 1)
    }

    fn update_node_facts(&self, node_id: &str, facts: &NodeFacts) -> Result<(), StoreError> {
        let addresses = to_json(&facts.addresses, "node addresses")?;
        let actions = to_json(&facts.actions, "node actions")?;
        exec_one(
            &self.lock(),
            SET_NODE_FACTS,
            params![
                node_id,
                facts.agent_version,
                facts.os,
                facts.hostname,
                addresses,
                facts.tunnel_mode,
                actions
            ],
            || format!("node {node_id}"),
            "updating node facts",
        )
    }

    fn set_node_status(
        &self,
        node_id: &str,
        status: NodeStatus,
        now: Millis,
    ) -> Result<(), StoreError> {
        exec_one(
            &self.lock(),
            SET_NODE_STATUS,
            params![node_id, status.as_str(), now],
            || format!("node {node_id}"),
            "setting node status",
        )
    }

    fn apply_presence(&self, updates: &[PresenceUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting presence transaction"))?;
        for u in updates {
            match u {
                PresenceUpdate::Status {
                    node_id,
                    status,
                    at,
                } => {
                    tx.prepare_cached(SET_NODE_STATUS)
                        .and_then(|mut st| st.execute(params![node_id, status.as_str(), at]))
                        .map_err(backend("setting node status"))?;
                }
                PresenceUpdate::Facts { node_id, facts } => {
                    let addresses = to_json(&facts.addresses, "node addresses")?;
                    let actions = to_json(&facts.actions, "node actions")?;
                    tx.prepare_cached(SET_NODE_FACTS)
                        .and_then(|mut st| {
                            st.execute(params![
                                node_id,
                                facts.agent_version,
                                facts.os,
                                facts.hostname,
                                addresses,
                                facts.tunnel_mode,
                                actions
                            ])
                        })
                        .map_err(backend("updating node facts"))?;
                }
            }
        }
        tx.commit().map_err(backend("committing presence"))?;
        Ok(())
    }

    fn mark_all_nodes_offline(&self) -> Result<u64, StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE nodes SET status = 'offline' WHERE status <> 'offline'",
                [],
            )
            .map_err(backend("marking all nodes offline"))?;
        Ok(n as u64)
    }

    fn set_node_cert(
        &self,
        node_id: &str,
        serial: &str,
        not_after: Millis,
    ) -> Result<(), StoreError> {
        exec_one(
            &self.lock(),
            "UPDATE nodes SET cert_serial = ?2, cert_not_after = ?3 WHERE id = ?1",
            params![node_id, serial, not_after],
            || format!("node {node_id}"),
            "setting node certificate",
        )
    }

    fn revoke_node(&self, tenant_id: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting node revocation"))?;
        let n = tx
            .execute(
                "UPDATE nodes SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE tenant_id = ?1 AND id = ?2",
                params![tenant_id, id, now],
            )
            .map_err(backend("revoking node"))?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE certificates SET revoked_at = ?3
             WHERE tenant_id = ?1 AND node_id = ?2 AND revoked_at IS NULL",
            params![tenant_id, id, now],
        )
        .map_err(backend("revoking node certificates"))?;
        tx.commit().map_err(backend("committing node revocation"))?;
        Ok(true)
    }

    fn record_certificate(&self, rec: &CertificateRecord) -> Result<(), StoreError> {
        insert_certificate(&self.lock(), rec)
    }

    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {CERT_COLS} FROM certificates WHERE serial = ?1"),
            [serial],
            cert_row,
            "looking up certificate",
        )
    }

    fn is_serial_revoked(&self, serial: &str) -> Result<bool, StoreError> {
        let usable: Option<bool> = self
            .lock()
            .query_row(
                "SELECT c.revoked_at IS NULL AND n.revoked_at IS NULL
                 FROM certificates c JOIN nodes n ON n.tenant_id = c.tenant_id AND n.id = c.node_id
                 WHERE c.serial = ?1",
                [serial],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend("checking certificate revocation"))?;
        Ok(usable != Some(true))
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<i64, StoreError> {
        insert_audit(&self.lock(), event)
    }

    fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<Vec<i64>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting audit transaction"))?;
        let seqs = events
            .iter()
            .map(|e| insert_audit(&tx, e))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(backend("committing audit events"))?;
        Ok(seqs)
    }

    fn list_audit(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        query_all(
            &self.lock(),
            &format!(
                "SELECT {AUDIT_COLS} FROM audit_events
                 WHERE tenant_id = ?1{conditions}
                 ORDER BY seq
                 LIMIT ?8",
                // Only the conditions the filter sets, so that one node's events are an
                // index search (`?4 IS NULL OR node_id = ?4` would walk the tenant's trail).
                conditions = [
                    (filter.since.is_some(), " AND time >= ?2"),
                    (filter.until.is_some(), " AND time < ?3"),
                    (filter.node_id.is_some(), " AND node_id = ?4"),
                    (filter.actor.is_some(), " AND actor = ?5"),
                    (filter.action.is_some(), " AND action = ?6"),
                    (filter.after_seq.is_some(), " AND seq > ?7"),
                ]
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, sql)| *sql)
                .collect::<String>()
            ),
            params![
                tenant_id,
                filter.since,
                filter.until,
                filter.node_id,
                filter.actor,
                filter.action,
                filter.after_seq,
                filter.effective_limit()
            ],
            audit_row,
            "listing audit events",
        )
    }

    fn create_remote_access(&self, rec: &NewRemoteAccess) -> Result<RemoteAccess, StoreError> {
        let cidrs = to_json(&rec.allowed_cidrs, "remote access allowed_cidrs")?;
        let now = crate::now_millis();
        let conn = self.lock();
        for _ in 0..REMOTE_ACCESS_ID_ATTEMPTS {
            let id = new_remote_access_id();
            let inserted = conn.execute(
                &format!(
                    "INSERT INTO remote_access ({REMOTE_ACCESS_COLS})
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                             ?15, ?14, ?14, ?16)"
                ),
                params![
                    id,
                    rec.tenant_id,
                    rec.instance,
                    rec.expiration_timestamp,
                    rec.user,
                    rec.kind,
                    rec.target,
                    rec.endpoint,
                    cidrs,
                    RemoteAccessState::Started.as_str(),
                    RemoteAccessState::Configured.as_str(),
                    REMOTE_ACCESS_INITIAL_STATUS,
                    StatusIndicator::InProgress.as_str(),
                    now,
                    rec.created_by,
                    rec.created_by_id,
                ],
            );
            match inserted {
                Ok(_) => {}
                // The only unique key is the id: it was taken, try another.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) if is_fk_violation(&e) => {
                    return Err(StoreError::NotFound(format!(
                        "node {} in tenant {}",
                        rec.instance, rec.tenant_id
                    )))
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "creating remote access configuration: {e}"
                    )))
                }
            }
            return query_opt(
                &conn,
                &format!("SELECT {REMOTE_ACCESS_COLS} FROM remote_access WHERE resource_id = ?1"),
                [&id],
                remote_access_row,
                "reading back remote access configuration",
            )?
            .ok_or_else(|| {
                StoreError::Backend(format!("remote access configuration {id} vanished"))
            });
        }
        Err(StoreError::Conflict(format!(
            "no unused remote access id after {REMOTE_ACCESS_ID_ATTEMPTS} attempts"
        )))
    }

    fn remote_access(
        &self,
        tenant_id: &str,
        resource_id: &str,
    ) -> Result<Option<RemoteAccess>, StoreError> {
        query_opt(
            &self.lock(),
            &format!(
                "SELECT {REMOTE_ACCESS_COLS} FROM remote_access
                 WHERE tenant_id = ?1 AND resource_id = ?2"
            ),
            [tenant_id, resource_id],
            remote_access_row,
            "looking up remote access configuration",
        )
    }

    fn list_remote_access(
        &self,
        tenant_id: &str,
        filter: &RemoteAccessFilter,
    ) -> Result<Vec<RemoteAccess>, StoreError> {
        let include_deleted =
            filter.include_deleted || filter.current_state == Some(RemoteAccessState::Deleted);
        query_all(
            &self.lock(),
            &format!(
                "SELECT {REMOTE_ACCESS_COLS} FROM remote_access
                 WHERE tenant_id = ?1{instance}{state}{deleted}
                 ORDER BY created_at DESC, rowid DESC
                 LIMIT ?5",
                // Only the conditions the filter sets, so one node's rows are an index
                // search (`?2 IS NULL OR instance = ?2` would read the tenant's history).
                instance = if filter.instance.is_some() {
                    " AND instance = ?2"
                } else {
                    ""
                },
                state = if filter.current_state.is_some() {
                    " AND current_state = ?3"
                } else {
                    ""
                },
                deleted = if include_deleted {
                    String::new()
                } else {
                    format!(" AND current_state <> '{DELETED}'")
                },
            ),
            params![
                tenant_id,
                filter.instance,
                filter.current_state.map(RemoteAccessState::as_str),
                include_deleted,
                filter.effective_limit()
            ],
            remote_access_row,
            "listing remote access configurations",
        )
    }

    fn active_remote_access(&self) -> Result<Vec<RemoteAccess>, StoreError> {
        query_all(
            &self.lock(),
            &format!(
                "SELECT {REMOTE_ACCESS_COLS} FROM remote_access
                 WHERE current_state <> '{DELETED}'
                 ORDER BY created_at, rowid"
            ),
            [],
            remote_access_row,
            "listing active remote access configurations",
        )
    }

    fn set_remote_access_expiration(
        &self,
        tenant_id: &str,
        resource_id: &str,
        expiration: Millis,
    ) -> Result<RemoteAccess, StoreError> {
        query_opt(
            &self.lock(),
            &format!(
                "UPDATE remote_access SET expiration_timestamp = ?3, updated_at = ?4
                 WHERE tenant_id = ?1 AND resource_id = ?2 AND current_state <> '{DELETED}'
                 RETURNING {REMOTE_ACCESS_COLS}"
            ),
            params![tenant_id, resource_id, expiration, crate::now_millis()],
            remote_access_row,
            "setting remote access expiration",
        )?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "live remote access configuration {resource_id} in tenant {tenant_id}"
            ))
        })
    }

    fn set_remote_access_desired(
        &self,
        tenant_id: &str,
        resource_id: &str,
        desired: RemoteAccessState,
    ) -> Result<RemoteAccess, StoreError> {
        query_opt(
            &self.lock(),
            &format!(
                "UPDATE remote_access SET desired_state = ?3, updated_at = ?4
                 WHERE tenant_id = ?1 AND resource_id = ?2 AND current_state <> '{DELETED}'
                 RETURNING {REMOTE_ACCESS_COLS}"
            ),
            params![
                tenant_id,
                resource_id,
                desired.as_str(),
                crate::now_millis()
            ],
            remote_access_row,
            "setting remote access desired state",
        )?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "live remote access configuration {resource_id} in tenant {tenant_id}"
            ))
        })
    }

    fn set_remote_access_status(
        &self,
        resource_id: &str,
        current: RemoteAccessState,
        indicator: StatusIndicator,
        status: &str,
        local_port: Option<u16>,
        now: Millis,
    ) -> Result<RemoteAccess, StoreError> {
        if local_port == Some(0) {
            return Err(StoreError::InvalidInput(format!(
                "remote access {resource_id}: local_port 0 is not a port"
            )));
        }
        query_opt(
            &self.lock(),
            &format!(
                "UPDATE remote_access
                 SET current_state = ?2, configuration_status_indicator = ?3,
                     configuration_status = ?4, local_port = COALESCE(?5, local_port),
                     configuration_status_timestamp = ?6, updated_at = ?6
                 WHERE resource_id = ?1
                 RETURNING {REMOTE_ACCESS_COLS}"
            ),
            params![
                resource_id,
                current.as_str(),
                indicator.as_str(),
                status,
                local_port,
                now
            ],
            remote_access_row,
            "setting remote access status",
        )?
        .ok_or_else(|| StoreError::NotFound(format!("remote access configuration {resource_id}")))
    }

    fn create_issued_token(&self, rec: &IssuedToken) -> Result<(), StoreError> {
        if rec.instances == Some(0) {
            return Err(StoreError::InvalidInput(format!(
                "token {}: instances must be at least 1",
                rec.id
            )));
        }
        self.lock()
            .execute(
                &format!(
                    "INSERT INTO issued_tokens ({ISSUED_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    rec.id,
                    rec.tenant_id,
                    rec.kind.as_str(),
                    rec.subject,
                    rec.name,
                    rec.created_by,
                    rec.created_at,
                    rec.expires_at,
                    rec.instances,
                    rec.revoked_at,
                    rec.created_by_id,
                ],
            )
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("token {}", rec.id),
                    || format!("tenant {}", rec.tenant_id),
                    "recording a token",
                )
            })?;
        Ok(())
    }

    fn issued_token(&self, tenant_id: &str, id: &str) -> Result<Option<IssuedToken>, StoreError> {
        query_opt(
            &self.lock(),
            &format!("SELECT {ISSUED_COLS} FROM issued_tokens WHERE tenant_id = ?1 AND id = ?2"),
            [tenant_id, id],
            issued_row,
            "looking up a token",
        )
    }

    fn list_issued_tokens(
        &self,
        tenant_id: &str,
        kind: Option<TokenKind>,
    ) -> Result<Vec<IssuedToken>, StoreError> {
        query_all(
            &self.lock(),
            &format!(
                "SELECT {ISSUED_COLS} FROM issued_tokens \
                 WHERE tenant_id = ?1 AND (?2 IS NULL OR kind = ?2) \
                 ORDER BY created_at, rowid"
            ),
            params![tenant_id, kind.map(TokenKind::as_str)],
            issued_row,
            "listing tokens",
        )
    }

    fn revoke_issued_token(
        &self,
        tenant_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE issued_tokens SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE tenant_id = ?1 AND id = ?2",
                params![tenant_id, id, now],
            )
            .map_err(backend("revoking a token"))?;
        Ok(n > 0)
    }

    fn put_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        if (policy.level == PolicyLevel::Tenant) != policy.scope_key.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "a {} policy {} a scope key",
                policy.level.as_str(),
                if policy.level == PolicyLevel::Tenant {
                    "has no"
                } else {
                    "needs"
                }
            )));
        }
        let rules = to_json(&policy.rules, "policy rules")?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting policy transaction"))?;
        let tenant: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM tenants WHERE id = ?1",
                [&policy.tenant_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend("looking up tenant"))?;
        if tenant.is_none() {
            return Err(StoreError::NotFound(format!("tenant {}", policy.tenant_id)));
        }
        if policy.level == PolicyLevel::Node {
            let node: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM nodes WHERE tenant_id = ?1 AND id = ?2",
                    [&policy.tenant_id, &policy.scope_key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend("looking up node"))?;
            if node.is_none() {
                return Err(StoreError::NotFound(format!("node {}", policy.scope_key)));
            }
        }
        tx.execute(
            "INSERT INTO policies (tenant_id, level, scope_key, rules, updated_by, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tenant_id, level, scope_key) DO UPDATE SET
                 rules = excluded.rules, updated_by = excluded.updated_by,
                 updated_at = excluded.updated_at",
            params![
                policy.tenant_id,
                policy.level.as_str(),
                policy.scope_key,
                rules,
                policy.updated_by,
                policy.updated_at
            ],
        )
        .map_err(backend("storing a policy"))?;
        tx.commit().map_err(backend("committing a policy"))?;
        Ok(())
    }

    fn delete_policy(
        &self,
        tenant_id: &str,
        level: PolicyLevel,
        scope_key: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "DELETE FROM policies WHERE tenant_id = ?1 AND level = ?2 AND scope_key = ?3",
                params![tenant_id, level.as_str(), scope_key],
            )
            .map_err(backend("deleting a policy"))?;
        Ok(n > 0)
    }

    fn list_policies(&self, tenant_id: &str) -> Result<Vec<Policy>, StoreError> {
        query_all(
            &self.lock(),
            "SELECT tenant_id, level, scope_key, rules, updated_by, updated_at FROM policies
             WHERE tenant_id = ?1
             ORDER BY CASE level WHEN 'tenant' THEN 0 WHEN 'project' THEN 1 ELSE 2 END,
                      scope_key",
            [tenant_id],
            policy_row,
            "listing policies",
        )
    }

    fn policies_for_node(&self, tenant_id: &str, node_id: &str) -> Result<Vec<Policy>, StoreError> {
        let conn = self.lock();
        let mut out = Vec::new();
        // Three primary-key searches, in the order `list_policies` gives.
        for (level, scope_key) in [("tenant", None), ("project", None), ("node", Some(node_id))] {
            out.extend(query_all(
                &conn,
                &format!(
                    "SELECT tenant_id, level, scope_key, rules, updated_by, updated_at
                     FROM policies WHERE tenant_id = ?1 AND level = ?2{}
                     ORDER BY scope_key",
                    // `?3 IS NULL OR` keeps one parameter count for all three.
                    if scope_key.is_some() {
                        " AND scope_key = ?3"
                    } else {
                        " AND ?3 IS NULL"
                    }
                ),
                params![tenant_id, level, scope_key],
                policy_row,
                "reading a node's policies",
            )?);
        }
        Ok(out)
    }

    fn apply_node_commands(&self, batch: &[(String, NodeCommands)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("starting command-count transaction"))?;
        for (tenant_id, c) in batch {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM nodes WHERE tenant_id = ?1 AND id = ?2")
                .and_then(|mut st| {
                    st.query_row([tenant_id, &c.node_id], |r| r.get(0))
                        .optional()
                })
                .map_err(backend("looking up node"))?;
            if exists.is_none() {
                continue;
            }
            let last = c.last.as_ref();
            tx.prepare_cached(
                "INSERT INTO node_commands (node_id, tenant_id, device, app, external,
                     last_kind, last_what, last_actor, last_source, last_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (node_id) DO UPDATE SET
                     device = device + excluded.device,
                     app = app + excluded.app,
                     external = external + excluded.external,
                     last_kind = CASE WHEN excluded.last_at >= COALESCE(last_at, 0)
                                 THEN excluded.last_kind ELSE last_kind END,
                     last_what = CASE WHEN excluded.last_at >= COALESCE(last_at, 0)
                                 THEN excluded.last_what ELSE last_what END,
                     last_actor = CASE WHEN excluded.last_at >= COALESCE(last_at, 0)
                                  THEN excluded.last_actor ELSE last_actor END,
                     last_source = CASE WHEN excluded.last_at >= COALESCE(last_at, 0)
                                   THEN excluded.last_source ELSE last_source END,
                     last_at = MAX(COALESCE(last_at, 0), COALESCE(excluded.last_at, 0))
                 WHERE node_commands.tenant_id = excluded.tenant_id",
            )
            .and_then(|mut st| {
                st.execute(params![
                    c.node_id,
                    tenant_id,
                    i64::try_from(c.device).unwrap_or(i64::MAX),
                    i64::try_from(c.app).unwrap_or(i64::MAX),
                    i64::try_from(c.external).unwrap_or(i64::MAX),
                    last.map(|l| &l.kind),
                    last.map(|l| &l.what),
                    last.map(|l| &l.actor),
                    last.and_then(|l| l.source.as_ref()),
                    last.map(|l| l.at)
                ])
            })
            .map_err(backend("counting node commands"))?;
        }
        tx.commit().map_err(backend("committing command counts"))?;
        Ok(())
    }

    fn node_commands(&self, tenant_id: &str) -> Result<Vec<NodeCommands>, StoreError> {
        query_all(
            &self.lock(),
            "SELECT node_id, device, app, external, last_kind, last_what, last_actor,
                    last_source, last_at
             FROM node_commands WHERE tenant_id = ?1 ORDER BY node_id",
            [tenant_id],
            node_commands_row,
            "listing node commands",
        )
    }
}

fn policy_row(row: &Row<'_>) -> Result<Policy, StoreError> {
    const W: &str = "policy";
    let level: String = col(row, 1, W)?;
    let level = PolicyLevel::parse(&level)
        .ok_or_else(|| StoreError::Corrupt(format!("policy level '{level}'")))?;
    let scope_key: String = col(row, 2, W)?;
    let rules: String = col(row, 3, W)?;
    Ok(Policy {
        tenant_id: col(row, 0, W)?,
        level,
        rules: from_json(&rules, &format!("rules of policy {scope_key}"))?,
        scope_key,
        updated_by: col(row, 4, W)?,
        updated_at: col(row, 5, W)?,
    })
}

fn node_commands_row(row: &Row<'_>) -> Result<NodeCommands, StoreError> {
    const W: &str = "node commands";
    let count = |i: usize| -> Result<u64, StoreError> {
        let v: i64 = col(row, i, W)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{W}: count {v}")))
    };
    let kind: Option<String> = col(row, 4, W)?;
    let last = match kind {
        Some(kind) => Some(LastCommand {
            kind,
            what: col::<Option<String>>(row, 5, W)?.unwrap_or_default(),
            actor: col::<Option<String>>(row, 6, W)?.unwrap_or_default(),
            source: col(row, 7, W)?,
            at: col::<Option<i64>>(row, 8, W)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(NodeCommands {
        node_id: col(row, 0, W)?,
        device: count(1)?,
        app: count(2)?,
        external: count(3)?,
        last,
    })
}

/// One node's status and `last_seen` (`?1` id, `?2` status, `?3` time).
/// Takes one use of join token `id` inside the caller's transaction. The outer error is
/// the store's; the inner one why the token cannot be used.
fn consume_token(
    conn: &Connection,
    id: &str,
    now: Millis,
) -> Result<Result<JoinTokenRecord, ConsumeError>, StoreError> {
    // One conditional UPDATE does the check and the increment, so concurrent consumers
    // (other processes included) cannot both take the last use.
    let consumed = query_opt(
        conn,
        &format!(
            "UPDATE join_tokens SET uses = uses + 1
             WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2
               AND (uses_allowed IS NULL OR uses < uses_allowed)
             RETURNING {TOKEN_COLS}"
        ),
        params![id, now],
        token_row,
        "consuming join token",
    )?;
    if let Some(rec) = consumed {
        return Ok(Ok(rec));
    }
    let current = query_opt(
        conn,
        &format!("SELECT {TOKEN_COLS} FROM join_tokens WHERE id = ?1"),
        [id],
        token_row,
        "looking up join token",
    )?;
    Ok(Err(match current {
        None => ConsumeError::NotFound,
        Some(t) if t.revoked_at.is_some() => ConsumeError::Revoked,
        Some(t) if t.expires_at <= now => ConsumeError::Expired,
        Some(_) => ConsumeError::Exhausted,
    }))
}

/// A new offline node with the default tunnel mode and no facts yet.
fn new_node(id: String, tenant_id: &str, name: &str, labels: &Labels) -> Node {
    Node {
        id,
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        labels: labels.clone(),
        status: NodeStatus::Offline,
        last_seen: None,
        agent_version: None,
        os: None,
        hostname: None,
        addresses: Vec::new(),
        cert_serial: None,
        cert_not_after: None,
        tunnel_mode: DEFAULT_TUNNEL_MODE.to_owned(),
        revoked_at: None,
        created_at: crate::now_millis(),
        actions: Vec::new(),
    }
}

fn insert_node(conn: &Connection, node: &Node) -> Result<(), StoreError> {
    let labels_json = to_json(&node.labels, "node labels")?;
    conn.execute(
        "INSERT INTO nodes (id, tenant_id, name, labels, status, addresses, tunnel_mode,
                            created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, '[]', ?6, ?7)",
        params![
            node.id,
            node.tenant_id,
            node.name,
            labels_json,
            node.status.as_str(),
            node.tunnel_mode,
            node.created_at
        ],
    )
    .map_err(|e| {
        insert_error(
            e,
            || format!("node {:?} in tenant {}", node.name, node.tenant_id),
            || format!("tenant {}", node.tenant_id),
            "creating node",
        )
    })?;
    Ok(())
}

fn insert_certificate(conn: &Connection, rec: &CertificateRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO certificates ({CERT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            rec.serial,
            rec.tenant_id,
            rec.node_id,
            rec.issued_at,
            rec.not_after,
            rec.revoked_at
        ],
    )
    .map_err(|e| {
        insert_error(
            e,
            || format!("certificate serial {}", rec.serial),
            || format!("node {} in tenant {}", rec.node_id, rec.tenant_id),
            "recording certificate",
        )
    })?;
    Ok(())
}

fn insert_audit(conn: &Connection, event: &AuditEvent) -> Result<i64, StoreError> {
    let detail = to_json(&event.detail, "audit detail")?;
    conn.prepare_cached(
        "INSERT INTO audit_events (time, tenant_id, actor, source, node_id, session_id,
                                   action, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            event.time,
            event.tenant_id,
            event.actor,
            event.source,
            event.node_id,
            event.session_id,
            event.action,
            event.outcome,
            detail
        ])
    })
    .map_err(backend("appending audit event"))?;
    Ok(conn.last_insert_rowid())
}

const SET_NODE_STATUS: &str = "UPDATE nodes SET status = ?2, last_seen = ?3 WHERE id = ?1";
/// One node's reported facts (`?1` id, then version, os, hostname, addresses, mode,
/// actions).
const SET_NODE_FACTS: &str = "UPDATE nodes SET agent_version = ?2, os = ?3, hostname = ?4, \
                              addresses = ?5, tunnel_mode = ?6, actions = ?7 WHERE id = ?1";

const ISSUED_COLS: &str = "id, tenant_id, kind, subject, name, created_by, created_at, \
                           expires_at, instances, revoked_at, created_by_id";

fn issued_row(row: &Row<'_>) -> Result<IssuedToken, StoreError> {
    const W: &str = "issued token";
    let id: String = col(row, 0, W)?;
    let kind: String = col(row, 2, W)?;
    let kind = TokenKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("token {id}: kind '{kind}'")))?;
    let instances: Option<i64> = col(row, 8, W)?;
    let instances = instances
        .map(|v| {
            u8::try_from(v).map_err(|_| StoreError::Corrupt(format!("token {id}: instances {v}")))
        })
        .transpose()?;
    Ok(IssuedToken {
        tenant_id: col(row, 1, W)?,
        kind,
        subject: col(row, 3, W)?,
        name: col(row, 4, W)?,
        created_by: col(row, 5, W)?,
        created_at: col(row, 6, W)?,
        expires_at: col(row, 7, W)?,
        instances,
        revoked_at: col(row, 9, W)?,
        created_by_id: col(row, 10, W)?,
        id,
    })
}
