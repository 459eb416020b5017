//! Commands that need no server: profile handling, ssh config, completions,
//! token decoding, tables, and refusals.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::SystemTime;

use adit_cli::output::Table;
use adit_cli::profile::{Profile, ProfileStore};
use adit_pki::Secret;
use support::{run, stderr, stdout, TempDir};

fn profile(expires_at: i64) -> Profile {
    Profile {
        server: "https://127.0.0.1:1".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        user: "alice".into(),
        tenant: "t1".into(),
        access_token: Secret::new("tok"),
        expires_at,
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn profile_is_private_and_round_trips() {
    let tmp = TempDir::new("profile");
    let dir = tmp.path().join("nested").join("adit");
    let store = ProfileStore::new(&dir);
    assert!(store.load().unwrap().is_none());
    let p = profile(4_102_444_800_000);
    store.save(&p).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&store.path()), 0o600);
    assert_eq!(store.load().unwrap().unwrap(), p);

    // An existing, too-open directory and file are tightened on save.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    store.save(&p).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&store.path()), 0o600);
    // Only profile.json is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["profile.json"]);

    assert!(!p.is_expired(SystemTime::now()));
    assert!(profile(1_000).is_expired(SystemTime::now()));
    assert!(store.delete().unwrap());
    assert!(!store.delete().unwrap());
}

#[test]
fn logout_deletes_the_profile() {
    let home = TempDir::new("logout");
    ProfileStore::new(home.path())
        .save(&profile(4_102_444_800_000))
        .unwrap();
    let out = run(home.path(), &["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!home.path().join("profile.json").exists());
    let out = run(home.path(), &["logout"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("not logged in"));
}

#[test]
fn login_without_trust_refuses() {
    let home = TempDir::new("login");
    let out = support::adit(home.path())
        .args([
            "login",
            "--server",
            "https://127.0.0.1:1",
            "--user",
            "alice",
            "--password-stdin",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pass --ca-pin (printed by adit-server at start) or --ca-file"),
        "{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(stdout(&out).is_empty());
    assert!(!home.path().join("profile.json").exists());
}

#[test]
fn commands_need_a_login() {
    let home = TempDir::new("nologin");
    for args in [
        &["nodes", "ls"][..],
        &["status"],
        &["tokens", "ls"],
        &["proxy-stdio", "n", "22"],
        &["ssh", "n"],
    ] {
        let out = run(home.path(), args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("not logged in"), "{err}");
        assert!(err.contains("run `adit login"), "{err}");
        assert!(stdout(&out).is_empty());
    }
    // An expired token is refused before contacting anything.
    ProfileStore::new(home.path())
        .save(&profile(1_000))
        .unwrap();
    let out = run(home.path(), &["nodes", "ls"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    let out = run(home.path(), &["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).contains("EXPIRED"), "{}", stdout(&out));
    assert!(stdout(&out).contains("alice"));
}

#[test]
fn usage_errors_exit_2() {
    let home = TempDir::new("usage");
    let out = run(home.path(), &["forward", "n", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(home.path(), &["nodes", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // Revoking without --yes and without a terminal to ask on.
    ProfileStore::new(home.path())
        .save(&profile(4_102_444_800_000))
        .unwrap();
    let out = run(home.path(), &["nodes", "revoke", "kiosk"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"));
}

#[test]
fn config_ssh_uses_absolute_path() {
    let home = TempDir::new("config");
    let out = run(home.path(), &["config", "ssh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Host *.adit\n"), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ProxyCommand "))
        .expect("ProxyCommand line");
    let words: Vec<&str> = line.split_whitespace().collect();
    // ADIT_HOME is set for the test, so it is carried into the command.
    assert_eq!(words[1], "env");
    assert_eq!(words[2], format!("ADIT_HOME={}", home.path().display()));
    assert!(std::path::Path::new(words[3]).is_absolute(), "{line}");
    assert!(words[3].ends_with("/adit"), "{line}");
    assert_eq!(&words[4..], ["proxy-stdio", "%h", "%p"]);

    // Without ADIT_HOME, the command is just the binary.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adit"))
        .args(["config", "ssh"])
        .env_remove("ADIT_HOME")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("ProxyCommand")).unwrap();
    assert!(line.trim_start().starts_with("ProxyCommand /"), "{line}");

    let help = run(home.path(), &["config", "ssh", "--help"]);
    assert!(stdout(&help).contains("adit config ssh >> ~/.ssh/config"));
}

#[test]
fn completions_for_each_shell() {
    let home = TempDir::new("compl");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(home.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.len() > 100, "{shell}");
        assert!(text.contains("proxy-stdio"), "{shell}");
    }
}

#[test]
fn token_decode_shows_claims() {
    let key = adit_pki::SigningKey::generate().unwrap();
    let now = adit_pki::now_unix();
    let claims = adit_pki::AccessClaims {
        sub: "u-1".into(),
        name: "alice".into(),
        ten: "t-1".into(),
        aud: adit_pki::AUD_ACCESS.into(),
        iat: now,
        exp: now + 3600,
        jti: "j-1".into(),
        api: false,
    };
    let jwt = key.sign(&claims).unwrap();
    let home = TempDir::new("decode");
    let out = run(home.path(), &["token", "decode", &jwt]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["header"]["alg"], "ES256");
    assert_eq!(v["header"]["kid"], key.kid());
    assert_eq!(v["claims"]["name"], "alice");
    assert_eq!(v["claims"]["aud"], "adit-api");
    assert_eq!(v["claims"]["exp"], now + 3600);

    // From stdin, and from the saved profile.
    let mut child = support::adit(home.path())
        .args(["token", "decode", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(jwt.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("\"jti\": \"j-1\""));
    let mut p = profile(4_102_444_800_000);
    p.access_token = Secret::new(jwt);
    ProfileStore::new(home.path()).save(&p).unwrap();
    let out = run(home.path(), &["token", "decode"]);
    assert!(stdout(&out).contains("\"sub\": \"u-1\""));

    let out = run(home.path(), &["token", "decode", "not-a-jwt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("three dot-separated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn table_columns_are_aligned() {
    let mut t = Table::new(["NAME", "STATUS", "LABELS"]);
    t.row(["kiosk-7", "online", "site=lab"]);
    t.row(["a", "offline", "-"]);
    t.row(["très-long-nœud", "online", "x=1,y=2"]);
    let text = t.render();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "NAME            STATUS   LABELS",
            "kiosk-7         online   site=lab",
            "a               offline  -",
            "très-long-nœud  online   x=1,y=2",
        ]
    );
    // No trailing spaces; an empty table is just its header.
    assert!(text.lines().all(|l| !l.ends_with(' ')));
    assert_eq!(Table::new(["A", "B"]).render(), "A  B\n");
}
