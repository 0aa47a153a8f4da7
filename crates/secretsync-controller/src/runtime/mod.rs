//! The machinery every reconciler runs on, independent of what it reconciles: one generic
//! relisting watch feeding an [`watch::Index`], the object [`store`], the two-lane work
//! [`queue`], the [`dispatch`]er that runs reconciles, signals of the first complete
//! lists ([`ready`]) and of API reachability ([`health`]), retry timing ([`backoff`]) and
//! [`leader`] election; and objects [`held`] by name behind per-namespace metadata watches.

pub mod backoff;
pub mod dispatch;
pub mod health;
pub mod held;
pub mod leader;
pub mod queue;
pub mod ready;
pub mod store;
pub mod watch;

pub use dispatch::Dispatcher;
pub use health::ApiHealth;
pub use queue::{Priority, Queue};
pub use ready::{InitialLists, ListToken};
pub use store::{ObjKey, Store, key_of};
pub use watch::{Index, Phase, Watch};

/// Waits until `rx` holds `true` (forever if its sender is gone while it is `false`).
pub async fn wait_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits until `rx` holds `false` (forever if its sender is gone while it is `true`).
pub async fn wait_false(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
