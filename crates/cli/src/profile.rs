//! The saved login: `profile.json` in the profile directory, readable only by
//! its owner (directory 0700, file 0600), because it holds an access token.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use adit_pki::Secret;
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::error::NotLoggedIn;
use crate::output::api_time;

/// File name of the profile inside the profile directory.
pub const PROFILE_FILE: &str = "profile.json";

/// What `adit login` saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Server URL, e.g. `https://adit.example.com:8443`.
    pub server: String,
    /// The server's CA certificate (PEM): the only certificate trusted for it.
    pub ca_pem: String,
    pub user: String,
    pub tenant: String,
    pub access_token: Secret,
    /// When the access token expires (API time: unix milliseconds).
    pub expires_at: i64,
}

impl Profile {
    /// Whether the access token has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        api_time(self.expires_at) <= now
    }

    /// The token, or [`NotLoggedIn`] when it has expired.
    pub fn valid_token(&self, now: SystemTime) -> Result<&Secret, NotLoggedIn> {
        if self.is_expired(now) {
            return Err(NotLoggedIn {
                reason: format!(
                    "the access token of {} on {} expired at {}",
                    self.user,
                    self.server,
                    crate::output::format_time(self.expires_at)
                ),
            });
        }
        Ok(&self.access_token)
    }
}

// === impl ProfileStore ===

/// The profile directory.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    dir: PathBuf,
}

impl ProfileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(PROFILE_FILE)
    }

    /// The saved profile, or `None` when there is none.
    pub fn load(&self) -> Result<Option<Profile>> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let profile = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a valid adit profile; run `adit logout` and log in again",
                path.display()
            )
        })?;
        Ok(Some(profile))
    }

    /// The saved profile, or [`NotLoggedIn`].
    pub fn require(&self) -> Result<Profile> {
        self.load()?.ok_or_else(|| {
            NotLoggedIn {
                reason: format!("not logged in (no {})", self.path().display()),
            }
            .into()
        })
    }

    /// Saves `profile` atomically: written to a 0600 temporary file in a 0700
    /// directory, then renamed over the old one.
    pub fn save(&self, profile: &Profile) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create profile directory {}", self.dir.display()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (mode 0700)", self.dir.display()))?;
        let path = self.path();
        let tmp = self
            .dir
            .join(format!(".{PROFILE_FILE}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // `mode` only applies to new files; a stale temp file may have another.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            let json = serde_json::to_vec_pretty(profile).map_err(std::io::Error::other)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("cannot save the login to {}", path.display()))
        })
    }

    /// Deletes the profile; `false` when there was none.
    pub fn delete(&self) -> Result<bool> {
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
    }
}
