//! Versioned schema migrations for SQLite.
//!
//! `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`. Each is applied in its own
//! transaction together with its `schema_migrations` row, so a crash leaves the database at a
//! whole version. Append only: never edit a migration that has shipped.
//!
//! Version 2 adds `remote_access` (seed 000 `RemoteAccessConfiguration`).
//!
//! Version 5 adds per-scope policies, node actions and per-node command counts.
//!
//! Version 6 adds the indexes that keep per-stream, per-enrolment, per-connect and
//! start-up queries index lookups however many nodes, sessions and events the store holds
//! (`sqlite::plans` checks every such query's plan over a large store).
//!
//! Planned next migrations (kept out until their crates need them): proxies (id, address,
//! heartbeat) for peering.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::StoreError;

/// Schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) const MIGRATIONS: &[&str] = &[
    V1_INITIAL,
    V2_REMOTE_ACCESS,
    V3_ISSUED_TOKENS,
    V4_CREDENTIALS_CHANGED,
    V5_POLICIES_ACTIONS_COMMANDS,
    V6_FLEET_INDEXES,
    V7_CREATOR_IDS,
    V8_ENROLLED_WITH,
];

const V1_INITIAL: &str = r#"
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    -- Target of composite foreign keys: a child row can only point at a user of its own tenant.
    UNIQUE (tenant_id, id)
);
CREATE INDEX users_by_name ON users(name);

CREATE TABLE role_bindings (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    selector    TEXT NOT NULL,             -- JSON object of label -> value
    created_at  INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX role_bindings_by_user ON role_bindings(tenant_id, user_id);

CREATE TABLE join_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    secret_hash   TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    uses_allowed  INTEGER CHECK (uses_allowed IS NULL OR uses_allowed >= 0),
    uses          INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    labels        TEXT NOT NULL,            -- JSON object
    revoked_at    INTEGER,
    CHECK (uses_allowed IS NULL OR uses <= uses_allowed)
);
CREATE INDEX join_tokens_by_tenant ON join_tokens(tenant_id, created_at);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    labels          TEXT NOT NULL,          -- JSON object
    status          TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    last_seen       INTEGER,
    agent_version   TEXT,
    os              TEXT,
    hostname        TEXT,
    addresses       TEXT NOT NULL DEFAULT '[]',  -- JSON array
    cert_serial     TEXT,
    cert_not_after  INTEGER,
    tunnel_mode     TEXT NOT NULL DEFAULT 'persistent',
    revoked_at      INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, id)
);
-- A revoked node's name may be reused by a new enrolment.
CREATE UNIQUE INDEX nodes_live_name ON nodes(tenant_id, name) WHERE revoked_at IS NULL;

CREATE TABLE certificates (
    serial      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    revoked_at  INTEGER,
    FOREIGN KEY (tenant_id, node_id) REFERENCES nodes(tenant_id, id)
);
CREATE INDEX certificates_by_node ON certificates(tenant_id, node_id);

-- No foreign key on tenant_id: recording an event must not fail because of what it is about
-- (e.g. a denied login naming an unknown tenant).
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    time        INTEGER NOT NULL,
    tenant_id   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    source      TEXT,
    node_id     TEXT,
    session_id  TEXT,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL                -- JSON value
);
CREATE INDEX audit_by_tenant_seq ON audit_events(tenant_id, seq);
CREATE INDEX audit_by_tenant_time ON audit_events(tenant_id, time);

-- Append-only, whoever holds the file: refuse UPDATE and DELETE, and refuse an INSERT that
-- reuses a seq (INSERT OR REPLACE would otherwise delete the old row without firing the
-- DELETE trigger, since recursive_triggers is off by default).
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
END;
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN NEW.seq IS NOT NULL AND EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: seq reuse refused');
END;
"#;

