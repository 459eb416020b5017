//! Who is calling: local passwords (Argon2id), API access tokens (ES256 JWTs) and the
//! brute-force limiter in front of `POST /v1/login`.
//!
//! [`authenticate_bearer`] is independent of HTTP so the proxy can authenticate tokens
//! carried in stream `OPEN` headers with exactly the same rules as the API.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use adit_pki::{AccessClaims, JwtErrorKind, PkiError, AUD_ACCESS};
use adit_store::{RoleBinding, Tenant, User};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::RngCore;
use tokio::time::Instant;

use crate::api::ApiFailure;
use crate::state::AppState;

/// What a caller is told when its token is unusable.
const LOGIN_AGAIN: &str = "log in again with `adit login`";

// === verified tokens ===

/// Access tokens whose signature, audience and expiry were verified: a client that
/// opens many streams with one token (every `adit forward` connection carries it)
/// pays for one ES256 verification, not one per stream. Who the user is, whether the
/// user or an API token is still valid and which roles apply are read from the store
/// on every use, as before.
pub type VerifiedTokens = adit_pki::Verified<AccessClaims>;

// === Principal ===

/// An authenticated user, as every authorization decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub user: String,
    pub tenant_id: String,
    pub tenant: String,
    /// The user's role bindings in its tenant, loaded when the token was checked.
    pub bindings: Vec<RoleBinding>,
    /// The access token's `jti`.
    pub token_id: String,
    /// When the access token expires (unix seconds).
    pub expires_at: i64,
    /// The caller used an API token (not a login).
    pub api_token: bool,
}

#[axum::async_trait]
impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiFailure;

    /// Reads `Authorization: Bearer <token>`; anything else is a 401.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiFailure> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiFailure::unauthenticated(format!(
                "this request needs an access token (`Authorization: Bearer ...`); {LOGIN_AGAIN}"
            ))
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiFailure::unauthenticated(format!(
                    "the Authorization header is not of the form `Bearer <token>`; {LOGIN_AGAIN}"
                ))
            })?;
        authenticate_bearer(state, token)
    }
}

/// Verifies an access token and loads its user's current state.
///
/// Refuses (401 `unauthenticated`) a token that is malformed, expired, signed by another
/// key or meant for another audience, and the token of a user that was deleted, disabled
/// or moved since it was issued. Role bindings are read fresh, so a role removed after
/// login stops working at once.
pub fn authenticate_bearer(state: &AppState, token: &str) -> Result<Principal, ApiFailure> {
    authenticate_bearer_claims(state, token).map(|(_, p)| p)
}

/// [`authenticate_bearer`], also returning the verified claims (what a stream keeps to
/// be checked again, [`crate::liveness`]).
pub fn authenticate_bearer_claims(
    state: &AppState,
    token: &str,
) -> Result<(AccessClaims, Principal), ApiFailure> {
    let now = adit_pki::now_unix();
    let claims = match state.verified_tokens.get(token, now) {
        Some(claims) => claims,
        None => {
            let claims = verify_access_token(state, token)?;
            state
                .verified_tokens
                .insert(token, &claims, claims.exp, now);
            claims
        }
    };
    let p = principal_for_claims(state, claims.clone())?;
    Ok((claims, p))
}

/// Checks an access token's signature, audience and expiry (ES256: the costly part).
fn verify_access_token(state: &AppState, token: &str) -> Result<AccessClaims, ApiFailure> {
    state
        .signer
        .verifying_key()
        .verify(token, AUD_ACCESS)
        .map_err(|e| match e.jwt_kind() {
            Some(JwtErrorKind::Expired) => {
                ApiFailure::unauthenticated(format!("your access token has expired; {LOGIN_AGAIN}"))
            }
            _ => ApiFailure::unauthenticated(format!(
                "the access token was refused ({}); {LOGIN_AGAIN}",
                e.jwt_kind()
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "invalid".into())
            )),
        })
}

