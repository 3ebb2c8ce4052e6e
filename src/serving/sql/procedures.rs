//! `pg_proc`'s functions as clients read them: by name (a cast to `regproc`, `pg_type`'s
//! `typinput`…), and their signatures as `pg_get_function_result` and
//! `pg_get_function_arguments` write them (psql's `\df`, the JDBC driver's getFunctions).
//! `pg_proc`'s rows are PostgreSQL's own, made once: [`Procedures`] reads them once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::format_type;
use datafusion_postgres::pgwire::api::Type;

use super::catalog::{SQL_NAMES, elements};

/// `pg_proc`'s functions.
#[derive(Debug, Default)]
pub struct Procedures {
    /// By name: the lowest oid of the name, and how many functions share it.
    pub by_name: HashMap<String, (i32, usize)>,
    /// By oid: the function's signature as PostgreSQL writes it.
    written: HashMap<i32, Written>,
}

/// A function's name, result and arguments as PostgreSQL writes them, and what else its
/// definition says.
#[derive(Debug)]
struct Written {
    name: String,
    /// Its schema's name.
    schema: String,
    /// `pg_proc`'s columns of the definition ([`DEFINITION`]), as text.
    attributes: [Option<String>; DEFINITION.len()],
    /// Its input arguments' types (`IN`, `INOUT`, `VARIADIC`): what tells it from another
    /// function of its name.
    inputs: Vec<i32>,
    /// `SETOF integer`, `TABLE(key text, value text)`; none for a procedure.
    result: Option<String>,
    /// `OUT word text, VARIADIC "any"`, without the defaults (`pg_proc` holds them as
    /// expression trees: `DEFAULT …` is left out).
    arguments: String,
}

impl Procedures {
    /// The functions of `pg_proc`'s rows (datafusion-pg-catalog's: arrays as text), in the
    /// schemas `schemas` names by oid.
    pub fn of(rows: &[RecordBatch], schemas: &HashMap<i32, String>) -> Result<Procedures> {
        let mut p = Procedures::default();
        for b in rows {
            let oid = column(b, "oid", DataType::Int32)?;
            let oid = oid.as_primitive::<Int32Type>();
            let returns = column(b, "prorettype", DataType::Int32)?;
            let returns = returns.as_primitive::<Int32Type>();
            let text = |c: &str| column(b, c, DataType::Utf8);
            let (name, kind, set) = (text("proname")?, text("prokind")?, text("proretset")?);
            let (types, all_types) = (text("proargtypes")?, text("proallargtypes")?);
            let (modes, names) = (text("proargmodes")?, text("proargnames")?);
            let [name, kind, set, types, all_types, modes, names] =
                [&name, &kind, &set, &types, &all_types, &modes, &names]
                    .map(|c| c.as_string::<i32>());
            let namespace = column(b, "pronamespace", DataType::Int32)?;
            let namespace = namespace.as_primitive::<Int32Type>();
            let definition = DEFINITION
                .iter()
                .map(|c| text(c))
                .collect::<Result<Vec<_>>>()?;
            for i in 0..b.num_rows() {
                let (lowest, n) = p
                    .by_name
                    .entry(name.value(i).to_string())
                    .or_insert((oid.value(i), 0));
                *lowest = (*lowest).min(oid.value(i));
                *n += 1;
                let listed = |a: &StringArray| match a.is_null(i) {
                    true => Vec::new(),
                    false => elements(a.value(i)),
                };
                let arguments: Vec<Argument> = {
                    let (types, modes) = match all_types.is_null(i) {
                        true => (listed(types), Vec::new()),
                        false => (listed(all_types), listed(modes)),
                    };
                    let names = listed(names);
                    types
                        .iter()
                        .enumerate()
                        .map(|(k, t)| Argument {
                            mode: modes.get(k).map_or("i", String::as_str).to_string(),
                            name: names.get(k).cloned().unwrap_or_default(),
                            type_oid: t.parse().unwrap_or(0),
                        })
                        .collect()
                };
                let mut written = Written::of(
                    name.value(i),
                    &arguments,
                    returns.value(i),
                    set.value(i) == "true",
                    kind.value(i) == "p",
                );
                written.schema = schemas
                    .get(&namespace.value(i))
                    .cloned()
                    .unwrap_or_else(|| namespace.value(i).to_string());
                for (k, c) in definition.iter().enumerate() {
                    let c = c.as_string::<i32>();
                    written.attributes[k] = c.is_valid(i).then(|| c.value(i).to_string());
                }
                p.written.insert(oid.value(i), written);
            }
        }
        Ok(p)
    }

