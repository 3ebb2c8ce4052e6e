"""The workshop's speed layer (the seed's app/streaming_job.py) for scripts/bench-latency.sh.

Its code: Kafka source, from_json with the declared schema, groupBy customer, sum(amount),
outputMode complete, default trigger (or --trigger 100ms). What differs is the sink: instead of
printing to the console, each micro-batch's total of the probe key is kept in the driver and
answered over HTTP in the shape of lambdaflow's `GET /api/views/{view}?key=` — so
scripts/latency.py measures both systems the same way, from the producer's write to the first
poll that sees the probe. `/health` answers 200 once a micro-batch has run (the bench sends
warm-up events until then).

Usage: spark-submit --jars "$(scripts/spark.sh kafka-jars)" spark_speed_layer.py BOOTSTRAP TOPIC PORT TRIGGER [EXPECT [WINDOW]]
(TRIGGER: default | 100ms | …). With EXPECT (for scripts/bench-throughput.sh), the job reads the
topic from the earliest offset, counts the events its complete view covers after each
micro-batch, prints `STARTED <unix time>` when the query starts and `DONE <unix time>` once it
covers EXPECT events, and exits.

With WINDOW (for scripts/bench-time.sh; say `1 minute`), the view is windowed as Spark's guide
writes it: the events' `ts` (a timestamp), `withWatermark("ts", WINDOW)`, groupBy
`window(ts, WINDOW)` and customer, output mode update (in complete mode Spark keeps every
window: the watermark would evict no state); each micro-batch's updated rows are counted (so
the aggregation runs), and DONE is printed once the query's progress has read EXPECT input
rows.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyspark.sql import SparkSession
from pyspark.sql.functions import col, count, from_json, sum as _sum, window
from pyspark.sql.types import IntegerType, StringType, StructField, StructType, TimestampType

bootstrap, topic, port, trigger = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
expect = int(sys.argv[5]) if len(sys.argv) > 5 else None
window_size = sys.argv[6] if len(sys.argv) > 6 else None
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
] + ([StructField("ts", TimestampType(), True)] if window_size else []))
parsed_df = (df.selectExpr("CAST(value AS STRING)")
             .select(from_json(col("value"), schema).alias("data"))
             .select("data.*"))
if window_size:
    streaming_view = (parsed_df.withWatermark("ts", window_size)
                      .groupBy(window(col("ts"), window_size), col("customer"))
                      .agg(_sum("amount").alias("total_amount"), count("*").alias("events")))
else:
    streaming_view = parsed_df.groupBy("customer").agg(_sum("amount").alias("total_amount"),
                                                       count("*").alias("events"))

probe = {"total": 0}
done = threading.Event()


def publish(batch, _batch_id):
    if window_size:
        batch.count()
        return
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


writer = (streaming_view.writeStream.outputMode("update" if window_size else "complete")
          .foreachBatch(publish))
if trigger != "default":  # 100ms → "100 milliseconds", Spark's interval syntax
    writer = writer.trigger(processingTime=trigger.removesuffix("ms") + " milliseconds")
query = writer.start()
if expect:
    print(f"STARTED {time.time()}", flush=True)
    if window_size:
        read = {}  # batch id → input rows, from the progress Spark reports after each batch
        while sum(read.values()) < expect:
            for p in query.recentProgress:
                p = p if isinstance(p, dict) else json.loads(p.json)
                read[p["batchId"]] = p["numInputRows"]
            time.sleep(0.05)
        print(f"DONE {time.time()}", flush=True)
        done.set()
    done.wait()
    query.stop()
    spark.stop()
    sys.exit(0)
threading.Thread(target=ThreadingHTTPServer(("127.0.0.1", port), Answer).serve_forever,
                 daemon=True).start()
query.awaitTermination()
