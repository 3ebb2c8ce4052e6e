//! The decoder's fast path: a scanner for the usual shape of a record — one flat JSON object
//! whose values are plain (strings without escapes, integers, short decimals, booleans, null)
//! — that fills the row straight from the bytes, without serde's generic machinery. It accepts
//! a strict subset of what the serde path accepts, with the same values; anything else
//! (escapes, nested values, long or exponent numbers, any error at all) returns `None`, and the
//! record goes through serde_json, which decides and words the reason. So a bad record is
//! rejected exactly as before, with the same reason.
//!
//! Records of a stream mostly share one layout: the same keys, in the same order, with the same
//! spacing. The scanner keeps the [`Shape`] of the last record it read — the bytes between its
//! values, and the field each value fills — and reads the next one by checking those bytes
//! (one comparison each) and parsing only the values:
//!
//! ```text
//!   {"customer": "Hajar-3285", "amount": 343}
//!   └────┬─────┘└─────┬─────┘└─────┬────┘└┬┘└┘
//!     literal    value → 0      literal  value literal (then only whitespace)
//! ```
//!
//! A record whose literals match byte for byte has the keys, order and separators of the one
//! learnt, and each value is parsed by the same code at the same place, so it is read exactly
//! as the full scan reads it. Any difference sends the record through the full scan, which
//! learns its shape.

use super::{EventSchema, FieldDef, FieldType, FieldValue};
use crate::bytes::same;

/// The layout of the last record the full scan read (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Shape {
    /// The record's bytes outside its values, back to back.
    text: Vec<u8>,
    /// Per value, in order: where the literal before it ends in `text`, and the declared field
    /// it fills (`None`: an undeclared field, skipped).
    values: Vec<(usize, Option<usize>)>,
    /// Whether `text` and `values` describe a record.
    known: bool,
}

/// Fills `row` (all [`FieldValue::Missing`]) from `record` when the record has the usual shape
/// (see the module docs); `shape` is the last record's, and becomes this one's.
pub(super) fn scan<'a>(
    schema: &EventSchema,
    record: &'a [u8],
    row: &mut [FieldValue<'a>],
    shape: &mut Shape,
) -> Option<()> {
    if shape.known {
        if replay(schema, record, row, shape).is_some() {
            return Some(());
        }
        row.fill(FieldValue::Missing);
    }
    let read = learn(schema, record, row, shape);
    shape.known = read.is_some();
    read
}

/// Reads `record` along `shape`, or `None` where it differs.
#[inline(always)]
fn replay<'a>(
    schema: &EventSchema,
    record: &'a [u8],
    row: &mut [FieldValue<'a>],
    shape: &Shape,
) -> Option<()> {
    let mut s = Scanner { b: record, i: 0 };
    let mut lit = 0;
    for &(end, field) in &shape.values {
        s.literal(&shape.text[lit..end])?;
        lit = end;
        match field {
            Some(k) => row[k] = s.value(&schema.fields[k])?,
            None => s.skip_scalar()?,
        }
    }
    s.literal(&shape.text[lit..])?;
    s.ws();
    (s.i == record.len()).then_some(())
}

