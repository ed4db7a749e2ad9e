#!/usr/bin/env python3
"""The pipeline over TLS and passwords, as real deployments run it (part of `make test`).

Against the local services' secure listeners (deploy/local/up.sh): Kafka SASL_SSL with SCRAM and
PLAIN users, the schema registry behind TLS and basic auth, ClickHouse over https with a
password, all signed by the local CA (deploy/local/tls.sh).

1. producer -> scorer -> sink -> trainer entirely over those: the first model bootstrapped and
   published, the stream published (zstd-compressed), scored and landed, then a retraining from
   ClickHouse. Every transaction lands once, with one prediction and one label.
2. Each wrong setting ends with a clear error naming what to fix: a wrong Kafka password, an
   unknown CA, a plaintext client on the TLS port, a wrong ClickHouse password or CA, http:// on
   the https port, a wrong registry password or CA.
3. Secrets, given in flags and in the environment, appear in no log, /metrics, /health or report.

Usage: scripts/secure-run.py [--keep-logs DIR]
"""
import argparse
import os
import tempfile
import time

import fsrun
from fsrun import BIN, ClickHouse, Processes, fail, http_get, log

fsrun.NAME = "secure-run"
RUN_DIR = os.environ.get("FRAUDSTREAM_RUN", os.path.expanduser("~/.cache/fraudstream/run"))
TLS = os.path.join(RUN_DIR, "tls")
USER = os.environ.get("FS_SECURE_USER", "fs_secure")
PASSWORD = os.environ.get("FS_SECURE_PASSWORD", "fsLocalSecret7f3a")
KAFKA = f"127.0.0.1:{os.environ.get('FS_KAFKA_SASL_PORT', '29094')}"
REGISTRY = f"https://127.0.0.1:{os.environ.get('FS_REGISTRY_TLS_PORT', '28082')}/apis/ccompat/v7"
CLICKHOUSE = f"https://127.0.0.1:{os.environ.get('FS_CLICKHOUSE_HTTPS_PORT', '28443')}"
CA = os.path.join(TLS, "ca.pem")
OTHER_CA = os.path.join(TLS, "other-ca.pem")
WRONG = "wrongPw9c1e"


def kafka_tls(mechanism):
    """librdkafka properties for the SASL_SSL listener, the password left out."""
    return ["security.protocol=SASL_SSL", f"sasl.mechanism={mechanism}", f"sasl.username={USER}",
            f"ssl.ca.location={CA}"]


