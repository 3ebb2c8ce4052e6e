//! Values in the text format as PostgreSQL writes them, where pgwire (through
//! datafusion-postgres's encoder) writes them otherwise: each such field of a row is read back
//! and written again. The binary format is exact already: its fields are left as they are, as
//! are rows without such a field.
//!
//! - Floats: `1000`, `1e+20`, `1.5e-05`, `Infinity`, where pgwire writes `1000.0`, `1e20`,
//!   `1.5e-5`, `inf` — what psql shows, and what a client that parses the text reads (Java's
//!   `Double.parseDouble` refuses `inf`). pgwire's text is exact (ryu's shortest digits, or
//!   the digits `extra_float_digits` asks for); it is written again as `float8out` and
//!   `float4out` do: the shortest digits that read back as the value when
//!   `extra_float_digits` is above 0 (PostgreSQL's default, and what the JDBC driver sets),
//!   `%.{15|6 + extra_float_digits}g` otherwise; fixed-point from 1e-4 up to 1e15 (1e6 for
//!   `real`), exponents with a sign and two digits at least. Left: a negative zero is `0`
//!   (pgwire writes it so; PostgreSQL `-0`).
//! - `regproc` (the catalog's columns of functions, `pg_type.typinput`…, oids here):
//!   the function's name, `-` for none, as `regprocout` writes it.

use std::fmt::Write;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::{FieldFormat, FieldInfo, Response};
use datafusion_postgres::pgwire::messages::data::DataRow;
use futures::StreamExt;

use super::keys::Keys;

/// `r` with its text fields written as PostgreSQL writes them; `keys` names the functions of
/// `regproc` fields (without them, those stay oids).
pub fn pg_text(r: Response, keys: Option<&Arc<Keys>>) -> Response {
    let Response::Query(mut q) = r else {
        return r;
    };
    let texts: Vec<Option<Text>> = q
        .row_schema
        .iter()
        .map(|f| Text::of(f, keys.is_some()))
        .collect();
    if texts.iter().all(Option::is_none) {
        return Response::Query(q);
    }
    let texts = Arc::new(texts);
    let keys = keys.cloned();
    let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
    q.data_rows =
        Box::pin(rows.map(move |row| row.map(|row| rewritten(row, &texts, keys.as_deref()))));
    Response::Query(q)
}

/// How a text field is written again.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Text {
    Float(Float),
    Regproc,
}

impl Text {
    /// `f`'s, `None` for a field written as PostgreSQL writes it already; `regproc` only
    /// with the functions' names (`names`).
    fn of(f: &FieldInfo, names: bool) -> Option<Text> {
        match f.datatype() {
            t if *t == Type::REGPROC && names && f.format() == FieldFormat::Text => {
                Some(Text::Regproc)
            }
            _ => Float::of(f).map(Text::Float),
        }
    }

    /// A field's bytes written again, `None` to keep them (they are not what it writes).
    fn field(self, bytes: &[u8], keys: Option<&Keys>) -> Option<String> {
        match self {
            Text::Float(f) => f.field(bytes),
            Text::Regproc => {
                let oid: i32 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
                let procedures = keys?.procedures_now().ok()?;
                Some(procedures.regproc_text(oid).into_owned())
            }
        }
    }
}

/// How a field's floats are written.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Float {
    /// `real` (else `double precision`).
    single: bool,
    /// An array of them.
    array: bool,
    extra_digits: i8,
}

impl Float {
    /// The floats of a text field, `None` for any other field.
    fn of(f: &FieldInfo) -> Option<Float> {
        if f.format() != FieldFormat::Text {
            return None;
        }
        let (single, array) = match f.datatype() {
            t if *t == Type::FLOAT8 => (false, false),
            t if *t == Type::FLOAT4 => (true, false),
            t if *t == Type::FLOAT8_ARRAY => (false, true),
            t if *t == Type::FLOAT4_ARRAY => (true, true),
            _ => return None,
        };
        Some(Float {
            single,
            array,
            extra_digits: f.format_options().extra_float_digits,
        })
    }

