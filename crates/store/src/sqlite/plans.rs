//! Query plans of every store call on a hot path, over a store the size of a big fleet.
//!
//! A stream, an enrolment, an agent connecting, an on-demand poll, a reconcile pass and a
//! server start each make a few store calls. None of them may cost more because other
//! nodes, sessions or events exist: each statement they run must be an index search, never
//! a scan of a table (or of a whole index), never a search that narrows only to the tenant
//! (one tenant may hold the whole fleet) and never a sort through a temporary B-tree.
//!
//! The test fills a store with 100,000 nodes (with certificates), 1,000,000 audit events,
//! 10,000 ended sessions and 1,000 node policies, runs the real store methods of each path
//! with SQLite's profile hook on (which reports every statement run), and asks SQLite for
//! the plan of each statement as it was prepared.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rusqlite::Connection;

use super::SqliteStore;
use crate::model::{
    AuditEvent, CertificateRecord, IssuedToken, LastCommand, NewEnrollment, NewRemoteAccess,
    NodeCommands, NodeFacts, NodeStatus, PresenceUpdate, RemoteAccessFilter, RemoteAccessState,
    StatusIndicator, TokenKind,
};
use crate::{Labels, Store};

const NODES: u32 = 100_000;
const AUDIT_EVENTS: u32 = 1_000_000;
const ENDED_SESSIONS: u32 = 10_000;
const NODE_POLICIES: u32 = 1_000;

/// Statements the profile hook saw since the last [`take_traced`].
static TRACED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// SQLite's profile hook gets each statement's text as prepared, with its `?N`
/// parameters unbound: the text SQLite planned. (The trace hook gives the text with the
/// values bound, which lets the planner fold `?2 IS NULL OR x = ?2` into `x = 'v'` and
/// so hides what the prepared statement really does.)
fn trace(sql: &str, _took: std::time::Duration) {
    TRACED.lock().unwrap().push(sql.to_owned());
}

fn take_traced() -> Vec<String> {
    std::mem::take(&mut *TRACED.lock().unwrap())
}

/// Whether `index` is a partial index (`CREATE INDEX ... WHERE ...`): scanning one reads
/// only the rows it was made for (e.g. the nodes still online), not the table.
fn is_partial(conn: &Connection, index: &str) -> bool {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
        [index],
        |row| row.get::<_, Option<String>>(0),
    )
    .ok()
    .flatten()
    .is_some_and(|sql| sql.to_ascii_uppercase().contains(" WHERE "))
}

/// What is wrong with the plan of `sql`, if anything: a full scan (of a table or of a
/// whole index; a partial index is fine), a search on the tenant alone, or a temporary
/// sort.
fn plan_problems(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("cannot explain {sql}: {e}"));
    // Parameters stay unbound (NULL), as when SQLite prepared the statement.
    let mut rows = stmt.raw_query();
    let mut details = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        details.push(row.get::<_, String>(3).unwrap());
    }
    details
        .into_iter()
        .filter(|d| {
            let partial_scan = d
                .split_once(" USING INDEX ")
                .is_some_and(|(_, index)| is_partial(conn, index.split(' ').next().unwrap_or("")));
            // A search on the tenant alone reads every row the tenant has: with one big
            // tenant, the whole fleet. (Users grow with people, not devices: the start-up
            // check for a first admin may read them.)
            let tenant_only = d.starts_with("SEARCH ")
                && d.ends_with(" (tenant_id=?)")
                && !d.starts_with("SEARCH users ");
            (d.starts_with("SCAN ") && d != "SCAN CONSTANT ROW" && !partial_scan)
                || d.contains("TEMP B-TREE")
                || tenant_only
        })
        .collect()
}

/// The statements a path ran that are worth planning: not transaction control, and not
/// the trigger bodies the trace reports as comments.
fn planned(statements: Vec<String>) -> Vec<String> {
    statements
        .into_iter()
        .filter(|s| {
            let head = s.trim_start().to_ascii_uppercase();
            !(head.starts_with("--")
                || head.starts_with("BEGIN")
                || head.starts_with("COMMIT")
                || head.starts_with("ROLLBACK")
                || head.starts_with("SAVEPOINT")
                || head.starts_with("RELEASE")
                || head.starts_with("PRAGMA"))
        })
        .collect()
}

