"""Runs fraudstream's ClickHouse DDL and the given queries on current ClickHouse (chDB, in-process).

Usage: check_chdb.py '["SELECT ...", ...]'. Applies deploy/clickhouse/*.sql, inserts a few rows,
runs every query and fails (exit 1) on the first error or empty result, naming the query.
"""
import glob
import json
import os
import sys

from chdb import session

here = os.path.dirname(os.path.abspath(__file__))
s = session.Session()
s.query("CREATE DATABASE IF NOT EXISTS fraudstream")
s.query("USE fraudstream")
for path in sorted(glob.glob(os.path.join(here, "*.sql"))):
    stmt = []
    for line in open(path):
        if not line.strip() or line.strip().startswith("--"):
            continue
        stmt.append(line)
        if line.rstrip().endswith(";"):
            s.query("".join(stmt).rstrip().rstrip(";"))
            stmt = []
rows = []
labels = []
txs = []
for i in range(200):
    alert = 1 if i % 10 == 0 else 0
    t = 1700000000 + i
    rows.append(
        f"('tx-{i}', 'C{i % 7}', 'TRANSFER', {i * 10.5}, {t}, 0, {t}, 40, 40, {0.97 if alert else 0.1}, {alert}, 0.9,"
        f" 'paysim', {1 + i % 2}, {0.5 if i % 3 == 0 else 'NULL'}, {3 if i % 3 == 0 else 'NULL'},"
        f" {['amount'] if alert else []}, {[1.5] if alert else []},"
        f" {['big-transfer'] if alert else []}, {[2] if alert else []}, {['ALERT'] if alert else []}, 5)"
    )
    labels.append(f"('tx-{i}', {alert}, {t + 3600}, 0, '{'ANALYST' if i % 20 == 0 else 'FILE'}', 'ana', '')")
    txs.append(f"('tx-{i}', {t}, 0, 1, 'TRANSFER', {i * 10.5}, 'C{i % 7}', 100, 0, 'C9', 0, 0, 0, 0, {i})")
s.query("INSERT INTO predictions VALUES " + ",".join(rows))
s.query("INSERT INTO labels VALUES " + ",".join(labels))
s.query("INSERT INTO transactions VALUES " + ",".join(txs))
s.query("INSERT INTO drift_reference SELECT argMax(model_name, scored_at), argMax(model_version, scored_at),"
        " 'score', [0.5], [0.5, 0.5], now() FROM predictions")
assert s.query("SELECT count() FROM labelled_transactions", "CSV").bytes().strip() == b"200"
for q in json.loads(sys.argv[1]):
    try:
        out = s.query(q, "JSONEachRow").bytes()
    except Exception as e:  # noqa: BLE001 - report which query failed
        print(f"chDB refused:\n{q}\n{e}")
        sys.exit(1)
    if not out.strip():
        print(f"chDB returned no rows:\n{q}")
        sys.exit(1)
print(f"chDB {s.query('SELECT version()', 'CSV').bytes().decode().strip()}: DDL and {len(json.loads(sys.argv[1]))} queries OK")
