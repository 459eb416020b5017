//! `adit query` and `adit tcp` end to end against real agents: every query answers
//! valid JSON with the expected fields on this machine (loopback only for the network
//! ones), `ls`/`cat` stay inside the file roots, hostile arguments are refused, the
//! agent can switch queries off, and streams are audited (query, args; `access`
//! device/external for `adit tcp`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use adit_e2e::*;
use serde_json::Value;

fn query(home: &Path, args: &[&str]) -> Value {
    let mut all = vec!["query"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = adit(home, &all);
    // 0: the check passed; 4: it failed (5: unavailable); either way the answer is there.
    assert!(
        matches!(out.status.code(), Some(0 | 4 | 5)),
        "adit {}: {out:?}",
        all.join(" ")
    );
    let out = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn refused(home: &Path, args: &[&str]) -> String {
    let mut all = vec!["query"];
    all.extend_from_slice(args);
    fails(adit(home, &all), &format!("adit {}", all.join(" ")))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn queries_answer_json_and_stay_confined() {
    let tmp = TempDir::new("query");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let root = tmp.path().join("files");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let root = std::fs::canonicalize(&root).unwrap();
    std::fs::write(root.join("a.txt"), "hello from the root\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
    let root_s = root.display().to_string();
    // Queries that reach the network go only where the allow-list lets streams go.
    let echo = echo_server();
    let closed = free_port();
    let web = http_server("hello over http");
    let allowed: Vec<String> = [22, echo, closed, web, server.port]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut dev1_args = vec!["--file-root", root_s.as_str()];
    for a in &allowed {
        dev1_args.extend(["--allow", a.as_str()]);
    }
    let _dev1 = start_agent(&home, &server, tmp.path(), "dev1", &dev1_args);
    let _dev2 = start_agent(&home, &server, tmp.path(), "dev2", &["--deny-query"]);
    // dev3 trusts the server's CA for https fetches, as a device whose services use a
    // private CA would.
    let ca = tmp.path().join("adit-ca.pem");
    let info = std::process::Command::new("curl")
        .args(["-sk", &format!("{}/v1/ca", server.url)])
        .output()
        .unwrap()
        .stdout;
    let info: Value = serde_json::from_slice(&info).expect("CA info JSON");
    std::fs::write(&ca, info["ca_pem"].as_str().expect("ca_pem")).unwrap();
    let _dev3 = start_agent_with(&home, &server, tmp.path(), "dev3", |cmd| {
        cmd.env("SSL_CERT_FILE", &ca)
            .args(["--allow", &format!("127.0.0.1:{}", server.port)]);
    });
    let h = &home;

    // system
    let v = query(h, &["dev1", "system"]);
    assert_eq!(v["hostname"], hostname(), "{v}");
    assert!(v["cpu"]["count"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["memory"]["total_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(!v["kernel"].as_str().unwrap().is_empty(), "{v}");
    assert!(v["uptime_secs"].is_u64() && v["boot_time"].is_i64(), "{v}");
    assert_eq!(v["load"].as_array().unwrap().len(), 3, "{v}");

    // processes: top 5 by rss, the agent itself among all processes
    let v = query(h, &["dev1", "processes", "--sort", "rss", "--top", "5"]);
    let procs = v["processes"].as_array().unwrap();
    assert!(!procs.is_empty() && procs.len() <= 5, "{v}");
    assert!(v["total"].as_u64().unwrap() >= procs.len() as u64);
    let rss: Vec<u64> = procs
        .iter()
        .map(|p| p["rss_bytes"].as_u64().unwrap())
        .collect();
    assert!(
        rss.windows(2).all(|w| w[0] >= w[1]),
        "not sorted by rss: {rss:?}"
    );
    for p in procs {
        assert!(
            p["pid"].is_u64() && p["ppid"].is_u64() && p["command"].is_string(),
            "{p}"
        );
        assert!(p["cpu_secs"].is_number() && p["state"].is_string(), "{p}");
    }
    let all = query(h, &["dev1", "processes", "--top", "10000"]);
    assert!(
        all["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["command"].as_str().unwrap().contains("adit-agent run")),
        "the agent is not among the processes"
    );

    // interfaces: lo with 127.0.0.1
    let v = query(h, &["dev1", "interfaces"]);
    let lo = v["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .unwrap_or_else(|| panic!("no lo in {v}"));
    assert!(
        lo["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("127.0.0.1/")),
        "{lo}"
    );
    assert!(lo["mtu"].is_u64() && lo["rx_bytes"].is_u64(), "{lo}");

    // routes, arp: well-formed lists
    let v = query(h, &["dev1", "routes"]);
    assert!(v["ipv4"].is_array() && v["ipv6"].is_array(), "{v}");
    for r in v["ipv4"].as_array().unwrap() {
        assert!(r["destination"].as_str().unwrap().contains('/'), "{r}");
    }
    let v = query(h, &["dev1", "arp"]);
    assert!(v["entries"].is_array(), "{v}");

    // sockets: the server's listening port and the agent's tunnel to it
    let v = query(h, &["dev1", "sockets"]);
    let socks = v["sockets"].as_array().unwrap();
    assert!(
        socks
            .iter()
            .any(|s| s["state"] == "listen" && s["local_port"] == server.port),
        "no listening socket on {} in {v}",
        server.port
    );
    let remote = format!("127.0.0.1:{}", server.port);
    assert!(
        socks
            .iter()
            .any(|s| s["state"] == "established" && s["remote"] == remote.as_str()),
        "no established connection to {remote}"
    );

    // disk
    let v = query(h, &["dev1", "disk"]);
    let mounts = v["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mount"] == "/" && m["size_bytes"].as_u64().unwrap() > 0),
        "{v}"
    );

    // dns, tcp, http, ping, traceroute: loopback only
    let v = query(h, &["dev1", "dns", "localhost"]);
    assert_eq!(v["resolved"], true, "{v}");
    assert!(
        v["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1" || a == "::1"),
        "{v}"
    );
    // A name the allow-list does not name is not even looked up.
    let why = refused(h, &["dev1", "dns", "no-such-host.invalid"]);
    assert!(why.contains("not in this agent's allow-list"), "{why}");

    let v = query(h, &["dev1", "tcp", &format!("127.0.0.1:{echo}")]);
    assert_eq!(v["connected"], true, "{v}");
    assert!(v["time_ms"].is_number(), "{v}");
    let v = query(h, &["dev1", "tcp", &format!("127.0.0.1:{closed}")]);
    assert_eq!(v["connected"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("refused"), "{v}");

    let v = query(
        h,
        &[
            "dev1",
            "http",
            &format!("http://127.0.0.1:{web}/status?x=1"),
        ],
    );
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body_preview"], "hello over http", "{v}");
    assert!(
        v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|kv| kv[0] == "X-Test" && kv[1] == "adit"),
        "{v}"
    );
    // https: the server's certificate is checked against the system's CA bundle, so
    // Adit's own server (its private CA) is refused with the reason ...
    let healthz = format!("https://127.0.0.1:{}/healthz", server.port);
    let v = query(h, &["dev1", "http", &healthz]);
    assert_eq!(v["ok"], false, "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(why.contains("TLS") && why.contains("certificate"), "{v}");
    // ... and accepted by an agent told to trust that CA (SSL_CERT_FILE).
    let v = query(h, &["dev3", "http", &healthz]);
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["tls"]["verified"], true, "{v}");
    assert_eq!(v["tls"]["roots"], 1, "{v}");
    assert!(v["tls"]["version"].as_str().unwrap().contains("TLS"), "{v}");
    // Plain http to a TLS port is not HTTP.
    let v = query(
        h,
        &[
            "dev1",
            "http",
            &format!("http://127.0.0.1:{}/", server.port),
        ],
    );
    assert_eq!(v["ok"], false, "{v}");
    let v = query(h, &["dev1", "http", &format!("http://127.0.0.1:{closed}/")]);
    assert_eq!(v["ok"], false, "{v}");

    let v = query(h, &["dev1", "ping", "127.0.0.1", "--count", "2"]);
    if v["available"] == false {
        assert!(
            v["reason"].as_str().unwrap().contains("not installed"),
            "{v}"
        );
    } else {
        assert_eq!(v["received"], 2, "{v}");
    }
    let v = query(h, &["dev1", "traceroute", "127.0.0.1"]);
    if v["available"] == false {
        assert!(v["reason"].as_str().unwrap().contains("installed"), "{v}");
    } else {
        assert!(!v["lines"].as_array().unwrap().is_empty(), "{v}");
    }

    // logs, dmesg, reboot-history: bounded, or clearly unavailable
    let v = query(h, &["dev1", "logs", "--lines", "5", "--since", "1h"]);
    match v["available"].as_bool() {
        Some(false) => assert!(v["reason"].is_string(), "{v}"),
        _ => assert!(v["entries"].as_array().unwrap().len() <= 5, "{v}"),
    }
    let v = query(h, &["dev1", "dmesg", "--lines", "5"]);
    match v["available"].as_bool() {
        Some(true) => assert!(v["lines"].as_array().unwrap().len() <= 5, "{v}"),
        _ => assert!(!v["reason"].as_str().unwrap().is_empty(), "{v}"),
    }
    let v = query(h, &["dev1", "reboot-history"]);
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .unwrap();
    assert_eq!(v["boot_time"], btime, "{v}");
    assert!(v["history"].is_array(), "{v}");

    // ls / cat inside the root; outside, `..` and a symlink escape refused
    let v = query(h, &["dev1", "ls", &root_s]);
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "escape", "sub"], "{v}");
    let v = query(h, &["dev1", "cat", &format!("{root_s}/a.txt")]);
    assert_eq!(v["content"], "hello from the root\n", "{v}");
    assert_eq!(v["truncated"], false);
    let err = refused(h, &["dev1", "cat", "/etc/passwd"]);
    assert!(err.contains("outside this agent's file roots"), "{err}");
    let err = refused(h, &["dev1", "ls", "/etc"]);
    assert!(err.contains("outside this agent's file roots"), "{err}");
    let err = refused(h, &["dev1", "cat", &format!("{root_s}/escape")]);
    assert!(err.contains("symlink"), "{err}");
    let err = refused(h, &["dev1", "cat", &format!("{root_s}/sub/../a.txt")]);
    assert!(err.contains("'..' is not allowed"), "{err}");

    // Hostile or malformed arguments: refused before anything runs.
    for (args, why) in [
        (
            vec!["dev1", "ping", "127.0.0.1;reboot"],
            "not a valid host name",
        ),
        (vec!["dev1", "ping", "--", "-f"], "not a valid host name"),
        (
            vec!["dev1", "ping", "127.0.0.1", "--count", "1000"],
            "out of range",
        ),
        (vec!["dev1", "tcp", "127.0.0.1:0"], "invalid port"),
        (
            vec!["dev1", "http", "file:///etc/passwd"],
            "not http or https",
        ),
        (vec!["dev1", "system", "extra"], "takes no argument"),
        (vec!["dev1", "rm"], "unknown query"),
        (vec!["dev1", "dns"], "needs an argument"),
        (vec!["dev1", "logs", "--lines", "0"], "out of range"),
    ] {
        let err = refused(h, &args);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let err = refused(h, &["dev1", "logs", "--pattern", "(unclosed"]);
    assert!(err.contains("invalid --pattern"), "{err}");
    // The agent has the final say.
    let err = refused(h, &["dev2", "system"]);
    assert!(err.contains("does not allow queries"), "{err}");
    let err = refused(h, &["dev2", "nope"]);
    assert!(err.contains("unknown query"), "{err}");

    // Queries that reach the network go only where a tcp stream may: the agent's
    // allow-list (refused there, before any packet) ...
    let unlisted = free_port();
    let tcp_unlisted = format!("127.0.0.1:{unlisted}");
    let http_unlisted = format!("http://127.0.0.1:{unlisted}/");
    let not_listed = format!("target {tcp_unlisted} is not in this agent's allow-list");
    for (args, why) in [
        (["dev1", "tcp", tcp_unlisted.as_str()], not_listed.as_str()),
        (
            ["dev1", "http", http_unlisted.as_str()],
            not_listed.as_str(),
        ),
        (
            ["dev1", "ping", "127.0.0.2"],
            "host 127.0.0.2 is not in this agent's allow-list",
        ),
    ] {
        let err = refused(h, &args);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // ... and the access policy on the proxy, classified as the stream would be.
    ok(
        adit(h, &["policy", "set", "--tenant", "--device", "deny"]),
        "policy set",
    );
    for args in [
        vec!["dev1", "tcp", &format!("127.0.0.1:{echo}")],
        vec!["dev1", "http", &format!("http://localhost:{web}/")],
        vec!["dev1", "ping", "127.0.0.1"],
        vec!["dev1", "dns", "localhost"],
    ] {
        let err = refused(h, &args);
        assert!(
            err.contains("device access to") && err.contains("denied by the policy of tenant"),
            "{args:?}: {err}"
        );
    }
    // Local queries are not network access.
    query(h, &["dev1", "system"]);
    ok(adit(h, &["policy", "unset", "--tenant"]), "policy unset");
    assert_eq!(
        query(h, &["dev1", "tcp", &format!("127.0.0.1:{echo}")])["connected"],
        true
    );

    // techsupport: a tar.gz of every answer, streamed to stdout.
    let out = adit(h, &["query", "dev1", "techsupport"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = tmp.path().join("bundle.tar.gz");
    std::fs::write(&bundle, &out.stdout).unwrap();
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(list.status.success(), "not a tar.gz");
    let names = String::from_utf8_lossy(&list.stdout).into_owned();
    for part in [
        "system",
        "processes",
        "interfaces",
        "routes",
        "arp",
        "sockets",
        "disk",
        "logs",
        "dmesg",
        "reboot-history",
    ] {
        assert!(
            names.contains(&format!("/{part}.json")),
            "{part} missing from {names}"
        );
    }
    let system = names.lines().find(|n| n.ends_with("/system.json")).unwrap();
    let extracted = Command::new("tar")
        .arg("-xOzf")
        .arg(&bundle)
        .arg(system)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&extracted.stdout).unwrap();
    assert_eq!(v["hostname"], hostname(), "{v}");
    let err = refused(h, &["--selector", "a=b", "techsupport"]);
    assert!(err.contains("one node at a time"), "{err}");

    // Human rendering: aligned tables.
    let out = ok(
        adit(h, &["query", "dev1", "interfaces"]),
        "interfaces table",
    );
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("ADDRESSES"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("lo ")), "{out}");
    let out = ok(adit(h, &["query", "dev1", "system"]), "system fields");
    assert!(out.contains(&hostname()), "{out}");

    // Audited with the query and its arguments.
    let audit = ok(
        adit(h, &["audit", "ls", "--limit", "1000", "--output", "json"]),
        "audit ls",
    );
    let events: Value = serde_json::from_str(&audit).unwrap();
    let tcp_query = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.to_string().contains(&format!("127.0.0.1:{echo}")))
        .unwrap_or_else(|| panic!("no audit event of the tcp query in {audit}"));
    let text = tcp_query.to_string();
    assert!(text.contains("\"kind\":\"query\""), "{text}");
    assert!(text.contains("\"query\":\"tcp\""), "{text}");
    assert!(text.contains("\"exit_code\":0"), "{text}");
}

/// A loopback address the machine's host name resolves to, if any: the target of an
/// "external" (named, not the device's loopback) mapping that still stays on loopback.
fn named_loopback() -> Option<(String, std::net::IpAddr)> {
    let name = hostname();
    let ip = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| ip.is_loopback() && ip.is_ipv4())?;
    Some((name, ip))
}

fn echo_on(ip: std::net::IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut r) = s.try_clone() else { return };
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    port
}

fn round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(payload).unwrap();
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).unwrap();
    back
}

#[test]
fn tcp_mappings_carry_bytes_and_audit_access() {
    let tmp = TempDir::new("query-tcp");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let device_port = echo_server();
    let external = named_loopback();
    let (ext_host, ext_port) = match &external {
        Some((name, ip)) => (name.clone(), echo_on(*ip)),
        None => {
            eprintln!(
                "the host name does not resolve to loopback: the second mapping is the device too"
            );
            ("127.0.0.1".to_owned(), echo_server())
        }
    };
    let allow1 = format!("127.0.0.1:{device_port}");
    let allow2 = format!("{ext_host}:{ext_port}");
    let _agent = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--allow", &allow1, "--allow", &allow2],
    );
    let mut child = Command::new(bin("adit"))
        .args([
            "tcp",
            "dev1",
            &format!("127.0.0.1:{device_port}/{ext_host}:{ext_port}"),
        ])
        .env("ADIT_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut local = Vec::new();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        // 127.0.0.1:LPORT -> dev1 HOST:PORT
        let (from, to) = line.split_once(" -> ").unwrap_or_else(|| panic!("{line}"));
        let lport: u16 = from.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
        local.push((lport, to.to_owned()));
    }
    assert_eq!(local[0].1, format!("dev1 127.0.0.1:{device_port}"));
    assert_eq!(local[1].1, format!("dev1 {ext_host}:{ext_port}"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(round_trip(local[0].0, b"to the device"), b"to the device");
    assert_eq!(round_trip(local[1].0, &big), big);
    // A second connection on the same mapping shares the tunnel.
    assert_eq!(round_trip(local[0].0, b"again"), b"again");
    let _ = child.kill();
    let _ = child.wait();

    let access_of = |port: u16| {
        let found = wait_for(Duration::from_secs(10), || {
            let audit = adit(
                &home,
                &["audit", "ls", "--limit", "1000", "--output", "json"],
            );
            let events: Value = serde_json::from_slice(&audit.stdout).ok()?;
            events.as_array()?.iter().find_map(|e| {
                let text = e.to_string();
                (text.contains("\"kind\":\"tcp\"") && text.contains(&format!(":{port}\"")))
                    .then_some(text)
            })
        });
        found.unwrap_or_else(|| panic!("no audit event for port {port}"))
    };
    let device = access_of(device_port);
    assert!(device.contains("\"access\":\"device\""), "{device}");
    if external.is_some() {
        let ext = access_of(ext_port);
        assert!(ext.contains("\"access\":\"external\""), "{ext}");
    }
}
