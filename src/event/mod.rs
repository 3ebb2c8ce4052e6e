//! The declared event schema and the one decoder both layers use.
//!
//! Spark's `from_json(value, schema)` turns a malformed record into nulls without a word. Here a
//! record either matches the declared schema exactly — every non-nullable field present with the
//! declared JSON type — or it is rejected with a reason that names the field, and the caller sends
//! it to the dead-letter file. The batch layer decodes dataset lines with this code and the speed
//! layer decodes Kafka messages with it, so the two layers cannot disagree on what an event is.
//!
//! Decoding goes straight from bytes to a row of plain values on the stack ([`FieldValue`]; no
//! intermediate `serde_json::Value`), handed on only when all of it is valid, so a bad record
//! never leaves half a row behind: [`EventDecoder`] appends rows to Arrow column builders,
//! [`RowDecoder`] hands each row to its caller (the batch layer folds it into the views at once).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder,
    Int64Builder, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod scan;

/// The type of one declared field, named as in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A JSON string (Arrow `Utf8`).
    String,
    /// A JSON integer that fits in 64 bits (Arrow `Int64`; Spark's `IntegerType`/`LongType`).
    #[serde(alias = "long", alias = "int", alias = "bigint")]
    Integer,
    /// A JSON number (Arrow `Float64`; Spark's `DoubleType`).
    #[serde(alias = "float")]
    Double,
    /// A JSON boolean.
    Boolean,
    /// An instant: an RFC 3339 string (`2026-12-01T10:00:00Z`, `2026-12-01 11:00:00.25+01:00`),
    /// or, where the field declares a `unit`, an integer count of that unit since the Unix
    /// epoch. Arrow `Timestamp(µs, UTC)`; Spark's `TimestampType`.
    Timestamp,
}

impl FieldType {
    fn data_type(self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Integer => DataType::Int64,
            FieldType::Double => DataType::Float64,
            FieldType::Boolean => DataType::Boolean,
            FieldType::Timestamp => timestamp_type(),
        }
    }
}

/// The Arrow type of every timestamp: microseconds since the epoch, in UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The time zone of every timestamp.
pub const UTC: &str = "UTC";

/// The unit of a timestamp field's epoch numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpochUnit {
    /// Seconds.
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds (Kafka's and Java's `currentTimeMillis`).
    #[serde(rename = "ms")]
    Millis,
    /// Microseconds.
    #[serde(rename = "us")]
    Micros,
}

impl EpochUnit {
    /// Microseconds per unit.
    fn micros(self) -> i64 {
        match self {
            EpochUnit::Seconds => 1_000_000,
            EpochUnit::Millis => 1_000,
            EpochUnit::Micros => 1,
        }
    }

    /// The config's name of the unit.
    pub fn name(self) -> &'static str {
        match self {
            EpochUnit::Seconds => "s",
            EpochUnit::Millis => "ms",
            EpochUnit::Micros => "us",
        }
    }
}

/// An epoch number of `unit` as microseconds (`None`: beyond the range of timestamps).
fn epoch_micros(v: i64, unit: EpochUnit) -> Option<i64> {
    v.checked_mul(unit.micros())
}

