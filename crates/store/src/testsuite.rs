//! Backend-neutral conformance suite for [`Store`] implementations.
//!
//! Every implementation runs every case in [`CASES`] against a fresh, empty store (see the
//! SQLite tests for the pattern). The cases only use the trait, so they hold any backend to
//! the same contract: round trips, conflicts, tenant isolation, atomic join-token use, and
//! audit filtering.
//!
//! Functions panic on failure, as tests do.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use crate::{
    AuditEvent, AuditFilter, CertificateRecord, ConsumeError, IssuedToken, JoinTokenRecord, Labels,
    NewEnrollment, NewRemoteAccess, Node, NodeFacts, NodeStatus, PresenceUpdate, RemoteAccess,
    RemoteAccessFilter, RemoteAccessState, StatusIndicator, Store, StoreError, TokenKind,
};
use crate::{LastCommand, NodeAction, NodeCommands, Policy, PolicyLevel};

/// A named conformance case.
pub type Case = (&'static str, fn(Arc<dyn Store>));

/// Every conformance case.
pub const CASES: &[Case] = &[
    ("tenants_round_trip", tenants_round_trip),
    ("users_round_trip", users_round_trip),
    ("role_bindings_round_trip", role_bindings_round_trip),
    ("join_tokens_round_trip", join_tokens_round_trip),
    ("consume_join_token_rules", consume_join_token_rules),
    ("consume_join_token_race", consume_join_token_race),
    (
        "enroll_node_is_all_or_nothing",
        enroll_node_is_all_or_nothing,
    ),
    ("nodes_round_trip", nodes_round_trip),
    ("certificates_round_trip", certificates_round_trip),
    ("audit_round_trip_and_filters", audit_round_trip_and_filters),
    ("audit_batches", audit_batches),
    ("tenant_isolation", tenant_isolation),
    ("remote_access_round_trip", remote_access_round_trip),
    ("remote_access_status_update", remote_access_status_update),
    (
        "remote_access_tenant_isolation",
        remote_access_tenant_isolation,
    ),
    (
        "remote_access_active_across_tenants",
        remote_access_active_across_tenants,
    ),
    ("issued_tokens_round_trip", issued_tokens_round_trip),
    ("presence_batches", presence_batches),
    ("policies_round_trip", policies_round_trip),
    ("node_commands_count", node_commands_count),
];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn token(tenant_id: &str, id: &str, expires_at: i64, uses_allowed: Option<u32>) -> JoinTokenRecord {
    JoinTokenRecord {
        id: id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        secret_hash: format!("sha256:{id}"),
        created_by: "admin".to_owned(),
        created_at: 1_000,
        expires_at,
        uses_allowed,
        uses: 0,
        labels: labels(&[("site", "north"), ("role", "gateway")]),
        revoked_at: None,
    }
}

fn event(tenant_id: &str, time: i64, actor: &str, action: &str, node: Option<&str>) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time,
        tenant_id: tenant_id.to_owned(),
        actor: actor.to_owned(),
        source: Some("192.0.2.7:51000".to_owned()),
        node_id: node.map(str::to_owned),
        session_id: Some("sess-1".to_owned()),
        action: action.to_owned(),
        outcome: "ok".to_owned(),
        detail: serde_json::json!({ "n": time, "nested": { "list": [1, 2, 3] } }),
    }
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

