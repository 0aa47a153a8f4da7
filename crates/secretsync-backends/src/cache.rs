//! Shared per-source read cache with request coalescing.
/// Placeholder until the cache lands.
pub struct SourceCache;
/// Counters.
pub struct CacheStats;
