//! The agent's configuration parser (`AgentConfig::from_toml`) and the value parsers it
//! uses (`Target::parse`, `ServerUrl::parse`) never panic: arbitrary text is refused
//! with an error or accepted as a configuration that passes its own validation, and
//! configurations written from valid values parse back to those values.
//!
//! The coverage-guided counterpart is the fuzz target `agent_config`
//! (`scripts/fuzz.sh`). `write_fuzz_seeds` (ignored) writes its seed corpus:
//! `cargo test -p adit-agent --test config_never_panic -- --ignored write_fuzz_seeds`.

use adit_agent::{AgentConfig, AgentError, ServerUrl, Target};
use proptest::prelude::*;

/// What acceptance promises about a configuration.
fn check_accepted(config: &AgentConfig) -> Result<(), TestCaseError> {
    prop_assert!(config.validate().is_ok());
    prop_assert!((1..=3600).contains(&config.reconnect_max_secs));
    let allow = config.allow_list().unwrap();
    prop_assert_eq!(allow.targets().len(), config.allow.len().max(1));
    for t in allow.targets() {
        prop_assert_eq!(&Target::parse(&t.to_string()).unwrap(), t);
    }
    if let Some(url) = &config.server_url {
        prop_assert!(ServerUrl::parse(url).is_ok());
    }
    Ok(())
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
        // A label starting `xn--` is punycode and must decode: not a plain name.
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}"
            .prop_filter("no IDNA labels", |h: &String| !h
                .split('.')
                .any(|l| l.starts_with("xn--"))),
        Just("localhost".to_owned()),
    ]
}

fn target() -> impl Strategy<Value = String> {
    (host(), 1u16..).prop_map(|(h, p)| format!("{h}:{p}"))
}

