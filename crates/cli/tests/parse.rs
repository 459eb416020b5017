//! Command-line parsing, without running anything.

use adit_cli::cli::{
    parse_node, strip_node_suffix, Cli, Command, ConfigCommand, ForwardSpec, NodesCommand,
    TokenCommand, TokensCommand,
};
use adit_cli::output::OutputFormat;
use clap::Parser;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("adit").chain(args.iter().copied()))
}

#[test]
fn login() {
    let pin = format!("sha256:{}", "ab".repeat(32));
    let cli = parse(&[
        "login",
        "--server",
        "https://s:8443",
        "--user",
        "alice",
        "--tenant",
        "t1",
        "--password-stdin",
        "--ca-pin",
        &pin,
    ])
    .unwrap();
    assert_eq!(cli.server.as_deref(), Some("https://s:8443"));
    let Command::Login(l) = cli.command else {
        panic!()
    };
    assert_eq!(l.user, "alice");
    assert_eq!(l.tenant.as_deref(), Some("t1"));
    assert!(l.password_stdin);
    assert_eq!(l.ca_pin.unwrap().to_string(), pin);

    // Bad pins and both trust sources at once are usage errors.
    assert!(parse(&["login", "--user", "a", "--ca-pin", "sha256:abcd"]).is_err());
    let both = parse(&[
        "login",
        "--user",
        "a",
        "--ca-pin",
        &pin,
        "--ca-file",
        "x.pem",
    ])
    .unwrap_err();
    assert_eq!(both.exit_code(), 2);
    // --user is required.
    assert!(parse(&["login", "--server", "https://s"]).is_err());
}

