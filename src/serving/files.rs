//! `lambdaflow serve`: serving from what the layers wrote — the batch views in service, and the
//! speed part rebuilt from the archived segments after their offsets, up to the speed
//! checkpoint's. Followed incrementally: each newly committed segment is read once and merged
//! as a delta; a new batch view rebuilds that view's table off the request path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{ServedView, ServingState, http, write_served};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::speed::EventTime;
use crate::storage::checkpoint::{self, EventTimeMark};
use crate::storage::{Layout, batch_view, dead_letter_ranges, delta, event_time, segments};
use crate::supervisor::{SHUTDOWN_LIMIT, Supervisor};

/// Where the speed part stops, per partition: the end of the archive, or the speed checkpoint's
/// offset where it is further (a speed layer between its checkpoint and the commit). Speed
/// layers in a consumer group write no checkpoint: the archive is all there is — its segments,
/// and for a partition with dead letters, the table's `txn` version, which also counts the
/// ranges that held only bad messages (they have no segment).
pub fn speed_bound(p: &Pipeline, layout: &Layout) -> Result<BTreeMap<i32, i64>> {
    let topic = &p.config.kafka.topic;
    let mut out = segments::archived_until(&segments::committed(layout)?.segments, topic);
    let mut raise = |part: i32, o: i64| {
        let e = out.entry(part).or_insert(o);
        *e = (*e).max(o);
    };
    let with_dead_letters = dead_letter_ranges::partitions(layout, topic)?;
    if !with_dead_letters.is_empty() {
        for (part, t) in delta::partition_txns(&layout.master()?, topic, &with_dead_letters, &[])? {
            if let Some(o) = t.archived {
                raise(part, o);
            }
        }
    }
    if let Some(c) = checkpoint::load(layout, topic)? {
        for (part, o) in c.offsets {
            raise(part, o);
        }
    }
    Ok(out)
}

/// Every view as served from the files (see the module docs).
pub fn from_files(p: &Pipeline, layout: &Layout) -> Result<Vec<Arc<ServedView>>> {
    let bound = speed_bound(p, layout)?;
    let views = build(p, layout, &(0..p.views.len()).collect::<Vec<_>>(), &bound)?;
    let times = EventTimes::load(p, layout, &bound)?;
    expire(p, &views, &times.now);
    Ok(views)
}

/// Each view's event-time progress as the files record it ([`event_time::marks`]), followed.
#[derive(Default)]
struct EventTimes {
    /// What the files recorded at the last read.
    marks: BTreeMap<String, EventTimeMark>,
    /// The progress served.
    now: BTreeMap<String, EventTime>,
}

impl EventTimes {
    /// What the files record now, followed once.
    fn load(p: &Pipeline, layout: &Layout, bound: &BTreeMap<i32, i64>) -> Result<Self> {
        let mut times = EventTimes::default();
        times.read(p, layout, bound)?;
        times.advance(p);
        Ok(times)
    }

    /// Reads what the files record now (the partitions: those of `bound`).
    fn read(&mut self, p: &Pipeline, layout: &Layout, bound: &BTreeMap<i32, i64>) -> Result<()> {
        let parts: Vec<i32> = bound.keys().copied().collect();
        self.marks = event_time::marks(p, layout, &parts)?;
        Ok(())
    }

    /// Moves each view's watermark where the marks put it; returns whether one moved. One speed
    /// layer's checkpoint says its watermark; a consumer group's partitions are followed, an
    /// idle one left out after its `idle-timeout` (see [`EventTime::follow`]).
    fn advance(&mut self, p: &Pipeline) -> bool {
        let now = Instant::now();
        let mut moved = false;
        for def in &p.views {
            let (Some(policy), Some(m)) = (def.watermark(), self.marks.get(&def.name)) else {
                continue;
            };
            let et = self.now.entry(def.name.clone()).or_default();
            if p.config.speed.consumer_group {
                moved |= et.follow(m, policy, now);
            } else if m.watermark != et.watermark {
                *et = EventTime::resume(m);
                moved = true;
            }
        }
        moved
    }
}

/// Drops the windows beyond each view's retention, cut where its watermark puts it (the batch
/// layer cuts at the files' watermark too, never ahead of this one).
fn expire(p: &Pipeline, views: &[Arc<ServedView>], times: &BTreeMap<String, EventTime>) {
    let _fence = super::updating();
    for v in views {
        let wm = times.get(&v.def.name).and_then(|e| e.watermark);
        if let Some(h) = wm.and_then(|wm| v.def.horizon(wm)) {
            v.expire(h, &p.config.kafka.topic);
        }
    }
}

