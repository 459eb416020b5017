//! Edge-View session tokens at the proxy: verifying a token carried in a stream's `OPEN`
//! grant, admitting at most `num` concurrent client instances per token, and cutting live
//! streams the moment a token is revoked.
//!
//! A client sends the token as the grant, optionally followed by `#K` to name its
//! instance (1..=num, default 1). An instance belongs to the client tunnel that first
//! used it until that tunnel closes; another tunnel asking for the same instance is
//! refused, as is an instance beyond `num`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use adit_pki::{JwtErrorKind, SessionClaims, AUD_SESSION};
use adit_store::TokenKind;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Whether `grant` looks like a session token (its unverified audience says so); the
/// caller then verifies it with [`authenticate`].
pub fn is_session_token(grant: &str) -> bool {
    let jwt = grant.split_once('#').map_or(grant, |(jwt, _)| jwt);
    adit_pki::decode_unverified(jwt)
        .ok()
        .and_then(|v| v["claims"]["aud"].as_str().map(|a| a == AUD_SESSION))
        .unwrap_or(false)
}

/// A verified session token, the instance the client asked for, and the user who
/// issued it as that user is now.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    pub claims: SessionClaims,
    pub instance: u8,
    /// The issuer, with its current roles: every use is judged by them.
    pub issuer: crate::auth::Principal,
}

/// Verifies `grant` (`JWT` or `JWT#K`): signature, audience, expiry, that the control
/// plane issued it and has not revoked it, that its issuer still exists and is enabled,
/// and that `K` is within the token's instances. Whether the issuer may still connect to
/// the node is checked by the caller, with the node. The error is the reason shown to
/// the client.
pub fn authenticate(state: &AppState, grant: &str) -> Result<TokenCaller, String> {
    let (jwt, instance) = match grant.split_once('#') {
        None => (grant, 1u8),
        Some((jwt, k)) => match k.parse::<u8>() {
            Ok(k) if k >= 1 => (jwt, k),
            _ => {
                return Err(format!(
                    "instance '{}' is not a number from 1 to {}",
                    crate::api::shown(k),
                    adit_api::MAX_SESSION_INSTANCES
                ))
            }
        },
    };
    let claims: SessionClaims = state
        .signer
        .verifying_key()
        .verify(jwt, AUD_SESSION)
        .map_err(|e| match e.jwt_kind() {
            Some(JwtErrorKind::Expired) => "the session token has expired".to_string(),
            Some(kind) => format!("the session token was refused ({kind})"),
            None => "the session token was refused (invalid)".to_string(),
        })?;
    let issuer = check_claims(state, &claims)?;
    if instance > claims.num {
        return Err(format!(
            "instance {instance} refused: this session token allows {} instance{} (1..={})",
            claims.num,
            if claims.num == 1 { "" } else { "s" },
            claims.num
        ));
    }
    Ok(TokenCaller {
        claims,
        instance,
        issuer,
    })
}

/// What is checked of a verified session token on every use, at open and on recheck
/// ([`crate::liveness`]): the control plane issued it and has not revoked it, and its
/// issuer (by id) still exists and is enabled. Returns the issuer as it is now.
pub fn check_claims(
    state: &AppState,
    claims: &SessionClaims,
) -> Result<crate::auth::Principal, String> {
    let record = state
        .store
        .issued_token(&claims.ten, &claims.jti)
        .map_err(|e| format!("could not check the session token: {e}"))?;
    match record {
        Some(r) if r.kind == TokenKind::Session && r.subject == claims.sub => {
            if r.revoked_at.is_some() {
                return Err("the session token has been revoked".into());
            }
            // Tokens from before issuers were recorded by id cannot be tied to a user:
            // fail closed.
            if r.created_by_id.is_empty() || r.created_by_id != claims.uid {
                return Err(
                    "the session token does not name the user who issued it; ask for a new one"
                        .into(),
                );
            }
        }
        // Signed by us but never recorded: fail closed.
        _ => return Err("the session token is not known to this server".into()),
    }
    crate::auth::live_user(state, &claims.ten, &claims.uid)
        .map_err(|why| format!("the user who issued this session token {why}"))
        .and_then(|user| {
            crate::auth::principal_of(state, user).map_err(|e| e.message().to_string())
        })
}

// === Instances ===

/// Which client tunnel holds each (token, instance), and a cut signal per token.
#[derive(Debug, Default)]
pub struct Instances {
    inner: Mutex<InstancesInner>,
    next_conn: AtomicU64,
}