    /// `text` (one value as pgwire wrote it) as PostgreSQL writes it, or `None` when it does
    /// not read as a float.
    fn write(self, text: &str, out: &mut String) -> Option<()> {
        if self.single {
            let v: f32 = text.parse().ok()?;
            write_float(v as f64, format!("{v:e}"), 6, self.extra_digits, out);
        } else {
            let v: f64 = text.parse().ok()?;
            write_float(v, format!("{v:e}"), 15, self.extra_digits, out);
        }
        Some(())
    }

    /// A field's bytes written again, `None` to keep them (they do not read as floats).
    fn field(self, bytes: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut out = String::with_capacity(text.len() + 4);
        if !self.array {
            self.write(text, &mut out)?;
            return Some(out);
        }
        // `{1.5,NULL,{2.0}}`: each element between the braces and commas.
        let mut rest = text;
        while !rest.is_empty() {
            let end = rest.find(['{', '}', ',']).unwrap_or(rest.len());
            let (element, after) = rest.split_at(end);
            match element {
                "" => {}
                "NULL" => out.push_str(element),
                e => self.write(e, &mut out)?,
            }
            if let Some(c) = after.chars().next() {
                out.push(c);
                rest = &after[1..];
            } else {
                rest = after;
            }
        }
        Some(out)
    }
}

/// `row` with the fields `texts` marks written again (a field count or length that does not
/// add up leaves the row as it is).
fn rewritten(mut row: DataRow, texts: &[Option<Text>], keys: Option<&Keys>) -> DataRow {
    let mut out = BytesMut::with_capacity(row.data.len() + 8 * texts.len());
    let mut at = 0;
    for text in texts.iter().take(row.field_count.max(0) as usize) {
        let Some(len) = row.data.get(at..at + 4) else {
            return row;
        };
        let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        at += 4;
        if len < 0 {
            out.put_i32(len);
            continue;
        }
        let Some(bytes) = row.data.get(at..at + len as usize) else {
            return row;
        };
        at += len as usize;
        match text.and_then(|t| t.field(bytes, keys)) {
            Some(text) => {
                out.put_i32(text.len() as i32);
                out.put_slice(text.as_bytes());
            }
            None => {
                out.put_i32(len);
                out.put_slice(bytes);
            }
        }
    }
    if at == row.data.len() {
        row.data = out;
    }
    row
}

