//! The speed layer's checkpoint: `output/_speed/checkpoint.json`, one atomically renamed file.
//!
//! It records *positions*, not state: per partition the next offset to read, the batch run each
//! view's speed state continues, and the dead-letter file's length. The state itself is the
//! fold of the archived segments between the batch view's offsets and these offsets — every
//! event of that range is in a committed segment once the checkpoint is written — so recovery
//! rebuilds it from the archive, and a checkpoint costs the same at ten keys or ten million.
//! (A version-2 checkpoint, which also held the state, is read the same way: the state in it is
//! ignored and rebuilt.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Layout;
use crate::error::{Error, Result};

/// The checkpoint as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version (3: positions only).
    pub version: u32,
    /// The topic it is for.
    pub topic: String,
    /// Micro-batches processed when it was written.
    pub batch_id: u64,
    /// Per partition, the next offset to read.
    pub offsets: BTreeMap<i32, i64>,
    /// Messages consumed in total.
    pub consumed: u64,
    /// The dead-letter file's length at the checkpoint (longer: cut back on restart).
    pub dead_letter_len: u64,
    /// Per view: the batch run its speed state continued.
    pub views: BTreeMap<String, CheckpointView>,
}

/// One view in a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckpointView {
    /// The batch run the state continued (`None`: none was in service).
    pub batch_run: Option<String>,
    /// A view with a watermark: its event-time progress at the checkpoint's offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeMark>,
}

/// A view's event-time progress at a checkpoint's offsets (times in µs since the epoch), so
/// that a restarted speed layer goes on from the same watermark and counts each event late or
/// ahead once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTimeMark {
    /// The watermark.
    pub watermark: Option<i64>,
    /// Per partition, the latest event time that counts.
    pub latest: BTreeMap<i32, i64>,
    /// Late events so far.
    pub late: u64,
    /// Events ahead of the clock so far.
    pub ahead: u64,
}

impl Checkpoint {
    /// View `view`'s watermark at the checkpoint's offsets, if it has one.
    pub fn watermark(&self, view: &str) -> Option<i64> {
        self.views.get(view)?.event_time.as_ref()?.watermark
    }
}

/// Writes the checkpoint atomically (on a disk: temporary file, fsync, rename; on S3: a PUT).
pub fn write(layout: &Layout, cp: &Checkpoint) -> Result<()> {
    let bytes = serde_json::to_vec(cp).map_err(|e| Error::Internal(e.to_string()))?;
    let (store, key) = layout.speed_checkpoint()?;
    store.put(key, bytes)
}

/// Deletes the checkpoint (the speed layer then starts over from the archive's end).
pub fn remove(layout: &Layout) -> Result<()> {
    let (store, key) = layout.speed_checkpoint()?;
    store.delete(key)
}

/// Reads the checkpoint for `topic` (`None` when the speed layer never checkpointed).
pub fn load(layout: &Layout, topic: &str) -> Result<Option<Checkpoint>> {
    let (store, key) = layout.speed_checkpoint()?;
    let path = store.path_of(key);
    let bytes = match store.get(key) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        r => r?,
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
        Error::damaged(
            &path,
            "speed checkpoint",
            "move it away to resume after the archived segments",
            e,
        )
    })?;
    if cp.topic != topic {
        return Err(Error::config(format!(
            "the speed checkpoint {} is for topic `{}`, not `{topic}`; use another output.dir or \
             remove it",
            path.display(),
            cp.topic
        )));
    }
    Ok(Some(cp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_a_wrong_topic() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        assert!(load(&layout, "t").unwrap().is_none());
        let cp = Checkpoint {
            version: 3,
            topic: "t".into(),
            batch_id: 7,
            offsets: BTreeMap::from([(0, 10), (2, 4)]),
            consumed: 14,
            dead_letter_len: 99,
            views: BTreeMap::from([(
                "v".into(),
                CheckpointView {
                    event_time: None,
                    batch_run: Some("r1".into()),
                },
            )]),
        };
        write(&layout, &cp).unwrap();
        let back = load(&layout, "t").unwrap().unwrap();
        assert_eq!(back.offsets, cp.offsets);
        assert_eq!(back.views["v"].batch_run.as_deref(), Some("r1"));
        let err = load(&layout, "other").unwrap_err().to_string();
        assert!(err.contains("for topic `t`"), "{err}");
    }

    #[test]
    fn a_version_2_checkpoint_with_state_is_read_for_its_positions() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        let v2 = r#"{"version":2,"topic":"t","batch_id":3,"offsets":{"0":3},"consumed":3,
            "dead_letter_len":0,"views":{"v":{"batch_run":null,"parts":{"0":"{\"customer\":\"Ali\"}\n"}}}}"#;
        let (store, key) = layout.speed_checkpoint().unwrap();
        store.put(key, v2.as_bytes().to_vec()).unwrap();
        let cp = load(&layout, "t").unwrap().unwrap();
        assert_eq!(cp.offsets, BTreeMap::from([(0, 3)]));
        store.put(key, b"{not json".to_vec()).unwrap();
        let err = load(&layout, "t").unwrap_err();
        assert!(err.is_user_error(), "{err:?}");
        let err = err.report().to_string();
        assert!(
            err.contains("checkpoint.json: cannot read this speed checkpoint")
                && err.contains("move it away")
                && err.contains("key must be a string"),
            "{err}"
        );
    }
}
