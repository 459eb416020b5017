//! Session tokens and API tokens through the HTTP API (in memory), and the proxy's
//! verification of session tokens ([`adit_server::session_tokens::authenticate`]).

mod common;

use adit_pki::{SessionClaims, SigningKey, AUD_SESSION};
use adit_server::api::router;
use adit_server::auth::hash_password;
use adit_server::session_tokens::authenticate;
use adit_server::state::{AppState, Settings};
use adit_store::{AuditFilter, NodeStatus};
use axum::http::{Method, StatusCode};
use axum::Router;
use common::{labels, request, send, test_state, Reply};
use serde_json::{json, Value};

const PW: &str = "a-password-123456";

struct Env {
    state: AppState,
    app: Router,
    tenant: String,
    node_a: String,
    node_b: String,
}

fn env() -> Env {
    let state = test_state(Settings::default());
    let store = &state.store;
    let tenant = store.create_tenant("default").unwrap();
    for (user, role, sel) in [
        ("admin", "admin", labels(&[])),
        ("viewer", "viewer", labels(&[])),
        ("op-a", "operator", labels(&[("site", "a")])),
    ] {
        let u = store
            .create_user(&tenant.id, user, &hash_password(PW).unwrap())
            .unwrap();
        store.bind_role(&tenant.id, &u.id, role, &sel).unwrap();
    }
    let node_a = store
        .create_node(&tenant.id, "node-a", &labels(&[("site", "a")]))
        .unwrap();
    let node_b = store
        .create_node(&tenant.id, "node-b", &labels(&[("site", "b")]))
        .unwrap();
    store
        .set_node_status(&node_a.id, NodeStatus::Online, 1)
        .unwrap();
    Env {
        app: router(state.clone()),
        state,
        tenant: tenant.id,
        node_a: node_a.id,
        node_b: node_b.id,
    }
}

impl Env {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        send(
            &self.app,
            request(
                method,
                path,
                Some(token),
                body,
                Some("192.0.2.9:4000".parse().unwrap()),
            ),
        )
        .await
    }

    async fn login(&self, user: &str) -> String {
        let r = send(
            &self.app,
            request(
                Method::POST,
                "/v1/login",
                None,
                Some(json!({"user": user, "password": PW})),
                None,
            ),
        )
        .await;
        r.expect(StatusCode::OK);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    fn actions(&self) -> Vec<(String, String)> {
        self.state
            .store
            .list_audit(&self.tenant, &AuditFilter::default())
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.outcome))
            .collect()
    }
}

#[tokio::test]
async fn api_token_lifecycle() {
    let e = env();
    let viewer = e.login("viewer").await;
    let r = e
        .call(
            Method::POST,
            "/v1/api-tokens",
            &viewer,
            Some(json!({"name": "ci-job", "ttl_secs": 3600})),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let api = r.body["token"].as_str().unwrap().to_string();
    let id = r.body["info"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["info"]["user"], "viewer");

    // It acts as the viewer: may read nodes, may not create join tokens.
    e.call(Method::GET, "/v1/nodes", &api, None)
        .await
        .expect(StatusCode::OK);
    e.call(Method::POST, "/v1/join-tokens", &api, Some(json!({})))
        .await
        .expect(StatusCode::FORBIDDEN);
    // An API token cannot mint more API tokens.
    let r = e
        .call(
            Method::POST,
            "/v1/api-tokens",
            &api,
            Some(json!({"name": "more", "ttl_secs": 3600})),
        )
        .await;
    r.expect(StatusCode::FORBIDDEN);
    assert!(
        r.message().contains("cannot create API tokens"),
        "{}",
        r.text
    );

    // Bad input is refused clearly.
    for body in [
        json!({"name": "", "ttl_secs": 3600}),
        json!({"name": "has space", "ttl_secs": 3600}),
        json!({"name": "ok", "ttl_secs": 5}),
        json!({"name": "ok", "ttl_secs": 400 * 24 * 3600}),
    ] {
        e.call(Method::POST, "/v1/api-tokens", &viewer, Some(body))
            .await
            .expect(StatusCode::BAD_REQUEST);
    }

    // The viewer sees its own token; the admin sees all; another user cannot revoke it.
    let r = e.call(Method::GET, "/v1/api-tokens", &viewer, None).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let op = e.login("op-a").await;
    let r = e.call(Method::GET, "/v1/api-tokens", &op, None).await;
    assert_eq!(r.body, json!([]));
    e.call(Method::DELETE, &format!("/v1/api-tokens/{id}"), &op, None)
        .await
        .expect(StatusCode::NOT_FOUND);
    let admin = e.login("admin").await;
    let r = e.call(Method::GET, "/v1/api-tokens", &admin, None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);

    // Revoked: refused at once.
    let r = e
        .call(
            Method::DELETE,
            &format!("/v1/api-tokens/{id}"),
            &viewer,
            None,
        )
        .await;
    r.expect(StatusCode::OK);
    assert!(r.body["revoked_at"].is_i64());
    let r = e.call(Method::GET, "/v1/nodes", &api, None).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("revoked"), "{}", r.text);

    let actions = e.actions();
    assert!(actions.contains(&("api_token.create".into(), "ok".into())));
    assert!(actions.contains(&("api_token.revoke".into(), "ok".into())));
    // The token string is never in the audit trail.
    let audit = serde_json::to_string(
        &e.state
            .store
            .list_audit(&e.tenant, &AuditFilter::default())
            .unwrap(),
    )
    .unwrap();
    assert!(!audit.contains(&api));
}

