//! Bad input gets a clear error, and the server keeps serving others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use adit_e2e::*;

fn healthy(port: u16) -> bool {
    // The server still completes TLS handshakes and answers.
    let out = Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{port}/healthz")])
        .output();
    match out {
        Ok(o) => o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
        // Without curl, a TCP connect is the best we can do.
        Err(_) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
    }
}

fn tls_client(
    pin_ca: &str,
    alpn: &[u8],
    port: u16,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let pin: adit_pki::CaPin = pin_ca.parse().unwrap();
    let cfg = adit_pki::pinned_client_config(pin, &[alpn]).unwrap();
    let conn = rustls::ClientConnection::new(cfg, "127.0.0.1".try_into().unwrap())
        .map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake.
    s.flush()?;
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

#[test]
fn hostile_and_mistaken_input() {
    let tmp = TempDir::new("bad");
    let home = tmp.path().join("home");
    let port = free_port();
    let server = Server::start(&tmp.path().join("data"), port).unwrap();
    login(&home, &server);

    // Garbage bytes on the port (not even TLS).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"\x16\x03\x01garbage garbage garbage\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
    assert!(healthy(port));

    // Wrong ALPN: the handshake is refused.
    let err = tls_client(&server.pin, b"smtp", port).err();
    assert!(err.is_some(), "unknown ALPN must fail the handshake");
    assert!(healthy(port));

    // Right ALPN, then oversized and garbage frames: the tunnel is closed with a GOAWAY.
    let mut t = tls_client(&server.pin, adit_proto::ALPN, port).unwrap();
    t.write_all(&[0, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    t.flush().unwrap();
    let mut got = Vec::new();
    let _ = t.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("exceeds the limit") || text.contains("HELLO"),
        "GOAWAY reason: {text}"
    );
    assert!(healthy(port));

    // Forged and expired access tokens in a stream OPEN are refused.
    let forged = adit_pki::SigningKey::generate().unwrap();
    let now = adit_pki::now_unix();
    let claims = adit_pki::AccessClaims {
        sub: "x".into(),
        name: "admin".into(),
        ten: "x".into(),
        aud: adit_pki::AUD_ACCESS.into(),
        iat: now,
        exp: now + 600,
        jti: "j".into(),
        api: false,
    };
    let forged_token = forged.sign(&claims).unwrap();
    let profile = home.join("profile.json");
    let original = std::fs::read_to_string(&profile).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["access_token"] = serde_json::Value::String(forged_token);
    v["expires_at"] = serde_json::json!(now + 600);
    std::fs::write(&profile, v.to_string()).unwrap();
    let err = fails(adit(&home, &["proxy-stdio", "dev1", "22"]), "forged token");
    assert!(
        err.to_lowercase().contains("authenticat")
            || err.contains("unknown")
            || err.contains("signature"),
        "{err}"
    );
    std::fs::write(&profile, &original).unwrap();

    // A node name that does not exist.
    let err = fails(
        adit(&home, &["proxy-stdio", "nosuchnode.adit", "22"]),
        "unknown node",
    );
    assert!(err.contains("no node named"), "{err}");
    let err = fails(
        adit(&home, &["nodes", "show", "nosuchnode"]),
        "unknown node show",
    );
    assert!(err.contains("nosuchnode"), "{err}");

    // Enrolment mistakes.
    let token = ok(
        adit(&home, &["tokens", "create", "--ttl", "10m", "--uses", "1"]),
        "token",
    );
    let token = token.trim().to_string();
    let enroll = |token: &str, name: &str, dir: &str| {
        enroll_command(&server.url, token, name, &tmp.path().join(dir))
            .output()
            .unwrap()
    };
    // Wrong CA pin: replace the pin part of the token.
    let mut parts: Vec<&str> = token.split('.').collect();
    let wrong_pin = "ab".repeat(32);
    parts[3] = &wrong_pin;
    let err = fails(enroll(&parts.join("."), "n1", "a1"), "wrong pin");
    assert!(err.contains("pin") || err.contains("CA"), "{err}");
    // First use works, the second is refused.
    ok(enroll(&token, "n1", "a2"), "first enrolment");
    let err = fails(enroll(&token, "n2", "a3"), "reused token");
    assert!(
        err.contains("already used") || err.contains("used"),
        "{err}"
    );
    // Expired token.
    let short = ok(
        adit(&home, &["tokens", "create", "--ttl", "1s"]),
        "short token",
    );
    std::thread::sleep(Duration::from_millis(2100));
    let err = fails(enroll(short.trim(), "n3", "a4"), "expired token");
    assert!(err.contains("expired"), "{err}");
    // Malformed token.
    let err = fails(enroll("adit1.nope", "n4", "a5"), "malformed token");
    assert!(err.contains("malformed") || err.contains("token"), "{err}");

    assert!(healthy(port));
    let _ = Arc::new(());
}