/// `v` as `float8out` writes it (`float4out` with `digits` 6): `shortest` is Rust's shortest
/// digits of it in scientific notation (`1.5e-5`), the value's digits when
/// `extra_digits` > 0; else `%.{digits + extra_digits}g`.
fn write_float(v: f64, shortest: String, digits: i8, extra_digits: i8, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let (sci, fixed_below) = if extra_digits > 0 {
        (shortest, digits as i32)
    } else {
        // %g: that many significant digits (at least 1), trailing zeros dropped.
        let precision = (digits + extra_digits).max(1) as usize;
        (format!("{:.*e}", precision - 1, v), precision as i32)
    };
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e}'s exponent is a number");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        d => d,
    };
    out.push_str(sign);
    if digits == "0" {
        out.push('0');
    } else if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            (0..-exp - 1).for_each(|_| out.push('0'));
            out.push_str(digits);
        } else {
            let int = exp as usize + 1;
            if digits.len() <= int {
                out.push_str(digits);
                (digits.len()..int).for_each(|_| out.push('0'));
            } else {
                out.push_str(&digits[..int]);
                out.push('.');
                out.push_str(&digits[int..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str, single: bool, extra_digits: i8) -> String {
        let mut out = String::new();
        Float {
            single,
            array: false,
            extra_digits,
        }
        .write(text, &mut out)
        .expect("a float");
        out
    }

    /// What PostgreSQL 15 answers for `'<value>'::float8`, `::float4` (psql, extra_float_digits
    /// 1, 0 and -3), from pgwire's text of the same values.
    #[test]
    fn floats_are_written_as_postgresql_writes_them() {
        let doubles = [
            ("1000.0", "1000"),
            ("1e20", "1e+20"),
            ("1e15", "1e+15"),
            ("100000000000000.0", "100000000000000"),
            ("123456789012345.0", "123456789012345"),
            ("1234567890123456.0", "1.234567890123456e+15"),
            ("0.0001", "0.0001"),
            ("1e-5", "1e-05"),
            ("0.000123", "0.000123"),
            ("1.5e-5", "1.5e-05"),
            ("-2.5", "-2.5"),
            ("3.14159", "3.14159"),
            ("1e-300", "1e-300"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("NaN", "NaN"),
            ("inf", "Infinity"),
            ("-inf", "-Infinity"),
            ("0", "0"),
            ("0.1", "0.1"),
            ("100.0", "100"),
            ("1e16", "1e+16"),
            ("1.2345678901234567e19", "1.2345678901234567e+19"),
        ];
        for (pgwire, postgres) in doubles {
            assert_eq!(pg(pgwire, false, 1), postgres, "float8 {pgwire}");
            assert_eq!(pg(pgwire, false, 3), postgres, "float8 {pgwire}");
        }
        let reals = [
            ("1000.0", "1000"),
            ("1e6", "1e+06"),
            ("123456.0", "123456"),
            ("1234567.0", "1.234567e+06"),
            ("100000.0", "100000"),
            ("0.0001", "0.0001"),
            ("1e-5", "1e-05"),
            ("3.14159", "3.14159"),
            ("1e20", "1e+20"),
            ("16777216.0", "1.6777216e+07"),
            ("0.1", "0.1"),
        ];
        for (pgwire, postgres) in reals {
            assert_eq!(pg(pgwire, true, 1), postgres, "float4 {pgwire}");
        }
        let rounded = [
            ("1000", "1000", 0),
            ("1e20", "1e+20", 0),
            ("1e15", "1e+15", 0),
            ("1e14", "100000000000000", 0),
            ("0.1", "0.1", 0),
            ("3.14159265358979", "3.14159265358979", 0),
            ("1e-5", "1e-05", 0),
            ("0.0001", "0.0001", 0),
            ("123456789012345678", "1.23456789012346e+17", 0),
            ("3.14159265358979", "3.14159265359", -3),
            ("1e15", "1e+15", -3),
            ("1e12", "1e+12", -3),
            ("1e11", "100000000000", -3),
        ];
        for (pgwire, postgres, extra) in rounded {
            assert_eq!(
                pg(pgwire, false, extra),
                postgres,
                "float8 {pgwire} at {extra}"
            );
        }
        for (pgwire, postgres) in [
            ("3.14159265", "3.14159"),
            ("1e6", "1e+06"),
            ("123456", "123456"),
            ("1234567", "1.23457e+06"),
        ] {
            assert_eq!(pg(pgwire, true, 0), postgres, "float4 {pgwire} at 0");
        }
    }

    #[test]
    fn rows_keep_other_fields_nulls_and_arrays() {
        let field = |len: i32, bytes: &[u8], data: &mut BytesMut| {
            data.put_i32(len);
            data.put_slice(bytes);
        };
        let mut data = BytesMut::new();
        field(6, b"1000.0", &mut data);
        field(-1, b"", &mut data);
        field(5, b"abc.0", &mut data);
        field(17, b"{1e20,NULL,{2.5}}", &mut data);
        let row = DataRow::new(data, 4);
        let float = |array| {
            Some(Text::Float(Float {
                single: false,
                array,
                extra_digits: 1,
            }))
        };
        let row = rewritten(row, &[float(false), float(false), None, float(true)], None);
        let mut want = BytesMut::new();
        field(4, b"1000", &mut want);
        field(-1, b"", &mut want);
        field(5, b"abc.0", &mut want);
        field(18, b"{1e+20,NULL,{2.5}}", &mut want);
        assert_eq!((row.field_count, &row.data[..]), (4, &want[..]));
    }
}
