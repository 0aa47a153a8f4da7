//! HMAC of synced data.
