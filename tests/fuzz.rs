//! Seeded randomized agreement test: for random event sequences, random split points and
//! random micro-batch sizes, the speed layer's incremental state equals the batch layer's
//! DataFusion result, and `merge(batch(prefix), speed(suffix)) == batch(all)`.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use std::collections::BTreeMap;

use lambdaflow::config::{Config, ViewConfig};
use lambdaflow::event::{EventDecoder, FieldDef, FieldType};
use lambdaflow::{batch, serving};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VIEWS: &[&str] = &[
    "SELECT customer, SUM(amount) AS total FROM events GROUP BY customer",
    "SELECT customer, COUNT(*) AS n, COUNT(price) AS priced, MIN(amount) AS lo, MAX(amount) AS hi, AVG(amount) AS mean FROM events GROUP BY customer",
    "SELECT customer, SUM(amount) AS total FROM events WHERE amount >= 10 AND NOT (customer IN ('c1', 'c2')) GROUP BY customer HAVING SUM(amount) > 40",
    "SELECT customer, region, SUM(price) AS revenue, AVG(price) AS avg_price FROM events WHERE price IS NOT NULL OR amount < 5 GROUP BY customer, region",
    "SELECT COUNT(*) AS n, SUM(amount) AS total, MIN(customer) AS first, MAX(price) AS top FROM events",
    "SELECT region, MAX(customer) AS last_customer, SUM(amount) AS total FROM events WHERE region IS NULL OR amount > 3 GROUP BY region ORDER BY total DESC LIMIT 3",
];

fn rows(b: &RecordBatch) -> Vec<String> {
    let mut out = cells(b);
    out.sort();
    out
}