fn build(
    p: &Pipeline,
    layout: &Layout,
    which: &[usize],
    bound: &BTreeMap<i32, i64>,
) -> Result<Vec<Arc<ServedView>>> {
    let topic = &p.config.kafka.topic;
    let mut batches = Vec::new();
    let mut todo = Vec::new();
    for &i in which {
        let b = batch_view::load_published(layout, &p.views[i])?.map(Arc::new);
        let after = b
            .as_ref()
            .map(|b| b.manifest.offsets_of(topic))
            .unwrap_or_default();
        todo.push((i, after));
        batches.push(b);
    }
    let states = crate::view::state::rebuild(p, layout, &todo, bound)?;
    which
        .iter()
        .zip(batches)
        .zip(states)
        .map(|((&i, b), parts)| {
            let def = &p.views[i];
            let mut s = def.new_state();
            for st in parts.values() {
                s.merge(st);
            }
            Ok(Arc::new(ServedView::build(def, b, s, bound.clone())?))
        })
        .collect()
}

/// Reads what the layers published, merges, and writes `serving_view.json/` for every view.
pub fn serve_once(p: &Pipeline) -> Result<Vec<Arc<ServedView>>> {
    let layout = p.layout();
    layout.check_writable()?;
    let views = from_files(p, &layout)?;
    for v in &views {
        write_served(&layout, v)?;
    }
    Ok(views)
}

/// Follows the files: what the served views were built from, and how to bring them up to date.
struct Follower {
    p: Arc<Pipeline>,
    layout: Layout,
    /// Per view: the batch run its table holds.
    runs: Vec<Option<String>>,
    /// Where the speed part of every table stops.
    bound: BTreeMap<i32, i64>,
    /// The views' event-time progress.
    times: EventTimes,
}

impl Follower {
    /// Brings `views` up to date; returns the views to serve when anything changed.
    fn refresh(&mut self, views: &[Arc<ServedView>]) -> Result<Option<Vec<Arc<ServedView>>>> {
        let runs: Vec<Option<String>> = self
            .p
            .views
            .iter()
            .map(|d| batch_view::published_run(&self.layout, d))
            .collect::<Result<_>>()?;
        let bound = speed_bound(&self.p, &self.layout)?;
        if runs == self.runs && bound == self.bound {
            // Nothing new; a watermark may still move (a partition gone idle).
            let moved = self.times.advance(&self.p);
            if moved {
                expire(&self.p, views, &self.times.now);
            }
            return Ok(moved.then(|| views.to_vec()));
        }
        if bound != self.bound {
            self.times.read(&self.p, &self.layout, &bound)?;
        }
        self.times.advance(&self.p);
        // A new batch view: rebuild that view's table. The others take the new segments.
        let swap: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i] != self.runs[i])
            .collect();
        let mut out = views.to_vec();
        for (i, v) in swap
            .iter()
            .zip(build(&self.p, &self.layout, &swap, &bound)?)
        {
            out[*i] = v;
        }
        let keep: Vec<usize> = (0..runs.len()).filter(|i| !swap.contains(i)).collect();
        if !keep.is_empty() && bound != self.bound {
            let topic = &self.p.config.kafka.topic;
            let todo: Vec<(usize, BTreeMap<i32, i64>)> = keep
                .iter()
                .map(|&i| {
                    let batch = out[i]
                        .read()
                        .batch()
                        .map(|b| b.manifest.offsets_of(topic))
                        .unwrap_or_default();
                    let mut after = batch;
                    for (part, o) in &self.bound {
                        let e = after.entry(*part).or_insert(*o);
                        *e = (*e).max(*o);
                    }
                    (i, after)
                })
                .collect();
            let deltas = crate::view::state::rebuild(&self.p, &self.layout, &todo, &bound)?;
            // The deltas of every kept view at once, for SQL queries (see `serving::updating`).
            let _fence = super::updating();
            for ((i, _), parts) in todo.iter().zip(deltas) {
                let def = &self.p.views[*i];
                let mut d = def.new_state();
                for st in parts.values() {
                    d.merge(st);
                }
                out[*i].apply_delta(&d, &bound, topic)?;
            }
        }
        self.runs = runs;
        self.bound = bound;
        expire(&self.p, &out, &self.times.now);
        Ok(Some(out))
    }
}

/// How long `serving_view.json/` may go unwritten: a second, and a second more per 100,000
/// rows (rewriting a million rows every second would be most of the work).
pub fn rewrite_interval(rows: usize) -> Duration {
    Duration::from_secs(1 + (rows / 100_000) as u64)
}

