//! Tokens whose signature was already verified, remembered until they expire.
//!
//! Verifying an ES256 signature is the costly part of checking a token; a client
//! that opens many streams presents the same access token each time, and the agent
//! sees the same grant for repeated streams of one user to one target. Only that pure
//! check (signature, audience, expiry) is remembered, keyed by SHA-256 of the whole
//! token, so a token that differs in any byte is verified afresh. Everything else a
//! caller checks (revocation, user state, the claims against the request) still runs
//! on every use.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

/// Verified tokens and their claims, until each token's `exp`.
pub struct Verified<C> {
    map: Mutex<HashMap<[u8; 32], (C, i64)>>,
    cap: usize,
}

/// Tokens remembered by default; past it, expired ones are dropped, then all.
pub const VERIFIED_CAPACITY: usize = 4096;

impl<C> std::fmt::Debug for Verified<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<C> Default for Verified<C> {
    fn default() -> Self {
        Self::new(VERIFIED_CAPACITY)
    }
}

impl<C> Verified<C> {
    /// Remembers at most `cap` tokens (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (C, i64)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C: Clone> Verified<C> {
    /// The claims of `token` if it was verified and `now` (unix seconds) is before its
    /// `exp`; an expired entry is dropped (the caller verifies again and gets the
    /// proper error).
    pub fn get(&self, token: &str, now: i64) -> Option<C> {
        let key = Self::key(token);
        let mut map = self.lock();
        match map.get(&key) {
            Some((claims, exp)) if now < *exp => Some(claims.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers that `token` verified with `claims`, valid until `exp`.
    pub fn insert(&self, token: &str, claims: &C, exp: i64, now: i64) {
        if now >= exp {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.cap {
            map.retain(|_, (_, e)| now < *e);
            if map.len() >= self.cap {
                map.clear();
            }
        }
        map.insert(Self::key(token), (claims.clone(), exp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_exp_and_only_the_same_token() {
        let v = Verified::<u32>::new(8);
        v.insert("a", &1, 100, 10);
        assert_eq!(v.get("a", 10), Some(1));
        assert_eq!(v.get("a", 99), Some(1));
        assert_eq!(v.get("a ", 10), None, "another token is not the same");
        assert_eq!(v.get("a", 100), None, "not at or past exp");
        assert!(v.is_empty(), "the expired entry was dropped");
        v.insert("b", &2, 50, 50);
        assert!(v.is_empty(), "an already expired token is not kept");
    }

    #[test]
    fn bounded() {
        let v = Verified::<u32>::new(4);
        for i in 0..4 {
            v.insert(&format!("t{i}"), &i, 10, 0);
        }
        assert_eq!(v.len(), 4);
        // Full of expired entries: they go first.
        v.insert("late", &9, 30, 20);
        assert_eq!(v.len(), 1);
        for i in 0..3 {
            v.insert(&format!("u{i}"), &i, 30, 20);
        }
        // Full of live entries: cleared, then the new one.
        v.insert("last", &7, 30, 20);
        assert_eq!(v.len(), 1);
        assert_eq!(v.get("last", 20), Some(7));
    }
}
