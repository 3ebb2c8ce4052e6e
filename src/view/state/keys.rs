//! Group keys, stored once: each key in Arrow's row format (comparable bytes) in one flat
//! buffer, and one hash table from key to group id.
//!
//! ```text
//!   bytes:   [Ali·····][Sara·····][Mounir·····] …      every key once, back to back
//!   ends:    [    8    ,   17     ,    28      ] …      group g = bytes[ends[g-1]..ends[g]]
//!   table:   HashTable<u32>  hash(key bytes) → g       equality checks the bytes at g
//! ```
//!
//! No per-key allocation and no `ScalarValue`: a million keys of a dozen bytes cost about
//! 30 MB (bytes + 8-byte end + table slot). Group ids are dense and never change, so every other
//! per-group structure is a plain vector indexed by them. Keys turn back into Arrow columns only
//! for the groups asked for ([`KeyIndex::columns`]).

use std::hash::BuildHasher;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, RowParser, SortField};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::error::Result;

/// Dense group ids for group keys (see the module docs).
pub struct KeyIndex {
    /// Encodes GROUP BY values as comparable bytes; `None` without GROUP BY (one empty key).
    converter: Option<(RowConverter, RowParser)>,
    types: Vec<DataType>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("types", &self.types)
            .field("groups", &self.ends.len())
            .finish()
    }
}

impl Clone for KeyIndex {
    fn clone(&self) -> Self {
        Self {
            converter: self.converter.as_ref().map(|_| converter(&self.types)),
            types: self.types.clone(),
            bytes: self.bytes.clone(),
            ends: self.ends.clone(),
            table: self.table.clone(),
            hasher: self.hasher.clone(),
        }
    }
}

fn converter(types: &[DataType]) -> (RowConverter, RowParser) {
    let c = RowConverter::new(types.iter().cloned().map(SortField::new).collect())
        .expect("GROUP BY types are plain Arrow types");
    let p = c.parser();
    (c, p)
}

impl KeyIndex {
    /// An empty index for keys of `types` (none: a global aggregate's single group).
    pub fn new(types: Vec<DataType>) -> Self {
        Self {
            converter: (!types.is_empty()).then(|| converter(&types)),
            types,
            bytes: Vec::new(),
            ends: Vec::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no group.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key bytes of group `g`.
    pub fn key(&self, g: usize) -> &[u8] {
        let start = if g == 0 { 0 } else { self.ends[g - 1] };
        &self.bytes[start..self.ends[g]]
    }

    /// The group of `key`, if it exists.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let h = self.hasher.hash_one(key);
        self.table
            .find(h, |&g| self.key(g as usize) == key)
            .map(|&g| g as usize)
    }

    /// The group of `key`, created when new; the flag says whether it was created.
    pub fn find_or_insert(&mut self, key: &[u8]) -> (usize, bool) {
        let h = self.hasher.hash_one(key);
        let (bytes, ends) = (&self.bytes, &self.ends);
        let at = |g: u32| {
            let g = g as usize;
            let start = if g == 0 { 0 } else { ends[g - 1] };
            &bytes[start..ends[g]]
        };
        if let Some(&g) = self.table.find(h, |&g| at(g) == key) {
            return (g as usize, false);
        }
        let g = self.ends.len();
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
        let (bytes, ends, hasher) = (&self.bytes, &self.ends, &self.hasher);
        self.table.insert_unique(h, g as u32, |&g| {
            let g = g as usize;
            let start = if g == 0 { 0 } else { ends[g - 1] };
            hasher.hash_one(&bytes[start..ends[g]])
        });
        (g, true)
    }

    /// Group ids for each row of `cols` (the GROUP BY values), creating groups as needed.
    /// `created` is called with each new group id, in order.
    pub fn intern(
        &mut self,
        cols: &[ArrayRef],
        rows: usize,
        mut created: impl FnMut(usize),
    ) -> Result<Vec<usize>> {
        let Some((conv, _)) = &self.converter else {
            let (g, new) = self.find_or_insert(&[]);
            if new {
                created(g);
            }
            return Ok(vec![g; rows]);
        };
        let encoded = conv.convert_columns(cols)?;
        let mut ids = Vec::with_capacity(rows);
        for row in encoded.iter() {
            let (g, new) = self.find_or_insert(row.as_ref());
            if new {
                created(g);
            }
            ids.push(g);
        }
        Ok(ids)
    }

    /// Encodes key values (one row per key) as key bytes, e.g. to look a key up.
    pub fn encode(&self, cols: &[ArrayRef]) -> Result<Vec<Vec<u8>>> {
        match &self.converter {
            None => Ok(vec![Vec::new()]),
            Some((conv, _)) => Ok(conv
                .convert_columns(cols)?
                .iter()
                .map(|r| r.as_ref().to_vec())
                .collect()),
        }
    }

    /// The GROUP BY columns of the groups `gids`, in that order.
    pub fn columns(&self, gids: &[usize]) -> Result<Vec<ArrayRef>> {
        let Some((conv, parser)) = &self.converter else {
            return Ok(Vec::new());
        };
        Ok(conv.convert_rows(gids.iter().map(|&g| parser.parse(self.key(g))))?)
    }

    /// The key types.
    pub fn types(&self) -> &[DataType] {
        &self.types
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn keys_are_stored_once_and_found_again() {
        let mut k = KeyIndex::new(vec![DataType::Utf8, DataType::Int64]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["Ali", "Sara", "Ali", "Ali"])),
            Arc::new(Int64Array::from(vec![1, 1, 1, 2])),
        ];
        let mut new = Vec::new();
        let ids = k.intern(&cols, 4, |g| new.push(g)).unwrap();
        assert_eq!(ids, [0, 1, 0, 2]);
        assert_eq!(new, [0, 1, 2]);
        let back = k.columns(&[2, 0]).unwrap();
        let names = back[0].as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(names.value(0), "Ali");
        let n = back[1].as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!((n.value(0), n.value(1)), (2, 1));
        let probe = k.encode(&[
            Arc::new(StringArray::from(vec!["Sara"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1])),
        ]);
        assert_eq!(k.find(&probe.unwrap()[0]), Some(1));
        // Many keys: the table grows and rehashes from the stored bytes.
        let many: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..10_000).map(|i| format!("c{i}")),
            )),
            Arc::new(Int64Array::from_iter_values(0..10_000)),
        ];
        let ids = k.intern(&many, 10_000, |_| {}).unwrap();
        assert_eq!(k.len(), 10_003);
        let again = k.intern(&many, 10_000, |_| panic!("no new group")).unwrap();
        assert_eq!(ids, again);
    }

    #[test]
    fn a_global_aggregate_has_one_empty_key() {
        let mut k = KeyIndex::new(vec![]);
        assert_eq!(k.intern(&[], 3, |_| {}).unwrap(), [0, 0, 0]);
        assert_eq!(k.len(), 1);
        assert!(k.columns(&[0]).unwrap().is_empty());
    }
}
