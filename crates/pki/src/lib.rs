//! adit-pki
