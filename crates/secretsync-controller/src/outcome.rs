//! What a reconcile returns: its result (the `result` label of
//! `secretsync_reconcile_total`) and when to look at the object again. Every reconciler
//! returns [`Reconciled`]; the dispatcher records and schedules it.

use std::time::Duration;

/// The result of one reconcile, as counted in `secretsync_reconcile_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    /// A binding's Secret was written.
    Written,
    /// Nothing needed writing (binding, workload).
    Unchanged,
    /// A source was built or checked and is ready.
    Success,
    /// The object is gone; its memory was dropped.
    Deleted,
    /// Something failed: a backend, the API server, a bad spec.
    Error,
    /// A workload's Secret revision was recorded without a restart.
    Recorded,
    /// A workload was restarted.
    Restarted,
    /// A restart waits for the debounce window.
    Pending,
    /// A restart is deferred: the Deployment is paused.
    Paused,
    /// A conditional write lost a race; retried shortly.
    Conflict,
    /// The workload has not (or no longer) opted in.
    Untracked,
}

impl ReconcileResult {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Written => "written",
            ReconcileResult::Unchanged => "unchanged",
            ReconcileResult::Success => "success",
            ReconcileResult::Deleted => "deleted",
            ReconcileResult::Error => "error",
            ReconcileResult::Recorded => "recorded",
            ReconcileResult::Restarted => "restarted",
            ReconcileResult::Pending => "pending",
            ReconcileResult::Paused => "paused",
            ReconcileResult::Conflict => "conflict",
            ReconcileResult::Untracked => "untracked",
        }
    }
}

/// When to reconcile the object again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only when something about it changes.
    Never,
    /// After a delay (refresh interval, debounce, backoff after a backend error).
    After(Duration),
    /// After a backoff because the API server failed; sooner if it comes back first.
    ApiRetry(Duration),
}

/// The outcome of one reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// What happened.
    pub result: ReconcileResult,
    /// When to look again.
    pub requeue: Requeue,
}

impl Reconciled {
    /// `result`, looked at again only on change.
    pub const fn done(result: ReconcileResult) -> Self {
        Reconciled {
            result,
            requeue: Requeue::Never,
        }
    }

    /// `result`, looked at again after `delay`.
    pub const fn after(result: ReconcileResult, delay: Duration) -> Self {
        Reconciled {
            result,
            requeue: Requeue::After(delay),
        }
    }

    /// An API failure, retried after `delay` or when the API server is back.
    pub const fn api_error(delay: Duration) -> Self {
        Reconciled {
            result: ReconcileResult::Error,
            requeue: Requeue::ApiRetry(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        use ReconcileResult::*;
        let all = [
            Written, Unchanged, Success, Deleted, Error, Recorded, Restarted, Pending, Paused,
            Conflict, Untracked,
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
