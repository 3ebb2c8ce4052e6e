//! SQL over the views with real clients: psql (Debian's `postgresql-client`), psycopg (PyPI)
//! and the PostgreSQL JDBC driver (Maven Central) over the PostgreSQL wire protocol, and
//! `POST /api/sql`, against `lambdaflow run` while events flow and batch runs swap the batch
//! view in.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::master::seed_truth;
use crate::util::{self, Env, get_json, post_json, rows_of, terminate};

/// psql's output of `sql` on `port` (unaligned, tuples only; `ON_ERROR_STOP` off, so every
/// statement runs), with stderr after it.
fn psql(port: u16, password: Option<&str>, sql: &str) -> (bool, String, String) {
    psql_with(port, password, &[], sql)
}

/// [`psql`] with more libpq variables (`PGSSLMODE`…).
fn psql_with(
    port: u16,
    password: Option<&str>,
    vars: &[(&str, &str)],
    sql: &str,
) -> (bool, String, String) {
    let mut c = Command::new("psql");
    c.envs(vars.iter().copied());
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "analyst",
        "-d",
        "lambdaflow",
    ])
    .args(["-X", "-At", "-v", "VERBOSITY=verbose", "-f", "-"])
    .env("PGCONNECT_TIMEOUT", "10")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match password {
        Some(p) => c.env("PGPASSWORD", p),
        None => c.env_remove("PGPASSWORD"),
    };
    let mut child = c
        .spawn()
        .expect("psql (scripts/setup.sh test installs postgresql-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `customer|total` lines as a map.
fn totals(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('|')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn rows_map(v: &serde_json::Value) -> BTreeMap<String, i64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect()
}

/// The clients of `tests/clients/`, each printing one JSON object.
mod clients {
    use std::path::Path;
    use std::process::Command;

    fn json(mut c: Command, what: &str) -> serde_json::Value {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
    }

    fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    pub fn psycopg(port: u16, password: &str, customers: &[String]) -> serde_json::Value {
        let mut c = Command::new(repo().join(".cache/venv/bin/python"));
        c.arg(repo().join("tests/clients/psycopg_client.py"))
            .arg(port.to_string())
            .arg(password)
            .args(customers);
        json(
            c,
            "psycopg_client.py (scripts/test-tools.sh installs psycopg)",
        )
    }

    pub fn jdbc(port: u16, password: &str, customers: &[String]) -> serde_json::Value {
        let mut c = Command::new("java");
        c.arg("-cp")
            .arg(repo().join(".cache/jdbc/postgresql-42.7.14.jar"))
            .arg(repo().join("tests/clients/JdbcClient.java"))
            .arg(port.to_string())
            .arg(password)
            .args(customers);
        json(
            c,
            "JdbcClient.java (scripts/test-tools.sh fetches the driver)",
        )
    }

    /// `queries` as Grafana's PostgreSQL data source runs them (tests/clients/grafana): per
    /// query, its statements' answers (`columns` with pgtype's type names, `rows`).
    pub fn grafana(port: u16, queries: &[&str]) -> serde_json::Value {
        let mut c = Command::new(repo().join(".cache/grafana-client"));
        c.arg(port.to_string()).args(queries);
        json(c, "grafana-client (scripts/test-tools.sh builds it)")
    }
}

fn sql_rows(addr: &str, sql: &str) -> serde_json::Value {
    let body = serde_json::json!({ "sql": sql }).to_string();
    let (status, text) = post_json(addr, "/api/sql", &body, &[]);
    assert_eq!(status, 200, "{sql}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The amount of event `i`: all positive, so every prefix of the stream has its own total.
fn amount(i: usize) -> i64 {
    (i as i64 * 7_919) % 1_000 + 1
}

/// The view joined with itself, customer by customer: the rows whose two sides differ (none,
/// when both scans read one version of the view).
const SELF_JOIN: &str = "SELECT count(*) FROM customer_totals a JOIN customer_totals b \
     ON a.customer = b.customer WHERE a.total_amount <> b.total_amount";

/// psql and `/api/sql` while `run` consumes a stream and recomputes every 700 ms: every total
/// a query sees is the total of a prefix of the stream (one version of the view, never half a
/// micro-batch or half a batch swap); at the end both give the HTTP API's rows; psql's
/// catalog commands, EXPLAIN's index lookup, freshness, read-only refusals and classified
/// errors, on one connection that survives them.
#[test]
fn psql_and_api_sql_read_the_views_while_events_flow() {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let pg = util::free_port();
    let env = Env::new(
        "sql-flow",
        &format!(
            "{}\n[serving]\nlisten = \"{addr}\"\npg-listen = \"127.0.0.1:{pg}\"\n",
            crate::master::FAST
        ),
    );
    let cfg = std::fs::read_to_string(env.path("lambdaflow.toml"))
        .unwrap()
        .replace("[batch]\n", "[batch]\ninterval = \"700ms\"\n");
    std::fs::write(env.path("lambdaflow.toml"), cfg).unwrap();
    // One partition: the stream's order is its offsets' order, so the view's versions are
    // exactly the totals of its prefixes.
    env.create_topic(1);
    let run = env.spawn("run", &["run"]);
    get_json(&addr, "/health");

    let n = 3_000;
    let base: i64 = seed_truth().values().sum();
    let prefixes: BTreeSet<i64> = (0..=n)
        .scan(base, |t, i| {
            let now = *t;
            if i < n {
                *t += amount(i);
            }
            Some(now)
        })
        .collect();
    let done = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
                let msgs: Vec<Vec<u8>> = chunk
                    .iter()
                    .map(|&i| {
                        format!(r#"{{"customer": "c{}", "amount": {}}}"#, i % 10, amount(i))
                            .into_bytes()
                    })
                    .collect();
                env.send_raw(&msgs);
                std::thread::sleep(Duration::from_millis(15));
            }
            done.store(true, Ordering::SeqCst);
        });
        // One psql session issuing the same aggregate again and again while events flow, and
        // the view joined with itself: two scans of one query read one version, so the two
        // sides never differ.
        let mut seen = Vec::new();
        let mut joins = 0;
        while !done.load(Ordering::SeqCst) {
            let script = "SELECT sum(total_amount) FROM customer_totals;\n".repeat(50);
            let (ok, out, err) = psql(pg, None, &script);
            assert!(ok, "{err}");
            seen.extend(out.lines().map(|l| l.trim().parse::<i64>().unwrap()));
            let script = format!("{SELF_JOIN};\n").repeat(20);
            let (ok, out, err) = psql(pg, None, &script);
            assert!(ok, "{err}");
            for l in out.lines() {
                assert_eq!(l.trim(), "0", "the two sides of one query differ");
                joins += 1;
            }
            let r = sql_rows(&addr, "SELECT sum(total_amount) AS t FROM customer_totals");
            seen.push(r["rows"][0]["t"].as_i64().unwrap());
            let r = sql_rows(
                &addr,
                "SELECT (SELECT sum(total_amount) FROM customer_totals) AS a, \
                 (SELECT sum(total_amount) FROM customer_totals WHERE total_amount > 0) AS b",
            );
            assert_eq!(r["rows"][0]["a"], r["rows"][0]["b"], "{r}");
            seen.push(r["rows"][0]["a"].as_i64().unwrap());
        }
        assert!(joins > 20, "{joins} self-joins sampled");
        seen
    });
    assert!(seen.len() > 100, "{} totals sampled", seen.len());
    let distinct: BTreeSet<&i64> = seen.iter().collect();
    assert!(
        distinct.len() > 3,
        "the totals moved while sampled: {distinct:?}"
    );
    for t in &seen {
        assert!(
            prefixes.contains(t),
            "a total that is no version of the view: {t}"
        );
    }

    let mut truth = seed_truth();
    for i in 0..n {
        *truth.entry(format!("c{}", i % 10)).or_default() += amount(i);
    }
    let query = "SELECT customer, total_amount FROM customer_totals ORDER BY customer;\n";
    util::eventually(
        60,
        || totals(&psql(pg, None, query).1) == truth,
        || format!("psql at the truth\n{}", env.log("run")),
    );
    let http = rows_of(
        &get_json(&addr, "/api/views/customer_totals?limit=all"),
        "customer",
        "total_amount",
    );
    assert_eq!(http, truth);
    let api = sql_rows(&addr, query.trim_end_matches(";\n"));
    assert_eq!(rows_of(&api, "customer", "total_amount"), truth);
    assert_eq!(api["columns"][1]["name"], "total_amount");
    // Columns are named as PostgreSQL names them, unless two would share a name (a JSON row
    // holds one of each): those keep DataFusion's.
    let named = sql_rows(
        &addr,
        "SELECT count(*), sum(total_amount), count(customer), 1 + 1 FROM customer_totals",
    );
    let names: Vec<&str> = named["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "count(*)",
            "sum",
            "count(customer_totals.customer)",
            "?column?"
        ],
        "{named}"
    );
    assert_eq!(
        named["rows"][0]["sum"],
        truth.values().sum::<i64>(),
        "{named}"
    );
    // A query that is a key lookup and more stays exact: two values for the key match no
    // row, the same value twice is that key's row, a further condition still filters.
    let (first, last) = (truth.keys().next().unwrap(), truth.keys().last().unwrap());
    assert_ne!(first, last);
    let count = |cond: String| {
        let sql = format!("SELECT total_amount FROM customer_totals WHERE {cond}");
        sql_rows(&addr, &sql)["row_count"].clone()
    };
    assert_eq!(
        count(format!("customer = '{first}' AND customer = '{last}'")),
        0
    );
    assert_eq!(
        count(format!("customer = '{first}' AND customer = '{first}'")),
        1
    );
    assert_eq!(
        count(format!("customer = '{first}' AND total_amount < 0")),
        0
    );

    // psycopg (server-side parameters, a prepared statement, binary results) and the JDBC
    // driver (DatabaseMetaData, a PreparedStatement past its prepareThreshold) agree.
    let customers: Vec<String> = truth.keys().cloned().chain(["nobody".into()]).collect();
    let expected: serde_json::Value = customers
        .iter()
        .map(|c| {
            (
                c.clone(),
                truth
                    .get(c)
                    .map_or(serde_json::Value::Null, |t| (*t).into()),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let py = clients::psycopg(pg, "", &customers);
    assert_eq!(py["lookups"], expected, "{py}");
    assert_eq!(py["binary_lookups"], expected, "{py}");
    assert_eq!(py["client_side_lookups"], expected, "{py}");
    assert_eq!(
        py["tables"],
        serde_json::json!(["customer_totals", "lambdaflow_freshness"])
    );
    assert_eq!(
        py["columns"],
        serde_json::json!(["customer:text", "total_amount:bigint"])
    );
    assert_eq!(py["aggregate_names"], serde_json::json!(["count", "max"]));
    assert_eq!(rows_map(&py["binary"]), truth, "{py}");
    assert_eq!(py["batch_started_at_tz"], true, "{py}");
    assert_eq!(py["sqlalchemy_version"], serde_json::json!([16, 0]), "{py}");
    assert_eq!(py["sqlalchemy_lookups"], expected, "{py}");
    assert_eq!(
        py["sqlalchemy_tables"],
        serde_json::json!(["customer_totals", "lambdaflow_freshness"])
    );
    assert_eq!(
        py["sqlalchemy_schemas"],
        serde_json::json!(["information_schema", "public"]),
        "{py}"
    );
    assert_eq!(
        py["sqlalchemy_columns"],
        serde_json::json!(["customer:TEXT:not null", "total_amount:BIGINT:null"]),
        "{py}"
    );
    assert_eq!(
        py["sqlalchemy_primary_key"],
        serde_json::json!(["customer_totals_pkey", ["customer"]]),
        "{py}"
    );
    assert_eq!(py["sqlalchemy_indexes"], serde_json::json!([]), "{py}");
    assert_eq!(py["sqlalchemy_unique"], serde_json::json!([]), "{py}");
    assert_eq!(
        py["sqlalchemy_none"],
        serde_json::json!({"views": [], "materialized_views": [], "sequences": [],
            "foreign_keys": [], "check_constraints": [], "comment": null}),
        "{py}"
    );
    assert_eq!(py["sqlalchemy_view_definition"], "not a view", "{py}");
    let java = clients::jdbc(pg, "", &customers);
    assert_eq!(java["lookups"], expected, "{java}");
    assert_eq!(
        java["tables"],
        serde_json::json!(["customer_totals", "lambdaflow_freshness"])
    );
    assert_eq!(
        java["columns"],
        serde_json::json!(["customer:text", "total_amount:int8"])
    );
    assert_eq!(java["product"], "16.0 (lambdaflow)", "{java}");
    assert_eq!(java["foreign_keys"], 0, "{java}");
    assert_eq!(java["udts"], 0, "{java}");
    assert_eq!(
        java["primary_key"],
        serde_json::json!(["customer:1:customer_totals_pkey"]),
        "{java}"
    );
    assert_eq!(
        java["indexes"],
        serde_json::json!(["customer_totals_pkey:customer:unique=true:A"]),
        "{java}"
    );
    assert_eq!(java["best_row"], serde_json::json!(["customer"]), "{java}");
    // Metabase's sync: tables, fields (type, position, primary key, required), foreign keys
    // (none), the first column of each index.
    // DBeaver's navigator: the schema's tables (`oid` first, as DBeaver reads it; their rows
    // as reltuples), the view's columns, its primary key and the key's index.
    assert_eq!(
        java["dbeaver"],
        serde_json::json!([
            "first column oid",
            format!("table customer_totals:r:{}", truth.len()),
            "table lambdaflow_freshness:r:1",
            "column customer|25|t",
            "column total_amount|20|f",
            "constraint customer_totals_pkey|p|customer_totals",
            "index customer_totals_pkey|t|customer_totals"
        ]),
        "{java}"
    );
    assert_eq!(
        java["metabase_tables"],
        // The estimated row count is pg_stat_user_tables' n_live_tup: the rows served.
        serde_json::json!([
            format!("public|customer_totals|TABLE|null|{}", truth.len()),
            "public|lambdaflow_freshness|TABLE|null|1"
        ]),
        "{java}"
    );
    assert_eq!(
        java["metabase_fields"],
        serde_json::json!([
            "customer|text|0|public|customer_totals|t|null|t|f",
            "total_amount|int8|1|public|customer_totals|f|null|f|f"
        ]),
        "{java}"
    );
    assert_eq!(java["metabase_fks"], serde_json::json!([]), "{java}");
    assert_eq!(
        java["metabase_indexes"],
        serde_json::json!(["public|customer_totals|customer"]),
        "{java}"
    );
    assert_eq!(
        java["type_info"],
        serde_json::json!(["int8:-5", "_int4:2003"]),
        "{java}"
    );
    assert_eq!(
        java["privileges"],
        serde_json::json!(["postgres:SELECT"]),
        "{java}"
    );
    assert_eq!(
        java["column_privileges"],
        serde_json::json!(["customer:postgres:SELECT", "total_amount:postgres:SELECT"]),
        "{java}"
    );
    // A set-returning function: its argument (IN, 1) and its result's columns (3).
    assert_eq!(
        java["functions"],
        serde_json::json!([
            "json_each:2",
            "from_json:1:json",
            "key:3:text",
            "value:3:json"
        ]),
        "{java}"
    );
    assert_eq!(rows_map(&java["rows"]), truth, "{java}");

    // A scalar subquery over a view, correlated or not, as PostgreSQL answers it: over the
    // wire (datafusion-postgres's parser made the correlated one NULL) and over HTTP.
    let correlated = "SELECT c.customer, (SELECT d.total_amount FROM customer_totals d \
                      WHERE d.customer = c.customer) AS total FROM customer_totals c ORDER BY 1";
    let (_, out, err) = psql(
        pg,
        None,
        &format!("{correlated};\nSELECT (SELECT total_amount FROM customer_totals);\n"),
    );
    assert_eq!(totals(&out), truth, "{out}{err}");
    assert!(
        err.contains(
            "ERROR:  21000: more than one row returned by a subquery used as an expression"
        ),
        "{err}"
    );
    assert_eq!(
        rows_of(&sql_rows(&addr, correlated), "customer", "total"),
        truth
    );

    // What psql sends besides the query.
    let (_, out, err) = psql(
        pg,
        None,
        "\\dt\n\\t off\n\\d customer_totals\n\\t on\n\\dt+\n\\dT\n\\di\n\\du\n\\l+\n\\db\n\
         \\d+ customer_totals\n\\dn+\n\\dfS json_each\n\\dy\n\\dL\n\\dp customer_totals\n\
         \\dconfig+ server_version\n\\dOS\n\\dAp btree bool_ops\n\\sf lower(text)\n\\dx+ plpgsql\n\\dx\n\\dL+\n\\dd\n\
         \\des+\n\\dew+\n\\det+\n\\deu+\n\
         SELECT array_to_string(ARRAY(SELECT pg_catalog.quote_ident(option_name) || ' ' || \
         pg_catalog.quote_literal(option_value) FROM pg_catalog.pg_options_to_table(\
         ARRAY['Host=a=b', E'dir=C:\\\\x', 'f'])), ', ');\n\
         SELECT COALESCE(proallargtypes::regtype[], proargtypes::regtype[])::text[] \
         FROM pg_proc WHERE proname IN ('json_each', 'now') ORDER BY 1;\n\
         SELECT atttypid::regtype::text FROM pg_attribute a JOIN pg_class c ON c.oid = \
         a.attrelid WHERE c.relname = 'customer_totals' AND attnum > 0 ORDER BY attnum;\n\
         SELECT typinput, typreceive FROM pg_type WHERE typname = 'bool';\n",
    );
    assert!(!err.contains("ERROR"), "{err}");
    assert!(out.contains("public|customer_totals|table"), "{out}{err}");
    assert!(
        out.contains("public|customer_totals|table|postgres|permanent||0 bytes|"),
        "{out}{err}"
    );
    assert!(
        out.contains("customer|text") && out.contains("total_amount|bigint"),
        "{out}{err}"
    );
    // The view's key is its primary key.
    assert!(
        out.contains("\"customer_totals_pkey\" PRIMARY KEY, btree (customer)"),
        "{out}{err}"
    );
    assert!(
        out.contains("public|customer_totals_pkey|index|postgres|customer_totals"),
        "{out}{err}"
    );
    // The one role, which owns every table; no superuser, member of no role.
    assert!(out.contains("\npostgres||{}\n"), "{out}{err}");
    // The database, in memory (no byte on disk), in the default tablespace.
    assert!(out.contains("\nlambdaflow|postgres|UTF8|"), "{out}{err}");
    assert!(out.contains("|0 bytes|pg_default|"), "{out}{err}");
    assert!(out.contains("\npg_default|postgres|\n"), "{out}{err}");
    // \d+: each column's storage (its options are an array of the class's); \dn+: the
    // schemas' privileges; \dfS: a function's signature as PostgreSQL writes it.
    assert!(
        out.contains("\ncustomer|text||not null||extended|||\ntotal_amount|bigint||||plain|||\n"),
        "{out}{err}"
    );
    assert!(out.contains("\npublic|postgres||\n"), "{out}{err}");
    // \dp: the table's privileges, its columns', and its row policies (none: a subquery
    // correlated twice, of a catalog table without rows); \dconfig reads pg_settings.
    assert!(
        out.contains(
            "\npublic|customer_totals|table|postgres=r/postgres|customer:\n  postgres=r/postgres\n\
             total_amount:\n  postgres=r/postgres|\n"
        ),
        "{out}{err}"
    );
    assert!(
        out.contains("\nserver_version|16.0 (lambdaflow)|string|internal|\n"),
        "{out}{err}"
    );
    // \dOS: the collations of the database's encoding (pg_char_to_encoding).
    assert!(out.contains("\npg_catalog|C|C|C||libc|yes\n"), "{out}{err}");
    // The catalog's functions (regproc): oids that join pg_proc (\dAp), written as names.
    assert!(
        out.contains("\nbtree|bool_ops|boolean|boolean|1|btboolcmp\n"),
        "{out}{err}"
    );
    assert!(out.contains("\nboolin|boolrecv\n"), "{out}{err}");
    // \dx+: an extension's objects (pg_depend, pg_describe_object).
    assert!(
        out.contains(
            "\nfunction plpgsql_call_handler()\nfunction plpgsql_inline_handler(internal)\n\
             function plpgsql_validator(oid)\nlanguage plpgsql\n"
        ),
        "{out}{err}"
    );
    // \dL+: the language's handlers as regprocedure, and its comment.
    assert!(
        out.contains(
            "\nplpgsql|postgres|t|f|plpgsql_call_handler()|plpgsql_validator(oid)|\
             plpgsql_inline_handler(internal)||PL/pgSQL procedural language\n"
        ),
        "{out}{err}"
    );
    // \dx: the extension's comment (pg_description, by the catalog's oid).
    assert!(
        out.contains("\nplpgsql|1.0|pg_catalog|PL/pgSQL procedural language\n"),
        "{out}{err}"
    );
    // \des+, \dew+, \det+, \deu+ list no foreign server, wrapper, table or user mapping;
    // the options they would show, as pg_options_to_table gives them (a value after the
    // first `=`, none without one) and quote_ident and quote_literal write them.
    assert!(
        out.contains("\n\"Host\" 'a=b', dir E'C:\\\\x'\n"),
        "{out}{err}"
    );
    // Arrays of types' oids as regtype[] (pgcli's functions), from an oid[] and an oidvector.
    assert!(out.contains("\n{}\n{json,text,json}\n"), "{out}{err}");
    // A type's oid as text is its name (pgcli reads the columns' types so).
    assert!(out.contains("\ntext\nbigint\n"), "{out}{err}");
    // \sf: a function's definition, found by its arguments' types (regprocedure).
    assert!(
        out.contains(
            "\nCREATE OR REPLACE FUNCTION pg_catalog.lower(text)\n RETURNS text\n LANGUAGE \
             internal\n IMMUTABLE PARALLEL SAFE STRICT\nAS $function$lower$function$\n"
        ),
        "{out}{err}"
    );
    // \dL joins pg_description on the system column tableoid.
    assert!(out.contains("\nplpgsql|postgres|t|"), "{out}{err}");
    assert!(
        out.contains(
            "\npg_catalog|json_each|SETOF record|from_json json, OUT key text, OUT value json|func\n"
        ),
        "{out}{err}"
    );
    // ARRAY(SELECT …), an array of a subquery's rows (psql's \du reads roles so).
    let (_, out, err) = psql(
        pg,
        None,
        "SELECT c.customer, array(SELECT d.total_amount FROM customer_totals d \
         WHERE d.customer = c.customer) FROM customer_totals c ORDER BY 1;\n",
    );
    assert_eq!(totals(&out.replace(['{', '}'], "")), truth, "{out}{err}");
    // Floats in the text format as PostgreSQL 15 writes them (psql shows `1000`, `1e+20`,
    // where pgwire wrote `1000.0`, `1e20`), in a column and in an array.
    let (_, out, err) = psql(
        pg,
        None,
        "SELECT CAST(v AS double precision), CAST(v AS real) FROM (VALUES ('1000'), ('1e20'), \
         ('1.5e-5'), ('1234567'), ('-Infinity'), ('NaN')) AS t(v);\n\
         SELECT make_array(CAST(1000 AS double precision), NULL, 0.25);\n",
    );
    assert_eq!(
        out,
        "1000|1000\n1e+20|1e+20\n1.5e-05|1.5e-05\n1234567|1.234567e+06\n\
         -Infinity|-Infinity\nNaN|NaN\n{1000,NULL,0.25}\n",
        "{err}"
    );
    // What clients probe on connect: the version (Grafana's data source, SQLAlchemy), the
    // server's settings by SHOW and current_setting, savepoints in a transaction; and
    // DEALLOCATE, which psycopg sends after a rollback.
    let (_, out, err) = psql(
        pg,
        None,
        "SELECT current_setting('server_version_num')::int / 100 AS version;\n\
         SHOW server_version;\n\
         SELECT version();\n\
         BEGIN;\nSAVEPOINT a;\nROLLBACK TO SAVEPOINT a;\nRELEASE SAVEPOINT a;\n\
         SELECT count(*) FROM customer_totals;\nCOMMIT;\n\
         SELECT current_setting('no_such_setting');\n\
         SELECT 'no_such_function'::regproc;\n\
         DEALLOCATE ALL;\nDEALLOCATE no_such_statement;\n\
         SELECT setting FROM pg_settings WHERE name = 'max_index_keys';\n\
         \\echo server_version at startup: :SERVER_VERSION_NAME\n\
         \\pset tuples_only off\n\
         SELECT count(*), sum(total_amount), 1::int, total_amount + 1 AS next \
         FROM customer_totals GROUP BY total_amount ORDER BY 4 LIMIT 1;\n\
         SELECT max(customer), min(total_amount) FROM customer_totals \\gdesc\n\
         SELECT 1, 1;\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1600", "16.0 (lambdaflow)"], "{out}{err}");
    assert!(
        lines[2].starts_with("PostgreSQL 16.0 (lambdaflow "),
        "{out}"
    );
    assert!(
        lines.contains(&truth.len().to_string().as_str()),
        "{out}{err}"
    );
    assert!(
        err.contains("ERROR:  42704: unrecognized configuration parameter \"no_such_setting\""),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  42883: function \"no_such_function\" does not exist"),
        "{err}"
    );
    assert!(out.contains("DEALLOCATE ALL"), "{out}{err}");
    assert!(
        out.contains("server_version at startup: 16.0 (lambdaflow)"),
        "{out}{err}"
    );
    assert!(
        out.contains("\n32\nserver_version at startup"),
        "{out}{err}"
    );
    // Columns without an alias are named as PostgreSQL names them, in a simple query's rows
    // and in a statement's description (\gdesc describes it over the extended protocol).
    assert!(out.contains("\ncount|sum|int4|next\n"), "{out}{err}");
    assert!(out.contains("\nmax|text\nmin|bigint\n"), "{out}{err}");
    // Two columns of one name, as PostgreSQL allows.
    assert!(out.contains("\n?column?|?column?\n1|1\n"), "{out}{err}");
    assert!(
        err.contains("ERROR:  26000: prepared statement \"no_such_statement\" does not exist"),
        "{err}"
    );
    // Equality on the key is a lookup in the serving index.
    let (_, out, _) = psql(
        pg,
        None,
        "EXPLAIN SELECT total_amount FROM customer_totals WHERE customer = 'c3';\n\
         SELECT total_amount FROM customer_totals WHERE customer = 'c3';\n",
    );
    assert!(
        out.contains("ViewScan: view=customer_totals, key lookup in the serving index, rows=1"),
        "{out}"
    );
    assert!(out.trim_end().ends_with(&truth["c3"].to_string()), "{out}");
    // Freshness as the HTTP API says it (a batch run may land between the two reads).
    let run_id = || get_json(&addr, "/api/views/customer_totals")["freshness"]["batch_run"].clone();
    let before = run_id();
    let (_, out, _) = psql(
        pg,
        None,
        "SELECT view, batch_run, speed_offsets FROM lambdaflow_freshness;\n",
    );
    let after = run_id();
    let line =
        |r: &serde_json::Value| format!("customer_totals|{}|{{\"0\":{n}}}", r.as_str().unwrap());
    assert!(
        out.trim() == line(&before) || out.trim() == line(&after),
        "{out}: {before} / {after}"
    );
    // Refusals and errors, each with its SQLSTATE, on one connection that keeps answering.
    let (_, out, err) = psql(
        pg,
        None,
        "INSERT INTO customer_totals VALUES ('x', 1);\n\
         DROP TABLE customer_totals;\n\
         SELECT nope FROM customer_totals;\n\
         SELECT * FROM nowhere;\n\
         SELEC 1;\n\
         SELECT 1 / 0;\n\
         SELECT count(*) FROM customer_totals;\n",
    );
    for (code, what) in [
        ("25006", "cannot execute INSERT in a read-only transaction"),
        (
            "25006",
            "cannot execute DROP TABLE in a read-only transaction",
        ),
        ("42703", "nope"),
        ("42P01", "nowhere"),
        ("42601", "sql parser error"),
        ("22012", "Divide by zero"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("ERROR:  {code}:")) && l.contains(what)),
            "{code} {what}:\n{err}"
        );
    }
    assert_eq!(
        out.trim(),
        truth.len().to_string(),
        "the connection answered after the errors: {err}"
    );
    // The same over HTTP: status, SQLSTATE and position.
    let (status, body) = post_json(
        &addr,
        "/api/sql",
        r#"{"sql": "SELECT customer FRM customer_totals"}"#,
        &[],
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &body["sqlstate"]),
        (400, &"42601".into()),
        "{body}"
    );
    assert_eq!(body["position"], 21, "{body}");
    let (status, body) = post_json(
        &addr,
        "/api/sql",
        r#"{"sql": "DELETE FROM customer_totals"}"#,
        &[],
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("25006") && body.contains("cannot execute DELETE"),
        "{body}"
    );
    terminate(run);
}

