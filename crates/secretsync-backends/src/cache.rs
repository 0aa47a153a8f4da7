//! Shared per-source read cache with request coalescing and per-key refresh.
//!
//! Every binding of a source reads through one [`SourceCache`]. Concurrent reads of a key
//! that is being fetched join the in-flight request; misses of one call are fetched with
//! one [`Backend::read_batch`] (AWS turns it into `BatchGetSecretValue`). Finished reads are
//! reused according to the source's [`CachePolicy`]:
//!
//! - [`CachePolicy::PerKeyRefresh`] (no `spec.cache`, the default): a value is reused by a
//!   binding while it is younger than that binding's refresh interval, and the binding
//!   schedules its next refresh from the moment the value was fetched (see
//!   [`Read::fetched_at`]). Bindings sharing a key therefore fall into step with the key:
//!   when it is due, the first of them reads it and the rest, due within the refresh jitter,
//!   reuse that read. A cold start reads each key once; no binding holds data older than
//!   its interval plus jitter.
//! - [`CachePolicy::Ttl`] (`spec.cache.ttl`): a value is reused while younger than the ttl;
//!   `0s` reads every time (in-flight reads are still shared).
//!
//! Failures are remembered per key with exponential backoff ([`crate::retry::backoff`]):
//! until a failed key's retry time, reads get the remembered error without a backend call,
//! so fifty bindings on one missing key cost one read per backoff step, not fifty. A
//! "not found" is also an answer (an optional key is left out on it), so it is not reused
//! longer than a value would be either. A bypass (force-sync) always reads.
//!
//! Each value carries a content serial ([`Read::serial`]): a refetch that returns the same
//! bytes keeps it, so a reader that saw the same serials last time knows its inputs are
//! unchanged without looking at (or parsing) the values again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secretsync_api::BackendKind;

use crate::retry::{BACKOFF_MAX, backoff, random_unit};
use crate::{Backend, BackendError, ReadRequest, Reason, SecretValue};

/// Receives per-request measurements (the controller turns them into metrics).
pub trait CacheObserver: Send + Sync {
    /// One backend call finished.
    fn backend_request(&self, call: &BackendCall);
    /// Reads served from memory or joined to an in-flight request.
    fn cache_hits(&self, backend: BackendKind, n: u64);
    /// Reads that needed a backend request.
    fn cache_misses(&self, backend: BackendKind, n: u64);
}

/// One finished backend call, as reported to a [`CacheObserver`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendCall {
    /// Which backend answered.
    pub backend: BackendKind,
    /// `read`, `read_batch`, `list` or `validate`.
    pub operation: &'static str,
    /// `success` or a [`crate::Reason`] string.
    pub result: &'static str,
    /// How long the call took.
    pub elapsed: Duration,
}

/// Observer that records nothing.
pub struct NoopObserver;

impl CacheObserver for NoopObserver {
    fn backend_request(&self, _: &BackendCall) {}
    fn cache_hits(&self, _: BackendKind, _: u64) {}
    fn cache_misses(&self, _: BackendKind, _: u64) {}
}

/// Counters of one cache, for tests and debugging.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory, joined to an in-flight fetch, or answered with a
    /// remembered failure.
    pub hits: u64,
    /// Reads that needed a fetch.
    pub misses: u64,
    /// Backend calls made (a batch counts once).
    pub backend_calls: u64,
}

/// How a cache reuses finished reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// The default: reuse while younger than the reader's [`ReadOptions::max_age`] (its
    /// refresh interval); readers schedule their next refresh from [`Read::fetched_at`].
    PerKeyRefresh,
    /// An explicit `spec.cache.ttl`: reuse while younger than this; zero never reuses.
    Ttl(Duration),
}

impl CachePolicy {
    /// Whether readers should schedule their next refresh from the fetch time of the
    /// oldest value they used (rather than from now).
    pub fn refresh_follows_fetch(&self) -> bool {
        matches!(self, CachePolicy::PerKeyRefresh)
    }
}

/// What one read asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Ignore finished values and remembered failures (force-sync). In-flight fetches are
    /// still joined: they are fresh by definition.
    pub bypass: bool,
    /// Under [`CachePolicy::PerKeyRefresh`], the oldest value this reader accepts (its
    /// refresh interval; zero = only in-flight reads). Ignored under a ttl.
    pub max_age: Duration,
}