#[tokio::test]
async fn session_token_rbac_and_validation() {
    let e = env();
    let viewer = e.login("viewer").await;
    let op = e.login("op-a").await;
    let admin = e.login("admin").await;
    let create = |node: &str, extra: Value| {
        let mut body = json!({"node": node, "ttl_secs": 600});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    // A viewer may not issue one; the refusal is audited.
    let r = e
        .call(
            Method::POST,
            "/v1/session-tokens",
            &viewer,
            Some(create("node-a", json!({}))),
        )
        .await;
    r.expect(StatusCode::FORBIDDEN);
    assert!(e
        .actions()
        .contains(&("session_token.create".into(), "denied".into())));
    // An operator of site=a may for node-a, not for node-b (which it cannot even see).
    e.call(
        Method::POST,
        "/v1/session-tokens",
        &op,
        Some(create("node-b", json!({}))),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    let r = e
        .call(
            Method::POST,
            "/v1/session-tokens",
            &op,
            Some(create("node-a", json!({"instances": 2}))),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let token = r.body["token"].as_str().unwrap().to_string();
    let id = r.body["info"]["id"].as_str().unwrap().to_string();

    // Its claims: the server's URL and CA pin, the node, the instances, a nonce.
    let claims: SessionClaims = e
        .state
        .signer
        .verifying_key()
        .verify(&token, AUD_SESSION)
        .unwrap();
    assert_eq!(claims.sub, e.node_a);
    assert_eq!(claims.num, 2);
    assert_eq!(claims.dep, e.state.settings.public_url);
    assert_eq!(claims.pin, e.state.ca.pin().to_string());
    assert_eq!(claims.usr, "op-a");
    assert_eq!(claims.jti, id);
    assert_eq!(claims.key.len(), 32);
    assert!(!claims.enc);

    for (extra, why) in [
        (json!({"instances": 0}), "instances"),
        (json!({"instances": 6}), "instances"),
        (json!({"enc": true}), "not supported yet"),
        (json!({"ttl_secs": 10}), "ttl_secs"),
        (json!({"ttl_secs": 8 * 24 * 3600}), "ttl_secs"),
    ] {
        let r = e
            .call(
                Method::POST,
                "/v1/session-tokens",
                &admin,
                Some(create("node-a", extra)),
            )
            .await;
        r.expect(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(why), "{why}: {}", r.text);
    }

    // Everyone who can read the node lists it; a viewer cannot revoke it.
    let r = e
        .call(Method::GET, "/v1/session-tokens", &viewer, None)
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body[0]["id"], id.as_str());
    assert_eq!(r.body[0]["node"], "node-a");
    e.call(
        Method::DELETE,
        &format!("/v1/session-tokens/{id}"),
        &viewer,
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    // The proxy's check: valid for instances 1 and 2, not 3; then revoked.
    let ok = authenticate(&e.state, &token).unwrap();
    assert_eq!(
        (ok.instance, ok.claims.sub.as_str()),
        (1, e.node_a.as_str())
    );
    assert_eq!(
        authenticate(&e.state, &format!("{token}#2"))
            .unwrap()
            .instance,
        2
    );
    let err = authenticate(&e.state, &format!("{token}#3")).unwrap_err();
    assert!(err.contains("instance 3 refused"), "{err}");
    for bad in ["#0", "#x", "#300"] {
        let err = authenticate(&e.state, &format!("{token}{bad}")).unwrap_err();
        assert!(err.contains("not a number"), "{bad}: {err}");
    }
    let cut = e.state.token_instances.claim(&id, 1, 7).unwrap();
    let r = e
        .call(
            Method::DELETE,
            &format!("/v1/session-tokens/{id}"),
            &op,
            None,
        )
        .await;
    r.expect(StatusCode::OK);
    assert!(r.body["revoked_at"].is_i64());
    assert!(
        cut.is_cancelled(),
        "live streams of a revoked token are cut"
    );
    let err = authenticate(&e.state, &token).unwrap_err();
    assert!(err.contains("revoked"), "{err}");
    assert!(e
        .actions()
        .contains(&("session_token.revoke".into(), "ok".into())));
}

#[tokio::test]
async fn forged_expired_and_unknown_session_tokens_are_refused() {
    let e = env();
    let now = adit_pki::now_unix();
    let claims = |exp: i64, jti: &str| SessionClaims {
        aud: AUD_SESSION.into(),
        iat: now - 100,
        exp,
        jti: jti.into(),
        ten: e.tenant.clone(),
        dep: e.state.settings.public_url.clone(),
        pin: e.state.ca.pin().to_string(),
        sub: e.node_b.clone(),
        usr: "admin".into(),
        uid: String::new(),
        key: "00".into(),
        num: 1,
        enc: false,
    };
    let forged = SigningKey::generate()
        .unwrap()
        .sign(&claims(now + 600, "j1"))
        .unwrap();
    let err = authenticate(&e.state, &forged).unwrap_err();
    assert!(err.contains("refused"), "{err}");
    let expired = e.state.signer.sign(&claims(now - 120, "j2")).unwrap();
    let err = authenticate(&e.state, &expired).unwrap_err();
    assert!(err.contains("expired"), "{err}");
    // Signed by this server's key but never issued (no record): fail closed.
    let unknown = e.state.signer.sign(&claims(now + 600, "j3")).unwrap();
    let err = authenticate(&e.state, &unknown).unwrap_err();
    assert!(err.contains("not known"), "{err}");
    assert!(authenticate(&e.state, "garbage").is_err());
}

/// A changed password logs out every login token issued before it; API tokens stay
/// (they are revoked on their own).
#[tokio::test]
async fn password_change_voids_earlier_login_tokens() {
    let e = env();
    let viewer = e
        .state
        .store
        .user_by_name(&e.tenant, "viewer")
        .unwrap()
        .unwrap();
    let now = adit_pki::now_unix();
    let earlier = |api: bool| {
        e.state
            .signer
            .sign(&adit_pki::AccessClaims {
                sub: viewer.id.clone(),
                name: viewer.name.clone(),
                ten: e.tenant.clone(),
                aud: adit_pki::AUD_ACCESS.into(),
                iat: now - 60,
                exp: now + 3600,
                jti: format!("early-{api}"),
                api,
            })
            .unwrap()
    };
    let old_login = earlier(false);
    e.call(Method::GET, "/v1/nodes", &old_login, None)
        .await
        .expect(StatusCode::OK);
    let r = e
        .call(
            Method::POST,
            "/v1/api-tokens",
            &e.login("viewer").await,
            Some(json!({"name": "keeps", "ttl_secs": 3600})),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let api = r.body["token"].as_str().unwrap().to_string();

    let admin = e.login("admin").await;
    e.call(
        Method::POST,
        "/v1/users/viewer/password",
        &admin,
        Some(json!({"new": "a-brand-new-password-1"})),
    )
    .await
    .expect(StatusCode::OK);

    let r = e.call(Method::GET, "/v1/nodes", &old_login, None).await;
    r.expect(StatusCode::UNAUTHORIZED);
    assert!(
        r.message().contains("password of viewer changed"),
        "{}",
        r.text
    );
    // A new login works; the API token was not touched.
    let fresh = send(
        &e.app,
        request(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"user": "viewer", "password": "a-brand-new-password-1"})),
            None,
        ),
    )
    .await;
    fresh.expect(StatusCode::OK);
    let fresh = fresh.body["access_token"].as_str().unwrap().to_string();
    e.call(Method::GET, "/v1/nodes", &fresh, None)
        .await
        .expect(StatusCode::OK);
    e.call(Method::GET, "/v1/nodes", &api, None)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn duplicate_roles_at_user_creation_are_refused() {
    let e = env();
    let admin = e.login("admin").await;
    let r = e
        .call(
            Method::POST,
            "/v1/users",
            &admin,
            Some(json!({"name": "twice", "password": "a-long-password-1",
                        "roles": [{"role": "viewer", "selector": {"site": "a"}},
                                  {"role": "viewer", "selector": {"site": "a"}}]})),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("listed twice"), "{}", r.text);
    assert!(e
        .state
        .store
        .user_by_name(&e.tenant, "twice")
        .unwrap()
        .is_none());
    // Different selectors are fine.
    e.call(
        Method::POST,
        "/v1/users",
        &admin,
        Some(json!({"name": "twice", "password": "a-long-password-1",
                    "roles": [{"role": "viewer", "selector": {"site": "a"}},
                              {"role": "viewer", "selector": {"site": "b"}}]})),
    )
    .await
    .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn disabling_a_user_stops_its_tokens_at_once() {
    let e = env();
    let admin = e.login("admin").await;
    let viewer = e.login("viewer").await;
    let r = e
        .call(
            Method::POST,
            "/v1/api-tokens",
            &viewer,
            Some(json!({"name": "bot", "ttl_secs": 3600})),
        )
        .await;
    let api = r.body["token"].as_str().unwrap().to_string();

    // Only admins; not oneself; the last admin is kept.
    e.call(
        Method::PATCH,
        "/v1/users/admin",
        &viewer,
        Some(json!({"disabled": true})),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    e.call(
        Method::PATCH,
        "/v1/users/admin",
        &admin,
        Some(json!({"disabled": true})),
    )
    .await
    .expect(StatusCode::CONFLICT);

    let r = e
        .call(
            Method::PATCH,
            "/v1/users/viewer",
            &admin,
            Some(json!({"disabled": true})),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["disabled"], true);
    for token in [&viewer, &api] {
        e.call(Method::GET, "/v1/nodes", token, None)
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    let login = send(
        &e.app,
        request(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"user": "viewer", "password": PW})),
            None,
        ),
    )
    .await;
    login.expect(StatusCode::UNAUTHORIZED);

    // Enabled again: logs in again (its old tokens are valid again too: they were
    // refused for the disabled state, not revoked).
    e.call(
        Method::PATCH,
        "/v1/users/viewer",
        &admin,
        Some(json!({"disabled": false})),
    )
    .await
    .expect(StatusCode::OK);
    e.login("viewer").await;
    assert!(e.actions().contains(&("user.disable".into(), "ok".into())));
    assert!(e.actions().contains(&("user.enable".into(), "ok".into())));
}

#[tokio::test]
async fn verified_tokens_skip_only_the_signature_check() {
    let e = env();
    let viewer = e.login("viewer").await;
    assert!(e.state.verified_tokens.is_empty());
    e.call(Method::GET, "/v1/nodes", &viewer, None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        e.state.verified_tokens.len(),
        1,
        "verified once, remembered"
    );
    e.call(Method::GET, "/v1/nodes", &viewer, None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(e.state.verified_tokens.len(), 1);

    // Another signature on the same claims is another token: verified, and refused.
    let (head, sig) = viewer.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{head}.{flipped}{}", &sig[1..]);
    e.call(Method::GET, "/v1/nodes", &forged, None)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_eq!(
        e.state.verified_tokens.len(),
        1,
        "refused tokens are not kept"
    );

    // What the store says still applies to a remembered token.
    let admin = e.login("admin").await;
    e.call(
        Method::PATCH,
        "/v1/users/viewer",
        &admin,
        Some(json!({"disabled": true})),
    )
    .await
    .expect(StatusCode::OK);
    e.call(Method::GET, "/v1/nodes", &viewer, None)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // Past `exp` a remembered token is not served from memory.
    let cache = adit_server::auth::VerifiedTokens::default();
    let now = adit_pki::now_unix();
    let claims = |exp: i64| adit_pki::AccessClaims {
        sub: "u".into(),
        name: "u".into(),
        ten: e.tenant.clone(),
        aud: adit_pki::AUD_ACCESS.into(),
        iat: now - 60,
        exp,
        jti: "j".into(),
        api: false,
    };
    cache.insert("live", &claims(now + 60), now + 60, now);
    cache.insert("stale", &claims(now + 1), now + 1, now);
    assert_eq!(cache.get("live", now), Some(claims(now + 60)));
    assert_eq!(cache.get("stale", now + 1), None);
    assert_eq!(cache.len(), 1, "an expired entry is dropped when met");
}
