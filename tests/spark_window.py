"""PySpark's own DataFrame `window()` over a JSON-lines file: the reference that
tests/spark.rs compares lambdaflow's windowed batch views with. No lambdaflow code is involved:
Spark reads the file with its JSON reader and a declared schema, in local mode.

    spark-submit --master local[1] spark_window.py <file>

Prints one JSON object: per view, its rows as lists of strings (bounds as RFC 3339 in UTC),
sorted.
"""

import json
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

spark = (SparkSession.builder.appName("window-parity")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.shuffle.partitions", "2")
         .getOrCreate())
spark.sparkContext.setLogLevel("WARN")
df = spark.read.schema("customer STRING, amount LONG, ts TIMESTAMP").json(sys.argv[1])

views = {
    # Tumbling, per customer.
    "hourly": df.groupBy(F.window("ts", "1 hour"), "customer")
    .agg(F.sum("amount").alias("total"), F.count("*").alias("n"))
    .select("window.start", "window.end", "customer", "total", "n"),
    # Hopping: every event in each of the four windows that hold it.
    "hopping": df.groupBy(F.window("ts", "1 hour", "15 minutes"))
    .agg(F.count("*").alias("n"), F.max("amount").alias("hi"))
    .select("window.start", "window.end", "n", "hi"),
    # Hopping with a start offset.
    "offset": df.groupBy(F.window("ts", "2 hours", "30 minutes", "10 minutes"), "customer")
    .agg(F.sum("amount").alias("total"))
    .select("window.start", "window.end", "customer", "total"),
}


def cell(v):
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(v)


out = {
    name: sorted([cell(v) for v in row] for row in view.collect())
    for name, view in views.items()
}
print("RESULT " + json.dumps(out))
spark.stop()