impl ReadOptions {
    /// Accepts values up to `max_age` old.
    pub fn within(max_age: Duration) -> Self {
        ReadOptions {
            bypass: false,
            max_age,
        }
    }

    /// Always reads the backend (unless a fetch is already in flight).
    pub fn bypass() -> Self {
        ReadOptions {
            bypass: true,
            max_age: Duration::ZERO,
        }
    }
}

/// A value read through the cache.
#[derive(Debug, Clone)]
pub struct Read {
    /// The value.
    pub value: SecretValue,
    /// When the backend returned it.
    pub fetched_at: Instant,
    /// Identifies the content: unique in the process, kept by a refetch that returns the
    /// same bytes, new whenever they differ (or the key was forgotten in between).
    pub serial: u64,
}

/// A failed read through the cache.
#[derive(Debug, Clone)]
pub struct Failed {
    /// What failed (names the key, never a value).
    pub error: BackendError,
    /// Before this, reads of the key get this failure again without a backend call.
    pub retry_at: Instant,
    /// When the backend answered with the failure.
    pub failed_at: Instant,
}

#[derive(Clone)]
struct Fetched {
    value: Arc<SecretValue>,
    at: Instant,
    serial: u64,
}

/// The next content serial (process-wide, so no two caches or keys share one).
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Fetched {
    /// This fetch, under `previous`'s serial (and sharing its bytes) if the content is the
    /// same.
    fn continuing(self, previous: Option<&Fetched>) -> Fetched {
        match previous {
            Some(p) if p.value.as_bytes() == self.value.as_bytes() => Fetched {
                value: p.value.clone(),
                at: self.at,
                serial: p.serial,
            },
            _ => self,
        }
    }
}

#[derive(Clone)]
struct FetchError {
    error: BackendError,
    at: Instant,
}

type FetchResult = Result<Fetched, FetchError>;
type Fetch = Shared<BoxFuture<'static, FetchResult>>;

/// The latest fetch of one key and what is needed to judge it.
#[derive(Clone)]
struct Slot {
    fetch: Fetch,
    /// Consecutive failed fetches before this one (the backoff exponent if it fails too).
    failures: u32,
    /// Jitter draw for this fetch's backoff.
    jitter: f64,
    /// The longest reuse any reader asked for (how long the slot is worth keeping).
    keep_for: Duration,
}

impl Slot {
    fn retry_at(&self, failed_at: Instant) -> Instant {
        failed_at + backoff(self.failures, self.jitter)
    }

    fn state(&self) -> SlotState {
        match self.fetch.peek() {
            None => SlotState::InFlight,
            Some(Ok(done)) => SlotState::Value { at: done.at },
            Some(Err(e)) => SlotState::Failed {
                retry_at: self.retry_at(e.at),
                not_found_at: (e.error.reason == Reason::SecretNotFound).then_some(e.at),
            },
        }
    }
}

/// What is known about a key, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    InFlight,
    Value {
        at: Instant,
    },
    /// `not_found_at`: the failure is "not found", answered then.
    Failed {
        retry_at: Instant,
        not_found_at: Option<Instant>,
    },
}

/// Whether a read can be answered from `state` (`true`) or needs a fetch.
fn reusable(
    state: Option<SlotState>,
    policy: CachePolicy,
    opts: ReadOptions,
    now: Instant,
) -> bool {
    match state {
        None => false,
        Some(SlotState::InFlight) => true,
        Some(_) if opts.bypass => false,
        Some(SlotState::Value { at }) => {
            now.saturating_duration_since(at) < reuse_limit(policy, opts)
        }
        Some(SlotState::Failed {
            retry_at,
            not_found_at,
        }) => {
            now < retry_at
                && not_found_at
                    .is_none_or(|at| now.saturating_duration_since(at) < reuse_limit(policy, opts))
        }
    }
}

fn reuse_limit(policy: CachePolicy, opts: ReadOptions) -> Duration {
    match policy {
        CachePolicy::Ttl(ttl) => ttl,
        CachePolicy::PerKeyRefresh => opts.max_age,
    }
}

