//! The executor thread: validates a workflow, orders it, skips nodes whose key is memoized
//! (node reuse), runs the rest, and reports everything as run-tagged events.

use super::memo::node_key;
use super::message;
use crate::document::{NodeId, Workflow};
use crate::events::{Event, RunId, RunOutcome};
use crate::graph::preflight::preflight;
use crate::graph::ron_io::to_ron_string;
use crate::graph::topo::topological_order;
use crate::graph::validate::{resolve_params, validate};
use crate::registry::context::NodeContext;
use crate::registry::data::Data;
use crate::registry::{Inputs, NodeError, Outputs, Registry};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Capacity of the event channel: enough for a long run's steps between two UI frames; a
/// full channel makes the executor wait rather than drop events.
pub const EVENT_CAPACITY: usize = 4096;

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Where output nodes (Save Image) write.
    pub output_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not start the executor thread: {0}")]
    Spawn(std::io::Error),
    #[error("the executor thread has stopped")]
    Stopped,
}

enum Command {
    Run {
        run_id: RunId,
        workflow: Box<Workflow>,
        cancel: Arc<AtomicBool>,
    },
    SetOutputDir(PathBuf),
}

type CancelFlags = Arc<Mutex<Vec<(RunId, Arc<AtomicBool>)>>>;

