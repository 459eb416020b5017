//! The HTTP API driven in memory (no sockets): the real router, the real SQLite store
//! (in memory), a real CA and signing key.

mod common;

use std::sync::Arc;

use adit_api::{
    CaInfo, CreatedJoinToken, EnrollResponse, JoinTokenInfo, LoginResponse, NodeInfo, WhoAmI,
};
use adit_pki::{AccessClaims, CertificateAuthority, JoinToken, SigningKey, AUD_ACCESS};
use adit_server::api::router;
use adit_server::auth::hash_password;
use adit_server::state::{AppState, PeerCert, Settings};
use adit_store::{AuditFilter, JoinTokenRecord, Labels};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use common::{labels, request, send, test_state, Reply};
use serde_json::{json, Value};
use tower::ServiceExt;

const ADMIN_PW: &str = "admin-password-1";

struct Env {
    state: AppState,
    app: Router,
    tenant_id: String,
}

fn env() -> Env {
    let state = test_state(Settings::default());
    let store = &state.store;
    let tenant = store.create_tenant("default").unwrap();
    let admin = store
        .create_user(&tenant.id, "admin", &hash_password(ADMIN_PW).unwrap())
        .unwrap();
    store
        .bind_role(&tenant.id, &admin.id, "admin", &Labels::new())
        .unwrap();
    Env {
        app: router(state.clone()),
        state,
        tenant_id: tenant.id,
    }
}

