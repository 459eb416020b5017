//! Parsing of `adit access`, and the lines it prints, without running anything.

use std::time::Duration;

use adit_api::{remote_access_state, RemoteAccessInfo, RemoteAccessQuery};
use adit_cli::cli::{parse_access_ttl, parse_cidr, AccessCommand, Cli, Command};
use adit_cli::commands::access::{is_started, render_access, ssh_command, started_line};
use adit_cli::output::OutputFormat;
use clap::Parser;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("adit").chain(args.iter().copied()))
}

fn access(args: &[&str]) -> AccessCommand {
    let mut all = vec!["access"];
    all.extend_from_slice(args);
    match parse(&all).unwrap().command {
        Command::Access(cmd) => cmd,
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_with_everything() {
    let cli = parse(&[
        "access",
        "create",
        "kiosk-7.adit",
        "--ttl",
        "1h30m",
        "--endpoint",
        "--user",
        "pi",
        "--port",
        "2222",
        "--allow-from",
        "192.0.2.0/24",
        "--allow-from",
        "2001:db8::1",
        "--output",
        "json",
    ])
    .unwrap();
    assert_eq!(cli.output, OutputFormat::Json);
    let Command::Access(AccessCommand::Create(c)) = cli.command else {
        panic!()
    };
    assert_eq!(c.node, "kiosk-7");
    assert_eq!(c.ttl, Duration::from_secs(5400));
    assert!(c.endpoint);
    assert_eq!(c.user.as_deref(), Some("pi"));
    assert_eq!(c.port, Some(2222));
    assert_eq!(c.allow_from, vec!["192.0.2.0/24", "2001:db8::1"]);
}

#[test]
fn create_defaults_and_errors() {
    let AccessCommand::Create(c) = access(&["create", "n1", "--ttl", "30m"]) else {
        panic!()
    };
    assert_eq!(c.node, "n1");
    assert!(!c.endpoint && c.user.is_none() && c.port.is_none() && c.allow_from.is_empty());
    let AccessCommand::Create(c) =
        access(&["create", "n1", "--ttl", "10m", "-u", "root", "-p", "22"])
    else {
        panic!()
    };
    assert_eq!((c.user.as_deref(), c.port), (Some("root"), Some(22)));

    for bad in [
        &["access", "create", "n1"][..],               // --ttl is required
        &["access", "create", "--ttl", "1h"],          // NODE is required
        &["access", "create", "n1", "--ttl", "8d"],    // over 7 days
        &["access", "create", "n1", "--ttl", "500ms"], // under 1 s
        &["access", "create", "n1", "--ttl", "soon"],
        &["access", "create", "n1", "--ttl", "1h", "--port", "0"],
        &["access", "create", "n1", "--ttl", "1h", "--port", "70000"],
        &[
            "access",
            "create",
            "n1",
            "--ttl",
            "1h",
            "--allow-from",
            "10.0.0.0/33",
        ],
        &[
            "access",
            "create",
            "n1",
            "--ttl",
            "1h",
            "--allow-from",
            "example.com",
        ],
        &["access", "create", "a/b", "--ttl", "1h"],
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn ls_show_extend_rm() {
    let AccessCommand::Ls { node, all } = access(&["ls"]) else {
        panic!()
    };
    assert!(node.is_none() && !all);
    let AccessCommand::Ls { node, all } = access(&["list", "--node", "kiosk-7.adit", "--all"])
    else {
        panic!()
    };
    assert_eq!(node.as_deref(), Some("kiosk-7"));
    assert!(all);
    let AccessCommand::Show { id } = access(&["show", "rmtacconf-ab12cd34"]) else {
        panic!()
    };
    assert_eq!(id, "rmtacconf-ab12cd34");
    let AccessCommand::Extend { id, ttl } =
        access(&["extend", "rmtacconf-ab12cd34", "--ttl", "2h"])
    else {
        panic!()
    };
    assert_eq!(
        (id.as_str(), ttl),
        ("rmtacconf-ab12cd34", Duration::from_secs(7200))
    );
    assert!(parse(&["access", "extend", "rmtacconf-ab12cd34"]).is_err());
    assert!(parse(&["access", "extend", "rmtacconf-ab12cd34", "--ttl", "30d"]).is_err());
    for verb in ["rm", "delete"] {
        let AccessCommand::Rm { id } = access(&[verb, "rmtacconf-ab12cd34"]) else {
            panic!()
        };
        assert_eq!(id, "rmtacconf-ab12cd34");
    }
    assert!(parse(&["access", "rm"]).is_err());
    assert!(parse(&["access", "show"]).is_err());
}

#[test]
fn value_parsers() {
    assert_eq!(parse_access_ttl("1s").unwrap(), Duration::from_secs(1));
    assert_eq!(
        parse_access_ttl("7d").unwrap(),
        Duration::from_secs(7 * 86_400)
    );
    assert!(parse_access_ttl("7d 1s").is_err());
    assert!(parse_access_ttl("0s").is_err());
    for ok in [
        "10.0.0.0/8",
        "192.0.2.7",
        "::/0",
        "2001:db8::/32",
        " 10.1.2.3/32 ",
    ] {
        assert!(parse_cidr(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "::/129",
        "10.0.0/8",
        "host/24",
    ] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
}

#[test]
fn query_strings() {
    assert_eq!(RemoteAccessQuery::default().to_query_string(), "");
    let q = RemoteAccessQuery {
        node: Some("kiosk 7".into()),
        state: Some("started".into()),
        include_deleted: Some(true),
    };
    assert_eq!(
        q.to_query_string(),
        "node=kiosk%207&state=REMOTE_ACCESS_STATE_STARTED&include_deleted=true"
    );
    assert_eq!(
        remote_access_state::parse("Configured"),
        Some(remote_access_state::CONFIGURED)
    );
    assert_eq!(
        remote_access_state::parse("REMOTE_ACCESS_STATE_ERROR"),
        Some(remote_access_state::ERROR)
    );
    assert_eq!(remote_access_state::parse("running"), None);
}

fn info(state: &str, port: Option<u16>, user: Option<&str>) -> RemoteAccessInfo {
    RemoteAccessInfo {
        resource_id: "rmtacconf-ab12cd34".into(),
        tenant_id: "t".into(),
        instance: "n-id".into(),
        node_name: "kiosk-7".into(),
        expiration_timestamp: 2_000_000_000_000,
        local_port: port,
        user: user.map(str::to_owned),
        kind: "tcp".into(),
        target: "127.0.0.1:22".into(),
        endpoint: true,
        allowed_cidrs: vec![],
        desired_state: remote_access_state::STARTED.into(),
        current_state: state.into(),
        configuration_status: "endpoint open".into(),
        configuration_status_indicator: "IDLE".into(),
        configuration_status_timestamp: 1_000,
        created_by: "alice".into(),
        created_at: 1_000,
        updated_at: 1_000,
    }
}

#[test]
fn started_output() {
    let up = info(remote_access_state::STARTED, Some(40123), Some("pi"));
    assert!(is_started(&up));
    assert_eq!(
        started_line(&up, "adit.example.com"),
        "rmtacconf-ab12cd34 STARTED: ssh -p 40123 pi@adit.example.com"
    );
    let no_user = info(remote_access_state::STARTED, Some(40123), None);
    assert_eq!(ssh_command(&no_user, "10.0.0.5"), "ssh -p 40123 10.0.0.5");
    assert!(!is_started(&info(remote_access_state::STARTED, None, None)));
    assert!(!is_started(&info(
        remote_access_state::CONFIGURED,
        Some(1),
        None
    )));
    let shown = render_access(&up, "adit.example.com", std::time::SystemTime::now());
    assert!(
        shown.contains("ssh -p 40123 pi@adit.example.com"),
        "{shown}"
    );
    assert!(shown.contains("kiosk-7 (n-id)"), "{shown}");
}
