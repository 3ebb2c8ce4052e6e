//! Dead letters of speed layers in a consumer group: per topic partition, one JSON-lines file
//! per archived range,
//! `output/dead_letters/topic=<t>/partition=<p>/offsets=<from>-<to>[.owner=<epoch>].jsonl`
//! (no file shared by two writers — the owner's claim epoch in its name, as in the segments' —
//! no length to cut back on restart).
//!
//! The owner writes a range's file (atomically) just before the range's Delta commit, and
//! deletes it when the commit is fenced; an instance that claims the partition deletes the
//! files from the partition's archived end on (an earlier owner's, never committed). A file
//! whose range the table covers is therefore committed — except in one window: an owner killed
//! between a fenced commit and the deletion leaves a file whose records the new owner writes
//! too. Every record names its topic, partition and offset, so a reader can keep one per offset.

use super::{Layout, json_lines_values};
use crate::error::Result;

fn partition_dir(topic: &str, partition: i32) -> String {
    format!("topic={topic}/partition={partition}")
}

fn range_of(name: &str) -> Option<(i64, i64)> {
    let r = name.strip_prefix("offsets=")?.strip_suffix(".jsonl")?;
    let r = r.split_once(".owner=").map_or(r, |(r, _)| r);
    let (a, b) = r.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Writes the dead letters of `[from, to)` of a partition (`owner`: the writer's claim epoch,
/// in a consumer group); returns the file's key in [`Layout::dead_letter_ranges`].
pub fn write(
    layout: &Layout,
    topic: &str,
    (partition, owner): (i32, Option<i64>),
    (from, to): (i64, i64),
    records: &[serde_json::Value],
) -> Result<String> {
    let owner = owner.map(|e| format!(".owner={e}")).unwrap_or_default();
    let key = format!(
        "{}/offsets={from:020}-{to:020}{owner}.jsonl",
        partition_dir(topic, partition)
    );
    layout
        .dead_letter_ranges()?
        .put(&key, json_lines_values(records))?;
    Ok(key)
}

/// Deletes a partition's files from offset `from` on (see the module docs) that owners before
/// `epoch` wrote (see `segments::remove_ranges_from`).
pub fn remove_uncommitted(
    layout: &Layout,
    topic: &str,
    partition: i32,
    from: i64,
    epoch: i64,
) -> Result<()> {
    super::segments::remove_ranges_from(
        &layout.dead_letter_ranges()?,
        &partition_dir(topic, partition),
        (from, epoch),
        |name| Some((range_of(name)?.0, owner_of(name))),
        |_| false,
    )
}

/// The owner epoch in a file's name (`….owner=<e>.jsonl`), if any.
fn owner_of(name: &str) -> Option<i64> {
    name.strip_suffix(".jsonl")?
        .split_once(".owner=")?
        .1
        .parse()
        .ok()
}

/// The partitions of `topic` that have dead-letter files (committed or not).
pub fn partitions(layout: &Layout, topic: &str) -> Result<Vec<i32>> {
    let mut out: Vec<i32> = layout
        .dead_letter_ranges()?
        .list(&format!("topic={topic}"))?
        .iter()
        .filter_map(|e| {
            e.key
                .split('/')
                .nth(1)?
                .strip_prefix("partition=")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::Error;

    /// Every dead letter of `topic`, one per (partition, offset), in partition and offset order.
    pub fn read(layout: &Layout, topic: &str) -> Result<Vec<serde_json::Value>> {
        let store = layout.dead_letter_ranges()?;
        let mut out: BTreeMap<(i64, i64), serde_json::Value> = BTreeMap::new();
        for e in store.list(&format!("topic={topic}"))? {
            if range_of(e.key.rsplit('/').next().unwrap_or("")).is_none() {
                continue;
            }
            let bytes = store.get(&e.key)?;
            let text = String::from_utf8_lossy(&bytes);
            for (i, line) in text.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).map_err(|err| {
                    Error::damaged(
                        store.path_of(&e.key),
                        "dead-letter file",
                        "delete the file (its range's bad messages are then lost)",
                        format!("line {}: {err}", i + 1),
                    )
                })?;
                let key = (
                    v["partition"].as_i64().unwrap_or(-1),
                    v["offset"].as_i64().unwrap_or(-1),
                );
                out.insert(key, v);
            }
        }
        Ok(out.into_values().collect())
    }

    #[test]
    fn uncommitted_files_go_and_overlaps_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        let rec = |o: i64| serde_json::json!({"topic": "t", "partition": 1, "offset": o, "reason": "bad"});
        write(&layout, "t", (1, Some(2)), (0, 10), &[rec(3)]).unwrap();
        write(&layout, "t", (1, Some(2)), (10, 20), &[rec(12)]).unwrap();
        // An earlier owner's range (overlapping what the new owner archived) and one past the end.
        write(&layout, "t", (1, Some(1)), (10, 15), &[rec(12)]).unwrap();
        write(&layout, "t", (1, Some(1)), (20, 30), &[rec(25)]).unwrap();
        remove_uncommitted(&layout, "t", 1, 20, 2).unwrap();
        let offsets: Vec<i64> = read(&layout, "t")
            .unwrap()
            .iter()
            .map(|v| v["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(offsets, vec![3, 12]);
    }
}