impl Env {
    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.app, req).await
    }

    fn request(
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Request<Body> {
        request(method, path, token, body, None)
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

    async fn login(&self, user: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"user": user, "password": password})),
        )
        .await
    }

    async fn token(&self, user: &str, password: &str) -> String {
        let r = self.login(user, password).await;
        r.expect(StatusCode::OK);
        r.json::<LoginResponse>().access_token
    }

    async fn admin(&self) -> String {
        self.token("admin", ADMIN_PW).await
    }

    /// Creates a user of the `default` tenant with one role binding.
    fn user(&self, name: &str, role: &str, selector: &[(&str, &str)]) {
        let u = self
            .state
            .store
            .create_user(&self.tenant_id, name, &hash_password("pw-of-user").unwrap())
            .unwrap();
        self.state
            .store
            .bind_role(&self.tenant_id, &u.id, role, &labels(selector))
            .unwrap();
    }

    async fn join_token(&self, admin: &str, body: Value) -> CreatedJoinToken {
        let r = self
            .call(Method::POST, "/v1/join-tokens", Some(admin), Some(body))
            .await;
        r.expect(StatusCode::CREATED);
        r.json()
    }

    async fn enroll(&self, token: &str, name: &str, extra_labels: Value) -> (Reply, String) {
        let key = adit_pki::generate_node_key().unwrap();
        self.enroll_with_key(token, name, extra_labels, key.expose())
            .await
    }

    /// [`Env::enroll`] with a CSR for `key_pem`.
    async fn enroll_with_key(
        &self,
        token: &str,
        name: &str,
        extra_labels: Value,
        key_pem: &str,
    ) -> (Reply, String) {
        let key = adit_pki::Secret::new(key_pem);
        let csr = adit_pki::make_csr(key.expose(), name).unwrap();
        let r = self
            .call(
                Method::POST,
                "/v1/enroll",
                None,
                Some(json!({
                    "token": token, "name": name, "csr_pem": csr, "labels": extra_labels,
                    "facts": {"agent_version": "0.1.0", "os": "linux", "hostname": name,
                              "addresses": ["10.0.0.5"], "tunnel_mode": "persistent"}
                })),
            )
            .await;
        (r, key.expose().to_string())
    }

    /// Enrols a node with a fresh single-use token; returns the response.
    async fn enrolled(
        &self,
        admin: &str,
        name: &str,
        node_labels: &[(&str, &str)],
    ) -> EnrollResponse {
        let t = self
            .join_token(admin, json!({"labels": labels(node_labels)}))
            .await;
        let (r, _) = self.enroll(&t.token, name, json!({})).await;
        r.expect(StatusCode::OK);
        r.json()
    }

    async fn nodes(&self, token: &str) -> Vec<String> {
        let r = self.call(Method::GET, "/v1/nodes", Some(token), None).await;
        r.expect(StatusCode::OK);
        r.json::<Vec<NodeInfo>>()
            .into_iter()
            .map(|n| n.name)
            .collect()
    }

    fn audit(&self, action: &str) -> Vec<adit_store::AuditEvent> {
        self.state
            .store
            .list_audit(
                &self.tenant_id,
                &AuditFilter {
                    action: Some(action.into()),
                    ..Default::default()
                },
            )
            .unwrap()
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

// === health, metrics, trust distribution ===

#[tokio::test]
async fn health_ready_metrics_ca_jwks() {
    let e = env();
    let r = e.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ok"));
    e.call(Method::GET, "/readyz", None, None)
        .await
        .expect(StatusCode::OK);

    let resp = e
        .app
        .clone()
        .oneshot(Env::request(Method::GET, "/metrics", None, None))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    // The two earlier requests and this one were counted.
    assert!(text.contains("adit_http_requests_total 3"), "{text}");

    let ca: CaInfo = e.call(Method::GET, "/v1/ca", None, None).await.json();
    assert_eq!(ca.ca_pem, e.state.ca.cert_pem());
    assert_eq!(ca.pin, e.state.ca.pin().to_string());

    let jwks = e.call(Method::GET, "/v1/jwks", None, None).await.body;
    let keys = adit_pki::Jwks::from_json(&jwks).unwrap();
    assert_eq!(keys.0, vec![e.state.signer.verifying_key()]);

    let r = e.call(Method::GET, "/v1/nope", None, None).await;
    r.expect(StatusCode::NOT_FOUND);
    let r = e.call(Method::DELETE, "/v1/nodes", None, None).await;
    r.expect(StatusCode::METHOD_NOT_ALLOWED);
}

// === login ===

#[tokio::test]
async fn login_whoami_and_failures() {
    let e = env();
    let r = e.login("admin", ADMIN_PW).await;
    r.expect(StatusCode::OK);
    let login: LoginResponse = r.json();
    assert_eq!(
        (login.user.as_str(), login.tenant.as_str()),
        ("admin", "default")
    );
    assert!(login.expires_at > adit_pki::now_unix());

    let who: WhoAmI = e
        .call(Method::GET, "/v1/whoami", Some(&login.access_token), None)
        .await
        .json();
    assert_eq!(who.user, "admin");
    assert_eq!(who.tenant, "default");
    assert_eq!(who.tenant_id, e.tenant_id);
    assert_eq!(who.roles.len(), 1);
    assert_eq!(who.roles[0].role, "admin");
    assert_eq!(who.expires_at, login.expires_at);

    // With an explicit tenant too.
    e.call(
        Method::POST,
        "/v1/login",
        None,
        Some(json!({"tenant": "default", "user": "admin", "password": ADMIN_PW})),
    )
    .await
    .expect(StatusCode::OK);

    let wrong = e.login("admin", "wrong").await;
    wrong.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.code(), "unauthenticated");
    let unknown = e.login("mallory", "wrong").await;
    unknown.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body, "same answer for both");
    assert!(!wrong.text.contains("wrong\""), "no password echoed");
    let unknown_tenant = e
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"tenant": "nope", "user": "admin", "password": ADMIN_PW})),
        )
        .await;
    assert_eq!(unknown_tenant.body, wrong.body);

    let m = &e.state.metrics.logins_failed;
    assert_eq!(m.load(std::sync::atomic::Ordering::Relaxed), 3);

    let events = e.audit("login");
    assert!(events
        .iter()
        .any(|ev| ev.outcome == "ok" && ev.actor == "admin"));
    assert!(events.iter().any(|ev| ev.outcome == "denied"));
    for ev in &events {
        let d = ev.detail.to_string();
        assert!(!d.contains(ADMIN_PW) && !d.contains("wrong\""), "{d}");
    }

    // A disabled user cannot log in, and its existing token stops working.
    e.user("bob", "viewer", &[]);
    let bob = e.token("bob", "pw-of-user").await;
    let bob_user = e
        .state
        .store
        .user_by_name(&e.tenant_id, "bob")
        .unwrap()
        .unwrap();
    e.state
        .store
        .set_user_disabled(&e.tenant_id, &bob_user.id, true)
        .unwrap();
    let r = e.login("bob", "pw-of-user").await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(r.body, wrong.body);
    e.call(Method::GET, "/v1/whoami", Some(&bob), None)
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_ambiguous_user_needs_tenant() {
    let e = env();
    let other = e.state.store.create_tenant("other").unwrap();
    e.state
        .store
        .create_user(&other.id, "admin", &hash_password("x").unwrap())
        .unwrap();
    let r = e.login("admin", ADMIN_PW).await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("pass --tenant"), "{}", r.message());
    e.call(
        Method::POST,
        "/v1/login",
        None,
        Some(json!({"tenant": "default", "user": "admin", "password": ADMIN_PW})),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn login_rate_limit_kicks_in() {
    let e = env();
    for _ in 0..5 {
        e.login("admin", "guess")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    // Locked out now, even with the right password.
    let r = e.login("admin", ADMIN_PW).await;
    r.expect(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "rate_limited");
    assert!(r.message().contains("wait"), "{}", r.message());
    // Other users are not affected.
    e.user("carol", "viewer", &[]);
    e.login("carol", "pw-of-user").await.expect(StatusCode::OK);
    // A different router (another server instance) has its own limiter.
    let fresh = router(e.state.clone());
    let resp = fresh
        .oneshot(Env::request(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"user": "admin", "password": ADMIN_PW})),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// === bearer tokens ===

#[tokio::test]
async fn bearer_missing_garbage_expired_foreign() {
    let e = env();
    let r = e.call(Method::GET, "/v1/whoami", None, None).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthenticated");
    assert!(r.message().contains("adit login"), "{}", r.message());

    let r = e
        .call(Method::GET, "/v1/nodes", Some("garbage"), None)
        .await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("adit login"));

    let req = Request::builder()
        .uri("/v1/whoami")
        .header(header::AUTHORIZATION, "Basic YWRtaW46eA==")
        .body(Body::empty())
        .unwrap();
    e.send(req).await.expect(StatusCode::UNAUTHORIZED);

    let admin = e
        .state
        .store
        .user_by_name(&e.tenant_id, "admin")
        .unwrap()
        .unwrap();
    let now = adit_pki::now_unix();
    let claims = |aud: &str, exp: i64| AccessClaims {
        sub: admin.id.clone(),
        name: admin.name.clone(),
        ten: e.tenant_id.clone(),
        aud: aud.into(),
        iat: now - 3600,
        exp,
        jti: "j".into(),
        api: false,
    };
    let expired = e.state.signer.sign(&claims(AUD_ACCESS, now - 600)).unwrap();
    let r = e
        .call(Method::GET, "/v1/whoami", Some(&expired), None)
        .await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("expired"), "{}", r.message());

    // A grant is not an access token.
    let grant = e
        .state
        .signer
        .sign(&claims(adit_pki::AUD_GRANT, now + 600))
        .unwrap();
    e.call(Method::GET, "/v1/whoami", Some(&grant), None)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // Signed by another key.
    let other = SigningKey::generate().unwrap();
    let forged = other.sign(&claims(AUD_ACCESS, now + 600)).unwrap();
    e.call(Method::GET, "/v1/whoami", Some(&forged), None)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // Still valid with our key.
    let good = e.state.signer.sign(&claims(AUD_ACCESS, now + 600)).unwrap();
    e.call(Method::GET, "/v1/whoami", Some(&good), None)
        .await
        .expect(StatusCode::OK);
}

