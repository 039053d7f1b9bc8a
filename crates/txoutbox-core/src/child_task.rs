//! Tasks that end with their owner: the relay's services, and a coordinator's take-over step.

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that is aborted when this guard drops: when the relay's future is dropped (a
/// caller stops polling it, or a simulated crash aborts it), its fetcher, sender, completer and
/// coordinator stop with it instead of running on detached.
#[derive(Debug)]
pub(crate) struct ChildTask<T>(JoinHandle<T>);

impl<T: Send + 'static> ChildTask<T> {
    /// Spawns `task` on the current runtime.
    pub(crate) fn spawn(task: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }

    /// Takes charge of a task spawned elsewhere (a store's watcher).
    pub(crate) fn adopt(handle: JoinHandle<T>) -> Self {
        Self(handle)
    }

    /// Waits for the task to end.
    pub(crate) async fn join(&mut self) -> Result<T, JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for ChildTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