#[derive(Debug, Default)]
struct InstancesInner {
    /// (jti, instance) → id of the client tunnel holding it.
    held: HashMap<(String, u8), u64>,
    /// jti → cancelled when the token is revoked; every stream of the token watches it.
    cuts: HashMap<String, CancellationToken>,
    /// jti → how many held instances refer to `cuts[jti]`.
    users: HashMap<String, usize>,
    /// Client tunnels that have closed but whose streams are still finishing: their
    /// instances are free for others already.
    closed: std::collections::HashSet<u64>,
}

impl Instances {
    fn lock(&self) -> std::sync::MutexGuard<'_, InstancesInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh id for a client tunnel.
    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Claims `(jti, instance)` for client tunnel `conn`; `Ok` with the token's cut
    /// signal if it is free or already `conn`'s.
    pub fn claim(&self, jti: &str, instance: u8, conn: u64) -> Result<CancellationToken, String> {
        let mut inner = self.lock();
        let key = (jti.to_string(), instance);
        match inner.held.get(&key) {
            Some(&holder) if holder != conn && inner.closed.contains(&holder) => {
                // The holder's tunnel is gone; its last streams are winding down.
                inner.held.insert(key, conn);
            }
            Some(&holder) if holder != conn => {
                return Err(format!(
                    "instance {instance} of this session token is in use by another client; \
                     pass another --instance"
                ))
            }
            Some(_) => {}
            None => {
                inner.held.insert(key, conn);
                *inner.users.entry(jti.to_string()).or_default() += 1;
            }
        }
        Ok(inner.cuts.entry(jti.to_string()).or_default().clone())
    }

    /// Client tunnel `conn` closed: its instances may be taken by other clients while
    /// its remaining streams finish.
    pub fn connection_closed(&self, conn: u64) {
        self.lock().closed.insert(conn);
    }

    /// Releases every instance client tunnel `conn` still holds (when its streams are
    /// done).
    pub fn release_connection(&self, conn: u64) {
        let mut inner = self.lock();
        inner.closed.remove(&conn);
        let released: Vec<(String, u8)> = inner
            .held
            .iter()
            .filter(|(_, &c)| c == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for key in released {
            inner.held.remove(&key);
            let jti = key.0;
            let left = inner.users.get_mut(&jti).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                inner.users.remove(&jti);
                inner.cuts.remove(&jti);
            }
        }
    }

    /// Cuts every live stream of token `jti` (it was revoked).
    pub fn cut(&self, jti: &str) {
        if let Some(cut) = self.lock().cuts.get(jti) {
            cut.cancel();
        }
    }

    /// How many instances are held (for tests and metrics).
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_session_tokens_by_audience() {
        let key = adit_pki::SigningKey::generate().unwrap();
        let session = key
            .sign(&serde_json::json!({"aud": AUD_SESSION, "exp": 1}))
            .unwrap();
        let access = key
            .sign(&serde_json::json!({"aud": adit_pki::AUD_ACCESS, "exp": 1}))
            .unwrap();
        assert!(is_session_token(&session));
        assert!(is_session_token(&format!("{session}#2")));
        assert!(!is_session_token(&access));
        assert!(!is_session_token("garbage"));
        assert!(!is_session_token(""));
    }

    #[test]
    fn instances_are_exclusive_per_connection() {
        let i = Instances::default();
        let (a, b) = (i.connection_id(), i.connection_id());
        let cut = i.claim("t", 1, a).unwrap();
        assert!(
            i.claim("t", 1, a).is_ok(),
            "the holder may reuse its instance"
        );
        let err = i.claim("t", 1, b).unwrap_err();
        assert!(err.contains("in use"), "{err}");
        assert!(i.claim("t", 2, b).is_ok());
        assert_eq!(i.held(), 2);
        i.cut("t");
        assert!(cut.is_cancelled());
        i.release_connection(a);
        assert_eq!(i.held(), 1);
        assert!(
            i.claim("t", 1, b).is_ok(),
            "released instances are free again"
        );
        // A closed tunnel's instance passes to another client at once; the late
        // release of the old tunnel does not take it back.
        let c = i.connection_id();
        i.connection_closed(b);
        assert!(i.claim("t", 1, c).is_ok());
        i.release_connection(b);
        assert!(i.claim("t", 1, a).is_err(), "still held by c");
        i.release_connection(c);
        assert_eq!(i.held(), 0);
        let inner = i.lock();
        assert!(inner.cuts.is_empty() && inner.users.is_empty() && inner.closed.is_empty());
    }
}
