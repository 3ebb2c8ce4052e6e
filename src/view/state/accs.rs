//! Aggregate accumulators as flat columns indexed by group id: a SUM is two `Vec<i64>`, not a
//! vector of per-group objects. Updating touches only the groups of the rows it is given;
//! reading builds Arrow arrays for the groups asked for.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type};
use datafusion::arrow::row::{RowConverter, RowParser, SortField};

use super::AggKind;
use crate::error::Result;

/// One aggregate's state for every group.
pub(crate) enum AccCol {
    /// SUM over integers: exact 64-bit (wrapping) sum and the count of non-null inputs.
    SumInt { sum: Vec<i64>, count: Vec<i64> },
    /// SUM over floating point numbers, and AVG: a double sum and a count.
    SumFloat { sum: Vec<f64>, count: Vec<i64> },
    /// COUNT.
    Count(Vec<i64>),
    /// MIN (`max` false) or MAX.
    Extreme { max: bool, vals: Extremes },
}

/// The extreme so far per group, stored by the argument's type.
pub(crate) enum Extremes {
    /// Signed integers, widened to 64 bits; `ty` is the argument's type.
    Int {
        ty: DataType,
        v: Vec<i64>,
        seen: Vec<bool>,
    },
    /// Floating point numbers, widened to 64 bits.
    Float {
        ty: DataType,
        v: Vec<f64>,
        seen: Vec<bool>,
    },
    /// Any other type (strings, booleans, dates…), in Arrow's row format: its bytes compare
    /// as the values do.
    Bytes {
        ty: DataType,
        conv: RowConverter,
        parser: RowParser,
        v: Vec<Option<Box<[u8]>>>,
    },
}

/// Keeps the elements of `v` whose flag in `keep` is set (`Vec::retain` visits each element
/// once, in order).
fn retain_flagged<T>(v: &mut Vec<T>, keep: &[bool]) {
    debug_assert_eq!(keep.len(), v.len(), "one flag per group");
    let mut flags = keep.iter().copied();
    v.retain(|_| flags.next().unwrap_or(true));
}

fn is_signed_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

impl AccCol {
    /// An empty column for `kind` over an argument of type `arg`.
    pub fn new(kind: AggKind, arg: &DataType) -> Result<Self> {
        Ok(match kind {
            AggKind::SumInt => AccCol::SumInt {
                sum: Vec::new(),
                count: Vec::new(),
            },
            AggKind::SumFloat | AggKind::Avg => AccCol::SumFloat {
                sum: Vec::new(),
                count: Vec::new(),
            },
            AggKind::Count => AccCol::Count(Vec::new()),
            AggKind::Min | AggKind::Max => {
                let vals = if is_signed_int(arg) {
                    Extremes::Int {
                        ty: arg.clone(),
                        v: Vec::new(),
                        seen: Vec::new(),
                    }
                } else if arg.is_floating() {
                    Extremes::Float {
                        ty: arg.clone(),
                        v: Vec::new(),
                        seen: Vec::new(),
                    }
                } else {
                    let conv = RowConverter::new(vec![SortField::new(arg.clone())])?;
                    let parser = conv.parser();
                    Extremes::Bytes {
                        ty: arg.clone(),
                        conv,
                        parser,
                        v: Vec::new(),
                    }
                };
                AccCol::Extreme {
                    max: kind == AggKind::Max,
                    vals,
                }
            }
        })
    }

    /// Keeps the groups `keep` flags (one flag per group), in order, in place.
    pub fn retain_groups(&mut self, keep: &[bool]) {
        match self {
            AccCol::SumInt { sum, count } => {
                retain_flagged(sum, keep);
                retain_flagged(count, keep);
            }
            AccCol::SumFloat { sum, count } => {
                retain_flagged(sum, keep);
                retain_flagged(count, keep);
            }
            AccCol::Count(c) => retain_flagged(c, keep),
            AccCol::Extreme { vals, .. } => match vals {
                Extremes::Int { v, seen, .. } => {
                    retain_flagged(v, keep);
                    retain_flagged(seen, keep);
                }
                Extremes::Float { v, seen, .. } => {
                    retain_flagged(v, keep);
                    retain_flagged(seen, keep);
                }
                Extremes::Bytes { v, .. } => retain_flagged(v, keep),
            },
        }
    }

