"""What the native service runs (scripts/compose-run.py, scripts/secure-run.py) share: starting the
project's binaries as processes with their own logs, health checks, clean stops, and queries to
ClickHouse over http or https."""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import base64

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/fraudstream/target"))
BIN = os.path.join(TARGET, "release")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "run"


def log(msg):
    print(f"[{NAME}] {msg}", flush=True)


def fail(msg):
    log(f"FAILED: {msg}")
    raise SystemExit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5, user=None, password=None, cafile=None, data=None):
    """(status, body) of a GET (a POST of `data` when given); status None when nothing answered."""
    req = urllib.request.Request(url, data=data.encode() if data is not None else None)
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def shown(argv):
    """A command line for the log: long arguments cut, passwords hidden."""
    out, hide_next = [], False
    for a in argv:
        if hide_next:
            a, hide_next = "<redacted>", False
        elif a.endswith("-password"):
            hide_next = True
        elif "password=" in a:
            a = a[:a.index("password=") + len("password=")] + "<redacted>"
        out.append(a if len(a) < 60 else a[:57] + "...")
    return " ".join(out)


class ClickHouse:
    def __init__(self, url, database, user=None, password=None, cafile=None):
        self.url, self.database, self.user, self.password, self.cafile = url, database, user, password, cafile

    def query(self, sql):
        """The result as text, or 'error: ...'. POSTed: ClickHouse runs DDL only from a POST."""
        q = urllib.parse.urlencode({"database": self.database})
        status, body = http_get(f"{self.url}/?{q}", 30, self.user, self.password, self.cafile, data=sql)
        return body.strip() if status == 200 else f"error: {status} {body[:200]}"

    def counts(self):
        """(transactions, predictions, labels) landed, one row per id."""
        row = self.query("SELECT (SELECT count() FROM transactions FINAL), (SELECT count() FROM predictions FINAL),"
                         " (SELECT count() FROM labels FINAL) FORMAT TSV")
        try:
            return tuple(int(x) for x in row.split("\t"))
        except ValueError:
            return (0, 0, 0)


def wait_or_kill(proc, timeout):
    """Waits for `proc` to end; after `timeout` seconds kills it. True when it ended by itself."""
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


class Processes:
    """The services of one run, each with a log file; every one is killed at the end."""

    def __init__(self, logs):
        self.logs = logs
        os.makedirs(logs, exist_ok=True)
        self.procs = {}  # key -> (Popen, metrics port or None)

    def start(self, key, argv, env, cwd, port=None):
        out = open(os.path.join(self.logs, f"{key}.log"), "w")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs[key] = (proc, port)
        log(f"started {key}: {shown(argv)}")
        return key

    def run(self, key, argv, env, cwd, timeout):
        """Runs a one-shot to its end: (exit code, output)."""
        self.start(key, argv, env, cwd)
        proc = self.procs.pop(key)[0]
        if not wait_or_kill(proc, timeout):
            fail(f"{key} did not finish within {timeout}s:\n{self.tail(key)}")
        return proc.returncode, self.tail(key, 400)

    def tail(self, key, n=30):
        try:
            with open(os.path.join(self.logs, f"{key}.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def port(self, key):
        return self.procs[key][1]

    def check_alive(self):
        for key, (proc, _) in self.procs.items():
            if proc.poll() is not None:
                fail(f"{key} exited with {proc.returncode}; its log ends:\n{self.tail(key)}")

    def wait_healthy(self, key, timeout):
        """What compose's healthcheck asks: GET /health answers 200."""
        deadline = time.time() + timeout
        url = f"http://127.0.0.1:{self.port(key)}/health"
        while time.time() < deadline:
            self.check_alive()
            if http_get(url)[0] == 200:
                return
            time.sleep(0.5)
        fail(f"{key} not healthy after {timeout}s: {http_get(url)}\n{self.tail(key)}")

    def stop(self, key, timeout=60):
        """SIGTERM, as compose stops a container; the exit code."""
        proc, _ = self.procs[key]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            if not wait_or_kill(proc, timeout):
                fail(f"{key} did not stop within {timeout}s of SIGTERM")
        return proc.returncode

    def stop_cleanly(self, *keys):
        for key in keys:
            rc = self.stop(key)
            if rc != 0:
                fail(f"{key} exited with {rc} on SIGTERM:\n{self.tail(key)}")

    def kill_all(self):
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def delete_topics(pattern):
    subprocess.run([os.path.join(REPO, "deploy/local/kafka-topics.sh"), "--delete", "--topic", pattern],
                   capture_output=True)


def finish(ok, clean_up, data, logs, keep_logs):
    """After a run: stop and delete what it made; keep its logs when it failed or when asked."""
    clean_up()
    if ok and not keep_logs:
        shutil.rmtree(data, ignore_errors=True)
    elif not ok:
        log(f"logs kept in {logs}")
