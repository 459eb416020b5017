//! Tenants, users, roles and audit through the HTTP API, driven in memory (no sockets):
//! the real router, the real SQLite store (in memory), a real CA and signing key.
//!
//! The centrepiece is [`tenant_isolation_matrix`]: every authenticated endpoint of the
//! router, called by users of one tenant with the ids and names of another's rows.

mod common;

use adit_api::{
    AuditEventInfo, CreatedJoinToken, CreatedTenant, EnrollResponse, LoginResponse,
    RoleBindingInfo, TenantInfo, UserInfo, WhoAmI,
};
use adit_server::api::router;
use adit_server::auth::hash_password;
use adit_server::state::{AppState, Settings};
use adit_store::{AuditEvent, AuditFilter, Labels};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use common::{labels, request, send, test_state, Reply};
use serde_json::{json, Value};

const ROOT_PW: &str = "root-password-123";
const SOURCE: &str = "192.0.2.7:5555";

struct Env {
    state: AppState,
    app: Router,
    default_tenant: String,
    /// The data directory (recordings live there); removed on drop.
    data_dir: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn env() -> Env {
    let data_dir = std::env::temp_dir().join(format!("adit-admin-test-{}", rand::random::<u64>()));
    let state = test_state(Settings {
        data_dir: data_dir.clone(),
        ..Settings::default()
    });
    let store = &state.store;
    let tenant = store.create_tenant("default").unwrap();
    let root = store
        .create_user(&tenant.id, "root", &hash_password(ROOT_PW).unwrap())
        .unwrap();
    store
        .bind_role(&tenant.id, &root.id, "admin", &Labels::new())
        .unwrap();
    Env {
        app: router(state.clone()),
        state,
        default_tenant: tenant.id,
        data_dir,
    }
}

impl Env {
    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.app, req).await
    }

    /// A request from [`SOURCE`].
    fn request(
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Request<Body> {
        request(method, path, token, body, Some(SOURCE.parse().unwrap()))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.send(Self::request(method, path, token, body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn login(&self, tenant: &str, user: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"tenant": tenant, "user": user, "password": password})),
        )
        .await
    }

    async fn token(&self, tenant: &str, user: &str, password: &str) -> String {
        let r = self.login(tenant, user, password).await;
        r.expect(StatusCode::OK);
        r.json::<LoginResponse>().access_token
    }

    async fn root(&self) -> String {
        self.token("default", "root", ROOT_PW).await
    }

    async fn create_user(&self, admin: &str, name: &str, password: &str, roles: Value) -> UserInfo {
        let r = self
            .post(
                "/v1/users",
                admin,
                json!({"name": name, "password": password, "roles": roles}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        r.json()
    }

    /// Enrols a node with a fresh single-use token.
    async fn enroll(
        &self,
        admin: &str,
        name: &str,
        node_labels: &[(&str, &str)],
    ) -> EnrollResponse {
        let r = self
            .post(
                "/v1/join-tokens",
                admin,
                json!({"labels": labels(node_labels)}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let t: CreatedJoinToken = r.json();
        let key = adit_pki::generate_node_key().unwrap();
        let csr = adit_pki::make_csr(key.expose(), name).unwrap();
        let r = self
            .call(
                Method::POST,
                "/v1/enroll",
                None,
                Some(json!({"token": t.token, "name": name, "csr_pem": csr})),
            )
            .await;
        r.expect(StatusCode::OK);
        r.json()
    }

    fn store_audit(&self, tenant_id: &str, action: &str) -> Vec<AuditEvent> {
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

// === a tenant with everything in it ===

/// One tenant made through the API, with a user of each role, two nodes, a spare join
/// token and audit events.
struct Tenant {
    name: String,
    id: String,
    admin_name: String,
    admin_pw: String,
    admin: String,
    auditor: String,
    viewer: String,
    operator: String,
    viewer_user: UserInfo,
    auditor_binding: String,
    node_id: String,
    node_name: String,
    node_b_id: String,
    token_id: String,
    session_token_id: String,
    api_token_id: String,
    /// A recording of a (made-up) PTY session on `node_id`.
    recording_id: String,
}

const USER_PW: &str = "user-password-1234";

impl Tenant {
    async fn create(e: &Env, root: &str, name: &str) -> Tenant {
        let admin_name = format!("{name}-admin");
        let admin_pw = format!("{name}-admin-password");
        let r = e
            .post(
                "/v1/tenants",
                root,
                json!({"name": name, "admin_user": admin_name, "admin_password": admin_pw}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let created: CreatedTenant = r.json();
        let admin = e.token(name, &admin_name, &admin_pw).await;
        let mut tokens = Vec::new();
        let mut users = Vec::new();
        for (role, sel) in [
            ("auditor", json!({})),
            ("viewer", json!({})),
            ("operator", json!({"site": "a"})),
        ] {
            let user = format!("{name}-{role}");
            users.push(
                e.create_user(
                    &admin,
                    &user,
                    USER_PW,
                    json!([{"role": role, "selector": sel}]),
                )
                .await,
            );
            tokens.push(e.token(name, &user, USER_PW).await);
        }
        let node = e
            .enroll(&admin, &format!("{name}-node"), &[("site", "a")])
            .await;
        let node_b = e
            .enroll(&admin, &format!("{name}-node-b"), &[("site", "b")])
            .await;
        let r = e.post("/v1/join-tokens", &admin, json!({})).await;
        r.expect(StatusCode::CREATED);
        let token: CreatedJoinToken = r.json();
        let r = e
            .get(&format!("/v1/roles?user={name}-auditor"), &admin)
            .await;
        r.expect(StatusCode::OK);
        let auditor_binding = r.json::<Vec<RoleBindingInfo>>()[0].id.clone();
        let r = e
            .post(
                "/v1/session-tokens",
                &admin,
                json!({"node": node.node_id, "ttl_secs": 600, "instances": 2}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let session_token_id = r.body["info"]["id"].as_str().unwrap().to_string();
        let r = e
            .post(
                "/v1/api-tokens",
                &admin,
                json!({"name": "automation", "ttl_secs": 600}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let api_token_id = r.body["info"]["id"].as_str().unwrap().to_string();
        let recording = adit_server::recordings::Recording::start(
            &e.state,
            adit_server::recordings::RecordingMeta {
                tenant_id: created.tenant.id.clone(),
                node_id: node.node_id.clone(),
                node: node.node_name.clone(),
                user: admin_name.clone(),
                via: "shell",
                source: None,
                session: None,
                cols: 80,
                rows: 24,
                term: None,
            },
        )
        .expect("a recording");
        let recording_id = recording.id().to_string();
        recording.finish(Some(0)).unwrap().await.unwrap();
        let mut tokens = tokens.into_iter();
        Tenant {
            name: name.into(),
            id: created.tenant.id,
            admin_name,
            admin_pw,
            admin,
            auditor: tokens.next().unwrap(),
            viewer: tokens.next().unwrap(),
            operator: tokens.next().unwrap(),
            viewer_user: users[1].clone(),
            auditor_binding,
            node_id: node.node_id,
            node_name: node.node_name,
            node_b_id: node_b.node_id,
            token_id: token.id,
            session_token_id,
            api_token_id,
            recording_id,
        }
    }

    /// Strings only this tenant's rows contain: none may appear in another tenant's
    /// answers.
    fn markers(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.id.clone(),
            self.node_id.clone(),
            self.node_b_id.clone(),
            self.token_id.clone(),
            self.session_token_id.clone(),
            self.api_token_id.clone(),
            self.recording_id.clone(),
            self.viewer_user.id.clone(),
            self.auditor_binding.clone(),
        ]
    }
}

// === the tenant-isolation matrix ===

/// What a call made by tenant A's admin with tenant B's ids must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The handler's 404 (not the router's "no such endpoint").
    NotFound,
    /// 2xx without any of B's rows.
    Ok,
    /// 200 with an empty JSON list.
    Empty,
    /// 403: the endpoint is not for tenant admins at all.
    Forbidden,
    /// 401: the credentials do not work across tenants.
    Unauthenticated,
}

struct Case {
    /// `METHOD /path/{template}` as documented in `adit_api::paths`.
    endpoint: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    /// Whether the request carries the caller's bearer token.
    authenticated: bool,
    expect: Expect,
}

fn case(endpoint: &'static str, path: String, body: Option<Value>, expect: Expect) -> Case {
    let method = match endpoint.split(' ').next().unwrap() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        "PUT" => Method::PUT,
        m => panic!("method {m}"),
    };
    Case {
        endpoint,
        method,
        path,
        body,
        authenticated: true,
        expect,
    }
}

/// Endpoints that are not about a tenant's rows, and why; everything else in the router
/// is in [`matrix`]. Add a new endpoint to one of the two.
const NOT_TENANT_DATA: &[(&str, &str)] = &[
    ("GET /healthz", "static"),
    ("GET /readyz", "static"),
    ("GET /metrics", "process-wide counters, no tenant data"),
    ("GET /v1/ca", "public CA certificate"),
    ("GET /v1/jwks", "public signing keys"),
    (
        "POST /v1/enroll",
        "authenticated by a join token, whose tenant the node joins (tests/api.rs)",
    ),
    (
        "POST /v1/renew",
        "authenticated by the node's certificate (tests/api.rs)",
    ),
];

/// Every tenant-scoped endpoint, called with `b`'s ids and names by a user of `a`.
fn matrix(a: &Tenant, b: &Tenant) -> Vec<Case> {
    use Expect::*;
    let mut login_other_tenant = case(
        "POST /v1/login",
        "/v1/login".into(),
        Some(json!({"tenant": b.name, "user": a.admin_name, "password": a.admin_pw})),
        Unauthenticated,
    );
    login_other_tenant.authenticated = false;
    vec![
        login_other_tenant,
        case("GET /v1/whoami", "/v1/whoami".into(), None, Ok),
        case("GET /v1/nodes", "/v1/nodes".into(), None, Ok),
        case(
            "GET /v1/nodes/{node}",
            format!("/v1/nodes/{}", b.node_id),
            None,
            NotFound,
        ),
        case(
            "GET /v1/nodes/{node}",
            format!("/v1/nodes/{}", b.node_name),
            None,
            NotFound,
        ),
        case(
            "POST /v1/nodes/{node}/revoke",
            format!("/v1/nodes/{}/revoke", b.node_id),
            None,
            NotFound,
        ),
        case(
            "POST /v1/nodes/{node}/revoke",
            format!("/v1/nodes/{}/revoke", b.node_name),
            None,
            NotFound,
        ),
        case(
            "PATCH /v1/nodes/{node}/labels",
            format!("/v1/nodes/{}/labels", b.node_id),
            Some(json!({"set": {"site": "stolen"}})),
            NotFound,
        ),
        case(
            "PATCH /v1/nodes/{node}/labels",
            format!("/v1/nodes/{}/labels", b.node_name),
            Some(json!({"remove": ["site"]})),
            NotFound,
        ),
        case(
            "GET /v1/nodes/{node}/pty",
            format!("/v1/nodes/{}/pty", b.node_id),
            None,
            NotFound,
        ),
        case(
            "GET /v1/nodes/{node}/pty",
            format!("/v1/nodes/{}/pty?cols=80&rows=24", b.node_name),
            None,
            NotFound,
        ),
        case("GET /v1/recordings", "/v1/recordings".into(), None, Ok),
        case(
            "GET /v1/recordings",
            format!("/v1/recordings?node={}", b.node_id),
            None,
            NotFound,
        ),
        case(
            "GET /v1/recordings",
            format!("/v1/recordings?user={}", b.admin_name),
            None,
            Empty,
        ),
        case(
            "GET /v1/recordings/{id}",
            format!("/v1/recordings/{}", b.recording_id),
            None,
            NotFound,
        ),
        case("GET /v1/join-tokens", "/v1/join-tokens".into(), None, Ok),
        case(
            "POST /v1/join-tokens",
            "/v1/join-tokens".into(),
            Some(json!({"ttl_secs": 60})),
            Ok,
        ),
        case(
            "DELETE /v1/join-tokens/{id}",
            format!("/v1/join-tokens/{}", b.token_id),
            None,
            NotFound,
        ),
        case("GET /v1/tenants", "/v1/tenants".into(), None, Forbidden),
        case(
            "POST /v1/tenants",
            "/v1/tenants".into(),
            Some(json!({"name": format!("{}-sub", a.name)})),
            Forbidden,
        ),
        case("GET /v1/users", "/v1/users".into(), None, Ok),
        case(
            "POST /v1/users",
            "/v1/users".into(),
            Some(json!({"name": format!("{}-matrix", a.name), "password": USER_PW})),
            Ok,
        ),
        case(
            "DELETE /v1/users/{user}",
            format!("/v1/users/{}", b.viewer_user.name),
            None,
            NotFound,
        ),
        case(
            "DELETE /v1/users/{user}",
            format!("/v1/users/{}", b.viewer_user.id),
            None,
            NotFound,
        ),
        case(
            "PATCH /v1/users/{user}",
            format!("/v1/users/{}", b.viewer_user.name),
            Some(json!({"disabled": true})),
            NotFound,
        ),
        case(
            "PATCH /v1/users/{user}",
            format!("/v1/users/{}", b.viewer_user.id),
            Some(json!({"disabled": true})),
            NotFound,
        ),
        case(
            "POST /v1/users/{user}/password",
            format!("/v1/users/{}/password", b.viewer_user.name),
            Some(json!({"new": "a-new-password-99"})),
            NotFound,
        ),
        case(
            "POST /v1/users/{user}/password",
            format!("/v1/users/{}/password", b.viewer_user.id),
            Some(json!({"new": "a-new-password-99"})),
            NotFound,
        ),
        case("GET /v1/roles", "/v1/roles".into(), None, Ok),
        case(
            "GET /v1/roles",
            format!("/v1/roles?user={}", b.viewer_user.name),
            None,
            NotFound,
        ),
        case(
            "POST /v1/roles",
            "/v1/roles".into(),
            Some(json!({"user": b.viewer_user.name, "role": "admin"})),
            NotFound,
        ),
        case(
            "POST /v1/roles",
            "/v1/roles".into(),
            Some(json!({"user": b.viewer_user.id, "role": "admin"})),
            NotFound,
        ),
        case(
            "DELETE /v1/roles/{id}",
            format!("/v1/roles/{}", b.auditor_binding),
            None,
            NotFound,
        ),
        case("GET /v1/audit", "/v1/audit".into(), None, Ok),
        case(
            "GET /v1/audit",
            format!("/v1/audit?node={}", b.node_id),
            None,
            NotFound,
        ),
        case(
            "GET /v1/audit",
            format!("/v1/audit?node={}", b.node_name),
            None,
            NotFound,
        ),
        case(
            "GET /v1/audit",
            format!("/v1/audit?actor={}", b.admin_name),
            None,
            Empty,
        ),
        case("GET /v1/audit/export", "/v1/audit/export".into(), None, Ok),
        case(
            "GET /v1/audit/export",
            format!("/v1/audit/export?node={}", b.node_id),
            None,
            NotFound,
        ),
        case(
            "POST /v1/session-tokens",
            "/v1/session-tokens".into(),
            Some(json!({"node": b.node_id, "ttl_secs": 600})),
            NotFound,
        ),
        case(
            "POST /v1/session-tokens",
            "/v1/session-tokens".into(),
            Some(json!({"node": b.node_name, "ttl_secs": 600})),
            NotFound,
        ),
        case(
            "GET /v1/session-tokens",
            "/v1/session-tokens".into(),
            None,
            Ok,
        ),
        case(
            "DELETE /v1/session-tokens/{id}",
            format!("/v1/session-tokens/{}", b.session_token_id),
            None,
            NotFound,
        ),
        case(
            "POST /v1/api-tokens",
            "/v1/api-tokens".into(),
            Some(json!({"name": "matrix", "ttl_secs": 600})),
            Ok,
        ),
        case("GET /v1/api-tokens", "/v1/api-tokens".into(), None, Ok),
        case(
            "DELETE /v1/api-tokens/{id}",
            format!("/v1/api-tokens/{}", b.api_token_id),
            None,
            NotFound,
        ),
        case("GET /v1/policies", "/v1/policies".into(), None, Ok),
        // A's own tenant policy: it must not show up in (or change) B's.
        case(
            "PUT /v1/policies/{scope}",
            "/v1/policies/tenant".into(),
            Some(json!({"exec": "deny"})),
            Ok,
        ),
        case(
            "PUT /v1/policies/{scope}",
            format!("/v1/policies/node:{}", b.node_id),
            Some(json!({"exec": "allow"})),
            NotFound,
        ),
        case(
            "PUT /v1/policies/{scope}",
            format!("/v1/policies/node:{}", b.node_name),
            Some(json!({"exec": "allow"})),
            NotFound,
        ),
        case(
            "DELETE /v1/policies/{scope}",
            format!("/v1/policies/node:{}", b.node_id),
            None,
            NotFound,
        ),
        case(
            "DELETE /v1/policies/{scope}",
            format!("/v1/policies/node:{}", b.node_name),
            None,
            NotFound,
        ),
        case(
            "GET /v1/nodes/{node}/policy",
            format!("/v1/nodes/{}/policy", b.node_id),
            None,
            NotFound,
        ),
        case(
            "GET /v1/nodes/{node}/policy",
            format!("/v1/nodes/{}/policy", b.node_name),
            None,
            NotFound,
        ),
    ]
}

/// Checks one reply of the matrix; `strict` for the admin (the exact expectation),
/// otherwise a 403 is acceptable too.
#[track_caller]
fn check(c: &Case, r: &Reply, b: &Tenant, who: &str, strict: bool) {
    let ctx = format!(
        "{who} {} {} ({}): {} {}",
        c.method, c.path, c.endpoint, r.status, r.text
    );
    // Error messages may echo what the caller sent; anything else of B's is a leak.
    let sent = format!("{} {}", c.path, c.body.clone().unwrap_or_default());
    for m in b.markers().iter().filter(|m| !sent.contains(m.as_str())) {
        assert!(
            !r.text.contains(m),
            "leaked {m} of tenant {}: {ctx}",
            b.name
        );
    }
    if !strict && r.status == StatusCode::FORBIDDEN {
        return;
    }
    match c.expect {
        Expect::NotFound => {
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{ctx}");
            assert_eq!(r.body["code"], "not_found", "{ctx}");
            assert!(
                !r.message().contains("no such API endpoint"),
                "the router has no such route: {ctx}"
            );
        }
        Expect::Ok => assert!(r.status.is_success(), "{ctx}"),
        Expect::Empty => {
            assert_eq!(r.status, StatusCode::OK, "{ctx}");
            assert_eq!(r.body, json!([]), "{ctx}");
        }
        Expect::Forbidden => assert_eq!(r.status, StatusCode::FORBIDDEN, "{ctx}"),
        Expect::Unauthenticated => assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{ctx}"),
    }
    if !r.status.is_success() {
        let _: adit_api::ApiError = r.json();
    }
}

#[tokio::test]
async fn tenant_isolation_matrix() {
    let e = env();
    let root = e.root().await;
    let acme = Tenant::create(&e, &root, "acme").await;
    let globex = Tenant::create(&e, &root, "globex").await;

    for (a, b) in [(&acme, &globex), (&globex, &acme)] {
        let b_users_before = e.state.store.list_users(&b.id).unwrap().len();
        let b_tokens_before = e.state.store.list_join_tokens(&b.id).unwrap().len();
        let b_audit_before = e
            .state
            .store
            .list_audit(&b.id, &AuditFilter::default())
            .unwrap()
            .len();
        // The admin first (exact expectations), then the other roles of A.
        let callers = [
            ("admin", &a.admin, true),
            ("auditor", &a.auditor, false),
            ("viewer", &a.viewer, false),
            ("operator", &a.operator, false),
        ];
        let cases = matrix(a, b);
        for (who, token, strict) in callers {
            for c in &cases {
                let token = c.authenticated.then_some(token.as_str());
                let r = e
                    .call(c.method.clone(), &c.path, token, c.body.clone())
                    .await;
                check(c, &r, b, &format!("{}-{who}", a.name), strict);
            }
        }

        // B's rows are all still there, unchanged.
        let store = &e.state.store;
        let node = store.node(&b.id, &b.node_id).unwrap().unwrap();
        assert!(node.revoked_at.is_none());
        assert!(
            !node.labels.values().any(|v| v == "stolen"),
            "A relabelled B's node: {:?}",
            node.labels
        );
        let token = store.join_token(&b.id, &b.token_id).unwrap().unwrap();
        assert!(token.revoked_at.is_none());
        for id in [&b.session_token_id, &b.api_token_id] {
            let t = store.issued_token(&b.id, id).unwrap().unwrap();
            assert!(t.revoked_at.is_none(), "B's token {id} was revoked");
        }
        let viewer = store.user(&b.id, &b.viewer_user.id).unwrap().unwrap();
        assert!(hash_ok(&viewer.password_hash, USER_PW));
        assert!(!viewer.disabled, "A disabled B's user");
        assert!(store
            .list_role_bindings(&b.id, None)
            .unwrap()
            .iter()
            .any(|x| x.id == b.auditor_binding));
        assert_eq!(store.list_users(&b.id).unwrap().len(), b_users_before);
        assert_eq!(
            store.list_join_tokens(&b.id).unwrap().len(),
            b_tokens_before
        );
        // B's policies are only B's own (A's PUT landed in A).
        assert!(store
            .list_policies(&b.id)
            .unwrap()
            .iter()
            .all(|p| p.updated_by == b.admin_name && p.tenant_id == b.id));
        assert!(store
            .list_policies(&a.id)
            .unwrap()
            .iter()
            .any(|p| p.level == adit_store::PolicyLevel::Tenant));
        // Nothing A did was written to B's audit log.
        assert_eq!(
            store
                .list_audit(&b.id, &AuditFilter::default())
                .unwrap()
                .len(),
            b_audit_before
        );
        // The user created by the matrix landed in A.
        assert!(store
            .user_by_name(&a.id, &format!("{}-matrix", a.name))
            .unwrap()
            .is_some());
    }

    // Each tenant's own lists do show its own rows (the matrix is not vacuous).
    for t in [&acme, &globex] {
        let r = e.get("/v1/nodes", &t.admin).await;
        assert!(r.text.contains(&t.node_id), "{}", r.text);
        let r = e.get("/v1/audit", &t.auditor).await;
        r.expect(StatusCode::OK);
        assert!(r.text.contains(&t.node_id), "{}", r.text);
        let r = e.get("/v1/audit/export", &t.auditor).await;
        r.expect(StatusCode::OK);
        assert!(r.text.contains(&t.node_id));
        let r = e.get("/v1/recordings", &t.auditor).await;
        r.expect(StatusCode::OK);
        assert!(r.text.contains(&t.recording_id), "{}", r.text);
        let r = e
            .get(&format!("/v1/recordings/{}", t.recording_id), &t.auditor)
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.content_type, "application/x-asciicast");
        assert!(
            r.text.starts_with('{') && r.text.contains("\"version\":2"),
            "{}",
            r.text
        );
        // Recordings are for admins and auditors only.
        let r = e.get("/v1/recordings", &t.viewer).await;
        r.expect(StatusCode::FORBIDDEN);
    }
    // And the default tenant's admin sees every tenant, nothing else of theirs.
    let r = e.get("/v1/tenants", &root).await;
    r.expect(StatusCode::OK);
    let names: Vec<String> = r
        .json::<Vec<TenantInfo>>()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "default", "globex"]);
    let r = e.get("/v1/nodes", &root).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body, json!([]));
    let r = e.get(&format!("/v1/nodes/{}", acme.node_id), &root).await;
    r.expect(StatusCode::NOT_FOUND);
}

#[test]
fn matrix_names_every_endpoint() {
    // Each documented path appears in the matrix or in NOT_TENANT_DATA.
    use adit_api::paths::*;
    let all = [
        HEALTHZ,
        READYZ,
        METRICS,
        CA,
        JWKS,
        LOGIN,
        WHOAMI,
        JOIN_TOKENS,
        JOIN_TOKEN,
        ENROLL,
        RENEW,
        NODES,
        NODE,
        NODE_REVOKE,
        NODE_LABELS,
        NODE_PTY,
        RECORDINGS,
        RECORDING,
        TENANTS,
        USERS,
        USER,
        USER_PASSWORD,
        ROLES,
        ROLE,
        AUDIT,
        AUDIT_EXPORT,
        SESSION_TOKENS,
        SESSION_TOKEN,
        API_TOKENS,
        API_TOKEN,
        POLICIES,
        POLICY,
        NODE_POLICY,
    ];
    let dummy = |name: &str| Tenant {
        name: name.into(),
        id: "i".into(),
        admin_name: "a".into(),
        admin_pw: "p".into(),
        admin: String::new(),
        auditor: String::new(),
        viewer: String::new(),
        operator: String::new(),
        viewer_user: UserInfo {
            id: "u".into(),
            name: "v".into(),
            created_at: 0,
            disabled: false,
            roles: vec![],
        },
        auditor_binding: "b".into(),
        node_id: "n".into(),
        node_name: "nn".into(),
        node_b_id: "nb".into(),
        token_id: "t".into(),
        session_token_id: "st".into(),
        api_token_id: "at".into(),
        recording_id: "rec".into(),
    };
    let cases = matrix(&dummy("a"), &dummy("b"));
    let covered: Vec<&str> = cases
        .iter()
        .map(|c| c.endpoint)
        .chain(NOT_TENANT_DATA.iter().map(|(e, _)| *e))
        .map(|e| e.split_once(' ').unwrap().1)
        .collect();
    for path in all {
        assert!(covered.contains(&path), "{path} is in neither table");
    }
}

fn hash_ok(phc: &str, pw: &str) -> bool {
    adit_server::auth::verify_password(pw, phc)
}

// === RBAC ===

#[tokio::test]
async fn rbac_of_admin_endpoints() {
    let e = env();
    let root = e.root().await;
    let t = Tenant::create(&e, &root, "acme").await;

    // viewer: no join tokens, no users, no roles, no audit.
    let r = e.post("/v1/join-tokens", &t.viewer, json!({})).await;
    r.expect(StatusCode::FORBIDDEN);
    let r = e
        .post(
            "/v1/users",
            &t.viewer,
            json!({"name": "x", "password": USER_PW}),
        )
        .await;
    r.expect(StatusCode::FORBIDDEN);
    assert!(r.message().contains("admin"), "{}", r.message());
    e.get("/v1/users", &t.viewer)
        .await
        .expect(StatusCode::FORBIDDEN);
    e.get("/v1/roles", &t.viewer)
        .await
        .expect(StatusCode::FORBIDDEN);
    e.get("/v1/audit", &t.viewer)
        .await
        .expect(StatusCode::FORBIDDEN);

    // auditor: reads audit and its export, cannot revoke nodes or manage users.
    e.get("/v1/audit", &t.auditor).await.expect(StatusCode::OK);
    e.get("/v1/audit/export", &t.auditor)
        .await
        .expect(StatusCode::OK);
    e.call(
        Method::POST,
        &format!("/v1/nodes/{}/revoke", t.node_name),
        Some(&t.auditor),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    e.call(
        Method::DELETE,
        &format!("/v1/users/{}", t.viewer_user.name),
        Some(&t.auditor),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    // operator (site=a): no audit; sees only site=a nodes.
    let r = e.get("/v1/audit", &t.operator).await;
    r.expect(StatusCode::FORBIDDEN);
    assert!(r.message().contains("auditor"), "{}", r.message());
    e.get("/v1/audit/export", &t.operator)
        .await
        .expect(StatusCode::FORBIDDEN);
    let r = e.get("/v1/nodes", &t.operator).await;
    r.expect(StatusCode::OK);
    assert!(r.text.contains(&t.node_id) && !r.text.contains(&t.node_b_id));
    e.get(&format!("/v1/nodes/{}", t.node_b_id), &t.operator)
        .await
        .expect(StatusCode::NOT_FOUND);
    e.get(&format!("/v1/nodes/{}", t.node_id), &t.operator)
        .await
        .expect(StatusCode::OK);

    // A tenant admin is not a deployment admin.
    e.get("/v1/tenants", &t.admin)
        .await
        .expect(StatusCode::FORBIDDEN);
    let r = e
        .post("/v1/tenants", &t.admin, json!({"name": "evil"}))
        .await;
    r.expect(StatusCode::FORBIDDEN);
    assert!(r.message().contains("default"), "{}", r.message());
    assert_eq!(
        e.store_audit(&t.id, "tenant.create")[0].outcome,
        "denied",
        "refused mutations are audited"
    );

    // An admin narrowed by a selector has no tenant-wide powers.
    e.create_user(
        &t.admin,
        "site-admin",
        USER_PW,
        json!([{"role": "admin", "selector": {"site": "a"}}]),
    )
    .await;
    let site_admin = e.token("acme", "site-admin", USER_PW).await;
    e.get("/v1/users", &site_admin)
        .await
        .expect(StatusCode::FORBIDDEN);
    e.post(
        "/v1/roles",
        &site_admin,
        json!({"user": "site-admin", "role": "admin"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    // Unauthenticated calls are 401 everywhere.
    for path in [
        "/v1/users",
        "/v1/roles",
        "/v1/audit",
        "/v1/audit/export",
        "/v1/tenants",
    ] {
        e.call(Method::GET, path, None, None)
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
}

// === users ===

#[tokio::test]
async fn user_lifecycle() {
    let e = env();
    let root = e.root().await;

    // Create with roles; login works; whoami shows the roles.
    let r = e
        .post(
            "/v1/users",
            &root,
            json!({"name": "alice", "password": "alice-password-1",
                   "roles": [{"role": "operator", "selector": {"site": "a", "env": "prod"}},
                             {"role": "viewer", "selector": {}}]}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert!(
        !r.text.contains("argon2") && !r.text.contains("password"),
        "{}",
        r.text
    );
    let alice: UserInfo = r.json();
    assert_eq!(alice.roles.len(), 2);
    let alice_token = e.token("default", "alice", "alice-password-1").await;
    let who: WhoAmI = e.get("/v1/whoami", &alice_token).await.json();
    assert_eq!(who.user_id, alice.id);
    // Bindings made in the same millisecond have no defined order.
    let sorted = |mut v: Vec<adit_api::RoleInfo>| {
        v.sort_by(|a, b| (&a.role, &a.selector).cmp(&(&b.role, &b.selector)));
        v
    };
    assert_eq!(sorted(who.roles.clone()), sorted(alice.roles.clone()));
    let ev = &e.store_audit(&e.default_tenant, "user.create")[0];
    assert_eq!((ev.actor.as_str(), ev.outcome.as_str()), ("root", "ok"));
    assert_eq!(ev.source.as_deref(), Some(SOURCE));
    assert_eq!(ev.detail["name"], "alice");
    assert!(!ev.detail.to_string().contains("alice-password-1"));

    // Listing never shows hashes.
    let r = e.get("/v1/users", &root).await;
    r.expect(StatusCode::OK);
    assert!(
        !r.text.contains("argon2") && !r.text.contains("hash"),
        "{}",
        r.text
    );
    let names: Vec<String> = r
        .json::<Vec<UserInfo>>()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "root"]);

    // Short password, duplicate, bad name, unknown role, unknown field.
    let r = e
        .post(
            "/v1/users",
            &root,
            json!({"name": "bob", "password": "short-pw"}),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("at least 12"), "{}", r.message());
    let r = e
        .post(
            "/v1/users",
            &root,
            json!({"name": "alice", "password": "another-password-1"}),
        )
        .await;
    r.expect(StatusCode::CONFLICT);
    assert!(r.message().contains("already exists"));
    e.post(
        "/v1/users",
        &root,
        json!({"name": "a/b", "password": "another-password-1"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    let r = e
        .post(
            "/v1/users",
            &root,
            json!({"name": "carol", "password": "another-password-1",
                   "roles": [{"role": "superuser", "selector": {}}]}),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("roles are fixed"), "{}", r.message());
    assert!(e
        .state
        .store
        .user_by_name(&e.default_tenant, "carol")
        .unwrap()
        .is_none());
    e.post(
        "/v1/users",
        &root,
        json!({"name": "dave", "password": "another-password-1", "admin": true}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);

    // Admin reset: old password stops working, new one works; audited.
    e.post(
        "/v1/users/alice/password",
        &root,
        json!({"new": "alice-password-2"}),
    )
    .await
    .expect(StatusCode::OK);
    e.login("default", "alice", "alice-password-1")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let alice_token = e.token("default", "alice", "alice-password-2").await;
    let ev = &e.store_audit(&e.default_tenant, "user.password")[0];
    assert_eq!(ev.detail["own"], false);
    // An admin resetting someone else's must not send `current`.
    e.post(
        &format!("/v1/users/{}/password", alice.id),
        &root,
        json!({"current": "x", "new": "alice-password-3"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    e.post("/v1/users/alice/password", &root, json!({"new": "tiny"}))
        .await
        .expect(StatusCode::BAD_REQUEST);

    // Self change: needs the right current password.
    let r = e
        .post(
            "/v1/users/alice/password",
            &alice_token,
            json!({"new": "alice-password-3"}),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("current"));
    e.post(
        "/v1/users/alice/password",
        &alice_token,
        json!({"current": "wrong-password-0", "new": "alice-password-3"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    assert!(e
        .store_audit(&e.default_tenant, "user.password")
        .iter()
        .any(|ev| ev.outcome == "denied"));
    e.post(
        "/v1/users/alice/password",
        &alice_token,
        json!({"current": "alice-password-2", "new": "alice-password-3"}),
    )
    .await
    .expect(StatusCode::OK);
    // Her change voids tokens issued before it (at one-second resolution, so the test
    // goes on with one issued after it).
    let alice_token = e.token("default", "alice", "alice-password-3").await;
    // A non-admin cannot reset anyone else's.
    e.post(
        "/v1/users/root/password",
        &alice_token,
        json!({"new": "stolen-password-1"}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    // The last admin cannot be deleted or lose the role, nor delete itself.
    e.call(Method::DELETE, "/v1/users/root", Some(&root), None)
        .await
        .expect(StatusCode::CONFLICT);
    let r = e.get("/v1/roles?user=root", &root).await;
    let root_binding = r.json::<Vec<RoleBindingInfo>>()[0].id.clone();
    let r = e
        .call(
            Method::DELETE,
            &format!("/v1/roles/{root_binding}"),
            Some(&root),
            None,
        )
        .await;
    r.expect(StatusCode::CONFLICT);
    assert!(r.message().contains("without an admin"), "{}", r.message());

    // Delete: the user's existing token stops working at once; audited.
    e.call(Method::DELETE, "/v1/users/alice", Some(&root), None)
        .await
        .expect(StatusCode::NO_CONTENT);
    e.get("/v1/whoami", &alice_token)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    e.login("default", "alice", "alice-password-3")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    e.call(Method::DELETE, "/v1/users/alice", Some(&root), None)
        .await
        .expect(StatusCode::NOT_FOUND);
    let ev = &e.store_audit(&e.default_tenant, "user.delete")[0];
    assert_eq!(ev.detail["user_id"], json!(alice.id));
    assert!(e
        .state
        .store
        .list_role_bindings(&e.default_tenant, Some(&alice.id))
        .unwrap()
        .is_empty());

    // A name can be reused after deletion; the old token still does not work.
    e.create_user(&root, "alice", "alice-password-9", json!([]))
        .await;
    e.get("/v1/whoami", &alice_token)
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn role_bindings() {
    let e = env();
    let root = e.root().await;
    let bob = e.create_user(&root, "bob", USER_PW, json!([])).await;
    let bob_token = e.token("default", "bob", USER_PW).await;
    e.get("/v1/nodes", &bob_token)
        .await
        .expect(StatusCode::FORBIDDEN);

    // Bind by name; takes effect on the existing token at once.
    let r = e
        .post(
            "/v1/roles",
            &root,
            json!({"user": "bob", "role": "viewer", "selector": {"site": "a"}}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let b: RoleBindingInfo = r.json();
    assert_eq!(
        (b.user.as_str(), b.user_id.as_str()),
        ("bob", bob.id.as_str())
    );
    assert_eq!(b.selector, labels(&[("site", "a")]));
    e.get("/v1/nodes", &bob_token).await.expect(StatusCode::OK);
    let ev = &e.store_audit(&e.default_tenant, "role.bind")[0];
    assert_eq!(ev.detail["binding_id"], json!(b.id));
    assert_eq!(ev.source.as_deref(), Some(SOURCE));

    // Duplicate, unknown role, unknown user, bad selector.
    e.post(
        "/v1/roles",
        &root,
        json!({"user": bob.id, "role": "viewer", "selector": {"site": "a"}}),
    )
    .await
    .expect(StatusCode::CONFLICT);
    let r = e
        .post("/v1/roles", &root, json!({"user": "bob", "role": "owner"}))
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("admin, operator, viewer, auditor"));
    e.post(
        "/v1/roles",
        &root,
        json!({"user": "nobody", "role": "viewer"}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    e.post(
        "/v1/roles",
        &root,
        json!({"user": "bob", "role": "viewer", "selector": {"bad key": "x"}}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);

    // List: all, and one user's.
    let all: Vec<RoleBindingInfo> = e.get("/v1/roles", &root).await.json();
    assert_eq!(all.len(), 2);
    let bobs: Vec<RoleBindingInfo> = e.get("/v1/roles?user=bob", &root).await.json();
    assert_eq!(bobs, vec![b.clone()]);
    e.get("/v1/roles?user=nobody", &root)
        .await
        .expect(StatusCode::NOT_FOUND);
    e.get("/v1/roles?usr=bob", &root)
        .await
        .expect(StatusCode::BAD_REQUEST);

    // A second admin makes the first one's binding removable.
    e.post("/v1/roles", &root, json!({"user": "bob", "role": "admin"}))
        .await
        .expect(StatusCode::CREATED);
    let root_binding = all.iter().find(|x| x.user == "root").unwrap().id.clone();
    e.call(
        Method::DELETE,
        &format!("/v1/roles/{}", b.id),
        Some(&root),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    e.call(
        Method::DELETE,
        &format!("/v1/roles/{}", b.id),
        Some(&root),
        None,
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    e.call(
        Method::DELETE,
        &format!("/v1/roles/{root_binding}"),
        Some(&bob_token),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    // root is no longer an admin: refused at once.
    e.get("/v1/users", &root)
        .await
        .expect(StatusCode::FORBIDDEN);
    let ev = e.store_audit(&e.default_tenant, "role.unbind");
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].actor, "bob");
}

#[tokio::test]
async fn tenant_creation() {
    let e = env();
    let root = e.root().await;
    let r = e
        .post(
            "/v1/tenants",
            &root,
            json!({"name": "acme", "admin_user": "boss", "admin_password": "boss-password-12"}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert!(!r.text.contains("argon2"));
    let created: CreatedTenant = r.json();
    assert_eq!(created.tenant.name, "acme");
    let admin = created.admin_user.unwrap();
    assert_eq!(admin.roles[0].role, "admin");
    assert!(admin.roles[0].selector.is_empty());
    let boss = e.token("acme", "boss", "boss-password-12").await;
    let who: WhoAmI = e.get("/v1/whoami", &boss).await.json();
    assert_eq!(
        (who.tenant.as_str(), who.tenant_id.as_str()),
        ("acme", created.tenant.id.as_str())
    );
    e.get("/v1/users", &boss).await.expect(StatusCode::OK);
    let ev = &e.store_audit(&e.default_tenant, "tenant.create")[0];
    assert_eq!(ev.detail["name"], "acme");
    assert_eq!(ev.source.as_deref(), Some(SOURCE));

    // Without an admin; duplicates; bad names; half-given admins; short passwords.
    e.post("/v1/tenants", &root, json!({"name": "empty"}))
        .await
        .expect(StatusCode::CREATED);
    e.post("/v1/tenants", &root, json!({"name": "acme"}))
        .await
        .expect(StatusCode::CONFLICT);
    e.post("/v1/tenants", &root, json!({"name": "Bad Name"}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    e.post(
        "/v1/tenants",
        &root,
        json!({"name": "x1", "admin_user": "boss"}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    let r = e
        .post(
            "/v1/tenants",
            &root,
            json!({"name": "x2", "admin_user": "boss", "admin_password": "short"}),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("at least 12"));
    assert!(e.state.store.tenant_by_name("x2").unwrap().is_none());
    let tenants: Vec<TenantInfo> = e.get("/v1/tenants", &root).await.json();
    assert_eq!(tenants.len(), 3);
}

// === audit ===

/// Appends an event at `time` directly (so times are controlled).
fn append(e: &Env, time: i64, actor: &str, node: Option<&str>, action: &str) {
    e.state
        .store
        .append_audit(&AuditEvent {
            seq: 0,
            time,
            tenant_id: e.default_tenant.clone(),
            actor: actor.into(),
            source: Some("198.51.100.1:1".into()),
            node_id: node.map(str::to_string),
            session_id: None,
            action: action.into(),
            outcome: "ok".into(),
            detail: json!({"n": time}),
        })
        .unwrap();
}

fn times(r: &Reply) -> Vec<i64> {
    r.expect(StatusCode::OK);
    r.json::<Vec<AuditEventInfo>>()
        .into_iter()
        .map(|e| e.time)
        .collect()
}

#[tokio::test]
async fn audit_filters_and_export() {
    let e = env();
    let root = e.root().await;
    let n1 = e.enroll(&root, "kiosk-1", &[]).await;
    let n2 = e.enroll(&root, "kiosk-2", &[]).await;
    // Everything so far happened "now"; these are in the past, at known times.
    append(&e, 1_000, "alice", Some(&n1.node_id), "stream.open");
    append(&e, 2_000, "bob", Some(&n2.node_id), "stream.open");
    append(&e, 3_000, "alice", Some(&n2.node_id), "node.revoke");
    append(&e, 4_000, "alice", None, "login");

    let q = |s: &str| format!("/v1/audit?{s}");
    assert_eq!(
        times(&e.get(&q("until=5000"), &root).await),
        [1000, 2000, 3000, 4000]
    );
    assert_eq!(
        times(&e.get(&q("since=2000&until=4000"), &root).await),
        [2000, 3000]
    );
    assert_eq!(
        times(&e.get(&q("until=5000&actor=alice"), &root).await),
        [1000, 3000, 4000]
    );
    assert_eq!(
        times(&e.get(&q("until=5000&action=stream.open"), &root).await),
        [1000, 2000]
    );
    assert_eq!(
        times(&e.get(&q("until=5000&node=kiosk-2"), &root).await),
        [2000, 3000]
    );
    let by_id = e
        .get(&q(&format!("until=5000&node={}", n1.node_id)), &root)
        .await;
    assert_eq!(times(&by_id), [1000]);
    let ev: Vec<AuditEventInfo> = by_id.json();
    assert_eq!(ev[0].node.as_deref(), Some("kiosk-1"));
    assert_eq!(ev[0].source.as_deref(), Some("198.51.100.1:1"));
    assert_eq!(
        times(
            &e.get(
                &q("until=5000&actor=alice&node=kiosk-2&action=node.revoke"),
                &root
            )
            .await
        ),
        [3000]
    );
    // The events the API itself recorded (enrolments, login) are there, newest last.
    let r = e.get(&q("action=node.enroll"), &root).await;
    let enrolls: Vec<AuditEventInfo> = r.json();
    assert_eq!(enrolls.len(), 2);
    assert_eq!(enrolls[1].node.as_deref(), Some("kiosk-2"));

    // Paging with after_seq and limit.
    let all: Vec<AuditEventInfo> = e.get("/v1/audit", &root).await.json();
    let page1: Vec<AuditEventInfo> = e.get(&q("limit=2"), &root).await.json();
    assert_eq!(page1, all[..2]);
    let page2: Vec<AuditEventInfo> = e
        .get(&q(&format!("limit=2&after_seq={}", page1[1].seq)), &root)
        .await
        .json();
    assert_eq!(page2, all[2..4]);

    // Bad queries are 400 with an ApiError; an unknown node is 404.
    for bad in [
        "since=yesterday",
        "limit=0",
        "limit=10001",
        "colour=red",
        "since=5&until=5",
    ] {
        let r = e.get(&q(bad), &root).await;
        r.expect(StatusCode::BAD_REQUEST);
    }
    let r = e.get(&q("node=nope"), &root).await;
    r.expect(StatusCode::NOT_FOUND);
    assert!(r.message().contains("nope"));

    // Export: JSON Lines, one event per line, same events as the listing.
    let r = e.get("/v1/audit/export", &root).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.content_type, "application/x-ndjson");
    assert!(r.text.ends_with('\n'));
    let lines: Vec<AuditEventInfo> = r.lines();
    let all: Vec<AuditEventInfo> = e.get("/v1/audit", &root).await.json();
    assert_eq!(lines, all);
    let r = e
        .get("/v1/audit/export?until=5000&actor=alice", &root)
        .await;
    assert_eq!(r.lines::<AuditEventInfo>().len(), 3);
    e.get("/v1/audit/export?node=nope", &root)
        .await
        .expect(StatusCode::NOT_FOUND);
    e.get("/v1/audit/export?limit=0", &root)
        .await
        .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn audit_export_pages_through_many_events() {
    let e = env();
    let root = e.root().await;
    const N: i64 = 2_345;
    for i in 0..N {
        append(&e, 10_000 + i, "bulk", None, "stream.open");
    }
    let r = e.get("/v1/audit/export?actor=bulk", &root).await;
    r.expect(StatusCode::OK);
    let lines: Vec<AuditEventInfo> = r.lines();
    assert_eq!(lines.len() as i64, N);
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(lines.last().unwrap().time, 10_000 + N - 1);
    // A limit caps the export across batches.
    let r = e.get("/v1/audit/export?actor=bulk&limit=1500", &root).await;
    assert_eq!(r.lines::<AuditEventInfo>().len(), 1500);
    // The listing is capped by its limit; the export is not.
    let r = e.get("/v1/audit?actor=bulk", &root).await;
    assert_eq!(r.json::<Vec<AuditEventInfo>>().len(), 1000);
    // Every line, including the export's total, is the tenant's store count.
    let stored = e
        .state
        .store
        .list_audit(&e.default_tenant, &AuditFilter::default())
        .unwrap()
        .len();
    let r = e.get("/v1/audit/export", &root).await;
    assert_eq!(r.lines::<Value>().len(), stored);
}

#[test]
fn api_roles_match_store_roles() {
    assert_eq!(adit_api::ROLE_NAMES, adit_store::ROLES);
}