    /// Adds one empty group.
    pub fn push_group(&mut self) {
        match self {
            AccCol::SumInt { sum, count } => {
                sum.push(0);
                count.push(0);
            }
            AccCol::SumFloat { sum, count } => {
                sum.push(0.0);
                count.push(0);
            }
            AccCol::Count(c) => c.push(0),
            AccCol::Extreme { vals, .. } => match vals {
                Extremes::Int { v, seen, .. } => {
                    v.push(0);
                    seen.push(false);
                }
                Extremes::Float { v, seen, .. } => {
                    v.push(0.0);
                    seen.push(false);
                }
                Extremes::Bytes { v, .. } => v.push(None),
            },
        }
    }

    /// Folds `arg` (already cast to the aggregate's input type) row by row into the groups
    /// `gids` (one per row).
    /// Adds a constant that is never NULL once per row (`COUNT(*)`) to the groups `gids`.
    pub fn count_rows(&mut self, gids: &[usize]) {
        match self {
            AccCol::Count(c) => gids.iter().for_each(|&g| c[g] += 1),
            _ => unreachable!("only COUNT takes a constant without its column"),
        }
    }

    pub fn update(&mut self, arg: &ArrayRef, gids: &[usize]) -> Result<()> {
        match self {
            AccCol::SumInt { sum, count } => {
                let a = arg.as_primitive::<Int64Type>();
                for (row, (&v, &g)) in a.values().iter().zip(gids).enumerate() {
                    if a.is_valid(row) {
                        sum[g] = sum[g].wrapping_add(v);
                        count[g] += 1;
                    }
                }
            }
            AccCol::SumFloat { sum, count } => {
                let a = arg.as_primitive::<Float64Type>();
                for (row, (&v, &g)) in a.values().iter().zip(gids).enumerate() {
                    if a.is_valid(row) {
                        sum[g] += v;
                        count[g] += 1;
                    }
                }
            }
            AccCol::Count(c) if arg.null_count() == 0 => gids.iter().for_each(|&g| c[g] += 1),
            AccCol::Count(c) => {
                for (row, &g) in gids.iter().enumerate() {
                    if arg.is_valid(row) {
                        c[g] += 1;
                    }
                }
            }
            AccCol::Extreme { max, vals } => {
                let max = *max;
                match vals {
                    Extremes::Int { v, seen, .. } => {
                        let a = cast(arg, &DataType::Int64)?;
                        fold_extremes(a.as_primitive::<Int64Type>(), gids, v, seen, max);
                    }
                    Extremes::Float { v, seen, .. } => {
                        let a = cast(arg, &DataType::Float64)?;
                        fold_extremes(a.as_primitive::<Float64Type>(), gids, v, seen, max);
                    }
                    Extremes::Bytes { conv, v, .. } => {
                        let rows = conv.convert_columns(std::slice::from_ref(arg))?;
                        for (row, &g) in gids.iter().enumerate() {
                            if arg.is_valid(row) {
                                keep_extreme(&mut v[g], rows.row(row).as_ref(), max);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Merges group `og` of `other` (the same aggregate of another state) into group `g`.
    pub fn merge_group(&mut self, g: usize, other: &AccCol, og: usize) {
        match (self, other) {
            (AccCol::SumInt { sum, count }, AccCol::SumInt { sum: s, count: c }) => {
                sum[g] = sum[g].wrapping_add(s[og]);
                count[g] += c[og];
            }
            (AccCol::SumFloat { sum, count }, AccCol::SumFloat { sum: s, count: c }) => {
                sum[g] += s[og];
                count[g] += c[og];
            }
            (AccCol::Count(n), AccCol::Count(m)) => n[g] += m[og],
            (AccCol::Extreme { max, vals }, AccCol::Extreme { vals: o, .. }) => {
                let max = *max;
                match (vals, o) {
                    (
                        Extremes::Int { v, seen, .. },
                        Extremes::Int {
                            v: ov, seen: os, ..
                        },
                    ) => {
                        if os[og] {
                            keep(&mut v[g], &mut seen[g], ov[og], max);
                        }
                    }
                    (
                        Extremes::Float { v, seen, .. },
                        Extremes::Float {
                            v: ov, seen: os, ..
                        },
                    ) => {
                        if os[og] {
                            keep(&mut v[g], &mut seen[g], ov[og], max);
                        }
                    }
                    (Extremes::Bytes { v, .. }, Extremes::Bytes { v: ov, .. }) => {
                        if let Some(b) = &ov[og] {
                            keep_extreme(&mut v[g], b, max);
                        }
                    }
                    _ => unreachable!("states of one view always line up"),
                }
            }
            _ => unreachable!("states of one view always line up"),
        }
    }

    /// Merges state columns (this aggregate's, as [`AccCol::state`] writes them) row by row
    /// into the groups `gids`.
    pub fn merge_state(&mut self, cols: &[ArrayRef], gids: &[usize]) -> Result<()> {
        let int = |a: &ArrayRef, row: usize| {
            let a = a.as_primitive::<Int64Type>();
            if a.is_valid(row) { a.value(row) } else { 0 }
        };
        match self {
            AccCol::SumInt { sum, count } => {
                for (row, &g) in gids.iter().enumerate() {
                    sum[g] = sum[g].wrapping_add(int(&cols[0], row));
                    count[g] += int(&cols[1], row);
                }
            }
            AccCol::SumFloat { sum, count } => {
                let s = cols[0].as_primitive::<Float64Type>();
                for (row, &g) in gids.iter().enumerate() {
                    if s.is_valid(row) {
                        sum[g] += s.value(row);
                    }
                    count[g] += int(&cols[1], row);
                }
            }
            AccCol::Count(c) => {
                for (row, &g) in gids.iter().enumerate() {
                    c[g] += int(&cols[0], row);
                }
            }
            AccCol::Extreme { .. } => self.update(&cols[0], gids)?,
        }
        Ok(())
    }

    /// The state columns of groups `gids`, typed as [`AggKind::state_fields`] says.
    pub fn state(&self, gids: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(match self {
            AccCol::SumInt { sum, count } => vec![
                Arc::new(Int64Array::from_iter_values(gids.iter().map(|&g| sum[g]))),
                Arc::new(Int64Array::from_iter_values(gids.iter().map(|&g| count[g]))),
            ],
            AccCol::SumFloat { sum, count } => vec![
                Arc::new(Float64Array::from_iter_values(gids.iter().map(|&g| sum[g]))),
                Arc::new(Int64Array::from_iter_values(gids.iter().map(|&g| count[g]))),
            ],
            AccCol::Count(c) => vec![Arc::new(Int64Array::from_iter_values(
                gids.iter().map(|&g| c[g]),
            ))],
            AccCol::Extreme { vals, .. } => vec![extremes(vals, gids)?],
        })
    }

    /// Each group's value: what the aggregate evaluates to (see the table in the parent
    /// module's docs), typed as the aggregate's output `ty`.
    pub fn evaluate(&self, kind: AggKind, gids: &[usize], ty: &DataType) -> Result<ArrayRef> {
        let a: ArrayRef = match self {
            AccCol::SumInt { sum, count } => Arc::new(Int64Array::from_iter(
                gids.iter().map(|&g| (count[g] > 0).then_some(sum[g])),
            )),
            AccCol::SumFloat { sum, count } if kind == AggKind::Avg => {
                Arc::new(Float64Array::from_iter(
                    gids.iter()
                        .map(|&g| (count[g] > 0).then(|| sum[g] / count[g] as f64)),
                ))
            }
            AccCol::SumFloat { sum, count } => Arc::new(Float64Array::from_iter(
                gids.iter().map(|&g| (count[g] > 0).then_some(sum[g])),
            )),
            AccCol::Count(c) => Arc::new(Int64Array::from_iter_values(gids.iter().map(|&g| c[g]))),
            AccCol::Extreme { vals, .. } => extremes(vals, gids)?,
        };
        Ok(if a.data_type() == ty {
            a
        } else {
            cast(&a, ty)?
        })
    }
}

impl Clone for AccCol {
    fn clone(&self) -> Self {
        match self {
            AccCol::SumInt { sum, count } => AccCol::SumInt {
                sum: sum.clone(),
                count: count.clone(),
            },
            AccCol::SumFloat { sum, count } => AccCol::SumFloat {
                sum: sum.clone(),
                count: count.clone(),
            },
            AccCol::Count(c) => AccCol::Count(c.clone()),
            AccCol::Extreme { max, vals } => AccCol::Extreme {
                max: *max,
                vals: match vals {
                    Extremes::Int { ty, v, seen } => Extremes::Int {
                        ty: ty.clone(),
                        v: v.clone(),
                        seen: seen.clone(),
                    },
                    Extremes::Float { ty, v, seen } => Extremes::Float {
                        ty: ty.clone(),
                        v: v.clone(),
                        seen: seen.clone(),
                    },
                    Extremes::Bytes { ty, v, .. } => {
                        let conv = RowConverter::new(vec![SortField::new(ty.clone())])
                            .expect("the same type built a converter before");
                        let parser = conv.parser();
                        Extremes::Bytes {
                            ty: ty.clone(),
                            conv,
                            parser,
                            v: v.clone(),
                        }
                    }
                },
            },
        }
    }
}

impl std::fmt::Debug for AccCol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            AccCol::SumInt { .. } => "SumInt",
            AccCol::SumFloat { .. } => "SumFloat",
            AccCol::Count(_) => "Count",
            AccCol::Extreme { max: true, .. } => "Max",
            AccCol::Extreme { max: false, .. } => "Min",
        };
        f.write_str(name)
    }
}

/// Keeps `x` in `slot` when it is the first value or beats the current one.
pub(super) fn keep<T: PartialOrd + Copy>(slot: &mut T, seen: &mut bool, x: T, max: bool) {
    if !*seen || (max && x > *slot) || (!max && x < *slot) {
        *slot = x;
        *seen = true;
    }
}

/// Folds the valid values of `a` into the extremes of their groups.
fn fold_extremes<T: ArrowPrimitiveType>(
    a: &PrimitiveArray<T>,
    gids: &[usize],
    v: &mut [T::Native],
    seen: &mut [bool],
    max: bool,
) where
    T::Native: PartialOrd,
{
    for (row, &g) in gids.iter().enumerate() {
        if a.is_valid(row) {
            keep(&mut v[g], &mut seen[g], a.value(row), max);
        }
    }
}

fn keep_extreme(slot: &mut Option<Box<[u8]>>, candidate: &[u8], max: bool) {
    let better = match slot {
        None => true,
        Some(cur) => {
            if max {
                candidate > &cur[..]
            } else {
                candidate < &cur[..]
            }
        }
    };
    if better {
        *slot = Some(candidate.into());
    }
}

/// The extremes of groups `gids` as an array of the argument's type (null where none).
fn extremes(vals: &Extremes, gids: &[usize]) -> Result<ArrayRef> {
    Ok(match vals {
        Extremes::Int { ty, v, seen } => {
            let a: ArrayRef = Arc::new(Int64Array::from_iter(
                gids.iter().map(|&g| seen[g].then_some(v[g])),
            ));
            cast(&a, ty)?
        }
        Extremes::Float { ty, v, seen } => {
            let a: ArrayRef = Arc::new(Float64Array::from_iter(
                gids.iter().map(|&g| seen[g].then_some(v[g])),
            ));
            cast(&a, ty)?
        }
        Extremes::Bytes {
            ty,
            conv,
            parser,
            v,
        } => {
            if gids.is_empty() {
                return Ok(new_null_array(ty, 0));
            }
            // Groups without a value: decode the others, then put nulls in their places.
            let present: Vec<&[u8]> = gids.iter().filter_map(|&g| v[g].as_deref()).collect();
            let decoded = if present.is_empty() {
                new_null_array(ty, 0)
            } else {
                conv.convert_rows(present.iter().map(|b| parser.parse(b)))?
                    .remove(0)
            };
            if present.len() == gids.len() {
                decoded
            } else {
                let mut idx = 0u32;
                let take: datafusion::arrow::array::UInt32Array = gids
                    .iter()
                    .map(|&g| {
                        v[g].as_ref().map(|_| {
                            idx += 1;
                            idx - 1
                        })
                    })
                    .collect();
                datafusion::arrow::compute::take(decoded.as_ref(), &take, None)?
            }
        }
    })
}