/// The full scan: reads `record` and writes its shape into `shape`.
fn learn<'a>(
    schema: &EventSchema,
    record: &'a [u8],
    row: &mut [FieldValue<'a>],
    shape: &mut Shape,
) -> Option<()> {
    shape.text.clear();
    shape.values.clear();
    let mut s = Scanner { b: record, i: 0 };
    // Where the literal being read started.
    let mut lit = 0;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let (a, b) = s.string()?;
            let key = &record[a..b];
            s.ws();
            s.eat(b':')?;
            s.ws();
            shape.text.extend_from_slice(&record[lit..s.i]);
            let field = schema
                .fields
                .iter()
                .position(|f| same(f.name.as_bytes(), key));
            match field {
                Some(k) => row[k] = s.value(&schema.fields[k])?,
                None => s.skip_scalar()?,
            }
            shape.values.push((shape.text.len(), field));
            lit = s.i;
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    shape.text.extend_from_slice(&record[lit..s.i]);
    s.ws();
    (s.i == record.len()).then_some(())
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        same(self.b.get(self.i..end)?, word).then(|| self.i = end)
    }

    /// A string without escapes or control characters, as a range of the record; its UTF-8
    /// checked when it is not ASCII. Eight bytes at a time while none of them ends the string
    /// or needs a look.
    #[inline(always)]
    fn string(&mut self) -> Option<(usize, usize)> {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
        // A high bit per byte of `w` below `n` (exact for "is there one"; `n` ≤ 0x80).
        let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
        self.eat(b'"')?;
        let start = self.i;
        let mut high = 0u8;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let stops = below(w ^ (ONES * u64::from(b'"')), 1)
                | below(w ^ (ONES * u64::from(b'\\')), 1)
                | below(w, 0x20);
            if stops != 0 {
                break;
            }
            high |= u8::from(w & HIGHS != 0) << 7;
            self.i += 8;
        }
        loop {
            let c = self.next()?;
            match c {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => high |= c,
            }
        }
        let end = self.i - 1;
        if high >= 0x80 {
            std::str::from_utf8(&self.b[start..end]).ok()?;
        }
        Some((start, end))
    }

    /// A JSON number `-?(0|[1-9][0-9]*)(\.[0-9]+)?`: its text, how many digits it has, and
    /// whether it has a fraction; `None` for an exponent, a leading zero, or anything that is
    /// not this grammar.
    #[inline(always)]
    fn number(&mut self) -> Option<(&'a [u8], usize, bool)> {
        let start = self.i;
        if self.peek()? == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let int_digits = self.i - int_start;
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut frac_digits = 0;
        let fraction = self.peek() == Some(b'.');
        if fraction {
            self.i += 1;
            let f = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            frac_digits = self.i - f;
            if frac_digits == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some((&self.b[start..self.i], int_digits + frac_digits, fraction))
    }

    /// A declared field's value: what the serde path gives for it, or `None` where that path
    /// must decide.
    #[inline(always)]
    fn value(&mut self, field: &FieldDef) -> Option<FieldValue<'a>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(FieldValue::Null);
        }
        match field.ty {
            FieldType::String => {
                let (a, b) = self.string()?;
                Some(FieldValue::Str(&self.b[a..b]))
            }
            FieldType::Boolean => match self.peek()? {
                b't' => self.literal(b"true").map(|()| FieldValue::Bool(true)),
                b'f' => self.literal(b"false").map(|()| FieldValue::Bool(false)),
                _ => None,
            },
            FieldType::Integer => {
                let (text, _, fraction) = self.number()?;
                if fraction {
                    return None;
                }
                integer(text).map(FieldValue::Int)
            }
            FieldType::Double => {
                let (text, digits, fraction) = self.number()?;
                if !fraction {
                    // serde reads an integer as one and converts it.
                    return integer(text).map(|v| FieldValue::Float(v as f64));
                }
                // Up to 15 digits both parsers round the same (exactly once); beyond, serde's
                // own float parsing decides.
                if digits > 15 {
                    return None;
                }
                std::str::from_utf8(text)
                    .ok()?
                    .parse::<f64>()
                    .ok()
                    .map(FieldValue::Float)
            }
            FieldType::Timestamp if self.peek()? == b'"' => {
                let (a, b) = self.string()?;
                super::parse_timestamp(&self.b[a..b])
                    .ok()
                    .map(FieldValue::Time)
            }
            FieldType::Timestamp => {
                let (text, _, fraction) = self.number()?;
                if fraction {
                    return None;
                }
                super::epoch_micros(integer(text)?, field.unit?).map(FieldValue::Time)
            }
        }
    }

    /// An undeclared field's value, skipped when it is a plain scalar.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }
}