    /// The oid `name` stands for as a `regproc` value of the catalog, as `regprocout` wrote
    /// it: `-` is none (0), a number is itself, a name its function — the lowest oid of the
    /// name when several functions share it (PostgreSQL then writes it `pg_catalog.avg`,
    /// which no longer says which); `None` for a name of no function.
    pub fn oid(&self, name: &str) -> Option<i32> {
        match name {
            "-" => Some(0),
            n if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
            n => {
                let n = n.strip_prefix("pg_catalog.").unwrap_or(n);
                self.by_name.get(n).map(|(oid, _)| *oid)
            }
        }
    }

    /// A `regproc` value as `regprocout` writes it: `-` for none (0), the function's name
    /// (in its schema when several functions share it), or the oid itself when no function
    /// has it.
    pub fn regproc_text(&self, oid: i32) -> Cow<'_, str> {
        let Some(w) = self.written.get(&oid) else {
            return match oid {
                0 => Cow::Borrowed("-"),
                _ => Cow::Owned(oid.to_string()),
            };
        };
        match self.by_name.get(&w.name) {
            Some((_, 1)) => Cow::Borrowed(&w.name),
            _ => Cow::Owned(format!("pg_catalog.{}", w.name)),
        }
    }

    /// The function named `name` whose input arguments are of the types `arguments` names
    /// (`text, integer`; `int4`, `int`, `varchar` as PostgreSQL reads them too), as a cast to
    /// `regprocedure` finds it.
    pub fn with_arguments(&self, name: &str, arguments: &str) -> Option<i32> {
        let wanted: Vec<String> = match arguments.trim() {
            "" => Vec::new(),
            a => a.split(',').map(sql_type_name).collect(),
        };
        self.written
            .iter()
            .filter(|(_, w)| w.name == name)
            .find(|(_, w)| {
                w.inputs
                    .iter()
                    .map(|t| type_name(*t))
                    .eq(wanted.iter().cloned())
            })
            .map(|(oid, _)| *oid)
    }

    /// A function as `pg_describe_object` names it: `generate_series(integer,integer)`.
    pub fn identity(&self, oid: i32) -> Option<String> {
        let w = self.written.get(&oid)?;
        let inputs: Vec<String> = w.inputs.iter().map(|t| type_name(*t)).collect();
        Some(format!("{}({})", quoted(&w.name), inputs.join(",")))
    }

    /// Each oid of `oids` as `regprocedureout` writes it: `lower(text)`, `-` for 0, the oid
    /// itself for no function.
    pub fn regprocedure_texts(&self, oids: &ArrayRef) -> Result<ArrayRef> {
        let oids = cast(oids, &DataType::Int32)?;
        let texts: StringArray = oids
            .as_primitive::<Int32Type>()
            .iter()
            .map(|oid| {
                let oid = oid?;
                Some(match oid {
                    0 => "-".to_string(),
                    _ => self.identity(oid).unwrap_or_else(|| oid.to_string()),
                })
            })
            .collect();
        Ok(Arc::new(texts))
    }

    /// `pg_get_functiondef` of each oid of `oids` (psql's `\\sf`, DBeaver's source of a
    /// function): the `CREATE OR REPLACE FUNCTION` PostgreSQL writes, without the arguments'
    /// defaults ([`Written`]); NULL for an oid of no function.
    pub fn definitions(&self, oids: &ArrayRef) -> Result<ArrayRef> {
        let oids = cast(oids, &DataType::Int32)?;
        let definitions: StringArray = oids
            .as_primitive::<Int32Type>()
            .iter()
            .map(|oid| self.written.get(&oid?).map(|w| w.definition(self)))
            .collect();
        Ok(Arc::new(definitions))
    }

    /// `pg_get_function_result` of each oid of `oids`.
    pub fn results(&self, oids: &ArrayRef) -> Result<ArrayRef> {
        self.each(oids, |w| w.result.as_deref())
    }

    /// `pg_get_function_arguments` of each oid of `oids`.
    pub fn arguments(&self, oids: &ArrayRef) -> Result<ArrayRef> {
        self.each(oids, |w| Some(w.arguments.as_str()))
    }

    /// `of` each function `oids` names (NULL for an oid of no function, as in PostgreSQL).
    fn each(&self, oids: &ArrayRef, of: impl Fn(&Written) -> Option<&str>) -> Result<ArrayRef> {
        let oids = cast(oids, &DataType::Int32)?;
        let written: StringArray = oids
            .as_primitive::<Int32Type>()
            .iter()
            .map(|oid| self.written.get(&oid?).and_then(&of))
            .collect();
        Ok(Arc::new(written))
    }
}