/// The mechanisms of the AuthenticationSASL message a PostgreSQL server answers a startup
/// message with (empty when it asks for something else).
fn sasl_mechanisms(port: u16) -> Vec<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = b"user\0lambda\0database\0lambdaflow\0\0";
    let mut startup = ((8 + body.len()) as i32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
    startup.extend_from_slice(body);
    c.write_all(&startup).unwrap();
    let mut head = [0u8; 5];
    c.read_exact(&mut head).unwrap();
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len - 4];
    c.read_exact(&mut rest).unwrap();
    // 'R', then the authentication code: 10 is SASL, followed by NUL-ended names.
    if head[0] != b'R' || rest[..4] != 10i32.to_be_bytes() {
        return Vec::new();
    }
    rest[4..]
        .split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

/// With `serving.token`, the token is the password (proved by SCRAM-SHA-256) and `/api/sql`
/// wants the bearer token; with a certificate, clients that ask for TLS get it.
#[test]
fn the_serving_token_is_the_sql_password_over_tls() {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let pg = util::free_port();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let env = Env::new(
        "sql-token",
        &format!(
            "[serving]\nlisten = \"{addr}\"\npg-listen = \"127.0.0.1:{pg}\"\ntoken = \"s3cret-t0ken\"\n\
             pg-tls-cert = \"{}\"\npg-tls-key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    env.ok(&["batch"]);
    let serve = env.spawn("serve", &["serve"]);
    let q = "SELECT customer, total_amount FROM customer_totals ORDER BY customer;\n";
    util::eventually(
        30,
        || psql(pg, Some("s3cret-t0ken"), q).0,
        || format!("psql with the token\n{}", env.log("serve")),
    );
    assert_eq!(totals(&psql(pg, Some("s3cret-t0ken"), q).1), seed_truth());
    // The server asks for SCRAM (the password never crosses the wire), with channel binding
    // offered since it has a certificate: AuthenticationSASL naming both mechanisms.
    assert_eq!(
        sasl_mechanisms(pg),
        ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
        "{}",
        env.log("serve")
    );
    let ali = ["Ali".to_string()];
    assert_eq!(
        clients::psycopg(pg, "s3cret-t0ken", &ali)["lookups"]["Ali"],
        320
    );
    assert_eq!(
        clients::jdbc(pg, "s3cret-t0ken", &ali)["lookups"]["Ali"],
        320
    );
    let (ok, out, err) = psql_with(
        pg,
        Some("s3cret-t0ken"),
        &[("PGSSLMODE", "require")],
        &format!("\\conninfo\n{q}"),
    );
    assert!(
        ok && out.contains("SSL connection (protocol: TLSv1.3"),
        "{out}{err}"
    );
    assert_eq!(totals(&out), seed_truth(), "{out}");
    // Two connections' queries, each cancelled by its own cancel request: a request names
    // its connection by the backend PID and secret key the startup gave.
    let first = runaway_psql(pg, Some("s3cret-t0ken"));
    let second = runaway_psql(pg, Some("s3cret-t0ken"));
    std::thread::sleep(Duration::from_secs(2));
    for c in [first, second] {
        let err = interrupt(c);
        assert!(
            err.contains("57014: canceling statement due to user request"),
            "{err}"
        );
    }
    let (_, out, _) = psql(pg, Some("s3cret-t0ken"), "\\echo :SERVER_VERSION_NAME\n");
    assert_eq!(out.trim(), "16.0 (lambdaflow)");
    let (ok, _, err) = psql(pg, Some("wrong"), q);
    assert!(
        !ok && err
            .to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    let body = r#"{"sql": "SELECT 1"}"#;
    assert_eq!(post_json(&addr, "/api/sql", body, &[]).0, 401);
    let (status, text) = post_json(
        &addr,
        "/api/sql",
        body,
        &[("Authorization", "Bearer s3cret-t0ken")],
    );
    assert_eq!(status, 200, "{text}");
    terminate(serve);
}

/// psql running a query that would not end (no statement timeout).
fn runaway_psql(pg: u16, password: Option<&str>) -> std::process::Child {
    let mut c = Command::new("psql");
    c.args(["-h", "127.0.0.1", "-p", &pg.to_string(), "-X"])
        .args(["-v", "VERBOSITY=verbose", "lambdaflow"])
        .args(["-c", "SET statement_timeout = 0"])
        .args([
            "-c",
            "SELECT count(*) FROM generate_series(1, 100000000000)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match password {
        Some(p) => c.env("PGPASSWORD", p),
        None => c.env_remove("PGPASSWORD"),
    };
    c.spawn().unwrap()
}

/// Interrupts psql (it sends a cancel request on SIGINT), waits for it to end, and returns
/// what it wrote on stderr.
fn interrupt(mut c: std::process::Child) -> String {
    use std::io::Read;
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "psql did not end after its cancel request"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    err
}

/// A runaway query ends at `serving.sql-timeout` (over the wire and over HTTP) or at the
/// client's cancel request (psql's Ctrl-C), and its work stops; malformed protocol messages, a
/// connection dropped mid-message and a huge query end their own connections only.
#[test]
fn runaway_queries_and_hostile_clients_harm_no_other_connection() {
    use rand::{Rng, SeedableRng};
    use std::io::{Read, Write};

    let addr = format!("127.0.0.1:{}", util::free_port());
    let pg = util::free_port();
    let env = Env::new(
        "sql-bounds",
        &format!(
            "[serving]\nlisten = \"{addr}\"\npg-listen = \"127.0.0.1:{pg}\"\nsql-timeout = \"2s\"\n"
        ),
    );
    env.ok(&["batch"]);
    let serve = env.spawn("serve", &["serve"]);
    let q = "SELECT customer, total_amount FROM customer_totals ORDER BY customer;\n";
    util::eventually(30, || psql(pg, None, q).0, || env.log("serve"));
    let runaway = "SELECT count(*) FROM generate_series(1, 100000000000);\n";

    // The timeout, then the same connection answers.
    let (_, out, err) = psql(pg, None, &format!("{runaway}{q}"));
    assert!(
        err.contains("ERROR:  57014: canceling statement due to statement timeout"),
        "{err}"
    );
    assert_eq!(totals(&out), seed_truth(), "{out}");
    let body = serde_json::json!({ "sql": runaway.trim() }).to_string();
    let (status, text) = post_json(&addr, "/api/sql", &body, &[]);
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("57014"), "{text}");

    // A cancel request: psql sends one on SIGINT.
    let c = runaway_psql(pg, None);
    std::thread::sleep(Duration::from_secs(1));
    let err = interrupt(c);
    assert!(
        err.contains("57014: canceling statement due to user request"),
        "{err}"
    );

    // Hostile input: random bytes, random frames after a valid startup, a connection dropped
    // mid-message; each on a connection of its own.
    let mut rng = rand::rngs::StdRng::seed_from_u64(26);
    let startup = {
        let mut body = Vec::new();
        body.extend_from_slice(&196_608i32.to_be_bytes());
        body.extend_from_slice(b"user\0fuzz\0database\0lambdaflow\0\0");
        let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        m
    };
    for i in 0..200 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", pg)) else {
            panic!("connection {i} refused\n{}", env.log("serve"));
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut junk: Vec<u8> = (0..rng.random_range(0..300))
            .map(|_| rng.random())
            .collect();
        match i % 4 {
            0 => {}
            1 => junk.splice(0..0, startup.clone()).for_each(drop),
            2 => {
                // A frame that claims to be huge, then stops.
                let mut m = startup.clone();
                m.push(b'Q');
                m.extend_from_slice(&i32::MAX.to_be_bytes());
                m.extend_from_slice(b"SELECT");
                junk = m;
            }
            _ => {
                let mut m = startup.clone();
                m.push(
                    *[b'P', b'B', b'E', b'D', b'X', b'Q']
                        .get(rng.random_range(0..6))
                        .unwrap(),
                );
                m.extend_from_slice(&(junk.len() as i32 + 4).to_be_bytes());
                m.extend_from_slice(&junk);
                junk = m;
            }
        }
        let _ = s.write_all(&junk);
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
    }
    // A huge query (8 MB of SQL): an error, not a crash.
    let huge = format!(
        "SELECT 1 WHERE 1 IN ({});\n",
        vec!["1"; 4_000_000].join(",")
    );
    let (_, _, _) = psql(pg, None, &huge);
    // Every other client is still served.
    assert_eq!(
        totals(&psql(pg, None, q).1),
        seed_truth(),
        "{}",
        env.log("serve")
    );
    assert_eq!(
        get_json(&addr, "/api/views/customer_totals")["rows"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // pgwire's decoder panics on some of these messages (upstream): each is caught at its
    // connection and said so.
    let log = env.log("serve");
    assert_eq!(
        log.matches("panicked at").count(),
        log.matches("a message from it could not be decoded")
            .count(),
        "{log}"
    );
    assert!(
        !env.log("serve").contains("task failed"),
        "{}",
        env.log("serve")
    );
    terminate(serve);
}

/// A windowed view over SQL: a key's windows in a time range are a range scan of the time
/// index (EXPLAIN says so) and equal what `GET ?key=&from=&to=` answers; the window bounds are
/// timestamps.
#[test]
fn a_keys_windows_in_a_time_range_come_from_the_time_index() {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let pg = util::free_port();
    let env = Env::new(
        "sql-windows",
        &format!(
            "[serving]\nlisten = \"{addr}\"\npg-listen = \"127.0.0.1:{pg}\"\n\n[schema]\nfields = [\n  \
             {{ name = \"customer\", type = \"string\" }},\n  {{ name = \"amount\", type = \"integer\" }},\n  \
             {{ name = \"ts\", type = \"timestamp\" }},\n]\n\n[[views]]\nname = \"hourly\"\n\
             sql = \"SELECT customer, window.start, window.end, SUM(amount) AS total FROM events GROUP BY window(ts, '1 hour'), customer\"\n"
        ),
    );
    let lines: String = (0..600)
        .map(|i| {
            format!(
                "{{\"customer\": \"c{}\", \"amount\": {}, \"ts\": \"2026-12-01T{:02}:{:02}:00Z\"}}\n",
                i % 3,
                i % 7 + 1,
                (i * 7) % 24,
                i % 60
            )
        })
        .collect();
    std::fs::write(env.path("transactions.json"), lines).unwrap();
    env.ok(&["batch"]);
    let serve = env.spawn("serve", &["serve"]);
    let http = get_json(
        &addr,
        "/api/views/hourly?key=c1&from=2026-12-01T05:00:00Z&to=2026-12-01T11:00:00Z",
    );
    let expected: Vec<String> = http["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}|{}", r["start"].as_str().unwrap(), r["total"]))
        .collect();
    assert!(expected.len() >= 2, "{http}");
    let filter =
        "customer = 'c1' AND start >= '2026-12-01T05:00:00Z' AND start < '2026-12-01T11:00:00Z'";
    let (_, out, err) = psql(
        pg,
        None,
        &format!(
            "SELECT to_char(start, '%Y-%m-%dT%H:%M:%SZ'), total FROM hourly WHERE {filter} ORDER BY start;\n\
             EXPLAIN SELECT * FROM hourly WHERE {filter};\n"
        ),
    );
    let got: Vec<&str> = out.lines().filter(|l| l.starts_with("2026-")).collect();
    assert_eq!(got, expected, "{out}{err}");
    assert!(
        out.contains("ViewScan: view=hourly, range scan of the time index for one key, window start in [2026-12-01T05:00:00Z"),
        "{out}"
    );
    assert!(out.contains(&format!("rows={}", expected.len())), "{out}");

    // A Grafana time-series panel: the query as its PostgreSQL data source sends it once its
    // macros are expanded ($__timeGroupAlias(start, 1h) and $__timeFilter(start)): every
    // key's windows in the dashboard's range, from the time index, summed per hour.
    let http = get_json(
        &addr,
        "/api/views/hourly?from=2026-12-01T05:00:00Z&to=2026-12-01T11:00:00Z&limit=1000",
    );
    let mut per_hour: std::collections::BTreeMap<String, i64> = Default::default();
    for r in http["rows"].as_array().unwrap() {
        *per_hour
            .entry(r["start"].as_str().unwrap().to_string())
            .or_default() += r["total"].as_i64().unwrap();
    }
    assert_eq!(per_hour.len(), 6, "{http}");
    let grafana = "SELECT floor(extract(epoch from start)/3600)*3600 AS \"time\", sum(total) AS total \
                   FROM hourly WHERE start BETWEEN '2026-12-01T05:00:00Z' AND '2026-12-01T10:59:59Z' \
                   GROUP BY 1 ORDER BY 1";
    let (_, out, err) = psql(pg, None, &format!("{grafana};\nEXPLAIN {grafana};\n"));
    let got: Vec<(i64, i64)> = out
        .lines()
        .filter_map(|l| {
            let (t, v) = l.split_once('|')?;
            Some((t.trim().parse::<f64>().ok()? as i64, v.trim().parse().ok()?))
        })
        .collect();
    let want: Vec<(i64, i64)> = per_hour
        .iter()
        .map(|(start, total)| {
            let t = chrono::DateTime::parse_from_rfc3339(start)
                .unwrap()
                .timestamp();
            (t, *total)
        })
        .collect();
    assert_eq!(got, want, "{out}{err}");
    assert!(
        out.contains("ViewScan: view=hourly, range scan of the time index, window start in [2026-12-01T05:00:00Z"),
        "{out}"
    );

    // Grafana's query builder, as its data source sends its pickers' queries: the tables on
    // the search_path unqualified, and the view's columns with PostgreSQL's type names (the
    // builder offers a timestamp column as the panel's time).
    let on_path = "SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM \
                   generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
                   array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
                   string_to_array(current_setting('search_path'),',') s";
    let tables = format!(
        "SELECT CASE WHEN quote_ident(table_schema) IN ({on_path}) THEN quote_ident(table_name) \
         ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS \"table\" \
         FROM information_schema.tables WHERE quote_ident(table_schema) NOT IN \
         ('information_schema', 'pg_catalog') ORDER BY CASE WHEN quote_ident(table_schema) IN \
         ({on_path}) THEN 0 ELSE 1 END, 1"
    );
    let columns = format!(
        "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" \
         FROM information_schema.columns WHERE CASE WHEN array_length(parse_ident('hourly'),1) = 2 \
         THEN quote_ident(table_schema) = (parse_ident('hourly'))[1] AND \
         quote_ident(table_name) = (parse_ident('hourly'))[2] ELSE quote_ident(table_name) = 'hourly' \
         AND quote_ident(table_schema) IN ({on_path}) END ORDER BY 1"
    );
    let (_, out, err) = psql(pg, None, &format!("{tables};\n{columns};\n"));
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows,
        [
            "hourly",
            "lambdaflow_freshness",
            // `end` is a keyword: quote_ident quotes it, as PostgreSQL's does.
            "\"end\"|timestamp with time zone",
            "customer|text",
            "start|timestamp with time zone",
            "total|bigint",
        ],
        "{out}{err}"
    );
    // The panel and the pickers through Grafana's own driver and its way of running a
    // panel's query (pgx; the simple protocol; each value read back by its column's type).
    let g = clients::grafana(pg, &[grafana, &tables, &columns]);
    let panel = &g[0][0];
    assert_eq!(panel["columns"][0]["name"], "time", "{g}");
    assert_eq!(panel["columns"][0]["type"], "float8", "{g}");
    let got: Vec<(i64, i64)> = panel["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_f64().unwrap() as i64, r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(got, want, "{g}");
    assert_eq!(
        g[1][0]["rows"],
        serde_json::json!([["hourly"], ["lambdaflow_freshness"]]),
        "{g}"
    );
    assert_eq!(
        g[2][0]["rows"],
        serde_json::json!([
            ["\"end\"", "timestamp with time zone"],
            ["customer", "text"],
            ["start", "timestamp with time zone"],
            ["total", "bigint"]
        ]),
        "{g}"
    );

    // The view's key — its window's start and its other group key, in GROUP BY order — as
    // psql's `\d` shows it, and as the tools that copy the JDBC driver's query read it (an
    // `information_schema._pg_expandarray` of `pg_index.indkey`, and its records' fields).
    let keys = "SELECT result.COLUMN_NAME, result.KEY_SEQ FROM (SELECT a.attname AS COLUMN_NAME, \
                (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, \
                information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM \
                FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid) \
                JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid) \
                JOIN pg_catalog.pg_index i ON (a.attrelid = i.indrelid) \
                JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) \
                WHERE i.indisprimary AND ct.relname = 'hourly') result \
                WHERE result.A_ATTNUM = (result.KEYS).x ORDER BY result.key_seq";
    let (_, out, err) = psql(pg, None, &format!("\\t off\n\\d hourly\n\\t on\n{keys};\n"));
    assert!(
        out.contains("\"hourly_pkey\" PRIMARY KEY, btree (start, customer)"),
        "{out}{err}"
    );
    assert!(out.contains("start|1\ncustomer|2\n"), "{out}{err}");
    terminate(serve);
}
