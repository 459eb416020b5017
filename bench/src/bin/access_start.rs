//! `access-start`: time from `POST /v1/remote-access` to STARTED for an agent in
//! on-demand tunnel mode, over N runs on loopback.
//!
//! Each run starts with the agent holding no tunnel: create a configuration with an
//! endpoint, poll it every 2 ms until STARTED (endpoint listening, node connected), then
//! delete it and wait until the agent has closed its tunnel (node offline) before the
//! next run. Reports p50/p90/p99/max of the time the client observed (POST sent → a GET
//! showed STARTED) and of the server's own timestamps (`created_at` →
//! `configuration_status_timestamp` of the STARTED update).
//!
//! Usage: access-start [--runs N] (default 100). Uses the binaries of ADIT_BIN_DIR
//! (bench/access.sh builds target/release and sets it). Loopback only; bounded by N and
//! by a 10 s limit per wait.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use adit_e2e::{bin, enroll_command, free_port, Proc, Server, TempDir, ADMIN_PASSWORD};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const WAIT_LIMIT: Duration = Duration::from_secs(10);

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{name}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(0.0),
        v.len()
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut runs = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other}; usage: access-start [--runs N]"),
        }
    }
    let tmp = TempDir::new("access-bench");
    let data: PathBuf = tmp.path().join("data");
    let server = Server::start(&data, free_port())?;
    let ca_pem = std::fs::read_to_string(data.join("ca.crt"))?;
    let tls = adit_pki::client_config(&ca_pem, None, &[b"http/1.1"])?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(tls))
        .timeout(Duration::from_secs(10))
        .build()?;
    let login: Value = http
        .post(format!("{}/v1/login", server.url))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let api = Api {
        http,
        base: server.url.clone(),
        token: login["access_token"]
            .as_str()
            .context("login token")?
            .to_string(),
    };
    let join = api
        .call(reqwest::Method::POST, "/v1/join-tokens", Some(json!({})))
        .await?;
    let state = tmp.path().join("agent");
    let out = enroll_command(
        &server.url,
        join["token"].as_str().context("join token")?,
        "bench-node",
        &state,
    )
    .output()?;
    if !out.status.success() {
        bail!("enrol: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.env("ADIT_LOG", "warn")
        .args(["run", "--tunnel", "on-demand", "--state-dir"])
        .arg(&state);
    let _agent = Proc::spawn(cmd)?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut client_ms = Vec::with_capacity(runs);
    let mut server_ms = Vec::with_capacity(runs);
    let deadline = |start: Instant| start + WAIT_LIMIT;
    for run in 0..runs {
        let t0 = Instant::now();
        let created = api
            .call(
                reqwest::Method::POST,
                "/v1/remote-access",
                Some(json!({"node": "bench-node", "ttl_secs": 300, "endpoint": true, "port": 22})),
            )
            .await?;
        let id = created["resource_id"].as_str().context("id")?.to_string();
        let path = format!("/v1/remote-access/{id}");
        let started = loop {
            let s = api.call(reqwest::Method::GET, &path, None).await?;
            if s["current_state"] == "REMOTE_ACCESS_STATE_STARTED" {
                break s;
            }
            if Instant::now() > deadline(t0) {
                bail!("run {run}: not STARTED within {WAIT_LIMIT:?}: {s}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        client_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        server_ms.push(
            (started["configuration_status_timestamp"]
                .as_i64()
                .unwrap_or(0)
                - started["created_at"].as_i64().unwrap_or(0)) as f64,
        );
        api.call(reqwest::Method::DELETE, &path, None).await?;
        // Wait until the agent has closed its tunnel again.
        let t1 = Instant::now();
        loop {
            let n = api
                .call(reqwest::Method::GET, "/v1/nodes/bench-node", None)
                .await?;
            if n["status"] == "offline" {
                break;
            }
            if Instant::now() > deadline(t1) {
                bail!("run {run}: the agent kept its tunnel after the deletion");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!("access create → STARTED, on-demand agent, {runs} runs on loopback");
    println!("{}", summary("client-observed", client_ms));
    println!("{}", summary("server timestamps", server_ms));
    drop(server);
    Ok(())
}
