//! Fuzzes what the CA does with a CSR at enrolment and renewal
//! (`CertificateAuthority::sign_node_csr`: size bound, PEM, DER, key algorithm,
//! self-signature), and the certificate readers the server applies to a peer's client
//! certificate (`node_id_from_cert_der`, `serial_hex_from_cert_der`,
//! `not_after_from_cert_der`).
//!
//! The input is tried as PEM text (as it arrives in an enrolment body) and, wrapped in
//! a `CERTIFICATE REQUEST` PEM block, as DER bytes; the DER bytes are also read as a
//! certificate. Seeds are real CSRs made with rcgen (`make_csr`), in both forms.
//!
//! Checked: nothing panics; a CSR the CA signs yields a certificate that the readers
//! parse back to the node id, serial and expiry the CA reported, and that carries the
//! CSR's own public key.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use adit_pki::{
    node_id_from_cert_der, not_after_from_cert_der, serial_hex_from_cert_der, CertificateAuthority,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::prelude::FromDer;

const NODE_ID: &str = "node-fuzz-1";
const TTL: Duration = Duration::from_secs(3600);

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("Adit fuzz CA").expect("CA generation"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn sign_and_check(csr_pem: &str) {
    let Ok(issued) = ca().sign_node_csr(csr_pem, NODE_ID, TTL) else {
        return;
    };
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .expect("issued certificate is PEM");
    assert_eq!(node_id_from_cert_der(&der).expect("node id"), NODE_ID);
    assert_eq!(
        serial_hex_from_cert_der(&der).expect("serial"),
        issued.serial
    );
    assert_eq!(
        not_after_from_cert_der(&der).expect("expiry"),
        issued.not_after
    );

    // The certificate is for the key that signed the CSR, nothing else.
    // Read the CSR as the CA does (the PEM decoder tolerates missing base64 padding,
    // and bytes after the DER structure are ignored).
    let csr_der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .expect("an accepted CSR is PEM");
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
        .expect("an accepted CSR parses");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("issued certificate parses");
    assert_eq!(
        cert.public_key().subject_public_key.data,
        csr.certification_request_info
            .subject_pki
            .subject_public_key
            .data,
        "issued for another key"
    );
}

fn read_cert(der: &[u8]) {
    let id = node_id_from_cert_der(der);
    let serial = serial_hex_from_cert_der(der);
    let _ = not_after_from_cert_der(der);
    if let Ok(id) = id {
        adit_pki::validate_node_id(&id).expect("a node id read from a certificate is valid");
    }
    if let Ok(serial) = serial {
        assert!(serial.bytes().all(|b| b.is_ascii_hexdigit()), "{serial:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        sign_and_check(text);
    }
    sign_and_check(&pem("CERTIFICATE REQUEST", data));
    read_cert(data);
});