// === join tokens and enrolment ===

#[tokio::test]
async fn join_token_enroll_and_list() {
    let e = env();
    let admin = e.admin().await;
    let t = e
        .join_token(&admin, json!({"labels": {"site": "a", "role": "gw"}}))
        .await;
    assert!(t.token.starts_with("adit1."));
    assert_eq!(t.uses_allowed, Some(1));
    let now = adit_store::now_millis();
    assert!((t.expires_at - now - 3_600_000).abs() < 60_000);

    // Listing shows no secrets.
    let r = e
        .call(Method::GET, "/v1/join-tokens", Some(&admin), None)
        .await;
    r.expect(StatusCode::OK);
    let secret = t.token.split('.').nth(2).unwrap();
    assert!(!r.text.contains(secret));
    let list: Vec<JoinTokenInfo> = r.json();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].id.as_str(), list[0].uses), (t.id.as_str(), 0));
    assert_eq!(list[0].created_by, "admin");

    // A device cannot choose or change its labels: only repeat the token's.
    for asked in [json!({"site": "b"}), json!({"env": "prod"})] {
        let (r, _) = e.enroll(&t.token, "edge-1", asked).await;
        r.expect(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains("labels are set by the server"),
            "{}",
            r.message()
        );
    }
    let (r, key_pem) = e.enroll(&t.token, "edge-1", json!({"site": "a"})).await;
    r.expect(StatusCode::OK);
    let enrolled: EnrollResponse = r.json();
    assert_eq!(enrolled.node_name, "edge-1");
    assert_eq!(enrolled.tenant_id, e.tenant_id);
    assert_eq!(enrolled.ca_pem, e.state.ca.cert_pem());
    assert!(adit_pki::Jwks::from_json(&enrolled.grant_jwks).is_ok());
    assert!(!key_pem.is_empty());

    // The certificate names the node and was recorded before being returned.
    let der = pem_to_der(&enrolled.cert_pem);
    assert_eq!(
        adit_pki::node_id_from_cert_der(&der).unwrap(),
        enrolled.node_id
    );
    let serial = adit_pki::serial_hex_from_cert_der(&der).unwrap();
    assert!(!e.state.store.is_serial_revoked(&serial).unwrap());
    let node = e
        .state
        .store
        .node_any_tenant(&enrolled.node_id)
        .unwrap()
        .unwrap();
    assert_eq!(node.cert_serial.as_deref(), Some(serial.as_str()));
    assert_eq!(node.cert_not_after, Some(enrolled.not_after));
    assert_eq!(node.hostname.as_deref(), Some("edge-1"));

    // The token's labels, exactly (the refused attempts spent no use).
    assert_eq!(node.labels, labels(&[("site", "a"), ("role", "gw")]));

    assert_eq!(e.nodes(&admin).await, vec!["edge-1"]);
    let info: NodeInfo = e
        .call(Method::GET, "/v1/nodes/edge-1", Some(&admin), None)
        .await
        .json();
    assert_eq!(info.id, enrolled.node_id);
    assert_eq!(info.agent_version.as_deref(), Some("0.1.0"));
    let by_id: NodeInfo = e
        .call(
            Method::GET,
            &format!("/v1/nodes/{}", enrolled.node_id),
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(by_id, info);

    assert_eq!(e.audit("node.enroll").len(), 1);
    assert_eq!(e.audit("join_token.create").len(), 1);
    assert_eq!(
        e.state
            .metrics
            .enrollments
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // Single use: the second enrolment is refused.
    let (r, _) = e.enroll(&t.token, "edge-2", json!({})).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("already used"), "{}", r.message());
}

