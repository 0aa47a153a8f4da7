//! Shared per-source read cache with request coalescing.
//!
//! Every binding of a source reads through one [`SourceCache`]. A value read less than
//! `ttl` ago is served from memory; concurrent reads of a key that is being fetched join
//! the in-flight request instead of starting another, so N bindings sharing a key cause
//! one backend request per refresh. Misses of one call are fetched with one
//! [`Backend::read_batch`], which AWS turns into `BatchGetSecretValue`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secretsync_api::BackendKind;

use crate::{Backend, BackendError, ReadRequest, SecretValue};

/// Receives per-request measurements (the controller turns them into metrics).
pub trait CacheObserver: Send + Sync {
    /// One backend call finished. `result` is `success` or a [`crate::Reason`] string.
    fn backend_request(
        &self,
        backend: BackendKind,
        operation: &'static str,
        result: &'static str,
        elapsed: Duration,
    );
    /// Reads served from memory or joined to an in-flight request.
    fn cache_hits(&self, backend: BackendKind, n: u64);
    /// Reads that needed a backend request.
    fn cache_misses(&self, backend: BackendKind, n: u64);
}

/// Observer that records nothing.
pub struct NoopObserver;

impl CacheObserver for NoopObserver {
    fn backend_request(&self, _: BackendKind, _: &'static str, _: &'static str, _: Duration) {}
    fn cache_hits(&self, _: BackendKind, _: u64) {}
    fn cache_misses(&self, _: BackendKind, _: u64) {}
}

/// Counters of one cache, for tests and debugging.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory or joined to an in-flight fetch.
    pub hits: u64,
    /// Reads that needed a fetch.
    pub misses: u64,
    /// Backend calls made (a batch counts once).
    pub backend_calls: u64,
}

#[derive(Clone)]
struct Fetched {
    value: Arc<SecretValue>,
    at: Instant,
}

type FetchResult = Result<Fetched, BackendError>;
type Fetch = Shared<BoxFuture<'static, FetchResult>>;

/// How often (in inserted entries) expired entries are swept out.
const SWEEP_EVERY: u64 = 1024;

/// The cache in front of one source's backend.
pub struct SourceCache {
    backend: Arc<dyn Backend>,
    ttl: Duration,
    entries: Mutex<HashMap<ReadRequest, Fetch>>,
    observer: Arc<dyn CacheObserver>,
    hits: AtomicU64,
    misses: AtomicU64,
    backend_calls: Arc<AtomicU64>,
    inserts: AtomicU64,
}

impl SourceCache {
    /// A cache over `backend`; `ttl` zero disables reuse of finished reads (in-flight
    /// reads are still shared).
    pub fn new(backend: Arc<dyn Backend>, ttl: Duration, observer: Arc<dyn CacheObserver>) -> Self {
        SourceCache {
            backend,
            ttl,
            entries: Mutex::new(HashMap::new()),
            observer,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            backend_calls: Arc::new(AtomicU64::new(0)),
            inserts: AtomicU64::new(0),
        }
    }

