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

use adit_pki::{GrantClaims, PkiError, SigningKey, Verified};

/// What a grant authorizes, as one unambiguous string: equal keys may share a grant.
fn key(c: &GrantClaims) -> String {
    serde_json::json!([c.ten, c.usr, c.sub, c.knd, c.tgt, c.ses, c.sxp]).to_string()
}

/// Grants signed recently, by what they authorize, each kept until half of its lifetime
/// is used (the bounded, expiring map of [`adit_pki::Verified`]).
#[derive(Debug, Default)]
pub struct SignedGrants(Verified<(String, GrantClaims)>);

impl SignedGrants {
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
        if let Some(signed) = self.0.get(&key, now) {
            return Ok(signed);
        }
        claims.iat = now;
        claims.exp = now.saturating_add(ttl);
        claims.jti = uuid::Uuid::new_v4().to_string();
        let token = signer.sign(&claims)?;
        let signed = (token, claims);
        // Reused while `exp - now > ttl / 2`, i.e. until `exp - ttl / 2`.
        self.0.insert(&key, &signed, signed.1.exp - ttl / 2, now);
        Ok(signed)
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
