#!/usr/bin/env python3
"""Reclaim and node-death benchmark on real processes (figures quoted in README.md).

Starts a `reservoir server` and two `reservoir agent`s with 8 fake GPUs each on 127.0.0.1.
Tenant A reserves 8 GPUs; tenant B keeps two 8-GPU spot counter jobs running, one of them on
A's idle reserved GPUs. Then, repeatedly:
  - reclaim: A submits an 8-GPU reserved job; latency = A's JobSubmitted -> JobRunning, from
    the server's event timestamps (notice, the spot job's clean exit, the start, the agent's
    confirmation all included). A's job is cancelled again and B's job resumes.
  - node death: the host running B's lower-priced job is killed (agent and job processes,
    SIGKILL); time = kill -> that job's JobRequeued event (the heartbeat timeout dominates).

Usage: bench/reclaim.py [--runs N] [--deaths N] [--heartbeat 3s] [--bin PATH]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

COUNTER = r"""#!/bin/sh
trap 'true' TERM
f="$RESERVOIR_CHECKPOINT_DIR/counter"
n=$(cat "$f" 2>/dev/null || echo 0)
echo "attempt $RESERVOIR_ATTEMPT resumes at $n"
while true; do
  if [ -f "$RESERVOIR_NOTICE_FILE" ]; then echo "notice at $n"; exit 0; fi
  n=$((n+1)); echo $n > "$f.tmp"; mv "$f.tmp" "$f"
  sleep 0.1
done
"""

TOKEN = "bench-admin"


class Cluster:
    def __init__(self, binary, heartbeat, workdir):
        self.bin, self.dir = binary, workdir
        cfg = os.path.join(workdir, "config.json")
        with open(cfg, "w") as f:
            json.dump({"tick": "1s", "heartbeat_timeout": heartbeat, "start_timeout": "20s",
                       "pools": [{"name": "h100", "reserve_price": "1", "max_notice": "30s"}]}, f)
        env = dict(os.environ, RESERVOIR_ADMIN_TOKEN=TOKEN)
        port_file = os.path.join(workdir, "port")
        self.server = subprocess.Popen(
            [binary, "server", "--listen", "127.0.0.1:0", "--db", os.path.join(workdir, "r.db"),
             "--config", cfg, "--port-file", port_file],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists(port_file):
            time.sleep(0.05)
        self.url = "http://127.0.0.1:" + open(port_file).read().strip()
        self.agents = {}
        self.since = 0
        self.events = []

    def start_agent(self, node):
        state = os.path.join(self.dir, node)
        self.agents[node] = subprocess.Popen(
            [self.bin, "agent", "--server", self.url, "--token", TOKEN, "--pool", "h100",
             "--node-id", node, "--fake-gpus", "8", "--state-dir", state,
             "--checkpoint-root", os.path.join(self.dir, "ckpt")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, node + ".log"), "a"))

    def kill_host(self, node):
        with open(os.path.join(self.dir, node, "agent.json")) as f:
            attempts = json.load(f)["attempts"]
        self.agents[node].kill()
        for a in attempts:
            if a["pid"] > 0:
                try:
                    os.killpg(a["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.agents[node].wait()

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + TOKEN})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def wait_event(self, pred):
        for e in self.events:
            if pred(e):
                return e
        while True:
            batch = self.call("GET", "/v1/events?since=%d&wait=5" % self.since)
            self.since = batch["last_seq"]
            self.events += batch["events"]
            for e in batch["events"]:
                if pred(e):
                    return e

    def job_event(self, kind, job, attempt=None):
        return self.wait_event(lambda e: e["type"] == kind and e.get("job") == job and
                               (attempt is None or e.get("attempt") == attempt))

    def submit(self, tenant, tier, limit, command, name):
        body = {"tenant": tenant, "pool": "h100", "gpus": 8, "tier": tier, "notice": "5s",
                "command": command, "name": name}
        if limit:
            body["limit_price"] = limit
        return self.call("POST", "/v1/jobs", body)["id"]

    def wait_output(self, job):
        while not self.call("GET", "/v1/jobs/%d/logs?wait=5" % job)["data"]:
            pass

    def stop(self):
        for node, p in self.agents.items():
            if p.poll() is None:
                self.kill_host(node)  # the agents and their jobs' processes
        self.server.terminate()
        self.server.wait()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--deaths", type=int, default=5)
    ap.add_argument("--heartbeat", default="3s")
    ap.add_argument("--bin", default="./build/release/src/cli/reservoir")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rsv_reclaim_")
    script = os.path.join(work, "counter.sh")
    with open(script, "w") as f:
        f.write(COUNTER)
    os.chmod(script, 0o755)
    c = Cluster(a.bin, a.heartbeat, work)
    try:
        c.start_agent("n1")
        c.start_agent("n2")
        while len(c.call("GET", "/v1/nodes")) < 2:
            time.sleep(0.05)
        for t in ("a", "b"):
            c.call("POST", "/v1/tenants", {"name": t})
        c.call("POST", "/v1/reservations", {"tenant": "a", "pool": "h100", "gpus": 8,
                                             "duration": "4h"})
        high = c.submit("b", "spot", "3", script, "b-high")
        low = c.submit("b", "spot", "2", script, "b-low")
        c.job_event("JobRunning", high)
        c.job_event("JobRunning", low)
        reclaim = []
        for _ in range(a.runs):
            c.wait_output(low)  # B's job is counting (its SIGTERM handling is set up)
            mine = c.submit("a", "reserved", None, "exec sleep 600", "a-reserved")
            sub = c.job_event("JobSubmitted", mine)
            run = c.job_event("JobRunning", mine)
            reclaim.append((run["at_us"] - sub["at_us"]) / 1000)
            c.call("POST", "/v1/jobs/%d/cancel" % mine)
            c.job_event("JobRunning", low, c.call("GET", "/v1/jobs/%d" % low)["attempt"])
        print("reclaim latency (A submits -> A's job running), %d runs: p50 %.1f ms, p99 %.1f ms, "
              "max %.1f ms" % (len(reclaim), pct(reclaim, 50), pct(reclaim, 99), max(reclaim)))
        deaths = []
        for _ in range(a.deaths):
            c.wait_output(low)
            job = c.call("GET", "/v1/jobs/%d" % low)
            node, attempt = job["placement"][0]["node"], job["attempt"]
            t0 = time.time()
            c.kill_host(node)
            requeued = c.job_event("JobRequeued", low, attempt + 1)
            deaths.append(requeued["at_us"] / 1e6 - t0)
            c.start_agent(node)  # the host comes back
            c.job_event("JobRunning", low, attempt + 1)
        print("node death -> its job requeued (heartbeat timeout %s), %d runs: p50 %.2f s, "
              "max %.2f s" % (a.heartbeat, len(deaths), statistics.median(deaths), max(deaths)))
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
