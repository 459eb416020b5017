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

/// A session keeps its endpoint port for its whole life: a restart binds the same
/// ports again; a session whose port another program took is in ERROR with that port
/// (never moved to another) until the port is free; new sessions never get a live
/// session's port, nor a port closed a moment ago while others are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_their_ports_across_a_restart() {
    let range = 21200..=21219;
    let (state, tenant, node, admin) = state(range.clone());
    let create = |state: &AppState| {
        state
            .store
            .create_remote_access(&new_session(&tenant, &node, &admin, 600_000))
            .unwrap()
            .resource_id
    };
    let ids: Vec<String> = (0..3).map(|_| create(&state)).collect();
    sessions::reconcile(&state).await;
    let before = state.sessions.listening();
    let port = |id: &String| before[id];

    // The process ends; another program takes the second session's port meanwhile.
    sessions::close_endpoints(&state).await;
    assert!(state.sessions.listening().is_empty());
    let blocker = std::net::TcpListener::bind(("127.0.0.1", port(&ids[1]))).unwrap();
    let restarted = AppState {
        sessions: std::sync::Arc::new(sessions::Sessions::default()),
        ..state.clone()
    };
    sessions::reconcile(&restarted).await;
    let after = restarted.sessions.listening();
    assert_eq!(after.get(&ids[0]), Some(&port(&ids[0])));
    assert_eq!(after.get(&ids[2]), Some(&port(&ids[2])));
    assert_eq!(after.get(&ids[1]), None, "moved to another port: {after:?}");
    let stored = |id: &String| restarted.store.remote_access(&tenant, id).unwrap().unwrap();
    let blocked = stored(&ids[1]);
    assert_eq!(blocked.current_state, RemoteAccessState::Error);
    assert_eq!(blocked.local_port, Some(port(&ids[1])));
    assert!(
        blocked
            .configuration_status
            .contains(&format!("port {}", port(&ids[1]))),
        "{}",
        blocked.configuration_status
    );
    // A new session gets none of the live sessions' ports, the blocked one included.
    let fourth = create(&restarted);
    sessions::reconcile(&restarted).await;
    let p4 = restarted.sessions.listening()[&fourth];
    assert!(
        !before.values().any(|p| *p == p4),
        "{p4} was a live session's port"
    );
    // Once free, the blocked session gets its own port back.
    drop(blocker);
    sessions::reconcile(&restarted).await;
    assert_eq!(
        restarted.sessions.listening().get(&ids[1]),
        Some(&port(&ids[1]))
    );
    assert_eq!(stored(&ids[1]).current_state, RemoteAccessState::Configured);
    // A deleted session's port is not handed to the next one while others are free.
    restarted
        .store
        .set_remote_access_desired(&tenant, &ids[0], RemoteAccessState::Deleted)
        .unwrap();
    sessions::reconcile(&restarted).await;
    let fifth = create(&restarted);
    sessions::reconcile(&restarted).await;
    assert_ne!(restarted.sessions.listening()[&fifth], port(&ids[0]));
    sessions::close_endpoints(&restarted).await;
}
