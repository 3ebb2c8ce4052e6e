//! Kappa mode: every view rebuilt from the topic alone, with the same compiled definitions and
//! the same source as the speed layer. Touches nothing on disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rdkafka::Offset;

use super::dead_letters::DeadLetterLog;
use super::source::{self, Read, Reader, consumer, replay_patience};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::view::ViewState;

/// The result of a Kappa-style replay.
pub struct Replay {
    /// Per view (config order): the state over the whole retained topic.
    pub states: Vec<ViewState>,
    /// Messages read.
    pub messages: u64,
    /// Messages that did not decode (not written anywhere: a replay changes nothing on disk).
    pub bad: u64,
    /// The offsets read up to, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Rebuilds every view from the earliest retained offset up to the high watermarks at the
/// start.
pub async fn replay(p: &Pipeline) -> Result<Replay> {
    let started = Instant::now();
    let k = &p.config.kafka;
    let ends: BTreeMap<i32, i64> = crate::kafka::watermarks(k)
        .await?
        .into_iter()
        .filter(|(_, lo, hi)| hi > lo)
        .map(|(part, _, hi)| (part, hi))
        .collect();
    let mut out = Replay {
        states: p.views.iter().map(|d| d.new_state()).collect(),
        messages: 0,
        bad: 0,
        offsets: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    if ends.is_empty() {
        out.elapsed = started.elapsed();
        return Ok(out);
    }
    let group = format!("{}-replay-{}", k.group_id, std::process::id());
    let consumer = consumer(p, &[("group.id", &group)], None)?;
    source::assign(
        &consumer,
        &k.topic,
        ends.keys().map(|&part| (part, Offset::Beginning)),
        k.connect_timeout,
    )?;
    let done = |o: &BTreeMap<i32, i64>| ends.iter().all(|(p, e)| o.get(p).is_some_and(|x| x >= e));
    let patience = replay_patience(k.connect_timeout);
    let mut rejected = DeadLetterLog::new("skipped by replay");
    let max = p.config.speed.max_batch_rows;
    let mut reader = Reader::start(p.schema.clone(), Arc::new(consumer), max)?;
    while !done(&out.offsets) {
        let read = tokio::time::timeout(patience, reader.recv())
            .await
            .map_err(|_| {
                Error::kafka_msg(format!(
                    "replay: no message from topic `{}` for {patience:?} before reaching offsets {ends:?} (at {:?})",
                    k.topic, out.offsets
                ))
            })??;
        let c = match read {
            Read::Chunk(c) => c,
            Read::Error(e) => {
                return Err(Error::kafka(format!("replay: reading `{}`", k.topic), e));
            }
        };
        let part = c.part;
        out.offsets.insert(part, c.end());
        let Some(mut c) = c.within(i64::MIN, ends.get(&part).copied().unwrap_or(i64::MIN)) else {
            continue;
        };
        for (offset, rec) in c.take_dead_letters() {
            let reason = rec["reason"].as_str().unwrap_or_default();
            rejected.rejected(&k.topic, part, offset, reason);
            out.bad += 1;
        }
        out.messages += c.len() as u64;
        for (def, st) in p.views.iter().zip(out.states.iter_mut()) {
            st.update(def, &c.batch)?;
        }
    }
    rejected.flush();
    out.elapsed = started.elapsed();
    Ok(out)
}
