//! Group keys, stored once: each key's bytes in one flat buffer, and one hash table from key to
//! group id.
//!
//! ```text
//!   bytes:   [·Ali][·Sara][·Mounir] …      every key once, back to back
//!   ends:    [  4 ,   9  ,   16   ] …      group g = bytes[ends[g-1]..ends[g]]
//!   table:   HashTable<u32>  hash(key) → g       equality checks the bytes at g
//! ```
//!
//! A key's bytes depend on the GROUP BY types: a single string key (per customer, per product:
//! the usual view) is a validity byte and the string's own UTF-8 bytes, hashed and compared as
//! they are — no encoding per row; any other key is Arrow's row format of its values. No
//! per-key allocation and no `ScalarValue`: a million keys of a dozen bytes cost about 30 MB
//! (bytes + 8-byte end + 8-byte hash + table slot). Each key's hash is kept: the table grows
//! without hashing its keys again, and merging one state into another (a micro-batch into a
//! partition's state, into the delta serving takes) looks keys up by the hash they came with —
//! every index of a process hashes alike. Group ids are dense and never change, so every other
//! per-group structure is a plain vector indexed by them. Keys turn back into Arrow columns only
//! for the groups asked for ([`KeyIndex::columns`]).

use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::arrow::row::{RowConverter, RowParser, SortField};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::bytes::same;
use crate::error::Result;

/// How keys are turned into bytes.
enum Encoding {
    /// No GROUP BY: one empty key.
    Global,
    /// One `Utf8` key: `[1] ++ UTF-8 bytes`, or `[0]` for NULL.
    Str,
    /// Anything else: Arrow's row format.
    Rows(RowConverter, RowParser),
}

impl Encoding {
    fn new(types: &[DataType]) -> Self {
        match types {
            [] => Encoding::Global,
            [DataType::Utf8] => Encoding::Str,
            _ => {
                let c = RowConverter::new(types.iter().cloned().map(SortField::new).collect())
                    .expect("GROUP BY types are plain Arrow types");
                let p = c.parser();
                Encoding::Rows(c, p)
            }
        }
    }
}

/// The validity byte of a string key.
const VALID: u8 = 1;

/// One hasher (one random seed) for every index of the process, so that a key's hash in one
/// index is its hash in any other.
static HASHER: LazyLock<DefaultHashBuilder> = LazyLock::new(DefaultHashBuilder::default);

/// Dense group ids for group keys (see the module docs).
pub struct KeyIndex {
    encoding: Encoding,
    types: Vec<DataType>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Each group's hash.
    hashes: Vec<u64>,
    table: HashTable<u32>,
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
            encoding: Encoding::new(&self.types),
            types: self.types.clone(),
            bytes: self.bytes.clone(),
            ends: self.ends.clone(),
            hashes: self.hashes.clone(),
            table: self.table.clone(),
        }
    }
}

