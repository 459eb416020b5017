//! `adit tcp NODE HOST:PORT[/HOST:PORT...]`: Edge-View style port mappings, each a
//! local listener carried to the node over one tunnel (the same code as `adit forward`).

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;

use super::forward::{Forwarder, Mapping};
use super::Ctx;
use crate::cli::{host_port, TcpArgs};
use crate::error::UsageError;

/// One requested mapping: an optional local port and the target seen from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MappingSpec {
    pub local_port: Option<u16>,
    pub host: String,
    pub port: u16,
}

/// Parses `[LPORT=]HOST:PORT[/[LPORT=]HOST:PORT...]` (IPv6 hosts in brackets).
pub(crate) fn parse_mappings(s: &str) -> Result<Vec<MappingSpec>, String> {
    const FORM: &str =
        "expected [LPORT=]HOST:PORT[/[LPORT=]HOST:PORT...], e.g. 127.0.0.1:22/8080=10.0.0.5:80";
    s.split('/')
        .map(|one| {
            let (local_port, target) = match one.split_once('=') {
                Some((l, t)) => {
                    let l: u16 = l.parse().map_err(|_| {
                        format!("local port `{l}` is not a number from 0 to 65535; {FORM}")
                    })?;
                    (Some(l), t)
                }
                None => (None, one),
            };
            let (host, port) =
                adit_api::toolbox::split_host_port(target).map_err(|e| format!("{e}; {FORM}"))?;
            Ok(MappingSpec {
                local_port,
                host: host.to_owned(),
                port,
            })
        })
        .collect()
}

pub async fn tcp(ctx: &Ctx, args: TcpArgs) -> Result<u8> {
    let mut specs = Vec::new();
    for arg in &args.mappings {
        specs.extend(parse_mappings(arg).map_err(UsageError)?);
    }
    let dialer = ctx.dialer()?;
    let mut mappings = Vec::new();
    for spec in specs {
        let local = spec.local_port.unwrap_or(0);
        let listener = TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{local}"))?;
        mappings.push(Mapping {
            listener,
            host: spec.host,
            port: spec.port,
        });
    }
    let forwarder = Forwarder::connect(dialer, &args.node).await?;
    for m in &mappings {
        println!(
            "{} -> {} {}",
            m.listener.local_addr()?,
            args.node,
            host_port(&m.host, m.port)
        );
    }
    forwarder.run(mappings).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        let m = parse_mappings("127.0.0.1:22/8080=[::1]:80/printer.lan:631").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            MappingSpec {
                local_port: None,
                host: "127.0.0.1".into(),
                port: 22
            }
        );
        assert_eq!(
            m[1],
            MappingSpec {
                local_port: Some(8080),
                host: "::1".into(),
                port: 80
            }
        );
        assert_eq!(m[2].host, "printer.lan");
        assert!(parse_mappings("127.0.0.1").is_err());
        assert!(parse_mappings("x=1.2.3.4:5").is_err());
        assert!(parse_mappings("1.2.3.4:0").is_err());
        assert!(parse_mappings("a b:22").is_err());
        assert!(parse_mappings("127.0.0.1:22/").is_err());
    }
}