/// One of a function's arguments: its mode (`i`, `o`, `b`, `v`, `t`), name and type.
struct Argument {
    mode: String,
    name: String,
    type_oid: i32,
}

impl Argument {
    /// `OUT word text`; a table's column (mode `t`) is `word text`.
    fn written(&self) -> String {
        let mode = match self.mode.as_str() {
            "o" => "OUT ",
            "b" => "INOUT ",
            "v" => "VARIADIC ",
            _ => "",
        };
        let name = match self.name.is_empty() {
            true => String::new(),
            false => format!("{} ", quoted(&self.name)),
        };
        format!("{mode}{name}{}", type_name(self.type_oid))
    }
}

/// The columns of `pg_proc` a definition reads ([`Written::attributes`]), in order.
const DEFINITION: [&str; 12] = [
    "prokind",
    "prolang",
    "provolatile",
    "proparallel",
    "proleakproof",
    "proisstrict",
    "prosecdef",
    "procost",
    "prorows",
    "prosrc",
    "probin",
    "prosupport",
];

impl Written {
    /// The function's definition as `pg_get_functiondef` writes it.
    fn definition(&self, procedures: &Procedures) -> String {
        let [
            kind,
            language,
            volatility,
            parallel,
            leakproof,
            strict,
            definer,
            cost,
            rows,
            src,
            bin,
            support,
        ] = self
            .attributes
            .each_ref()
            .map(|a| a.as_deref().unwrap_or(""));
        let yes = |b: &str| b == "true" || b == "t";
        let language = match language {
            "12" => "internal",
            "13" => "c",
            "14" => "sql",
            other => other,
        };
        let mut d = format!(
            "CREATE OR REPLACE {} {}.{}({})\n",
            if kind == "p" { "PROCEDURE" } else { "FUNCTION" },
            quoted(&self.schema),
            quoted(&self.name),
            self.arguments
        );
        if let Some(result) = &self.result {
            d.push_str(&format!(" RETURNS {result}\n"));
        }
        d.push_str(&format!(" LANGUAGE {language}\n"));
        let mut options = String::new();
        if kind == "w" {
            options.push_str(" WINDOW");
        }
        options.push_str(match volatility {
            "i" => " IMMUTABLE",
            "s" => " STABLE",
            _ => "",
        });
        options.push_str(match parallel {
            "s" => " PARALLEL SAFE",
            "r" => " PARALLEL RESTRICTED",
            _ => "",
        });
        for (set, option) in [
            (leakproof, " LEAKPROOF"),
            (strict, " STRICT"),
            (definer, " SECURITY DEFINER"),
        ] {
            if yes(set) {
                options.push_str(option);
            }
        }
        // The default cost: 1 for a function in C or internal, 100 for the others.
        let default_cost = match language {
            "internal" | "c" => 1.0,
            _ => 100.0,
        };
        match cost.parse::<f64>() {
            Ok(c) if c != default_cost => options.push_str(&format!(" COST {c}")),
            _ => {}
        }
        match rows.parse::<f64>() {
            Ok(r) if r > 0.0 && r != 1000.0 => options.push_str(&format!(" ROWS {r}")),
            _ => {}
        }
        if let Some(oid) = procedures.oid(support).filter(|oid| *oid != 0) {
            options.push_str(&format!(" SUPPORT {}", procedures.regproc_text(oid)));
        }
        if !options.is_empty() {
            d.push_str(&options);
            d.push('\n');
        }
        if language == "c" {
            let quote = |t: &str| t.replace('\'', "''");
            d.push_str(&format!("AS '{}', '{}'\n", quote(bin), quote(src)));
        } else {
            // `$function$`, or another tag when the body holds it.
            let mut tag = "$function$".to_string();
            while src.contains(&tag) {
                tag.insert(tag.len() - 1, 'x');
            }
            d.push_str(&format!("AS {tag}{src}{tag}\n"));
        }
        d
    }