#[tokio::test]
async fn join_token_options_and_revocation() {
    let e = env();
    let admin = e.admin().await;
    let t = e
        .join_token(&admin, json!({"uses": 0, "ttl_secs": 60}))
        .await;
    assert_eq!(t.uses_allowed, None);
    for name in ["u-1", "u-2", "u-3"] {
        e.enroll(&t.token, name, json!({}))
            .await
            .0
            .expect(StatusCode::OK);
    }

    for bad in [
        json!({"ttl_secs": 0}),
        json!({"ttl_secs": 8 * 24 * 3600}),
        json!({"labels": {"bad key": "x"}}),
    ] {
        e.call(Method::POST, "/v1/join-tokens", Some(&admin), Some(bad))
            .await
            .expect(StatusCode::BAD_REQUEST);
    }

    let r = e
        .call(
            Method::DELETE,
            &format!("/v1/join-tokens/{}", t.id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (r, _) = e.enroll(&t.token, "u-4", json!({})).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("revoked"), "{}", r.message());
    assert_eq!(e.audit("join_token.revoke").len(), 1);

    let r = e
        .call(
            Method::DELETE,
            "/v1/join-tokens/000000000000",
            Some(&admin),
            None,
        )
        .await;
    r.expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn enroll_refusals() {
    let e = env();
    let admin = e.admin().await;

    // Expired.
    let tok = JoinToken::generate(e.state.ca.pin()).unwrap();
    let now = adit_store::now_millis();
    e.state
        .store
        .create_join_token(&JoinTokenRecord {
            id: tok.id.clone(),
            tenant_id: e.tenant_id.clone(),
            secret_hash: adit_pki::hash_secret(tok.secret.expose()),
            created_by: "admin".into(),
            created_at: now - 7_200_000,
            expires_at: now - 3_600_000,
            uses_allowed: Some(1),
            uses: 0,
            labels: Labels::new(),
            revoked_at: None,
        })
        .unwrap();
    let (r, _) = e
        .enroll(tok.to_token_string().expose(), "late", json!({}))
        .await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("expired"), "{}", r.message());

    let t = e.join_token(&admin, json!({"uses": 5})).await;
    let parts: Vec<&str> = t.token.split('.').collect();

    // Tampered secret (still well-formed).
    let mut secret: Vec<char> = parts[2].chars().collect();
    secret[0] = if secret[0] == 'A' { 'B' } else { 'A' };
    let secret: String = secret.into_iter().collect();
    let tampered = format!("adit1.{}.{secret}.{}", parts[1], parts[3]);
    let (r, _) = e.enroll(&tampered, "x", json!({})).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(
        r.message().contains("invalid join token"),
        "{}",
        r.message()
    );

    // Unknown id.
    let unknown = format!("adit1.ffffffffffff.{}.{}", parts[2], parts[3]);
    e.enroll(&unknown, "x", json!({}))
        .await
        .0
        .expect(StatusCode::UNAUTHORIZED);

    // Wrong CA pin.
    let other_ca = CertificateAuthority::generate("Other CA").unwrap();
    let wrong_pin = format!(
        "adit1.{}.{}.{}",
        parts[1],
        parts[2],
        other_ca.pin().to_hex()
    );
    let (r, _) = e.enroll(&wrong_pin, "x", json!({})).await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("another CA"), "{}", r.message());

    // Malformed.
    let (r, _) = e.enroll("adit1.nope", "x", json!({})).await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("join token is malformed"),
        "{}",
        r.message()
    );

    // Bad names, bad CSR: refused without spending a use.
    for bad in [
        "",
        "Upper",
        "-lead",
        "trail-",
        "under_score",
        &"a".repeat(64),
        // A name that reads as another node's id.
        "0b5e2a9c-4f3d-4e8a-9b1c-2d3e4f5a6b7c",
        "0b5e2a9c4f3d4e8a9b1c2d3e4f5a6b7c",
    ] {
        let (r, _) = e.enroll(&t.token, bad, json!({})).await;
        r.expect(StatusCode::BAD_REQUEST);
        assert!(r.message().contains("invalid node name"), "{}", r.message());
    }
    let r = e
        .call(
            Method::POST,
            "/v1/enroll",
            None,
            Some(json!({"token": t.token, "name": "ok", "csr_pem": "not a csr"})),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("certificate signing request"),
        "{}",
        r.message()
    );
    let rec = e
        .state
        .store
        .join_token(&e.tenant_id, &t.id)
        .unwrap()
        .unwrap();
    assert_eq!(rec.uses, 0);

    // Duplicate name.
    e.enroll(&t.token, "dup", json!({}))
        .await
        .0
        .expect(StatusCode::OK);
    let (r, _) = e.enroll(&t.token, "dup", json!({})).await;
    r.expect(StatusCode::CONFLICT);
    assert!(
        r.message().contains("a node named dup already exists"),
        "{}",
        r.message()
    );

    let denied = e.audit("node.enroll");
    assert!(denied.iter().any(|ev| ev.outcome == "denied"));
    for ev in &denied {
        assert!(
            !ev.detail.to_string().contains(parts[2]),
            "no secret in audit"
        );
    }
}