/// Seed 000 `RemoteAccessConfiguration`, plus the kind of access, its target, whether the
/// proxy allocates an endpoint, and the source networks allowed to use it.
const V2_REMOTE_ACCESS: &str = r#"
CREATE TABLE remote_access (
    resource_id     TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    instance        TEXT NOT NULL,
    expiration_timestamp  INTEGER NOT NULL,
    local_port      INTEGER CHECK (local_port IS NULL OR local_port BETWEEN 1 AND 65535),
    login_user      TEXT,
    kind            TEXT NOT NULL,
    target          TEXT NOT NULL,
    endpoint        INTEGER NOT NULL CHECK (endpoint IN (0, 1)),
    allowed_cidrs   TEXT NOT NULL DEFAULT '[]',   -- JSON array of "ip/prefix"
    desired_state   TEXT NOT NULL CHECK (desired_state IN (
        'REMOTE_ACCESS_STATE_UNSPECIFIED', 'REMOTE_ACCESS_STATE_DELETED',
        'REMOTE_ACCESS_STATE_ERROR', 'REMOTE_ACCESS_STATE_CONFIGURED',
        'REMOTE_ACCESS_STATE_STARTED')),
    current_state   TEXT NOT NULL CHECK (current_state IN (
        'REMOTE_ACCESS_STATE_UNSPECIFIED', 'REMOTE_ACCESS_STATE_DELETED',
        'REMOTE_ACCESS_STATE_ERROR', 'REMOTE_ACCESS_STATE_CONFIGURED',
        'REMOTE_ACCESS_STATE_STARTED')),
    configuration_status            TEXT NOT NULL,
    configuration_status_indicator  TEXT NOT NULL
        CHECK (configuration_status_indicator IN ('IDLE', 'IN_PROGRESS', 'ERROR')),
    configuration_status_timestamp  INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- The node must be one of the configuration's own tenant.
    FOREIGN KEY (tenant_id, instance) REFERENCES nodes(tenant_id, id)
);
CREATE INDEX remote_access_by_state ON remote_access(tenant_id, current_state);
CREATE INDEX remote_access_by_created ON remote_access(tenant_id, created_at);
-- What the reconcile loop reads on every pass: the live rows of every tenant.
CREATE INDEX remote_access_live ON remote_access(current_state)
    WHERE current_state <> 'REMOTE_ACCESS_STATE_DELETED';
"#;

/// Brings the database to [`SCHEMA_VERSION`], refusing one that is newer.
const V3_ISSUED_TOKENS: &str = r#"
-- Long-lived bearer tokens the control plane signed and must be able to revoke:
-- Edge-View session tokens (kind 'session', subject = node id) and API tokens
-- for automation (kind 'api', subject = user id). `id` is the JWT's `jti`; a
-- token whose row is missing or revoked is refused (fail closed).
CREATE TABLE issued_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    subject     TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    instances   INTEGER CHECK (instances IS NULL OR instances BETWEEN 1 AND 255),
    revoked_at  INTEGER
);
CREATE INDEX issued_tokens_by_tenant ON issued_tokens(tenant_id, kind, created_at);
"#;

const V4_CREDENTIALS_CHANGED: &str = r#"
-- When the user's password last changed (unix ms; 0 = never): access tokens issued
-- before it are refused, so a changed password logs out every other session.
ALTER TABLE users ADD COLUMN credentials_changed_at INTEGER NOT NULL DEFAULT 0;
"#;

const V5_POLICIES_ACTIONS_COMMANDS: &str = r#"
-- Device actions the node's agent reported (JSON array of {name, description, destructive}).
ALTER TABLE nodes ADD COLUMN actions TEXT NOT NULL DEFAULT '[]';

-- Access policies per scope: the tenant (scope_key ''), a project (scope_key = the
-- canonical label selector 'k=v,k2=v2') or a node (scope_key = its id). `rules` is a JSON
-- object of the flags and lists the scope sets; what it leaves out is inherited.
CREATE TABLE policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    level       TEXT NOT NULL CHECK (level IN ('tenant', 'project', 'node')),
    scope_key   TEXT NOT NULL,
    rules       TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, level, scope_key),
    CHECK ((level = 'tenant') = (scope_key = ''))
);