impl KeyIndex {
    /// An empty index for keys of `types` (none: a global aggregate's single group).
    pub fn new(types: Vec<DataType>) -> Self {
        Self {
            encoding: Encoding::new(&types),
            types,
            bytes: Vec::new(),
            ends: Vec::new(),
            hashes: Vec::new(),
            table: HashTable::new(),
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

    /// Keeps the groups `keep` flags (one flag per group), in place: the kept keys close up
    /// in their order, so group `g` becomes the number of kept groups before it. One pass over
    /// the keys, no rehash; it allocates only the map from old to new ids.
    pub fn retain(&mut self, keep: &[bool]) {
        debug_assert_eq!(keep.len(), self.len(), "one flag per group");
        let mut new_id = vec![u32::MAX; self.len()];
        let (mut start, mut written, mut kept) = (0, 0, 0);
        for (g, &k) in keep.iter().enumerate() {
            let end = self.ends[g];
            if k {
                self.bytes.copy_within(start..end, written);
                written += end - start;
                self.ends[kept] = written;
                self.hashes[kept] = self.hashes[g];
                new_id[g] = kept as u32;
                kept += 1;
            }
            start = end;
        }
        self.bytes.truncate(written);
        self.ends.truncate(kept);
        self.hashes.truncate(kept);
        self.table.retain(|g| {
            let n = new_id[*g as usize];
            *g = n;
            n != u32::MAX
        });
    }

    /// The hash of key bytes. A string key hashes as its UTF-8 bytes alone, so a string found
    /// in the input is looked up without building its key bytes.
    fn hash(&self, key: &[u8]) -> u64 {
        match (&self.encoding, key.split_first()) {
            (Encoding::Str, Some((&VALID, s))) => HASHER.hash_one(s),
            _ => HASHER.hash_one(key),
        }
    }

    /// The group of `key`, if it exists.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        self.find_hashed(self.hash(key), key)
    }

    /// The group of `key` whose hash `h` is known ([`KeyIndex::hash_of`] in another index).
    pub fn find_hashed(&self, h: u64, key: &[u8]) -> Option<usize> {
        self.table
            .find(h, |&g| same(self.key(g as usize), key))
            .map(|&g| g as usize)
    }

    /// The group of `key`, created when new; the flag says whether it was created.
    pub fn find_or_insert(&mut self, key: &[u8]) -> (usize, bool) {
        let h = self.hash(key);
        self.find_or_insert_hashed(h, key)
    }

    /// The hash of group `g`'s key (the same in every index of the process).
    pub fn hash_of(&self, g: usize) -> u64 {
        self.hashes[g]
    }

    /// [`KeyIndex::find_or_insert`] of a key whose hash `h` is known
    /// ([`KeyIndex::hash_of`] in another index).
    pub fn find_or_insert_hashed(&mut self, h: u64, key: &[u8]) -> (usize, bool) {
        self.find_or_insert_with(h, |k| same(k, key), |bytes| bytes.extend_from_slice(key))
    }

    /// The hash of the string key `s` (`None`: NULL) of a single-string-key index, for
    /// [`KeyIndex::find_or_insert_str`].
    pub fn hash_str(&self, s: Option<&[u8]>) -> u64 {
        debug_assert!(matches!(self.encoding, Encoding::Str));
        match s {
            Some(s) => HASHER.hash_one(s),
            None => self.hash(&[0]),
        }
    }

    /// The group of the string key `s` (`None`: NULL) whose hash is `h`, created when new.
    #[inline]
    pub fn find_or_insert_str(&mut self, h: u64, s: Option<&[u8]>) -> (usize, bool) {
        match s {
            Some(s) => self.find_or_insert_with(
                h,
                |k| k.first() == Some(&VALID) && same(&k[1..], s),
                |bytes| {
                    bytes.push(VALID);
                    bytes.extend_from_slice(s);
                },
            ),
            None => self.find_or_insert(&[0]),
        }
    }

    /// The group whose key bytes satisfy `eq` (hash `h`), or a new one whose bytes `write`
    /// appends.
    #[inline]
    fn find_or_insert_with(
        &mut self,
        h: u64,
        eq: impl Fn(&[u8]) -> bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> (usize, bool) {
        let (bytes, ends) = (&self.bytes, &self.ends);
        let at = |g: u32| {
            let g = g as usize;
            let start = if g == 0 { 0 } else { ends[g - 1] };
            &bytes[start..ends[g]]
        };
        if let Some(&g) = self.table.find(h, |&g| eq(at(g))) {
            return (g as usize, false);
        }
        let g = self.ends.len();
        write(&mut self.bytes);
        self.ends.push(self.bytes.len());
        self.hashes.push(h);
        let hashes = &self.hashes;
        self.table
            .insert_unique(h, g as u32, |&g| hashes[g as usize]);
        (g, true)
    }

    /// Group ids for each row of `cols` (the GROUP BY values), creating groups as needed.
    /// `created` is called with each new group id, in order. A single string key may come
    /// dictionary-encoded (`Int32` keys).
    pub fn intern(
        &mut self,
        cols: &[ArrayRef],
        rows: usize,
        created: impl FnMut(usize),
    ) -> Result<Vec<usize>> {
        let mut ids = Vec::with_capacity(rows);
        self.intern_into(cols, rows, &mut ids, created)?;
        Ok(ids)
    }

    /// [`KeyIndex::intern`] into `ids` (emptied first): a buffer reused from batch to batch.
    pub fn intern_into(
        &mut self,
        cols: &[ArrayRef],
        rows: usize,
        ids: &mut Vec<usize>,
        mut created: impl FnMut(usize),
    ) -> Result<()> {
        ids.clear();
        let mut add = |(g, new): (usize, bool)| {
            if new {
                created(g);
            }
            ids.push(g);
        };
        match &self.encoding {
            Encoding::Global => {
                let g = self.find_or_insert(&[]);
                add(g);
                ids.resize(rows, ids[0]);
            }
            Encoding::Str => match cols[0].as_dictionary_opt::<Int32Type>() {
                // Dictionary-encoded strings (archived segments): each value looked up once,
                // when a row first refers to it, so groups keep their first appearance.
                Some(d) => {
                    let (keys, values) = (d.keys(), d.values().as_string::<i32>());
                    let mut group_of = vec![u32::MAX; values.len()];
                    let nulls = keys.null_count() > 0;
                    for (i, &k) in keys.values().iter().enumerate().take(rows) {
                        let k = (!nulls || keys.is_valid(i)).then_some(k as usize);
                        match k.map(|k| group_of[k]) {
                            Some(g) if g != u32::MAX => add((g as usize, false)),
                            _ => {
                                let v = k
                                    .filter(|&k| values.is_valid(k))
                                    .map(|k| values.value(k).as_bytes());
                                let (g, new) = self.find_or_insert_str(self.hash_str(v), v);
                                if let Some(k) = k {
                                    group_of[k] = g as u32;
                                }
                                add((g, new));
                            }
                        }
                    }
                }
                None => {
                    let s = cols[0].as_string::<i32>();
                    for i in 0..rows {
                        let v = s.is_valid(i).then(|| s.value(i).as_bytes());
                        add(self.find_or_insert_str(self.hash_str(v), v));
                    }
                }
            },
            Encoding::Rows(conv, _) => {
                let encoded = conv.convert_columns(cols)?;
                for row in encoded.iter() {
                    add(self.find_or_insert(row.as_ref()));
                }
            }
        }
        Ok(())
    }

    /// Encodes key values (one row per key) as key bytes, e.g. to look a key up.
    pub fn encode(&self, cols: &[ArrayRef]) -> Result<Vec<Vec<u8>>> {
        Ok(match &self.encoding {
            Encoding::Global => vec![Vec::new()],
            Encoding::Str => cols[0]
                .as_string::<i32>()
                .iter()
                .map(|v| match v {
                    Some(s) => [&[VALID], s.as_bytes()].concat(),
                    None => vec![0],
                })
                .collect(),
            Encoding::Rows(conv, _) => conv
                .convert_columns(cols)?
                .iter()
                .map(|r| r.as_ref().to_vec())
                .collect(),
        })
    }

    /// The GROUP BY columns of the groups `gids`, in that order.
    pub fn columns(&self, gids: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(match &self.encoding {
            Encoding::Global => Vec::new(),
            Encoding::Str => {
                let values = gids.iter().map(|&g| match self.key(g).split_first() {
                    Some((&VALID, s)) => {
                        Some(std::str::from_utf8(s).expect("string keys are stored as UTF-8"))
                    }
                    _ => None,
                });
                vec![Arc::new(values.collect::<StringArray>()) as ArrayRef]
            }
            Encoding::Rows(conv, parser) => {
                conv.convert_rows(gids.iter().map(|&g| parser.parse(self.key(g))))?
            }
        })
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
    fn retain_closes_up_the_kept_keys_in_place() {
        let mut k = KeyIndex::new(vec![DataType::Utf8]);
        let names: Vec<String> = (0..1_000).map(|i| format!("c{i}")).collect();
        let cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(&names))];
        k.intern(&cols, names.len(), |_| {}).unwrap();
        let capacity = k.bytes.capacity();
        let keep: Vec<bool> = (0..names.len()).map(|g| g % 3 == 0).collect();
        k.retain(&keep);
        assert_eq!(k.len(), 334);
        assert_eq!(
            k.bytes.capacity(),
            capacity,
            "no copy: the buffer is reused"
        );
        let ids = k.intern(&cols, names.len(), |_| {}).unwrap();
        for (i, &g) in ids.iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(g, i / 3, "kept key {i} found at its closed-up id");
            } else {
                assert!(g >= 334, "dropped key {i} comes back as a new group");
            }
        }
        assert_eq!(k.len(), 1_000);
        let back = k.columns(&[1, 333]).unwrap();
        let s = back[0].as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((s.value(0), s.value(1)), ("c3", "c999"));
    }

    #[test]
    fn a_single_string_key_is_stored_as_its_bytes() {
        let mut k = KeyIndex::new(vec![DataType::Utf8]);
        let cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![
            Some("Ali"),
            None,
            Some("Éloïse-0001"),
            Some("Ali"),
            Some(""),
            None,
            Some("a customer with a long name, longer than sixteen bytes"),
        ]))];
        let ids = k.intern(&cols, 7, |_| {}).unwrap();
        assert_eq!(ids, [0, 1, 2, 0, 3, 1, 4]);
        assert_eq!(k.key(0), b"\x01Ali");
        assert_eq!(k.key(1), b"\x00");
        // A string found in the input finds the group its column made, and the other way round.
        let mut str_group = |s: Option<&[u8]>| k.find_or_insert_str(k.hash_str(s), s);
        assert_eq!(str_group(Some("Éloïse-0001".as_bytes())), (2, false));
        assert_eq!(str_group(None), (1, false));
        assert_eq!(str_group(Some(b"Sara")), (5, true));
        let probe = k.encode(&cols).unwrap();
        for (i, p) in probe.iter().enumerate() {
            assert_eq!(k.find(p), Some(ids[i]));
        }
        let back = k.columns(&[4, 1, 2, 5, 3]).unwrap();
        let back = back[0].as_any().downcast_ref::<StringArray>().unwrap();
        let back: Vec<Option<&str>> = back.iter().collect();
        assert_eq!(
            back,
            [
                Some("a customer with a long name, longer than sixteen bytes"),
                None,
                Some("Éloïse-0001"),
                Some("Sara"),
                Some("")
            ]
        );
        // The table grows and rehashes string keys as they were hashed when found.
        let many: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            (0..20_000).map(|i| format!("customer-{i}")),
        ))];
        let first = k.intern(&many, 20_000, |_| {}).unwrap();
        for (i, g) in first.iter().enumerate().step_by(997) {
            let s = format!("customer-{i}");
            let h = k.hash_str(Some(s.as_bytes()));
            assert_eq!(k.find_or_insert_str(h, Some(s.as_bytes())), (*g, false));
        }
    }

    #[test]
    fn dictionary_encoded_strings_find_the_groups_their_values_make() {
        use datafusion::arrow::array::{DictionaryArray, Int32Array};
        let values = StringArray::from(vec![Some("unused"), Some("Sara"), Some("Ali"), None]);
        let keys = Int32Array::from(vec![Some(2), Some(1), None, Some(2), Some(3), Some(1)]);
        let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap();
        let plain = StringArray::from(vec![
            Some("Ali"),
            Some("Sara"),
            None,
            Some("Ali"),
            None,
            Some("Sara"),
        ]);
        let (mut a, mut b) = (
            KeyIndex::new(vec![DataType::Utf8]),
            KeyIndex::new(vec![DataType::Utf8]),
        );
        let (mut new_a, mut new_b) = (Vec::new(), Vec::new());
        let ids = a.intern(&[Arc::new(dict) as ArrayRef], 6, |g| new_a.push(g));
        let want = b.intern(&[Arc::new(plain) as ArrayRef], 6, |g| new_b.push(g));
        // Groups in order of first appearance; a value no row refers to makes none.
        assert_eq!(ids.unwrap(), [0, 1, 2, 0, 2, 1]);
        assert_eq!(want.unwrap(), [0, 1, 2, 0, 2, 1]);
        assert_eq!((new_a, new_b), (vec![0, 1, 2], vec![0, 1, 2]));
        assert_eq!(
            (0..3).map(|g| a.key(g)).collect::<Vec<_>>(),
            [&b"\x01Ali"[..], b"\x01Sara", b"\x00"]
        );
    }

    #[test]
    fn a_global_aggregate_has_one_empty_key() {
        let mut k = KeyIndex::new(vec![]);
        assert_eq!(k.intern(&[], 3, |_| {}).unwrap(), [0, 0, 0]);
        assert_eq!(k.len(), 1);
        assert!(k.columns(&[0]).unwrap().is_empty());
    }
}