/// An enrolment the server committed but whose answer the device never got: the same
/// device (same join token, same key) asks again and gets its node back with a new
/// certificate; anyone else still finds the name taken.
#[tokio::test]
async fn a_retried_enrolment_gets_its_node_again() {
    let e = env();
    let admin = e.admin().await;
    let t = e.join_token(&admin, json!({})).await;
    let key = adit_pki::generate_node_key().unwrap();
    let (r, _) = e
        .enroll_with_key(&t.token, "edge-x", json!({}), key.expose())
        .await;
    r.expect(StatusCode::OK);
    let first: EnrollResponse = r.json();

    let (r, _) = e
        .enroll_with_key(&t.token, "edge-x", json!({}), key.expose())
        .await;
    r.expect(StatusCode::OK);
    let second: EnrollResponse = r.json();
    assert_eq!(second.node_id, first.node_id, "the same node");
    assert_ne!(second.cert_pem, first.cert_pem, "a new certificate");
    let serial = |pem: &str| adit_pki::serial_hex_from_cert_der(&pem_to_der(pem)).unwrap();
    let store = &e.state.store;
    assert!(
        store.is_serial_revoked(&serial(&first.cert_pem)).unwrap(),
        "undelivered one revoked"
    );
    assert!(!store.is_serial_revoked(&serial(&second.cert_pem)).unwrap());
    let node = store.node_any_tenant(&first.node_id).unwrap().unwrap();
    assert_eq!(node.cert_serial, Some(serial(&second.cert_pem)));
    let tok = store.join_token(&e.tenant_id, &t.id).unwrap().unwrap();
    assert_eq!(tok.uses, 1, "a retry takes no use of the token");
    assert_eq!(store.list_nodes(&e.tenant_id).unwrap().len(), 1);
    let enrolments = e.audit("node.enroll");
    assert_eq!(enrolments.len(), 2);
    assert!(enrolments.iter().any(|ev| ev.detail["retry"] == json!(true)
        && ev.detail["replaces"] == json!(serial(&first.cert_pem))));

    // Another key with that token, or that key with another token: the name is taken.
    let (r, _) = e.enroll(&t.token, "edge-x", json!({})).await;
    r.expect(StatusCode::CONFLICT);
    assert!(
        r.message().contains("a node named edge-x already exists"),
        "{}",
        r.message()
    );
    let t2 = e.join_token(&admin, json!({})).await;
    let (r, _) = e
        .enroll_with_key(&t2.token, "edge-x", json!({}), key.expose())
        .await;
    r.expect(StatusCode::CONFLICT);
    // A revoked token does not enrol again.
    assert!(store
        .revoke_join_token(&e.tenant_id, &t.id, adit_store::now_millis())
        .unwrap());
    let (r, _) = e
        .enroll_with_key(&t.token, "edge-x", json!({}), key.expose())
        .await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("revoked"), "{}", r.message());
}