/// An RFC 3339 timestamp as microseconds since the epoch, or why it is not one. Stricter than
/// RFC 3339 where Spark is (a `T` or a space between date and time; at most 6 fractional
/// digits; an offset of `Z` or `±HH:MM`), so both batch engines accept the same strings.
pub fn parse_timestamp(s: &[u8]) -> Result<i64, &'static str> {
    let digits =
        |r: std::ops::Range<usize>| s.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| s.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10)) {
        return Err("expected an RFC 3339 timestamp such as 2026-12-01T10:00:00Z");
    }
    if !(matches!(s.get(10), Some(b'T' | b' '))
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19))
    {
        return Err("expected an RFC 3339 timestamp such as 2026-12-01T10:00:00Z");
    }
    if s[14] > b'5' || s[17] > b'5' {
        return Err("a timestamp's minutes or seconds are beyond 59 (no leap seconds)");
    }
    let mut i = 19;
    if at(i, b'.') {
        let f = i + 1;
        i = f;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == f {
            return Err("a timestamp's fraction of a second has no digits");
        }
        if i - f > 6 {
            return Err("a timestamp has more than 6 fractional digits (microseconds)");
        }
    }
    let zone = &s[i..];
    let ok_zone = zone == b"Z"
        || (zone.len() == 6
            && matches!(zone[0], b'+' | b'-')
            && zone[1..3].iter().all(u8::is_ascii_digit)
            && zone[3] == b':'
            && zone[4..6].iter().all(u8::is_ascii_digit));
    if !ok_zone {
        return Err("a timestamp needs its offset from UTC: `Z` or `+HH:MM`");
    }
    // Every part is known to be ASCII digits: read them as numbers, and let chrono say
    // whether the day exists (30 February) and the hour is one.
    let num =
        |r: std::ops::Range<usize>| s[r].iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    let micros = if i > 20 {
        // 1 to 6 digits after the point, as microseconds.
        let digits = &s[20..i];
        let n = num(20..i);
        n * 10u32.pow(6 - digits.len() as u32)
    } else {
        0
    };
    let offset_secs = match zone {
        [b'Z'] => 0,
        _ => {
            let (h, m) = (num(i + 1..i + 3), num(i + 4..i + 6));
            if h > 23 || m > 59 {
                return Err("not a valid date and time (day, hour or offset out of range)");
            }
            let secs = i64::from(h * 3600 + m * 60);
            if zone[0] == b'-' { -secs } else { secs }
        }
    };
    let local = chrono::NaiveDate::from_ymd_opt(num(0..4) as i32, num(5..7), num(8..10))
        .and_then(|d| d.and_hms_micro_opt(num(11..13), num(14..16), num(17..19), micros))
        .ok_or("not a valid date and time (day, hour or offset out of range)")?;
    Ok(local.and_utc().timestamp_micros() - offset_secs * 1_000_000)
}

/// One declared field of the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FieldDef {
    /// The JSON key and the SQL column name.
    pub name: String,
    /// The JSON type the value must have.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Whether the field may be missing or `null`. Off by default: a missing amount is a bad
    /// record, not a zero.
    #[serde(default)]
    pub nullable: bool,
    /// For a `timestamp`: the unit of its epoch numbers (`s`, `ms`, `us`). Without it, only
    /// RFC 3339 strings are timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<EpochUnit>,
}

/// The columns every event has besides its declared fields: the Kafka record it came in, as
/// Spark's Kafka source gives them (NULL for the events of the historical files). The prefix
/// is reserved: no declared field may start with it.
pub const KAFKA_COLUMNS: [&str; 4] = [
    "_kafka_timestamp",
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_key",
];

/// The reserved prefix of [`KAFKA_COLUMNS`].
pub const KAFKA_PREFIX: &str = "_kafka_";

/// The Arrow fields of [`KAFKA_COLUMNS`]: the record's timestamp (Kafka's CreateTime or
/// LogAppendTime), partition, offset, and key as text (not UTF-8: replaced characters).
fn kafka_fields() -> Vec<Field> {
    vec![
        Field::new(KAFKA_COLUMNS[0], timestamp_type(), true),
        Field::new(KAFKA_COLUMNS[1], DataType::Int32, true),
        Field::new(KAFKA_COLUMNS[2], DataType::Int64, true),
        Field::new(KAFKA_COLUMNS[3], DataType::Utf8, true),
    ]
}

/// The Kafka record an event came in (see [`KAFKA_COLUMNS`]).
#[derive(Debug, Clone, Copy)]
pub struct KafkaRecord<'a> {
    /// Its timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
}

/// The builders of the [`KAFKA_COLUMNS`].
struct KafkaBuilders {
    timestamp: TimestampMicrosecondBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    key: StringBuilder,
}

impl KafkaBuilders {
    fn new(rows: usize) -> Self {
        Self {
            timestamp: TimestampMicrosecondBuilder::with_capacity(rows),
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            key: StringBuilder::new(),
        }
    }

    fn append(&mut self, r: Option<&KafkaRecord<'_>>) {
        match r {
            Some(r) => {
                self.timestamp
                    .append_option(r.timestamp_ms.and_then(|t| t.checked_mul(1000)));
                self.partition.append_value(r.partition);
                self.offset.append_value(r.offset);
                self.key
                    .append_option(r.key.map(|k| String::from_utf8_lossy(k).into_owned()));
            }
            None => {
                self.timestamp.append_null();
                self.partition.append_null();
                self.offset.append_null();
                self.key.append_null();
            }
        }
    }

