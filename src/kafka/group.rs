//! A consumer group as Kafka describes it (what `kafka-consumer-groups --describe` prints):
//! its members with the partitions each is assigned, and per partition the group's committed
//! offset, the log end and the lag between them.

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{client_config, partitions};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// One member of the group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `client.id` (lambdaflow's speed layers: `lambdaflow-speed-<host>-<pid>`).
    pub client_id: String,
    /// The address it connects from.
    pub host: String,
    /// The topic's partitions assigned to it.
    pub partitions: Vec<i32>,
}

/// One partition of the topic, as the group sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    /// The offset the group committed (`None`: never).
    pub committed: Option<i64>,
    /// The log end offset (high watermark).
    pub end: i64,
    /// Messages between them.
    pub lag: i64,
}

/// The group's description.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `group.id`.
    pub group_id: String,
    /// The coordinator's state of the group (`Stable`, `PreparingRebalance`, `Empty`…).
    pub state: String,
    /// Members, by client id.
    pub members: Vec<Member>,
    /// Per partition of the topic.
    pub partitions: BTreeMap<i32, PartitionLag>,
}

/// Describes `group_id` on the topic `k.topic`.
pub async fn describe(k: &KafkaConfig, group_id: &str) -> Result<Group> {
    let parts = partitions(k).await?;
    let (k, group_id) = (k.clone(), group_id.to_string());
    tokio::task::spawn_blocking(move || describe_blocking(&k, &group_id, &parts))
        .await
        .map_err(|e| Error::task("describe the consumer group", e))?
}

fn describe_blocking(k: &KafkaConfig, group_id: &str, parts: &[i32]) -> Result<Group> {
    let consumer: BaseConsumer = client_config(k)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(Error::KafkaConfig)?;
    let what = |w: &str| format!("{w} of consumer group `{group_id}`");
    let list = consumer
        .fetch_group_list(Some(group_id), k.connect_timeout)
        .map_err(|e| Error::kafka(what("describe"), e))?;
    let info = list.groups().iter().find(|g| g.name() == group_id);
    let mut members: Vec<Member> = info
        .map(|g| g.members())
        .unwrap_or_default()
        .iter()
        .map(|m| Member {
            member_id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().trim_start_matches('/').to_string(),
            partitions: m
                .assignment()
                .and_then(|a| assigned(a, &k.topic))
                .unwrap_or_default(),
        })
        .collect();
    members.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        tpl.add_partition(&k.topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, k.connect_timeout)
        .map_err(|e| Error::kafka(what("the committed offsets"), e))?;
    let mut out = BTreeMap::new();
    for &p in parts {
        let (_, end) = consumer
            .fetch_watermarks(&k.topic, p, k.connect_timeout)
            .map_err(|e| Error::kafka(format!("the end of partition {p}"), e))?;
        let c = match committed.find_partition(&k.topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let lag = (end - c.unwrap_or(0)).max(0);
        out.insert(
            p,
            PartitionLag {
                committed: c,
                end,
                lag,
            },
        );
    }
    Ok(Group {
        group_id: group_id.to_string(),
        state: info.map_or("Dead", |g| g.state()).to_string(),
        members,
        partitions: out,
    })
}

/// The partitions of `topic` in a member's assignment, as the consumer protocol encodes it:
/// version (i16), then [topic (i16-prefixed string), [partition (i32)]] (i32-counted arrays),
/// then user data. `None` when it is not that encoding.
fn assigned(bytes: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut r = Reader(bytes);
    r.take::<2>()?; // version
    let mut out = Vec::new();
    for _ in 0..r.i32()? {
        let len = usize::try_from(i16::from_be_bytes(r.take::<2>()?)).ok()?;
        let name = r.bytes(len)?;
        for _ in 0..r.i32()? {
            let p = r.i32()?;
            if name == topic.as_bytes() {
                out.push(p);
            }
        }
    }
    out.sort_unstable();
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_decodes_to_the_topics_partitions() {
        let mut b = vec![0, 1]; // version 1
        b.extend(2i32.to_be_bytes());
        for (t, ps) in [("orders", vec![3i32, 1]), ("other", vec![0])] {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(assigned(&b, "orders"), Some(vec![1, 3]));
        assert_eq!(assigned(&b[..9], "orders"), None, "truncated");
    }
}
