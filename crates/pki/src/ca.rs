//! The built-in certificate authority: issues short-lived node (client) certificates from
//! CSRs and server certificates for the control plane's TLS endpoint.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::{CaPin, PkiError, Result, Secret};

/// URI SAN prefix that carries a node's identity: `adit://node/<node_id>`.
pub const NODE_URI_PREFIX: &str = "adit://node/";

/// CSRs larger than this are refused before parsing; a P-256 CSR is well under 1 KiB.
const MAX_CSR_PEM_LEN: usize = 16 * 1024;

/// Node ids become part of a URI SAN and a CN; keep them to a safe, bounded alphabet.
const MAX_NODE_ID_LEN: usize = 128;

/// Lifetime of a generated CA certificate.
const CA_LIFETIME: time::Duration = time::Duration::days(3650);

/// Certificates start an hour in the past, so that a peer whose clock is behind (a device
/// before its first NTP sync) still accepts a certificate issued just now.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Upper bound on any leaf lifetime, to catch unit mistakes (seconds vs days).
const MAX_LEAF_TTL: Duration = Duration::from_secs(5 * 366 * 24 * 3600);

/// A certificate issued by the [`CertificateAuthority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The leaf certificate alone, PEM encoded.
    pub cert_pem: String,
    /// Serial number, lowercase hex without leading zero bytes; equals
    /// [`serial_hex_from_cert_der`] of the same certificate.
    pub serial: String,
    /// End of validity (second precision, as encoded in the certificate).
    pub not_after: OffsetDateTime,
}

