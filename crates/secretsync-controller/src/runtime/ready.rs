//! Signals that a group of watches has delivered its first complete list. Reconciling
//! before that would act on a partial view (a binding whose source is not listed yet
//! would report `SourceNotFound`; a workload would see half its Secrets and restart).

use std::sync::Arc;

use tokio::sync::watch;

/// A group of initial lists: each watch registers before it starts and marks its list
/// done once; waiters wake when every registered list is done.
#[derive(Clone)]
pub struct InitialLists {
    /// (registered, done).
    state: Arc<watch::Sender<(usize, usize)>>,
}

impl Default for InitialLists {
    fn default() -> Self {
        InitialLists {
            state: Arc::new(watch::channel((0, 0)).0),
        }
    }
}

/// One watch's share of an [`InitialLists`] group.
pub struct ListToken {
    lists: Option<InitialLists>,
}

impl ListToken {
    /// Marks this watch's first list complete (later calls do nothing).
    pub fn done(&mut self) {
        if let Some(lists) = self.lists.take() {
            lists.state.send_modify(|(_, done)| *done += 1);
        }
    }
}

impl InitialLists {
    /// Registers one more watch whose first list is awaited.
    pub fn register(&self) -> ListToken {
        self.state.send_modify(|(registered, _)| *registered += 1);
        ListToken {
            lists: Some(self.clone()),
        }
    }

    /// Waits until every registered watch has completed its first list.
    pub async fn wait(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|(registered, done)| done >= registered).await;
    }

    /// Whether every registered list is complete.
    pub fn is_complete(&self) -> bool {
        let (registered, done) = *self.state.borrow();
        done >= registered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_every_registered_list() {
        let lists = InitialLists::default();
        let mut a = lists.register();
        let mut b = lists.register();
        assert!(!lists.is_complete());
        a.done();
        a.done();
        assert!(
            !lists.is_complete(),
            "a second done of one watch does not count"
        );
        let waiter = tokio::spawn({
            let lists = lists.clone();
            async move { lists.wait().await }
        });
        b.done();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(lists.is_complete());
    }
}
