//! `agent.toml` parsing and validation.

use adit_agent::{AgentConfig, AgentError, Target, TunnelMode};

fn problems(text: &str) -> String {
    match AgentConfig::from_toml(text) {
        Err(e @ AgentError::Config(_)) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = AgentConfig::from_toml("").unwrap();
    assert_eq!(c, AgentConfig::default());
    assert_eq!(c.state_dir.to_str(), Some("/var/lib/adit-agent"));
    assert_eq!(c.tunnel, TunnelMode::Persistent);
    assert_eq!(c.reconnect_max_secs, 30);
    assert_eq!(c.log, "info");
    assert_eq!(c.server_url, None);
    let allow = c.allow_list().unwrap();
    assert_eq!(allow.targets(), &[Target::parse("127.0.0.1:22").unwrap()]);
}

#[test]
fn full_file() {
    let c = AgentConfig::from_toml(
        r#"
        server_url = "https://adit.example.com:8443"
        state_dir = "/srv/adit"
        allow = ["localhost:22", "10.0.0.5:502"]
        tunnel = "persistent"
        reconnect_max_secs = 60
        log = "adit_agent=debug"
        "#,
    )
    .unwrap();
    let allow = c.allow_list().unwrap();
    assert!(allow.allows(&Target::parse("127.0.0.1:22").unwrap()));
    assert!(allow.allows(&Target::parse("10.0.0.5:502").unwrap()));
    // An explicit list replaces the default.
    assert_eq!(allow.targets().len(), 2);
    assert_eq!(c.reconnect_max().as_secs(), 60);
}

#[test]
fn unknown_key_is_named() {
    let msg = problems("alow = [\"127.0.0.1:22\"]\n");
    assert!(msg.contains("alow"), "{msg}");
}

#[test]
fn tunnel_modes() {
    let config = AgentConfig::from_toml("tunnel = \"on-demand\"\n").unwrap();
    assert_eq!(config.tunnel, adit_agent::config::TunnelMode::OnDemand);
    config.validate().unwrap();
    let msg = problems("tunnel = \"sometimes\"\n");
    assert!(msg.contains("tunnel") || msg.contains("sometimes"), "{msg}");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let msg = problems(
        r#"
        server_url = "http://plain.example.com"
        allow = ["127.0.0.1", "ok:22", "x:0"]
        reconnect_max_secs = 0
        "#,
    );
    for key in ["server_url", "allow[0]", "allow[2]", "reconnect_max_secs"] {
        assert!(msg.contains(key), "{key} missing from {msg}");
    }
    assert!(!msg.contains("allow[1]"), "{msg}");
}

#[test]
fn wrong_types_are_named() {
    let msg = problems("reconnect_max_secs = \"soon\"\n");
    assert!(msg.contains("reconnect_max_secs"), "{msg}");
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../../deploy/agent.example.toml");
    let c = AgentConfig::from_toml(text).unwrap();
    assert_eq!(c.allow, vec!["127.0.0.1:22".to_string()]);
}
