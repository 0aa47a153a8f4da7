//! Runs reconciles: pops due keys while a worker slot is free, runs the reconciler,
//! records `secretsync_reconcile_*` and schedules what the reconcile asked for. Popping
//! only with a free slot is what lets an urgent key overtake waiting refreshes.
//!
//! Keys that failed on the API server are parked as well as scheduled: when the watches
//! see the API server back ([`ApiHealth`]), they are retried at once instead of at the end
//! of a backoff that grew during the outage.

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::health::ApiHealth;
use super::queue::{Priority, Queue};
use crate::metrics::Metrics;
use crate::outcome::{Reconciled, Requeue};

/// A dispatcher's fixed settings.
pub struct Dispatcher<K: Clone + Eq + Hash + Ord> {
    /// `controller` label of the metrics.
    pub controller: &'static str,
    /// Reconciles run at once.
    pub concurrency: usize,
    /// Where keys come from.
    pub queue: Arc<Queue<K>>,
    /// API reachability, to retry parked keys.
    pub health: Arc<ApiHealth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl<K> Dispatcher<K>
where
    K: Clone + Eq + Hash + Ord + Send + Sync + 'static,
{
    /// Runs until the queue shuts down, then waits for in-flight reconciles.
    pub async fn run<F, Fut>(self, reconcile: F)
    where
        F: Fn(K) -> Fut,
        Fut: Future<Output = Reconciled> + Send + 'static,
    {
        let parked: Arc<Mutex<HashSet<K>>> = Arc::default();
        let retrier = tokio::spawn(retry_parked(
            self.health.clone(),
            self.queue.clone(),
            parked.clone(),
        ));
        let sem = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        loop {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let Some(key) = self.queue.next().await else {
                break;
            };
            // Boxed: the reconcile future is large, and spawning would copy it whole into the task.
            let fut = Box::pin(reconcile(key.clone()));
            let queue = self.queue.clone();
            let metrics = self.metrics.clone();
            let parked = parked.clone();
            let controller = self.controller;
            running.spawn(async move {
                let start = Instant::now();
                let outcome = fut.await;
                metrics.reconcile(controller, outcome.result.as_str(), start.elapsed());
                queue.done(&key);
                schedule(&queue, &parked, key, outcome.requeue);
                drop(permit);
            });
            while running.try_join_next().is_some() {}
        }
        tracing::debug!(
            controller = self.controller,
            in_flight = running.len(),
            "draining"
        );
        while running.join_next().await.is_some() {}
        retrier.abort();
    }
}

fn schedule<K: Clone + Eq + Hash + Ord>(
    queue: &Queue<K>,
    parked: &Mutex<HashSet<K>>,
    key: K,
    requeue: Requeue,
) {
    match requeue {
        Requeue::Never => {}
        Requeue::After(d) => queue.add_after(key, d, Priority::Normal),
        Requeue::ApiRetry(d) => {
            lock(parked).insert(key.clone());
            queue.add_after(key, d, Priority::Normal);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Set operations only; a poisoned lock holds a usable set.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each time the API server is back, makes every parked key due now.
async fn retry_parked<K: Clone + Eq + Hash + Ord>(
    health: Arc<ApiHealth>,
    queue: Arc<Queue<K>>,
    parked: Arc<Mutex<HashSet<K>>>,
) {
    let mut recoveries = health.recoveries();
    while recoveries.changed().await.is_ok() {
        let keys: Vec<K> = lock(&parked).drain().collect();
        if !keys.is_empty() {
            tracing::info!(
                keys = keys.len(),
                "API server reachable again; retrying what failed on it"
            );
        }
        for k in keys {
            queue.add(k, Priority::Normal);
        }
    }
}
