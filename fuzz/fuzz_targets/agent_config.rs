//! Fuzzes the agent's configuration file parser (`AgentConfig::from_toml`, applied to
//! `agent.toml`) and the two value parsers it relies on, which also read command-line
//! flags and the server's OPEN targets: `Target::parse` (allow-list entries and stream
//! targets) and `ServerUrl::parse`.
//!
//! Checked: nothing panics; an accepted configuration passes its own validation and
//! yields a non-empty allow-list; normalisation is idempotent (a printed target or URL
//! parses back to the same value); an accepted target never has port 0.
#![no_main]

use adit_agent::{AgentConfig, ServerUrl, Target};
use libfuzzer_sys::fuzz_target;

fn check_target(s: &str) {
    let Ok(target) = Target::parse(s) else {
        return;
    };
    assert_ne!(target.port(), 0, "{s:?} accepted with port 0");
    assert!(!target.host().is_empty(), "{s:?} accepted with no host");
    let printed = target.to_string();
    let again = Target::parse(&printed).expect("a printed target parses");
    assert_eq!(again, target, "{s:?} → {printed:?} does not parse back");
}

fn check_url(s: &str) {
    let Ok(url) = ServerUrl::parse(s) else {
        return;
    };
    assert!(
        url.as_str().starts_with("https://"),
        "{s:?} → {}",
        url.as_str()
    );
    let again = ServerUrl::parse(url.as_str()).expect("a printed URL parses");
    assert_eq!(again, url);
    let _ = url.server_name();
    let api = url.api(adit_api::paths::ENROLL);
    assert!(api.path().ends_with(adit_api::paths::ENROLL), "{api}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(config) = AgentConfig::from_toml(&text) {
        config
            .validate()
            .expect("an accepted configuration is valid");
        assert!((1..=3600).contains(&config.reconnect_max_secs));
        assert!(!config.log.trim().is_empty());
        let allow = config.allow_list().expect("an accepted allow-list builds");
        assert!(!allow.targets().is_empty());
        assert_eq!(allow.targets().len(), config.allow.len().max(1));
        for entry in &config.allow {
            check_target(entry);
        }
        if let Some(url) = &config.server_url {
            ServerUrl::parse(url).expect("an accepted server_url parses");
            check_url(url);
        }
    }

    check_target(&text);
    check_url(&text);
});
