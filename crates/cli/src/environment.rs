//! The process environment, read once in `main` and passed down, so the rest
//! of the CLI is testable without touching global state.

use std::path::PathBuf;

use adit_pki::Secret;
use adit_tunnel::connect::ProxySettings;
use anyhow::{anyhow, Context as _, Result};

/// Environment variable naming the profile directory.
pub const ADIT_HOME: &str = "ADIT_HOME";
/// Environment variable holding the password for `adit login`.
pub const ADIT_PASSWORD: &str = "ADIT_PASSWORD";

/// What the CLI takes from the environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `ADIT_HOME`, when set and non-empty.
    pub adit_home: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `HTTPS_PROXY` (or `https_proxy`).
    pub https_proxy: Option<String>,
    /// `NO_PROXY` (or `no_proxy`).
    pub no_proxy: Option<String>,
    /// `ADIT_PASSWORD`.
    pub password: Option<Secret>,
    /// `ADIT_LOG`: a tracing filter such as `debug`.
    pub log_filter: Option<String>,
}

// === impl Env ===

impl Env {
    /// Reads the variables above from the current process.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            adit_home: var(ADIT_HOME).map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            https_proxy: var("HTTPS_PROXY").or_else(|| var("https_proxy")),
            no_proxy: var("NO_PROXY").or_else(|| var("no_proxy")),
            password: std::env::var(ADIT_PASSWORD).ok().map(Secret::new),
            log_filter: var("ADIT_LOG"),
        }
    }

    /// The profile directory: `$ADIT_HOME`, else `$HOME/.config/adit`.
    pub fn profile_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.adit_home {
            return Ok(dir.clone());
        }
        let home = self.home.as_ref().ok_or_else(|| {
            anyhow!("neither ADIT_HOME nor HOME is set; set ADIT_HOME to a directory for adit's login profile")
        })?;
        Ok(home.join(".config").join("adit"))
    }

    /// HTTP proxy settings for dialling the server's tunnel port.
    pub fn proxy_settings(&self) -> Result<ProxySettings> {
        ProxySettings::from_values(self.https_proxy.as_deref(), self.no_proxy.as_deref())
            .context("HTTPS_PROXY / NO_PROXY cannot be used")
    }
}
