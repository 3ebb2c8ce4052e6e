//! `lambdaflow produce`: a console producer that checks every line against the declared schema
//! before anything is sent. A bad line is reported as `source:line: rejected: reason` and not
//! sent; with `strict`, the first bad line stops everything and nothing is sent.

use std::io::Read;
use std::path::Path;

use crate::config::Pipeline;
use crate::error::{IoContext, Result};
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

/// `lambdaflow produce [--file F] [--strict]`: the lines of `file` (stdin without one),
/// checked, then sent. Returns what was done and the source's name for messages.
pub async fn produce_input(
    p: &Pipeline,
    file: Option<&Path>,
    strict: bool,
) -> Result<(Produced, String)> {
    let mut text = Vec::new();
    let source = match file {
        Some(f) => {
            text = std::fs::read(f).at(f)?;
            f.display().to_string()
        }
        None => {
            std::io::stdin().lock().read_to_end(&mut text).at("stdin")?;
            "stdin".to_string()
        }
    };
    let r = produce(p, &text, &source, strict).await?;
    Ok((r, source))
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
