//! adit-store