    fn of(name: &str, arguments: &[Argument], returns: i32, set: bool, procedure: bool) -> Written {
        let inputs = arguments
            .iter()
            .filter(|a| matches!(a.mode.as_str(), "i" | "b" | "v"))
            .map(|a| a.type_oid)
            .collect();
        let table: Vec<String> = arguments
            .iter()
            .filter(|a| a.mode == "t")
            .map(Argument::written)
            .collect();
        let result = match (procedure, table.is_empty(), set) {
            (true, _, _) => None,
            (false, false, _) => Some(format!("TABLE({})", table.join(", "))),
            (false, true, true) => Some(format!("SETOF {}", type_name(returns))),
            (false, true, false) => Some(type_name(returns)),
        };
        let arguments: Vec<String> = arguments
            .iter()
            .filter(|a| a.mode != "t")
            .map(Argument::written)
            .collect();
        Written {
            name: name.to_string(),
            schema: "pg_catalog".to_string(),
            attributes: Default::default(),
            inputs,
            result,
            arguments: arguments.join(", "),
        }
    }
}

/// The type of oid `oid` as PostgreSQL's `format_type` writes it: by its SQL name
/// (`integer`, `timestamp with time zone`, `text[]`), a keyword in quotes (`"any"`,
/// `"char"`); `???` for an oid of no type.
pub fn type_name(oid: i32) -> String {
    let Some(t) = u32::try_from(oid).ok().and_then(Type::from_oid) else {
        return "???".to_string();
    };
    let name = |n: &str| match n {
        "any" | "char" => format!("\"{n}\""),
        _ => SQL_NAMES
            .iter()
            .find(|(internal, _)| *internal == n)
            .map_or(n, |(_, sql)| sql)
            .to_string(),
    };
    // A built-in array type is named after its element, with `_` before it (`_int4`).
    match t.name().strip_prefix('_') {
        Some(element) => format!("{}[]", name(element)),
        None => name(t.name()),
    }
}

