//! Binding resolution.