-- Commands (streams) relayed to each node, by access class, and the last one.
CREATE TABLE node_commands (
    node_id      TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    device       INTEGER NOT NULL DEFAULT 0 CHECK (device >= 0),
    app          INTEGER NOT NULL DEFAULT 0 CHECK (app >= 0),
    external     INTEGER NOT NULL DEFAULT 0 CHECK (external >= 0),
    last_kind    TEXT,
    last_what    TEXT,
    last_actor   TEXT,
    last_source  TEXT,
    last_at      INTEGER,
    FOREIGN KEY (tenant_id, node_id) REFERENCES nodes(tenant_id, id)
);
CREATE INDEX node_commands_by_tenant ON node_commands(tenant_id);
"#;

const V6_FLEET_INDEXES: &str = r#"
-- A node by name, revoked ones included (the partial nodes_live_name cannot serve a
-- lookup that does not say `revoked_at IS NULL`); newest first within a name.
CREATE INDEX nodes_by_name ON nodes(tenant_id, name, created_at);
-- Start-up marks the nodes still online offline: only those rows are visited.
CREATE INDEX nodes_not_offline ON nodes(status) WHERE status <> 'offline';
-- The reconcile loop's live sessions, read in the order it wants (replaces
-- remote_access_live, which made every pass sort them).
DROP INDEX remote_access_live;
CREATE INDEX remote_access_live_by_created ON remote_access(created_at)
    WHERE current_state <> 'REMOTE_ACCESS_STATE_DELETED';
-- One node's sessions (the on-demand long poll, `adit access ls --node`), newest first.
CREATE INDEX remote_access_by_instance ON remote_access(tenant_id, instance, created_at);
-- One user's role bindings in order (every authenticated request reads them).
CREATE INDEX role_bindings_by_user_created ON role_bindings(tenant_id, user_id, created_at, id);
-- One node's audit trail (`adit audit ls --node`), in order.
CREATE INDEX audit_by_tenant_node_seq ON audit_events(tenant_id, node_id, seq);
"#;

const V7_CREATOR_IDS: &str = r#"
-- Who issued a token or created a session, by immutable user id: credentials derived
-- from a user stop when that user is disabled, deleted or loses the role. Rows written
-- before this version have '' and are refused / ended.
ALTER TABLE issued_tokens ADD COLUMN created_by_id TEXT NOT NULL DEFAULT '';
ALTER TABLE remote_access ADD COLUMN created_by_id TEXT NOT NULL DEFAULT '';
"#;

const V8_ENROLLED_WITH: &str = r#"
-- What a node enrolled with: `TOKEN_ID KEY_FINGERPRINT`. An enrolment retried with the
-- same join token and key (its answer was lost) gets the node again instead of "name
-- taken". Nodes enrolled before this version have '' and cannot be re-enrolled that way.
ALTER TABLE nodes ADD COLUMN enrolled_with TEXT NOT NULL DEFAULT '';
"#;

pub(crate) fn migrate(conn: &mut Connection, now: i64) -> Result<(), StoreError> {
    let ctx = |what: &str| {
        let what = what.to_owned();
        move |e: rusqlite::Error| StoreError::Backend(format!("{what}: {e}"))
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     INTEGER PRIMARY KEY,
             applied_at  INTEGER NOT NULL
         )",
    )
    .map_err(ctx("creating schema_migrations"))?;

    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        // IMMEDIATE takes the write lock before reading the version, so two processes opening
        // the same file cannot both apply a migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("starting migration transaction"))?;
        let current = current_version(&tx)?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(ctx(&format!("applying schema migration {version}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            (version, now),
        )
        .map_err(ctx(&format!("recording schema migration {version}")))?;
        tx.commit()
            .map_err(ctx(&format!("committing schema migration {version}")))?;
    }

    let current = current_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Highest applied migration, 0 for a fresh database.
pub(crate) fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
        row.get::<_, Option<i64>>(0)
    })
    .optional()
    .map(|v| v.flatten().unwrap_or(0))
    .map_err(|e| StoreError::Backend(format!("reading schema version: {e}")))
}
