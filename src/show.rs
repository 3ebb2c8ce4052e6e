//! Tables printed the way Spark's `DataFrame.show()` prints them.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Spark shows at most this many rows by default.
pub const DEFAULT_ROWS: usize = 20;

/// Renders `batch` as a Spark-style table of at most `max_rows` rows (cells left-aligned, as in
/// the seed workshop's listings; `NULL` for nulls).
pub fn show(batch: &RecordBatch, max_rows: usize) -> String {
    let opts = FormatOptions::default().with_null("NULL");
    let schema = batch.schema();
    let n = batch.num_rows().min(max_rows);
    let mut cells: Vec<Vec<String>> =
        vec![schema.fields().iter().map(|f| f.name().clone()).collect()];
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| {
            ArrayFormatter::try_new(c.as_ref(), &opts).expect("every Arrow type can be displayed")
        })
        .collect();
    for row in 0..n {
        cells.push(
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..schema.fields().len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let rule: String = widths.iter().fold(String::from("+"), |mut s, w| {
        s.push_str(&"-".repeat(*w));
        s.push('+');
        s
    });
    let line = |r: &[String]| {
        let mut s = String::from("|");
        for (cell, w) in r.iter().zip(&widths) {
            s.push_str(cell);
            s.push_str(&" ".repeat(w - cell.chars().count()));
            s.push('|');
        }
        s
    };
    let mut out = format!("{rule}\n{}\n{rule}\n", line(&cells[0]));
    for r in &cells[1..] {
        out.push_str(&line(r));
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    if batch.num_rows() > n {
        out.push_str(&format!("only showing top {n} rows\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn looks_like_the_seed() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer", DataType::Utf8, false),
            Field::new("total_amount", DataType::Int64, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["Ali", "Sara", "Mounir"])),
                Arc::new(Int64Array::from(vec![Some(320), Some(140), None])),
            ],
        )
        .unwrap();
        let expected = "\
+--------+------------+
|customer|total_amount|
+--------+------------+
|Ali     |320         |
|Sara    |140         |
|Mounir  |NULL        |
+--------+------------+
";
        assert_eq!(show(&b, 20), expected);
        assert!(show(&b, 2).ends_with("only showing top 2 rows\n"));
    }
}
