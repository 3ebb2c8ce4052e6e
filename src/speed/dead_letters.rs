//! Rejected messages in the log, summarized. The first of an interval is logged with its topic,
//! partition, offset and reason; the others are counted per kind of reason and logged as one
//! line when the interval ([`INTERVAL`]) is over. Every record is in the dead-letter file
//! either way, so hours of bad input cost a few log lines a minute, not one per message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::event::reason_kind;

/// How often the counts are logged.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The rejections since the last summary line.
pub struct DeadLetterLog {
    /// What happened to a rejected message: "sent to the dead-letter file", "skipped".
    what: &'static str,
    since: Instant,
    /// The first rejection of this interval was logged in full.
    logged_one: bool,
    /// Rejections after the first, per kind of reason.
    more: BTreeMap<String, u64>,
}

impl DeadLetterLog {
    /// A log whose lines say the message was `what`.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            since: Instant::now(),
            logged_one: false,
            more: BTreeMap::new(),
        }
    }

    /// One rejected message.
    pub fn rejected(&mut self, topic: &str, partition: i32, offset: i64, reason: &str) {
        if self.logged_one {
            debug!(topic, partition, offset, reason, "message {}", self.what);
            *self
                .more
                .entry(reason_kind(reason).to_string())
                .or_default() += 1;
        } else {
            warn!(
                topic,
                partition,
                offset,
                reason,
                "message {} (the next ones are counted for {} s, then summarized)",
                self.what,
                INTERVAL.as_secs()
            );
            self.logged_one = true;
        }
        self.tick();
    }

    /// Logs the summary when the interval is over (call it now and then).
    pub fn tick(&mut self) {
        if self.since.elapsed() >= INTERVAL {
            self.flush();
        }
    }

    /// Logs what is counted now and starts a new interval.
    pub fn flush(&mut self) {
        let n: u64 = self.more.values().sum();
        if n > 0 {
            let reasons = self
                .more
                .iter()
                .map(|(k, c)| format!("{k}: {c}"))
                .collect::<Vec<_>>()
                .join("; ");
            warn!(
                count = n,
                reasons = %reasons,
                "{n} more message(s) {} in the last {} s (each with its offset in the dead-letter file)",
                self.what,
                self.since.elapsed().as_secs()
            );
        }
        self.more.clear();
        self.logged_one = false;
        self.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_by_kind() {
        assert_eq!(
            reason_kind("not valid JSON: expected value (column 1)"),
            "not valid JSON"
        );
        assert_eq!(
            reason_kind("not UTF-8 (invalid byte at position 3)"),
            "not UTF-8"
        );
        assert_eq!(
            reason_kind("field `amount`: expected a number, found string \"x\" (column 9)"),
            "field `amount`: expected a number"
        );
        assert_eq!(
            reason_kind("missing field `amount`"),
            "missing field `amount`"
        );
        let mut log = DeadLetterLog::new("skipped");
        for off in 0..5 {
            log.rejected("t", 0, off, "missing field `amount`");
        }
        log.rejected("t", 0, 5, "not valid JSON: eof (column 3)");
        assert!(log.logged_one);
        assert_eq!(log.more["missing field `amount`"], 4);
        assert_eq!(log.more["not valid JSON"], 1);
        log.flush();
        assert!(log.more.is_empty() && !log.logged_one);
    }
}