// === renewal and revocation ===

#[tokio::test]
async fn renew_then_revoke_refuses_renewal() {
    let e = env();
    let admin = e.admin().await;
    let t = e.join_token(&admin, json!({})).await;
    let (r, key_pem) = e.enroll(&t.token, "edge-r", json!({})).await;
    r.expect(StatusCode::OK);
    let first: EnrollResponse = r.json();

    let renew = |cert_pem: Option<String>| {
        let csr = adit_pki::make_csr(&key_pem, "edge-r").unwrap();
        let mut req = Env::request(
            Method::POST,
            "/v1/renew",
            None,
            Some(json!({"csr_pem": csr})),
        );
        if let Some(pem) = cert_pem {
            req.extensions_mut()
                .insert(PeerCert(Arc::new(pem_to_der(&pem))));
        }
        req
    };

    // No client certificate.
    let r = e.send(renew(None)).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r
        .message()
        .contains("renewal needs the node's current client certificate"));

    let r = e.send(renew(Some(first.cert_pem.clone()))).await;
    r.expect(StatusCode::OK);
    let second: EnrollResponse = r.json();
    assert_eq!(second.node_id, first.node_id);
    assert_ne!(second.cert_pem, first.cert_pem);
    let serial2 = adit_pki::serial_hex_from_cert_der(&pem_to_der(&second.cert_pem)).unwrap();
    let node = e
        .state
        .store
        .node_any_tenant(&first.node_id)
        .unwrap()
        .unwrap();
    assert_eq!(node.cert_serial.as_deref(), Some(serial2.as_str()));
    assert_eq!(e.audit("node.renew").len(), 1);

    // An unrecorded certificate of the right CA is refused (fails closed).
    let key = adit_pki::generate_node_key().unwrap();
    let csr = adit_pki::make_csr(key.expose(), "x").unwrap();
    let stray = e
        .state
        .ca
        .sign_node_csr(&csr, &first.node_id, std::time::Duration::from_secs(60))
        .unwrap();
    e.send(renew(Some(stray.cert_pem)))
        .await
        .expect(StatusCode::FORBIDDEN);

    let r = e
        .call(Method::POST, "/v1/nodes/edge-r/revoke", Some(&admin), None)
        .await;
    r.expect(StatusCode::OK);
    let info: NodeInfo = r.json();
    assert!(info.revoked_at.is_some());
    assert_eq!(e.audit("node.revoke").len(), 1);

    for cert in [first.cert_pem, second.cert_pem] {
        let r = e.send(renew(Some(cert))).await;
        r.expect(StatusCode::FORBIDDEN);
        assert!(r.message().contains("node is revoked"), "{}", r.message());
    }

    // The name of a revoked node may be reused by a new enrolment.
    let t = e.join_token(&admin, json!({})).await;
    e.enroll(&t.token, "edge-r", json!({}))
        .await
        .0
        .expect(StatusCode::OK);
}

