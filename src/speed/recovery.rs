//! Where a restarted speed layer resumes: the checkpoint's positions, the archive it governs
//! brought in line (pending segments the checkpoint covers are committed, the others dropped),
//! and any partition whose committed archive goes further than the checkpoint (a checkpoint
//! lost or restored from a backup) resumed after the archive, since the batch layer already
//! sees those events: reading them again would count them twice.

use std::collections::BTreeMap;

use tracing::warn;

use crate::error::Result;
use crate::event::EventSchema;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::{Layout, dead_letter_ranges, segments};

/// The checkpoint (if any) and the next offset to read per partition.
pub(super) fn resume_positions(
    layout: &Layout,
    schema: &EventSchema,
    topic: &str,
) -> Result<(Option<Checkpoint>, BTreeMap<i32, i64>)> {
    let cp = checkpoint::load(layout, topic)?;
    let mut offsets = cp.as_ref().map(|c| c.offsets.clone()).unwrap_or_default();
    segments::recover(layout, schema, topic, &offsets)?;
    for (part, end) in segments::archived_until(&segments::committed(layout)?.segments, topic) {
        if offsets.get(&part).is_none_or(|&o| o < end) {
            warn!(
                partition = part,
                offset = end,
                "the checkpoint is behind the archived segments (lost or restored?): resuming after the archive"
            );
            offsets.insert(part, end);
        }
    }
    // Dead letters kept per range (on an object store): those past the resume point are about
    // to be consumed, and kept, again.
    if layout.dead_letter().is_none() {
        for part in dead_letter_ranges::partitions(layout, topic)? {
            let from = offsets.get(&part).copied().unwrap_or(0);
            // One speed layer, no owners: every file past the resume point is its own.
            dead_letter_ranges::remove_uncommitted(layout, topic, part, from, i64::MAX)?;
        }
    }
    Ok((cp, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::segments::test_events;

    fn schema() -> EventSchema {
        EventSchema::new(crate::config::default_fields()).unwrap()
    }

    fn archive(layout: &Layout, part: i32, from: i64, to: i64, committed: bool) {
        let seg = segments::write_pending(
            layout,
            "t",
            (part, None),
            from,
            to,
            &[test_events(to - from)],
        )
        .unwrap();
        if committed {
            let range = crate::storage::delta::Range::from(&seg);
            segments::commit(layout, &schema(), vec![range], 0).unwrap();
        }
    }

    fn checkpoint_at(layout: &Layout, offsets: &[(i32, i64)]) {
        let cp = Checkpoint {
            version: 3,
            topic: "t".into(),
            batch_id: 1,
            offsets: offsets.iter().copied().collect(),
            consumed: offsets.iter().map(|o| o.1 as u64).sum(),
            dead_letter_len: 0,
            views: BTreeMap::new(),
        };
        checkpoint::write(layout, &cp).unwrap();
    }

    #[test]
    fn a_fresh_output_starts_with_no_positions() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        let (cp, offsets) = resume_positions(&layout, &schema(), "t").unwrap();
        assert!(cp.is_none() && offsets.is_empty());
    }

    #[test]
    fn the_checkpoint_decides_which_pending_segments_count() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        archive(&layout, 0, 0, 10, true);
        archive(&layout, 0, 10, 20, false); // covered by the checkpoint: committed now
        archive(&layout, 0, 20, 30, false); // written after it (crash): dropped, read again
        checkpoint_at(&layout, &[(0, 20)]);
        let (cp, offsets) = resume_positions(&layout, &schema(), "t").unwrap();
        assert_eq!(cp.unwrap().batch_id, 1);
        assert_eq!(offsets, BTreeMap::from([(0, 20)]));
        let segs = segments::committed(&layout).unwrap().segments;
        let kept: Vec<_> = segs.iter().map(|s| (s.from, s.to, s.committed)).collect();
        assert_eq!(kept, vec![(0, 10, true), (10, 20, true)]);
        assert_eq!(
            segments::on_disk(&layout).unwrap().len(),
            2,
            "the uncovered one is gone"
        );
    }

    #[test]
    fn a_checkpoint_behind_the_archive_resumes_after_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        archive(&layout, 0, 0, 10, true);
        archive(&layout, 0, 10, 25, true);
        archive(&layout, 1, 0, 7, true);
        // An older checkpoint (restored from a backup): partition 0 at 10, partition 1 unknown.
        checkpoint_at(&layout, &[(0, 10)]);
        let (_, offsets) = resume_positions(&layout, &schema(), "t").unwrap();
        assert_eq!(offsets, BTreeMap::from([(0, 25), (1, 7)]));
        // No checkpoint at all: the archive alone says where to go on.
        crate::storage::checkpoint::remove(&layout).unwrap();
        let (cp, offsets) = resume_positions(&layout, &schema(), "t").unwrap();
        assert!(cp.is_none());
        assert_eq!(offsets, BTreeMap::from([(0, 25), (1, 7)]));
    }
}
