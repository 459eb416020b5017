//! adit-api
