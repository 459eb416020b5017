//! TLS 1.3 session tickets whose keys outlive the process.
//!
//! Why: after a server restart every agent of the fleet reconnects at once, and a full
//! TLS 1.3 handshake with client certificates costs both sides a signature and two
//! verifications each. A ticket lets a returning agent resume instead (still with a fresh
//! ECDHE exchange: rustls resumes only in `psk_dhe_ke` mode, so traffic stays forward
//! secret). The keys that seal the tickets are kept by the caller (the server writes
//! [`TicketKeys::to_text`] to its data directory, mode 0600), so tickets issued before a
//! restart still open after it.
//!
//! A resumed connection carries the client certificate chain of the handshake that issued
//! the ticket ([`rustls::CommonState::peer_certificates`]); whoever admits the peer must
//! still check revocation and expiry of that certificate, as for a full handshake.
//!
//! Keys rotate: [`TicketKeys::rotate_if_older`] makes a new current key and keeps the
//! previous one for opening tickets only. A ticket lives [`TICKET_LIFETIME_SECS`] (it
//! carries its issue time under the seal, checked when it is opened), less than
//! [`TICKET_KEY_ROTATE_SECS`], so every ticket still within its lifetime was sealed by one
//! of the two keys kept.

use std::fmt;
use std::sync::RwLock;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::{PkiError, Result, Secret};

/// How long a client may use a ticket (seconds).
pub const TICKET_LIFETIME_SECS: u32 = 10 * 3600;
/// Age (seconds) at which the current ticket key is replaced.
pub const TICKET_KEY_ROTATE_SECS: u64 = 12 * 3600;

const HEADER: &str = "adit-ticket-keys v1";
const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// Largest ticket [`TicketKeys`] opens: a session value holds the client's certificate
/// chain (an Adit node certificate is well under 2 KiB); anything longer is refused
/// before decryption.
const MAX_TICKET_LEN: usize = 16 * 1024;

/// The ticket-sealing keys of a server: the current one and, after a rotation, the
/// previous one. Implements [`ProducesTickets`] for `rustls::ServerConfig::ticketer`.
pub struct TicketKeys {
    keys: RwLock<Keys>,
}

struct Keys {
    current: TicketKey,
    previous: Option<TicketKey>,
}

struct TicketKey {
    created: u64,
    name: [u8; NAME_LEN],
    raw: [u8; KEY_LEN],
    key: LessSafeKey,
}

// === impl TicketKeys ===

impl TicketKeys {
    /// A fresh set with one key, created at `now` (unix seconds).
    pub fn generate(now: u64) -> Result<Self> {
        Ok(Self {
            keys: RwLock::new(Keys {
                current: TicketKey::generate(now)?,
                previous: None,
            }),
        })
    }

    /// Parses what [`TicketKeys::to_text`] wrote.
    pub fn from_text(text: &str) -> Result<Self> {
        let bad = |reason: &str| PkiError::InvalidKey {
            what: "ticket key file",
            reason: reason.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(&format!("the first line is not {HEADER:?}")));
        }
        let mut keys = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            keys.push(TicketKey::parse(line).map_err(|r| bad(&r))?);
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or_else(|| bad("it holds no key"))?;
        let previous = keys.next();
        if keys.next().is_some() {
            return Err(bad("it holds more than two keys"));
        }
        Ok(Self {
            keys: RwLock::new(Keys { current, previous }),
        })
    }

    /// The keys as text, to be stored where only the server can read them.
    pub fn to_text(&self) -> Secret {
        let keys = self.read();
        let mut out = format!("{HEADER}\n{}\n", keys.current.line());
        if let Some(p) = &keys.previous {
            out.push_str(&p.line());
            out.push('\n');
        }
        Secret::new(out)
    }

    /// Replaces the current key with a new one (keeping it as the previous key) when it
    /// was created `max_age` seconds or more before `now`, or in the future (a clock
    /// that went back). True if it rotated: store [`TicketKeys::to_text`] again.
    pub fn rotate_if_older(&self, now: u64, max_age: u64) -> Result<bool> {
        let fresh = {
            let keys = self.read();
            keys.current.created <= now && now - keys.current.created < max_age
        };
        if fresh {
            return Ok(false);
        }
        let new = TicketKey::generate(now)?;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut keys.current, new);
        keys.previous = Some(old);
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.read();
        f.debug_struct("TicketKeys")
            .field("current_created", &keys.current.created)
            .field("previous", &keys.previous.as_ref().map(|k| k.created))
            .finish_non_exhaustive()
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, unix_now())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.open(ticket, unix_now())
    }
}

