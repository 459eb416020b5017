//! First start and every start: the data directory, the CA, the signing key,
//! the server's own certificate, the store and the first admin.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adit_pki::{CertificateAuthority, Secret, SigningKey};
use adit_store::{SqliteStore, Store};
use anyhow::{bail, Context, Result};
use rand::Rng;

use crate::state::{AppState, Settings};

/// The default tenant created on first start.
pub const DEFAULT_TENANT: &str = "default";
/// The first administrator's user name.
pub const ADMIN_USER: &str = "admin";

/// A server ready to listen.
pub struct Bootstrapped {
    pub state: AppState,
    pub tls: Arc<rustls::ServerConfig>,
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
        generated_admin_password,
    })
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
