#!/usr/bin/env python3
"""Proves docker-compose.yml without Docker (part of `make test`).

1. Loads the compose file with the real compose-spec loader (deploy/compose-check, the Go module
   `docker compose config` uses): interpolation, anchors and merge keys, schema validation.
2. Runs the project's own compose services natively, in compose's start order: `init`, then
   `producer`, both `scorer` replicas, `sink`, `review`, and `trainer` once the sink is healthy, each with
   exactly the `entrypoint`/`command` and `environment` compose resolved. Only addresses are
   mapped (service hostnames to the local services, `0.0.0.0:PORT` to a free 127.0.0.1 port, the
   `/data` volume to a temp dir), and, for isolation from other runs on the same broker, topic,
   group and database names get a run prefix (the ISOLATION table below).
3. Checks what a user would: transactions, predictions and labels land in ClickHouse, every
   transaction landed has exactly one prediction once the producer stops, the trainer retrains
   at least once, every metric the dashboards and alert rules use exists on some service's
   /metrics, and every service stops cleanly (exit 0) on SIGTERM.

A flag or env name in compose that a service no longer accepts makes that service exit, and the
run fails naming it. Usage: scripts/compose-run.py [--timeout SECONDS] [--keep-logs DIR]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import fsrun
from fsrun import BIN, REPO, TARGET, ClickHouse, Processes, fail, free_port, http_get, log

fsrun.NAME = "compose-run"
KAFKA = os.environ.get("KAFKA_BROKERS", "127.0.0.1:29092")
REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:28081/apis/ccompat/v7")
CLICKHOUSE = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:28123")
# The compose network's addresses and where the same service runs natively.
HOSTS = {
    "http://redpanda:8081": REGISTRY,
    "redpanda:9092": KAFKA,
    "http://clickhouse:8123": CLICKHOUSE,
}


def load_project():
    """The compose file as the compose-spec loader resolves it (or its error)."""
    exe = os.path.join(TARGET, "compose-check")
    src = os.path.join(REPO, "deploy/compose-check")
    if not shutil.which("go"):
        fail("Go is not on the PATH: the compose check needs Go >= 1.24 (the Makefile adds /usr/local/go/bin)")
    subprocess.run(["go", "build", "-o", exe, "."], cwd=src, check=True)
    out = subprocess.run([exe, "-f", os.path.join(REPO, "docker-compose.yml")],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"the compose-spec loader refused docker-compose.yml:\n{out.stderr}")
    log("docker-compose.yml loads with compose-go (docker compose config's loader)")
    return json.loads(out.stdout)


class Run:
    """The compose project's own services as native processes."""

    def __init__(self, project, keep_logs):
        self.project = project
        self.prefix = f"compose-{os.getpid()}-{int(time.time())}"
        self.data = tempfile.mkdtemp(prefix="compose-data-")
        self.procs = Processes(keep_logs or os.path.join(self.data, "logs"))
        self.database = self.prefix.replace("-", "_")
        self.clickhouse = ClickHouse(CLICKHOUSE, self.database)
        self.envs = {}  # key -> the environment a service was started with
        # Isolation: names only, never a setting the compose file makes.
        p = self.prefix
        self.isolation = {
            "FRAUDSTREAM_TRANSACTIONS_TOPIC": f"{p}-transactions",
            "FRAUDSTREAM_PREDICTIONS_TOPIC": f"{p}-predictions",
            "FRAUDSTREAM_ALERTS_TOPIC": f"{p}-fraud-alerts",
            "FRAUDSTREAM_LABELS_TOPIC": f"{p}-labels",
            "FRAUDSTREAM_DLQ_TOPIC": f"{p}-transactions-dlq",
            "FRAUDSTREAM_SINK_DLQ_TOPIC": f"{p}-predictions-dlq",
            "FRAUDSTREAM_MODELS_TOPIC": f"{p}-models",
            "FRAUDSTREAM_RULES_TOPIC": f"{p}-rules",
            "FRAUDSTREAM_SCORER_GROUP": f"{p}-scorer",
            "FRAUDSTREAM_SINK_GROUP": f"{p}-sink",
        }

    def map_value(self, value, ports):
        """A compose value as it reads on this machine: addresses and the /data volume."""
        for compose_addr, local in HOSTS.items():
            value = value.replace(compose_addr, local)
        value = re.sub(r"(?<![\w.])/data\b", self.data, value)

        def port(m):
            ports.append(free_port())
            return f"127.0.0.1:{ports[-1]}"
        return re.sub(r"0\.0\.0\.0:\d+", port, value)

    def service(self, name):
        svc = self.project["services"].get(name)
        if svc is None:
            fail(f"compose has no service {name!r}")
        return svc

    def start(self, name, replica=1, one_shot_timeout=None):
        svc = self.service(name)
        ports = []
        argv = [self.map_value(a, ports) for a in (svc.get("entrypoint") or []) + (svc.get("command") or [])]
        if not argv:
            fail(f"{name}: no command (the image's CMD only prints help)")
        env = {k: self.map_value(v or "", ports) for k, v in (svc.get("environment") or {}).items()}
        if env.get("CLICKHOUSE_DATABASE"):
            env["CLICKHOUSE_DATABASE"] = self.database
        full = {k: v for k, v in os.environ.items()
                # the host's own settings must not leak into a service
                if not k.startswith(("FRAUDSTREAM_", "KAFKA_", "CLICKHOUSE_", "SCHEMA_REGISTRY"))}
        full.update(env)
        full.update(self.isolation)
        # The image puts the binaries on PATH (/usr/local/bin); containers get their own hostname.
        full["PATH"] = BIN + os.pathsep + full["PATH"]
        full["HOSTNAME"] = f"{self.prefix}-{name}-{replica}"
        key = f"{name}-{replica}"
        self.envs[key] = full
        if one_shot_timeout:
            return self.procs.run(key, argv, full, self.data, one_shot_timeout)
        return self.procs.start(key, argv, full, self.data, ports[0] if ports else None)

    def trainings(self):
        try:
            with open(os.path.join(self.data, "trainer-state.json")) as f:
                return json.load(f).get("trainings", 0)
        except (OSError, ValueError):
            return 0

    def clean_up(self):
        self.procs.kill_all()
        ClickHouse(CLICKHOUSE, "default").query(f"DROP DATABASE IF EXISTS {self.database}")
        fsrun.delete_topics(f"{self.prefix}.*")