/// Whether a slot is still worth keeping at `now`: in flight, a value someone may still
/// reuse, or a failure whose backoff count still matters.
fn worth_keeping(slot: &Slot, now: Instant) -> bool {
    match slot.state() {
        SlotState::InFlight => true,
        SlotState::Value { at } => now.saturating_duration_since(at) < slot.keep_for,
        SlotState::Failed { retry_at, .. } => now < retry_at + BACKOFF_MAX,
    }
}

/// A slot answering "unavailable" at once. Every missing key gets a slot inserted before
/// it is looked up again, so this only stands in for an impossible lookup failure.
fn lost_slot(now: Instant) -> Slot {
    let failed: BoxFuture<'static, FetchResult> = futures::future::ready(Err(FetchError {
        error: BackendError::unavailable("read lost in the cache"),
        at: now,
    }))
    .boxed();
    Slot {
        fetch: failed.shared(),
        failures: 0,
        jitter: 0.5,
        keep_for: Duration::ZERO,
    }
}

/// How often (in inserted entries) stale entries are swept out.
const SWEEP_EVERY: u64 = 1024;

/// The cache in front of one source's backend.
pub struct SourceCache {
    backend: Arc<dyn Backend>,
    policy: CachePolicy,
    entries: Mutex<HashMap<ReadRequest, Slot>>,
    observer: Arc<dyn CacheObserver>,
    hits: AtomicU64,
    misses: AtomicU64,
    backend_calls: Arc<AtomicU64>,
    inserts: AtomicU64,
}

impl SourceCache {
    /// A cache over `backend` with an explicit ttl (`spec.cache.ttl`); zero disables reuse
    /// of finished reads (in-flight reads are still shared).
    pub fn new(backend: Arc<dyn Backend>, ttl: Duration, observer: Arc<dyn CacheObserver>) -> Self {
        Self::with_policy(backend, CachePolicy::Ttl(ttl), observer)
    }

    /// A cache over `backend` reusing reads as `policy` says.
    pub fn with_policy(
        backend: Arc<dyn Backend>,
        policy: CachePolicy,
        observer: Arc<dyn CacheObserver>,
    ) -> Self {
        SourceCache {
            backend,
            policy,
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

    /// How finished reads are reused.
    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            backend_calls: self.backend_calls.load(Ordering::Relaxed),
        }
    }

    /// Makes every finished value due again: the next reader of a key fetches it (a change
    /// notice for the whole source). In-flight fetches and remembered failures stay.
    pub fn invalidate_all(&self) {
        self.lock()
            .retain(|_, s| !matches!(s.state(), SlotState::Value { .. }));
    }

    /// Forgets everything about `key` (every version): a change notice for one remote
    /// key. A fetch in flight may have seen the old value, so later readers do not join
    /// it; those already waiting get its result.
    pub fn invalidate_key(&self, key: &str) {
        self.lock().retain(|r, _| r.key != key);
    }

    /// Reads one key.
    pub async fn get(&self, req: &ReadRequest, opts: ReadOptions) -> Result<Read, Failed> {
        match self.get_many(std::slice::from_ref(req), opts).await.pop() {
            Some(r) => r,
            // One request in, one result out: the batch contract of `get_many`.
            None => Err(Failed {
                error: BackendError::unavailable("empty batch result"),
                retry_at: Instant::now(),
                failed_at: Instant::now(),
            }),
        }
    }