fn unix_now() -> u64 {
    crate::now_unix().max(0) as u64
}

impl TicketKeys {
    /// `name ‖ nonce ‖ ChaCha20-Poly1305(issued_at ‖ plain, aad = name) ‖ tag`, with a
    /// random nonce and `issued_at` = `now` (8 bytes, big-endian).
    fn seal(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let keys = self.read();
        let k = &keys.current;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + 8 + plain.len() + 16);
        out.extend_from_slice(&k.name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&now.to_be_bytes());
        out.extend_from_slice(plain);
        let tag = k
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(k.name),
                &mut out[NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// The session value in `ticket`, if one of the keys sealed it and it was issued
    /// less than [`TICKET_LIFETIME_SECS`] before `now` (rustls itself only compares the
    /// client's idea of the ticket's age with its own).
    fn open(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET_LEN || ticket.len() < NAME_LEN + NONCE_LEN + 8 + 16 {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.read();
        let k = std::iter::once(&keys.current)
            .chain(keys.previous.as_ref())
            .find(|k| crate::ct_eq(&k.name, name))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let len = k
            .key
            .open_in_place(nonce, Aad::from(k.name), &mut buf)
            .ok()?
            .len();
        buf.truncate(len);
        let issued = u64::from_be_bytes(buf.get(..8)?.try_into().ok()?);
        // A minute of leeway for a clock that stepped back.
        let fresh = issued <= now.saturating_add(60)
            && now.saturating_sub(issued) < u64::from(TICKET_LIFETIME_SECS);
        fresh.then(|| buf.split_off(8))
    }
}

// === impl TicketKey ===

impl TicketKey {
    fn generate(created: u64) -> Result<Self> {
        let rng = SystemRandom::new();
        let (mut name, mut raw) = ([0u8; NAME_LEN], [0u8; KEY_LEN]);
        rng.fill(&mut name).map_err(|_| PkiError::Random)?;
        rng.fill(&mut raw).map_err(|_| PkiError::Random)?;
        Self::new(created, name, raw)
    }

    fn new(created: u64, name: [u8; NAME_LEN], raw: [u8; KEY_LEN]) -> Result<Self> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw).map_err(|_| PkiError::InvalidKey {
            what: "ticket key",
            reason: "not a ChaCha20-Poly1305 key".into(),
        })?;
        Ok(Self {
            created,
            name,
            raw,
            key: LessSafeKey::new(key),
        })
    }

    /// `CREATED NAME-HEX KEY-HEX`
    fn line(&self) -> String {
        format!(
            "{} {} {}",
            self.created,
            hex::encode(self.name),
            hex::encode(self.raw)
        )
    }

    fn parse(line: &str) -> std::result::Result<Self, String> {
        let mut parts = line.split_ascii_whitespace();
        let (Some(created), Some(name), Some(raw), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a key line is not `CREATED NAME KEY`".into());
        };
        let created = created
            .parse()
            .map_err(|_| "a key's creation time is not a number".to_owned())?;
        let mut n = [0u8; NAME_LEN];
        hex::decode_to_slice(name, &mut n)
            .map_err(|_| format!("a key name is not {NAME_LEN} bytes of hex"))?;
        let mut k = [0u8; KEY_LEN];
        hex::decode_to_slice(raw, &mut k)
            .map_err(|_| format!("a key is not {KEY_LEN} bytes of hex"))?;
        Self::new(created, n, k).map_err(|e| e.to_string())
    }
}

