//! First start and every start: the data directory, the CA, the signing key,
//! the server's own certificate, the store and the first admin.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adit_pki::{CertificateAuthority, Secret, SigningKey, TicketKeys, TICKET_KEY_ROTATE_SECS};
use adit_store::{SqliteStore, Store};
use anyhow::{bail, Context, Result};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::state::{AppState, Settings};

/// The default tenant created on first start.
pub const DEFAULT_TENANT: &str = "default";
/// The first administrator's user name.
pub const ADMIN_USER: &str = "admin";

/// A server ready to listen.
pub struct Bootstrapped {
    pub state: AppState,
    pub tls: Arc<rustls::ServerConfig>,
    /// The keys sealing the TLS session tickets `tls` issues; hand them to
    /// [`rotate_ticket_keys`].
    pub ticket_keys: Arc<TicketKeys>,
    /// Set when this start created the admin with a random password, which
    /// is shown once.
    pub generated_admin_password: Option<Secret>,
}

/// Writes `contents` to `path` with mode 0600 from the first byte on.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("could not create {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

fn load_or_create_ca(dir: &Path) -> Result<CertificateAuthority> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    match (cert.exists(), key.exists()) {
        (true, true) => CertificateAuthority::from_pem(&read(&cert)?, &read(&key)?)
            .with_context(|| format!("the CA in {} is unusable", dir.display())),
        (false, false) => {
            let ca = CertificateAuthority::generate("Adit CA")?;
            write_private(&key, ca.key_pem().expose().as_bytes())?;
            write_private(&cert, ca.cert_pem().as_bytes())?;
            Ok(ca)
        }
        _ => bail!(
            "{} holds only one of ca.crt and ca.key; restore the missing file or move both away to create a new CA (every agent must then enrol again)",
            dir.display()
        ),
    }
}

fn load_or_create_signer(dir: &Path) -> Result<SigningKey> {
    let path = dir.join("signing.key");
    if path.exists() {
        return SigningKey::from_pkcs8_pem(&read(&path)?)
            .with_context(|| format!("the signing key {} is unusable", path.display()));
    }
    let key = SigningKey::generate()?;
    write_private(&path, key.to_pkcs8_pem().expose().as_bytes())?;
    Ok(key)
}

/// Host part of a URL like `https://host:port/...`.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Prepares everything the server needs from `settings.data_dir`.
pub fn bootstrap(
    settings: Settings,
    extra_names: &[String],
    admin_password: Option<Secret>,
) -> Result<Bootstrapped> {
    let dir = settings.data_dir.clone();
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;

    let ca = load_or_create_ca(&dir)?;
    let signer = load_or_create_signer(&dir)?;

    // A fresh server certificate each start: it covers the public name and
    // loopback, and nothing depends on it persisting.
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(url_host(&settings.public_url));
    names.extend(extra_names.iter().cloned());
    names.sort();
    names.dedup();
    let (leaf, leaf_key) = ca.issue_server_cert(&names, Duration::from_secs(90 * 24 * 3600))?;
    let chain = ca.chain_pem(&leaf.cert_pem);
    write_private(&dir.join("server.crt"), chain.as_bytes())?;
    write_private(&dir.join("server.key"), leaf_key.expose().as_bytes())?;
    let tls = adit_pki::server_config(
        &chain,
        leaf_key.expose(),
        Some(ca.cert_pem()),
        &[adit_proto::ALPN, b"h2", b"http/1.1"],
    )?;
    let ticket_keys = load_or_create_ticket_keys(&dir)?;
    let tls = adit_pki::with_session_tickets(tls, ticket_keys.clone());

    let store = SqliteStore::open(&dir.join("adit.db"))
        .with_context(|| format!("could not open the database in {}", dir.display()))?;
    store.mark_all_nodes_offline()?;
    let tenant = match store.tenant_by_name(DEFAULT_TENANT)? {
        Some(t) => t,
        None => store.create_tenant(DEFAULT_TENANT)?,
    };
    let mut generated_admin_password = None;
    if store.list_users(&tenant.id)?.is_empty() {
        let password = match admin_password {
            Some(p) => p,
            None => {
                let p: String = rand::thread_rng()
                    .sample_iter(&rand::distributions::Alphanumeric)
                    .take(24)
                    .map(char::from)
                    .collect();
                let p = Secret::new(p);
                generated_admin_password = Some(p.clone());
                p
            }
        };
        let hash = crate::auth::hash_password(password.expose())
            .map_err(|e| anyhow::anyhow!("could not hash the admin password: {e:?}"))?;
        let user = store.create_user(&tenant.id, ADMIN_USER, &hash)?;
        store.bind_role(&tenant.id, &user.id, "admin", &Default::default())?;
    }

    let state = AppState::new(Arc::new(store), ca, signer, settings);
    Ok(Bootstrapped {
        state,
        tls,
        ticket_keys,
        generated_admin_password,
    })
}

/// The file in the data directory that keeps the TLS session-ticket keys (mode 0600).
pub const TICKET_KEYS_FILE: &str = "tls-ticket.keys";

/// The session-ticket keys from the data directory, rotated if the current one is
/// [`TICKET_KEY_ROTATE_SECS`] old, or new ones. Kept across restarts so that agents
/// reconnecting after one resume their TLS sessions instead of doing full handshakes.
/// An unreadable or damaged file costs only that: new keys, with a warning.
fn load_or_create_ticket_keys(dir: &Path) -> Result<Arc<TicketKeys>> {
    let path = dir.join(TICKET_KEYS_FILE);
    let now = adit_pki::now_unix().max(0) as u64;
    let keys = match fs::read_to_string(&path) {
        Ok(text) => TicketKeys::from_text(&text).or_else(|e| {
            tracing::warn!(
                file = %path.display(), error = %e,
                "session-ticket keys unusable; making new ones (agents do one full TLS handshake)"
            );
            TicketKeys::generate(now)
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TicketKeys::generate(now)?,
        Err(e) => {
            return Err(e).with_context(|| format!("could not read {}", path.display()));
        }
    };
    keys.rotate_if_older(now, TICKET_KEY_ROTATE_SECS)?;
    write_private(&path, keys.to_text().expose().as_bytes())?;
    Ok(Arc::new(keys))
}

/// Rotates the session-ticket keys once the current one is [`TICKET_KEY_ROTATE_SECS`]
/// old (checked hourly) and stores them, until `shutdown`.
pub async fn rotate_ticket_keys(
    dir: std::path::PathBuf,
    keys: Arc<TicketKeys>,
    shutdown: CancellationToken,
) {
    const CHECK_EVERY: Duration = Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let now = adit_pki::now_unix().max(0) as u64;
        match keys.rotate_if_older(now, TICKET_KEY_ROTATE_SECS) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not make a new session-ticket key");
                continue;
            }
        }
        let (path, text) = (dir.join(TICKET_KEYS_FILE), keys.to_text());
        let written =
            tokio::task::spawn_blocking(move || write_private(&path, text.expose().as_bytes()))
                .await;
        match written {
            Ok(Ok(())) => tracing::info!("session-ticket key rotated"),
            Ok(Err(e)) => tracing::warn!(
                error = %format!("{e:#}"),
                "session-ticket key rotated but not stored; after a restart agents do full handshakes"
            ),
            Err(e) => tracing::warn!(error = %e, "session-ticket key store task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            url_host("https://a.example:8443/x").as_deref(),
            Some("a.example")
        );
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(url_host("https://10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(url_host("https://").as_deref(), None);
    }
}
