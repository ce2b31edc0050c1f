//! Owns the running tasks of the modules, each under a name, and their stop within a
//! budget: every task gets until the deadline to commit its work and end; one that does
//! not is aborted and named in the log, so one wedged module cannot keep the process
//! (and systemd's stop) waiting. Publishes and consumes nothing on the bus.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Default)]
pub struct Tasks {
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.add(name, tokio::spawn(task));
    }

    pub fn add(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.running.push((name, handle));
    }

    pub fn extend(
        &mut self,
        name: &'static str,
        handles: impl IntoIterator<Item = JoinHandle<()>>,
    ) {
        for h in handles {
            self.add(name, h);
        }
    }

    /// Waits for every task until `deadline`; aborts the rest. Returns the names of the
    /// tasks that had to be aborted.
    pub async fn join_until(self, deadline: Instant) -> Vec<&'static str> {
        let mut late = Vec::new();
        for (name, mut handle) in self.running {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                late.push(name);
            }
        }
        if !late.is_empty() {
            tracing::warn!(tasks = ?late, "tasks did not stop in time; aborted");
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_task_that_never_ends_is_aborted_at_the_deadline() {
        let mut tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("quick", async move {
            let _ = tx.send(());
        });
        tasks.spawn("stuck", std::future::pending());
        let late = tasks
            .join_until(Instant::now() + Duration::from_millis(50))
            .await;
        assert_eq!(late, ["stuck"]);
        assert!(rx.await.is_ok(), "the quick task ran to its end");
    }
}