/// The Adit certificate authority (ECDSA P-256).
///
/// Holds the CA certificate exactly as generated (for distribution and pinning) and the
/// signing key. Load with [`CertificateAuthority::from_pem`], persist with
/// [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem).
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    /// rcgen's view of the CA, used only as issuer (subject DN, key identifier); its own
    /// DER is never distributed, because re-signing would change the certificate.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// Generates a new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Adit");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial()?.0);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: cert,
            key,
        })
    }

    /// Loads a CA from its certificate and private key PEM.
    ///
    /// The certificate is kept byte for byte; leaves issued afterwards chain to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::Pem {
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        let (_, x509) =
            X509Certificate::from_der(&cert_der).map_err(|e| PkiError::InvalidCertificate {
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        if !x509.is_ca() {
            return Err(PkiError::InvalidCertificate {
                what: "CA certificate",
                reason: "basic constraints do not mark it as a CA".into(),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey {
            what: "CA private key",
            reason: e.to_string(),
        })?;
        if x509.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::CaKeyMismatch);
        }
        let params = CertificateParams::from_ca_cert_der(&cert_der)?;
        // Signing the parsed params again yields an issuer with the same subject DN, key and
        // key identifier as the original, which is all chain building looks at.
        let issuer = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            cert_der: cert_der.to_vec(),
            issuer,
            key,
        })
    }

    /// The CA certificate, PEM encoded, exactly as generated.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Secret {
        Secret::new(self.key.serialize_pem())
    }

    /// The pin agents use to recognise this CA on first contact.
    pub fn pin(&self) -> CaPin {
        CaPin::of_der(&self.cert_der)
    }

    /// `leaf_pem` followed by the CA certificate: what a TLS server should present so that
    /// pinned first-contact clients ([`crate::pinned_client_config`]) find the CA.
    pub fn chain_pem(&self, leaf_pem: &str) -> String {
        let mut out = leaf_pem.trim_end().to_owned();
        out.push('\n');
        out.push_str(&self.cert_pem);
        out
    }

    /// Issues a node (TLS client) certificate for the key in `csr_pem`.
    ///
    /// The CSR's signature is verified (proof of possession) and its key must be ECDSA
    /// P-256. Everything else it asks for is ignored: the certificate gets CN = `node_id`,
    /// the single SAN URI `adit://node/<node_id>`, EKU clientAuth only, no CA rights, and
    /// validity from one minute ago until `now + ttl`.
    pub fn sign_node_csr(&self, csr_pem: &str, node_id: &str, ttl: Duration) -> Result<IssuedCert> {
        validate_node_id(node_id)?;
        let (not_before, not_after) = validity(ttl)?;
        let csr_der = p256_csr_der(csr_pem)?;
        let csr = CertificateSigningRequestParams::from_der(&csr_der).map_err(|e| match e {
            rcgen::Error::RingUnspecified => PkiError::InvalidCsr {
                reason: "signature does not verify (tampered CSR or wrong key)".into(),
            },
            other => PkiError::InvalidCsr {
                reason: other.to_string(),
            },
        })?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::UnsupportedKeyAlgorithm {
                found: "CSR not signed with ecdsa-with-SHA256".into(),
            });
        }

        let (serial, serial_hex) = random_serial()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("{NODE_URI_PREFIX}{node_id}")
                .try_into()
                .map_err(|_| PkiError::InvalidNodeId {
                    id: node_id.into(),
                    reason: "cannot be encoded in a URI",
                })?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(&csr.public_key, &self.issuer, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_after,
        })
    }

    /// Issues a TLS server certificate and a fresh P-256 key for it.
    ///
    /// Each name becomes an IP address SAN if it parses as one, otherwise a DNS SAN. The
    /// first name is also the CN. EKU is serverAuth only.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        ttl: Duration,
    ) -> Result<(IssuedCert, Secret)> {
        if names.is_empty() {
            return Err(PkiError::InvalidServerName {
                name: String::new(),
                reason: "at least one DNS name or IP address is required".into(),
            });
        }
        let (not_before, not_after) = validity(ttl)?;
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    rustls::pki_types::DnsName::try_from(name.as_str()).map_err(|e| {
                        PkiError::InvalidServerName {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    SanType::DnsName(name.as_str().try_into().map_err(|e: rcgen::Error| {
                        PkiError::InvalidServerName {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?)
                }
            };
            sans.push(san);
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (serial, serial_hex) = random_serial()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok((
            IssuedCert {
                cert_pem: cert.pem(),
                serial: serial_hex,
                not_after,
            },
            Secret::new(key.serialize_pem()),
        ))
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("pin", &self.pin())
            .field("key", &"***")
            .finish()
    }
}

// === certificate inspection ===

/// The node id a certificate was issued for: the `adit://node/<id>` URI SAN, or the
/// subject CN when there is no such SAN.
pub fn node_id_from_cert_der(der: &[u8]) -> Result<String> {
    let x509 = parse_cert(der)?;
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
                    validate_node_id(id)?;
                    return Ok(id.to_owned());
                }
            }
        }
    }
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(PkiError::NoNodeIdentity)?;
    validate_node_id(cn)?;
    Ok(cn.to_owned())
}

/// The certificate's serial number as lowercase hex without leading zero bytes (the same
/// form as [`IssuedCert::serial`]).
pub fn serial_hex_from_cert_der(der: &[u8]) -> Result<String> {
    let x509 = parse_cert(der)?;
    Ok(serial_hex(x509.raw_serial()))
}

/// The certificate's `notAfter`.
pub fn not_after_from_cert_der(der: &[u8]) -> Result<OffsetDateTime> {
    let x509 = parse_cert(der)?;
    Ok(x509.validity().not_after.to_datetime())
}