def promql_metrics(expr):
    """Metric names in a PromQL expression (not functions, keywords, labels or durations)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if m.group() in {"and", "or", "unless", "bool", "offset", "by", "without", "e", "Inf", "NaN"}:
            continue
        names.add(m.group())
    return names


def used_metrics():
    """Every Prometheus metric the dashboards and alert rules read, with where it is used."""
    used = {}
    for f in sorted(os.listdir(os.path.join(REPO, "grafana/dashboards"))):
        d = json.load(open(os.path.join(REPO, "grafana/dashboards", f)))
        for p in d["panels"]:
            for t in p.get("targets", []):
                if t.get("datasource", {}).get("type") == "prometheus":
                    for name in promql_metrics(t["expr"]):
                        used.setdefault(name, f"{f}: {p['title']}")
    for f in ["deploy/prometheus/rules.yml", "grafana/provisioning/alerting/rules.yml"]:
        for line in open(os.path.join(REPO, f)):
            m = re.search(r'\bexpr:\s*"?(.*?)"?\s*}?\s*$', line)
            if m:
                for name in promql_metrics(m.group(1)):
                    used.setdefault(name, f)
    return used


def check_review(run, review):
    """The review page answers as compose serves it: the queue sends to the login, the first user
    (made by init from REVIEW_PASSWORD) logs in and sees the queue."""
    import http.client
    import urllib.parse
    addr = run.envs[review]["FRAUDSTREAM_REVIEW_ADDR"]
    conn = http.client.HTTPConnection(addr, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse(); r.read()
    if r.status != 303 or r.getheader("location") != "/login":
        fail(f"review: / without a session answered {r.status} {r.getheader('location')}")
    password = run.service("init")["environment"]["REVIEW_PASSWORD"]
    body = urllib.parse.urlencode({"user": "analyst", "password": password})
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse(); r.read()
    cookie = (r.getheader("set-cookie") or "").split(";")[0]
    if r.status != 303 or not cookie:
        fail(f"review: the init-made user could not log in ({r.status})")
    conn.request("GET", "/", headers={"Cookie": cookie})
    r = conn.getresponse(); page = r.read().decode()
    if r.status != 200 or "Open alerts" not in page:
        fail(f"review: the queue answered {r.status}")
    log("review page: the queue needs a login; the user init made logs in and sees the queue")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    ap.add_argument("--keep-logs", help="write the services' logs here (default: a temp dir, removed)")
    args = ap.parse_args()
    started = time.time()
    deadline = started + args.timeout
    run = Run(load_project(), args.keep_logs)
    procs, ch = run.procs, run.clickhouse
    ok = False
    try:
        log(f"data dir {run.data}, topics and groups prefixed {run.prefix}, database {run.database}")
        rc, out = run.start("init", one_shot_timeout=args.timeout)
        if rc != 0:
            fail(f"init exited with {rc}:\n{out[-3000:]}")
        log(f"init completed successfully in {time.time() - started:.0f}s")
        replicas = (run.service("scorer").get("deploy") or {}).get("replicas") or 1
        scorers = [run.start("scorer", i) for i in range(1, replicas + 1)]
        sink = run.start("sink")
        producer = run.start("producer")
        review = run.start("review")
        procs.wait_healthy(sink, 120)
        for s in scorers:
            procs.wait_healthy(s, 120)
        procs.wait_healthy(review, 60)
        check_review(run, review)
        trainer = run.start("trainer")  # depends_on: sink healthy
        counts = (0, 0, 0)
        while not (all(counts) and run.trainings() >= 1):
            procs.check_alive()
            if time.time() > deadline:
                fail(f"in {args.timeout:.0f}s: transactions, predictions, labels = {counts}, trainings {run.trainings()}")
            time.sleep(2)
            counts = ch.counts()
        log(f"landed: transactions {counts[0]}, predictions {counts[1]}, labels {counts[2]}; trainer retrained {run.trainings()} time(s)")

        # Every metric the dashboards and alerts read exists on some service's /metrics.
        exposed = set()
        for key, (_, port) in procs.procs.items():
            if port:
                for line in http_get(f"http://127.0.0.1:{port}/metrics")[1].splitlines():
                    if line and not line.startswith("#"):
                        exposed.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        used = used_metrics()
        missing = {m: w for m, w in used.items() if m not in exposed}
        if missing:
            fail("metrics used but exposed by no service: " + ", ".join(f"{m} ({w})" for m, w in missing.items()))
        log(f"all {len(used)} metrics the dashboards and alert rules use are exposed")

        # Stop the producer; then every landed transaction gets its one prediction.
        procs.stop_cleanly(producer)
        tx = pred = 0
        while not (tx > 0 and pred == tx):
            if time.time() > deadline:
                fail(f"after the producer stopped: {tx} transactions but {pred} predictions")
            time.sleep(1)
            tx, pred, _ = ch.counts()
        dup = ch.query("SELECT count() - uniqExact(transaction_id) FROM predictions FINAL")
        if dup != "0":
            fail(f"duplicate predictions: {dup}")
        log(f"producer stopped: {tx} transactions, {pred} predictions, one each")
        procs.stop_cleanly(trainer, *scorers, sink, review)
        log(f"every service stopped cleanly; compose run passed in {time.time() - started:.0f}s")
        ok = True
    finally:
        fsrun.finish(ok, run.clean_up, run.data, procs.logs, args.keep_logs)


if __name__ == "__main__":
    main()