#[test]
fn simple_commands_and_global_flags() {
    assert!(matches!(
        parse(&["logout"]).unwrap().command,
        Command::Logout
    ));
    assert!(matches!(
        parse(&["status"]).unwrap().command,
        Command::Status
    ));
    let cli = parse(&["nodes", "ls", "--output", "json"]).unwrap();
    assert_eq!(cli.output, OutputFormat::Json);
    assert!(matches!(cli.command, Command::Nodes(NodesCommand::Ls)));
    assert_eq!(
        parse(&["--output", "table", "nodes", "ls"]).unwrap().output,
        OutputFormat::Table
    );
    assert!(parse(&["nodes", "ls", "--output", "yaml"]).is_err());
    assert!(matches!(
        parse(&["config", "ssh"]).unwrap().command,
        Command::Config(ConfigCommand::Ssh)
    ));
    for shell in ["bash", "zsh", "fish"] {
        assert!(matches!(
            parse(&["completions", shell]).unwrap().command,
            Command::Completions { .. }
        ));
    }
    assert!(parse(&["completions", "cmd.exe"]).is_err());
    let Command::Token(TokenCommand::Decode { jwt }) =
        parse(&["token", "decode", "a.b.c"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(jwt.as_deref(), Some("a.b.c"));
}

#[test]
fn tokens() {
    let cli = parse(&[
        "tokens", "create", "--ttl", "1h", "--uses", "3", "--label", "site=lab", "--label",
        "env=prod",
    ])
    .unwrap();
    let Command::Tokens(TokensCommand::Create(c)) = cli.command else {
        panic!()
    };
    assert_eq!(c.ttl, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(c.uses, Some(3));
    assert_eq!(
        c.labels,
        vec![("site".into(), "lab".into()), ("env".into(), "prod".into())]
    );
    let Command::Tokens(TokensCommand::Create(c)) = parse(&["tokens", "create", "--ttl", "30m"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(c.ttl, Some(std::time::Duration::from_secs(1800)));

    let err = parse(&["tokens", "create", "--ttl", "soon"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("30m, 1h or 2d"), "{err}");
    let err = parse(&["tokens", "create", "--label", "novalue"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("KEY=VALUE"), "{err}");
    assert!(matches!(
        parse(&["tokens", "ls"]).unwrap().command,
        Command::Tokens(TokensCommand::Ls)
    ));
    let Command::Tokens(TokensCommand::Revoke { id }) =
        parse(&["tokens", "revoke", "jt-1"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(id, "jt-1");
}

#[test]
fn nodes() {
    let Command::Nodes(NodesCommand::Show { node }) =
        parse(&["nodes", "show", "kiosk-7.adit"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(node, "kiosk-7");
    let Command::Nodes(NodesCommand::Revoke { node, yes }) =
        parse(&["nodes", "revoke", "kiosk-7", "--yes"])
            .unwrap()
            .command
    else {
        panic!()
    };
    assert_eq!((node.as_str(), yes), ("kiosk-7", true));
    let Command::Nodes(NodesCommand::Revoke { yes, .. }) =
        parse(&["nodes", "revoke", "k"]).unwrap().command
    else {
        panic!()
    };
    assert!(!yes);
    assert!(parse(&["nodes", "show", "a/b"]).is_err());
}

#[test]
fn proxy_stdio_strips_suffix() {
    let Command::ProxyStdio(p) = parse(&["proxy-stdio", "kiosk-7.adit", "22"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!((p.node.as_str(), p.port), ("kiosk-7", 22));
    let Command::ProxyStdio(p) = parse(&["proxy-stdio", "kiosk-7", "2222"]).unwrap().command else {
        panic!()
    };
    assert_eq!(p.node, "kiosk-7");
    assert!(parse(&["proxy-stdio", "kiosk-7", "70000"]).is_err());
    assert!(
        parse(&["proxy-stdio", ".adit", "22"]).is_err() || strip_node_suffix(".adit") == ".adit"
    );
}

#[test]
fn suffix_stripping() {
    assert_eq!(strip_node_suffix("kiosk-7.adit"), "kiosk-7");
    assert_eq!(strip_node_suffix("Kiosk-7.ADIT"), "Kiosk-7");
    assert_eq!(strip_node_suffix("kiosk-7.adit."), "kiosk-7");
    assert_eq!(strip_node_suffix("kiosk-7"), "kiosk-7");
    assert_eq!(strip_node_suffix("kiosk-7.example"), "kiosk-7.example");
    assert_eq!(parse_node("pi.adit").unwrap(), "pi");
    assert!(parse_node("").is_err());
    assert!(parse_node("a b").is_err());
}

#[test]
fn ssh() {
    let cli = parse(&[
        "ssh",
        "pi@kiosk-7.adit",
        "-p",
        "2222",
        "-i",
        "/k/id",
        "-o",
        "StrictHostKeyChecking=yes",
        "--",
        "uname",
        "-a",
    ])
    .unwrap();
    let Command::Ssh(s) = cli.command else {
        panic!()
    };
    assert_eq!(
        s.user_and_node().unwrap(),
        (Some("pi"), "kiosk-7".to_owned())
    );
    assert_eq!(s.port, Some(2222));
    assert_eq!(s.command, vec!["uname", "-a"]);

    let argv = adit_cli::commands::ssh::ssh_argv(
        std::path::Path::new("/opt/adit"),
        None,
        Some("pi"),
        "kiosk-7",
        &s,
    );
    let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
    assert_eq!(
        argv,
        [
            "-o",
            "ProxyCommand=/opt/adit proxy-stdio %h %p",
            "-o",
            "HostKeyAlias=kiosk-7.adit",
            "-p",
            "2222",
            "-l",
            "pi",
            "-o",
            "StrictHostKeyChecking=yes",
            "-i",
            "/k/id",
            "--",
            "kiosk-7",
            "uname",
            "-a",
        ]
    );

    let Command::Ssh(s) = parse(&["ssh", "kiosk-7"]).unwrap().command else {
        panic!()
    };
    assert_eq!(s.user_and_node().unwrap(), (None, "kiosk-7".to_owned()));
    let Command::Ssh(s) = parse(&["ssh", "@kiosk-7"]).unwrap().command else {
        panic!()
    };
    assert!(s.user_and_node().is_err());
}

fn spec(s: &str) -> Result<ForwardSpec, String> {
    s.parse()
}

#[test]
fn forward_specs() {
    let Command::Forward(f) = parse(&["forward", "kiosk-7.adit", "8080:127.0.0.1:80"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(f.node, "kiosk-7");
    assert_eq!(
        f.spec,
        ForwardSpec {
            bind: "127.0.0.1".into(),
            port: 8080,
            host: "127.0.0.1".into(),
            host_port: 80
        }
    );
    assert_eq!(
        spec("0.0.0.0:8080:h:80").unwrap(),
        ForwardSpec {
            bind: "0.0.0.0".into(),
            port: 8080,
            host: "h".into(),
            host_port: 80
        }
    );
    assert_eq!(spec("0:db.local:5432").unwrap().port, 0);
    assert_eq!(
        spec("[::1]:8080:[fd00::2]:80").unwrap(),
        ForwardSpec {
            bind: "::1".into(),
            port: 8080,
            host: "fd00::2".into(),
            host_port: 80
        }
    );
    assert_eq!(
        spec("[::1]:8080:[fd00::2]:80").unwrap().to_string(),
        "[::1]:8080:[fd00::2]:80"
    );
    assert_eq!(spec("localhost:1:h:2").unwrap().bind, "localhost");

    for (bad, why) in [
        ("8080", "1 colon-separated parts"),
        ("8080:80", "2 colon-separated parts"),
        ("a:b:c:d:e", "5 colon-separated parts"),
        ("x:127.0.0.1:80", "local port `x`"),
        ("70000:h:80", "local port `70000`"),
        ("8080:h:0", "remote port `0`"),
        ("8080:h:http", "remote port `http`"),
        ("8080::80", "remote host is empty"),
        (":8080:h:80", "bind address is empty"),
        ("[::1:8080:h:80", "unbalanced brackets"),
    ] {
        let err = spec(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
        assert!(err.contains("[BIND:]PORT:HOST:HOSTPORT"), "{bad}: {err}");
    }
    let err = parse(&["forward", "kiosk", "8080:80"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("e.g. 8080:127.0.0.1:80"), "{err}");
}
