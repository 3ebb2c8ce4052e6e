//! Finalizing a view: the steps after the aggregate (HAVING, SELECT, ORDER BY, LIMIT) on
//! evaluated aggregate state — for a whole state (the batch and speed views, `verify`) or for
//! the groups a micro-batch changed (serving's materialized view).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{filter_record_batch, lexsort_to_indices, take_record_batch};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::{Materialized, PhysStep, ViewDef, ViewState};
use crate::error::{Error, Result};

impl ViewDef {
    /// The final rows of `state`: evaluate each aggregate, then run HAVING, the projection,
    /// ORDER BY and LIMIT. Serving calls this on the merged state; the batch and streaming views
    /// shown on their own are the same call on one layer's state.
    pub fn finalize(&self, state: &ViewState) -> Result<RecordBatch> {
        Ok(self.post(state.evaluate(self)?, true)?.0)
    }

    /// Runs the steps after the aggregate on `batch` (one row per group); with `all` false
    /// only the projections, keeping every group in order. Returns the rows and, for each, the
    /// group it comes from.
    fn post(&self, mut batch: RecordBatch, all: bool) -> Result<(RecordBatch, Vec<u32>)> {
        let mut picked: Vec<u32> = (0..batch.num_rows() as u32).collect();
        for step in &self.phys.post {
            batch = match step {
                PhysStep::Project(..) => self.project(step, &batch)?,
                _ if !all => batch,
                PhysStep::Filter(p) => {
                    let mask = having(p, &batch)?;
                    picked = picked
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| {
                            datafusion::arrow::array::Array::is_valid(&mask, *i) && mask.value(*i)
                        })
                        .map(|(_, g)| *g)
                        .collect();
                    filter_record_batch(&batch, &mask)?
                }
                PhysStep::Sort(keys) => {
                    let cols = keys
                        .iter()
                        .map(|(p, o)| {
                            Ok(datafusion::arrow::compute::SortColumn {
                                values: p.evaluate(&batch)?.into_array(batch.num_rows())?,
                                options: Some(*o),
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let idx = lexsort_to_indices(&cols, None)?;
                    picked = idx.values().iter().map(|&i| picked[i as usize]).collect();
                    take_record_batch(&batch, &idx)?
                }
                PhysStep::Limit { skip, fetch } => {
                    let start = (*skip).min(batch.num_rows());
                    let len = fetch.unwrap_or(usize::MAX).min(batch.num_rows() - start);
                    picked = picked[start..start + len].to_vec();
                    batch.slice(start, len)
                }
            };
        }
        // Rename to the SQL's output names (a projection's aliases are already applied).
        let batch = RecordBatch::try_new_with_options(
            self.output_schema(),
            batch.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        Ok((batch, picked))
    }

    /// The view's own LIMIT/OFFSET as `(skip, fetch)`, applied by whoever reads the rows in
    /// the view's order (`(0, None)` without one).
    pub fn limit(&self) -> (usize, Option<usize>) {
        self.phys
            .post
            .iter()
            .find_map(|s| match s {
                PhysStep::Limit { skip, fetch } => Some((*skip, *fetch)),
                _ => None,
            })
            .unwrap_or((0, None))
    }

    /// True when the view has its own ORDER BY.
    pub fn has_order(&self) -> bool {
        self.phys
            .post
            .iter()
            .any(|s| matches!(s, PhysStep::Sort(_)))
    }

    /// The steps after the aggregate for a *materialized* view, on the groups `gids` of
    /// `state` only: HAVING and the projection, plus each row's ORDER BY key as comparable
    /// bytes (Arrow's row format, so `a < b` byte-wise exactly when `a` sorts first). LIMIT is
    /// left to the reader of the maintained order ([`ViewDef::limit`]). Serving calls this for
    /// the keys a micro-batch changed, so its cost is that of the changed keys.
    pub fn materialize(&self, state: &ViewState, gids: &[usize]) -> Result<Materialized> {
        let mut batch = state.evaluate_groups(self, gids)?;
        let mut picked: Vec<u32> = (0..gids.len() as u32).collect();
        let mut order: Option<Vec<Vec<u8>>> = None;
        for step in &self.phys.post {
            match step {
                PhysStep::Project(..) => batch = self.project(step, &batch)?,
                PhysStep::Filter(p) => {
                    let mask = having(p, &batch)?;
                    let keep = |i: usize| {
                        datafusion::arrow::array::Array::is_valid(&mask, i) && mask.value(i)
                    };
                    picked = picked
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| keep(*i))
                        .map(|(_, g)| *g)
                        .collect();
                    if let Some(o) = order.take() {
                        order = Some(
                            o.into_iter()
                                .enumerate()
                                .filter(|(i, _)| keep(*i))
                                .map(|(_, b)| b)
                                .collect(),
                        );
                    }
                    batch = filter_record_batch(&batch, &mask)?;
                }
                PhysStep::Sort(keys) => {
                    let mut fields = Vec::new();
                    let mut cols = Vec::new();
                    for (p, o) in keys {
                        let c = p.evaluate(&batch)?.into_array(batch.num_rows())?;
                        fields.push(SortField::new_with_options(c.data_type().clone(), *o));
                        cols.push(c);
                    }
                    let conv = RowConverter::new(fields)?;
                    let rows = conv.convert_columns(&cols)?;
                    order = Some(rows.iter().map(|r| r.as_ref().to_vec()).collect());
                }
                PhysStep::Limit { .. } => {}
            }
        }
        let rows = RecordBatch::try_new_with_options(
            self.output_schema(),
            batch.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        Ok(Materialized {
            rows,
            picked,
            order,
        })
    }

    /// Only the projections of the steps after the aggregate, on every group of `batch` (no
    /// HAVING, no order): what one layer's part of a row is ("320 from batch").
    pub fn project_parts(&self, state: &ViewState, gids: &[usize]) -> Result<RecordBatch> {
        Ok(self.post(state.evaluate_groups(self, gids)?, false)?.0)
    }

    fn project(&self, step: &PhysStep, batch: &RecordBatch) -> Result<RecordBatch> {
        let PhysStep::Project(exprs, schema) = step else {
            return Ok(batch.clone());
        };
        let cols = exprs
            .iter()
            .map(|p| p.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let cols = cols
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    datafusion::arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}

/// HAVING evaluated on `batch`: one boolean per row.
fn having(p: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let mask = p.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(datafusion::arrow::array::AsArray::as_boolean_opt(&mask)
        .ok_or_else(|| Error::Internal("HAVING did not evaluate to booleans".into()))?
        .clone())
}