    /// Reads several keys: reusable values, remembered failures and in-flight fetches are
    /// shared, the rest are fetched with one batch call.
    pub async fn get_many(
        &self,
        reqs: &[ReadRequest],
        opts: ReadOptions,
    ) -> Vec<Result<Read, Failed>> {
        let mut hits = 0u64;
        let mut missing: Vec<ReadRequest> = Vec::new();
        let waits: Vec<Slot> = {
            let now = Instant::now();
            let keep_for = reuse_limit(self.policy, opts);
            let mut entries = self.lock();
            let mut chosen: Vec<Option<Slot>> = Vec::with_capacity(reqs.len());
            for req in reqs {
                let slot = entries.get_mut(req);
                let state = slot.as_ref().map(|s| s.state());
                if reusable(state, self.policy, opts, now) {
                    hits += 1;
                    let slot = slot.map(|s| {
                        s.keep_for = s.keep_for.max(keep_for);
                        s.clone()
                    });
                    chosen.push(slot);
                } else {
                    chosen.push(None);
                    missing.push(req.clone());
                }
            }
            if !missing.is_empty() {
                let batch = self.batch_fetch(missing.clone());
                for (i, req) in missing.iter().enumerate() {
                    let b = batch.clone();
                    let previous = entries
                        .get(req)
                        .and_then(|s| s.fetch.peek())
                        .and_then(|r| r.as_ref().ok())
                        .cloned();
                    let one: Fetch = async move {
                        let results = b.await;
                        match results.get(i).cloned() {
                            Some(Ok(f)) => Ok(f.continuing(previous.as_ref())),
                            Some(Err(e)) => Err(e),
                            None => Err(FetchError {
                                error: BackendError::unavailable("backend returned a short batch"),
                                at: Instant::now(),
                            }),
                        }
                    }
                    .boxed()
                    .shared();
                    let failures = match entries.get(req).map(|s| (s.state(), s.failures)) {
                        Some((SlotState::Failed { .. }, n)) => n.saturating_add(1),
                        _ => 0,
                    };
                    let slot = Slot {
                        fetch: one,
                        failures,
                        jitter: random_unit(),
                        keep_for,
                    };
                    entries.insert(req.clone(), slot);
                }
                let n = self
                    .inserts
                    .fetch_add(missing.len() as u64, Ordering::Relaxed);
                if n / SWEEP_EVERY != (n + missing.len() as u64) / SWEEP_EVERY {
                    entries.retain(|_, s| worth_keeping(s, now));
                }
            }
            reqs.iter()
                .zip(chosen)
                .map(|(req, c)| {
                    c.or_else(|| entries.get(req).cloned())
                        .unwrap_or_else(|| lost_slot(now))
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
        let results = futures::future::join_all(waits.iter().map(|s| s.fetch.clone())).await;
        waits
            .iter()
            .zip(results)
            .map(|(slot, r)| match r {
                Ok(f) => Ok(Read {
                    value: (*f.value).clone(),
                    fetched_at: f.at,
                    serial: f.serial,
                }),
                Err(e) => Err(Failed {
                    retry_at: slot.retry_at(e.at),
                    failed_at: e.at,
                    error: e.error,
                }),
            })
            .collect()
    }

    /// Lists keys through the backend (not cached: listings are rare and must be current).
    pub async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let start = Instant::now();
        let res = self.backend.list(under).await;
        self.record("list", result_label(&res), start);
        res
    }

    /// Checks the backend's configuration and credentials.
    pub async fn validate(&self) -> Result<(), BackendError> {
        let start = Instant::now();
        let res = self.backend.validate().await;
        self.record("validate", result_label(&res), start);
        res
    }

    /// Counts an uncached call that started at `start` and reports it.
    fn record(&self, operation: &'static str, result: &'static str, start: Instant) {
        self.backend_calls.fetch_add(1, Ordering::Relaxed);
        self.observer.backend_request(&BackendCall {
            backend: self.backend.kind(),
            operation,
            result,
            elapsed: start.elapsed(),
        });
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
            observer.backend_request(&BackendCall {
                backend: backend.kind(),
                operation,
                result: label,
                elapsed: start.elapsed(),
            });
            let at = Instant::now();
            results
                .into_iter()
                .map(|r| match r {
                    Ok(v) => Ok(Fetched {
                        value: Arc::new(v),
                        at,
                        serial: next_serial(),
                    }),
                    Err(error) => Err(FetchError { error, at }),
                })
                .collect::<Vec<_>>()
        }
        .boxed()
        .shared()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ReadRequest, Slot>> {
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
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// In-memory backend counting calls, with a delay so concurrent reads overlap.
    struct Counting {
        reads: AtomicUsize,
        batches: AtomicUsize,
        fail: AtomicBool,
        /// Appended to values once non-zero (a rotation).
        version: AtomicUsize,
    }

    impl Counting {
        fn value(&self, key: &str) -> SecretValue {
            match self.version.load(Ordering::SeqCst) {
                0 => SecretValue::from(format!("v-{key}").as_str()),
                n => SecretValue::from(format!("v-{key}-{n}").as_str()),
            }
        }
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
                return Err(BackendError::not_found(&req.key));
            }
            Ok(self.value(&req.key))
        }
        async fn read_batch(&self, reqs: &[ReadRequest]) -> Vec<Result<SecretValue, BackendError>> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            let mut out = Vec::new();
            for r in reqs {
                out.push(Ok(self.value(&r.key)));
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
            fail: AtomicBool::new(false),
            version: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn serial_follows_the_content() {
        let b = counting();
        // ttl zero: every read below goes to the backend.
        let cache = SourceCache::new(b.clone(), Duration::ZERO, Arc::new(NoopObserver));
        let get = |k: &'static str| {
            let cache = &cache;
            async move {
                cache
                    .get(&ReadRequest::latest(k), ReadOptions::bypass())
                    .await
            }
        };
        let first = get("k").await.unwrap();
        let same = get("k").await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
        assert!(same.fetched_at > first.fetched_at);
        assert_eq!(same.serial, first.serial, "same bytes, same serial");
        assert_ne!(get("other").await.unwrap().serial, first.serial);
        b.version.store(1, Ordering::SeqCst);
        let rotated = get("k").await.unwrap();
        assert_ne!(rotated.serial, first.serial);
        // A failure in between forgets the content: the value after it is new to readers.
        b.fail.store(true, Ordering::SeqCst);
        assert!(get("k").await.is_err());
        b.fail.store(false, Ordering::SeqCst);
        let back = get("k").await.unwrap();
        assert_eq!(back.value.as_bytes(), rotated.value.as_bytes());
        assert_ne!(back.serial, rotated.serial);
    }

    const MINUTE: Duration = Duration::from_secs(60);

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
                tokio::spawn(async move { c.get(&r, ReadOptions::within(MINUTE)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().value.as_str(), Some("v-k"));
        }
        assert_eq!(b.reads.load(Ordering::SeqCst), 1);
        // ttl zero: a later read goes to the backend again, whatever the reader accepts.
        cache.get(&req, ReadOptions::within(MINUTE)).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn ttl_reuse_and_bypass() {
        let b = counting();
        let cache = SourceCache::new(b.clone(), MINUTE, Arc::new(NoopObserver));
        let req = ReadRequest::latest("k");
        // Under a ttl the reader's own max_age does not matter.
        cache
            .get(&req, ReadOptions::within(Duration::ZERO))
            .await
            .unwrap();
        cache
            .get(&req, ReadOptions::within(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 1);
        cache.get(&req, ReadOptions::bypass()).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.backend_calls), (1, 2, 2));
    }

    #[tokio::test]
    async fn per_key_refresh_reuses_within_the_readers_interval() {
        let b = counting();
        let cache = SourceCache::with_policy(
            b.clone(),
            CachePolicy::PerKeyRefresh,
            Arc::new(NoopObserver),
        );
        let req = ReadRequest::latest("k");
        let first = cache.get(&req, ReadOptions::within(MINUTE)).await.unwrap();
        let again = cache.get(&req, ReadOptions::within(MINUTE)).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 1);
        // The reuse carries the original fetch time: the reader schedules from it.
        assert_eq!(again.fetched_at, first.fetched_at);
        // A reader accepting nothing older than now reads again, and later readers share
        // the newer value.
        let fresh = cache
            .get(&req, ReadOptions::within(Duration::ZERO))
            .await
            .unwrap();
        assert!(fresh.fetched_at > first.fetched_at);
        let shared = cache.get(&req, ReadOptions::within(MINUTE)).await.unwrap();
        assert_eq!(shared.fetched_at, fresh.fetched_at);
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
        assert!(cache.policy().refresh_follows_fetch());
        assert!(!CachePolicy::Ttl(MINUTE).refresh_follows_fetch());
    }

    #[tokio::test]
    async fn failures_back_off_per_key_and_bypass_reads() {
        let b = counting();
        let cache = SourceCache::with_policy(
            b.clone(),
            CachePolicy::PerKeyRefresh,
            Arc::new(NoopObserver),
        );
        let req = ReadRequest::latest("missing");
        b.fail.store(true, Ordering::SeqCst);
        let first = cache
            .get(&req, ReadOptions::within(MINUTE))
            .await
            .unwrap_err();
        assert_eq!(first.error.reason, crate::Reason::SecretNotFound);
        // Within the backoff (4-6 s for the first failure) every reader gets the same
        // failure without a backend call.
        for _ in 0..20 {
            let again = cache
                .get(&req, ReadOptions::within(MINUTE))
                .await
                .unwrap_err();
            assert_eq!(again.retry_at, first.retry_at);
        }
        assert_eq!(b.reads.load(Ordering::SeqCst), 1);
        let wait = first.retry_at - Instant::now();
        assert!(
            wait > Duration::from_secs(3) && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        // force-sync reads anyway; a second failure in a row backs off longer.
        let second = cache.get(&req, ReadOptions::bypass()).await.unwrap_err();
        assert_eq!(b.reads.load(Ordering::SeqCst), 2);
        let wait = second.retry_at - Instant::now();
        assert!(wait > Duration::from_secs(7), "{wait:?}");
        // Once it succeeds the value is served as usual.
        b.fail.store(false, Ordering::SeqCst);
        let ok = cache.get(&req, ReadOptions::bypass()).await.unwrap();
        assert_eq!(ok.value.as_str(), Some("v-missing"));
        cache.get(&req, ReadOptions::within(MINUTE)).await.unwrap();
        assert_eq!(b.reads.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn reuse_decisions() {
        let now = Instant::now();
        let ago = |s: u64| now - Duration::from_secs(s);
        let within = ReadOptions::within(MINUTE);
        let per_key = CachePolicy::PerKeyRefresh;
        let ttl = CachePolicy::Ttl(Duration::from_secs(10));
        let value = |at| Some(SlotState::Value { at });
        assert!(!reusable(None, per_key, within, now));
        assert!(reusable(
            Some(SlotState::InFlight),
            per_key,
            ReadOptions::bypass(),
            now
        ));
        assert!(reusable(value(ago(59)), per_key, within, now));
        assert!(!reusable(value(ago(60)), per_key, within, now));
        assert!(!reusable(
            value(ago(1)),
            per_key,
            ReadOptions::bypass(),
            now
        ));
        assert!(reusable(
            value(ago(9)),
            ttl,
            ReadOptions::within(Duration::ZERO),
            now
        ));
        assert!(!reusable(value(ago(10)), ttl, within, now));
        let failed = |retry_at| {
            Some(SlotState::Failed {
                retry_at,
                not_found_at: None,
            })
        };
        assert!(reusable(
            failed(now + Duration::from_secs(1)),
            per_key,
            within,
            now
        ));
        assert!(!reusable(failed(now), per_key, within, now));
        assert!(!reusable(
            failed(now + MINUTE),
            ttl,
            ReadOptions::bypass(),
            now
        ));
        // "Not found" is an answer: reused within its backoff only while younger than a
        // value may be (so an optional key that appears is synced at the next refresh).
        let not_found = |at, retry_at| {
            Some(SlotState::Failed {
                retry_at,
                not_found_at: Some(at),
            })
        };
        let later = now + Duration::from_secs(300);
        assert!(reusable(not_found(ago(59), later), per_key, within, now));
        assert!(!reusable(not_found(ago(60), later), per_key, within, now));
        assert!(!reusable(not_found(ago(1), now), per_key, within, now));
        assert!(reusable(not_found(ago(9), later), ttl, within, now));
        assert!(!reusable(not_found(ago(10), later), ttl, within, now));
        // Other failures wait out their backoff whatever the reader's interval.
        assert!(reusable(
            failed(later),
            per_key,
            ReadOptions::within(Duration::ZERO),
            now
        ));
    }

    #[tokio::test]
    async fn misses_are_batched() {
        let b = counting();
        let cache = SourceCache::new(b.clone(), MINUTE, Arc::new(NoopObserver));
        let reqs: Vec<_> = (0..5)
            .map(|i| ReadRequest::latest(format!("k{i}")))
            .collect();
        let out = cache.get_many(&reqs, ReadOptions::within(MINUTE)).await;
        assert_eq!(out.len(), 5);
        assert_eq!(out[3].as_ref().unwrap().value.as_str(), Some("v-k3"));
        assert_eq!(b.batches.load(Ordering::SeqCst), 1);
        // All cached now: no more backend calls.
        cache.get_many(&reqs, ReadOptions::within(MINUTE)).await;
        assert_eq!(b.batches.load(Ordering::SeqCst), 1);
        assert_eq!(b.reads.load(Ordering::SeqCst), 0);
    }
}
