//! Fleet fan-out against 20 real agent processes: `adit exec --selector` and
//! `adit query --selector` run on every matching online node, report each node's
//! result clearly, list the offline one as `offline`, and exit 1 because of it; a
//! selector that leaves it out exits 0.

use std::time::{Duration, Instant};

use adit_e2e::*;
use serde_json::Value;

const NODES: usize = 20;
/// The node that is stopped before the fan-out.
const OFFLINE: &str = "edge-13";

#[test]
fn fan_out_across_twenty_agents_with_one_offline() {
    let tmp = TempDir::new("fanout");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    // ring=a: edge-00..09 (all online); ring=b: edge-10..19 (edge-13 stopped).
    let nodes: Vec<(String, Vec<(String, String)>)> = (0..NODES)
        .map(|i| {
            let ring = if i < 10 { "a" } else { "b" };
            (
                format!("edge-{i:02}"),
                vec![
                    ("fleet".to_owned(), "f".to_owned()),
                    ("ring".to_owned(), ring.to_owned()),
                ],
            )
        })
        .collect();
    let started = Instant::now();
    // The server's port and one nothing listens on, which the agents let queries reach.
    let closed = format!("127.0.0.1:{}", free_port());
    let listening = format!("127.0.0.1:{}", server.port);
    let mut agents = start_fleet(
        &home,
        &server,
        tmp.path(),
        &nodes,
        &["--allow-exec", "--allow", &closed, "--allow", &listening],
    );
    eprintln!(
        "{NODES} agents enrolled and online in {:?}",
        started.elapsed()
    );
    let offline_index = nodes.iter().position(|(n, _)| n == OFFLINE).unwrap();
    agents[offline_index].kill();
    let gone = wait_for(Duration::from_secs(20), || {
        (node_status(&home, OFFLINE).as_deref() == Some("offline")).then_some(())
    });
    assert!(gone.is_some(), "{OFFLINE} did not go offline");

    // exec on all 20: every online node's output prefixed by its name, the offline one
    // in the summary, exit 1.
    let started = Instant::now();
    let out = adit(
        &home,
        &[
            "exec",
            "--selector",
            "fleet=f",
            "--",
            "sh",
            "-c",
            "echo hello; echo warn >&2",
        ],
    );
    eprintln!("exec on {NODES} nodes in {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (name, _) in &nodes {
        let row = stdout
            .lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(name.as_str()) && words.next() != Some("|")
            })
            .unwrap_or_else(|| panic!("no summary row for {name}:\n{stdout}"));
        if name == OFFLINE {
            assert!(!stdout.contains(&format!("{name} | hello")), "{stdout}");
            assert_eq!(row.split_whitespace().nth(1), Some("offline"), "{row}");
        } else {
            assert!(stdout.contains(&format!("{name} | hello\n")), "{stdout}");
            assert!(stderr.contains(&format!("{name} | warn\n")), "{stderr}");
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells[1..3], ["ok", "0"], "{row}");
        }
    }
    assert!(stdout.contains("19 of 20 nodes ok"), "{stdout}");

    // The same as JSON.
    let out = adit(
        &home,
        &[
            "exec",
            "--selector",
            "fleet=f",
            "--output",
            "json",
            "--",
            "echo",
            "hi",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_object().unwrap().len(), NODES, "{v}");
    assert_eq!(v[OFFLINE]["status"], "offline", "{v}");
    assert_eq!(v["edge-00"]["status"], "ok", "{v}");
    assert_eq!(v["edge-00"]["stdout"], "hi\n", "{v}");

    // A selector without the offline node: exit 0.
    let out = adit(&home, &["exec", "--selector", "ring=a", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 of 10 nodes ok"));
    // A failing command fails the run, each node `failed` with its exit status.
    let out = adit(
        &home,
        &["exec", "--selector", "ring=a", "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" failed ")).count(),
        10,
        "{stdout}"
    );

    // A query whose check fails on the nodes (a closed port) fails the run, each
    // node `failed` with the reason.
    let out = adit(&home, &["query", "--selector", "ring=a", "tcp", &closed]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" failed ")).count(),
        10,
        "{stdout}"
    );

    // query on all 20 as JSON: one object by node, the offline one with its status.
    let started = Instant::now();
    let out = adit(
        &home,
        &[
            "query",
            "--selector",
            "fleet=f",
            "system",
            "--output",
            "json",
        ],
    );
    eprintln!("query on {NODES} nodes in {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for (name, _) in &nodes {
        if name == OFFLINE {
            assert_eq!(v[name]["status"], "offline", "{v}");
            assert!(v[name]["error"].is_string(), "{v}");
        } else {
            assert_eq!(v[name]["hostname"], hostname.trim(), "{name}: {v}");
        }
    }
    let out = adit(
        &home,
        &[
            "query",
            "--selector",
            "fleet=f,ring=b",
            "tcp",
            &format!("127.0.0.1:{}", server.port),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("=== edge-10 ===\nconnected to"), "{stdout}");
    assert!(stdout.contains("9 of 10 nodes ok"), "{stdout}");
    let out = adit(
        &home,
        &["query", "--selector", "ring=a", "disk", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Nothing matches: a clear error.
    let out = adit(&home, &["query", "--selector", "ring=zzz", "system"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node matches the selector ring=zzz"),
        "{out:?}"
    );
}
