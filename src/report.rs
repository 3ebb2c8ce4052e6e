//! What the commands print: the views as Spark's `show()` tables and one summary line per
//! command. Kept out of `main` so that the dispatcher only dispatches.

use std::process::ExitCode;

use datafusion::arrow::record_batch::RecordBatch;

use crate::batch::BatchRun;
use crate::config::Pipeline;
use crate::error::Result;
use crate::produce::Produced;
use crate::serving::ServedView;
use crate::show::{DEFAULT_ROWS, show};
use crate::speed::Replay;
use crate::storage::Output;
use crate::verify::Report;

/// Prints a view's table, headed by its name when the pipeline has several views.
pub fn view(p: &Pipeline, name: &str, rows: &RecordBatch) {
    if p.views.len() > 1 {
        println!("view {name}");
    }
    print!("{}", show(rows, DEFAULT_ROWS));
}

/// After `lambdaflow batch`: each view, then the run's summary.
pub fn batch_run(p: &Pipeline, run: &BatchRun) {
    for (def, _, rows) in &run.views {
        view(p, &def.name, rows);
    }
    let (run_id, m) = (&run.run_id, &run.manifest);
    println!(
        "batch run {run_id}: {} events from {} file(s) and {} segment(s) (master table version {}, offsets {:?}), {} rejected line(s), {} ms on {}",
        m.rows,
        m.files.len(),
        m.segments,
        m.table_version.map_or("none".into(), |v| v.to_string()),
        m.offsets_of(&p.config.kafka.topic),
        m.bad,
        m.duration_ms,
        m.engine
    );
    if !run.published {
        println!(
            "printed, not published: a view of the past (--as-of), or a later batch run was \
             published meanwhile"
        );
    } else if m.bad > 0
        && let Some((def, _, _)) = run.views.first()
        && let Ok(target) = p.layout().output(Output::BatchView, &def.name)
    {
        println!(
            "rejected lines: {}",
            target.shown_file(run_id, "_dead_letter.jsonl")
        );
    }
}

/// After `lambdaflow compact`: what it merged and deleted.
pub fn compacted(c: &crate::storage::compact::Compacted) {
    println!(
        "compact: {} segment(s) merged into {} file(s), {} file(s) deleted by VACUUM, master table version {}",
        c.merged,
        c.written,
        c.deleted,
        c.version.map_or("none".into(), |v| v.to_string())
    );
}

/// After `lambdaflow serve` has merged: each view, what it is made of with `explain`.
pub fn served(p: &Pipeline, views: &[std::sync::Arc<ServedView>], explain: bool) -> Result<()> {
    for v in views {
        view(p, &v.def.name, &v.rows()?);
        if explain {
            for line in v.explain_lines()? {
                println!("{line}");
            }
        }
        let f = v.freshness(&p.config.kafka.topic);
        println!(
            "batch run {} (offsets {:?}) + speed layer up to offsets {:?}",
            f.batch_run.as_deref().unwrap_or("none"),
            f.batch_offsets,
            f.speed_offsets
        );
    }
    Ok(())
}

/// After `lambdaflow produce`: what was sent; the exit status (1 when a line was rejected).
pub fn produced(p: &Pipeline, r: &Produced, source: &str) -> ExitCode {
    if let Some(n) = r.stopped_at {
        eprintln!("error: {source}:{n}: bad line (--strict): nothing was sent");
        return ExitCode::from(2);
    }
    println!(
        "sent {} message(s) to topic {} ({}: each acknowledged by all in-sync replicas, none \
         written twice); rejected {} line(s)",
        r.sent,
        p.config.kafka.topic,
        crate::kafka::PRODUCER_GUARANTEES,
        r.rejected
    );
    ExitCode::from(u8::from(r.rejected > 0))
}

/// After `lambdaflow verify`.
pub fn verified(r: &Report) {
    for d in &r.differences {
        println!(
            "DIFFERENT view {} key {}: served {} but all the data gives {}",
            d.view,
            d.key,
            d.served
                .as_ref()
                .map_or("nothing".into(), |v| v.to_string()),
            d.truth.as_ref().map_or("nothing".into(), |v| v.to_string()),
        );
    }
    println!(
        "verify: {} key(s) compared over {} event(s) (speed offsets {:?}): {} difference(s)",
        r.keys,
        r.events,
        r.offsets,
        r.differences.len()
    );
}

/// After `lambdaflow replay`.
pub fn replayed(p: &Pipeline, r: &Replay) -> Result<()> {
    for (def, st) in p.views.iter().zip(&r.states) {
        view(p, &def.name, &def.finalize(st)?);
    }
    let secs = r.elapsed.as_secs_f64();
    println!(
        "replay: {} message(s) from topic {} (offsets {:?}), {} skipped, in {:.3} s ({:.0} messages/s)",
        r.messages,
        p.config.kafka.topic,
        r.offsets,
        r.bad,
        secs,
        r.messages as f64 / secs.max(1e-9)
    );
    Ok(())
}
