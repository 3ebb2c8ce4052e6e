//! The decoder's fast path: a scanner for the usual shape of a record — one flat JSON object
//! whose values are plain (strings without escapes, integers, short decimals, booleans, null)
//! — that fills the row straight from the bytes, without serde's generic machinery. It accepts
//! a strict subset of what the serde path accepts, with the same values; anything else
//! (escapes, nested values, long or exponent numbers, any error at all) returns `None`, and the
//! record goes through serde_json, which decides and words the reason. So a bad record is
//! rejected exactly as before, with the same reason.

use super::{EventSchema, FieldType};

/// One field of a scanned record: plain data (no drop glue, no allocation); a string is a range
/// of the record, checked to be UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) enum Slot {
    #[default]
    Missing,
    Null,
    Str(u32, u32),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Fills `row` from `record` when the record has the usual shape (see the module docs).
pub(super) fn scan(schema: &EventSchema, record: &[u8], row: &mut [Slot]) -> Option<()> {
    let mut s = Scanner { b: record, i: 0 };
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
            match schema
                .fields
                .iter()
                .position(|f| same(f.name.as_bytes(), key))
            {
                Some(k) => row[k] = s.value(schema.fields[k].ty)?,
                None => s.skip_scalar()?,
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
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

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes or control characters, as a range of the record; its UTF-8
    /// checked when it is not ASCII.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut high = 0u8;
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
    fn value(&mut self, ty: FieldType) -> Option<Slot> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(Slot::Null);
        }
        match ty {
            FieldType::String => {
                let (a, b) = self.string()?;
                Some(Slot::Str(u32::try_from(a).ok()?, u32::try_from(b).ok()?))
            }
            FieldType::Boolean => match self.peek()? {
                b't' => self.literal(b"true").map(|()| Slot::Bool(true)),
                b'f' => self.literal(b"false").map(|()| Slot::Bool(false)),
                _ => None,
            },
            FieldType::Integer => {
                let (text, _, fraction) = self.number()?;
                if fraction {
                    return None;
                }
                integer(text).map(Slot::Int)
            }
            FieldType::Double => {
                let (text, digits, fraction) = self.number()?;
                if !fraction {
                    // serde reads an integer as one and converts it.
                    return integer(text).map(|v| Slot::Float(v as f64));
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
                    .map(Slot::Float)
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

/// Byte equality of two short names, inline (a `memcmp` call costs more than the compare).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The integer `text` (`-?[0-9]+`, checked by [`Scanner::number`]), when it fits in 64 bits.
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
            let mut row = vec![Slot::Missing; 4];
            if scan(&s, r.as_bytes(), &mut row).is_some() {
                let mut d = EventDecoder::new(&s);
                let fast = d
                    .push(r.as_bytes())
                    .map(|()| format!("{:?}", d.finish().columns()));
                assert_eq!(fast.map_err(|e| e.0), serde_row(&s, r.as_bytes()), "{r}");
            }
        }
        // The usual shape takes the fast path.
        let mut row = vec![Slot::Missing; 4];
        assert!(scan(&s, records[1].as_bytes(), &mut row).is_some());
        assert_eq!(row[2], Slot::Float(1.25));
        // Escapes, long numbers, nesting go to serde.
        for r in [records[4], records[10], records[2], records[9]] {
            let mut row = vec![Slot::Missing; 4];
            assert!(scan(&s, r.as_bytes(), &mut row).is_none(), "{r}");
        }
    }

    /// Records mutated at random (bytes inserted, deleted, replaced from a JSON-ish alphabet):
    /// wherever the fast path answers, the decoder answers as serde alone does.
    #[test]
    fn mutated_records_decode_as_serde_decodes_them() {
        use rand::{Rng, SeedableRng};
        let s = schema();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let seeds: &[&[u8]] = &[
            br#"{"customer": "Ali", "amount": 120, "price": 2.5, "vip": false}"#,
            br#"{"amount":-7,"customer":"S\u00e9","x":[1,{"y":2}],"price":null}"#,
        ];
        let alphabet = b"{}[]\":,. -+0123456789eEtrufalsn\\\t\xc3\xa9\x80";
        let (mut fast, mut total) = (0, 0);
        for _ in 0..200_000 {
            let mut r = seeds[rng.random_range(0..seeds.len())].to_vec();
            for _ in 0..rng.random_range(1..4) {
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
            let mut row = vec![Slot::Missing; 4];
            if scan(&s, &r, &mut row).is_some() {
                fast += 1;
                let mut d = EventDecoder::new(&s);
                let got = d.push(&r).map(|()| format!("{:?}", d.finish().columns()));
                assert_eq!(
                    got.map_err(|e| e.0),
                    serde_row(&s, &r),
                    "{}",
                    String::from_utf8_lossy(&r)
                );
            }
        }
        assert!(
            fast > total / 10,
            "the fast path answered {fast} of {total}"
        );
    }
}
