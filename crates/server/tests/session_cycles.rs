//! 1,000 create/delete cycles of endpoint sessions leak no ports, tasks or
//! live rows. Drives the real store and the real reconcile loop in process.

mod common;

use adit_server::sessions;
use adit_server::state::{AppState, Settings};
use adit_store::{Labels, NewRemoteAccess, RemoteAccessState};
use common::test_state;

/// A state with tenant `default`, node `dev1` and an admin (who creates the sessions);
/// returns the state and the three ids.
fn state(ports: std::ops::RangeInclusive<u16>) -> (AppState, String, String, String) {
    let state = test_state(Settings {
        endpoint_ports: ports,
        ..Settings::default()
    });
    let tenant = state.store.create_tenant("default").unwrap();
    let node = state
        .store
        .create_node(&tenant.id, "dev1", &Labels::new())
        .unwrap();
    let admin = state
        .store
        .create_user(&tenant.id, "admin", "unused-hash")
        .unwrap();
    state
        .store
        .bind_role(&tenant.id, &admin.id, "admin", &Labels::new())
        .unwrap();
    (state, tenant.id, node.id, admin.id)
}

fn new_session(tenant: &str, node: &str, creator: &str, ttl_ms: i64) -> NewRemoteAccess {
    NewRemoteAccess {
        tenant_id: tenant.to_string(),
        instance: node.to_string(),
        expiration_timestamp: adit_store::now_millis() + ttl_ms,
        user: None,
        kind: "tcp".into(),
        target: "127.0.0.1:22".into(),
        endpoint: true,
        allowed_cidrs: vec![],
        created_by: "admin".into(),
        created_by_id: creator.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_create_delete_cycles_leak_nothing() {
    // A small range forces ports to be reused many times over.
    let range = 21100..=21119;
    let (state, tenant, node, admin) = state(range.clone());
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for i in 0..1000 {
        let ra = state
            .store
            .create_remote_access(&new_session(&tenant, &node, &admin, 600_000))
            .unwrap();
        sessions::reconcile(&state).await;
        let port = *state
            .sessions
            .listening()
            .get(&ra.resource_id)
            .unwrap_or_else(|| panic!("cycle {i}: no endpoint"));
        assert!(range.contains(&port));
        let stored = state
            .store
            .remote_access(&tenant, &ra.resource_id)
            .unwrap()
            .unwrap();
        assert_eq!(stored.local_port, Some(port));
        // The node is offline: the session waits, with its endpoint up.
        assert_eq!(stored.current_state, RemoteAccessState::Configured);
        state
            .store
            .set_remote_access_desired(&tenant, &ra.resource_id, RemoteAccessState::Deleted)
            .unwrap();
        sessions::reconcile(&state).await;
        assert!(
            state.sessions.listening().is_empty(),
            "cycle {i}: endpoint left open"
        );
        let stored = state
            .store
            .remote_access(&tenant, &ra.resource_id)
            .unwrap()
            .unwrap();
        assert_eq!(stored.current_state, RemoteAccessState::Deleted);
    }
    assert!(state.store.active_remote_access().unwrap().is_empty());
    // Endpoint tasks end once cancelled; give them a moment to finish.
    let mut alive = usize::MAX;
    for _ in 0..100 {
        alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if alive <= tasks_before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        alive <= tasks_before,
        "{alive} tasks alive, {tasks_before} before"
    );
    // Every port of the range can be bound again.
    for port in range {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_enforced_by_the_loop() {
    let (state, tenant, node, admin) = state(21120..=21129);
    let ra = state
        .store
        .create_remote_access(&new_session(&tenant, &node, &admin, 300))
        .unwrap();
    sessions::reconcile(&state).await;
    assert_eq!(state.sessions.listening().len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    sessions::reconcile(&state).await;
    assert!(state.sessions.listening().is_empty());
    let stored = state
        .store
        .remote_access(&tenant, &ra.resource_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.current_state, RemoteAccessState::Deleted);
    assert_eq!(stored.configuration_status, "expired");
}
