"""Reads lambdaflow's master dataset as another tool would: replays the Delta log by the
protocol (JSON commits after the last Parquet checkpoint), then reads the data files the
version lists with DuckDB. No lambdaflow or delta-rs code is involved.

    delta_read.py <table dir> <group column> <sum column>

Prints one JSON object: the table version, its files, its per-app txn versions, the row count,
and per group the sum of the column.
"""

import json
import os
import sys
from urllib.parse import unquote

import duckdb


def replay(table):
    log = os.path.join(table, "_delta_log")
    active, txns, start = {}, {}, 0
    last = os.path.join(log, "_last_checkpoint")
    con = duckdb.connect()
    if os.path.exists(last):
        cp = json.load(open(last))["version"]
        parts = sorted(f for f in os.listdir(log) if f.startswith(f"{cp:020}.checkpoint"))
        for part in parts:
            path = os.path.join(log, part)
            for (add,) in con.execute(
                "SELECT add.path FROM read_parquet(?) WHERE add IS NOT NULL", [path]
            ).fetchall():
                active[unquote(add)] = True
            for app, v in con.execute(
                "SELECT txn.appId, txn.version FROM read_parquet(?) WHERE txn IS NOT NULL", [path]
            ).fetchall():
                txns[app] = v
        start = cp + 1
    versions = sorted(
        int(f[:20]) for f in os.listdir(log) if f.endswith(".json") and f[:20].isdigit()
    )
    version = None
    for v in versions:
        version = v
        if v < start:
            continue
        for line in open(os.path.join(log, f"{v:020}.json")):
            action = json.loads(line)
            if "add" in action:
                active[unquote(action["add"]["path"])] = True
            elif "remove" in action:
                active.pop(unquote(action["remove"]["path"]), None)
            elif "txn" in action:
                txns[action["txn"]["appId"]] = action["txn"]["version"]
    return version, sorted(active), txns


def main():
    table, group, column = sys.argv[1:4]
    version, files, txns = replay(table)
    paths = [os.path.join(table, f) for f in files]
    out = {"version": version, "files": files, "txns": txns, "rows": 0, "sums": {}}
    if paths:
        con = duckdb.connect()
        out["rows"] = con.execute("SELECT count(*) FROM read_parquet(?)", [paths]).fetchone()[0]
        for k, s in con.execute(
            f'SELECT "{group}", sum("{column}") FROM read_parquet(?) GROUP BY 1', [paths]
        ).fetchall():
            out["sums"][k] = int(s)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
