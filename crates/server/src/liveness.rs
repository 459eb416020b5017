//! Issuer liveness: what backs every credential derived from a user, checked when a
//! stream opens and again, for every live stream, whenever users, roles or tokens change.
//!
//! A stream is opened with a [`Backing`]: the access token (login or API) of the user who
//! opened it, the session token it presented, or the user who created the remote-access
//! session it belongs to. [`Backing::principal`] turns it into the user as that user is
//! now (existing, enabled, password not changed since a login token was issued, API or
//! session token not revoked), and [`may_connect`] asks that user's current roles about
//! the node. [`crate::proxy::authorize`] opens streams through exactly these two calls,
//! and [`recheck`] re-asks them for every live stream of a tenant after an admin change,
//! cutting the ones that are no longer allowed.
//!
//! Expiry is not rechecked: a token's lifetime bounds when streams may be opened with it,
//! as a certificate's bounds a TLS handshake; withdrawing a user or a role ends what is
//! open at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use adit_pki::{AccessClaims, SessionClaims};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::state::AppState;

/// The credential a stream was opened with.
#[derive(Debug, Clone)]
pub enum Backing {
    /// An access token (login or API), already verified.
    Access(AccessClaims),
    /// A session token, already verified.
    Session(SessionClaims),
    /// A remote-access session, by the id of the user who created it.
    Creator { tenant_id: String, user_id: String },
}

impl Backing {
    /// The user behind this credential as that user is now, or why there is none.
    pub fn principal(&self, state: &AppState) -> Result<Principal, String> {
        match self {
            Backing::Access(claims) => crate::auth::principal_for_claims(state, claims.clone())
                .map_err(|e| e.message().to_string()),
            Backing::Session(claims) => crate::session_tokens::check_claims(state, claims),
            Backing::Creator { tenant_id, user_id } => {
                let user = crate::auth::live_user(state, tenant_id, user_id)
                    .map_err(|why| format!("the user who created the session {why}"))?;
                crate::auth::principal_of(state, user).map_err(|e| e.message().to_string())
            }
        }
    }

    /// Who is responsible for streams opened with it, in words.
    pub fn whose(&self, p: &Principal) -> String {
        match self {
            Backing::Access(_) => p.user.clone(),
            Backing::Session(_) => format!("{}, who issued the session token,", p.user),
            Backing::Creator { .. } => format!("{}, who created the session,", p.user),
        }
    }
}

/// Whether `p` may open streams to `node` (roles and selectors, now), with the reason
/// if not; `whose` names the user in that reason.
pub fn may_connect(p: &Principal, whose: &str, node: &adit_store::Node) -> Result<(), String> {
    if crate::authz::can_connect(p, node) {
        Ok(())
    } else {
        Err(format!(
            "permission denied: {whose} may not connect to node '{}'",
            node.name
        ))
    }
}

/// [`Backing::principal`] and [`may_connect`] for `node`: the whole issuer check.
pub fn check(
    state: &AppState,
    backing: &Backing,
    node: &adit_store::Node,
) -> Result<Principal, String> {
    let p = backing.principal(state)?;
    may_connect(&p, &backing.whose(&p), node)?;
    Ok(p)
}

/// One live stream, as [`recheck`] sees it.
struct Live {
    tenant_id: String,
    node_id: String,
    backing: Backing,
    cut: CancellationToken,
    why: Arc<OnceLock<String>>,
}

/// Every live stream and what backs it.
#[derive(Default)]
pub struct LiveStreams {
    next: AtomicU64,
    streams: Mutex<HashMap<u64, Live>>,
}

/// A registered stream: cancelled when its credential is withdrawn; unregisters on drop.
pub struct LiveGuard {
    live: Arc<LiveStreams>,
    id: u64,
    pub cut: CancellationToken,
    why: Arc<OnceLock<String>>,
}

impl LiveGuard {
    /// Why the stream was cut, once it was.
    pub fn reason(&self) -> Option<&str> {
        self.why.get().map(String::as_str)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.lock().remove(&self.id);
    }
}

impl LiveStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream to `node_id` opened with `backing`.
    pub fn register(
        self: &Arc<Self>,
        tenant_id: &str,
        node_id: &str,
        backing: Backing,
    ) -> LiveGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cut = CancellationToken::new();
        let why = Arc::new(OnceLock::new());
        self.lock().insert(
            id,
            Live {
                tenant_id: tenant_id.to_owned(),
                node_id: node_id.to_owned(),
                backing,
                cut: cut.clone(),
                why: why.clone(),
            },
        );
        LiveGuard {
            live: self.clone(),
            id,
            cut,
            why,
        }
    }

    /// How many streams are registered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks every live stream of `tenant_id` again and cuts those whose credential no
/// longer allows them; returns how many were cut. Called after every change to users,
/// role bindings and tokens (in the background: the store reads are not the caller's).
pub fn recheck_now(state: &AppState, tenant_id: &str) -> usize {
    let candidates: Vec<(String, Backing, CancellationToken, Arc<OnceLock<String>>)> = state
        .live
        .lock()
        .values()
        .filter(|l| l.tenant_id == tenant_id && !l.cut.is_cancelled())
        .map(|l| {
            (
                l.node_id.clone(),
                l.backing.clone(),
                l.cut.clone(),
                l.why.clone(),
            )
        })
        .collect();
    let mut cut = 0;
    for (node_id, backing, token, why) in candidates {
        let verdict = match state.store.node(tenant_id, &node_id) {
            Ok(Some(node)) => check(state, &backing, &node).map(|_| ()),
            Ok(None) => Err("the node no longer exists".into()),
            // A store failure is not a reason to cut: the next change checks again.
            Err(e) => {
                tracing::warn!(error = %e, "could not recheck a live stream");
                Ok(())
            }
        };
        if let Err(reason) = verdict {
            tracing::info!(node = %node_id, %reason, "access withdrawn: live stream cut");
            let _ = why.set(format!("access withdrawn: {reason}"));
            token.cancel();
            cut += 1;
        }
    }
    cut
}

/// [`recheck_now`] in the background, and a reconcile pass so remote-access sessions
/// whose creator was withdrawn end too.
pub fn recheck(state: &AppState, tenant_id: &str) {
    let state2 = state.clone();
    let tenant = tenant_id.to_owned();
    tokio::task::spawn_blocking(move || recheck_now(&state2, &tenant));
    crate::sessions::wake_all(state);
}