/// The user, tenant and roles behind verified `claims`, read fresh from the store:
/// refused if the user is gone or disabled, a login token predates a password change, or
/// an API token was revoked. Expiry is the verifier's business, not checked here.
pub fn principal_for_claims(
    state: &AppState,
    claims: AccessClaims,
) -> Result<Principal, ApiFailure> {
    let user = live_user(state, &claims.ten, &claims.sub).map_err(|why| {
        ApiFailure::unauthenticated(format!(
            "the user this access token was issued to {why}; {LOGIN_AGAIN}, or ask an admin"
        ))
    })?;
    // A changed password voids the login tokens issued before it (to the second: a
    // token from the same second as the change stays valid). API tokens are revoked
    // on their own (`adit api-tokens revoke`).
    if !claims.api && claims.iat < user.credentials_changed_at.div_euclid(1000) {
        return Err(ApiFailure::unauthenticated(format!(
            "the password of {} changed after this access token was issued; {LOGIN_AGAIN}",
            user.name
        )));
    }
    if claims.api {
        // API tokens live long, so each use checks the record: revoked or unknown → refused.
        let record = state.store.issued_token(&claims.ten, &claims.jti)?;
        let usable = record.is_some_and(|r| {
            r.kind == adit_store::TokenKind::Api && r.subject == user.id && r.revoked_at.is_none()
        });
        if !usable {
            return Err(ApiFailure::unauthenticated(
                "this API token has been revoked or is not known to this server; create a \
                 new one with `adit api-tokens create`",
            ));
        }
    }
    let mut p = principal_of(state, user)?;
    p.token_id = claims.jti;
    p.expires_at = claims.exp;
    p.api_token = claims.api;
    Ok(p)
}

/// User `user_id` of tenant `tenant_id` if it exists and is enabled; otherwise what is
/// wrong with it ("no longer exists or is disabled"), to finish a sentence.
pub fn live_user(state: &AppState, tenant_id: &str, user_id: &str) -> Result<User, String> {
    match state.store.user(tenant_id, user_id) {
        Ok(Some(u)) if !u.disabled && u.tenant_id == tenant_id => Ok(u),
        Ok(_) => Err("no longer exists or is disabled".into()),
        Err(e) => Err(format!("could not be checked ({e})")),
    }
}

/// The principal of `user` with its tenant and role bindings read fresh from the store
/// (no token fields set). Shared by access tokens and by the credentials a user issued
/// (session tokens, remote-access sessions), so both are judged by the same roles.
pub fn principal_of(state: &AppState, user: User) -> Result<Principal, ApiFailure> {
    let tenant = state.store.tenant(&user.tenant_id)?.ok_or_else(|| {
        ApiFailure::unauthenticated(format!("the tenant of user {} no longer exists", user.name))
    })?;
    let bindings = state
        .store
        .list_role_bindings(&tenant.id, Some(&user.id))?
        .into_iter()
        // The store filters already; keep the invariant local to where it matters.
        .filter(|b| b.user_id == user.id && b.tenant_id == tenant.id)
        .collect();
    Ok(Principal {
        user_id: user.id,
        user: user.name,
        tenant_id: tenant.id,
        tenant: tenant.name,
        bindings,
        token_id: String::new(),
        expires_at: 0,
        api_token: false,
    })
}

/// The kinds of token a caller may ask the API to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Minted {
    /// An Edge-View session token for one node.
    Session,
    /// A long-lived API token.
    Api,
}

/// The token-minting rule, in one place: only a user's own login may mint tokens. An
/// API token mints nothing (a leaked automation token cannot make itself immortal or
/// spawn credentials that outlive its revocation); session tokens cannot call the API
/// at all (their audience is refused by [`authenticate_bearer`]).
pub fn may_mint(p: &Principal, kind: Minted) -> Result<(), ApiFailure> {
    if p.api_token {
        let what = match kind {
            Minted::Session => "session tokens",
            Minted::Api => "API tokens",
        };
        return Err(ApiFailure::forbidden(format!(
            "an API token cannot create {what} (tokens never mint tokens); log in with \
             `adit login` to create one"
        )));
    }
    Ok(())
}