    fn finish(&mut self) -> [ArrayRef; 4] {
        [
            Arc::new(self.timestamp.finish().with_timezone(UTC)),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.key.finish()),
        ]
    }
}

/// The schema every event must match, and its Arrow form.
#[derive(Debug, Clone)]
pub struct EventSchema {
    fields: Vec<FieldDef>,
    arrow: SchemaRef,
}

impl EventSchema {
    /// Builds the schema; field names must be unique and non-empty.
    pub fn new(fields: Vec<FieldDef>) -> Result<Self> {
        if fields.is_empty() {
            return Err(Error::config("schema.fields: declare at least one field"));
        }
        for (i, f) in fields.iter().enumerate() {
            if f.name.is_empty() {
                return Err(Error::config(format!(
                    "schema.fields[{i}]: empty field name"
                )));
            }
            if f.unit.is_some() && f.ty != FieldType::Timestamp {
                return Err(Error::config(format!(
                    "schema.fields[{i}] (`{}`): `unit` is for timestamp fields; this one is {:?}",
                    f.name, f.ty
                )));
            }
            if f.name.starts_with(KAFKA_PREFIX) {
                return Err(Error::config(format!(
                    "schema.fields[{i}]: `{}` starts with `{KAFKA_PREFIX}`, which names the Kafka \
                     record's own columns ({}); rename the field",
                    f.name,
                    KAFKA_COLUMNS.join(", ")
                )));
            }
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(Error::config(format!(
                    "schema.fields: field `{}` is declared twice",
                    f.name
                )));
            }
        }
        let arrow = Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| Field::new(&f.name, f.ty.data_type(), f.nullable))
                .chain(kafka_fields())
                .collect::<Vec<_>>(),
        ));
        Ok(Self { fields, arrow })
    }

    /// The declared fields, in order.
    pub fn fields(&self) -> &[FieldDef] {
        &self.fields
    }

    /// The Arrow schema of decoded events: the declared fields, then the [`KAFKA_COLUMNS`].
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::clone(&self.arrow)
    }

    /// Rejects a row where a non-nullable field is missing or null.
    fn check(&self, row: &[FieldValue<'_>]) -> Result<(), DecodeError> {
        for (f, v) in self.fields.iter().zip(row) {
            if !f.nullable {
                match v {
                    FieldValue::Missing => {
                        return Err(DecodeError(format!("missing field `{}`", f.name)));
                    }
                    FieldValue::Null => {
                        return Err(DecodeError(format!("field `{}` is null", f.name)));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The serde path: any record, with the reason when it is bad.
    fn parse<'a>(&self, record: &'a [u8], row: &mut [Value<'a>]) -> Result<(), DecodeError> {
        // serde_json validates UTF-8 inside strings as it parses (outside them, any non-ASCII
        // byte is a syntax error), so the bytes are parsed as they are; only a failure is
        // examined further, to say "not UTF-8" when that is the cause.
        let mut de = serde_json::Deserializer::from_slice(record);
        RowSeed { schema: self, row }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| match std::str::from_utf8(record) {
                Err(u) => DecodeError(format!(
                    "not UTF-8 (invalid byte at position {})",
                    u.valid_up_to()
                )),
                Ok(_) => DecodeError(json_reason(&e)),
            })?;
        Ok(())
    }
}

/// Why a record was rejected. The message names the field and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One decoded value, borrowed from the input where JSON escapes allow it.
#[derive(Debug, Clone, PartialEq, Default)]
enum Value<'a> {
    #[default]
    Missing,
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Time(i64),
}

impl<'a> Value<'a> {
    /// The value as the decoder hands it on (a string as its bytes).
    fn field(&self) -> FieldValue<'_> {
        match self {
            Value::Missing => FieldValue::Missing,
            Value::Null => FieldValue::Null,
            Value::Str(s) => FieldValue::Str(s.as_bytes()),
            Value::Int(i) => FieldValue::Int(*i),
            Value::Float(x) => FieldValue::Float(*x),
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Time(t) => FieldValue::Time(*t),
        }
    }
}

/// One field of a decoded record, of the declared type: plain data (no drop glue, no
/// allocation), a string borrowed from the record where it has no escapes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FieldValue<'a> {
    /// The record has no such key.
    #[default]
    Missing,
    /// The record's value is `null`.
    Null,
    /// A string field's value, as UTF-8 bytes (checked).
    Str(&'a [u8]),
    /// An integer field's value.
    Int(i64),
    /// A double field's value (an integer in the record is converted).
    Float(f64),
    /// A boolean field's value.
    Bool(bool),
    /// A timestamp field's value: microseconds since the epoch.
    Time(i64),
}

enum ColumnBuilder {
    /// Strings as bytes, each checked to be UTF-8 when decoded; the column is checked once more,
    /// whole, when it becomes an Arrow string array.
    Str(BinaryBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn append(&mut self, v: FieldValue<'_>) {
        match (self, v) {
            (ColumnBuilder::Str(b), FieldValue::Str(s)) => b.append_value(s),
            (ColumnBuilder::Int(b), FieldValue::Int(i)) => b.append_value(i),
            (ColumnBuilder::Float(b), FieldValue::Float(x)) => b.append_value(x),
            (ColumnBuilder::Bool(b), FieldValue::Bool(x)) => b.append_value(x),
            (ColumnBuilder::Time(b), FieldValue::Time(x)) => b.append_value(x),
            (ColumnBuilder::Str(b), _) => b.append_null(),
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Float(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::Time(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Str(b) => Arc::new(
                StringArray::try_from_binary(b.finish())
                    .expect("every string was checked to be UTF-8 as it was decoded"),
            ),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish().with_timezone(UTC)),
        }
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuilder::Str(b) => b.len(),
            ColumnBuilder::Int(b) => b.len(),
            ColumnBuilder::Float(b) => b.len(),
            ColumnBuilder::Bool(b) => b.len(),
            ColumnBuilder::Time(b) => b.len(),
        }
    }
}

/// Appends one decoded row to the column builders.
fn append_row(columns: &mut [ColumnBuilder], row: &[FieldValue<'_>]) {
    for (b, &v) in columns.iter_mut().zip(row) {
        b.append(v);
    }
}

/// Decodes records one at a time into rows of the declared fields, for a caller that folds
/// them itself (the batch layer's usual view); [`EventDecoder`] builds Arrow batches with it.
/// The fast path remembers the last record's layout (see `scan`), so keep one per stream.
#[derive(Debug)]
pub struct RowDecoder<'s> {
    schema: &'s EventSchema,
    shape: scan::Shape,
}

impl<'s> RowDecoder<'s> {
    /// A decoder for records of `schema`.
    pub fn new(schema: &'s EventSchema) -> Self {
        Self {
            schema,
            shape: scan::Shape::default(),
        }
    }

    /// Decodes one record and hands its row (one value per declared field, in order) to `f`,
    /// or rejects it with the reason and calls nothing.
    pub fn decode<R>(
        &mut self,
        record: &[u8],
        f: impl FnOnce(&[FieldValue<'_>]) -> R,
    ) -> Result<R, DecodeError> {
        let schema = self.schema;
        // The fast path fills plain values on the stack (no allocation, no drop glue).
        const INLINE: usize = 16;
        let n = schema.fields.len();
        if n <= INLINE {
            let mut row = [FieldValue::Missing; INLINE];
            if scan::scan(schema, record, &mut row[..n], &mut self.shape).is_some() {
                schema.check(&row[..n])?;
                return Ok(f(&row[..n]));
            }
        }
        self.decode_serde(record, f)
    }

    /// [`Self::decode`] through the serde path: any record, with the reason when it is bad.
    fn decode_serde<R>(
        &self,
        record: &[u8],
        f: impl FnOnce(&[FieldValue<'_>]) -> R,
    ) -> Result<R, DecodeError> {
        let mut values = vec![Value::Missing; self.schema.fields.len()];
        self.schema.parse(record, &mut values)?;
        let row: Vec<FieldValue<'_>> = values.iter().map(Value::field).collect();
        self.schema.check(&row)?;
        Ok(f(&row))
    }
}

/// Decodes JSON records into Arrow record batches of the declared schema.
///
/// ```
/// use lambdaflow::event::{EventSchema, EventDecoder};
/// let schema = EventSchema::new(lambdaflow::config::default_fields()).unwrap();
/// let mut dec = EventDecoder::new(&schema);
/// dec.push(br#"{"customer": "Ali", "amount": 120}"#).unwrap();
/// assert!(dec.push(br#"{"customer": "Ali", "amount": "abc"}"#).is_err());
/// assert_eq!(dec.finish().num_rows(), 1);
/// ```
pub struct EventDecoder<'s> {
    rows: RowDecoder<'s>,
    columns: Vec<ColumnBuilder>,
    kafka: KafkaBuilders,
}

impl<'s> EventDecoder<'s> {
    /// A decoder with empty builders.
    pub fn new(schema: &'s EventSchema) -> Self {
        Self::with_capacity(schema, 1024)
    }

    /// A decoder whose builders are sized for `rows` rows.
    pub fn with_capacity(schema: &'s EventSchema, rows: usize) -> Self {
        let columns = schema
            .fields
            .iter()
            .map(|f| match f.ty {
                FieldType::String => {
                    ColumnBuilder::Str(BinaryBuilder::with_capacity(rows, rows * 8))
                }
                FieldType::Integer => ColumnBuilder::Int(Int64Builder::with_capacity(rows)),
                FieldType::Double => ColumnBuilder::Float(Float64Builder::with_capacity(rows)),
                FieldType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
                FieldType::Timestamp => {
                    ColumnBuilder::Time(TimestampMicrosecondBuilder::with_capacity(rows))
                }
            })
            .collect();
        Self {
            rows: RowDecoder::new(schema),
            columns,
            kafka: KafkaBuilders::new(rows),
        }
    }

    /// Rows decoded since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, ColumnBuilder::len)
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes one record and appends it, or rejects it with the reason and appends nothing.
    pub fn push(&mut self, record: &[u8]) -> Result<(), DecodeError> {
        self.push_from(record, None)
    }

    /// [`Self::push`] of the value of a Kafka record, with the record's own columns.
    pub fn push_from(
        &mut self,
        record: &[u8],
        kafka: Option<&KafkaRecord<'_>>,
    ) -> Result<(), DecodeError> {
        let (columns, meta) = (&mut self.columns, &mut self.kafka);
        self.rows.decode(record, |row| {
            append_row(columns, row);
            meta.append(kafka);
        })
    }

    /// [`Self::push`] through the serde path alone (what the fast path is checked against).
    #[cfg(test)]
    fn push_serde(&mut self, record: &[u8]) -> Result<(), DecodeError> {
        let (columns, meta) = (&mut self.columns, &mut self.kafka);
        self.rows.decode_serde(record, |row| {
            append_row(columns, row);
            meta.append(None);
        })
    }

    /// Takes the buffered rows as one record batch and empties the builders.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> =
            self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        columns.extend(self.kafka.finish());
        RecordBatch::try_new(self.rows.schema.arrow_schema(), columns)
            .expect("decoder columns always match the declared schema")
    }
}

/// The kind of a rejection reason, for counting: without the column, the value found or the
/// JSON parser's detail (`field `amount`: expected an integer`, `not valid JSON`, …).
pub fn reason_kind(reason: &str) -> &str {
    if reason.starts_with("not valid JSON") {
        return "not valid JSON";
    }
    let end = [" (", ", found"]
        .iter()
        .filter_map(|p| reason.find(p))
        .min()
        .unwrap_or(reason.len());
    &reason[..end]
}

/// serde_json's messages say "at line 1 column 17"; for one record only the column helps.
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &msg[..i], e.column()),
        None => msg,
    };
    if e.is_syntax() || e.is_eof() {
        format!("not valid JSON: {msg}")
    } else {
        msg
    }
}

struct RowSeed<'s, 'r, 'a> {
    schema: &'s EventSchema,
    row: &'r mut [Value<'a>],
}