    /// The backend behind the cache.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            backend_calls: self.backend_calls.load(Ordering::Relaxed),
        }
    }

    /// Reads one key.
    pub async fn get(&self, req: &ReadRequest, bypass: bool) -> Result<SecretValue, BackendError> {
        self.get_many(std::slice::from_ref(req), bypass)
            .await
            .pop()
            // One request in, one result out: the batch contract of `get_many`.
            .unwrap_or_else(|| Err(BackendError::unavailable("empty batch result")))
    }

    /// Reads several keys: fresh cached values and in-flight fetches are shared, the rest
    /// are fetched with one batch call. `bypass` ignores finished cached values (force-sync)
    /// but still joins in-flight fetches, which are fresh by definition.
    pub async fn get_many(
        &self,
        reqs: &[ReadRequest],
        bypass: bool,
    ) -> Vec<Result<SecretValue, BackendError>> {
        enum Slot {
            Shared(Fetch),
            Missing(usize),
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(reqs.len());
        let mut hits = 0u64;
        let mut missing: Vec<ReadRequest> = Vec::new();
        let waits: Vec<Fetch> = {
            let mut entries = self.lock();
            for req in reqs {
                let reusable = entries.get(req).filter(|f| match f.peek() {
                    None => true,
                    Some(Ok(done)) => !bypass && done.at.elapsed() < self.ttl,
                    Some(Err(_)) => false,
                });
                match reusable {
                    Some(f) => {
                        hits += 1;
                        slots.push(Slot::Shared(f.clone()));
                    }
                    None => {
                        slots.push(Slot::Missing(missing.len()));
                        missing.push(req.clone());
                    }
                }
            }
            let mut per_key: Vec<Fetch> = Vec::with_capacity(missing.len());
            if !missing.is_empty() {
                let batch = self.batch_fetch(missing.clone());
                for (slot, req) in missing.iter().enumerate() {
                    let b = batch.clone();
                    let one: Fetch = async move {
                        let results = b.await;
                        results.get(slot).cloned().unwrap_or_else(|| {
                            Err(BackendError::unavailable("backend returned a short batch"))
                        })
                    }
                    .boxed()
                    .shared();
                    entries.insert(req.clone(), one.clone());
                    per_key.push(one);
                }
                let n = self
                    .inserts
                    .fetch_add(missing.len() as u64, Ordering::Relaxed);
                if n / SWEEP_EVERY != (n + missing.len() as u64) / SWEEP_EVERY {
                    let ttl = self.ttl;
                    entries.retain(|_, f| match f.peek() {
                        None => true,
                        Some(Ok(done)) => done.at.elapsed() < ttl,
                        Some(Err(_)) => false,
                    });
                }
            }
            slots
                .into_iter()
                .map(|s| match s {
                    Slot::Shared(f) => f,
                    Slot::Missing(i) => per_key[i].clone(),
                })
                .collect()
        };
        let kind = self.backend.kind();
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if hits > 0 {
            self.observer.cache_hits(kind, hits);
        }
        if !missing.is_empty() {
            self.observer.cache_misses(kind, missing.len() as u64);
        }

        let results = futures::future::join_all(waits.iter().cloned()).await;

        // Errors are never cached, and with ttl zero nothing finished is kept.
        {
            let mut entries = self.lock();
            for (req, (fut, res)) in reqs.iter().zip(waits.iter().zip(results.iter())) {
                if (res.is_err() || self.ttl.is_zero())
                    && entries.get(req).is_some_and(|cur| cur.ptr_eq(fut))
                {
                    entries.remove(req);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.map(|f| (*f.value).clone()))
            .collect()
    }

    /// Lists keys through the backend (not cached: listings are rare and must be current).
    pub async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let start = Instant::now();
        let res = self.backend.list(under).await;
        self.backend_calls.fetch_add(1, Ordering::Relaxed);
        self.observer.backend_request(
            self.backend.kind(),
            "list",
            result_label(&res),
            start.elapsed(),
        );
        res
    }

    /// Checks the backend's configuration and credentials.
    pub async fn validate(&self) -> Result<(), BackendError> {
        let start = Instant::now();
        let res = self.backend.validate().await;
        self.backend_calls.fetch_add(1, Ordering::Relaxed);
        self.observer.backend_request(
            self.backend.kind(),
            "validate",
            result_label(&res),
            start.elapsed(),
        );
        res
    }

    fn batch_fetch(&self, reqs: Vec<ReadRequest>) -> Shared<BoxFuture<'static, Vec<FetchResult>>> {
        let backend = self.backend.clone();
        let observer = self.observer.clone();
        let calls = self.backend_calls.clone();
        async move {
            let start = Instant::now();
            let operation = if reqs.len() == 1 {
                "read"
            } else {
                "read_batch"
            };
            let results = if reqs.len() == 1 {
                vec![backend.read(&reqs[0]).await]
            } else {
                backend.read_batch(&reqs).await
            };
            calls.fetch_add(1, Ordering::Relaxed);
            let label = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .map(|e| e.reason.as_str())
                .unwrap_or("success");
            observer.backend_request(backend.kind(), operation, label, start.elapsed());
            let at = Instant::now();
            results
                .into_iter()
                .map(|r| {
                    r.map(|v| Fetched {
                        value: Arc::new(v),
                        at,
                    })
                })
                .collect::<Vec<_>>()
        }
        .boxed()
        .shared()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ReadRequest, Fetch>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // inserts/removes), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn result_label<T>(res: &Result<T, BackendError>) -> &'static str {
    match res {
        Ok(_) => "success",
        Err(e) => e.reason.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::AtomicUsize;

    /// In-memory backend counting calls, with a delay so concurrent reads overlap.
    struct Counting {
        reads: AtomicUsize,
        batches: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Backend for Counting {
        fn kind(&self) -> BackendKind {
            BackendKind::Env
        }
        async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(BackendError::unavailable("down"));
            }
            Ok(SecretValue::from(format!("v-{}", req.key).as_str()))
        }
        async fn read_batch(&self, reqs: &[ReadRequest]) -> Vec<Result<SecretValue, BackendError>> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            let mut out = Vec::new();
            for r in reqs {
                out.push(Ok(SecretValue::from(format!("v-{}", r.key).as_str())));
            }
            out
        }
        async fn list(&self, _: &str) -> Result<Vec<String>, BackendError> {
            Ok(vec![])
        }
        async fn validate(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }

    fn counting() -> Arc<Counting> {
        Arc::new(Counting {
            reads: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            fail: std::sync::atomic::AtomicBool::new(false),
        })
    }

    #[tokio::test]
    async fn coalesces_concurrent_reads() {
        let b = counting();
        let cache = Arc::new(SourceCache::new(
            b.clone(),
            Duration::ZERO,
            Arc::new(NoopObserver),
        ));
        let req = ReadRequest::latest("k");
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let c = cache.clone();
                let r = req.clone();
                tokio::spawn(async move { c.get(&r, false).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().as_str(), Some("v-k"));
        }
        assert_eq!(b.reads.load(Ordering::SeqCst), 1);
        // ttl zero: a later read goes to the backend again.
        cache.get(&req, false).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn ttl_reuse_bypass_and_errors() {
        let b = counting();
        let cache = SourceCache::new(b.clone(), Duration::from_secs(60), Arc::new(NoopObserver));
        let req = ReadRequest::latest("k");
        cache.get(&req, false).await.unwrap();
        cache.get(&req, false).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 1);
        cache.get(&req, true).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.backend_calls), (1, 2, 2));

        // Errors are not cached.
        b.fail.store(true, Ordering::SeqCst);
        let other = ReadRequest::latest("other");
        assert!(cache.get(&other, false).await.is_err());
        b.fail.store(false, Ordering::SeqCst);
        assert!(cache.get(&other, false).await.is_ok());
    }

    #[tokio::test]
    async fn misses_are_batched() {
        let b = counting();
        let cache = SourceCache::new(b.clone(), Duration::from_secs(60), Arc::new(NoopObserver));
        let reqs: Vec<_> = (0..5)
            .map(|i| ReadRequest::latest(format!("k{i}")))
            .collect();
        let out = cache.get_many(&reqs, false).await;
        assert_eq!(out.len(), 5);
        assert_eq!(out[3].as_ref().unwrap().as_str(), Some("v-k3"));
        assert_eq!(b.batches.load(Ordering::SeqCst), 1);
        // All cached now: no more backend calls.
        cache.get_many(&reqs, false).await;
        assert_eq!(b.batches.load(Ordering::SeqCst), 1);
        assert_eq!(b.reads.load(Ordering::SeqCst), 0);
    }
}