/// A batch's rows in order, `|`-joined, floats to 6 decimals (sums differ in the last bits
/// with summation order).
pub fn cells(b: &RecordBatch) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let fmts: Vec<_> = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
        .collect();
    (0..b.num_rows())
        .map(|r| {
            fmts.iter()
                .map(|f| {
                    let s = f.value(r).to_string();
                    match s.parse::<f64>() {
                        Ok(x) if s.contains('.') => format!("{x:.6}"),
                        _ => s,
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_equals_batch_and_merge_at_any_cut_equals_full_batch() {
    let mut cfg = Config::load(None, &vec![]).unwrap();
    cfg.schema.fields = lambdaflow::config::default_fields();
    cfg.schema.fields.extend([
        FieldDef {
            name: "price".into(),
            ty: FieldType::Double,
            nullable: true,
            unit: None,
        },
        FieldDef {
            name: "region".into(),
            ty: FieldType::String,
            nullable: true,
            unit: None,
        },
    ]);
    cfg.views = VIEWS
        .iter()
        .enumerate()
        .map(|(i, sql)| ViewConfig::new(format!("v{i}"), *sql))
        .collect();
    let p = cfg.compile().await.unwrap();
    let mut rng = StdRng::seed_from_u64(0x001a_3bda);
    for case in 0..40 {
        let n = rng.random_range(0..400);
        let lines: Vec<String> = (0..n)
            .map(|_| {
                let c = format!("c{}", rng.random_range(0..6));
                let amount: i64 = rng.random_range(-5..60);
                let price = if rng.random_bool(0.3) {
                    "null".to_string()
                } else {
                    format!("{:.2}", rng.random_range(0.0..100.0))
                };
                let region = if rng.random_bool(0.2) {
                    "null".to_string()
                } else {
                    format!("\"r{}\"", rng.random_range(0..3))
                };
                format!(
                    r#"{{"customer":"{c}","amount":{amount},"price":{price},"region":{region}}}"#
                )
            })
            .collect();
        let cut = rng.random_range(0..=n);
        // Events as random-size micro-batches.
        let mut batches = Vec::new();
        let mut i = 0;
        while i < n {
            let size = rng.random_range(1..50).min(n - i);
            let mut d = EventDecoder::new(&p.schema);
            for l in &lines[i..i + size] {
                d.push(l.as_bytes()).unwrap();
            }
            batches.push((i, d.finish()));
            i += size;
        }
        let decode = |ls: &[String]| {
            let mut d = EventDecoder::new(&p.schema);
            for l in ls {
                d.push(l.as_bytes()).unwrap();
            }
            d.finish()
        };
        for def in &p.views {
            let all = batch::compute_over(&p, def, &[decode(&lines)])
                .await
                .unwrap();
            let mut speed_all = def.new_state();
            for (_, b) in &batches {
                speed_all.update(def, b).unwrap();
            }
            let expect = rows(&def.finalize(&all).unwrap());
            assert_eq!(
                rows(&def.finalize(&speed_all).unwrap()),
                expect,
                "case {case} view {}: speed != batch",
                def.sql
            );

            let prefix = batch::compute_over(&p, def, &[decode(&lines[..cut])])
                .await
                .unwrap();
            let mut suffix = def.new_state();
            for l in &lines[cut..] {
                suffix
                    .update(def, &decode(std::slice::from_ref(l)))
                    .unwrap();
            }
            let merged = serving::serving_rows(def, Some(&prefix), Some(&suffix)).unwrap();
            assert_eq!(
                rows(&merged),
                expect,
                "case {case} view {} cut {cut}: merge != batch",
                def.sql
            );
        }
    }
}

/// Seeded: random events with random event times (out of order, some NULL) through random
/// micro-batches, cut at a random offset between the layers and at a random retention
/// horizon: `merge(batch(prefix), speed(suffix))` of tumbling and hopping windows equals a
/// naive count of every window that holds each event, less the windows that end before the
/// horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_views_equal_a_naive_count_at_any_cut_and_retention() {
    const MIN: i64 = 60_000;
    // (size, slide) in minutes, and the view of it.
    const WINDOWS: &[(i64, i64)] = &[(10, 10), (30, 10), (60, 25)];
    let mut cfg = Config::load(None, &vec![]).unwrap();
    cfg.schema.fields = lambdaflow::config::default_fields();
    cfg.schema.fields.push(FieldDef {
        name: "ts".into(),
        ty: FieldType::Timestamp,
        nullable: true,
        unit: Some(lambdaflow::event::EpochUnit::Millis),
    });
    cfg.views = WINDOWS
        .iter()
        .enumerate()
        .map(|(i, (size, slide))| {
            let sql = format!(
                "SELECT window.start, customer, SUM(amount) AS s, COUNT(*) AS n FROM events \
                 GROUP BY window(ts, '{size} minutes', '{slide} minutes'), customer"
            );
            let mut v = ViewConfig::new(format!("w{i}"), sql);
            v.watermark = Some(std::time::Duration::from_secs(60));
            v
        })
        .collect();
    let p = cfg.compile().await.unwrap();
    let day = 1_796_083_200_000i64; // 2026-12-01T00:00:00Z
    let fmt = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let mut rng = StdRng::seed_from_u64(0x7173);
    let (mut checked, mut cut_off) = (0, 0);
    for case in 0..30 {
        let n = rng.random_range(0..300);
        let events: Vec<(String, i64, Option<i64>)> = (0..n)
            .map(|_| {
                let t = (!rng.random_bool(0.1)).then(|| day + rng.random_range(0..6 * 60 * MIN));
                (
                    format!("c{}", rng.random_range(0..4)),
                    rng.random_range(1..20),
                    t,
                )
            })
            .collect();
        let line = |(c, a, t): &(String, i64, Option<i64>)| {
            let ts = t.map_or("null".to_string(), |t| t.to_string());
            format!(r#"{{"customer":"{c}","amount":{a},"ts":{ts}}}"#)
        };
        let decode = |es: &[(String, i64, Option<i64>)]| {
            let mut d = EventDecoder::new(&p.schema);
            for e in es {
                d.push(line(e).as_bytes()).unwrap();
            }
            d.finish()
        };
        let cut = rng.random_range(0..=n);
        let horizon = day + rng.random_range(0..7 * 60 * MIN);
        for (def, &(size, slide)) in p.views.iter().zip(WINDOWS) {
            let (size, slide) = (size * MIN, slide * MIN);
            // The naive truth: every window start (a multiple of the slide) that holds t.
            let mut truth: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            for (c, a, t) in &events {
                let Some(t) = *t else { continue };
                let mut s = t - t.rem_euclid(slide);
                while s > t - size {
                    if s + size >= horizon {
                        let e = truth.entry(format!("{}|{c}", fmt(s))).or_default();
                        e.0 += a;
                        e.1 += 1;
                    } else {
                        cut_off += 1;
                    }
                    s -= slide;
                }
            }
            let want: Vec<String> = truth
                .iter()
                .map(|(k, (s, n))| format!("{k}|{s}|{n}"))
                .collect();
            // The batch layer over the prefix, cut at the horizon; the speed layer folds the
            // suffix in random micro-batches, leaving out what is beyond it.
            let mut prefix = def.new_state();
            prefix.update(def, &decode(&events[..cut])).unwrap();
            prefix.retain_windows(def, horizon * 1000).unwrap();
            let mut suffix = def.new_state();
            let mut i = cut;
            while i < n {
                let k = rng.random_range(1..40).min(n - i);
                suffix
                    .update_within(def, &decode(&events[i..i + k]), Some(horizon * 1000))
                    .unwrap();
                i += k;
            }
            let merged = serving::serving_rows(def, Some(&prefix), Some(&suffix)).unwrap();
            assert_eq!(
                rows(&merged),
                want,
                "case {case} view {} cut {cut} horizon {}",
                def.sql,
                fmt(horizon)
            );
            checked += want.len();
        }
    }
    assert!(
        checked > 1000 && cut_off > 1000,
        "{checked} rows checked, {cut_off} cut off"
    );
}