impl<'de, 's, 'r> DeserializeSeed<'de> for RowSeed<'s, 'r, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 's, 'r> Visitor<'de> for RowSeed<'s, 'r, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed {
            schema: self.schema,
        })? {
            match key {
                Some(i) => {
                    let f = &self.schema.fields[i];
                    self.row[i] = map.next_value_seed(FieldSeed { field: f })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, matched as raw bytes against the declared field names: a declared name is valid
/// UTF-8, so only keys that match none are checked for it (the record is rejected when not).
struct KeySeed<'s> {
    schema: &'s EventSchema,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Option<usize>, E> {
        match self
            .schema
            .fields
            .iter()
            .position(|f| f.name.as_bytes() == v)
        {
            Some(i) => Ok(Some(i)),
            None => match std::str::from_utf8(v) {
                Ok(_) => Ok(None),
                Err(_) => Err(E::custom("a key is not UTF-8")),
            },
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(v.as_bytes())
    }
}

struct FieldSeed<'f> {
    field: &'f FieldDef,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Value<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl FieldSeed<'_> {
    fn wrong<E: de::Error>(&self, found: de::Unexpected<'_>) -> E {
        let want = match self.field.ty {
            FieldType::String => "a string",
            FieldType::Integer => "an integer",
            FieldType::Double => "a number",
            FieldType::Boolean => "a boolean",
            FieldType::Timestamp if self.field.unit.is_some() => {
                "an RFC 3339 timestamp string or an integer epoch"
            }
            FieldType::Timestamp => "an RFC 3339 timestamp string",
        };
        E::custom(format_args!(
            "field `{}`: expected {want}, found {found}",
            self.field.name
        ))
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of type {:?}", self.field.ty)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value<'de>, E> {
        match self.field.ty {
            FieldType::String => Ok(Value::Str(Cow::Borrowed(v))),
            _ => self.visit_str(v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value<'de>, E> {
        match self.field.ty {
            FieldType::String => Ok(Value::Str(Cow::Owned(v.to_owned()))),
            FieldType::Timestamp => parse_timestamp(v.as_bytes())
                .map(Value::Time)
                .map_err(|why| {
                    E::custom(format_args!(
                        "field `{}`: {why}, found {v:?}",
                        self.field.name
                    ))
                }),
            _ => Err(self.wrong(de::Unexpected::Str(v))),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value<'de>, E> {
        match self.field.ty {
            FieldType::Integer => Ok(Value::Int(v)),
            FieldType::Timestamp => match self.field.unit {
                Some(unit) => epoch_micros(v, unit).map(Value::Time).ok_or_else(|| {
                    E::custom(format_args!(
                        "field `{}`: {v} {} since the epoch is beyond the range of timestamps",
                        self.field.name,
                        unit.name()
                    ))
                }),
                None => Err(E::custom(format_args!(
                    "field `{}`: expected an RFC 3339 timestamp string, found integer {v} \
                     (declare the field's `unit` to read epoch numbers)",
                    self.field.name
                ))),
            },
            FieldType::Double => Ok(Value::Float(v as f64)),
            _ => Err(self.wrong(de::Unexpected::Signed(v))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'de>, E> {
        match self.field.ty {
            FieldType::Timestamp => match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => Err(E::custom(format_args!(
                    "field `{}`: {v} is beyond the range of timestamps",
                    self.field.name
                ))),
            },
            FieldType::Integer => i64::try_from(v).map(Value::Int).map_err(|_| {
                E::custom(format_args!(
                    "field `{}`: {v} does not fit in a 64-bit integer",
                    self.field.name
                ))
            }),
            FieldType::Double => Ok(Value::Float(v as f64)),
            _ => Err(self.wrong(de::Unexpected::Unsigned(v))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value<'de>, E> {
        match self.field.ty {
            FieldType::Double => Ok(Value::Float(v)),
            // serde_json reads an integer beyond 64 bits as a float: say what is wrong with it.
            FieldType::Integer if v.fract() == 0.0 && v.abs() >= 9.2e18 => {
                Err(E::custom(format_args!(
                    "field `{}`: {v} is out of range for a 64-bit integer",
                    self.field.name
                )))
            }
            _ => Err(self.wrong(de::Unexpected::Float(v))),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value<'de>, E> {
        match self.field.ty {
            FieldType::Boolean => Ok(Value::Bool(v)),
            _ => Err(self.wrong(de::Unexpected::Bool(v))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Value<'de>, A::Error> {
        Err(self.wrong(de::Unexpected::Seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Value<'de>, A::Error> {
        Err(self.wrong(de::Unexpected::Map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, cast::as_string_array};
    use datafusion::arrow::datatypes::Int64Type;

    fn seed() -> EventSchema {
        EventSchema::new(crate::config::default_fields()).unwrap()
    }

    fn reason(input: &[u8]) -> String {
        let s = seed();
        EventDecoder::new(&s).push(input).unwrap_err().0
    }

    #[test]
    fn decodes_the_seed_lines() {
        let s = seed();
        let mut d = EventDecoder::new(&s);
        d.push(br#"{"customer": "Ali", "amount": 120}"#).unwrap();
        d.push(br#"{"amount":90, "customer":"Sara", "extra": [1, {"x": 2}]}"#)
            .unwrap();
        d.push(br#"{"customer": "Mou\u006eir", "amount": -5}"#)
            .unwrap();
        let b = d.finish();
        assert_eq!(b.num_rows(), 3);
        assert_eq!(as_string_array(b.column(0)).value(2), "Mounir");
        let amounts: Vec<i64> = b.column(1).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(amounts, vec![120, 90, -5]);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn rejects_each_kind_of_bad_record_with_a_reason() {
        assert!(
            reason(b"not json").starts_with("not valid JSON"),
            "{}",
            reason(b"not json")
        );
        assert!(
            reason(b"[1,2]").contains("expected a JSON object"),
            "{}",
            reason(b"[1,2]")
        );
        assert_eq!(reason(br#"{"customer":"Ali"}"#), "missing field `amount`");
        assert!(
            reason(br#"{"customer":"Ali","amount":"abc"}"#)
                .contains("field `amount`: expected an integer, found string \"abc\"")
        );
        assert!(reason(br#"{"customer":"Ali","amount":1.5}"#).contains("expected an integer"));
        assert_eq!(
            reason(br#"{"customer":null,"amount":1}"#),
            "field `customer` is null"
        );
        assert!(reason(b"{\"customer\":\"\xff\",\"amount\":1}").starts_with("not UTF-8"));
        // In a key the layers do not even read, too.
        assert!(reason(b"{\"customer\":\"A\",\"amount\":1,\"x\xff\":2}").starts_with("not UTF-8"));
        assert!(reason(br#"{"customer":"Ali","amount":1} trailing"#).starts_with("not valid JSON"));
        for big in [
            "99999999999999999999",
            "-99999999999999999999",
            "9223372036854775808",
        ] {
            let line = format!(r#"{{"customer":"Ali","amount":{big}}}"#);
            let r = reason(line.as_bytes());
            assert!(
                r.contains("field `amount`") && r.contains("out of range")
                    || r.contains("does not fit in a 64-bit integer"),
                "{big}: {r}"
            );
        }
    }

    #[test]
    fn a_bad_record_leaves_no_partial_row() {
        let s = seed();
        let mut d = EventDecoder::new(&s);
        d.push(br#"{"customer":"Ali","amount":1}"#).unwrap();
        d.push(br#"{"customer":"Bad","amount":"x"}"#).unwrap_err();
        assert_eq!(d.len(), 1);
        let b = d.finish();
        assert_eq!(b.column(0).len(), b.column(1).len());
    }

    fn with_ts(unit: Option<EpochUnit>) -> EventSchema {
        let mut fields = crate::config::default_fields();
        fields.push(FieldDef {
            name: "ts".into(),
            ty: FieldType::Timestamp,
            nullable: false,
            unit,
        });
        EventSchema::new(fields).unwrap()
    }

    /// Each line's time in µs, through the fast path and the serde path (which must agree), or
    /// the reason it was rejected.
    fn times(schema: &EventSchema, ts: &str) -> Result<i64, String> {
        let line = format!(r#"{{"customer": "Ali", "amount": 1, "ts": {ts}}}"#);
        let mut fast = EventDecoder::new(schema);
        let mut slow = EventDecoder::new(schema);
        let a = fast.push(line.as_bytes()).map_err(|e| e.0);
        let b = slow.push_serde(line.as_bytes()).map_err(|e| e.0);
        assert_eq!(a.is_ok(), b.is_ok(), "{ts}: {a:?} {b:?}");
        a?;
        let (fa, fb) = (fast.finish(), slow.finish());
        assert_eq!(fa.schema().field(2).data_type(), &timestamp_type());
        let t = |b: &RecordBatch| {
            b.column(2)
                .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .value(0)
        };
        assert_eq!(t(&fa), t(&fb), "{ts}");
        Ok(t(&fa))
    }

    #[test]
    fn timestamps_are_rfc_3339_strings_or_epoch_numbers_of_the_declared_unit() {
        let s = with_ts(None);
        let at_10 = 1_796_119_200_000_000; // 2026-12-01T10:00:00Z
        assert_eq!(times(&s, r#""2026-12-01T10:00:00Z""#), Ok(at_10));
        assert_eq!(times(&s, r#""2026-12-01 11:00:00+01:00""#), Ok(at_10));
        assert_eq!(
            times(&s, r#""2026-12-01T10:00:00.25Z""#),
            Ok(at_10 + 250_000)
        );
        assert_eq!(times(&s, r#""1969-12-31T23:59:59.999999Z""#), Ok(-1));
        for (bad, why) in [
            (r#""2026-12-01T10:00:00""#, "offset from UTC"),
            (r#""2026-12-01""#, "RFC 3339"),
            (
                r#""2026-12-01T10:00:00.1234567Z""#,
                "more than 6 fractional digits",
            ),
            (r#""2026-02-30T10:00:00Z""#, "not a valid date"),
            (r#""2026-12-01T10:00:60Z""#, "beyond 59"),
            (r#""yesterday""#, "RFC 3339"),
            ("1796119200", "declare the field's `unit`"),
            ("true", "expected an RFC 3339 timestamp string"),
        ] {
            let e = times(&s, bad).unwrap_err();
            assert!(e.contains("field `ts`") && e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            times(&with_ts(Some(EpochUnit::Seconds)), "1796119200"),
            Ok(at_10)
        );
        assert_eq!(
            times(&with_ts(Some(EpochUnit::Millis)), "1796119200000"),
            Ok(at_10)
        );
        assert_eq!(
            times(&with_ts(Some(EpochUnit::Micros)), "1796119200000000"),
            Ok(at_10)
        );
        let ms = with_ts(Some(EpochUnit::Millis));
        assert_eq!(times(&ms, r#""2026-12-01T10:00:00Z""#), Ok(at_10));
        assert!(times(&ms, "1.5").unwrap_err().contains("integer epoch"));
        assert!(
            times(&ms, "9223372036854775807")
                .unwrap_err()
                .contains("beyond the range")
        );
        // `unit` is for timestamps only.
        let mut fields = crate::config::default_fields();
        fields[1].unit = Some(EpochUnit::Millis);
        let e = EventSchema::new(fields).unwrap_err().to_string();
        assert!(e.contains("`unit` is for timestamp fields"), "{e}");
    }

    #[test]
    fn timestamps_are_read_as_chrono_reads_rfc_3339() {
        for text in [
            "2026-12-01T10:00:00Z",
            "2024-02-29T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.9Z",
            "1969-12-31T23:59:59.5-00:30",
            "2026-12-01T00:00:00.000001+23:59",
            "2026-12-01T10:00:00.12-05:00",
            "2026-06-30T12:34:56.123456+02:00",
        ] {
            let chrono = chrono::DateTime::parse_from_rfc3339(text).unwrap();
            assert_eq!(
                parse_timestamp(text.as_bytes()),
                Ok(chrono.timestamp_micros()),
                "{text}"
            );
        }
        for bad in [
            "2025-02-29T10:00:00Z",
            "2026-04-31T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-12-00T10:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:00:00+24:00",
            "2026-12-01T10:00:00+01:60",
        ] {
            assert!(chrono::DateTime::parse_from_rfc3339(bad).is_err(), "{bad}");
            assert_eq!(
                parse_timestamp(bad.as_bytes()),
                Err("not a valid date and time (day, hour or offset out of range)"),
                "{bad}"
            );
        }
    }

    #[test]
    fn nullable_fields_accept_missing_and_null() {
        let mut fields = crate::config::default_fields();
        fields[1].nullable = true;
        let s = EventSchema::new(fields).unwrap();
        let mut d = EventDecoder::new(&s);
        d.push(br#"{"customer":"Ali"}"#).unwrap();
        d.push(br#"{"customer":"Ali","amount":null}"#).unwrap();
        assert_eq!(d.finish().column(1).null_count(), 2);
    }
}
