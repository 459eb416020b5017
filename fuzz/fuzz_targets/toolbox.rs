//! Fuzzes what the toolbox streams decode from a peer: the frame codec of exec, shell,
//! file, query and action streams (`adit_api::toolbox::decode`, also run by the proxy's
//! `ExitScanner` over every agent → client byte), the stream specs the proxy and the
//! agent parse from an OPEN target (`parse_exec`, `parse_shell`, `parse_file`,
//! `parse_query`, `parse_action`), the browser terminal's text messages
//! (`adit_api::pty::ClientMessage::parse`) and access-policy documents
//! (`PolicyRules`, `Scope`, `TargetPattern`).
//!
//! Checked: nothing panics; decoding consumes at least a header and never more than it
//! was given; a decoded frame re-encodes to exactly the bytes it was decoded from; the
//! scanner reaches the same exit code whether the bytes come at once or one by one;
//! accepted specs validate; accepted terminal sizes are in range.
#![no_main]

use adit_api::toolbox::{self, ExitScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    frames(data);
    scanner(data);
    if let Ok(text) = std::str::from_utf8(data) {
        specs(text);
        if let Ok(adit_api::pty::ClientMessage::Resize { cols, rows }) =
            adit_api::pty::ClientMessage::parse(text)
        {
            adit_api::pty::check_size(cols, rows).expect("accepted sizes are in range");
        }
        policy(text);
    }
});

/// Decodes frame after frame; each re-encodes to its own bytes.
fn frames(mut buf: &[u8]) {
    while let Ok(Some((frame, used))) = toolbox::decode(buf) {
        assert!(used >= 5 && used <= buf.len(), "consumed {used} of {}", buf.len());
        let again = frame.to_bytes();
        assert_eq!(again, &buf[..used], "decode then encode changed {frame:?}");
        buf = &buf[used..];
    }
}

/// The proxy watches the agent's bytes in whatever pieces they arrive.
fn scanner(data: &[u8]) {
    let mut whole = ExitScanner::new();
    whole.feed(data);
    let mut bytewise = ExitScanner::new();
    for b in data {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(whole.exit_code(), bytewise.exit_code());
    assert_eq!(whole.error(), bytewise.error());
}

fn specs(text: &str) {
    if let Ok(s) = toolbox::parse_exec(text) {
        s.validate().expect("a parsed exec spec validates");
        let _ = s.command_line();
    }
    if let Ok(s) = toolbox::parse_shell(text) {
        s.validate().expect("a parsed shell spec validates");
    }
    if let Ok(s) = toolbox::parse_file(text) {
        s.validate().expect("a parsed file spec validates");
    }
    if let Ok(s) = toolbox::parse_query(text) {
        s.validate().expect("a parsed query spec validates");
        let _ = s.args_line();
    }
    if let Ok(s) = toolbox::parse_action(text) {
        s.validate().expect("a parsed action spec validates");
        let _ = s.command_line();
    }
    let _ = toolbox::split_host_port(text);
    let _ = toolbox::parse_http_url(text);
}

fn policy(text: &str) {
    if let Ok(rules) = serde_json::from_str::<adit_api::policy::PolicyRules>(text) {
        if rules.validate().is_ok() {
            let layers = [adit_api::policy::Layer {
                level: adit_api::policy::Level::Node,
                name: "node fuzz",
                rules: &rules,
            }];
            let effective = adit_api::policy::resolve("n", "fuzz", &layers);
            let _ = effective.check(adit_api::policy::Request::Tcp("127.0.0.1:22"));
            let _ = effective.check(adit_api::policy::Request::File("/var/log/syslog"));
        }
    }
    let _ = adit_api::policy::Scope::parse(text);
    if let Ok(p) = adit_api::policy::TargetPattern::parse(text) {
        let _ = p.matches("10.0.0.1:80");
        let _ = p.matches(text);
    }
    let _ = adit_api::policy::Access::of(text);
}