class SecureRun:
    def __init__(self, keep_logs):
        self.prefix = f"secure-{os.getpid()}-{int(time.time())}"
        self.data = tempfile.mkdtemp(prefix="secure-data-")
        self.procs = Processes(keep_logs or os.path.join(self.data, "logs"))
        self.database = self.prefix.replace("-", "_")
        self.clickhouse = ClickHouse(CLICKHOUSE, self.database, USER, PASSWORD, CA)
        self.ports = {}

    def env(self, **extra):
        """Addresses, users and CAs in the environment, as an operator's env file would hold them;
        no password (each service gets it its own way)."""
        p = self.prefix
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FRAUDSTREAM_", "KAFKA_", "CLICKHOUSE_", "SCHEMA_REGISTRY"))}
        env.update({
            "KAFKA_BROKERS": KAFKA,
            "SCHEMA_REGISTRY_URL": REGISTRY, "SCHEMA_REGISTRY_USER": USER, "SCHEMA_REGISTRY_CA_FILE": CA,
            "CLICKHOUSE_URL": CLICKHOUSE, "CLICKHOUSE_USER": USER, "CLICKHOUSE_CA_FILE": CA,
            "CLICKHOUSE_DATABASE": self.database, "RUST_LOG": "info", "RUST_BACKTRACE": "0",
            "FRAUDSTREAM_TRANSACTIONS_TOPIC": f"{p}-transactions", "FRAUDSTREAM_LABELS_TOPIC": f"{p}-labels",
            "FRAUDSTREAM_PREDICTIONS_TOPIC": f"{p}-predictions", "FRAUDSTREAM_ALERTS_TOPIC": f"{p}-alerts",
            "FRAUDSTREAM_DLQ_TOPIC": f"{p}-dlq", "FRAUDSTREAM_SINK_DLQ_TOPIC": f"{p}-sink-dlq",
            "FRAUDSTREAM_MODELS_TOPIC": f"{p}-models",
        })
        env.update(extra)
        return env

    def bin(self, name, *args):
        return [os.path.join(BIN, name), *args]

    def one_shot(self, key, argv, env, timeout=300):
        rc, out = self.procs.run(key, argv, env, self.data, timeout)
        if rc != 0:
            fail(f"{key} exited with {rc}:\n{out[-3000:]}")
        return out

    def pipeline(self):
        """producer -> scorer -> sink -> trainer over TLS and passwords; every row lands once."""
        csv = os.path.join(self.data, "paysim.csv")
        self.one_shot("simulate", self.bin("producer", "simulate", "--rows", "300000", "--seed", "7",
                                           "--out", csv), self.env())
        self.one_shot("split", self.bin("producer", "split", "--input", csv, "--ratio", "0.9",
                                        "--out-dir", self.data), self.env())
        stream = os.path.join(self.data, "stream.csv")
        rows = sum(1 for _ in open(stream)) - 1
        # The trainer: PLAIN, secrets in env (KAFKA_CONFIG, CLICKHOUSE_PASSWORD, SCHEMA_REGISTRY_PASSWORD).
        trainer_env = self.env(KAFKA_CONFIG=",".join(kafka_tls("PLAIN") + [f"sasl.password={PASSWORD}"]),
                               CLICKHOUSE_PASSWORD=PASSWORD, SCHEMA_REGISTRY_PASSWORD=PASSWORD)
        out = self.one_shot("bootstrap", self.bin(
            "trainer", "bootstrap", "--csv", os.path.join(self.data, "historical.csv"), "--out",
            os.path.join(self.data, "model.txt"), "--max-rounds", "30", "--report",
            os.path.join(self.data, "reports", "v1")), trainer_env)
        if "published paysim v1 as champion" not in out:
            fail(f"bootstrap did not publish v1:\n{out[-2000:]}")
        # The scorer: SCRAM-SHA-512, secrets in env.
        self.ports["scorer"] = fsrun.free_port()
        scorer = self.procs.start("scorer", self.bin("scorer", "--instance-id", f"{self.prefix}-scorer",
                                                     "--group", f"{self.prefix}-scorer",
                                                     "--metrics-addr", f"127.0.0.1:{self.ports['scorer']}"),
                                  self.env(KAFKA_CONFIG=",".join(kafka_tls("SCRAM-SHA-512") + [f"sasl.password={PASSWORD}"]),
                                           SCHEMA_REGISTRY_PASSWORD=PASSWORD), self.data, self.ports["scorer"])
        # The sink: SCRAM-SHA-256, every secret as a flag.
        self.ports["sink"] = fsrun.free_port()
        argv = self.bin("sink", "--group", f"{self.prefix}-sink", "--metrics-addr", f"127.0.0.1:{self.ports['sink']}",
                        "--clickhouse-password", PASSWORD, "--schema-registry-password", PASSWORD,
                        "--batch-ms", "300")
        for kv in kafka_tls("SCRAM-SHA-256") + [f"sasl.password={PASSWORD}"]:
            argv += ["-X", kv]
        sink = self.procs.start("sink", argv, self.env(), self.data, self.ports["sink"])
        self.procs.wait_healthy(scorer, 120)
        self.procs.wait_healthy(sink, 120)
        # The producer: SCRAM-SHA-512, zstd-compressed batches, secrets in env.
        self.one_shot("publish", self.bin("producer", "publish", "--input", stream, "--label-delay", "0",
                                          "--id-prefix", self.prefix, "-X", "compression.type=zstd"),
                      self.env(KAFKA_CONFIG=",".join(kafka_tls("SCRAM-SHA-512") + [f"sasl.password={PASSWORD}"]),
                               SCHEMA_REGISTRY_PASSWORD=PASSWORD))
        deadline = time.time() + 180
        counts = (0, 0, 0)
        while counts != (rows, rows, rows):
            self.procs.check_alive()
            if time.time() > deadline:
                fail(f"over TLS: transactions, predictions, labels = {counts}, expected {rows} each")
            time.sleep(1)
            counts = self.clickhouse.counts()
        dup = self.clickhouse.query("SELECT count() - uniqExact(transaction_id) FROM predictions")
        log(f"over SASL_SSL, https and basic auth: {rows} transactions, predictions and labels landed"
            f" ({dup} duplicate rows before FINAL)")
        out = self.one_shot("train", self.bin("trainer", "train", "--max-rounds", "30", "--report",
                                              os.path.join(self.data, "reports", "v2")), trainer_env)
        if "published paysim v2" not in out:
            fail(f"the retraining from ClickHouse did not publish v2:\n{out[-2000:]}")
        log("the trainer retrained from ClickHouse over https and published v2 over SASL_SSL")
        self.scraped = {k: http_get(f"http://127.0.0.1:{p}/metrics")[1] + http_get(f"http://127.0.0.1:{p}/health")[1]
                        for k, p in self.ports.items()}
        self.procs.stop_cleanly(scorer, sink)

    def wrong_settings(self):
        """Each mistake ends with an error that names the setting to fix."""
        good_kafka = kafka_tls("SCRAM-SHA-512") + [f"sasl.password={PASSWORD}"]
        good = dict(KAFKA_CONFIG=",".join(good_kafka), CLICKHOUSE_PASSWORD=PASSWORD,
                    SCHEMA_REGISTRY_PASSWORD=PASSWORD)
        tiny = os.path.join(self.data, "tiny.csv")
        with open(tiny, "w") as f:
            f.write("step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,"
                    "newbalanceDest,isFraud,isFlaggedFraud\n1,PAYMENT,100.00,C1,500.00,400.00,M1,0.00,0.00,0,0\n")
        cases = [
            ("kafka-wrong-password", self.bin("trainer", "list"),
             dict(good, KAFKA_CONFIG=",".join(kafka_tls("SCRAM-SHA-512") + [f"sasl.password={WRONG}"])), "sasl.password"),
            ("kafka-unknown-ca", self.bin("trainer", "list", "-X", f"ssl.ca.location={OTHER_CA}"), good,
             "ssl.ca.location"),
            ("kafka-plaintext-on-tls-port", self.bin("trainer", "list"), dict(good, KAFKA_CONFIG=""),
             "security.protocol=SASL_SSL"),
            ("clickhouse-wrong-password", self.bin("trainer", "list"), dict(good, CLICKHOUSE_PASSWORD=WRONG),
             "CLICKHOUSE_PASSWORD"),
            ("clickhouse-unknown-ca", self.bin("trainer", "list"), dict(good, CLICKHOUSE_CA_FILE=OTHER_CA),
             "CLICKHOUSE_CA_FILE"),
            ("clickhouse-http-on-https-port", self.bin("trainer", "list"),
             dict(good, CLICKHOUSE_URL=CLICKHOUSE.replace("https:", "http:")), "https://"),
            ("registry-wrong-password", self.bin("producer", "publish", "--input", tiny),
             dict(good, SCHEMA_REGISTRY_PASSWORD=WRONG), "SCHEMA_REGISTRY_PASSWORD"),
            ("registry-unknown-ca", self.bin("producer", "publish", "--input", tiny),
             dict(good, SCHEMA_REGISTRY_CA_FILE=OTHER_CA), "SCHEMA_REGISTRY_CA_FILE"),
        ]
        for key, argv, extra, fix in cases:
            rc, out = self.procs.run(key, argv, self.env(**extra), self.data, 60)
            first = next((line for line in out.splitlines() if line.startswith("Error")), out.strip()[-300:])
            if rc == 0 or fix not in out:
                fail(f"{key}: expected a failure naming {fix!r}, got exit {rc}:\n{out[-2000:]}")
            log(f"{key}: exit {rc}, {first[:200]}")

    def no_secret_anywhere(self):
        places = {f"/metrics+/health of {k}": text for k, text in self.scraped.items()}
        for root, _, files in os.walk(self.data):
            for f in files:
                if f.endswith((".log", ".json", ".html")):
                    path = os.path.join(root, f)
                    places[os.path.relpath(path, self.data)] = open(path, errors="replace").read()
        for secret in (PASSWORD, WRONG):
            leaks = [where for where, text in places.items() if secret in text]
            if leaks:
                fail(f"a password appears in: {', '.join(leaks)}")
        log(f"no password in any of {len(places)} logs, reports and /metrics or /health pages")

    def clean_up(self):
        self.procs.kill_all()
        self.clickhouse.query(f"DROP DATABASE IF EXISTS {self.database}")
        fsrun.delete_topics(f"{self.prefix}.*")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-logs", help="write the services' logs here (default: a temp dir, removed)")
    args = ap.parse_args()
    if not os.path.exists(CA):
        fail(f"{CA} is missing: start the local services with `make services` (deploy/local/up.sh)")
    started = time.time()
    run = SecureRun(args.keep_logs)
    ok = False
    try:
        run.pipeline()
        run.wrong_settings()
        run.no_secret_anywhere()
        log(f"secure run passed in {time.time() - started:.0f}s")
        ok = True
    finally:
        fsrun.finish(ok, run.clean_up, run.data, run.procs.logs, args.keep_logs)


if __name__ == "__main__":
    main()
