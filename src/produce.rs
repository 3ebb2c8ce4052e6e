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
        .map(|(i, l)| (i + 1, trim_cr(l)))
        .filter(|(_, l)| !is_blank(l))
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn is_blank(l: &[u8]) -> bool {
    l.iter().all(u8::is_ascii_whitespace)
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

/// Lines read on a thread of their own (stdin blocks), checked and sent as they come, while
/// the deliveries of those already sent are collected.
async fn produce_stream(
    p: &Pipeline,
    input: Box<dyn Read + Send>,
    source: &str,
) -> Result<Produced> {
    let producer = kafka::producer(&p.config.kafka)?;
    kafka::metadata(&p.config.kafka, None).await?;
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(1024);
    std::thread::Builder::new()
        .name("lambdaflow-produce-read".into())
        .spawn(move || {
            for line in BufReader::new(input).split(b'\n') {
                let failed = line.is_err();
                if tx.blocking_send(line).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| Error::io("thread lambdaflow-produce-read", e))?;
    let mut sender = kafka::Sender::new(&producer, &p.config.kafka);
    let mut dec = EventDecoder::new(&p.schema);
    let (mut out, mut n) = (Produced::default(), 0usize);
    loop {
        let line = tokio::select! {
            line = rx.recv() => line,
            r = sender.delivered(), if sender.in_flight() > 0 => { r?; continue; }
        };
        let Some(line) = line else { break };
        let line = line.at(source)?;
        n += 1;
        let line = trim_cr(&line);
        if is_blank(line) {
            continue;
        }
        match dec.push(line) {
            Ok(()) => sender.send(line).await?,
            Err(e) => {
                eprintln!("{source}:{n}: rejected: {e}");
                out.rejected += 1;
            }
        }
        if dec.len() >= 4096 {
            dec.finish(); // the decoder only checks here: drop what it kept
        }
    }
    out.sent = sender.flush().await?;
    Ok(out)
}
