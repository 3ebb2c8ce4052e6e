//! `lambdaflow produce`: a console producer that checks every line against the declared schema
//! before anything is sent. A bad line is reported as `source:line: rejected: reason` and not
//! sent; with `strict`, the first bad line stops everything and nothing is sent.

use crate::config::Pipeline;
use crate::error::Result;
use crate::event::EventDecoder;
use crate::kafka;

/// What a produce run did.
#[derive(Debug, Default)]
pub struct Produced {
    /// Lines sent.
    pub sent: usize,
    /// Lines rejected (reported on stderr with their line number).
    pub rejected: usize,
    /// With `strict`: the line that stopped the run (nothing was sent).
    pub stopped_at: Option<usize>,
}

/// The non-blank lines of `text`, with their 1-based line numbers (a trailing `\r` removed).
pub fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
}

/// Checks `text` line by line, then sends the good lines to the topic.
pub async fn produce(p: &Pipeline, text: &[u8], source: &str, strict: bool) -> Result<Produced> {
    let mut good = Vec::new();
    let mut out = Produced::default();
    let mut dec = EventDecoder::new(&p.schema);
    for (n, line) in lines(text) {
        match dec.push(line) {
            Ok(()) => good.push(line.to_vec()),
            Err(e) => {
                eprintln!("{source}:{n}: rejected: {e}");
                out.rejected += 1;
                if strict {
                    out.stopped_at = Some(n);
                    return Ok(out);
                }
            }
        }
    }
    let producer = kafka::producer(&p.config.kafka)?;
    kafka::metadata(&p.config.kafka, None).await?;
    kafka::send_all(&producer, &p.config.kafka, &good).await?;
    out.sent = good.len();
    Ok(out)
}