/// Handle to the executor thread. Dropping it stops the thread after the current node.
pub struct Executor {
    commands: Option<Sender<Command>>,
    events: Receiver<Event>,
    cancel_flags: CancelFlags,
    next_run_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl Executor {
    pub fn spawn(registry: Registry, config: ExecConfig) -> Result<Self, ExecError> {
        let (command_tx, command_rx) = bounded::<Command>(64);
        let (event_tx, event_rx) = bounded::<Event>(EVENT_CAPACITY);
        let cancel_flags: CancelFlags = Arc::default();
        let flags = cancel_flags.clone();
        let thread = std::thread::Builder::new()
            .name("cachedit-executor".into())
            .spawn(move || {
                let mut worker = Worker {
                    registry,
                    output_dir: config.output_dir,
                    memo: HashMap::new(),
                    events: event_tx,
                };
                for command in command_rx {
                    match command {
                        Command::Run {
                            run_id,
                            workflow,
                            cancel,
                        } => {
                            worker.run(run_id, &workflow, &cancel);
                            if let Ok(mut f) = flags.lock() {
                                f.retain(|(id, _)| *id != run_id);
                            }
                        }
                        Command::SetOutputDir(dir) => worker.output_dir = dir,
                    }
                }
            })
            .map_err(ExecError::Spawn)?;
        Ok(Executor {
            commands: Some(command_tx),
            events: event_rx,
            cancel_flags,
            next_run_id: AtomicU64::new(1),
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) -> Result<(), ExecError> {
        self.commands
            .as_ref()
            .ok_or(ExecError::Stopped)?
            .send(command)
            .map_err(|_| ExecError::Stopped)
    }

    /// Queues a run of `workflow` and returns its id; events for it follow on [`Self::events`].
    pub fn run(&self, workflow: Workflow) -> Result<RunId, ExecError> {
        let run_id = self.next_run_id.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(mut f) = self.cancel_flags.lock() {
            f.push((run_id, cancel.clone()));
        }
        self.send(Command::Run {
            run_id,
            workflow: Box::new(workflow),
            cancel,
        })?;
        Ok(run_id)
    }

    /// Changes where output nodes write, from the next run on.
    pub fn set_output_dir(&self, dir: PathBuf) -> Result<(), ExecError> {
        self.send(Command::SetOutputDir(dir))
    }

    /// Cancels the running run and every queued one; takes effect between sampler steps.
    pub fn cancel(&self) {
        if let Ok(f) = self.cancel_flags.lock() {
            for (_, flag) in f.iter() {
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.cancel();
        // Closing the command channel ends the thread's loop.
        self.commands = None;
        // Keep draining so a thread blocked on a full event channel can finish.
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = thread.join();
        }
    }
}

/// State owned by the executor thread.
struct Worker {
    registry: Registry,
    output_dir: PathBuf,
    /// Node reuse: last key and outputs per node id.
    memo: HashMap<NodeId, (u64, Outputs)>,
    events: Sender<Event>,
}

impl Worker {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn fail(&self, run_id: RunId, node: Option<NodeId>, message: String) {
        self.emit(Event::NodeError {
            run_id,
            node,
            message,
        });
    }

    fn run(&mut self, run_id: RunId, wf: &Workflow, cancel: &AtomicBool) {
        let started = Instant::now();
        let outcome = self.run_inner(run_id, wf, cancel);
        self.emit(Event::RunFinished {
            run_id,
            outcome,
            ms: started.elapsed().as_secs_f64() * 1e3,
        });
    }

    fn run_inner(&mut self, run_id: RunId, wf: &Workflow, cancel: &AtomicBool) -> RunOutcome {
        // The checks outside the document (model files, classes, latents, the output folder)
        // come before anything runs, so a run cannot fail after minutes of sampling on a
        // problem that was there from the start.
        let checked = validate(wf, &self.registry)
            .and_then(|()| preflight(wf, &self.registry, Some(&self.output_dir)));
        if let Err(errors) = checked {
            self.emit(Event::RunStarted {
                run_id,
                order: Vec::new(),
            });
            for e in errors {
                self.fail(run_id, e.node(), e.to_string());
            }
            return RunOutcome::Failed;
        }
        let order = match topological_order(wf) {
            Ok(order) => order,
            Err(nodes) => {
                self.fail(
                    run_id,
                    nodes.first().copied(),
                    "the graph has a cycle".into(),
                );
                return RunOutcome::Failed;
            }
        };
        self.emit(Event::RunStarted {
            run_id,
            order: order.clone(),
        });
        // Forget nodes that are gone from the document.
        self.memo.retain(|id, _| wf.node(*id).is_some());
        let workflow_ron = match to_ron_string(wf) {
            Ok(text) => text,
            Err(e) => {
                self.fail(run_id, None, e.to_string());
                return RunOutcome::Failed;
            }
        };

        let mut keys: HashMap<NodeId, u64> = HashMap::new();
        let mut outputs: HashMap<NodeId, Outputs> = HashMap::new();
        for id in order {
            if cancel.load(Ordering::Relaxed) {
                return RunOutcome::Cancelled;
            }
            match self.run_node(
                run_id,
                wf,
                id,
                &workflow_ron,
                cancel,
                &mut keys,
                &mut outputs,
            ) {
                Ok(()) => {}
                Err(NodeError::Cancelled) => {
                    self.memo.remove(&id);
                    return RunOutcome::Cancelled;
                }
                Err(e) => {
                    self.memo.remove(&id);
                    let text = message::one_line(&e.to_string());
                    self.fail(run_id, Some(id), format!("{}: {text}", wf.describe(id)));
                    return RunOutcome::Failed;
                }
            }
        }
        RunOutcome::Completed
    }

    #[allow(clippy::too_many_arguments)]
    fn run_node(
        &mut self,
        run_id: RunId,
        wf: &Workflow,
        id: NodeId,
        workflow_ron: &str,
        cancel: &AtomicBool,
        keys: &mut HashMap<NodeId, u64>,
        outputs: &mut HashMap<NodeId, Outputs>,
    ) -> Result<(), NodeError> {
        let node = wf
            .node(id)
            .ok_or_else(|| NodeError::Other(format!("node {id} vanished")))?;
        let kind = self
            .registry
            .kind(&node.kind)
            .ok_or_else(|| NodeError::Other(format!("unknown kind {:?}", node.kind)))?;
        let spec = kind.spec();
        let params = resolve_params(node, &spec).map_err(|errors| {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            NodeError::Other(text.join("; "))
        })?;

        let mut inputs = Inputs::default();
        let mut upstream = Vec::new();
        for port in &spec.inputs {
            let target = crate::document::PortRef::new(id, port.name);
            let Some(link) = wf.link_into(&target) else {
                continue;
            };
            let data: Option<Data> = outputs
                .get(&link.from.node)
                .and_then(|o| o.get(&link.from.port))
                .cloned();
            let data = data.ok_or_else(|| {
                NodeError::Other(format!(
                    "{} produced no `{}`",
                    wf.describe(link.from.node),
                    link.from.port
                ))
            })?;
            inputs.0.insert(port.name.to_string(), data);
            let up_key = keys.get(&link.from.node).copied().unwrap_or(0);
            upstream.push((port.name.to_string(), up_key, link.from.port.clone()));
        }
        let key = node_key(&node.kind, &params, &upstream);
        keys.insert(id, key);

        self.emit(Event::NodeStarted { run_id, node: id });
        let started = Instant::now();
        if let Some((memo_key, memo_out)) = self.memo.get(&id) {
            if *memo_key == key {
                outputs.insert(id, memo_out.clone());
                self.emit(Event::NodeFinished {
                    run_id,
                    node: id,
                    ms: started.elapsed().as_secs_f64() * 1e3,
                    reused: true,
                });
                return Ok(());
            }
        }
        let ctx = NodeContext {
            run_id,
            node: id,
            output_dir: &self.output_dir,
            workflow_ron,
            events: &self.events,
            cancel,
        };
        // A panic in a node (a bug, or a library that panics on a bad file) ends this node
        // with an error on it; the executor thread and the next run are unharmed.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kind.run(&ctx, &inputs, &params)
        }));
        let out = match run {
            Ok(result) => result?,
            Err(payload) => return Err(NodeError::Panicked(message::panic_text(payload.as_ref()))),
        };
        self.memo.insert(id, (key, out.clone()));
        outputs.insert(id, out);
        self.emit(Event::NodeFinished {
            run_id,
            node: id,
            ms: started.elapsed().as_secs_f64() * 1e3,
            reused: false,
        });
        Ok(())
    }
}