/// No `ANALYZE`: the server never runs it, so the plans without statistics are the ones it
/// gets.
///
/// 100,000 nodes in tenant `t-big` (node `n000042` is named `node-42`; every tenth is
/// revoked and its name reused by a live node created later), one certificate each,
/// 1,000,000 audit events, ended sessions and node policies.
fn fill(store: &SqliteStore) {
    let conn = store.lock();
    conn.execute_batch(&format!(
        "BEGIN;
         INSERT INTO tenants (id, name, created_at) VALUES ('t-big', 'big', 0), ('t-small', 'small', 0);
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {NODES})
         INSERT INTO nodes (id, tenant_id, name, labels, status, created_at, revoked_at, cert_serial)
         SELECT printf('n%06d', x), 't-big', 'node-' || (x / 2), '{{\"site\":\"s' || (x % 50) || '\"}}',
                CASE WHEN x % 3 = 0 THEN 'online' ELSE 'offline' END, x,
                CASE WHEN x % 2 = 0 THEN x ELSE NULL END, printf('c%06d', x)
         FROM n;
         INSERT INTO certificates (serial, tenant_id, node_id, issued_at, not_after)
         SELECT cert_serial, tenant_id, id, created_at, 4000000000000 FROM nodes;
         WITH RECURSIVE a(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM a WHERE x < {AUDIT_EVENTS})
         INSERT INTO audit_events (time, tenant_id, actor, node_id, action, outcome, detail)
         SELECT x, 't-big', 'user' || (x % 100), printf('n%06d', 1 + x % {NODES}), 'stream.open',
                'ok', '{{}}'
         FROM a;
         WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {ENDED_SESSIONS})
         INSERT INTO remote_access (resource_id, tenant_id, instance, expiration_timestamp, kind,
                target, endpoint, desired_state, current_state, configuration_status,
                configuration_status_indicator, configuration_status_timestamp, created_by,
                created_at, updated_at)
         SELECT printf('rmtacconf-%08d', x), 't-big', printf('n%06d', 1 + (x * 7) % {NODES}), x,
                'tcp', '127.0.0.1:22', 0, 'REMOTE_ACCESS_STATE_DELETED',
                'REMOTE_ACCESS_STATE_DELETED', 'deleted', 'IDLE', x, 'admin', x, x
         FROM s;
         WITH RECURSIVE p(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM p WHERE x < {NODE_POLICIES})
         INSERT INTO policies (tenant_id, level, scope_key, rules, updated_by, updated_at)
         SELECT 't-big', 'node', printf('n%06d', x * 97), '{{}}', 'admin', x FROM p;
         INSERT INTO policies (tenant_id, level, scope_key, rules, updated_by, updated_at)
         VALUES ('t-big', 'tenant', '', '{{}}', 'admin', 0),
                ('t-big', 'project', 'site=s1', '{{}}', 'admin', 0);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
         INSERT INTO node_commands (node_id, tenant_id, device, app, external)
         SELECT printf('n%06d', x * 5), 't-big', x, 0, 0 FROM c;
         WITH RECURSIVE u(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM u WHERE x < 1000)
         INSERT INTO users (id, tenant_id, name, password_hash, created_at)
         SELECT printf('u%04d', x), 't-big', printf('user%04d', x), 'x', x FROM u;
         INSERT INTO role_bindings (id, tenant_id, user_id, role, selector, created_at)
         SELECT 'b' || id, tenant_id, id, 'operator', '{{}}', created_at FROM users;
         WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < 10000)
         INSERT INTO issued_tokens (id, tenant_id, kind, subject, name, created_by, created_at,
                expires_at, instances)
         SELECT printf('jti-%05d', x), 't-big', 'session', printf('n%06d', x), 'tok', 'u0001', x,
                4000000000000, 1 FROM k;
         INSERT INTO join_tokens (id, tenant_id, secret_hash, created_by, created_at, expires_at,
                labels)
         VALUES ('jt-1', 't-big', 'h', 'admin', 0, 4000000000000, '{{}}');
         COMMIT;"
    ))
    .unwrap();
}

fn event(node: Option<&str>) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: 5,
        tenant_id: "t-big".into(),
        actor: "user0001".into(),
        source: Some("127.0.0.1:1".into()),
        node_id: node.map(str::to_owned),
        session_id: None,
        action: "stream.open".into(),
        outcome: "ok".into(),
        detail: serde_json::json!({}),
    }
}

fn facts() -> NodeFacts {
    NodeFacts {
        agent_version: Some("1".into()),
        os: Some("linux".into()),
        hostname: Some("h".into()),
        addresses: vec![],
        tunnel_mode: "persistent".into(),
        actions: vec![],
    }
}

