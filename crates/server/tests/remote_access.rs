//! `/v1/remote-access` driven in memory (no sockets): the real router, the real SQLite
//! store (in memory), a real CA and signing key. The reconcile loop is not running, so
//! these tests see what the API records (desired state, expiration, audit), not the
//! endpoint lifecycle.

mod common;

use adit_api::{remote_access_state as st, LoginResponse, RemoteAccessInfo};
use adit_server::api::router;
use adit_server::auth::hash_password;
use adit_server::state::{AppState, Settings};
use adit_store::{AuditEvent, AuditFilter};
use axum::http::{Method, StatusCode};
use axum::Router;
use common::{labels, request, send, test_state, Reply};
use serde_json::{json, Value};

const PW: &str = "a-long-enough-password";
const SOURCE: &str = "192.0.2.7:5555";
const DAY: u64 = 24 * 3600;

struct Env {
    state: AppState,
    app: Router,
}

fn env() -> Env {
    let state = test_state(Settings::default());
    Env {
        app: router(state.clone()),
        state,
    }
}

/// A tenant made straight in the store: users of each role (the operator narrowed to
/// `site=a`), a node at site a and one at site b.
struct Tenant {
    id: String,
    admin: String,
    operator: String,
    viewer: String,
    auditor: String,
    node_a: String,
    node_a_name: String,
    node_b: String,
}

