//! `adit completions` and `adit token decode`.

use std::io::Read as _;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use super::Ctx;
use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    clap_complete::generate(shell, &mut Cli::command(), "adit", &mut std::io::stdout());
    Ok(0)
}

/// Prints `{"header": …, "claims": …}` of `jwt` (`-`: stdin; none: the saved
/// access token). Nothing is verified.
pub fn decode(ctx: &Ctx, jwt: Option<String>) -> Result<u8> {
    let token = match jwt.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .take(adit_pki::MAX_JWT_LEN as u64 + 2)
                .read_to_string(&mut s)
                .context("cannot read the token from stdin")?;
            s.trim().to_owned()
        }
        Some(t) => t.trim().to_owned(),
        None => ctx.profile()?.access_token.into_inner(),
    };
    let decoded = adit_pki::decode_unverified(&token).context("cannot decode the token")?;
    crate::output::print_json(&decoded)?;
    Ok(0)
}
