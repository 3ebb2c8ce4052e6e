//! What the speed layer does, in a consumer group, when partitions come and go (see
//! [`super::group`]): a claimed partition starts from the table, a revoked one is committed
//! and dropped, a fenced one (claimed by another instance meanwhile) is dropped.

use std::collections::BTreeMap;

use tracing::{debug, info, warn};

use super::SpeedLayer;
use super::group::{self, Change};
use super::source::{Chunk, SpeedConsumer};
use crate::error::Result;
use crate::storage::delta::Claim;
use crate::storage::{dead_letter_ranges, segments};

/// Whether the layer takes a chunk of messages now.
pub(super) enum Owns {
    /// Yes (or there is no consumer group): these of its messages.
    Yes(Chunk),
    /// After the hand-over waiting to be applied.
    AfterHandOver(Chunk),
    /// No: its partition is another instance's, or its offsets are archived already.
    No,
}

impl SpeedLayer {
    /// Whether the chunk's partition is this instance's (see [`Owns`]).
    pub(super) fn owns(&self, c: Chunk) -> Owns {
        let Some(claims) = &self.group else {
            return Owns::Yes(c);
        };
        let part = c.part;
        // An owned partition's messages are taken even with a change pending: applying it
        // later commits (revoked) or resets (claimed again) the partition, events and state
        // alike.
        if !self.checkpointer.owns(part) {
            if claims.pending() {
                return Owns::AfterHandOver(c);
            }
            debug!(
                partition = part,
                offsets = ?(c.first_offset()..c.end()),
                "skipping messages of a partition this instance does not own"
            );
            return Owns::No;
        }
        // Messages fetched before the consumer was moved to the archived end are not taken.
        let from = self.snap.offsets.get(&part).copied().unwrap_or(i64::MIN);
        c.within(from, i64::MAX).map_or(Owns::No, Owns::Yes)
    }

    /// Applies the rebalances seen since the last call, and drops fenced partitions.
    pub(super) async fn apply_changes(&mut self, consumer: &SpeedConsumer) -> Result<()> {
        let Some(claims) = self.group.clone() else {
            return Ok(());
        };
        let changes = claims.take();
        let mut changed = self.drop_fenced();
        for c in changes {
            changed = true;
            match c {
                Change::Assigned(claims) => self.claimed(claims)?,
                Change::Revoked(parts) => {
                    // Commit what is pending, then give the partitions up: the next owner
                    // claims them after (or, when they were lost, has already: then refused).
                    self.checkpoint(true).await?;
                    for &p in &parts {
                        self.forget(p);
                    }
                    group::hand_over(consumer, &claims, &self.p.config.kafka.topic);
                }
                Change::Failed(e) => return Err(e),
            }
        }
        if changed {
            self.snap.owned = self.checkpointer.owned();
            self.snap.checkpointed = self.checkpointer.committed().clone();
            self.send_status(true);
            self.send_reset().await;
        }
        Ok(())
    }

    /// Partitions claimed: what earlier owners left uncommitted goes, and each one's state is
    /// rebuilt from the table (the events after the batch view's offsets, up to the archived
    /// end, where the consumer starts).
    fn claimed(&mut self, claims: BTreeMap<i32, Claim>) -> Result<()> {
        let topic = self.p.config.kafka.topic.clone();
        let mut bound = BTreeMap::new();
        for (&part, c) in &claims {
            self.forget(part);
            let end = c.archived.unwrap_or(0);
            segments::remove_uncommitted(&self.layout, &topic, part, end, c.epoch)?;
            dead_letter_ranges::remove_uncommitted(&self.layout, &topic, part, end, c.epoch)?;
            if let Some(o) = c.archived {
                self.snap.offsets.insert(part, o);
                bound.insert(part, o);
            }
            self.checkpointer.own(part, c.epoch);
            // The watermark goes on from the latest event time the earlier owners archived.
            let now = std::time::Instant::now();
            for def in self.p.views.iter().filter(|d| d.watermark().is_some()) {
                let et = self.snap.event_time.entry(def.name.clone()).or_default();
                et.claim(part, c.event_times.get(&def.name).copied(), now);
            }
        }
        let todo: Vec<(usize, BTreeMap<i32, i64>)> = self
            .views
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let after = v.batch.as_ref().map(|b| b.manifest.offsets_of(&topic));
                (i, after.unwrap_or_default())
            })
            .collect();
        let started = std::time::Instant::now();
        let states = crate::view::state::rebuild(&self.p, &self.layout, &todo, &bound)?;
        for ((i, _), parts) in todo.into_iter().zip(states) {
            self.views[i].parts.extend(parts);
        }
        info!(partitions = ?claims.keys().collect::<Vec<_>>(), from = ?bound,
              ms = started.elapsed().as_millis() as u64,
              "speed layer: claimed partitions resume from the master dataset");
        Ok(())
    }

    /// Drops the partitions another instance claimed while this one was archiving them (their
    /// refused events are read again by the new owner). Returns whether there were any.
    pub(super) fn drop_fenced(&mut self) -> bool {
        let fenced = self.checkpointer.take_fenced();
        for &(part, epoch) in &fenced {
            warn!(
                partition = part,
                owner_epoch = epoch,
                "speed layer: another instance owns this partition now; its events not yet archived here are dropped (the owner reads them again)"
            );
            self.forget(part);
        }
        !fenced.is_empty()
    }

    /// Forgets a partition: its state, position and unarchived events.
    fn forget(&mut self, part: i32) {
        for v in &mut self.views {
            v.parts.remove(&part);
        }
        self.snap.offsets.remove(&part);
        for et in self.snap.event_time.values_mut() {
            et.forget(part);
        }
        self.checkpointer.forget(part);
    }
}
