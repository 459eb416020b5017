//! adit-agent