/// `lambdaflow serve`: the HTTP API over what the layers wrote, followed every second, until
/// `shutdown` (or until either task fails). `serving_view.json/` is rewritten when the answer
/// changes. `time_travel` answers `?as_of=`.
pub async fn serve_files(
    p: Arc<Pipeline>,
    listen: std::net::SocketAddr,
    time_travel: http::TimeTravel,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = crate::serving::bind(listen).await?;
    let tasks = Supervisor::new();
    let rx = follow_files(&p, &tasks)?;
    let group = follow_group(&p, &tasks);
    tracing::info!(%listen, "serving layer: HTTP API and dashboard on http://{listen}/");
    let sql = crate::serving::sql::start(&p, rx.clone(), &tasks).await?;
    let app = http::AppState::new(Arc::clone(&p), rx, None)
        .with_time_travel(time_travel)
        .with_group(group)
        .with_sql(sql);
    let server = http::serve(listener, app, tasks.stopping());
    tasks.spawn("HTTP server", async move {
        server
            .await
            .map_err(|e| Error::io(format!("HTTP server on {listen}"), e))
    });
    tasks.run_until(shutdown, SHUTDOWN_LIMIT).await
}

/// Serves what the layers wrote: the views built from the files, then followed every second by
/// a task on `tasks` (what `serve` answers; `run` too when its speed layer is one of a consumer
/// group, since its own state holds only its partitions).
pub fn follow_files(
    p: &Arc<Pipeline>,
    tasks: &Supervisor,
) -> Result<watch::Receiver<Arc<ServingState>>> {
    let layout = p.layout();
    let bound = speed_bound(p, &layout)?;
    let follower = Follower {
        p: Arc::clone(p),
        layout: layout.clone(),
        runs: p
            .views
            .iter()
            .map(|d| batch_view::published_run(&layout, d))
            .collect::<Result<_>>()?,
        times: EventTimes::load(p, &layout, &bound)?,
        bound,
    };
    let views = build(
        p,
        &layout,
        &(0..p.views.len()).collect::<Vec<_>>(),
        &follower.bound,
    )?;
    expire(p, &views, &follower.times.now);
    let (tx, rx) = watch::channel(Arc::new(ServingState {
        version: 1,
        views,
        event_time: follower.times.now.clone(),
        ..Default::default()
    }));
    tasks.spawn("file follower", follower.follow(tx, tasks.stopping()));
    Ok(rx)
}

/// The consumer group of speed layers, described every few seconds by a task on `tasks`
/// (`None` without `speed.consumer-group`).
pub fn follow_group(p: &Arc<Pipeline>, tasks: &Supervisor) -> Option<super::group::GroupWatch> {
    p.config.speed.consumer_group.then(|| {
        let (tx, rx) = watch::channel(None);
        tasks.spawn(
            "consumer group",
            super::group::follow(Arc::clone(p), tx, tasks.stopping()),
        );
        rx
    })
}

impl Follower {
    /// Every second: brings the views up to date (on a blocking thread), publishes them when
    /// they changed, and rewrites `serving_view.json/` at most every [`rewrite_interval`].
    async fn follow(
        mut self,
        tx: watch::Sender<Arc<ServingState>>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(stop);
        let mut version = 1;
        let mut last_write: Option<Instant> = None;
        let mut unwritten = false;
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let views = tx.borrow().views.clone();
            let (f, r) = tokio::task::spawn_blocking(move || {
                let r = self.refresh(&views);
                (self, r)
            })
            .await
            .map_err(|e| Error::task("file follower", e))?;
            self = f;
            // A replica on a bucket the S3 server of which is away says so, and keeps serving.
            match &r {
                Ok(_) => crate::storage::store::set_health(None),
                Err(e) if crate::storage::store::is_transient(e) => {
                    crate::storage::store::set_health(Some(e.report().to_string()))
                }
                Err(_) => {}
            }
            match r {
                Ok(Some(views)) => {
                    version += 1;
                    unwritten = true;
                    let st = ServingState {
                        version,
                        views,
                        event_time: self.times.now.clone(),
                        ..Default::default()
                    };
                    tx.send_replace(Arc::new(st));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(cause = %e.report(), "serving: could not read the views (keeping the last ones)")
                }
            }
            let views = tx.borrow().views.clone();
            let rows = views.iter().map(|v| v.read().total()).max().unwrap_or(0);
            if unwritten && last_write.is_none_or(|t| t.elapsed() >= rewrite_interval(rows)) {
                for v in &views {
                    if let Err(e) = write_served(&self.layout, v) {
                        tracing::warn!(view = %v.def.name, cause = %e.report(), "could not write serving_view.json");
                    }
                }
                last_write = Some(Instant::now());
                unwritten = false;
            }
        }
    }
}
