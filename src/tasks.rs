//! Work that may outlive its request (forwards, Redis writes of a claim's end), tracked
//! per worker so that shutdown waits for it. A leaf: `state` owns the trackers and `store`
//! spawns on them, and neither imports the other for it.

use std::sync::OnceLock;

use tokio_util::task::TaskTracker;

/// A tracker per worker, made on the worker's own thread so that its counters, written by
/// every forward, share no cache line with another worker's; each worker waits for its own
/// within `shutdown_grace`.
pub struct Tasks(Box<[OnceLock<TaskTracker>]>);

impl Tasks {
    pub fn new(workers: usize) -> Tasks {
        Tasks((0..workers.max(1)).map(|_| OnceLock::new()).collect())
    }

    /// Worker `worker`'s tracker, made by the first call (the worker's, as it starts).
    pub fn of(&self, worker: usize) -> &TaskTracker {
        self.0[worker % self.0.len()].get_or_init(TaskTracker::new)
    }
}
