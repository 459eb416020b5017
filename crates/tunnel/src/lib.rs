//! adit-tunnel