/// The integer `text` (`-?[0-9]+`, checked by [`Scanner::number`]), when it fits in 64 bits.
#[inline(always)]
fn integer(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        // serde_json reads `-0` as the double -0.0: it decides what that is.
        if v == 0 {
            return None;
        }
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventDecoder, FieldDef};

    fn schema() -> EventSchema {
        let f = |name: &str, ty, nullable| FieldDef {
            name: name.into(),
            ty,
            nullable,
            unit: None,
        };
        EventSchema::new(vec![
            f("customer", FieldType::String, false),
            f("amount", FieldType::Integer, false),
            f("price", FieldType::Double, true),
            f("vip", FieldType::Boolean, true),
        ])
        .unwrap()
    }

    /// What serde alone makes of `record`: the row, or the reason.
    fn serde_row(s: &EventSchema, record: &[u8]) -> Result<String, String> {
        let mut d = EventDecoder::new(s);
        d.push_serde(record).map_err(|e| e.0)?;
        Ok(format!("{:?}", d.finish().columns()))
    }

    #[test]
    fn the_fast_path_agrees_with_serde_wherever_it_answers() {
        let s = schema();
        let records: &[&str] = &[
            r#"{"customer": "Ali", "amount": 120}"#,
            r#"  {"amount":-5,"customer":"Sara","price":1.25,"vip":true}  "#,
            r#"{"customer":"Mounir","amount":0,"price":3,"vip":null,"other":"x","n":[1]}"#,
            r#"{"customer":"Éloïse","amount":7,"price":-0.1,"extra":false,"z":null,"k":12.5}"#,
            r#"{"customer":"a\"b","amount":1}"#,
            r#"{"customer":"Ali","amount":1.0}"#,
            r#"{"customer":"Ali","amount":"12"}"#,
            r#"{"customer":"Ali","amount":012}"#,
            r#"{"customer":"Ali","amount":99999999999999999999}"#,
            r#"{"customer":"Ali","amount":1,"price":1e3}"#,
            r#"{"customer":"Ali","amount":1,"price":0.1000000000000000055511}"#,
            r#"{"customer":"Ali","amount":1}x"#,
            r#"{"customer":"Ali","amount":1,}"#,
            r#"{"customer":"Ali"}"#,
            r#"{"customer":null,"amount":1}"#,
            r#"{"customer":"Ali","customer":"Sara","amount":2}"#,
            r#"{}"#,
            r#"[]"#,
            "",
            "{\"customer\":\"tab\there\",\"amount\":1}",
        ];
        for r in records {
            let mut row = vec![FieldValue::Missing; 4];
            if scan(&s, r.as_bytes(), &mut row, &mut Shape::default()).is_some() {
                let mut d = EventDecoder::new(&s);
                let fast = d
                    .push(r.as_bytes())
                    .map(|()| format!("{:?}", d.finish().columns()));
                assert_eq!(fast.map_err(|e| e.0), serde_row(&s, r.as_bytes()), "{r}");
            }
        }
        // The usual shape takes the fast path.
        let mut row = vec![FieldValue::Missing; 4];
        assert!(scan(&s, records[1].as_bytes(), &mut row, &mut Shape::default()).is_some());
        assert_eq!(row[2], FieldValue::Float(1.25));
        // Escapes, long numbers, nesting go to serde.
        for r in [records[4], records[10], records[2], records[9]] {
            let mut row = vec![FieldValue::Missing; 4];
            assert!(
                scan(&s, r.as_bytes(), &mut row, &mut Shape::default()).is_none(),
                "{r}"
            );
        }
    }

    #[test]
    fn a_record_of_the_last_layout_is_read_along_its_shape() {
        let s = schema();
        let mut shape = Shape::default();
        let mut row = vec![FieldValue::Missing; 4];
        let first = br#" {"customer": "Ali", "x": 1, "amount": 120, "vip": null} "#;
        assert!(scan(&s, first, &mut row, &mut shape).is_some());
        assert_eq!(
            shape.text,
            br#" {"customer": , "x": , "amount": , "vip": }"#
        );
        assert_eq!(
            shape.values,
            [(14, Some(0)), (21, None), (33, Some(1)), (42, Some(3))]
        );
        let next = br#" {"customer": "Sara-0042", "x": -7.5, "amount": -3, "vip": true}"#;
        let mut row = vec![FieldValue::Missing; 4];
        assert!(replay(&s, next, &mut row, &shape).is_some());
        assert_eq!(
            row,
            [
                FieldValue::Str(b"Sara-0042"),
                FieldValue::Int(-3),
                FieldValue::Missing,
                FieldValue::Bool(true)
            ]
        );
        // Another layout (spacing, order, a key) is not: the full scan reads and learns it.
        for other in [
            &br#"{"customer":"Sara", "x": 1, "amount": 1, "vip": true}"#[..],
            br#" {"amount": 1, "x": 1, "customer": "Sara", "vip": true}"#,
            br#" {"customer": "Sara", "y": 1, "amount": 1, "vip": true}"#,
            br#" {"customer": "Sara", "x": 1, "amount": 1, "vip": true} x"#,
        ] {
            let mut row = vec![FieldValue::Missing; 4];
            assert!(replay(&s, other, &mut row, &shape).is_none());
        }
        let mut row = vec![FieldValue::Missing; 4];
        assert!(scan(&s, br#"{"amount":5,"customer":"B"}"#, &mut row, &mut shape).is_some());
        assert_eq!(shape.text, br#"{"amount":,"customer":}"#);
        assert_eq!(row[..2], [FieldValue::Str(b"B"), FieldValue::Int(5)]);
    }

    /// Records mutated at random (bytes inserted, deleted, replaced from a JSON-ish alphabet),
    /// and records of one layout with random values, decoded one after the other as a stream
    /// (the scanner replays the last record's shape): every record decodes as serde alone
    /// decodes it.
    #[test]
    fn mutated_records_decode_as_serde_decodes_them() {
        use rand::{Rng, SeedableRng};
        let s = schema();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let seeds: &[&[u8]] = &[
            br#"{"customer": "Ali", "amount": 120, "price": 2.5, "vip": false}"#,
            br#"{"amount":-7,"customer":"S\u00e9","x":[1,{"y":2}],"price":null}"#,
        ];
        let names = [
            "Ali",
            "Éloïse-0001",
            "a\\\"b",
            "tab\there",
            "",
            "Hajar-3285-long-name",
        ];
        let amounts = [
            "0",
            "-5",
            "012",
            "1.0",
            "99999999999999999999",
            "null",
            "\"3\"",
            "7",
        ];
        let prices = [
            "2.5",
            "1e3",
            "null",
            "-0.125",
            "3",
            "0.1000000000000000055511",
            "true",
        ];
        let alphabet = b"{}[]\":,. -+0123456789eEtrufalsn\\\t\xc3\xa9\x80";
        let mut shape = Shape::default();
        let mut stream = EventDecoder::new(&s);
        let (mut fast, mut total) = (0, 0);
        for _ in 0..200_000 {
            let mut r = match rng.random_range(0..3) {
                0 => format!(
                    r#"{{"customer": "{}", "amount": {}, "price": {}, "vip": false}}"#,
                    names[rng.random_range(0..names.len())],
                    amounts[rng.random_range(0..amounts.len())],
                    prices[rng.random_range(0..prices.len())],
                )
                .into_bytes(),
                k => seeds[k - 1].to_vec(),
            };
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..=r.len());
                let c = alphabet[rng.random_range(0..alphabet.len())];
                match rng.random_range(0..3) {
                    0 => r.insert(at, c),
                    1 if at < r.len() => {
                        r.remove(at);
                    }
                    _ if at < r.len() => r[at] = c,
                    _ => {}
                }
            }
            total += 1;
            let mut row = vec![FieldValue::Missing; 4];
            if scan(&s, &r, &mut row, &mut shape).is_some() {
                fast += 1;
            }
            let got = stream
                .push(&r)
                .map(|()| format!("{:?}", stream.finish().columns()));
            assert_eq!(
                got.map_err(|e| e.0),
                serde_row(&s, &r),
                "{}",
                String::from_utf8_lossy(&r)
            );
        }
        assert!(
            fast > total / 10,
            "the fast path answered {fast} of {total}"
        );
    }
}
