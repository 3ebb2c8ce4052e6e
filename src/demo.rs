//! The seed workshop, end to end, in one process: the batch layer on the historical dataset,
//! the speed layer consuming `real-time-orders`, the seed's three messages sent through Kafka,
//! and the serving layer's merge.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::show::{DEFAULT_ROWS, show};
use crate::storage::Output;
use crate::{batch, kafka, serving, speed};

/// The seed's three real-time orders.
pub const SEED_MESSAGES: [&str; 3] = [
    r#"{"customer":"Ali","amount":80}"#,
    r#"{"customer":"Mounir","amount":200}"#,
    r#"{"customer":"Sara","amount":40}"#,
];

/// Runs the scenario and prints the three views. The speed layer starts from a fresh state at
/// the topic's current end, so the streaming view shows exactly the messages this run sends.
pub async fn run(p: Arc<Pipeline>, messages: &[Vec<u8>]) -> Result<()> {
    let k = &p.config.kafka;
    let layout = p.layout();
    if kafka::create_topic(k, 1, None, true).await? {
        println!("Created topic {}", k.topic);
    }
    kafka::wait_for_topic(k).await?;

    println!(
        "\n== Batch layer: {} ==",
        p.config
            .batch
            .dataset
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The demo starts from a clean slate: no checkpoint, no archive (the whole Delta table).
    crate::storage::checkpoint::remove(&layout)?;
    layout.master()?.remove_all()?;
    let run = batch::run(&p, false).await?;
    for (def, _, rows) in &run.views {
        print!("{}", show(rows, DEFAULT_ROWS));
        println!(
            "batch view written to {}",
            layout.output(Output::BatchView, &def.name)?.shown()
        );
    }

    // A fresh speed layer that starts at the current end of every partition.
    let start: std::collections::BTreeMap<i32, i64> = kafka::watermarks(k)
        .await?
        .into_iter()
        .map(|(part, _, hi)| (part, hi))
        .collect();
    let (tx, mut rx) = watch::channel(Arc::new(speed::Snapshot::default()));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let opts = speed::Options {
        starting_offsets: Some(start.clone()),
        ..Default::default()
    };
    let publish = speed::Publish {
        status: Some(tx),
        updates: None,
    };
    let task = tokio::spawn(speed::run(Arc::clone(&p), opts, publish, async {
        let _ = stop_rx.await;
    }));

    println!(
        "\n== Speed layer: {} message(s) to topic {} ==",
        messages.len(),
        k.topic
    );
    let producer = kafka::producer(k)?;
    kafka::send_all(&producer, k, messages).await?;
    for m in messages {
        println!("> {}", String::from_utf8_lossy(m));
    }
    let end: std::collections::BTreeMap<i32, i64> = kafka::watermarks(k)
        .await?
        .into_iter()
        .map(|(part, _, hi)| (part, hi))
        .collect();
    let caught_up = |s: &speed::Snapshot| {
        end.iter()
            .all(|(part, hi)| s.offsets.get(part).copied().unwrap_or(start[part]) >= *hi)
    };
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        while !caught_up(&rx.borrow_and_update()) {
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    let waited = wait.await;
    let _ = stop_tx.send(());
    let stopped = task.await.map_err(|e| Error::task("speed layer", e))??;
    if waited.is_err() || !caught_up(&stopped.status) {
        return Err(Error::kafka_msg(format!(
            "the speed layer did not receive the messages from topic `{}` within 30 s",
            k.topic
        )));
    }
    for (i, def) in p.views.iter().enumerate() {
        print!(
            "{}",
            show(
                &speed::streaming_rows(def, &stopped.views, i)?,
                DEFAULT_ROWS
            )
        );
        println!(
            "streaming view written to {}",
            layout.output(Output::StreamingView, &def.name)?.shown()
        );
    }

    println!("\n== Serving layer: batch view + streaming view ==");
    for (i, (def, bstate, _)) in run.views.iter().enumerate() {
        let sstate = stopped.view_state(i, def);
        let rows = serving::serving_rows(def, Some(bstate), Some(&sstate))?;
        serving::write_serving_view(&layout, def, &rows)?;
        print!("{}", show(&rows, DEFAULT_ROWS));
        println!(
            "serving view written to {}",
            layout.output(Output::ServingView, &def.name)?.shown()
        );
    }

    // The real Lambda loop: the speed layer archived the events into the master dataset, so
    // the next batch run includes them, and serving adds only what came after its offsets.
    println!(
        "\n== Lambda loop: the batch layer recomputes (the streamed events are now in the master dataset) =="
    );
    let run2 = batch::run(&p, false).await?;
    for (_, _, rows) in &run2.views {
        print!("{}", show(rows, DEFAULT_ROWS));
    }
    println!(
        "batch run {} covers offsets {:?} of topic {}",
        run2.run_id,
        run2.manifest.offsets_of(&k.topic),
        k.topic
    );
    for v in serving::serve_once(&p)? {
        print!("{}", show(&v.rows()?, DEFAULT_ROWS));
        println!(
            "serving view = batch run {} + speed events after its offsets: {} (no double counting)",
            v.freshness(&k.topic).batch_run.as_deref().unwrap_or("none"),
            v.freshness(&k.topic).speed_events_after_batch
        );
    }
    Ok(())
}