/// Signs an access token for `user` of `tenant`, valid for
/// `settings.access_token_ttl`. Returns the token and its expiry (unix seconds).
pub fn issue_access_token(
    state: &AppState,
    user: &User,
    tenant: &Tenant,
) -> Result<(String, i64), PkiError> {
    let now = adit_pki::now_unix();
    let ttl = i64::try_from(state.settings.access_token_ttl.as_secs()).unwrap_or(i64::MAX);
    let exp = now.saturating_add(ttl);
    let claims = AccessClaims {
        sub: user.id.clone(),
        name: user.name.clone(),
        ten: tenant.id.clone(),
        aud: AUD_ACCESS.to_string(),
        iat: now,
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
        api: false,
    };
    Ok((state.signer.sign(&claims)?, exp))
}

// === passwords ===

/// Hashing a password failed (the system RNG or Argon2 itself).
#[derive(Debug, thiserror::Error)]
#[error("hashing the password failed: {0}")]
pub struct PasswordHashError(String);

/// Hashes `pw` with Argon2id (default parameters, random salt) into a PHC string.
pub fn hash_password(pw: &str) -> Result<String, PasswordHashError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| PasswordHashError(format!("random salt: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordHashError(e.to_string()))?;
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordHashError(e.to_string()))
}