/// PostgreSQL's `format_type(oid, typmod)` of each row of `args` (`typmod` NULL when not
/// given): datafusion-pg-catalog's, which knows the usual types and their modifiers
/// (`character varying(10)`, `numeric(10,2)`), but writes every other type `oid(2277)`; those
/// are named as PostgreSQL names them ([`type_name`]: `anyarray`, `inet`, `int4range`; `???`
/// for no type, `-` for 0), an array keeps its elements' modifier (`character(5)[]`), and
/// `bpchar` with the modifier -1 is `bpchar`.
pub fn format_type(args: &[ArrayRef]) -> Result<ArrayRef> {
    let n = args.first().map_or(0, |a| a.len());
    let oids = cast(&args[0], &DataType::Int32)?;
    let typmods = match args.get(1) {
        Some(m) => cast(m, &DataType::Int32)?,
        None => new_null_array(&DataType::Int32, n),
    };
    let theirs = |oid: &ArrayRef, typmod: &ArrayRef| -> Result<ArrayRef> {
        static THEIRS: OnceLock<ScalarUDF> = OnceLock::new();
        let udf = THEIRS.get_or_init(format_type::create_format_type_udf);
        let field = |a: &ArrayRef| Arc::new(Field::new("a", a.data_type().clone(), true));
        let written = udf.invoke_with_args(ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(Arc::clone(oid)),
                ColumnarValue::Array(Arc::clone(typmod)),
            ],
            arg_fields: vec![field(oid), field(typmod)],
            number_rows: oid.len(),
            return_field: Arc::new(Field::new("format_type", DataType::Utf8, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        written.into_array(oid.len())
    };
    let written = theirs(&oids, &typmods)?;
    let (written, oid, typmod) = (
        written.as_string::<i32>(),
        oids.as_primitive::<Int32Type>(),
        typmods.as_primitive::<Int32Type>(),
    );
    let types: StringArray = (0..n)
        .map(|i| -> Result<Option<String>> {
            if oid.is_null(i) {
                return Ok(None);
            }
            let (o, m) = (oid.value(i), typmod.is_valid(i).then(|| typmod.value(i)));
            let element = u32::try_from(o)
                .ok()
                .and_then(Type::from_oid)
                .and_then(|t| element_oid(&t));
            Ok(Some(match (o, m, element) {
                (0, _, _) => "-".to_string(),
                (1042, Some(-1), _) => "bpchar".to_string(),
                (_, Some(m), Some(e)) if m >= 0 => {
                    let e = theirs(
                        &(Arc::new(Int32Array::from(vec![e])) as ArrayRef),
                        &(Arc::new(Int32Array::from(vec![m])) as ArrayRef),
                    )?;
                    format!("{}[]", e.as_string::<i32>().value(0))
                }
                _ if written.value(i).starts_with("oid(") => type_name(o),
                _ => written.value(i).to_string(),
            }))
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(types))
}

/// The oid of the elements of a built-in array type (`_bpchar`'s, `bpchar`'s), `None` for
/// any other type.
fn element_oid(t: &Type) -> Option<i32> {
    builtin_oid(t.name().strip_prefix('_')?)
}

/// The oid of the built-in type of internal name `name` (`int4`, `_text`).
fn builtin_oid(name: &str) -> Option<i32> {
    static BY_NAME: OnceLock<HashMap<String, i32>> = OnceLock::new();
    let by_name = BY_NAME.get_or_init(|| {
        // The built-in types' oids are below 10,000 (PostgreSQL's FirstNormalObjectId).
        (0..10_000)
            .filter_map(Type::from_oid)
            .map(|t| (t.name().to_string(), t.oid() as i32))
            .collect()
    });
    by_name.get(name).copied()
}

/// A type as written in SQL (`int4`, `int`, `character varying`, `text[]`) by the name
/// [`type_name`] gives it (`integer`, `character varying`, `text[]`).
fn sql_type_name(written: &str) -> String {
    let written = written.split_whitespace().collect::<Vec<_>>().join(" ");
    let written = written.to_lowercase();
    if let Some(element) = written.strip_suffix("[]") {
        return format!("{}[]", sql_type_name(element));
    }
    let internal = match written.as_str() {
        "int" => "int4",
        "float" => "float8",
        "decimal" => "numeric",
        "char" => "bpchar",
        w => w,
    };
    match builtin_oid(internal) {
        Some(oid) => type_name(oid),
        None => written,
    }
}

/// An identifier as PostgreSQL writes it: in double quotes unless lower case letters, digits
/// and `_` alone.
fn quoted(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match plain {
        true => name.to_string(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Column `name` of `b` as `t`.
fn column(b: &RecordBatch, name: &str, t: DataType) -> Result<ArrayRef> {
    match b.column_by_name(name) {
        Some(c) => Ok(cast(c, &t)?),
        None => exec_err!("pg_catalog.pg_proc: no column {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_written_as_postgresql_writes_them() {
        let arg = |mode: &str, name: &str, type_oid| Argument {
            mode: mode.into(),
            name: name.into(),
            type_oid,
        };
        // pg_get_keywords(OUT word text, OUT catcode "char", …) RETURNS SETOF record
        let w = Written::of(
            "f",
            &[arg("o", "word", 25), arg("o", "catcode", 18)],
            2249,
            true,
            false,
        );
        assert_eq!(w.result.as_deref(), Some("SETOF record"));
        assert_eq!(w.arguments, "OUT word text, OUT catcode \"char\"");
        // A table function, a variadic, a procedure.
        let w = Written::of(
            "f",
            &[arg("i", "", 1007), arg("t", "Key", 1184)],
            2249,
            true,
            false,
        );
        assert_eq!(
            w.result.as_deref(),
            Some("TABLE(\"Key\" timestamp with time zone)")
        );
        assert_eq!(w.arguments, "integer[]");
        let w = Written::of("f", &[arg("v", "", 2276)], 23, false, false);
        assert_eq!(
            (w.result.as_deref(), w.arguments.as_str()),
            (Some("integer"), "VARIADIC \"any\"")
        );
        assert_eq!(Written::of("p", &[], 2278, false, true).result, None);
        assert_eq!(type_name(1), "???");
    }

    /// PostgreSQL 15's `pg_get_functiondef` of `json_each(json)` and of
    /// `generate_series(int4, int4)`.
    #[test]
    fn definitions_are_written_as_postgresql_writes_them() {
        let arg = |mode: &str, name: &str, type_oid| Argument {
            mode: mode.into(),
            name: name.into(),
            type_oid,
        };
        let mut p = Procedures::default();
        // `DEFINITION`'s columns, `|` between them.
        let functions = [
            (
                3958,
                "json_each",
                vec![
                    arg("i", "from_json", 114),
                    arg("o", "key", 25),
                    arg("o", "value", 114),
                ],
                2249,
                "f|12|i|s|false|true|false|1|100|json_each||-",
            ),
            (
                1067,
                "generate_series",
                vec![arg("i", "", 23), arg("i", "", 23)],
                23,
                "f|12|i|s|false|true|false|1|1000|generate_series_int4||generate_series_int4_support",
            ),
            (
                90001,
                "generate_series_int4_support",
                vec![arg("i", "", 2281)],
                2281,
                "f|12|i|s|false|true|false|1|0|generate_series_int4_support||-",
            ),
        ];
        for (oid, name, arguments, returns, attributes) in functions {
            let mut w = Written::of(name, &arguments, returns, returns != 2281, false);
            let mut attributes = attributes.split('|');
            w.attributes = std::array::from_fn(|_| attributes.next().map(str::to_string));
            p.by_name.insert(name.into(), (oid, 1));
            p.written.insert(oid, w);
        }
        let oids: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(3958),
            Some(1067),
            Some(1),
            None,
        ]));
        let got = p.definitions(&oids).unwrap();
        let got: Vec<Option<&str>> = got.as_string::<i32>().iter().collect();
        assert_eq!(
            got,
            [
                Some(
                    "CREATE OR REPLACE FUNCTION pg_catalog.json_each(from_json json, OUT key text, \
                     OUT value json)\n RETURNS SETOF record\n LANGUAGE internal\n IMMUTABLE \
                     PARALLEL SAFE STRICT ROWS 100\nAS $function$json_each$function$\n"
                ),
                Some(
                    "CREATE OR REPLACE FUNCTION pg_catalog.generate_series(integer, integer)\n \
                     RETURNS SETOF integer\n LANGUAGE internal\n IMMUTABLE PARALLEL SAFE STRICT \
                     SUPPORT generate_series_int4_support\nAS \
                     $function$generate_series_int4$function$\n"
                ),
                None,
                None,
            ]
        );
    }

    /// PostgreSQL 15's answers to `format_type(oid, typmod)`.
    #[test]
    fn types_are_formatted_as_postgresql_formats_them() {
        let cases: [(Option<i32>, Option<i32>, Option<&str>); 12] = [
            (Some(1043), Some(14), Some("character varying(10)")),
            (Some(1042), None, Some("character")),
            (Some(1042), Some(-1), Some("bpchar")),
            (Some(1231), Some(655366), Some("numeric(10,2)[]")),
            (Some(1014), Some(9), Some("character(5)[]")),
            (Some(2277), None, Some("anyarray")),
            (Some(869), None, Some("inet")),
            (Some(3904), None, Some("int4range")),
            (Some(2205), None, Some("regclass")),
            (Some(0), None, Some("-")),
            (Some(16384), None, Some("???")),
            (None, Some(1), None),
        ];
        let oids: ArrayRef = Arc::new(cases.iter().map(|c| c.0).collect::<Int32Array>());
        let typmods: ArrayRef = Arc::new(cases.iter().map(|c| c.1).collect::<Int32Array>());
        let got = format_type(&[oids, typmods]).unwrap();
        let got: Vec<Option<&str>> = got.as_string::<i32>().iter().collect();
        let want: Vec<Option<&str>> = cases.iter().map(|c| c.2).collect();
        assert_eq!(got, want);
    }

    /// `regproc` values as the catalog holds them (PostgreSQL's `regprocout`) and back.
    #[test]
    fn regproc_values_are_read_and_written_as_postgresql_writes_them() {
        let arg_of = |type_oid| Argument {
            mode: "i".into(),
            name: String::new(),
            type_oid,
        };
        let mut p = Procedures::default();
        for (oid, name, n) in [(1242, "boolin", 1), (2100, "avg", 2), (2101, "avg", 2)] {
            p.by_name.insert(name.into(), (2100.min(oid), n));
            p.written
                .insert(oid, Written::of(name, &[], 23, false, false));
        }
        assert_eq!(p.oid("boolin"), Some(1242));
        assert_eq!(p.oid("pg_catalog.avg"), Some(2100));
        assert_eq!(
            (p.oid("-"), p.oid("705"), p.oid("nothing")),
            (Some(0), Some(705), None)
        );
        assert_eq!(p.regproc_text(1242), "boolin");
        // A cast to regprocedure: the function of the arguments' types.
        p.written
            .insert(870, Written::of("lower", &[arg_of(25)], 25, false, false));
        p.written.insert(
            3876,
            Written::of("lower", &[arg_of(3831)], 2283, false, false),
        );
        assert_eq!(p.with_arguments("lower", "text"), Some(870));
        assert_eq!(p.with_arguments("lower", " anyrange "), Some(3876));
        assert_eq!(p.with_arguments("lower", "int"), None);
        assert_eq!(p.regproc_text(2101), "pg_catalog.avg");
        assert_eq!(
            (p.regproc_text(0), p.regproc_text(7)),
            ("-".into(), "7".into())
        );
    }
}
