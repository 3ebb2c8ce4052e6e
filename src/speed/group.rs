//! The speed layer as a Kafka consumer group: instances started with the same `group.id` share
//! the topic's partitions through Kafka's group protocol (cooperative-sticky assignment).
//!
//! ```text
//!  rebalance callback (inside the consumer's poll)        the layer, between micro-batches
//!  ─ assigned: claim them in the table (owner epoch + 1,  ─ applies the changes in order:
//!    one Delta commit), start each at its archived end      assigned: drop what an earlier owner
//!  ─ revoked:  noted                                          left uncommitted, rebuild the state
//!                                                             from the table; revoked: commit what
//!                                                             is pending, drop the partition
//! ```
//!
//! **No shared checkpoint.** The master dataset's Delta table is the only record of where a
//! partition is: its `txn` version per partition (the archived end) and its owner epoch. Every
//! archive commit of an owner carries its epoch and is refused once another instance claimed
//! the partition ([`crate::storage::delta::Fence`]); the refused events are dropped and the new
//! owner reads them again from the archived end. So an instance killed with `kill -9`, one that
//! stops gracefully, and a paused one that comes back after losing its partitions (a zombie)
//! all leave every event in the table exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::{Pipeline, StartingOffsets};
use crate::error::{Error, Result};
use crate::kafka::QuietContext;
use crate::storage::delta::{self, Claim};
use crate::storage::segments;

use super::source::SpeedConsumer;

/// A change of the partitions this instance owns, as the rebalance callback saw it.
#[derive(Debug)]
pub(super) enum Change {
    /// Claimed in the table, assigned from their archived end.
    Assigned(BTreeMap<i32, Claim>),
    /// Taken away (or lost, after the session timed out).
    Revoked(Vec<i32>),
    /// Claiming failed: the layer stops with this error (its partitions move to the others).
    Failed(Error),
}

/// What the rebalance callback shares with the layer.
pub(super) struct Claims {
    p: Arc<Pipeline>,
    writer: Mutex<delta::Writer>,
    changes: Mutex<Vec<Change>>,
    /// Woken when a change is pushed: the layer applies it without waiting for a message.
    changed: tokio::sync::Notify,
    /// Set when the consumer closes: revoked partitions are given up at once (no layer left to
    /// commit them).
    closing: std::sync::atomic::AtomicBool,
    /// Revoked partitions not given up yet (the layer commits them first).
    held: Mutex<Vec<i32>>,
}

impl Claims {
    pub fn new(p: Arc<Pipeline>) -> Result<Arc<Self>> {
        let writer = segments::writer(&p.layout(), &p.schema)?;
        Ok(Arc::new(Claims {
            p,
            writer: Mutex::new(writer),
            changes: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
            closing: Default::default(),
            held: Mutex::new(Vec::new()),
        }))
    }

    /// The changes since the last call, in order.
    pub fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *lock(&self.changes))
    }

    /// True when changes wait to be applied.
    pub fn pending(&self) -> bool {
        !lock(&self.changes).is_empty()
    }

    /// Marks the consumer as closing (see [`Closing`]).
    fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Resolves when a change was pushed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn push(&self, c: Change) {
        lock(&self.changes).push(c);
        self.changed.notify_one();
    }

    /// Claims `parts` and returns the assignment that starts each at its archived end.
    fn claim(&self, parts: Vec<i32>) -> Result<(TopicPartitionList, BTreeMap<i32, Claim>)> {
        let topic = &self.p.config.kafka.topic;
        let views = self.p.watermarked_views();
        let claims = lock(&self.writer).claim(topic, parts, views)?;
        let mut tpl = TopicPartitionList::new();
        for (&part, c) in &claims {
            let start = match (c.archived, self.p.config.speed.starting_offsets) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartingOffsets::Earliest) => Offset::Beginning,
                (None, StartingOffsets::Latest) => Offset::End,
            };
            tpl.add_partition_offset(topic, part, start)
                .map_err(|e| Error::kafka(format!("start partition {part} at {start:?}"), e))?;
        }
        Ok((tpl, claims))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The speed layer's consumer context: librdkafka's errors logged quietly, and in a consumer
/// group the rebalance callback that claims partitions.
#[derive(Default)]
pub(super) struct SpeedContext {
    quiet: QuietContext,
    group: Option<Arc<Claims>>,
}

impl SpeedContext {
    pub fn new(group: Option<Arc<Claims>>) -> Self {
        SpeedContext {
            quiet: QuietContext::default(),
            group,
        }
    }
}

impl ClientContext for SpeedContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.quiet.log(level, fac, log_message)
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.quiet.error(error, reason)
    }
}

impl ConsumerContext for SpeedContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let Some(g) = &self.group else {
            return;
        };
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let done: KafkaResult<()> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => match g.claim(parts) {
                Ok((start, claims)) => {
                    info!(partitions = ?claims.keys().collect::<Vec<_>>(), claims = ?claims, "speed layer: partitions assigned and claimed");
                    g.push(Change::Assigned(claims));
                    if cooperative {
                        consumer.incremental_assign(&start)
                    } else {
                        consumer.assign(&start)
                    }
                }
                Err(e) => {
                    g.push(Change::Failed(e));
                    Ok(())
                }
            },
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                info!(partitions = ?parts, lost, "speed layer: partitions revoked");
                if lost || g.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    // Lost (another instance may own them already: nothing of theirs can
                    // commit), or closing (no layer left): given up at once.
                    g.push(Change::Revoked(parts));
                    unassign(consumer, tpl, cooperative)
                } else {
                    // Given up by the layer once their events are committed ([`hand_over`]):
                    // librdkafka lets the application unassign after the callback, and the
                    // group gives them to another member only then.
                    lock(&g.held).extend(parts.iter().copied());
                    g.push(Change::Revoked(parts));
                    Ok(())
                }
            }
            other => {
                warn!(code = ?other, "speed layer: rebalance error");
                Ok(())
            }
        };
        if let Err(e) = done {
            g.push(Change::Failed(Error::kafka("apply a rebalance", e)));
        }
    }
}

fn unassign<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tpl: &TopicPartitionList,
    cooperative: bool,
) -> KafkaResult<()> {
    if cooperative {
        consumer.incremental_unassign(tpl)
    } else {
        consumer.unassign()
    }
}

/// Gives up the revoked partitions the layer holds, after it committed their events: only now
/// can the group assign them to another member, which resumes them from the table. A failure
/// is logged (the group then moves them when this member's session ends).
pub(super) fn hand_over(consumer: &SpeedConsumer, claims: &Claims, topic: &str) {
    let parts = std::mem::take(&mut *lock(&claims.held));
    if parts.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition(topic, p);
    }
    let cooperative = matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    );
    if let Err(e) = unassign(consumer, &tpl, cooperative) {
        warn!(partitions = ?parts, cause = %e, "speed layer: could not give revoked partitions up");
    }
}

/// Marks the consumer as closing when dropped, and gives up what the layer still held:
/// declared after the consumer, it is dropped first, on every way out of the layer, so the
/// consumer's close never waits for a rebalance nobody answers.
pub(super) struct Closing<'c>(pub Option<Arc<Claims>>, pub &'c SpeedConsumer, pub &'c str);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.close();
            hand_over(self.1, c, self.2);
        }
    }
}
