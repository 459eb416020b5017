//! Group commit of audit events: every event is stored, in each caller's order,
//! before its append returns, however many callers append at once.

use std::sync::Arc;

use adit_server::audit::GroupCommit;
use adit_store::{AuditFilter, SqliteStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_durable_when_its_append_returns() {
    let dir = std::env::temp_dir().join(format!(
        "adit-audit-commit-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A file-backed store: WAL with synchronous=FULL, as the server runs it.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("adit.db")).unwrap());
    let tenant = store.create_tenant("acme").unwrap();
    let commit = Arc::new(GroupCommit::new(store.clone()));

    const WRITERS: usize = 100;
    const EACH: usize = 5;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (commit, store, tenant_id) = (commit.clone(), store.clone(), tenant.id.clone());
        tasks.spawn(async move {
            let actor = format!("writer-{w}");
            for i in 0..EACH {
                let event = adit_server::audit::event(
                    &tenant_id,
                    &actor,
                    None,
                    Some("node-1"),
                    adit_server::audit::STREAM_OPEN,
                    adit_server::audit::OK,
                    serde_json::json!({ "i": i }),
                );
                commit.append(event).await;
                // Readable at once: the append returned after the commit.
                let mine = store
                    .list_audit(
                        &tenant_id,
                        &AuditFilter {
                            actor: Some(actor.clone()),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                let order: Vec<_> = mine.iter().map(|e| e.detail["i"].clone()).collect();
                assert_eq!(
                    order,
                    (0..=i).map(|k| serde_json::json!(k)).collect::<Vec<_>>()
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let all = store
        .list_audit(&tenant.id, &AuditFilter::default())
        .unwrap();
    assert_eq!(all.len(), WRITERS * EACH);
    let batches = commit.batches();
    assert!((1..=(WRITERS * EACH) as u64).contains(&batches));
    eprintln!("{} events in {batches} transactions", WRITERS * EACH);
    let _ = std::fs::remove_dir_all(&dir);
}
