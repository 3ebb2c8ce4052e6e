//! Seeded randomized agreement test: for random event sequences, random split points and
//! random micro-batch sizes, the speed layer's incremental state equals the batch layer's
//! DataFusion result, and `merge(batch(prefix), speed(suffix)) == batch(all)`.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
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
