//! SQLite-specific tests, plus the conformance suite run against an in-memory and a
//! file-backed store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

use super::{SqliteStore, SCHEMA_VERSION};
use crate::{AuditEvent, AuditFilter, Labels, Store, StoreError};

/// A scratch directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("adit-store-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("adit.db")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().unwrap())
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        const WIRED: &[&str] = &[$(stringify!($case)),*];

        mod memory {
            $(
                #[test]
                fn $case() {
                    crate::testsuite::$case(super::memory_store());
                }
            )*
        }

        mod file {
            $(
                #[test]
                fn $case() {
                    let dir = super::ScratchDir::new();
                    let store = super::SqliteStore::open(&dir.db()).unwrap();
                    crate::testsuite::$case(std::sync::Arc::new(store));
                }
            )*
        }
    };
}

conformance!(
    tenants_round_trip,
    users_round_trip,
    role_bindings_round_trip,
    join_tokens_round_trip,
    consume_join_token_rules,
    consume_join_token_race,
    enroll_node_is_all_or_nothing,
    nodes_round_trip,
    certificates_round_trip,
    audit_round_trip_and_filters,
    audit_batches,
    tenant_isolation,
    remote_access_round_trip,
    remote_access_status_update,
    remote_access_tenant_isolation,
    remote_access_active_across_tenants,
    issued_tokens_round_trip,
    presence_batches,
    policies_round_trip,
    node_commands_count,
);

#[test]
fn every_conformance_case_is_wired() {
    let cases: Vec<_> = crate::testsuite::CASES
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(cases, WIRED);
}

fn applied_versions(path: &Path) -> Vec<i64> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    let rows = stmt.query_map([], |row| row.get(0)).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn migrations_apply_on_fresh_database() {
    let dir = ScratchDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 1) };
    assert_eq!(
        applied_versions(&dir.db()),
        (1..=SCHEMA_VERSION).collect::<Vec<_>>()
    );

    let mem = SqliteStore::open_in_memory().unwrap();
    assert_eq!(mem.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn reopen_is_idempotent_and_keeps_data() {
    let dir = ScratchDir::new();
    let tenant = {
        let store = SqliteStore::open(&dir.db()).unwrap();
        store.create_tenant("acme").unwrap()
    };
    let applied_at: Vec<i64> = {
        let conn = Connection::open(dir.db()).unwrap();
        let mut stmt = conn
            .prepare("SELECT applied_at FROM schema_migrations")
            .unwrap();
        let rows = stmt.query_map([], |row| row.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    for _ in 0..2 {
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.tenant_by_name("acme").unwrap(), Some(tenant.clone()));
    }
    let conn = Connection::open(dir.db()).unwrap();
    let mut stmt = conn
        .prepare("SELECT applied_at FROM schema_migrations")
        .unwrap();
    let again: Vec<i64> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(again, applied_at, "no migration re-applied");
}

#[test]
fn newer_schema_is_refused() {
    let dir = ScratchDir::new();
    drop(SqliteStore::open(&dir.db()).unwrap());
    let future = SCHEMA_VERSION + 7;
    Connection::open(dir.db())
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
            [future],
        )
        .unwrap();
    let err = SqliteStore::open(&dir.db()).err().expect("must refuse");
    assert_eq!(
        err,
        StoreError::SchemaTooNew {
            found: future,
            supported: SCHEMA_VERSION
        }
    );
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[test]
fn connection_is_configured_for_durability() {
    let dir = ScratchDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let conn = store.lock();
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    let busy: i64 = conn
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .unwrap();
    assert_eq!(journal.to_lowercase(), "wal");
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(fk, 1);
    assert_eq!(busy, 5_000);
}

#[cfg(unix)]
#[test]
fn database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = ScratchDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    store.create_tenant("acme").unwrap();
    let mode = std::fs::metadata(dir.db()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let wal = dir.0.join("adit.db-wal");
    if wal.exists() {
        let mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "WAL file is not readable by others: {mode:o}"
        );
    }
}

#[test]
fn missing_directory_gives_a_clear_error() {
    let dir = ScratchDir::new();
    let path = dir.0.join("no-such-dir").join("adit.db");
    let err = SqliteStore::open(&path).err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("no-such-dir"), "{msg}");
}

fn sample_event(tenant: &str) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: 42,
        tenant_id: tenant.to_owned(),
        actor: "alice".into(),
        source: None,
        node_id: None,
        session_id: None,
        action: "login".into(),
        outcome: "ok".into(),
        detail: serde_json::json!({"k": "v"}),
    }
}

