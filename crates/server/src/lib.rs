//! adit-server