// === authorization ===

/// Labels are the server's: only an admin of the whole tenant changes them (audited),
/// and what a selector shows follows at once.
#[tokio::test]
async fn node_labels_are_set_by_tenant_admins() {
    let e = env();
    let admin = e.admin().await;
    e.enrolled(&admin, "a-1", &[("site", "a"), ("ring", "1")])
        .await;
    e.user("olga", "operator", &[("site", "a")]);
    e.user("sam", "admin", &[("site", "a")]);
    let olga = e.token("olga", "pw-of-user").await;
    let sam = e.token("sam", "pw-of-user").await;
    let relabel = |token: String, body: Value| {
        let e = &e;
        async move {
            e.call(
                Method::PATCH,
                "/v1/nodes/a-1/labels",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    // An operator, and an admin scoped by a selector, may not (a scoped admin could
    // move the node out of, or into, someone else's reach).
    for who in [&olga, &sam] {
        let r = relabel(who.clone(), json!({"set": {"site": "b"}})).await;
        r.expect(StatusCode::FORBIDDEN);
        assert!(r.message().contains("whole tenant"), "{}", r.message());
    }
    // Malformed changes.
    relabel(
        admin.clone(),
        json!({"set": {"site": "b"}, "remove": ["site"]}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    relabel(admin.clone(), json!({"set": {"bad key": "x"}}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    relabel(admin.clone(), json!({"set": {"x": "y"}, "what": 1}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(e.nodes(&olga).await, vec!["a-1"]);
    // The admin moves the node to site b and drops ring: olga no longer sees it.
    let r = relabel(
        admin.clone(),
        json!({"set": {"site": "b"}, "remove": ["ring"]}),
    )
    .await;
    r.expect(StatusCode::OK);
    let info: NodeInfo = r.json();
    assert_eq!(info.labels, labels(&[("site", "b")]));
    assert_eq!(e.nodes(&olga).await, Vec::<String>::new());
    e.call(Method::GET, "/v1/nodes/a-1", Some(&olga), None)
        .await
        .expect(StatusCode::NOT_FOUND);
    let events = e.audit("node.label");
    let outcomes: Vec<&str> = events.iter().map(|ev| ev.outcome.as_str()).collect();
    assert_eq!(outcomes, ["denied", "denied", "ok"], "{events:?}");
    let ok = events.last().unwrap();
    assert_eq!(ok.detail["before"], json!({"site": "a", "ring": "1"}));
    assert_eq!(ok.detail["after"], json!({"site": "b"}));
}

#[tokio::test]
async fn roles_and_selectors() {
    let e = env();
    let admin = e.admin().await;
    e.enrolled(&admin, "a-1", &[("site", "a")]).await;
    e.enrolled(&admin, "a-2", &[("site", "a"), ("env", "prod")])
        .await;
    e.enrolled(&admin, "b-1", &[("site", "b")]).await;

    e.user("vera", "viewer", &[]);
    e.user("olga", "operator", &[("site", "a")]);
    e.user("nobody", "viewer", &[("site", "zzz")]);
    e.user("audrey", "auditor", &[]);
    let vera = e.token("vera", "pw-of-user").await;
    let olga = e.token("olga", "pw-of-user").await;
    let nobody = e.token("nobody", "pw-of-user").await;
    let audrey = e.token("audrey", "pw-of-user").await;

    assert_eq!(e.nodes(&vera).await, vec!["a-1", "a-2", "b-1"]);
    assert_eq!(e.nodes(&olga).await, vec!["a-1", "a-2"]);
    assert_eq!(e.nodes(&nobody).await, Vec::<String>::new());
    assert_eq!(e.nodes(&audrey).await.len(), 3);

    // Outside the selector, a node looks like a missing one.
    let hidden = e
        .call(Method::GET, "/v1/nodes/b-1", Some(&olga), None)
        .await;
    hidden.expect(StatusCode::NOT_FOUND);
    let missing = e
        .call(Method::GET, "/v1/nodes/nope", Some(&olga), None)
        .await;
    missing.expect(StatusCode::NOT_FOUND);
    assert_eq!(
        missing.message(),
        "no node named or with id 'nope' in this tenant"
    );
    e.call(Method::GET, "/v1/nodes/a-1", Some(&olga), None)
        .await
        .expect(StatusCode::OK);

    // Viewers and operators manage nothing.
    for t in [&vera, &olga, &audrey] {
        let r = e
            .call(Method::POST, "/v1/join-tokens", Some(t), Some(json!({})))
            .await;
        r.expect(StatusCode::FORBIDDEN);
        assert_eq!(r.code(), "forbidden");
        e.call(Method::GET, "/v1/join-tokens", Some(t), None)
            .await
            .expect(StatusCode::FORBIDDEN);
        e.call(Method::POST, "/v1/nodes/a-1/revoke", Some(t), None)
            .await
            .expect(StatusCode::FORBIDDEN);
    }
    // Revoking a node you cannot see is a 404, not a 403.
    e.call(Method::POST, "/v1/nodes/b-1/revoke", Some(&olga), None)
        .await
        .expect(StatusCode::NOT_FOUND);

    let denied = e.audit("node.revoke");
    assert!(denied.iter().all(|ev| ev.outcome == "denied") && !denied.is_empty());
}

#[tokio::test]
async fn tenant_isolation() {
    let e = env();
    let admin_a = e.admin().await;
    e.enrolled(&admin_a, "secret-node", &[]).await;
    let token_a = e.join_token(&admin_a, json!({})).await;

    let b = e.state.store.create_tenant("tenant-b").unwrap();
    let bu = e
        .state
        .store
        .create_user(&b.id, "bee", &hash_password("bee-pw").unwrap())
        .unwrap();
    e.state
        .store
        .bind_role(&b.id, &bu.id, "admin", &Labels::new())
        .unwrap();
    let admin_b = e.token("bee", "bee-pw").await;

    assert!(e.nodes(&admin_b).await.is_empty());
    let tokens: Vec<JoinTokenInfo> = e
        .call(Method::GET, "/v1/join-tokens", Some(&admin_b), None)
        .await
        .json();
    assert!(tokens.is_empty());
    let node_a = e
        .state
        .store
        .node_by_id_or_name(&e.tenant_id, "secret-node")
        .unwrap()
        .unwrap();
    for key in ["secret-node", node_a.id.as_str()] {
        e.call(
            Method::GET,
            &format!("/v1/nodes/{key}"),
            Some(&admin_b),
            None,
        )
        .await
        .expect(StatusCode::NOT_FOUND);
        e.call(
            Method::POST,
            &format!("/v1/nodes/{key}/revoke"),
            Some(&admin_b),
            None,
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    }
    e.call(
        Method::DELETE,
        &format!("/v1/join-tokens/{}", token_a.id),
        Some(&admin_b),
        None,
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    let node_a = e.state.store.node_any_tenant(&node_a.id).unwrap().unwrap();
    assert!(node_a.revoked_at.is_none());

    // Nodes enrolled with B's tokens land in B.
    let tb = e.join_token(&admin_b, json!({})).await;
    let r: EnrollResponse = {
        let (r, _) = e.enroll(&tb.token, "secret-node", json!({})).await;
        r.expect(StatusCode::OK);
        r.json()
    };
    assert_eq!(r.tenant_id, b.id);
    assert_eq!(e.nodes(&admin_b).await, vec!["secret-node"]);
    assert_eq!(e.nodes(&admin_a).await, vec!["secret-node"]);
}

// === request bodies ===

#[tokio::test]
async fn malformed_bodies() {
    let e = env();
    let bad_json = Request::builder()
        .method(Method::POST)
        .uri("/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"user\": "))
        .unwrap();
    let r = e.send(bad_json).await;
    r.expect(StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_request");
    assert!(r.message().contains("not valid"), "{}", r.message());

    let r = e
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"user": "admin"})),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("password"), "{}", r.message());

    let r = e
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"user": "admin", "password": "x", "extra": 1})),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);

    let no_type = Request::builder()
        .method(Method::POST)
        .uri("/v1/login")
        .body(Body::from("{}"))
        .unwrap();
    let r = e.send(no_type).await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("Content-Type"), "{}", r.message());

    let huge = json!({"user": "admin", "password": "x".repeat(70 * 1024)});
    let r = e.call(Method::POST, "/v1/login", None, Some(huge)).await;
    r.expect(StatusCode::PAYLOAD_TOO_LARGE);
}