impl Env {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let source = SOURCE.parse().unwrap();
        send(
            &self.app,
            request(method, path, Some(token), body, Some(source)),
        )
        .await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    async fn login(&self, tenant: &str, user: &str) -> String {
        let body = json!({"tenant": tenant, "user": user, "password": PW});
        let r = send(
            &self.app,
            request(Method::POST, "/v1/login", None, Some(body), None),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json::<LoginResponse>().access_token
    }

    async fn tenant(&self, name: &str) -> Tenant {
        let store = &self.state.store;
        let t = store.create_tenant(name).unwrap();
        let hash = hash_password(PW).unwrap();
        let mut tokens = Vec::new();
        for (role, sel) in [
            ("admin", labels(&[])),
            ("operator", labels(&[("site", "a")])),
            ("viewer", labels(&[])),
            ("auditor", labels(&[])),
        ] {
            let user = format!("{name}-{role}");
            let u = store.create_user(&t.id, &user, &hash).unwrap();
            store.bind_role(&t.id, &u.id, role, &sel).unwrap();
            tokens.push(self.login(name, &user).await);
        }
        let node_a_name = format!("{name}-node-a");
        let a = store
            .create_node(&t.id, &node_a_name, &labels(&[("site", "a")]))
            .unwrap();
        let b = store
            .create_node(&t.id, &format!("{name}-node-b"), &labels(&[("site", "b")]))
            .unwrap();
        let mut tokens = tokens.into_iter();
        Tenant {
            id: t.id,
            admin: tokens.next().unwrap(),
            operator: tokens.next().unwrap(),
            viewer: tokens.next().unwrap(),
            auditor: tokens.next().unwrap(),
            node_a: a.id,
            node_a_name,
            node_b: b.id,
        }
    }

    async fn create(&self, token: &str, body: Value) -> RemoteAccessInfo {
        let r = self.post("/v1/remote-access", token, body).await;
        r.expect(StatusCode::CREATED);
        r.json()
    }

    fn audit(&self, tenant_id: &str, action: &str) -> Vec<AuditEvent> {
        self.state
            .store
            .list_audit(
                tenant_id,
                &AuditFilter {
                    action: Some(action.into()),
                    ..Default::default()
                },
            )
            .unwrap()
    }
}

fn is_resource_id(id: &str) -> bool {
    id.strip_prefix("rmtacconf-").is_some_and(|rest| {
        rest.len() == 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

fn path(id: &str) -> String {
    format!("/v1/remote-access/{id}")
}

#[tokio::test]
async fn create_get_list_extend_delete() {
    let e = env();
    let t = e.tenant("acme").await;
    let before = adit_store::now_millis();

    // By node name, with everything given.
    let a = e
        .create(
            &t.operator,
            json!({
                "node": t.node_a_name,
                "ttl_secs": 3600,
                "endpoint": true,
                "user": "pi",
                "port": 2222,
                "allowed_cidrs": ["192.0.2.9/24", "2001:db8::1"],
            }),
        )
        .await;
    assert!(is_resource_id(&a.resource_id), "{}", a.resource_id);
    assert_eq!(a.tenant_id, t.id);
    assert_eq!(a.instance, t.node_a);
    assert_eq!(a.node_name, t.node_a_name);
    assert_eq!(a.kind, "tcp");
    assert_eq!(a.target, "127.0.0.1:2222");
    assert_eq!(a.user.as_deref(), Some("pi"));
    assert!(a.endpoint);
    assert_eq!(a.allowed_cidrs, vec!["192.0.2.0/24", "2001:db8::1/128"]);
    assert_eq!(a.desired_state, st::STARTED);
    assert_eq!(a.current_state, st::CONFIGURED);
    assert_eq!(a.configuration_status_indicator, "IN_PROGRESS");
    assert_eq!(a.local_port, None);
    assert_eq!(a.created_by, "acme-operator");
    let after = adit_store::now_millis();
    assert!(a.expiration_timestamp >= before + 3_600_000);
    assert!(a.expiration_timestamp <= after + 3_600_000);
    // The wire form uses the seed's names.
    let raw = e.get(&path(&a.resource_id), &t.viewer).await;
    raw.expect(StatusCode::OK);
    assert_eq!(raw.body["current_state"], "REMOTE_ACCESS_STATE_CONFIGURED");
    assert_eq!(raw.json::<RemoteAccessInfo>(), a);

    // By node id, defaults.
    let b = e
        .create(&t.admin, json!({"node": t.node_b, "ttl_secs": 60}))
        .await;
    assert_ne!(a.resource_id, b.resource_id);
    assert_eq!(b.target, "127.0.0.1:22");
    assert!(!b.endpoint && b.user.is_none() && b.allowed_cidrs.is_empty());

    // Listing: newest first; filters.
    let all: Vec<RemoteAccessInfo> = e.get("/v1/remote-access", &t.admin).await.json();
    let ids: Vec<_> = all.iter().map(|r| r.resource_id.as_str()).collect();
    assert_eq!(ids, vec![b.resource_id.as_str(), a.resource_id.as_str()]);
    let by_node: Vec<RemoteAccessInfo> = e
        .get(
            &format!("/v1/remote-access?node={}", t.node_a_name),
            &t.admin,
        )
        .await
        .json();
    assert_eq!(by_node, vec![a.clone()]);
    let configured: Vec<RemoteAccessInfo> = e
        .get("/v1/remote-access?state=configured", &t.admin)
        .await
        .json();
    assert_eq!(configured.len(), 2);
    let started: Vec<RemoteAccessInfo> = e
        .get(
            "/v1/remote-access?state=REMOTE_ACCESS_STATE_STARTED",
            &t.admin,
        )
        .await
        .json();
    assert!(started.is_empty());
    e.get("/v1/remote-access?state=running", &t.admin)
        .await
        .expect(StatusCode::BAD_REQUEST);
    e.get("/v1/remote-access?include_deleted=maybe", &t.admin)
        .await
        .expect(StatusCode::BAD_REQUEST);
    e.get("/v1/remote-access?node=nope", &t.admin)
        .await
        .expect(StatusCode::NOT_FOUND);
    // The operator (site=a) sees only site a's configuration, the viewer and auditor all.
    let op: Vec<RemoteAccessInfo> = e.get("/v1/remote-access", &t.operator).await.json();
    assert_eq!(op, vec![a.clone()]);
    let viewer: Vec<RemoteAccessInfo> = e.get("/v1/remote-access", &t.viewer).await.json();
    assert_eq!(viewer.len(), 2);
    let auditor: Vec<RemoteAccessInfo> = e.get("/v1/remote-access", &t.auditor).await.json();
    assert_eq!(auditor.len(), 2);
    e.get(&path(&b.resource_id), &t.operator)
        .await
        .expect(StatusCode::NOT_FOUND);
    e.get(&path("rmtacconf-zzzzzzzz"), &t.admin)
        .await
        .expect(StatusCode::NOT_FOUND);

    // Extend: now + ttl.
    let before = adit_store::now_millis();
    let r = e
        .patch(
            &path(&a.resource_id),
            &t.operator,
            json!({"ttl_secs": 2 * DAY}),
        )
        .await;
    r.expect(StatusCode::OK);
    let extended: RemoteAccessInfo = r.json();
    assert!(extended.expiration_timestamp >= before + 2 * DAY as i64 * 1000);
    assert!(extended.expiration_timestamp <= adit_store::now_millis() + 2 * DAY as i64 * 1000);
    assert!(extended.updated_at >= a.updated_at);
    e.patch(&path(&a.resource_id), &t.operator, json!({"ttl_secs": 0}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    e.patch(
        &path(&a.resource_id),
        &t.operator,
        json!({"ttl_secs": 8 * DAY}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    e.patch(&path(&a.resource_id), &t.operator, json!({"ttl": 5}))
        .await
        .expect(StatusCode::BAD_REQUEST);

    // Delete: desired DELETED; the reconcile loop does the rest.
    let r = e.delete(&path(&a.resource_id), &t.operator).await;
    r.expect(StatusCode::OK);
    let deleting: RemoteAccessInfo = r.json();
    assert_eq!(deleting.desired_state, st::DELETED);
    assert_eq!(deleting.current_state, st::CONFIGURED);
    // Deleting again changes nothing and is not an error; extending is refused.
    let again: RemoteAccessInfo = e.delete(&path(&a.resource_id), &t.operator).await.json();
    assert_eq!(again, deleting);
    e.patch(&path(&a.resource_id), &t.operator, json!({"ttl_secs": 60}))
        .await
        .expect(StatusCode::CONFLICT);

    // Once the loop marks it DELETED it leaves the default listing.
    e.state
        .store
        .set_remote_access_status(
            &a.resource_id,
            adit_store::RemoteAccessState::Deleted,
            adit_store::StatusIndicator::Idle,
            "deleted",
            None,
            adit_store::now_millis(),
        )
        .unwrap();
    let live: Vec<RemoteAccessInfo> = e.get("/v1/remote-access", &t.admin).await.json();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].resource_id, b.resource_id);
    let with_deleted: Vec<RemoteAccessInfo> = e
        .get("/v1/remote-access?include_deleted=true", &t.admin)
        .await
        .json();
    assert_eq!(with_deleted.len(), 2);
    let got: RemoteAccessInfo = e.get(&path(&a.resource_id), &t.admin).await.json();
    assert_eq!(got.current_state, st::DELETED);
    e.patch(&path(&a.resource_id), &t.admin, json!({"ttl_secs": 60}))
        .await
        .expect(StatusCode::CONFLICT);
    e.delete(&path(&a.resource_id), &t.admin)
        .await
        .expect(StatusCode::OK);

    // Audit: one event per mutation, with the session id, actor and source.
    let created = e.audit(&t.id, "session.create");
    assert_eq!(created.len(), 2);
    let ev = created
        .iter()
        .find(|ev| ev.session_id.as_deref() == Some(a.resource_id.as_str()))
        .unwrap();
    assert_eq!(ev.actor, "acme-operator");
    assert_eq!(ev.outcome, "ok");
    assert_eq!(ev.source.as_deref(), Some(SOURCE));
    assert_eq!(ev.node_id.as_deref(), Some(t.node_a.as_str()));
    assert_eq!(ev.detail["target"], "127.0.0.1:2222");
    assert_eq!(ev.detail["ttl_secs"], 3600);
    let extends = e.audit(&t.id, "session.extend");
    assert_eq!(extends.len(), 1);
    assert_eq!(
        extends[0].session_id.as_deref(),
        Some(a.resource_id.as_str())
    );
    assert_eq!(extends[0].detail["ttl_secs"], 2 * DAY);
    let deletes = e.audit(&t.id, "session.delete");
    assert_eq!(
        deletes.len(),
        1,
        "an idempotent repeat is not audited again"
    );
    assert_eq!(
        deletes[0].session_id.as_deref(),
        Some(a.resource_id.as_str())
    );
}

#[tokio::test]
async fn authorization() {
    let e = env();
    let t = e.tenant("acme").await;
    let body_a = json!({"node": t.node_a, "ttl_secs": 60});
    let body_b = json!({"node": t.node_b, "ttl_secs": 60});

    // Viewer and auditor may read but not create: 403, audited as denied.
    for token in [&t.viewer, &t.auditor] {
        let r = e.post("/v1/remote-access", token, body_a.clone()).await;
        r.expect(StatusCode::FORBIDDEN);
        assert!(r.message().contains("operator"), "{}", r.message());
    }
    let denied = e.audit(&t.id, "session.create");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|ev| ev.outcome == "denied"));

    // The operator bound to site=a cannot create for the site=b node (which it cannot
    // even see, so it is reported like a missing node).
    e.post("/v1/remote-access", &t.operator, body_b.clone())
        .await
        .expect(StatusCode::NOT_FOUND);
    e.post(
        "/v1/remote-access",
        &t.operator,
        json!({"node": "acme-node-b", "ttl_secs": 60}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    assert!(e
        .state
        .store
        .list_remote_access(&t.id, &Default::default())
        .unwrap()
        .is_empty());

    // Someone else's configuration on node b: the operator can neither see nor change it;
    // the viewer sees it but may not change it.
    let b = e.create(&t.admin, body_b).await;
    for r in [
        e.get(&path(&b.resource_id), &t.operator).await,
        e.patch(&path(&b.resource_id), &t.operator, json!({"ttl_secs": 60}))
            .await,
        e.delete(&path(&b.resource_id), &t.operator).await,
    ] {
        r.expect(StatusCode::NOT_FOUND);
    }
    e.get(&path(&b.resource_id), &t.viewer)
        .await
        .expect(StatusCode::OK);
    e.patch(&path(&b.resource_id), &t.viewer, json!({"ttl_secs": 60}))
        .await
        .expect(StatusCode::FORBIDDEN);
    e.delete(&path(&b.resource_id), &t.viewer)
        .await
        .expect(StatusCode::FORBIDDEN);
    let still: RemoteAccessInfo = e.get(&path(&b.resource_id), &t.admin).await.json();
    assert_eq!(still.desired_state, st::STARTED);
    assert_eq!(e.audit(&t.id, "session.extend")[0].outcome, "denied");
    assert_eq!(e.audit(&t.id, "session.delete")[0].outcome, "denied");

    // No token: 401.
    let r = send(
        &e.app,
        request(Method::GET, "/v1/remote-access", None, None, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A revoked node cannot get new remote access.
    e.state
        .store
        .revoke_node(&t.id, &t.node_a, adit_store::now_millis())
        .unwrap();
    e.post("/v1/remote-access", &t.admin, body_a)
        .await
        .expect(StatusCode::CONFLICT);
}

#[tokio::test]
async fn tenant_isolation() {
    let e = env();
    let a = e.tenant("alpha").await;
    let b = e.tenant("beta").await;
    let ra = e
        .create(
            &a.admin,
            json!({"node": a.node_a, "ttl_secs": 600, "endpoint": true}),
        )
        .await;

    // B's admin: nothing of A's is visible or changeable, by id or by node.
    let listed: Vec<RemoteAccessInfo> = e
        .get("/v1/remote-access?include_deleted=true", &b.admin)
        .await
        .json();
    assert!(listed.is_empty());
    e.get(&path(&ra.resource_id), &b.admin)
        .await
        .expect(StatusCode::NOT_FOUND);
    e.patch(&path(&ra.resource_id), &b.admin, json!({"ttl_secs": 60}))
        .await
        .expect(StatusCode::NOT_FOUND);
    e.delete(&path(&ra.resource_id), &b.admin)
        .await
        .expect(StatusCode::NOT_FOUND);
    e.post(
        "/v1/remote-access",
        &b.admin,
        json!({"node": a.node_a, "ttl_secs": 60}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    e.get(&format!("/v1/remote-access?node={}", a.node_a), &b.admin)
        .await
        .expect(StatusCode::NOT_FOUND);

    // A's row is untouched, and B's attempts left no audit in A.
    let got: RemoteAccessInfo = e.get(&path(&ra.resource_id), &a.admin).await.json();
    assert_eq!(got, ra);
    assert!(e.audit(&a.id, "session.extend").is_empty());
    assert!(e.audit(&a.id, "session.delete").is_empty());
    assert_eq!(e.audit(&a.id, "session.create").len(), 1);
    assert!(e.audit(&b.id, "session.create").is_empty());
}

#[tokio::test]
async fn request_validation() {
    let e = env();
    let t = e.tenant("acme").await;
    let node = t.node_a.clone();
    let bad = [
        json!({"node": node, "ttl_secs": 0}),
        json!({"node": node, "ttl_secs": 7 * DAY + 1}),
        json!({"node": node, "ttl_secs": 60, "port": 0}),
        json!({"node": node, "ttl_secs": 60, "port": 70000}),
        json!({"node": node, "ttl_secs": 60, "user": "-oProxyCommand=sh"}),
        json!({"node": node, "ttl_secs": 60, "user": ""}),
        json!({"node": node, "ttl_secs": 60, "allowed_cidrs": ["10.0.0.0/33"]}),
        json!({"node": node, "ttl_secs": 60, "allowed_cidrs": ["not-a-cidr"]}),
        json!({"node": node, "ttl_secs": 60, "allowed_cidrs": ["10.0.0.0/8", "fe80::/200"]}),
        json!({"node": node, "ttl_secs": 60, "kind": "udp"}),
        json!({"node": node}),
        json!({"ttl_secs": 60}),
    ];
    for body in bad {
        let r = e.post("/v1/remote-access", &t.admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    assert!(e
        .state
        .store
        .list_remote_access(&t.id, &Default::default())
        .unwrap()
        .is_empty());
    e.post(
        "/v1/remote-access",
        &t.admin,
        json!({"node": "nope", "ttl_secs": 60}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);

    // The bounds themselves are fine.
    let max = e
        .create(&t.admin, json!({"node": node, "ttl_secs": 7 * DAY}))
        .await;
    assert!(max.expiration_timestamp > adit_store::now_millis() + (7 * DAY as i64 - 60) * 1000);
    e.create(
        &t.admin,
        json!({"node": node, "ttl_secs": 1, "port": 65535}),
    )
    .await;
}
