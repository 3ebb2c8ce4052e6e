//! # lambdaflow
//!
//! A Lambda-architecture data system: one SQL view definition, run by a batch layer (Apache
//! DataFusion over the master dataset) and a speed layer (a Kafka consumer keeping incremental
//! state), merged exactly by a serving layer.
//!
//! ## Layout
//!
//! ```text
//!             config/default.toml + lambdaflow.toml + LAMBDAFLOW_* + flags   (config)
//!                                   │
//!                      view: SQL ─► ViewDef (WHERE · keys · aggregate state · HAVING/SELECT)
//!                     ┌─────────────┴──────────────┐
//!  datasets/*.json ─► batch (DataFusion)      speed (Kafka, micro-batches) ◄─ real-time-orders
//!                     │ state + rows              │ archived segments + positions (checkpoint)
//!                     └──────────► serving: merge(batch ⊕ speed) ─► final view
//! ```
//!
//! - [`event`]: the events' declared schema and the strict decoder of JSON events (the
//!   dataset's lines and the topic's messages) into Arrow columns.
//! - [`view`]: the one definition both layers run — the compiled SQL and the mergeable
//!   aggregate state.
//! - [`batch`], [`speed`], [`serving`]: the three layers. They never call each other; they meet
//!   through `view` types and the files in [`storage`].
//! - [`storage`]: every on-disk format — the layout, atomic publication, the batch view and
//!   its manifest, the speed checkpoint, and the master dataset's archived segments (written by
//!   the speed layer, read by the batch layer, named by topic, partition and offset range).
//! - [`run`]: the three layers in one process (`lambdaflow run`); [`verify`]: a full
//!   recompute compared key by key with what serving answers.
//! - [`kafka`]: client configuration, topic administration, producer; [`produce`]: the
//!   console producer's checks; [`report`]: what the commands print.
//! - [`cli`]: the command line (every command and option); `main.rs` only dispatches.
//! - [`config`], [`runtime`], [`supervisor`]: configuration loading, logging, the batch
//!   runtime, shutdown, and the supervisor of a long-running command's tasks.

#![warn(missing_docs)]

pub mod batch;
pub mod bytes;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod event;
pub mod kafka;
pub mod produce;
pub mod report;
pub mod run;
pub mod runtime;
pub mod serving;
pub mod show;
pub mod speed;
pub mod storage;
pub mod supervisor;
pub mod verify;
pub mod view;

pub use error::{Error, Result};
