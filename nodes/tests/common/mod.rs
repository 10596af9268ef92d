//! Helpers the integration tests share: collecting one executor run's events.

use cachedit_nodes::exec::{Event, Executor, RunId};
use std::time::Duration;

/// The events of run `run_id`, up to and including its `RunFinished` (events of other runs
/// are skipped); panics if `timeout` passes between two events.
pub fn collect_run(exec: &Executor, run_id: RunId, timeout: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let event = exec
            .events()
            .recv_timeout(timeout)
            .expect("event before timeout");
        if event.run_id() != run_id {
            continue;
        }
        let done = matches!(event, Event::RunFinished { .. });
        out.push(event);
        if done {
            return out;
        }
    }
}