/// Checks that `id` may be used as a node id: 1 to 128 characters from
/// `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_node_id(id: &str) -> Result<()> {
    let err = |reason| {
        Err(PkiError::InvalidNodeId {
            id: id.chars().take(MAX_NODE_ID_LEN).collect(),
            reason,
        })
    };
    if id.is_empty() {
        return err("must not be empty");
    }
    if id.len() > MAX_NODE_ID_LEN {
        return err("longer than 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return err("only letters, digits, '.', '_' and '-' are allowed");
    }
    if id.starts_with(['.', '-']) {
        return err("must not start with '.' or '-'");
    }
    Ok(())
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (_, x509) = X509Certificate::from_der(der).map_err(|e| PkiError::InvalidCertificate {
        what: "certificate",
        reason: e.to_string(),
    })?;
    Ok(x509)
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

/// A positive 128-bit serial whose first byte is non-zero, so the DER integer needs no
/// padding and its hex form is unambiguous.
fn random_serial() -> Result<(SerialNumber, String)> {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

fn validity(ttl: Duration) -> Result<(OffsetDateTime, OffsetDateTime)> {
    if ttl < Duration::from_secs(1) {
        return Err(PkiError::InvalidTtl {
            reason: "must be at least one second",
        });
    }
    if ttl > MAX_LEAF_TTL {
        return Err(PkiError::InvalidTtl {
            reason: "must be at most five years",
        });
    }
    // Certificates encode whole seconds; truncate so `IssuedCert::not_after` equals what
    // `not_after_from_cert_der` reads back.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|_| PkiError::InvalidTtl {
            reason: "clock out of range",
        })?;
    let ttl = time::Duration::seconds(ttl.as_secs() as i64);
    Ok((now - BACKDATE, now + ttl))
}

/// The SHA-256 (`sha256:HEX`) of the P-256 public key in `csr_pem` (the uncompressed
/// point): names the key a node enrolled with, so that a retried enrolment with the same
/// key can be told from another device taking the name. Does not verify the CSR's
/// signature; [`CertificateAuthority::sign_node_csr`] does.
pub fn csr_key_fingerprint(csr_pem: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    let csr_der = p256_csr_der(csr_pem)?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
        .map_err(|e| PkiError::InvalidCsr {
            reason: format!("cannot parse DER: {e}"),
        })?;
    let point = &csr
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(point))))
}

/// The DER of `csr_pem`, bounded in size before parsing, whose key is ECDSA P-256.
fn p256_csr_der(csr_pem: &str) -> Result<CertificateSigningRequestDer<'static>> {
    if csr_pem.len() > MAX_CSR_PEM_LEN {
        return Err(PkiError::CsrTooLarge {
            len: csr_pem.len(),
            max: MAX_CSR_PEM_LEN,
        });
    }
    let csr_der =
        CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
            PkiError::InvalidCsr {
                reason: format!("not a PEM `CERTIFICATE REQUEST`: {e}"),
            }
        })?;
    check_csr_key_is_p256(&csr_der)?;
    Ok(csr_der)
}