#[test]
fn audit_rows_cannot_be_changed_with_raw_sql() {
    let dir = ScratchDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let t = store.create_tenant("acme").unwrap();
    let seq = store.append_audit(&sample_event(&t.id)).unwrap();
    let before = store.list_audit(&t.id, &AuditFilter::default()).unwrap();

    let attempts = [
        "UPDATE audit_events SET actor = 'mallory'".to_owned(),
        "UPDATE audit_events SET detail = '{}' WHERE seq = 1".to_owned(),
        "DELETE FROM audit_events".to_owned(),
        format!("DELETE FROM audit_events WHERE seq = {seq}"),
        format!(
            "INSERT OR REPLACE INTO audit_events
               (seq, time, tenant_id, actor, action, outcome, detail)
             VALUES ({seq}, 0, '{}', 'mallory', 'login', 'ok', '{{}}')",
            t.id
        ),
    ];
    // Through a separate connection, as anyone holding the file could.
    let raw = Connection::open(dir.db()).unwrap();
    for sql in &attempts {
        let err = raw.execute(sql, []).expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // And through the store's own connection.
    {
        let conn = store.lock();
        for sql in &attempts {
            assert!(conn.execute(sql, []).is_err(), "{sql}");
        }
    }
    assert_eq!(
        store.list_audit(&t.id, &AuditFilter::default()).unwrap(),
        before
    );
    // Appending still works.
    assert!(store.append_audit(&sample_event(&t.id)).unwrap() > seq);
}

#[test]
fn undecodable_json_is_reported_as_corrupt() {
    let store = SqliteStore::open_in_memory().unwrap();
    let t = store.create_tenant("acme").unwrap();
    let n = store.create_node(&t.id, "n1", &Labels::new()).unwrap();
    store
        .lock()
        .execute(
            "UPDATE nodes SET labels = 'not json' WHERE id = ?1",
            [&n.id],
        )
        .unwrap();
    match store.node(&t.id, &n.id) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains(&n.id), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.list_nodes(&t.id),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn store_is_object_safe_and_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SqliteStore>();
    let store: Arc<dyn Store> = memory_store();
    let clone = Arc::clone(&store);
    std::thread::spawn(move || clone.create_tenant("from-thread").unwrap())
        .join()
        .unwrap();
    assert!(store.tenant_by_name("from-thread").unwrap().is_some());
}

/// Separate connections (as separate server processes would have) racing on one file: the
/// database itself, not the in-process mutex, must keep the use count.
#[test]
fn consume_join_token_race_across_connections() {
    const CONNECTIONS: usize = 8;
    let dir = ScratchDir::new();
    let setup = SqliteStore::open(&dir.db()).unwrap();
    let t = setup.create_tenant("acme").unwrap();
    setup
        .create_join_token(&crate::JoinTokenRecord {
            id: "shared".into(),
            tenant_id: t.id.clone(),
            secret_hash: "h".into(),
            created_by: "admin".into(),
            created_at: 0,
            expires_at: 10_000,
            uses_allowed: Some(3),
            uses: 0,
            labels: Labels::new(),
            revoked_at: None,
        })
        .unwrap();
    let stores: Vec<_> = (0..CONNECTIONS)
        .map(|_| SqliteStore::open(&dir.db()).unwrap())
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(CONNECTIONS));
    let handles: Vec<_> = stores
        .into_iter()
        .map(|store| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                (0..3)
                    .map(|_| store.consume_join_token("shared", 1_000))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(crate::ConsumeError::Exhausted))));
    assert_eq!(setup.join_token(&t.id, "shared").unwrap().unwrap().uses, 3);
}

#[test]
fn version_1_database_gains_remote_access_and_keeps_rows() {
    let dir = ScratchDir::new();
    {
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);",
        )
        .unwrap();
        conn.execute_batch(super::schema::MIGRATIONS[0]).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'old', 1)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let t = store.tenant_by_name("old").unwrap().unwrap();
    let n = store.create_node(&t.id, "n", &Labels::new()).unwrap();
    let r = store
        .create_remote_access(&crate::NewRemoteAccess {
            tenant_id: t.id.clone(),
            instance: n.id.clone(),
            expiration_timestamp: 1,
            user: None,
            kind: "tcp".into(),
            target: "127.0.0.1:22".into(),
            endpoint: false,
            allowed_cidrs: vec![],
            created_by: "root".into(),
            created_by_id: "root-id".into(),
        })
        .unwrap();
    assert!(crate::testsuite::is_remote_access_id(&r.resource_id));
    // The CHECK constraints hold even for raw SQL.
    let conn = Connection::open(dir.db()).unwrap();
    assert!(conn
        .execute(
            "UPDATE remote_access SET current_state = 'BOGUS' WHERE resource_id = ?1",
            [&r.resource_id],
        )
        .is_err());
    assert!(conn
        .execute(
            "UPDATE remote_access SET local_port = 70000 WHERE resource_id = ?1",
            [&r.resource_id],
        )
        .is_err());
}