pub fn tenants_round_trip(store: Arc<dyn Store>) {
    assert!(store.list_tenants().unwrap().is_empty());
    let b = store.create_tenant("beta").unwrap();
    let a = store.create_tenant("alpha").unwrap();
    assert_ne!(a.id, b.id);
    assert!(uuid::Uuid::parse_str(&a.id).is_ok(), "tenant id is a uuid");
    assert_eq!(store.tenant(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.tenant_by_name("beta").unwrap(), Some(b.clone()));
    assert_eq!(store.tenant_by_name("gamma").unwrap(), None);
    assert_eq!(store.tenant("no-such-id").unwrap(), None);
    assert_eq!(store.list_tenants().unwrap(), vec![a, b]);
    assert!(matches!(
        store.create_tenant("alpha"),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_tenants().unwrap().len(), 2);
}

pub fn users_round_trip(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let t2 = store.create_tenant("other").unwrap();
    let bob = store.create_user(&t.id, "bob", "$argon2id$bob").unwrap();
    let alice = store
        .create_user(&t.id, "alice", "$argon2id$alice")
        .unwrap();
    assert!(!bob.disabled);
    assert_eq!(bob.tenant_id, t.id);
    assert_eq!(store.user(&t.id, &bob.id).unwrap(), Some(bob.clone()));
    assert_eq!(
        store.user_by_name(&t.id, "alice").unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_name(&t.id, "carol").unwrap(), None);
    assert_eq!(
        store.list_users(&t.id).unwrap(),
        vec![alice.clone(), bob.clone()]
    );

    assert!(matches!(
        store.create_user(&t.id, "bob", "x"),
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(store.create_user(
        "no-such-tenant",
        "bob",
        "x"
    )));

    // The same name in another tenant is a different user.
    let bob2 = store.create_user(&t2.id, "bob", "$argon2id$bob2").unwrap();
    let mut found = store.find_user_by_name_any_tenant("bob").unwrap();
    found.sort_by(|x, y| x.id.cmp(&y.id));
    let mut expected = vec![bob.clone(), bob2];
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(found, expected);
    assert!(store
        .find_user_by_name_any_tenant("nobody")
        .unwrap()
        .is_empty());

    assert_eq!(bob.credentials_changed_at, 0);
    let before = crate::now_millis();
    store.set_password(&t.id, &bob.id, "$argon2id$new").unwrap();
    let changed = store.user(&t.id, &bob.id).unwrap().unwrap();
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert!(changed.credentials_changed_at >= before);
    assert!(is_not_found(store.set_password(&t.id, "no-such-user", "x")));

    store.set_user_disabled(&t.id, &bob.id, true).unwrap();
    assert!(store.user(&t.id, &bob.id).unwrap().unwrap().disabled);
    store.set_user_disabled(&t.id, &bob.id, false).unwrap();
    assert!(!store.user(&t.id, &bob.id).unwrap().unwrap().disabled);
    assert!(is_not_found(store.set_user_disabled(
        &t.id,
        "no-such-user",
        true
    )));

    store
        .bind_role(&t.id, &bob.id, "operator", &Labels::new())
        .unwrap();
    store.delete_user(&t.id, &bob.id).unwrap();
    assert_eq!(store.user(&t.id, &bob.id).unwrap(), None);
    assert!(
        store.list_role_bindings(&t.id, None).unwrap().is_empty(),
        "deleting a user removes its role bindings"
    );
    assert!(is_not_found(store.delete_user(&t.id, &bob.id)));
    // The name is free again.
    store.create_user(&t.id, "bob", "x").unwrap();
}

pub fn role_bindings_round_trip(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let u1 = store.create_user(&t.id, "u1", "h").unwrap();
    let u2 = store.create_user(&t.id, "u2", "h").unwrap();
    let sel = labels(&[("env", "prod"), ("site", "north")]);
    let b1 = store
        .bind_role(&t.id, &u1.id, "admin", &Labels::new())
        .unwrap();
    let b2 = store.bind_role(&t.id, &u1.id, "operator", &sel).unwrap();
    let b3 = store.bind_role(&t.id, &u2.id, "viewer", &sel).unwrap();
    store.bind_role(&t.id, &u2.id, "auditor", &sel).unwrap();
    assert_eq!(b2.selector, sel);
    assert_eq!(b2.role, "operator");

    let mine = store.list_role_bindings(&t.id, Some(&u1.id)).unwrap();
    let mut ids: Vec<_> = mine.iter().map(|b| b.id.clone()).collect();
    ids.sort();
    let mut want = vec![b1.id.clone(), b2.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(mine.contains(&b2), "binding round-trips exactly");
    assert_eq!(store.list_role_bindings(&t.id, None).unwrap().len(), 4);

    assert!(matches!(
        store.bind_role(&t.id, &u1.id, "root", &Labels::new()),
        Err(StoreError::InvalidInput(_))
    ));
    assert!(is_not_found(store.bind_role(
        &t.id,
        "no-such-user",
        "admin",
        &Labels::new()
    )));

    store.unbind_role(&t.id, &b3.id).unwrap();
    assert_eq!(
        store.list_role_bindings(&t.id, Some(&u2.id)).unwrap().len(),
        1
    );
    assert!(is_not_found(store.unbind_role(&t.id, &b3.id)));
}

pub fn join_tokens_round_trip(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let mut tok = token(&t.id, "tok-a", 10_000, Some(3));
    tok.created_at = 500;
    store.create_join_token(&tok).unwrap();
    let unlimited = token(&t.id, "tok-b", 20_000, None);
    store.create_join_token(&unlimited).unwrap();

    assert_eq!(store.join_token(&t.id, "tok-a").unwrap(), Some(tok.clone()));
    assert_eq!(
        store.join_token_any_tenant("tok-b").unwrap(),
        Some(unlimited.clone())
    );
    assert_eq!(store.join_token(&t.id, "tok-x").unwrap(), None);
    assert_eq!(store.join_token_any_tenant("tok-x").unwrap(), None);
    assert_eq!(
        store.list_join_tokens(&t.id).unwrap(),
        vec![tok.clone(), unlimited.clone()]
    );

    assert!(matches!(
        store.create_join_token(&tok),
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(store.create_join_token(&token(
        "no-such-tenant",
        "tok-c",
        1,
        None
    ))));
    let mut bad = token(&t.id, "tok-d", 10_000, Some(1));
    bad.uses = 2;
    assert!(matches!(
        store.create_join_token(&bad),
        Err(StoreError::InvalidInput(_))
    ));

    assert!(store.revoke_join_token(&t.id, "tok-a", 7_000).unwrap());
    assert!(store.revoke_join_token(&t.id, "tok-a", 8_000).unwrap());
    assert_eq!(
        store
            .join_token(&t.id, "tok-a")
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(7_000),
        "a second revocation keeps the first time"
    );
    assert!(!store.revoke_join_token(&t.id, "tok-x", 7_000).unwrap());
}

fn enrollment(tenant_id: &str, token_id: &str, node_id: &str, name: &str) -> NewEnrollment {
    NewEnrollment {
        token_id: token_id.to_owned(),
        now: 3_000,
        node_id: node_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        labels: labels(&[("site", "lab")]),
        facts: NodeFacts {
            agent_version: Some("1.2.3".to_owned()),
            os: Some("linux".to_owned()),
            hostname: Some(name.to_owned()),
            addresses: vec!["192.0.2.10".to_owned()],
            tunnel_mode: "persistent".to_owned(),
            actions: Vec::new(),
        },
        cert: CertificateRecord {
            serial: format!("serial-{node_id}"),
            tenant_id: tenant_id.to_owned(),
            node_id: node_id.to_owned(),
            issued_at: 3_000,
            not_after: 90_000,
            revoked_at: None,
        },
        enrolled_with: format!("{token_id} sha256:{node_id}"),
        audit: event(tenant_id, 3_000, "join-token:t", "node.enroll", None),
    }
}

/// Enrolment writes the token use, the node, its certificate, its facts and the audit
/// event together, or nothing at all.
pub fn enroll_node_is_all_or_nothing(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    store
        .create_join_token(&token(&t.id, "one", 10_000, Some(1)))
        .unwrap();
    store
        .create_join_token(&token(&t.id, "many", 10_000, None))
        .unwrap();

    let (tok, node) = store
        .enroll_node(&enrollment(&t.id, "one", "n1", "edge-1"))
        .unwrap();
    assert_eq!(tok.uses, 1);
    assert_eq!(node.id, "n1");
    let stored = store.node(&t.id, "n1").unwrap().expect("node stored");
    assert_eq!(stored, node, "the returned node is what was stored");
    assert_eq!(stored.cert_serial.as_deref(), Some("serial-n1"));
    assert_eq!(stored.cert_not_after, Some(90_000));
    assert_eq!(stored.hostname.as_deref(), Some("edge-1"));
    assert_eq!(stored.labels, labels(&[("site", "lab")]));
    assert!(!store.is_serial_revoked("serial-n1").unwrap());
    let audit = store.list_audit(&t.id, &AuditFilter::default()).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "node.enroll");
    assert_eq!(audit[0].node_id.as_deref(), Some("n1"));

    // A used-up token: nothing is written.
    let used = store.enroll_node(&enrollment(&t.id, "one", "n2", "edge-2"));
    assert!(matches!(used, Err(ConsumeError::Exhausted)), "{used:?}");
    // A taken name: the token's use is not taken, and nothing else is written.
    let taken = store.enroll_node(&enrollment(&t.id, "many", "n3", "edge-1"));
    assert!(
        matches!(taken, Err(ConsumeError::Store(StoreError::Conflict(_)))),
        "{taken:?}"
    );
    assert_eq!(store.join_token(&t.id, "many").unwrap().unwrap().uses, 0);
    for id in ["n2", "n3"] {
        assert!(store.node(&t.id, id).unwrap().is_none());
        assert!(store
            .certificate(&format!("serial-{id}"))
            .unwrap()
            .is_none());
    }
    assert_eq!(store.list_nodes(&t.id).unwrap().len(), 1);
    assert_eq!(
        store
            .list_audit(&t.id, &AuditFilter::default())
            .unwrap()
            .len(),
        1
    );
    // An unknown token.
    let unknown = store.enroll_node(&enrollment(&t.id, "nope", "n4", "edge-4"));
    assert!(
        matches!(unknown, Err(ConsumeError::NotFound)),
        "{unknown:?}"
    );

    // A retried enrolment (the first answer was lost): what it enrolled with is kept,
    // and a new certificate replaces (and revokes) the undelivered one.
    assert_eq!(
        store.node_enrolled_with("n1").unwrap().as_deref(),
        Some("one sha256:n1")
    );
    assert_eq!(store.node_enrolled_with("n-none").unwrap(), None);
    let second = CertificateRecord {
        serial: "serial-n1-again".into(),
        tenant_id: t.id.clone(),
        node_id: "n1".into(),
        issued_at: 4_000,
        not_after: 95_000,
        revoked_at: None,
    };
    let retry_event = event(&t.id, 4_000, "join-token:one", "node.enroll", Some("n1"));
    store
        .reissue_enrollment(&second, Some("serial-n1"), &retry_event)
        .unwrap();
    let stored = store.node(&t.id, "n1").unwrap().unwrap();
    assert_eq!(stored.cert_serial.as_deref(), Some("serial-n1-again"));
    assert_eq!(stored.cert_not_after, Some(95_000));
    assert!(
        store.is_serial_revoked("serial-n1").unwrap(),
        "the lost one is revoked"
    );
    assert!(!store.is_serial_revoked("serial-n1-again").unwrap());
    assert_eq!(
        store.join_token(&t.id, "one").unwrap().unwrap().uses,
        1,
        "no use taken"
    );
    assert_eq!(
        store
            .list_audit(&t.id, &AuditFilter::default())
            .unwrap()
            .len(),
        2
    );
    // Not for a revoked node: nothing written.
    assert!(store.revoke_node(&t.id, "n1", 5_000).unwrap());
    let third = CertificateRecord {
        serial: "serial-n1-third".into(),
        ..second
    };
    let refused = store.reissue_enrollment(&third, None, &retry_event);
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    assert!(store.certificate("serial-n1-third").unwrap().is_none());
}

pub fn consume_join_token_rules(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    store
        .create_join_token(&token(&t.id, "two", 10_000, Some(2)))
        .unwrap();
    store
        .create_join_token(&token(&t.id, "free", 10_000, None))
        .unwrap();
    store
        .create_join_token(&token(&t.id, "old", 5_000, Some(5)))
        .unwrap();
    store
        .create_join_token(&token(&t.id, "gone", 10_000, Some(5)))
        .unwrap();
    store
        .create_join_token(&token(&t.id, "zero", 10_000, Some(0)))
        .unwrap();
    assert!(store.revoke_join_token(&t.id, "gone", 2_000).unwrap());

    let first = store.consume_join_token("two", 3_000).unwrap();
    assert_eq!(first.uses, 1);
    assert_eq!(
        first.labels,
        labels(&[("site", "north"), ("role", "gateway")])
    );
    assert_eq!(store.consume_join_token("two", 3_000).unwrap().uses, 2);
    assert_eq!(
        store.consume_join_token("two", 3_000).unwrap_err(),
        ConsumeError::Exhausted
    );
    assert_eq!(store.join_token(&t.id, "two").unwrap().unwrap().uses, 2);

    for i in 1..=20 {
        assert_eq!(store.consume_join_token("free", 3_000).unwrap().uses, i);
    }

    assert_eq!(
        store.consume_join_token("old", 5_000).unwrap_err(),
        ConsumeError::Expired,
        "expires_at itself is already expired"
    );
    assert_eq!(store.consume_join_token("old", 4_999).unwrap().uses, 1);
    assert_eq!(
        store.consume_join_token("gone", 3_000).unwrap_err(),
        ConsumeError::Revoked
    );
    assert_eq!(
        store.consume_join_token("gone", 20_000).unwrap_err(),
        ConsumeError::Revoked,
        "revoked wins over expired"
    );
    assert_eq!(store.join_token(&t.id, "gone").unwrap().unwrap().uses, 0);
    assert_eq!(
        store.consume_join_token("zero", 3_000).unwrap_err(),
        ConsumeError::Exhausted
    );
    assert_eq!(
        store.consume_join_token("missing", 3_000).unwrap_err(),
        ConsumeError::NotFound
    );
}

pub fn consume_join_token_race(store: Arc<dyn Store>) {
    const THREADS: usize = 8;
    let t = store.create_tenant("acme").unwrap();
    for round in 0..5 {
        let id = format!("race-{round}");
        store
            .create_join_token(&token(&t.id, &id, 10_000, Some(1)))
            .unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                let id = id.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store.consume_join_token(&id, 3_000)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let exhausted = results
            .iter()
            .filter(|r| matches!(r, Err(ConsumeError::Exhausted)))
            .count();
        assert_eq!(ok, 1, "exactly one consumer wins: {results:?}");
        assert_eq!(exhausted, THREADS - 1, "{results:?}");
        assert_eq!(store.join_token(&t.id, &id).unwrap().unwrap().uses, 1);
    }
}

pub fn nodes_round_trip(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let l = labels(&[("env", "prod")]);
    let n = store.create_node(&t.id, "pump-7", &l).unwrap();
    assert!(uuid::Uuid::parse_str(&n.id).is_ok());
    assert_eq!(n.status, NodeStatus::Offline);
    assert_eq!(n.tunnel_mode, "persistent");
    assert_eq!(n.labels, l);
    assert_eq!(n.last_seen, None);
    assert_eq!(store.node(&t.id, &n.id).unwrap(), Some(n.clone()));
    assert_eq!(store.node_any_tenant(&n.id).unwrap(), Some(n.clone()));
    assert_eq!(store.node(&t.id, "nope").unwrap(), None);
    assert!(matches!(
        store.create_node(&t.id, "pump-7", &Labels::new()),
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(store.create_node("no-such-tenant", "x", &l)));

    // Labels are replaced whole, only on a live node of the tenant.
    let relabelled = labels(&[("env", "staging"), ("site", "b")]);
    assert!(store.set_node_labels(&t.id, &n.id, &relabelled).unwrap());
    assert_eq!(
        store.node(&t.id, &n.id).unwrap().unwrap().labels,
        relabelled
    );
    let other = store.create_tenant("other").unwrap();
    assert!(!store.set_node_labels(&other.id, &n.id, &l).unwrap());
    assert!(!store.set_node_labels(&t.id, "no-such-node", &l).unwrap());
    assert!(store.set_node_labels(&t.id, &n.id, &l).unwrap());
    let n = store.node(&t.id, &n.id).unwrap().unwrap();
    assert_eq!(n.labels, l);

    let facts = NodeFacts {
        agent_version: Some("0.1.0".into()),
        os: Some("linux-aarch64".into()),
        hostname: Some("pump7.local".into()),
        addresses: vec!["10.0.0.7".into(), "fd00::7".into()],
        tunnel_mode: "on-demand".into(),
        actions: vec![NodeAction {
            name: "reboot".into(),
            description: "Reboot the pump".into(),
            destructive: true,
        }],
    };
    assert!(n.actions.is_empty());
    store.update_node_facts(&n.id, &facts).unwrap();
    store
        .set_node_status(&n.id, NodeStatus::Online, 5_000)
        .unwrap();
    store.set_node_cert(&n.id, "01ab", 90_000).unwrap();
    let got = store.node(&t.id, &n.id).unwrap().unwrap();
    assert_eq!(got.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(got.os.as_deref(), Some("linux-aarch64"));
    assert_eq!(got.hostname.as_deref(), Some("pump7.local"));
    assert_eq!(got.addresses, facts.addresses);
    assert_eq!(got.tunnel_mode, "on-demand");
    assert_eq!(got.actions, facts.actions);
    assert_eq!(got.status, NodeStatus::Online);
    assert_eq!(got.last_seen, Some(5_000));
    assert_eq!(got.cert_serial.as_deref(), Some("01ab"));
    assert_eq!(got.cert_not_after, Some(90_000));
    assert_eq!(got.created_at, n.created_at);

    store
        .set_node_status(&n.id, NodeStatus::Offline, 6_000)
        .unwrap();
    let got = store.node(&t.id, &n.id).unwrap().unwrap();
    assert_eq!(
        (got.status, got.last_seen),
        (NodeStatus::Offline, Some(6_000))
    );

    assert!(is_not_found(store.update_node_facts("nope", &facts)));
    assert!(is_not_found(store.set_node_status(
        "nope",
        NodeStatus::Online,
        1
    )));
    assert!(is_not_found(store.set_node_cert("nope", "s", 1)));

    let m = store.create_node(&t.id, "alpha", &Labels::new()).unwrap();
    store
        .set_node_status(&n.id, NodeStatus::Online, 7_000)
        .unwrap();
    store
        .set_node_status(&m.id, NodeStatus::Online, 7_000)
        .unwrap();
    assert_eq!(store.mark_all_nodes_offline().unwrap(), 2);
    assert_eq!(store.mark_all_nodes_offline().unwrap(), 0);
    let got = store.node(&t.id, &n.id).unwrap().unwrap();
    assert_eq!(
        (got.status, got.last_seen),
        (NodeStatus::Offline, Some(7_000))
    );

    let names: Vec<_> = store
        .list_nodes(&t.id)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["alpha", "pump-7"]);

    assert_eq!(
        store.node_by_id_or_name(&t.id, &n.id).unwrap().unwrap().id,
        n.id
    );
    assert_eq!(
        store
            .node_by_id_or_name(&t.id, "alpha")
            .unwrap()
            .unwrap()
            .id,
        m.id
    );
    assert_eq!(store.node_by_id_or_name(&t.id, "zeta").unwrap(), None);
    // An id wins over a name that happens to equal it.
    let tricky = store.create_node(&t.id, &m.id, &Labels::new()).unwrap();
    assert_eq!(
        store.node_by_id_or_name(&t.id, &m.id).unwrap().unwrap().id,
        m.id
    );
    assert_eq!(
        store
            .node_by_id_or_name(&t.id, &tricky.id)
            .unwrap()
            .unwrap()
            .id,
        tricky.id
    );

    // Revocation frees the name; lookups by name then prefer the live node.
    assert!(store.revoke_node(&t.id, &n.id, 8_000).unwrap());
    assert_eq!(
        store.node(&t.id, &n.id).unwrap().unwrap().revoked_at,
        Some(8_000)
    );
    assert_eq!(
        store
            .node_by_id_or_name(&t.id, "pump-7")
            .unwrap()
            .unwrap()
            .id,
        n.id,
        "a revoked node is still found when it is the only one with the name"
    );
    let n2 = store.create_node(&t.id, "pump-7", &l).unwrap();
    assert_eq!(
        store
            .node_by_id_or_name(&t.id, "pump-7")
            .unwrap()
            .unwrap()
            .id,
        n2.id
    );
    assert!(store.revoke_node(&t.id, &n.id, 9_000).unwrap());
    assert_eq!(
        store.node(&t.id, &n.id).unwrap().unwrap().revoked_at,
        Some(8_000)
    );
    assert!(!store.revoke_node(&t.id, "nope", 9_000).unwrap());
    assert_eq!(store.list_nodes(&t.id).unwrap().len(), 4);
}

pub fn certificates_round_trip(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let t2 = store.create_tenant("other").unwrap();
    let n = store.create_node(&t.id, "n1", &Labels::new()).unwrap();
    let other = store.create_node(&t.id, "n2", &Labels::new()).unwrap();
    let c1 = CertificateRecord {
        serial: "0a".into(),
        tenant_id: t.id.clone(),
        node_id: n.id.clone(),
        issued_at: 1_000,
        not_after: 2_000,
        revoked_at: None,
    };
    let c2 = CertificateRecord {
        serial: "0b".into(),
        issued_at: 1_500,
        not_after: 2_500,
        ..c1.clone()
    };
    let c3 = CertificateRecord {
        serial: "0c".into(),
        node_id: other.id.clone(),
        ..c1.clone()
    };
    store.record_certificate(&c1).unwrap();
    store.record_certificate(&c2).unwrap();
    store.record_certificate(&c3).unwrap();
    assert_eq!(store.certificate("0a").unwrap(), Some(c1.clone()));
    assert_eq!(store.certificate("ff").unwrap(), None);
    assert!(matches!(
        store.record_certificate(&c1),
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(store.record_certificate(&CertificateRecord {
        serial: "0d".into(),
        node_id: "no-such-node".into(),
        ..c1.clone()
    })));
    assert!(
        is_not_found(store.record_certificate(&CertificateRecord {
            serial: "0e".into(),
            tenant_id: t2.id.clone(),
            ..c1.clone()
        })),
        "a certificate cannot name a node of another tenant"
    );

    assert!(!store.is_serial_revoked("0a").unwrap());
    assert!(
        store.is_serial_revoked("ff").unwrap(),
        "unknown serials fail closed"
    );

    assert!(store.revoke_node(&t.id, &n.id, 1_800).unwrap());
    for serial in ["0a", "0b"] {
        assert!(store.is_serial_revoked(serial).unwrap());
        assert_eq!(
            store.certificate(serial).unwrap().unwrap().revoked_at,
            Some(1_800)
        );
    }
    assert!(
        !store.is_serial_revoked("0c").unwrap(),
        "other node unaffected"
    );

    // A certificate recorded for an already revoked node is refused too.
    store
        .record_certificate(&CertificateRecord {
            serial: "10".into(),
            ..c1.clone()
        })
        .unwrap();
    assert!(store.is_serial_revoked("10").unwrap());
}

pub fn audit_round_trip_and_filters(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let mut seqs = Vec::new();
    let plan = [
        (100, "alice", "login", None),
        (200, "alice", "node.enroll", Some("n1")),
        (300, "bob", "session.start", Some("n1")),
        (400, "bob", "session.start", Some("n2")),
        (500, "alice", "node.revoke", Some("n2")),
        (600, "carol", "login", None),
    ];
    for (time, actor, action, node) in plan {
        seqs.push(
            store
                .append_audit(&event(&t.id, time, actor, action, node))
                .unwrap(),
        );
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq strictly increases"
    );

    let all = store.list_audit(&t.id, &AuditFilter::default()).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    let mut want = event(&t.id, 200, "alice", "node.enroll", Some("n1"));
    want.seq = seqs[1];
    assert_eq!(all[1], want, "event round-trips, detail included");

    let times = |f: AuditFilter| -> Vec<i64> {
        store
            .list_audit(&t.id, &f)
            .unwrap()
            .into_iter()
            .map(|e| e.time)
            .collect()
    };
    assert_eq!(
        times(AuditFilter {
            since: Some(300),
            ..Default::default()
        }),
        [300, 400, 500, 600]
    );
    assert_eq!(
        times(AuditFilter {
            until: Some(300),
            ..Default::default()
        }),
        [100, 200]
    );
    assert_eq!(
        times(AuditFilter {
            since: Some(200),
            until: Some(500),
            ..Default::default()
        }),
        [200, 300, 400]
    );
    assert_eq!(
        times(AuditFilter {
            node_id: Some("n2".into()),
            ..Default::default()
        }),
        [400, 500]
    );
    assert_eq!(
        times(AuditFilter {
            actor: Some("alice".into()),
            ..Default::default()
        }),
        [100, 200, 500]
    );
    assert_eq!(
        times(AuditFilter {
            action: Some("session.start".into()),
            ..Default::default()
        }),
        [300, 400]
    );
    assert_eq!(
        times(AuditFilter {
            after_seq: Some(seqs[3]),
            ..Default::default()
        }),
        [500, 600]
    );
    assert_eq!(
        times(AuditFilter {
            limit: 2,
            ..Default::default()
        }),
        [100, 200]
    );
    assert_eq!(
        times(AuditFilter {
            actor: Some("alice".into()),
            after_seq: Some(seqs[0]),
            limit: 1,
            ..Default::default()
        }),
        [200]
    );
    assert_eq!(
        times(AuditFilter {
            limit: 50_000,
            ..Default::default()
        })
        .len(),
        6
    );
    assert!(times(AuditFilter {
        actor: Some("mallory".into()),
        ..Default::default()
    })
    .is_empty());

    // Paging with after_seq visits every event once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(
                &t.id,
                &AuditFilter {
                    after_seq: cursor,
                    limit: 4,
                    ..Default::default()
                },
            )
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.seq);
        seen.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seen, seqs);

    // An event about an unknown tenant is still recorded (a denied login, say).
    store
        .append_audit(&event("unknown-tenant", 1, "?", "login", None))
        .unwrap();
    assert_eq!(
        store
            .list_audit("unknown-tenant", &AuditFilter::default())
            .unwrap()
            .len(),
        1
    );
}

pub fn audit_batches(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    assert!(store.append_audit_batch(&[]).unwrap().is_empty());
    let first = store
        .append_audit(&event(&t.id, 100, "alice", "login", None))
        .unwrap();
    let batch: Vec<AuditEvent> = (0..5)
        .map(|i| event(&t.id, 200 + i, "bob", "stream.open", Some("n1")))
        .collect();
    let seqs = store.append_audit_batch(&batch).unwrap();
    assert_eq!(seqs.len(), 5);
    assert!(seqs[0] > first && seqs.windows(2).all(|w| w[0] < w[1]));
    let all = store.list_audit(&t.id, &AuditFilter::default()).unwrap();
    assert_eq!(all.len(), 6);
    for ((got, mut want), seq) in all[1..].iter().zip(batch).zip(&seqs) {
        want.seq = *seq;
        assert_eq!(*got, want, "batched events round-trip in order");
    }
}

/// Two tenants with the same shapes of data; every tenant-scoped call made with tenant A
/// must neither see nor change anything of tenant B.
pub fn tenant_isolation(store: Arc<dyn Store>) {
    struct World {
        tenant: String,
        user: String,
        binding: String,
        token: String,
        node: Node,
    }
    let setup = |name: &str| -> World {
        let t = store.create_tenant(name).unwrap();
        // Same user, node and token-label names in both tenants.
        let u = store
            .create_user(&t.id, "ops", &format!("hash-{name}"))
            .unwrap();
        let b = store
            .bind_role(&t.id, &u.id, "admin", &BTreeMap::new())
            .unwrap();
        let tok = format!("tok-{name}");
        store
            .create_join_token(&token(&t.id, &tok, 10_000, Some(5)))
            .unwrap();
        let node = store
            .create_node(&t.id, "gw", &labels(&[("site", name)]))
            .unwrap();
        store
            .record_certificate(&CertificateRecord {
                serial: format!("serial-{name}"),
                tenant_id: t.id.clone(),
                node_id: node.id.clone(),
                issued_at: 1,
                not_after: 2,
                revoked_at: None,
            })
            .unwrap();
        for (i, action) in ["login", "node.enroll", "session.start"].iter().enumerate() {
            store
                .append_audit(&event(&t.id, 100 + i as i64, "ops", action, Some(&node.id)))
                .unwrap();
        }
        World {
            tenant: t.id,
            user: u.id,
            binding: b.id,
            token: tok,
            node,
        }
    };
    let a = setup("a");
    let b = setup("b");
    let ta = a.tenant.as_str();

    // Reads with tenant A never return B's rows.
    assert_eq!(store.user(ta, &b.user).unwrap(), None);
    let users = store.list_users(ta).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].id, a.user);
    assert_eq!(store.user_by_name(ta, "ops").unwrap().unwrap().id, a.user);
    let bindings = store.list_role_bindings(ta, None).unwrap();
    assert_eq!(
        bindings.iter().map(|x| &x.id).collect::<Vec<_>>(),
        [&a.binding]
    );
    assert!(store
        .list_role_bindings(ta, Some(&b.user))
        .unwrap()
        .is_empty());
    assert_eq!(store.join_token(ta, &b.token).unwrap(), None);
    let tokens = store.list_join_tokens(ta).unwrap();
    assert_eq!(tokens.iter().map(|x| &x.id).collect::<Vec<_>>(), [&a.token]);
    assert_eq!(store.node(ta, &b.node.id).unwrap(), None);
    assert_eq!(store.node_by_id_or_name(ta, &b.node.id).unwrap(), None);
    assert_eq!(
        store.node_by_id_or_name(ta, "gw").unwrap().unwrap().id,
        a.node.id
    );
    let nodes = store.list_nodes(ta).unwrap();
    assert_eq!(
        nodes.iter().map(|x| &x.id).collect::<Vec<_>>(),
        [&a.node.id]
    );
    let audit = store.list_audit(ta, &AuditFilter::default()).unwrap();
    assert_eq!(audit.len(), 3);
    assert!(audit.iter().all(|e| e.tenant_id == a.tenant));
    assert!(store
        .list_audit(
            ta,
            &AuditFilter {
                node_id: Some(b.node.id.clone()),
                ..Default::default()
            }
        )
        .unwrap()
        .is_empty());

    // Mutations with tenant A on B's rows do nothing.
    assert!(is_not_found(store.set_password(ta, &b.user, "pwned")));
    assert!(is_not_found(store.set_user_disabled(ta, &b.user, true)));
    assert!(is_not_found(store.delete_user(ta, &b.user)));
    assert!(is_not_found(store.bind_role(
        ta,
        &b.user,
        "admin",
        &Labels::new()
    )));
    assert!(is_not_found(store.unbind_role(ta, &b.binding)));
    assert!(!store.revoke_join_token(ta, &b.token, 50).unwrap());
    assert!(!store.revoke_node(ta, &b.node.id, 50).unwrap());
    assert!(is_not_found(store.record_certificate(&CertificateRecord {
        serial: "cross".into(),
        tenant_id: a.tenant.clone(),
        node_id: b.node.id.clone(),
        issued_at: 1,
        not_after: 2,
        revoked_at: None,
    })));

    // B is exactly as it was.
    let bu = store.user(&b.tenant, &b.user).unwrap().unwrap();
    assert_eq!(bu.password_hash, "hash-b");
    assert!(!bu.disabled);
    assert_eq!(store.list_role_bindings(&b.tenant, None).unwrap().len(), 1);
    assert_eq!(
        store
            .join_token(&b.tenant, &b.token)
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    assert_eq!(
        store.node(&b.tenant, &b.node.id).unwrap(),
        Some(b.node.clone())
    );
    assert!(!store.is_serial_revoked("serial-b").unwrap());
    assert_eq!(
        store
            .list_audit(&b.tenant, &AuditFilter::default())
            .unwrap()
            .len(),
        3
    );
    assert_eq!(store.certificate("cross").unwrap(), None);
}

// === remote access ===

fn new_access(tenant_id: &str, node_id: &str, expiration: i64) -> NewRemoteAccess {
    NewRemoteAccess {
        tenant_id: tenant_id.to_owned(),
        instance: node_id.to_owned(),
        expiration_timestamp: expiration,
        user: Some("pi".to_owned()),
        kind: "tcp".to_owned(),
        target: "127.0.0.1:22".to_owned(),
        endpoint: true,
        allowed_cidrs: vec!["192.0.2.0/24".to_owned(), "2001:db8::/32".to_owned()],
        created_by: "alice".to_owned(),
        created_by_id: "alice-id".to_owned(),
    }
}

/// `rmtacconf-` followed by exactly 8 characters from `[a-z0-9]`.
pub fn is_remote_access_id(id: &str) -> bool {
    id.strip_prefix(crate::REMOTE_ACCESS_ID_PREFIX)
        .is_some_and(|rest| {
            rest.len() == 8
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

pub fn remote_access_round_trip(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let n1 = store.create_node(&t.id, "n1", &Labels::new()).unwrap();
    let n2 = store.create_node(&t.id, "n2", &Labels::new()).unwrap();
    let before = crate::now_millis();
    let a = store
        .create_remote_access(&new_access(&t.id, &n1.id, before + 60_000))
        .unwrap();
    assert!(is_remote_access_id(&a.resource_id), "{}", a.resource_id);
    assert_eq!(a.tenant_id, t.id);
    assert_eq!(a.instance, n1.id);
    assert_eq!(a.expiration_timestamp, before + 60_000);
    assert_eq!(a.local_port, None);
    assert_eq!(a.user.as_deref(), Some("pi"));
    assert_eq!(a.kind, "tcp");
    assert_eq!(a.target, "127.0.0.1:22");
    assert!(a.endpoint);
    assert_eq!(a.allowed_cidrs, vec!["192.0.2.0/24", "2001:db8::/32"]);
    assert_eq!(a.desired_state, RemoteAccessState::Started);
    assert_eq!(a.current_state, RemoteAccessState::Configured);
    assert_eq!(
        a.configuration_status_indicator,
        StatusIndicator::InProgress
    );
    assert_eq!(a.configuration_status, "waiting for the node");
    assert!(a.created_at >= before);
    assert_eq!(a.updated_at, a.created_at);
    assert_eq!(a.configuration_status_timestamp, a.created_at);
    assert_eq!(a.created_by, "alice");
    assert_eq!(a.created_by_id, "alice-id");
    assert_eq!(
        store.remote_access(&t.id, &a.resource_id).unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.remote_access(&t.id, "rmtacconf-00000000").unwrap(),
        None
    );

    // Many ids, all well-formed and distinct.
    let mut ids = std::collections::BTreeSet::new();
    ids.insert(a.resource_id.clone());
    for _ in 0..50 {
        let mut rec = new_access(&t.id, &n2.id, before + 1);
        rec.user = None;
        rec.endpoint = false;
        rec.allowed_cidrs.clear();
        let r = store.create_remote_access(&rec).unwrap();
        assert!(is_remote_access_id(&r.resource_id));
        assert_eq!(r.user, None);
        assert!(!r.endpoint && r.allowed_cidrs.is_empty());
        assert!(ids.insert(r.resource_id));
    }

    // Unknown node (and a node id of nothing) -> NotFound.
    assert!(is_not_found(store.create_remote_access(&new_access(
        &t.id,
        "no-such-node",
        1
    ))));
    assert!(is_not_found(store.create_remote_access(&new_access(
        "no-such-tenant",
        &n1.id,
        1
    ))));

    // Listing: newest first, filters.
    let all = store
        .list_remote_access(&t.id, &RemoteAccessFilter::default())
        .unwrap();
    assert_eq!(all.len(), 51);
    // Newest first; rows created in the same millisecond keep the reverse
    // of their creation order.
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    let only_n1 = store
        .list_remote_access(
            &t.id,
            &RemoteAccessFilter {
                instance: Some(n1.id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(only_n1, vec![a.clone()]);
    let limited = store
        .list_remote_access(
            &t.id,
            &RemoteAccessFilter {
                limit: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(limited.len(), 5);
    assert_eq!(limited[..], all[..5]);

    // Expiration and desired state.
    let e = store
        .set_remote_access_expiration(&t.id, &a.resource_id, before + 120_000)
        .unwrap();
    assert_eq!(e.expiration_timestamp, before + 120_000);
    assert!(e.updated_at >= a.updated_at);
    let d = store
        .set_remote_access_desired(&t.id, &a.resource_id, RemoteAccessState::Deleted)
        .unwrap();
    assert_eq!(d.desired_state, RemoteAccessState::Deleted);
    assert_eq!(d.current_state, RemoteAccessState::Configured);
    assert!(is_not_found(store.set_remote_access_expiration(
        &t.id,
        "rmtacconf-00000000",
        1
    )));
    assert!(is_not_found(store.set_remote_access_desired(
        &t.id,
        "rmtacconf-00000000",
        RemoteAccessState::Deleted
    )));

    // Once DELETED: hidden from default listings and frozen for the tenant's setters.
    store
        .set_remote_access_status(
            &a.resource_id,
            RemoteAccessState::Deleted,
            StatusIndicator::Idle,
            "deleted by alice",
            None,
            crate::now_millis(),
        )
        .unwrap();
    let live = store
        .list_remote_access(&t.id, &RemoteAccessFilter::default())
        .unwrap();
    assert_eq!(live.len(), 50);
    assert!(live.iter().all(|r| r.resource_id != a.resource_id));
    let with_deleted = store
        .list_remote_access(
            &t.id,
            &RemoteAccessFilter {
                include_deleted: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(with_deleted.len(), 51);
    let deleted = store
        .list_remote_access(
            &t.id,
            &RemoteAccessFilter {
                current_state: Some(RemoteAccessState::Deleted),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].resource_id, a.resource_id);
    let configured = store
        .list_remote_access(
            &t.id,
            &RemoteAccessFilter {
                current_state: Some(RemoteAccessState::Configured),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(configured.len(), 50);
    assert!(is_not_found(store.set_remote_access_expiration(
        &t.id,
        &a.resource_id,
        before + 999_999
    )));
    assert!(is_not_found(store.set_remote_access_desired(
        &t.id,
        &a.resource_id,
        RemoteAccessState::Started
    )));
    // Still readable by id, for the record.
    let got = store.remote_access(&t.id, &a.resource_id).unwrap().unwrap();
    assert_eq!(got.current_state, RemoteAccessState::Deleted);
    assert_eq!(got.expiration_timestamp, before + 120_000);
}

pub fn remote_access_status_update(store: Arc<dyn Store>) {
    let t = store.create_tenant("acme").unwrap();
    let n = store.create_node(&t.id, "n", &Labels::new()).unwrap();
    let a = store
        .create_remote_access(&new_access(&t.id, &n.id, i64::MAX / 2))
        .unwrap();
    let now = a.created_at + 1_000;
    let s = store
        .set_remote_access_status(
            &a.resource_id,
            RemoteAccessState::Started,
            StatusIndicator::Idle,
            "endpoint 127.0.0.1:40123",
            Some(40123),
            now,
        )
        .unwrap();
    let expected = RemoteAccess {
        current_state: RemoteAccessState::Started,
        configuration_status: "endpoint 127.0.0.1:40123".into(),
        configuration_status_indicator: StatusIndicator::Idle,
        configuration_status_timestamp: now,
        updated_at: now,
        local_port: Some(40123),
        ..a.clone()
    };
    assert_eq!(s, expected);
    assert_eq!(
        store.remote_access(&t.id, &a.resource_id).unwrap(),
        Some(expected)
    );

    // A None port keeps the stored one (a deleted configuration shows the port it had).
    let d = store
        .set_remote_access_status(
            &a.resource_id,
            RemoteAccessState::Deleted,
            StatusIndicator::Idle,
            "expired",
            None,
            now + 5,
        )
        .unwrap();
    assert_eq!(d.local_port, Some(40123));
    assert_eq!(d.current_state, RemoteAccessState::Deleted);
    assert_eq!(d.configuration_status, "expired");
    assert_eq!(d.configuration_status_timestamp, now + 5);
    assert_eq!(d.updated_at, now + 5);
    assert_eq!(d.desired_state, RemoteAccessState::Started);

    // Error state with an error indicator.
    let b = store
        .create_remote_access(&new_access(&t.id, &n.id, i64::MAX / 2))
        .unwrap();
    let e = store
        .set_remote_access_status(
            &b.resource_id,
            RemoteAccessState::Error,
            StatusIndicator::Error,
            "no free port",
            None,
            now,
        )
        .unwrap();
    assert_eq!(
        (
            e.current_state,
            e.configuration_status_indicator,
            e.local_port
        ),
        (RemoteAccessState::Error, StatusIndicator::Error, None)
    );

    assert!(is_not_found(store.set_remote_access_status(
        "rmtacconf-00000000",
        RemoteAccessState::Started,
        StatusIndicator::Idle,
        "",
        None,
        now
    )));
    assert!(matches!(
        store.set_remote_access_status(
            &b.resource_id,
            RemoteAccessState::Started,
            StatusIndicator::Idle,
            "",
            Some(0),
            now
        ),
        Err(StoreError::InvalidInput(_))
    ));

    // Concurrent status writers: every read sees the four fields of one writer, never a mix.
    let writers: Vec<_> = (0..4u16)
        .map(|i| {
            let store = Arc::clone(&store);
            let id = b.resource_id.clone();
            std::thread::spawn(move || {
                for j in 0..50i64 {
                    let port = 41000 + i;
                    store
                        .set_remote_access_status(
                            &id,
                            RemoteAccessState::Started,
                            StatusIndicator::Idle,
                            &format!("writer {i}"),
                            Some(port),
                            1_000_000 * i64::from(i) + j,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for _ in 0..100 {
        let r = store.remote_access(&t.id, &b.resource_id).unwrap().unwrap();
        if r.current_state == RemoteAccessState::Started {
            let i = i64::from(r.local_port.unwrap() - 41000);
            assert_eq!(r.configuration_status, format!("writer {i}"));
            assert_eq!(r.configuration_status_timestamp / 1_000_000, i);
            assert_eq!(r.updated_at, r.configuration_status_timestamp);
        }
    }
    for w in writers {
        w.join().unwrap();
    }
}

pub fn remote_access_tenant_isolation(store: Arc<dyn Store>) {
    let a = store.create_tenant("a").unwrap();
    let b = store.create_tenant("b").unwrap();
    let na = store.create_node(&a.id, "same", &Labels::new()).unwrap();
    let nb = store.create_node(&b.id, "same", &Labels::new()).unwrap();
    let ra = store
        .create_remote_access(&new_access(&a.id, &na.id, i64::MAX / 2))
        .unwrap();
    // B cannot create a configuration for A's node.
    assert!(is_not_found(
        store.create_remote_access(&new_access(&b.id, &na.id, 1))
    ));
    let rb = store
        .create_remote_access(&new_access(&b.id, &nb.id, i64::MAX / 2))
        .unwrap();

    assert_eq!(store.remote_access(&b.id, &ra.resource_id).unwrap(), None);
    let listed_b = store
        .list_remote_access(
            &b.id,
            &RemoteAccessFilter {
                include_deleted: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(listed_b, vec![rb.clone()]);
    let by_a_node = store
        .list_remote_access(
            &b.id,
            &RemoteAccessFilter {
                instance: Some(na.id.clone()),
                include_deleted: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(by_a_node.is_empty());
    assert!(is_not_found(store.set_remote_access_expiration(
        &b.id,
        &ra.resource_id,
        5
    )));
    assert!(is_not_found(store.set_remote_access_desired(
        &b.id,
        &ra.resource_id,
        RemoteAccessState::Deleted
    )));
    // A's row is untouched.
    assert_eq!(
        store.remote_access(&a.id, &ra.resource_id).unwrap(),
        Some(ra)
    );
}

pub fn remote_access_active_across_tenants(store: Arc<dyn Store>) {
    assert!(store.active_remote_access().unwrap().is_empty());
    let a = store.create_tenant("a").unwrap();
    let b = store.create_tenant("b").unwrap();
    let na = store.create_node(&a.id, "na", &Labels::new()).unwrap();
    let nb = store.create_node(&b.id, "nb", &Labels::new()).unwrap();
    let ra1 = store
        .create_remote_access(&new_access(&a.id, &na.id, 10))
        .unwrap();
    let ra2 = store
        .create_remote_access(&new_access(&a.id, &na.id, 10))
        .unwrap();
    let rb = store
        .create_remote_access(&new_access(&b.id, &nb.id, 10))
        .unwrap();
    let ids = |v: Vec<RemoteAccess>| {
        let mut ids: Vec<String> = v.into_iter().map(|r| r.resource_id).collect();
        ids.sort();
        ids
    };
    let mut want = vec![
        ra1.resource_id.clone(),
        ra2.resource_id.clone(),
        rb.resource_id.clone(),
    ];
    want.sort();
    assert_eq!(ids(store.active_remote_access().unwrap()), want);

    // ERROR and STARTED rows stay active; DELETED ones leave.
    store
        .set_remote_access_status(
            &ra1.resource_id,
            RemoteAccessState::Error,
            StatusIndicator::Error,
            "boom",
            None,
            20,
        )
        .unwrap();
    store
        .set_remote_access_status(
            &rb.resource_id,
            RemoteAccessState::Started,
            StatusIndicator::Idle,
            "up",
            Some(40000),
            20,
        )
        .unwrap();
    store
        .set_remote_access_status(
            &ra2.resource_id,
            RemoteAccessState::Deleted,
            StatusIndicator::Idle,
            "gone",
            None,
            30,
        )
        .unwrap();
    let active = store.active_remote_access().unwrap();
    let mut want = vec![ra1.resource_id.clone(), rb.resource_id.clone()];
    want.sort();
    assert_eq!(ids(active.clone()), want);
    let started = active
        .iter()
        .find(|r| r.resource_id == rb.resource_id)
        .unwrap();
    assert_eq!(started.tenant_id, b.id);
    assert_eq!(started.local_port, Some(40000));
}

fn issued(tenant_id: &str, id: &str, kind: TokenKind, created_at: i64) -> IssuedToken {
    IssuedToken {
        id: id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        kind,
        subject: format!("subject-of-{id}"),
        name: format!("name-of-{id}"),
        created_by: "admin".to_owned(),
        created_by_id: format!("creator-of-{id}"),
        created_at,
        expires_at: created_at + 60_000,
        instances: (kind == TokenKind::Session).then_some(2),
        revoked_at: None,
    }
}

pub fn issued_tokens_round_trip(store: Arc<dyn Store>) {
    let a = store.create_tenant("a").unwrap();
    let b = store.create_tenant("b").unwrap();
    let s1 = issued(&a.id, "jti-s1", TokenKind::Session, 1_000);
    let k1 = issued(&a.id, "jti-k1", TokenKind::Api, 1_000);
    let s2 = issued(&b.id, "jti-s2", TokenKind::Session, 500);
    for t in [&s1, &k1, &s2] {
        store.create_issued_token(t).unwrap();
    }
    assert!(matches!(
        store.create_issued_token(&s1),
        Err(StoreError::Conflict(_))
    ));
    assert!(is_not_found(store.create_issued_token(&issued(
        "no-such-tenant",
        "x",
        TokenKind::Api,
        1
    ))));
    let mut zero = issued(&a.id, "zero", TokenKind::Session, 1);
    zero.instances = Some(0);
    assert!(matches!(
        store.create_issued_token(&zero),
        Err(StoreError::InvalidInput(_))
    ));

    assert_eq!(
        store.issued_token(&a.id, "jti-s1").unwrap(),
        Some(s1.clone())
    );
    // Tenant isolation: b's token is invisible to a, and cannot be revoked by a.
    assert_eq!(store.issued_token(&a.id, "jti-s2").unwrap(), None);
    assert!(!store.revoke_issued_token(&a.id, "jti-s2", 2_000).unwrap());
    assert_eq!(
        store
            .issued_token(&b.id, "jti-s2")
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );

    // Listing: insertion order within equal creation times, filtered by kind.
    let all = store.list_issued_tokens(&a.id, None).unwrap();
    assert_eq!(all, vec![s1.clone(), k1.clone()]);
    let sessions = store
        .list_issued_tokens(&a.id, Some(TokenKind::Session))
        .unwrap();
    assert_eq!(sessions, vec![s1.clone()]);
    assert_eq!(
        store
            .list_issued_tokens(&b.id, Some(TokenKind::Api))
            .unwrap(),
        vec![]
    );

    // Revocation keeps the first time.
    assert!(store.revoke_issued_token(&a.id, "jti-s1", 3_000).unwrap());
    assert!(store.revoke_issued_token(&a.id, "jti-s1", 4_000).unwrap());
    assert_eq!(
        store
            .issued_token(&a.id, "jti-s1")
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(3_000)
    );
    assert!(!store.revoke_issued_token(&a.id, "missing", 3_000).unwrap());
}

pub fn presence_batches(store: Arc<dyn Store>) {
    let t = store.create_tenant("t").unwrap();
    let a = store.create_node(&t.id, "a", &Labels::new()).unwrap();
    let b = store.create_node(&t.id, "b", &Labels::new()).unwrap();
    let facts = NodeFacts {
        agent_version: Some("9.9".into()),
        os: Some("linux".into()),
        hostname: Some("host-a".into()),
        addresses: vec!["192.0.2.1".into()],
        tunnel_mode: "on-demand".into(),
        actions: Vec::new(),
    };
    store
        .apply_presence(&[
            PresenceUpdate::Status {
                node_id: a.id.clone(),
                status: NodeStatus::Online,
                at: 10,
            },
            PresenceUpdate::Facts {
                node_id: a.id.clone(),
                facts: facts.clone(),
            },
            PresenceUpdate::Status {
                node_id: b.id.clone(),
                status: NodeStatus::Online,
                at: 11,
            },
            // Later updates of the same node win, in order.
            PresenceUpdate::Status {
                node_id: b.id.clone(),
                status: NodeStatus::Offline,
                at: 12,
            },
            // A node that does not exist is skipped, not an error.
            PresenceUpdate::Status {
                node_id: "gone".into(),
                status: NodeStatus::Online,
                at: 13,
            },
        ])
        .unwrap();
    let a = store.node(&t.id, &a.id).unwrap().unwrap();
    assert_eq!((a.status, a.last_seen), (NodeStatus::Online, Some(10)));
    assert_eq!(a.hostname.as_deref(), Some("host-a"));
    assert_eq!(a.tunnel_mode, "on-demand");
    let b = store.node(&t.id, &b.id).unwrap().unwrap();
    assert_eq!((b.status, b.last_seen), (NodeStatus::Offline, Some(12)));
    store.apply_presence(&[]).unwrap();
}

fn policy(tenant_id: &str, level: PolicyLevel, key: &str, rules: serde_json::Value) -> Policy {
    Policy {
        tenant_id: tenant_id.to_owned(),
        level,
        scope_key: key.to_owned(),
        rules,
        updated_by: "admin".to_owned(),
        updated_at: 1_000,
    }
}

/// Policies: upsert by scope, list in level order, delete, tenant isolation, and
/// node policies only for the tenant's own nodes.
pub fn policies_round_trip(store: Arc<dyn Store>) {
    use serde_json::json;
    let a = store.create_tenant("a").unwrap();
    let b = store.create_tenant("b").unwrap();
    let na = store.create_node(&a.id, "n", &Labels::new()).unwrap();
    let nb = store.create_node(&b.id, "n", &Labels::new()).unwrap();
    assert!(store.list_policies(&a.id).unwrap().is_empty());

    let node = policy(&a.id, PolicyLevel::Node, &na.id, json!({"exec": "allow"}));
    let project = policy(
        &a.id,
        PolicyLevel::Project,
        "env=prod",
        json!({"app": "deny"}),
    );
    let tenant = policy(&a.id, PolicyLevel::Tenant, "", json!({"exec": "deny"}));
    for p in [&node, &project, &tenant] {
        store.put_policy(p).unwrap();
    }
    assert_eq!(
        store.list_policies(&a.id).unwrap(),
        vec![tenant.clone(), project.clone(), node.clone()]
    );
    // For one node: the tenant's, the projects', its own; never another node's.
    let other = store.create_node(&a.id, "other", &Labels::new()).unwrap();
    let other_policy = policy(
        &a.id,
        PolicyLevel::Node,
        &other.id,
        json!({"shell": "deny"}),
    );
    store.put_policy(&other_policy).unwrap();
    assert_eq!(
        store.policies_for_node(&a.id, &na.id).unwrap(),
        vec![tenant.clone(), project.clone(), node.clone()]
    );
    assert_eq!(
        store.policies_for_node(&a.id, &other.id).unwrap(),
        vec![tenant.clone(), project.clone(), other_policy.clone()]
    );
    assert!(store.policies_for_node(&b.id, &na.id).unwrap().is_empty());
    assert!(store
        .delete_policy(&a.id, PolicyLevel::Node, &other.id)
        .unwrap());
    // Replacing keeps one row per scope.
    let mut tenant2 = tenant.clone();
    tenant2.rules = json!({"shell": "deny"});
    tenant2.updated_at = 2_000;
    store.put_policy(&tenant2).unwrap();
    let got = store.list_policies(&a.id).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], tenant2);

    // B sees none of A's, and cannot attach a policy to A's node.
    assert!(store.list_policies(&b.id).unwrap().is_empty());
    assert!(is_not_found(store.put_policy(&policy(
        &b.id,
        PolicyLevel::Node,
        &na.id,
        json!({})
    ))));
    assert!(!store.delete_policy(&b.id, PolicyLevel::Tenant, "").unwrap());
    store
        .put_policy(&policy(
            &b.id,
            PolicyLevel::Node,
            &nb.id,
            json!({"file": "deny"}),
        ))
        .unwrap();
    assert_eq!(store.list_policies(&a.id).unwrap().len(), 3);
    assert!(is_not_found(store.put_policy(&policy(
        "no-such-tenant",
        PolicyLevel::Tenant,
        "",
        json!({})
    ))));
    assert!(matches!(
        store.put_policy(&policy(&a.id, PolicyLevel::Tenant, "x", json!({}))),
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.put_policy(&policy(&a.id, PolicyLevel::Project, "", json!({}))),
        Err(StoreError::InvalidInput(_))
    ));

    assert!(store
        .delete_policy(&a.id, PolicyLevel::Project, "env=prod")
        .unwrap());
    assert!(!store
        .delete_policy(&a.id, PolicyLevel::Project, "env=prod")
        .unwrap());
    assert_eq!(store.list_policies(&a.id).unwrap().len(), 2);
    assert_eq!(store.list_policies(&b.id).unwrap().len(), 1);
}

/// Command counts per node and class, added in batches; the last command is the latest
/// by time; tenants are isolated.
pub fn node_commands_count(store: Arc<dyn Store>) {
    let a = store.create_tenant("a").unwrap();
    let b = store.create_tenant("b").unwrap();
    let n = store.create_node(&a.id, "n", &Labels::new()).unwrap();
    let m = store.create_node(&a.id, "m", &Labels::new()).unwrap();
    assert!(store.node_commands(&a.id).unwrap().is_empty());
    let delta = |node: &str, (device, app, external), kind: &str, what: &str, at| NodeCommands {
        node_id: node.into(),
        device,
        app,
        external,
        last: Some(LastCommand {
            kind: kind.into(),
            what: what.into(),
            actor: "alice".into(),
            source: Some("192.0.2.9:5000".into()),
            at,
        }),
    };
    store
        .apply_node_commands(&[
            (a.id.clone(), delta(&n.id, (1, 0, 0), "exec", "uptime", 10)),
            (a.id.clone(), delta(&m.id, (1, 0, 0), "shell", "", 5)),
            // Another tenant's entry for A's node, and an unknown node: skipped.
            (b.id.clone(), delta(&n.id, (5, 5, 5), "exec", "evil", 99)),
            (
                a.id.clone(),
                delta("no-such-node", (1, 0, 0), "exec", "x", 1),
            ),
        ])
        .unwrap();
    store
        .apply_node_commands(&[(
            a.id.clone(),
            delta(&n.id, (0, 1, 0), "tcp", "10.0.0.5:502", 30),
        )])
        .unwrap();
    // An older command arriving late counts but does not become the last one.
    store
        .apply_node_commands(&[(a.id.clone(), delta(&n.id, (0, 0, 1), "tcp", "x:1", 20))])
        .unwrap();
    store.apply_node_commands(&[]).unwrap();
    let got = store.node_commands(&a.id).unwrap();
    assert_eq!(got.len(), 2);
    let gn = got.iter().find(|c| c.node_id == n.id).unwrap();
    assert_eq!((gn.device, gn.app, gn.external), (1, 1, 1));
    let last = gn.last.as_ref().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.what.as_str(), last.at),
        ("tcp", "10.0.0.5:502", 30)
    );
    assert_eq!(last.actor, "alice");
    assert_eq!(last.source.as_deref(), Some("192.0.2.9:5000"));
    assert!(store.node_commands(&b.id).unwrap().is_empty());
}
