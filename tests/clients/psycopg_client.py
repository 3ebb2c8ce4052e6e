"""psycopg 3 against lambdaflow's PostgreSQL protocol, as an application uses it: parameters
bound by the server (the extended protocol) and by the client (simple queries), named
prepared statements, binary results, and
information_schema; then SQLAlchemy over psycopg, as pandas' read_sql and Superset connect
(its dialect probes the server's version, settings and types on connect). Prints one JSON
object for tests/sql.rs to compare with the HTTP API.

    psycopg_client.py PORT [PASSWORD] CUSTOMER…
"""
import json
import sys

import psycopg
import sqlalchemy

port, password, customers = int(sys.argv[1]), sys.argv[2] or None, sys.argv[3:]
out = {}
with psycopg.connect(host="127.0.0.1", port=port, user="analyst", dbname="lambdaflow",
                     password=password, autocommit=True, connect_timeout=10) as conn:
    with conn.cursor() as cur:
        out["lookups"] = {}
        for c in customers:
            cur.execute("SELECT total_amount FROM customer_totals WHERE customer = %s", (c,),
                        prepare=True)
            row = cur.fetchone()
            out["lookups"][c] = row[0] if row else None
    # Parameters bound by the client into the query's text (psycopg 2's way, and psycopg 3's
    # ClientCursor): simple queries, the key a literal.
    with psycopg.ClientCursor(conn) as cur:
        out["client_side_lookups"] = {}
        for c in customers:
            cur.execute("SELECT total_amount FROM customer_totals WHERE customer = %s", (c,))
            row = cur.fetchone()
            out["client_side_lookups"][c] = row[0] if row else None
    with conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' ORDER BY table_name")
        out["tables"] = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = %s ORDER BY ordinal_position", ("customer_totals",),
                    prepare=True)
        out["columns"] = [f"{c}:{t}" for c, t in cur.fetchall()]
        cur.execute("SELECT count(*), max(total_amount) FROM customer_totals "
                    "WHERE total_amount > %s", (0,), prepare=True)
        out["aggregate_names"] = [d.name for d in cur.description]
    with conn.cursor(binary=True) as cur:
        # A prepared lookup whose key is an expression of the parameter, binary results.
        out["binary_lookups"] = {}
        for c in customers:
            cur.execute("SELECT * FROM customer_totals AS t WHERE t.customer = trim(%s)",
                        (f"  {c} ",), prepare=True)
            row = cur.fetchone()
            out["binary_lookups"][c] = row[1] if row else None
        cur.execute("SELECT customer, total_amount FROM customer_totals "
                    "WHERE total_amount > %s ORDER BY customer", (0,))
        out["binary"] = {c: t for c, t in cur.fetchall()}
        cur.execute("SELECT watermark, batch_started_at FROM lambdaflow_freshness")
        wm, started = cur.fetchone()
        out["batch_started_at_tz"] = started.tzinfo is not None
auth = f"analyst:{password}" if password else "analyst"
engine = sqlalchemy.create_engine(f"postgresql+psycopg://{auth}@127.0.0.1:{port}/lambdaflow")
with engine.connect() as conn:
    out["sqlalchemy_version"] = conn.dialect.server_version_info[:2]
    lookup = sqlalchemy.text("SELECT total_amount FROM customer_totals WHERE customer = :c")
    out["sqlalchemy_lookups"] = {c: conn.execute(lookup, {"c": c}).scalar() for c in customers}
    inspector = sqlalchemy.inspect(conn)
    out["sqlalchemy_schemas"] = inspector.get_schema_names()
    out["sqlalchemy_tables"] = sorted(inspector.get_table_names())
    # Reflection of a view's columns, as Superset's dataset editor and Alembic ask for it.
    out["sqlalchemy_columns"] = [
        f"{c['name']}:{c['type']}:{'null' if c['nullable'] else 'not null'}"
        for c in inspector.get_columns("customer_totals")
    ]
    pk = inspector.get_pk_constraint("customer_totals")
    out["sqlalchemy_primary_key"] = [pk["name"], pk["constrained_columns"]]
    out["sqlalchemy_indexes"] = inspector.get_indexes("customer_totals")  # the key's is the pk
    out["sqlalchemy_unique"] = inspector.get_unique_constraints("customer_totals")
    # What else Superset's and Alembic's reflection reads of a table: none of these here.
    out["sqlalchemy_none"] = {
        "views": inspector.get_view_names(),
        "materialized_views": inspector.get_materialized_view_names(),
        "sequences": inspector.get_sequence_names(),
        "foreign_keys": inspector.get_foreign_keys("customer_totals"),
        "check_constraints": inspector.get_check_constraints("customer_totals"),
        "comment": inspector.get_table_comment("customer_totals")["text"],
    }
    try:
        inspector.get_view_definition("customer_totals")
        out["sqlalchemy_view_definition"] = "a definition"
    except sqlalchemy.exc.NoSuchTableError:
        out["sqlalchemy_view_definition"] = "not a view"
print(json.dumps(out))