const _: () = assert!((TICKET_LIFETIME_SECS as u64) < TICKET_KEY_ROTATE_SECS);
// The AEAD whose tag length the size checks above assume.
const _: () = assert!(aead::MAX_TAG_LEN == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tickets_open_after_a_round_trip_through_text() {
        let keys = TicketKeys::generate(1_000).unwrap();
        let ticket = keys.encrypt(b"session value").unwrap();
        let again = TicketKeys::from_text(keys.to_text().expose()).unwrap();
        assert_eq!(again.decrypt(&ticket).unwrap(), b"session value");
        // A fresh set (a server that lost its file) cannot open it.
        assert!(TicketKeys::generate(1_000)
            .unwrap()
            .decrypt(&ticket)
            .is_none());
    }

    #[test]
    fn rotation_keeps_the_previous_key_for_opening_only() {
        let keys = TicketKeys::generate(1_000).unwrap();
        let old = keys.encrypt(b"old").unwrap();
        assert!(!keys
            .rotate_if_older(1_000 + TICKET_KEY_ROTATE_SECS - 1, TICKET_KEY_ROTATE_SECS)
            .unwrap());
        assert!(keys
            .rotate_if_older(1_000 + TICKET_KEY_ROTATE_SECS, TICKET_KEY_ROTATE_SECS)
            .unwrap());
        let new = keys.encrypt(b"new").unwrap();
        assert_ne!(
            old[..NAME_LEN],
            new[..NAME_LEN],
            "a new key seals new tickets"
        );
        let reloaded = TicketKeys::from_text(keys.to_text().expose()).unwrap();
        assert_eq!(reloaded.decrypt(&old).unwrap(), b"old");
        assert_eq!(reloaded.decrypt(&new).unwrap(), b"new");
        // A second rotation drops the first key.
        assert!(keys
            .rotate_if_older(1_000 + 2 * TICKET_KEY_ROTATE_SECS, TICKET_KEY_ROTATE_SECS)
            .unwrap());
        assert!(keys.decrypt(&old).is_none());
        assert_eq!(keys.decrypt(&new).unwrap(), b"new");
        // A key from the future (the clock went back) is replaced too.
        assert!(keys.rotate_if_older(10, TICKET_KEY_ROTATE_SECS).unwrap());
    }

    #[test]
    fn tickets_open_only_within_their_lifetime() {
        let keys = TicketKeys::generate(1_000).unwrap();
        let t0 = 1_000_000;
        let ticket = keys.seal(b"v", t0).unwrap();
        assert_eq!(keys.open(&ticket, t0).unwrap(), b"v");
        let life = u64::from(TICKET_LIFETIME_SECS);
        assert_eq!(keys.open(&ticket, t0 + life - 1).unwrap(), b"v");
        assert!(keys.open(&ticket, t0 + life).is_none(), "expired");
        assert!(
            keys.open(&ticket, t0 - 61).is_none(),
            "issued in the future"
        );
        assert!(keys.open(&ticket, t0 - 60).is_some(), "a minute of leeway");
    }

    #[test]
    fn tampered_truncated_or_oversized_tickets_are_refused() {
        let keys = TicketKeys::generate(1).unwrap();
        let ticket = keys.encrypt(b"value").unwrap();
        for i in [0, NAME_LEN, NAME_LEN + NONCE_LEN, ticket.len() - 1] {
            let mut t = ticket.clone();
            t[i] ^= 1;
            assert!(keys.decrypt(&t).is_none(), "flipped byte {i}");
        }
        assert!(keys.decrypt(&ticket[..ticket.len() - 1]).is_none());
        assert!(keys.decrypt(&ticket[..NAME_LEN + NONCE_LEN]).is_none());
        assert!(keys.decrypt(&[]).is_none());
        assert!(keys.decrypt(&vec![0u8; MAX_TICKET_LEN + 1]).is_none());
    }

    #[test]
    fn malformed_key_files_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "first line"),
            ("adit-ticket-keys v1\n", "no key"),
            ("adit-ticket-keys v1\n1 00 11\n", "16 bytes"),
            ("adit-ticket-keys v1\nx aa bb\n", "creation time"),
            ("adit-ticket-keys v1\n1 2\n", "CREATED NAME KEY"),
        ] {
            let e = TicketKeys::from_text(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let one = TicketKeys::generate(5).unwrap().to_text();
        let line = one.expose().lines().nth(1).unwrap();
        let three = format!("{HEADER}\n{line}\n{line}\n{line}\n");
        assert!(TicketKeys::from_text(&three)
            .unwrap_err()
            .to_string()
            .contains("more than two"));
        assert!(
            !format!("{:?}", TicketKeys::from_text(one.expose()).unwrap()).contains(&line[2..])
        );
    }
}
