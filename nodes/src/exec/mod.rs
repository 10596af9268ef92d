//! The executor: runs workflows on a background thread and reports events.

pub mod context;
pub mod data;
pub mod events;