/// Whether `pw` matches the PHC string `phc`; `false` for a malformed hash too.
pub fn verify_password(pw: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(pw.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

// === LoginLimiter ===

/// Failed logins from one source allowed within [`LoginLimiter::WINDOW`] before
/// backoff starts.
const FREE_FAILURES: u32 = 5;
/// Failed logins of one account, from any source, allowed within the window.
const ACCOUNT_FREE_FAILURES: u32 = 10;
/// First lockout; doubles with every further failure.
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// Longest lockout of a source.
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Longest lockout of an account: short, so that guessing cannot lock its owner (or
/// the admin) out for long.
const MAX_ACCOUNT_LOCKOUT: Duration = Duration::from_secs(5 * 60);
/// Entries beyond this make the limiter forget idle ones first.
const MAX_ENTRIES: usize = 50_000;

/// Failed-login counters with exponential backoff, kept two ways: per source address
/// and user name (as typed, whatever the tenant spelling), and per account (the
/// resolved tenant and user ids, across every source).
///
/// After [`FREE_FAILURES`] failures from one source (or [`ACCOUNT_FREE_FAILURES`] for
/// one account from anywhere) within five minutes, further attempts are refused
/// without checking the password for 30 s, doubling with every failure up to 15
/// minutes for a source and 5 minutes for an account. A successful login clears both.
/// In memory, per router.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    entries: Mutex<HashMap<LimiterKey, Failures>>,
}

/// Identifies whose attempts are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimiterKey {
    /// One source address guessing one user name.
    Source {
        source: Option<IpAddr>,
        user: String,
    },
    /// One account, from anywhere.
    Account { tenant_id: String, user_id: String },
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    blocked_until: Option<Instant>,
}

impl LimiterKey {
    /// A source guessing `user` (the tenant as typed does not matter).
    pub fn source(source: Option<IpAddr>, user: &str) -> Self {
        Self::Source {
            source,
            user: user.to_string(),
        }
    }

    /// The account `user_id` of `tenant_id`.
    pub fn account(tenant_id: &str, user_id: &str) -> Self {
        Self::Account {
            tenant_id: tenant_id.to_string(),
            user_id: user_id.to_string(),
        }
    }

    fn free_failures(&self) -> u32 {
        match self {
            Self::Source { .. } => FREE_FAILURES,
            Self::Account { .. } => ACCOUNT_FREE_FAILURES,
        }
    }

    fn max_lockout(&self) -> Duration {
        match self {
            Self::Source { .. } => MAX_LOCKOUT,
            Self::Account { .. } => MAX_ACCOUNT_LOCKOUT,
        }
    }
}

impl LoginLimiter {
    /// Failures older than this (and not locked out) are forgotten.
    pub const WINDOW: Duration = Duration::from_secs(5 * 60);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimiterKey, Failures>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` if attempts for `key` are locked out for `wait` more.
    pub fn check(&self, key: &LimiterKey) -> Result<(), Duration> {
        let now = Instant::now();
        match self.lock().get(key).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt; returns the lockout it started, if any.
    pub fn record_failure(&self, key: &LimiterKey) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, f| f.is_relevant(now));
        }
        let entry = map.entry(key.clone()).or_insert(Failures {
            count: 0,
            first: now,
            blocked_until: None,
        });
        if !entry.is_relevant(now) {
            *entry = Failures {
                count: 0,
                first: now,
                blocked_until: None,
            };
        }
        entry.count = entry.count.saturating_add(1);
        let free = key.free_failures();
        if entry.count < free {
            return None;
        }
        let doublings = (entry.count - free).min(16);
        let lockout = FIRST_LOCKOUT
            .saturating_mul(1u32 << doublings)
            .min(key.max_lockout());
        entry.blocked_until = Some(now + lockout);
        Some(lockout)
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn record_success(&self, key: &LimiterKey) {
        self.lock().remove(key);
    }
}

impl Failures {
    /// Whether this entry still affects decisions: locked out, or failures in the window.
    fn is_relevant(&self, now: Instant) -> bool {
        // A key that was locked out keeps its count until a quiet window has passed after
        // the lockout, so backoff keeps growing for a persistent guesser.
        match self.blocked_until {
            Some(until) => now < until + LoginLimiter::WINDOW,
            None => now.duration_since(self.first) < LoginLimiter::WINDOW,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salt is random");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_backs_off_and_resets() {
        let l = LoginLimiter::default();
        let k = LimiterKey::source(None, "alice");
        let other = LimiterKey::source(None, "bob");
        for _ in 0..4 {
            assert_eq!(l.record_failure(&k), None);
            assert!(l.check(&k).is_ok());
        }
        assert_eq!(l.record_failure(&k), Some(Duration::from_secs(30)));
        assert!(l.check(&k).is_err());
        assert!(l.check(&other).is_ok(), "keys are independent");

        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(l.check(&k).is_ok());
        assert_eq!(l.record_failure(&k), Some(Duration::from_secs(60)));
        for _ in 0..10 {
            l.record_failure(&k);
        }
        let wait = l.check(&k).unwrap_err();
        assert!(wait <= MAX_LOCKOUT && wait > Duration::from_secs(14 * 60));

        l.record_success(&k);
        assert!(l.check(&k).is_ok());
        assert_eq!(l.record_failure(&k), None);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_forgets_old_failures() {
        let l = LoginLimiter::default();
        let k = LimiterKey::source(None, "alice");
        for _ in 0..4 {
            l.record_failure(&k);
        }
        tokio::time::advance(LoginLimiter::WINDOW + Duration::from_secs(1)).await;
        assert_eq!(l.record_failure(&k), None, "the window restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn accounts_have_a_larger_budget_and_a_shorter_cap() {
        let l = LoginLimiter::default();
        let account = LimiterKey::account("t1", "u1");
        for _ in 0..ACCOUNT_FREE_FAILURES - 1 {
            assert_eq!(l.record_failure(&account), None);
        }
        assert_eq!(l.record_failure(&account), Some(FIRST_LOCKOUT));
        assert!(l.check(&account).is_err());
        assert!(l.check(&LimiterKey::account("t1", "u2")).is_ok());
        assert!(l.check(&LimiterKey::account("t2", "u1")).is_ok());
        for _ in 0..20 {
            l.record_failure(&account);
        }
        assert_eq!(l.check(&account).unwrap_err(), MAX_ACCOUNT_LOCKOUT);
    }
}