fn check_csr_key_is_p256(csr_der: &[u8]) -> Result<()> {
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(
        csr_der,
    )
    .map_err(|e| PkiError::InvalidCsr {
        reason: format!("cannot parse DER: {e}"),
    })?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCsr {
            reason: format!("{} bytes of trailing data after the CSR", rest.len()),
        });
    }
    let spki = &csr.certification_request_info.subject_pki;
    let is_ec = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let is_p256 = curve.as_ref() == Some(&OID_EC_P256);
    let point = &spki.subject_public_key.data;
    if !is_ec || !is_p256 || point.len() != 65 || point.first() != Some(&0x04) {
        return Err(PkiError::UnsupportedKeyAlgorithm {
            found: match (is_ec, curve) {
                (true, Some(oid)) => format!("EC key on curve {oid}"),
                (true, None) => "EC key without named curve".into(),
                (false, _) => format!("key type {}", spki.algorithm.algorithm),
            },
        });
    }
    Ok(())
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn csr_key_fingerprint_names_the_key_not_the_request() {
        let key = crate::generate_node_key().unwrap();
        let a = crate::make_csr(key.expose(), "a").unwrap();
        let b = crate::make_csr(key.expose(), "b").unwrap();
        let other = crate::make_csr(crate::generate_node_key().unwrap().expose(), "a").unwrap();
        let fp = super::csr_key_fingerprint(&a).unwrap();
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
        assert_eq!(
            fp,
            super::csr_key_fingerprint(&b).unwrap(),
            "same key, other CSR"
        );
        assert_ne!(fp, super::csr_key_fingerprint(&other).unwrap());
        assert!(super::csr_key_fingerprint("not a csr").is_err());
    }

    use super::*;
    use crate::{generate_node_key, make_csr};

    const HOUR: Duration = Duration::from_secs(3600);

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn node_csr(name: &str) -> String {
        let key = generate_node_key().unwrap();
        make_csr(key.expose(), name).unwrap()
    }

    #[test]
    fn generated_ca_shape() {
        let ca = CertificateAuthority::generate("Adit test CA").unwrap();
        let (_, x509) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert!(x509.is_ca());
        let ku = x509.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let life = x509.validity().not_after.to_datetime() - OffsetDateTime::now_utc();
        assert!(life > time::Duration::days(3640), "{life}");
        assert_eq!(ca.pin(), CaPin::of_der(&der_of(ca.cert_pem())));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        assert!(ca.key_pem().expose().contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn node_cert_ignores_csr_names_and_extensions() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        // A CSR asking for everything it should not get.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI("adit://node/admin".try_into().unwrap()));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "evil");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        let issued = ca.sign_node_csr(&csr, "node-42", HOUR).unwrap();
        let der = der_of(&issued.cert_pem);
        let (_, x509) = X509Certificate::from_der(&der).unwrap();

        let cn: Vec<_> = x509.subject().iter_common_name().collect();
        assert_eq!(cn.len(), 1);
        assert_eq!(cn[0].as_str().unwrap(), "node-42");
        let sans = &x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans, &vec![GeneralName::URI("adit://node/node-42")]);
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty());
        assert!(!x509.is_ca());
        let ku = x509.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        // The certificate is for the CSR's key, not some other key.
        assert_eq!(x509.public_key().raw, key.public_key_der().as_slice());
        assert_eq!(
            x509.issuer(),
            X509Certificate::from_der(ca.cert_der())
                .unwrap()
                .1
                .subject()
        );

        assert_eq!(node_id_from_cert_der(&der).unwrap(), "node-42");
        assert_eq!(serial_hex_from_cert_der(&der).unwrap(), issued.serial);
        assert_eq!(issued.serial.len(), 32);
        assert_eq!(not_after_from_cert_der(&der).unwrap(), issued.not_after);
        let now = OffsetDateTime::now_utc();
        let nb = x509.validity().not_before.to_datetime();
        assert!(nb < now - time::Duration::minutes(59) && nb > now - time::Duration::minutes(61));
        let remaining = issued.not_after - now;
        assert!(remaining > time::Duration::minutes(59) && remaining <= time::Duration::hours(1));
    }

    #[test]
    fn serials_are_unique() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let csr = node_csr("n");
        let a = ca.sign_node_csr(&csr, "n", HOUR).unwrap();
        let b = ca.sign_node_csr(&csr, "n", HOUR).unwrap();
        assert_ne!(a.serial, b.serial);
    }

    #[test]
    fn oversize_csr_rejected_before_parsing() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let mut csr = node_csr("n");
        csr.push_str(&" ".repeat(16 * 1024));
        let err = ca.sign_node_csr(&csr, "n", HOUR).unwrap_err();
        assert!(
            matches!(err, PkiError::CsrTooLarge { max: 16384, .. }),
            "{err}"
        );
    }

    #[test]
    fn tampered_csr_rejected() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let csr = node_csr("evil");
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .to_vec();
        let at = der.windows(4).position(|w| w == b"evil").unwrap();
        der[at + 3] = b'm';
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = ca.sign_node_csr(&tampered, "n", HOUR).unwrap_err();
        assert!(matches!(err, PkiError::InvalidCsr { .. }), "{err}");
        assert!(err.to_string().contains("signature"), "{err}");

        for garbage in [
            "",
            "not a csr",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            let err = ca.sign_node_csr(garbage, "n", HOUR).unwrap_err();
            assert!(matches!(err, PkiError::InvalidCsr { .. }), "{err}");
        }
    }

    #[test]
    fn non_p256_csr_rejected() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr = CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            let err = ca.sign_node_csr(&csr, "n", HOUR).unwrap_err();
            assert!(
                matches!(err, PkiError::UnsupportedKeyAlgorithm { .. }),
                "{err}"
            );
            // make_csr refuses such keys up front, too.
            assert!(make_csr(&key.serialize_pem(), "n").is_err());
        }
    }

    #[test]
    fn bad_node_ids_and_ttls_rejected() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let csr = node_csr("n");
        for id in ["", "a/b", "a b", "../x", "-x", "é", &"a".repeat(129)] {
            assert!(
                matches!(
                    ca.sign_node_csr(&csr, id, HOUR),
                    Err(PkiError::InvalidNodeId { .. })
                ),
                "{id:?}"
            );
        }
        assert!(ca
            .sign_node_csr(&csr, "0f1e2d3c-uuid_like.v1", HOUR)
            .is_ok());
        assert!(matches!(
            ca.sign_node_csr(&csr, "n", Duration::ZERO),
            Err(PkiError::InvalidTtl { .. })
        ));
        assert!(matches!(
            ca.sign_node_csr(&csr, "n", Duration::from_secs(u64::MAX)),
            Err(PkiError::InvalidTtl { .. })
        ));
    }

    #[test]
    fn server_cert_sans() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let names = vec![
            "adit.example.com".to_string(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        let (issued, key) = ca.issue_server_cert(&names, HOUR).unwrap();
        assert!(key.expose().contains("PRIVATE KEY"));
        let der = der_of(&issued.cert_pem);
        let (_, x509) = X509Certificate::from_der(&der).unwrap();
        let sans = &x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans.len(), 3);
        assert_eq!(sans[0], GeneralName::DNSName("adit.example.com"));
        assert_eq!(sans[1], GeneralName::IPAddress(&[127, 0, 0, 1]));
        assert!(matches!(sans[2], GeneralName::IPAddress(ip) if ip.len() == 16));
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(serial_hex_from_cert_der(&der).unwrap(), issued.serial);

        assert!(ca.issue_server_cert(&[], HOUR).is_err());
        assert!(matches!(
            ca.issue_server_cert(&["bad name!".to_string()], HOUR),
            Err(PkiError::InvalidServerName { .. })
        ));
    }

    #[test]
    fn reload_checks_key_and_keeps_cert() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem().expose()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        assert_eq!(again.pin(), ca.pin());

        let other = CertificateAuthority::generate("ca").unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem().expose()),
            Err(PkiError::CaKeyMismatch)
        ));
        // A leaf is not a CA.
        let leaf = ca.sign_node_csr(&node_csr("n"), "n", HOUR).unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(&leaf.cert_pem, ca.key_pem().expose()),
            Err(PkiError::InvalidCertificate { .. })
        ));
        assert!(CertificateAuthority::from_pem("junk", ca.key_pem().expose()).is_err());
        assert!(CertificateAuthority::from_pem(ca.cert_pem(), "junk").is_err());
    }

    #[test]
    fn node_id_falls_back_to_cn() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        // The server cert has no adit:// URI; its CN is the first name.
        let (issued, _) = ca
            .issue_server_cert(&["host-1.example".to_string()], HOUR)
            .unwrap();
        assert_eq!(
            node_id_from_cert_der(&der_of(&issued.cert_pem)).unwrap(),
            "host-1.example"
        );
        assert!(node_id_from_cert_der(b"garbage").is_err());
    }
}