/// Each hot path, by name, as the server runs it.
fn run_paths(store: &SqliteStore) -> BTreeMap<&'static str, Vec<String>> {
    let mut paths = BTreeMap::new();
    let mut path = |name: &'static str, run: &mut dyn FnMut()| {
        take_traced();
        run();
        paths.insert(name, planned(take_traced()));
    };
    path("stream: authenticate the caller", &mut || {
        store.tenant("t-big").unwrap().unwrap();
        store.user("t-big", "u0001").unwrap().unwrap();
        store.list_role_bindings("t-big", Some("u0001")).unwrap();
        store.issued_token("t-big", "jti-00042").unwrap().unwrap();
    });
    path("stream: find the node by id", &mut || {
        store
            .node_by_id_or_name("t-big", "n000043")
            .unwrap()
            .unwrap();
        store.node("t-big", "n000043").unwrap().unwrap();
    });
    path("stream: find the node by live name", &mut || {
        let n = store
            .node_by_id_or_name("t-big", "node-21")
            .unwrap()
            .unwrap();
        assert_eq!((n.id.as_str(), n.revoked_at), ("n000043", None));
    });
    path("stream: find the node by revoked name", &mut || {
        let n = store
            .node_by_id_or_name("t-big", "node-50000")
            .unwrap()
            .unwrap();
        assert_eq!(n.id, "n100000");
        assert!(store.node_by_id_or_name("t-big", "nope").unwrap().is_none());
    });
    path("stream: the node's policies", &mut || {
        let got = store.policies_for_node("t-big", "n000097").unwrap();
        assert_eq!(got.len(), 3, "tenant, project and the node's own");
    });
    path("stream: audit and command counts", &mut || {
        store
            .append_audit_batch(&[event(Some("n000043")), event(None)])
            .unwrap();
        let last = LastCommand {
            kind: "tcp".into(),
            what: "127.0.0.1:22".into(),
            actor: "user0001".into(),
            source: None,
            at: 5,
        };
        let counts = |node: &str| NodeCommands {
            node_id: node.into(),
            device: 1,
            app: 0,
            external: 0,
            last: Some(last.clone()),
        };
        store
            .apply_node_commands(&[
                ("t-big".into(), counts("n000005")),
                ("t-big".into(), counts("n000043")),
            ])
            .unwrap();
    });
    path("stream: session endpoint and session token", &mut || {
        store.remote_access("t-big", "rmtacconf-00000042").unwrap();
        store.node_any_tenant("n000043").unwrap().unwrap();
    });
    path("enrolment", &mut || {
        store.join_token_any_tenant("jt-1").unwrap().unwrap();
        store.node_by_id_or_name("t-big", "fresh").unwrap();
        let now = 7;
        store
            .enroll_node(&NewEnrollment {
                token_id: "jt-1".into(),
                now,
                node_id: "n-fresh".into(),
                tenant_id: "t-big".into(),
                name: "fresh".into(),
                labels: Labels::new(),
                facts: facts(),
                cert: CertificateRecord {
                    serial: "c-fresh".into(),
                    tenant_id: "t-big".into(),
                    node_id: "n-fresh".into(),
                    issued_at: now,
                    not_after: 4_000_000_000_000,
                    revoked_at: None,
                },
                enrolled_with: "jt-1 sha256:00".into(),
                audit: event(None),
            })
            .unwrap();
        // A retried enrolment: what the node enrolled with, then a new certificate.
        store.node_enrolled_with("n-fresh").unwrap().unwrap();
        store
            .reissue_enrollment(
                &CertificateRecord {
                    serial: "c-fresh-2".into(),
                    tenant_id: "t-big".into(),
                    node_id: "n-fresh".into(),
                    issued_at: now,
                    not_after: 4_000_000_000_000,
                    revoked_at: None,
                },
                Some("c-fresh"),
                &event(None),
            )
            .unwrap();
    });
    path("agent connect and renewal", &mut || {
        assert!(!store.is_serial_revoked("c000043").unwrap());
        store.node_any_tenant("n000043").unwrap().unwrap();
        store.certificate("c000043").unwrap().unwrap();
        store
            .record_certificate(&CertificateRecord {
                serial: "c-renewed".into(),
                tenant_id: "t-big".into(),
                node_id: "n000043".into(),
                issued_at: 8,
                not_after: 4_000_000_000_000,
                revoked_at: None,
            })
            .unwrap();
        store
            .set_node_cert("n000043", "c-renewed", 4_000_000_000_000)
            .unwrap();
    });
    path("presence (connect, disconnect, facts)", &mut || {
        store
            .apply_presence(&[
                PresenceUpdate::Status {
                    node_id: "n000043".into(),
                    status: NodeStatus::Online,
                    at: 9,
                },
                PresenceUpdate::Facts {
                    node_id: "n000043".into(),
                    facts: facts(),
                },
            ])
            .unwrap();
    });
    path("on-demand poll", &mut || {
        store.node_any_tenant("n000007").unwrap().unwrap();
        let rows = store
            .list_remote_access(
                "t-big",
                &RemoteAccessFilter {
                    instance: Some("n000007".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(rows.is_empty(), "ended sessions are not live");
    });
    path("sessions: create, reconcile, end", &mut || {
        let ra = store
            .create_remote_access(&NewRemoteAccess {
                tenant_id: "t-big".into(),
                instance: "n000043".into(),
                expiration_timestamp: 4_000_000_000_000,
                user: None,
                kind: "tcp".into(),
                target: "127.0.0.1:22".into(),
                endpoint: false,
                allowed_cidrs: vec![],
                created_by: "user0001".into(),
                created_by_id: "id-user0001".into(),
            })
            .unwrap();
        assert_eq!(store.active_remote_access().unwrap().len(), 1);
        store
            .set_remote_access_status(
                &ra.resource_id,
                RemoteAccessState::Started,
                StatusIndicator::Idle,
                "node connected",
                None,
                10,
            )
            .unwrap();
        store
            .set_remote_access_expiration("t-big", &ra.resource_id, 4_000_000_000_001)
            .unwrap();
        store
            .set_remote_access_desired("t-big", &ra.resource_id, RemoteAccessState::Deleted)
            .unwrap();
    });
    path("session tokens: issue and revoke", &mut || {
        store
            .create_issued_token(&IssuedToken {
                id: "jti-new".into(),
                tenant_id: "t-big".into(),
                kind: TokenKind::Session,
                subject: "n000043".into(),
                name: "t".into(),
                created_by: "u0001".into(),
                created_by_id: "id-u0001".into(),
                created_at: 11,
                expires_at: 4_000_000_000_000,
                instances: Some(1),
                revoked_at: None,
            })
            .unwrap();
        assert!(store.revoke_issued_token("t-big", "jti-new", 12).unwrap());
    });
    path(
        "audit: one node's trail, and the tail after a seq",
        &mut || {
            let node = store
                .list_audit(
                    "t-big",
                    &crate::AuditFilter {
                        node_id: Some("n000043".into()),
                        limit: 5,
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(node.len(), 5);
            let tail = store
                .list_audit(
                    "t-big",
                    &crate::AuditFilter {
                        after_seq: Some(i64::from(AUDIT_EVENTS) - 2),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert!(tail.len() >= 2);
        },
    );
    path("start-up", &mut || {
        assert!(store.mark_all_nodes_offline().unwrap() > 30_000);
        store.tenant_by_name("small").unwrap().unwrap();
        store.list_users("t-small").unwrap();
    });
    path("node revocation", &mut || {
        assert!(store.revoke_node("t-big", "n000045", 13).unwrap());
    });
    paths
}

#[test]
fn hot_paths_are_index_searches_in_a_big_store() {
    let store = SqliteStore::open_in_memory().unwrap();
    fill(&store);
    store.lock().profile(Some(trace));
    let paths = run_paths(&store);
    store.lock().profile(None);

    let conn = store.lock();
    let mut problems = Vec::new();
    for (name, statements) in &paths {
        assert!(!statements.is_empty(), "path '{name}' ran no statement");
        for sql in statements {
            for p in plan_problems(&conn, sql) {
                problems.push(format!("{name}: {p}\n    in {}", sql.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} statements on hot paths scan or sort:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The check itself can fail: without the name index, the lookup by a revoked name
    // reads the tenant's nodes.
    let by_name = &paths["stream: find the node by revoked name"];
    conn.execute_batch("DROP INDEX nodes_by_name").unwrap();
    let without: Vec<String> = by_name
        .iter()
        .flat_map(|sql| plan_problems(&conn, sql))
        .collect();
    assert!(
        !without.is_empty(),
        "dropping nodes_by_name should make the name lookup scan or sort"
    );
}
