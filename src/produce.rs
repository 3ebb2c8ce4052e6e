//! `lambdaflow produce`: a console producer that checks every line against the declared schema
//! before it is sent. A bad line is reported as `source:line: rejected: reason` and not sent.
//!
//! Like `kafka-console-producer`, lines are sent as they are read (a pipe that writes a line
//! now and then gets each one to the topic right away), and memory stays bounded on any input
//! size. With `strict`, the whole input is checked first and the first bad line stops
//! everything: nothing is sent.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use tokio::sync::mpsc;

use crate::config::Pipeline;
use crate::error::{Error, IoContext, Result};
use crate::event::EventDecoder;
use crate::kafka;

/// What a produce run did.
#[derive(Debug, Default)]
pub struct Produced {
    /// Lines sent (each acknowledged by the brokers).
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

/// `lambdaflow produce [--file F] [--strict]`: the lines of `file` (stdin without one).
/// Returns what was done and the source's name for messages.
pub async fn produce_input(
    p: &Pipeline,
    file: Option<&Path>,
    strict: bool,
) -> Result<(Produced, String)> {
    let (source, input): (String, Box<dyn Read + Send>) = match file {
        Some(f) => (
            f.display().to_string(),
            Box::new(std::fs::File::open(f).at(f)?),
        ),
        None => ("stdin".to_string(), Box::new(std::io::stdin())),
    };
    let r = if strict {
        let mut text = Vec::new();
        BufReader::new(input)
            .read_to_end(&mut text)
            .at(source.as_str())?;
        produce_checked(p, &text, &source).await?
    } else {
        produce_stream(p, input, &source).await?
    };
    Ok((r, source))
}

/// `--strict`: every line checked, then all sent, or none when one is bad.
async fn produce_checked(p: &Pipeline, text: &[u8], source: &str) -> Result<Produced> {
    let mut dec = EventDecoder::new(&p.schema);
    let mut good = Vec::new();
    for (n, line) in lines(text) {
        if let Err(e) = dec.push(line) {
            eprintln!("{source}:{n}: rejected: {e}");
            return Ok(Produced {
                rejected: 1,
                stopped_at: Some(n),
                ..Produced::default()
            });
        }
        good.push(line.to_vec());
    }
    let producer = kafka::producer(&p.config.kafka)?;
    kafka::metadata(&p.config.kafka, None).await?;
    kafka::send_all(&producer, &p.config.kafka, &good).await?;
    Ok(Produced {
        sent: good.len(),
        ..Produced::default()
    })
}

/// Input read on a thread of their own (stdin blocks) in chunks of whole lines — what has
/// arrived so far, so an interactive line goes at once and a file goes in large chunks —
/// checked and sent as they come, while the deliveries of those already sent are collected.
async fn produce_stream(
    p: &Pipeline,
    input: Box<dyn Read + Send>,
    source: &str,
) -> Result<Produced> {
    let producer = kafka::producer(&p.config.kafka)?;
    kafka::metadata(&p.config.kafka, None).await?;
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    std::thread::Builder::new()
        .name("lambdaflow-produce-read".into())
        .spawn(move || read_chunks(input, &tx))
        .map_err(|e| Error::io("thread lambdaflow-produce-read", e))?;
    let mut sender = kafka::Sender::new(&producer, &p.config.kafka);
    let mut dec = EventDecoder::new(&p.schema);
    let (mut out, mut base) = (Produced::default(), 0usize);
    loop {
        let chunk = tokio::select! {
            chunk = rx.recv() => chunk,
            r = sender.delivered(), if sender.in_flight() > 0 => { r?; continue; }
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.at(source)?;
        for (n, line) in lines(&chunk) {
            match dec.push(line) {
                Ok(()) => sender.send(line).await?,
                Err(e) => {
                    eprintln!("{source}:{}: rejected: {e}", base + n);
                    out.rejected += 1;
                }
            }
        }
        dec.finish(); // the decoder only checks: drop what it kept
        base += chunk.iter().filter(|&&b| b == b'\n').count();
    }
    out.sent = sender.flush().await?;
    Ok(out)
}

/// Sends `input` to `tx` in chunks of whole lines (the last one may lack its newline), each
/// what one read brought in; stops at the end, at an error (sent on), or when `tx` is closed.
fn read_chunks(input: Box<dyn Read + Send>, tx: &mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut r = BufReader::with_capacity(1 << 20, input);
    let mut carry = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if buf.is_empty() {
            if !carry.is_empty() {
                let _ = tx.blocking_send(Ok(carry));
            }
            return;
        }
        let len = buf.len();
        let chunk = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                let mut chunk = std::mem::take(&mut carry);
                chunk.extend_from_slice(&buf[..=i]);
                carry.extend_from_slice(&buf[i + 1..]);
                Some(chunk)
            }
            None => {
                carry.extend_from_slice(buf);
                None
            }
        };
        r.consume(len);
        if let Some(chunk) = chunk
            && tx.blocking_send(Ok(chunk)).is_err()
        {
            return;
        }
    }
}
