//! adit-proto
