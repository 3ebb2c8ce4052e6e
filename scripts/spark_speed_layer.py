"""The workshop's speed layer (the seed's app/streaming_job.py) for scripts/bench-latency.sh.

Its code: Kafka source, from_json with the declared schema, groupBy customer, sum(amount),
outputMode complete, default trigger (or --trigger 100ms). What differs is the sink: instead of
printing to the console, each micro-batch's total of the probe key is kept in the driver and
answered over HTTP in the shape of lambdaflow's `GET /api/views/{view}?key=` — so
scripts/latency.py measures both systems the same way, from the producer's write to the first
poll that sees the probe. `/health` answers 200 once a micro-batch has run (the bench sends
warm-up events until then).

Usage: spark-submit --jars "$(scripts/spark.sh kafka-jars)" spark_speed_layer.py BOOTSTRAP TOPIC PORT TRIGGER [EXPECT]
(TRIGGER: default | 100ms | …). With EXPECT (for scripts/bench-throughput.sh), the job reads the
topic from the earliest offset, counts the events its complete view covers after each
micro-batch, prints `STARTED <unix time>` when the query starts and `DONE <unix time>` once it
covers EXPECT events, and exits.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyspark.sql import SparkSession
from pyspark.sql.functions import col, count, from_json, sum as _sum
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

bootstrap, topic, port, trigger = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
expect = int(sys.argv[5]) if len(sys.argv) > 5 else None
spark = SparkSession.builder.appName("SpeedLayer").getOrCreate()
spark.sparkContext.setLogLevel("WARN")
reader = (spark.readStream.format("kafka")
          .option("kafka.bootstrap.servers", bootstrap)
          .option("subscribe", topic))
if expect:
    reader = reader.option("startingOffsets", "earliest")
df = reader.load()
schema = StructType([
    StructField("customer", StringType(), True),
    StructField("amount", IntegerType(), True),
])
parsed_df = (df.selectExpr("CAST(value AS STRING)")
             .select(from_json(col("value"), schema).alias("data"))
             .select("data.*"))
streaming_view = parsed_df.groupBy("customer").agg(_sum("amount").alias("total_amount"),
                                                   count("*").alias("events"))

probe = {"total": 0}
done = threading.Event()


def publish(batch, _batch_id):
    if expect:
        covered = batch.agg(_sum("events")).collect()[0][0] or 0
        if covered >= expect:
            print(f"DONE {time.time()}", flush=True)
            done.set()
        return
    rows = batch.where(col("customer") == "__probe").collect()
    if rows:
        probe["total"] = rows[0]["total_amount"]


class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/health"):
            # Ready once a micro-batch has run (the first one compiles the query: a warm-up).
            code, body = (200, b"{}") if query.lastProgress else (503, b"{}")
        else:
            code = 200
            body = json.dumps({"rows": [{"customer": "__probe", "total_amount": probe["total"]}]}).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


writer = streaming_view.writeStream.outputMode("complete").foreachBatch(publish)
if trigger != "default":  # 100ms → "100 milliseconds", Spark's interval syntax
    writer = writer.trigger(processingTime=trigger.removesuffix("ms") + " milliseconds")
query = writer.start()
if expect:
    print(f"STARTED {time.time()}", flush=True)
    done.wait()
    query.stop()
    spark.stop()
    sys.exit(0)
threading.Thread(target=ThreadingHTTPServer(("127.0.0.1", port), Answer).serve_forever,
                 daemon=True).start()
query.awaitTermination()