/// A TOML document made from valid values, and the values.
fn valid_document() -> impl Strategy<Value = (String, Option<String>, Vec<String>, u64, String)> {
    (
        prop::option::of(host().prop_map(|h| format!("https://{h}:8443"))),
        prop::collection::vec(target(), 0..4),
        1u64..=3600,
        "[a-z_]{1,10}(=(debug|info|warn))?",
        "(/[a-z0-9_-]{1,8}){1,3}",
    )
        .prop_map(|(url, allow, reconnect, log, state_dir)| {
            let mut doc = toml::Table::new();
            if let Some(url) = &url {
                doc.insert("server_url".into(), url.clone().into());
            }
            doc.insert("state_dir".into(), state_dir.into());
            doc.insert("allow".into(), allow.clone().into());
            doc.insert("tunnel".into(), "persistent".into());
            doc.insert("reconnect_max_secs".into(), (reconnect as i64).into());
            doc.insert("log".into(), log.clone().into());
            (toml::to_string(&doc).unwrap(), url, allow, reconnect, log)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arbitrary text: a configuration error, or a configuration that is valid.
    #[test]
    fn arbitrary_text_is_refused_or_valid(s in "\\PC{0,300}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for text in [s, String::from_utf8_lossy(&bytes).into_owned()] {
            match AgentConfig::from_toml(&text) {
                Ok(config) => check_accepted(&config)?,
                Err(e) => prop_assert!(matches!(e, AgentError::Config(ref p) if !p.is_empty()), "{}", e),
            }
        }
    }

    /// TOML-shaped text with the real keys and values of any type.
    #[test]
    fn toml_shaped_text_is_refused_or_valid(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "server_url", "state_dir", "allow", "tunnel", "reconnect_max_secs", "log", "alow",
                ]),
                prop_oneof![
                    "\"\\PC{0,20}\"",
                    any::<i64>().prop_map(|n| n.to_string()),
                    Just("[]".to_owned()),
                    prop::collection::vec(target(), 0..3).prop_map(|v| format!("{v:?}")),
                    Just("\"on-demand\"".to_owned()),
                    Just("true".to_owned()),
                    Just("{ a = 1 }".to_owned()),
                    Just("\"https://[::1]:8443\"".to_owned()),
                ],
            ),
            0..6,
        ),
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        match AgentConfig::from_toml(&text) {
            Ok(config) => check_accepted(&config)?,
            Err(AgentError::Config(problems)) => prop_assert!(!problems.is_empty()),
            Err(other) => prop_assert!(false, "not a configuration error: {}", other),
        }
    }

    /// Documents written from valid values parse to those values.
    #[test]
    fn valid_documents_parse_back((doc, url, allow, reconnect, log) in valid_document()) {
        let config = AgentConfig::from_toml(&doc).unwrap();
        check_accepted(&config)?;
        prop_assert_eq!(config.server_url, url);
        prop_assert_eq!(config.allow, allow);
        prop_assert_eq!(config.reconnect_max_secs, reconnect);
        prop_assert_eq!(config.log, log);

        // One unknown key, or an out-of-range value, makes the whole file invalid.
        let err = AgentConfig::from_toml(&format!("{doc}surprise = 1\n")).unwrap_err();
        prop_assert!(err.to_string().contains("surprise"), "{}", err);
        let bad = doc.replace(&format!("reconnect_max_secs = {reconnect}"), "reconnect_max_secs = 0");
        let err = AgentConfig::from_toml(&bad).unwrap_err();
        prop_assert!(err.to_string().contains("reconnect_max_secs"), "{}", err);
    }

    /// Targets: normalisation is idempotent and never yields port 0; valid ones parse.
    #[test]
    fn targets_parse_or_refuse(s in "\\PC{0,40}", valid in target()) {
        if let Ok(t) = Target::parse(&s) {
            prop_assert_ne!(t.port(), 0);
            prop_assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        }
        let t = Target::parse(&valid).unwrap();
        prop_assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
    }

    /// Server URLs: only https URLs with a host are accepted, and a printed URL parses
    /// back to the same one; http and URLs with credentials are refused.
    #[test]
    fn server_urls_parse_or_refuse(s in "\\PC{0,60}", h in host()) {
        for text in [s, format!("https://{h}"), format!("http://{h}"), format!("https://user:pw@{h}/")] {
            if let Ok(url) = ServerUrl::parse(&text) {
                prop_assert!(url.as_str().starts_with("https://"));
                prop_assert_eq!(ServerUrl::parse(url.as_str()).unwrap(), url);
            }
        }
        let (good, plain, with_credentials) =
            (format!("https://{h}"), format!("http://{h}"), format!("https://user:pw@{h}/"));
        prop_assert!(ServerUrl::parse(&good).is_ok(), "{}", good);
        prop_assert!(ServerUrl::parse(&plain).is_err(), "{}", plain);
        prop_assert!(ServerUrl::parse(&with_credentials).is_err(), "{}", with_credentials);
    }
}

/// Writes the seed corpus of `agent_config`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the format changes"]
fn write_fuzz_seeds() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/agent_config");
    std::fs::create_dir_all(&dir).unwrap();
    let full = r#"# /etc/adit/agent.toml
server_url = "https://adit.example.com:8443"
state_dir = "/var/lib/adit-agent"
allow = ["localhost:22", "10.0.0.5:502", "[::1]:8080", "printer.lan:631"]
tunnel = "persistent"
reconnect_max_secs = 60
log = "adit_agent=debug,info"
"#;
    AgentConfig::from_toml(full).unwrap();
    let seeds: &[(&str, &str)] = &[
        ("full", full),
        ("empty", ""),
        ("minimal", "allow = [\"127.0.0.1:22\"]\n"),
        ("unknown_key", "alow = [\"127.0.0.1:22\"]\n"),
        ("on_demand", "tunnel = \"on-demand\"\n"),
        ("bad_values", "server_url = \"http://user:pw@host\"\nallow = [\"host\", \"a b:22\", \"x:0\"]\nreconnect_max_secs = 0\nlog = \" \"\nstate_dir = \"\"\n"),
        ("wrong_types", "allow = \"127.0.0.1:22\"\nreconnect_max_secs = -1\ntunnel = 3\n"),
        ("not_toml", "[[[ = \n\"unterminated\n"),
        ("target", "[fe80::1]:22"),
        ("server_url", "https://[::1]:8443/prefix/"),
    ];
    for (name, text) in seeds {
        std::fs::write(dir.join(name), text).unwrap();
    }
}
