//! Signed grants, reused for identical streams.
//!
//! Every stream the proxy opens to an agent carries a grant signed by the control
//! plane (ES256), and the agent verifies it. Repeated connections of one user to one
//! target (a web UI, `rsync` over many `ssh` runs, a load test) would pay for one
//! signature here and one verification on the agent each. A grant authorizes "this
//! user, this node, this kind of access, this target, this session, until `exp`" and
//! is a bearer credential for that lifetime anyway, so the proxy reuses the one it
//! signed for the same authorization while at least half of its lifetime is left; the
//! agent remembers grants it verified ([`adit_pki::Verified`]). Each stream is still
//! authorized on its own before a grant is looked up, and the agent still checks the
//! grant's claims against each stream. A per-tunnel shared key (HMAC grants) would be
//! cheaper still but would let a proxy mint grants, which the design rules out.

use std::collections::HashMap;
use std::sync::Mutex;

use adit_pki::{GrantClaims, PkiError, SigningKey};

/// What a grant authorizes: equal keys may share a grant.
type Key = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
);

fn key(c: &GrantClaims) -> Key {
    (
        c.ten.clone(),
        c.usr.clone(),
        c.sub.clone(),
        c.knd.clone(),
        c.tgt.clone(),
        c.ses.clone(),
        c.sxp,
    )
}

/// Grants kept at most; past it, expired ones are dropped, then all.
const MAX_GRANTS: usize = 4096;

/// Grants signed recently, by what they authorize.
#[derive(Debug, Default)]
pub struct SignedGrants(Mutex<HashMap<Key, (String, GrantClaims)>>);

impl SignedGrants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (String, GrantClaims)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A signed grant for what `claims` authorizes, valid for `ttl` seconds from `now`:
    /// the one signed earlier for the same authorization while more than half of `ttl`
    /// is left on it, else a new one (`claims`' `iat`, `exp` and `jti` are set here).
    pub fn get_or_sign(
        &self,
        signer: &SigningKey,
        mut claims: GrantClaims,
        ttl: i64,
        now: i64,
    ) -> Result<(String, GrantClaims), PkiError> {
        let key = key(&claims);
        if let Some((token, signed)) = self.lock().get(&key) {
            if signed.exp - now > ttl / 2 {
                return Ok((token.clone(), signed.clone()));
            }
        }
        claims.iat = now;
        claims.exp = now.saturating_add(ttl);
        claims.jti = uuid::Uuid::new_v4().to_string();
        let token = signer.sign(&claims)?;
        let mut map = self.lock();
        if map.len() >= MAX_GRANTS {
            map.retain(|_, (_, c)| c.exp > now);
            if map.len() >= MAX_GRANTS {
                map.clear();
            }
        }
        map.insert(key, (token.clone(), claims.clone()));
        Ok((token, claims))
    }

    /// Grants kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(tgt: &str) -> GrantClaims {
        GrantClaims {
            aud: adit_pki::AUD_GRANT.into(),
            iat: 0,
            exp: 0,
            jti: String::new(),
            ten: "t".into(),
            usr: "alice".into(),
            sub: "node".into(),
            knd: "tcp".into(),
            tgt: tgt.into(),
            ses: None,
            sxp: None,
        }
    }

    #[test]
    fn reused_for_the_same_authorization_while_half_its_life_is_left() {
        let signer = SigningKey::generate().unwrap();
        let grants = SignedGrants::default();
        let (first, c1) = grants
            .get_or_sign(&signer, claims("127.0.0.1:22"), 60, 1000)
            .unwrap();
        assert_eq!((c1.iat, c1.exp), (1000, 1060));
        let verified: GrantClaims = adit_pki::Jwks(vec![signer.verifying_key()])
            .verify_at(&first, adit_pki::AUD_GRANT, Some(1000))
            .unwrap();
        assert_eq!(verified, c1);

        let (again, c2) = grants
            .get_or_sign(&signer, claims("127.0.0.1:22"), 60, 1029)
            .unwrap();
        assert_eq!((again.as_str(), &c2), (first.as_str(), &c1), "reused");

        let (other, c3) = grants
            .get_or_sign(&signer, claims("127.0.0.1:80"), 60, 1029)
            .unwrap();
        assert_ne!(other, first, "another target, another grant");
        assert_eq!(c3.tgt, "127.0.0.1:80");
        let mut with_session = claims("127.0.0.1:22");
        with_session.ses = Some("s1".into());
        let (third, _) = grants.get_or_sign(&signer, with_session, 60, 1029).unwrap();
        assert_ne!(third, first, "another session, another grant");

        let (late, c4) = grants
            .get_or_sign(&signer, claims("127.0.0.1:22"), 60, 1030)
            .unwrap();
        assert_ne!(late, first, "half the lifetime used: a fresh grant");
        assert_eq!(c4.exp, 1090);
        assert_ne!(c4.jti, c1.jti);
    }
}
