//! The consumer group of speed layers as serving shows it (`/api/status`, the dashboard): Kafka's
//! description of the group — members, the partitions each owns, committed offsets and lag — and
//! per partition what the master dataset records: where its archive ends (what serving answers
//! from) and its owner epoch (how many times an instance claimed it).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::Pipeline;
use crate::error::Result;
use crate::kafka::group;
use crate::storage::delta;

/// How often the group is described again.
const EVERY: Duration = Duration::from_secs(2);

/// The last description (`None` until the first one).
pub type GroupWatch = watch::Receiver<Option<Arc<Value>>>;

/// Describes the group every 2 s until `stop`; a failure keeps the last description with
/// the error beside it.
pub async fn follow(
    p: Arc<Pipeline>,
    tx: watch::Sender<Option<Arc<Value>>>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    loop {
        let v = match describe(&p).await {
            Ok(v) => v,
            Err(e) => {
                let mut last = tx.borrow().as_deref().cloned().unwrap_or_else(|| json!({}));
                last["error"] = e.report().to_string().into();
                last
            }
        };
        tx.send_replace(Some(Arc::new(v)));
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn describe(p: &Pipeline) -> Result<Value> {
    let k = &p.config.kafka;
    let g = group::describe(k, &k.group_id).await?;
    let parts: Vec<i32> = g.partitions.keys().copied().collect();
    let dir = p.layout().master()?;
    let topic = k.topic.clone();
    let table =
        tokio::task::spawn_blocking(move || delta::partition_txns(&dir, &topic, &parts, &[]))
            .await
            .map_err(|e| crate::error::Error::task("read the master dataset", e))??;
    let partitions: serde_json::Map<String, Value> = g
        .partitions
        .iter()
        .map(|(part, lag)| {
            let owner = g.members.iter().find(|m| m.partitions.contains(part));
            let t = table.get(part).cloned().unwrap_or_default();
            let v = json!({
                "owner": owner.map(|m| &m.client_id),
                "committed": lag.committed,
                "end": lag.end,
                "lag": lag.lag,
                "archived": t.archived,
                "claims": t.owner_epoch.unwrap_or(0),
            });
            (part.to_string(), v)
        })
        .collect();
    Ok(json!({
        "group_id": g.group_id,
        "state": g.state,
        "members": g.members,
        "partitions": partitions,
        "error": null,
    }))
}
