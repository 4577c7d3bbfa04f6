#!/usr/bin/env python3
"""run.py — a Jepsen-style run of a real three-node inboxd cluster.

Builds a small network out of Linux network namespaces (jn1..jn3, one veth
each into the bridge jbr0 in the root namespace: nodes at 10.77.0.1..3, the
root namespace at 10.77.0.254), starts inboxd in each namespace, starts K
jepsen_worker processes in the root namespace, and while they run applies a
schedule of faults (the nemesis):

  kill       kill -9 a node (often the leader of a hot inbox's shard), then
             restart it on the same data directory
  pause      SIGSTOP a node, then SIGCONT
  isolate    cut one node from both peers, in both directions
  bridge     cut the two other nodes from each other; the bridge node still
             sees both halves
  oneway     one node cannot send to its peers (they can still send to it)

Partitions are made by the kernel, with iproute2 only: `ip route add
blackhole PEER/32` inside a node's namespace drops everything that node
sends to PEER; two such routes make a symmetric cut. Clients (in the root
namespace) always reach every node, as in Jepsen.

Each fault is logged with its start and end CLOCK_MONOTONIC times, the
clock the workers stamp operations with. Then everything is healed, the
workers run on for a quiet period (retrying their unknown enqueues), the
cluster must settle (`inboxctl cluster status` exits 0), a drain worker
reads every inbox to its end, and check.py judges the whole history.

  jepsen/run.py --short          ~2 minutes: kill, pause and partitions
  jepsen/run.py --time 600       a longer run

Exit: 0 valid history, 1 anomalies found, 2 harness failure. Needs root
(namespaces). Every wait is bounded; every process and namespace it makes
is removed on exit, on failure and on SIGINT/SIGTERM/SIGHUP; a run killed
with SIGKILL is cleaned up by the next run's start.
"""
import argparse
import fcntl
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check  # noqa: E402

NODES = (1, 2, 3)
BRIDGE = "jbr0"
NET = "10.77.0"
ROOT_IP = NET + ".254"
PORT = 7420
HOT_INBOX = "hot-0"
FAULT_KINDS = ("kill", "pause", "isolate", "bridge", "oneway", "transfer")
SHARDS = 8  # --cluster-shard-count of the nodes
# Pids of the workers (root namespace) of the current run, so a run that
# was SIGKILLed can have its workers ended by the next one; and a lock so
# two runs never share (and tear down) the same namespaces.
PIDS_FILE = "/tmp/jepsen-harness.pids"
LOCK_FILE = "/tmp/jepsen-harness.lock"
TMP_PREFIX = "/tmp/jepsen-run-"


def ns(i):
    return "jn%d" % i


def ip_of(i):
    return "%s.%d" % (NET, i)


def addr_of(i):
    return "%s:%d" % (ip_of(i), PORT)


def log(msg):
    print("[%8.3f] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


class HarnessError(Exception):
    pass


class Interrupted(Exception):
    pass


def sh(args, timeout=10, check_rc=True):
    """Runs a command with a bounded wait; returns CompletedProcess."""
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise HarnessError("%s: exit %d: %s" % (" ".join(args), r.returncode,
                                               r.stderr.strip()))
    return r


# ---- the network ----------------------------------------------------------


def stale_cleanup():
    """What a SIGKILLed run left behind: its workers (by recorded pid, and
    only if that pid still runs jepsen_worker), its node data."""
    try:
        with open(PIDS_FILE) as f:
            pids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pids = []
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"jepsen_worker" in f.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    try:
        os.unlink(PIDS_FILE)
    except OSError:
        pass
    net_teardown()
    for d in glob.glob(TMP_PREFIX + "*"):
        shutil.rmtree(d, ignore_errors=True)


def net_teardown():
    """Removes our namespaces, links and the processes inside the
    namespaces (which only this harness puts there). Idempotent."""
    for i in NODES:
        r = sh(["ip", "netns", "pids", ns(i)], check_rc=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for i in NODES:
        sh(["ip", "netns", "del", ns(i)], check_rc=False)
        sh(["ip", "link", "del", "jv%d" % i], check_rc=False)
    sh(["ip", "link", "del", BRIDGE], check_rc=False)


def net_setup():
    sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
    sh(["ip", "addr", "add", ROOT_IP + "/24", "dev", BRIDGE])
    sh(["ip", "link", "set", BRIDGE, "up"])
    for i in NODES:
        sh(["ip", "netns", "add", ns(i)])
        sh(["ip", "link", "add", "jv%d" % i, "type", "veth", "peer", "name",
            "eth0", "netns", ns(i)])
        sh(["ip", "link", "set", "jv%d" % i, "master", BRIDGE, "up"])
        sh(["ip", "-n", ns(i), "addr", "add", ip_of(i) + "/24", "dev", "eth0"])
        sh(["ip", "-n", ns(i), "link", "set", "eth0", "up"])
        sh(["ip", "-n", ns(i), "link", "set", "lo", "up"])


class Cuts:
    """Blackhole routes: (src, dst) in the set means src cannot send to
    dst."""

    def __init__(self):
        self.active = set()

    def cut(self, src, dst):
        if (src, dst) not in self.active:
            sh(["ip", "-n", ns(src), "route", "add", "blackhole",
                ip_of(dst) + "/32"])
            self.active.add((src, dst))

    def heal(self):
        for src, dst in sorted(self.active):
            sh(["ip", "-n", ns(src), "route", "del", "blackhole",
                ip_of(dst) + "/32"], check_rc=False)
        self.active.clear()
        # Belt and braces: no blackhole may survive a heal.
        for i in NODES:
            r = sh(["ip", "-n", ns(i), "route", "show", "type", "blackhole"],
                   check_rc=False)
            if r.stdout.strip():
                raise HarnessError("blackhole left in %s: %s" %
                                   (ns(i), r.stdout.strip()))


# ---- the cluster ----------------------------------------------------------


class Cluster:
    def __init__(self, bindir, tmp, rundir):
        self.inboxd = os.path.join(bindir, "server", "inboxd")
        self.inboxctl = os.path.join(bindir, "cli", "inboxctl")
        self.tmp = tmp
        self.rundir = rundir
        self.tls = os.path.join(tmp, "tls")
        self.procs = {}
        self.paused = set()
        self.logs = {}
        self.crashes = []

    def certs(self):
        os.makedirs(self.tls, exist_ok=True)
        ctl = self.inboxctl
        sh([ctl, "cert", "ca", "--dir", self.tls])
        for i in NODES:
            sh([ctl, "cert", "node", "--name", "n%d" % i, "--host", ip_of(i),
                "--dir", self.tls])
        sh([ctl, "cert", "client", "--name", "admin", "--role", "admin",
            "--dir", self.tls])
        sh([ctl, "cert", "client", "--name", "fe", "--role", "frontend",
            "--dir", self.tls])

    def start(self, i):
        data = os.path.join(self.tmp, "n%d" % i)
        os.makedirs(data, exist_ok=True)
        members = ",".join("%d@%s" % (j, addr_of(j)) for j in NODES)
        lf = open(os.path.join(self.rundir, "n%d.log" % i), "a")
        self.logs[i] = lf
        cmd = ["ip", "netns", "exec", ns(i), self.inboxd,
               "--node-id", str(i), "--node-listen", addr_of(i),
               "--node-metrics", "%s:%d" % (ip_of(i), PORT + 1),
               "--node-data-dir", data, "--cluster-members", members,
               "--cluster-shard-count", str(SHARDS),
               "--raft-tick", "50ms",
               "--store-checkpoint-interval", "1s",
               "--wal-segment-bytes", "8MiB",
               "--tls-ca", os.path.join(self.tls, "ca.crt"),
               "--tls-cert", os.path.join(self.tls, "n%d.crt" % i),
               "--tls-key", os.path.join(self.tls, "n%d.key" % i)]
        # `ip netns exec` execs inboxd: the pid is inboxd's.
        self.procs[i] = subprocess.Popen(cmd, stdout=lf, stderr=lf,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def kill(self, i):
        p = self.procs.get(i)
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        self.paused.discard(i)

    def pause(self, i):
        self.procs[i].send_signal(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i):
        if i in self.paused:
            self.procs[i].send_signal(signal.SIGCONT)
            self.paused.discard(i)

    def alive(self, i):
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def check_crashes(self, expected_down):
        """A node that exited without being killed is a finding."""
        for i, p in self.procs.items():
            if i not in expected_down and p.poll() is not None:
                if i not in [c["node"] for c in self.crashes]:
                    self.crashes.append({"node": i, "rc": p.returncode,
                                         "t": time.monotonic_ns()})
                    log("node %d EXITED by itself (rc %s)" % (i, p.returncode))

    def stop_all(self):
        for i in list(self.procs):
            self.resume(i)
            p = self.procs[i]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for lf in self.logs.values():
            lf.close()

    def ctl(self, args, timeout_ms=2000):
        cmd = [self.inboxctl] + args
        for i in NODES:
            cmd += ["--addr", addr_of(i)]
        cmd += ["--ca", os.path.join(self.tls, "ca.crt"),
                "--cert", os.path.join(self.tls, "admin.crt"),
                "--key", os.path.join(self.tls, "admin.key"),
                "--timeout", str(timeout_ms)]
        return sh(cmd, timeout=timeout_ms / 1000 + 10, check_rc=False)

    def leader_of(self, inbox):
        r = self.ctl(["route", inbox, "--json"])
        try:
            lid = json.loads(r.stdout)["inboxes"][0]["leader_id"]
            return lid if lid in NODES else None
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def wait_settled(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r = self.ctl(["cluster", "status", "--json"], timeout_ms=3000)
            if r.returncode == 0:
                return True
            time.sleep(0.3)
        return False


# ---- the nemesis ----------------------------------------------------------


class Nemesis:
    def __init__(self, cluster, rng, faults_path):
        self.c = cluster
        self.rng = rng
        self.cuts = Cuts()
        self.down = set()
        self.storm = None
        self.faults = []
        self.faults_path = faults_path

    def target(self, prefer_leader):
        if prefer_leader:
            lead = self.c.leader_of(HOT_INBOX)
            if lead is not None:
                return lead, "leader of %s" % HOT_INBOX
        return self.rng.choice(NODES), "random"

    def apply(self, kind):
        """Starts a fault; returns its record (ended by heal()). The start
        is stamped after the target is chosen, just before the action."""
        n, why = self.target(self.rng.random() < 0.6)
        rec = {"kind": kind, "node": n, "why": why}
        others = [m for m in NODES if m != n]
        rec["start"] = time.monotonic_ns()
        if kind == "kill":
            self.c.kill(n)
            self.down.add(n)
        elif kind == "pause":
            self.c.pause(n)
        elif kind == "isolate":
            for m in others:
                self.cuts.cut(n, m)
                self.cuts.cut(m, n)
            rec["shape"] = "majority %s / minority [%d]" % (others, n)
        elif kind == "bridge":
            a, b = others
            self.cuts.cut(a, b)
            self.cuts.cut(b, a)
            rec["shape"] = "%d and %d cut; %d sees both" % (a, b, n)
        elif kind == "oneway":
            for m in others:
                self.cuts.cut(n, m)
            rec["shape"] = ("%d cannot send to its peers; it still hears them"
                            % n)
        elif kind == "transfer":
            # A leadership-transfer storm: every 0.2 s a random shard's
            # leader is asked to hand over to another voter (inboxctl
            # cluster transfer-leader), for the fault's whole window.
            stop = threading.Event()
            rng = random.Random(self.rng.random())
            done = [0, 0]  # transfers seen through, asked

            def storm():
                while not stop.is_set():
                    r = self.c.ctl(["cluster", "transfer-leader",
                                    str(rng.randrange(SHARDS)), "--wait",
                                    "1"], timeout_ms=1500)
                    done[1] += 1
                    done[0] += r.returncode == 0
                    stop.wait(0.2)

            t = threading.Thread(target=storm, daemon=True)
            t.start()
            self.storm = (stop, t, done)
            rec["node"] = 0
            rec["why"] = "every shard"
            rec["shape"] = "leadership of a random shard moved every 0.2 s"
        else:
            raise HarnessError("unknown fault " + kind)
        log("fault %s" % json.dumps(rec))
        return rec

    def heal(self, rec):
        kind = rec["kind"]
        if kind == "kill":
            self.c.start(rec["node"])
            self.down.discard(rec["node"])
        elif kind == "pause":
            self.c.resume(rec["node"])
        elif kind == "transfer":
            stop, t, done = self.storm
            stop.set()
            t.join(timeout=10)
            self.storm = None
            rec["shape"] += "; %d of %d transfers seen through" % (done[0],
                                                                  done[1])
        else:
            self.cuts.heal()
        rec["end"] = time.monotonic_ns()
        self.faults.append(rec)
        with open(self.faults_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        log("healed %s on node %s" % (kind, rec.get("node")))

    def heal_all(self):
        if self.storm is not None:
            self.storm[0].set()
            self.storm[1].join(timeout=10)
            self.storm = None
        self.cuts.heal()
        for i in NODES:
            self.c.resume(i)
            if not self.c.alive(i):
                self.c.start(i)
        self.down.clear()


def sleep_watching(seconds, cluster, nemesis, workers):
    """Sleeps in small steps, noticing nodes that exit by themselves and
    workers that die early."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cluster.check_crashes(nemesis.down)
        for w in workers:
            if w.poll() is not None and w.returncode != 0:
                raise HarnessError("worker exited %d early" % w.returncode)
        time.sleep(min(0.1, max(0, end - time.monotonic())))


def schedule(rng, kinds, nemesis_s, dur, gap):
    """The fault order: every kind once first (so a short run has kill,
    pause and partitions), then random picks, until nemesis_s is used."""
    first = list(kinds)
    rng.shuffle(first)
    # Put one of each basic family up front.
    order = sorted(first, key=lambda k: {"kill": 0, "isolate": 1,
                                         "pause": 2}.get(k, 3))
    plan, t = [], 0.0
    while True:
        kind = order[len(plan)] if len(plan) < len(order) else rng.choice(kinds)
        d = rng.uniform(*dur)
        if t + d > nemesis_s:
            break
        plan.append((kind, d))
        t += d + rng.uniform(*gap)
    return plan


# ---- main -----------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true",
                    help="a run of about two minutes (the default length)")
    ap.add_argument("--time", type=float, default=None,
                    help="seconds of client load (faults stop QUIET s before)")
    ap.add_argument("--quiet", type=float, default=8.0,
                    help="seconds of load after the last fault is healed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--hot", type=int, default=3)
    ap.add_argument("--cold", type=int, default=60)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--faults", default="kill,pause,isolate,bridge,oneway")
    ap.add_argument("--mix", default="40,30,10,10,10",
                    help="op weights: enqueue,fetch,ack,seen_set,seen_get")
    ap.add_argument("--bin", default=os.environ.get("JEPSEN_BIN", "/tmp/b-jep"),
                    help="build tree with server/inboxd, cli/inboxctl, "
                         "jepsen/jepsen_worker")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--keep-data", action="store_true")
    a = ap.parse_args()
    if a.time is None or a.short:
        a.time = 60.0  # --short: 60 s of load, about 70 s in all
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "big")
    bad = set(a.faults.split(",")) - set(FAULT_KINDS) - {""}
    if bad:
        ap.error("unknown faults %s (known: %s)" % (sorted(bad),
                                                    ",".join(FAULT_KINDS)))
    if a.time < a.quiet + 10:
        ap.error("--time must leave 10 s of faults before --quiet")
    return a


def on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


def run(a, rundir, tmp):
    rng = random.Random(a.seed)
    worker_bin = os.path.join(a.bin, "jepsen", "jepsen_worker")
    for b in (worker_bin, os.path.join(a.bin, "server", "inboxd"),
              os.path.join(a.bin, "cli", "inboxctl")):
        if not os.access(b, os.X_OK):
            raise HarnessError("missing %s (build with cmake first)" % b)
    net_setup()
    c = Cluster(a.bin, tmp, rundir)
    c.certs()
    for i in NODES:
        c.start(i)
    if not c.wait_settled(30):
        raise HarnessError("cluster did not come up within 30 s")
    log("cluster up")
    faults_path = os.path.join(rundir, "faults.jsonl")
    nem = Nemesis(c, rng, faults_path)
    run_state = {"cluster": c, "nemesis": nem, "workers": []}
    RUN_STATE.update(run_state)

    t_start = time.monotonic_ns()
    workers = []
    for k in range(a.workers):
        cmd = [worker_bin, "--seconds", str(a.time), "--seed", str(a.seed),
               "--worker", str(k), "--threads", str(a.threads),
               "--hot", str(a.hot), "--cold", str(a.cold),
               "--timeout-ms", "2000", "--mix", a.mix,
               "--out", os.path.join(rundir, "history-w%d.jsonl" % k),
               "--ca", os.path.join(c.tls, "ca.crt"),
               "--cert", os.path.join(c.tls, "fe.crt"),
               "--key", os.path.join(c.tls, "fe.key")]
        for i in NODES:
            cmd += ["--seed-addr", addr_of(i)]
        wl = open(os.path.join(rundir, "worker%d.log" % k), "w")
        workers.append(subprocess.Popen(cmd, stdout=wl, stderr=wl,
                                        stdin=subprocess.DEVNULL,
                                        start_new_session=True))
    RUN_STATE["workers"] = workers
    with open(PIDS_FILE, "w") as f:
        f.write(" ".join(str(w.pid) for w in workers) + "\n")
    log("%d workers x %d threads for %.0f s (seed %d)" %
        (a.workers, a.threads, a.time, a.seed))

    kinds = [k for k in a.faults.split(",") if k]
    sleep_watching(3, c, nem, workers)  # a fault-free start
    nemesis_s = a.time - a.quiet - 3
    plan = schedule(rng, kinds, nemesis_s, (3.0, 6.0), (2.0, 4.0))
    log("nemesis plan: %s" % ", ".join("%s %.1fs" % p for p in plan))
    for kind, d in plan:
        rec = nem.apply(kind)
        sleep_watching(d, c, nem, workers)
        nem.heal(rec)
        sleep_watching(rng.uniform(2.0, 4.0), c, nem, workers)
        if time.monotonic_ns() - t_start > (a.time - a.quiet) * 1e9:
            break
    nem.heal_all()
    log("all healed; quiet period")
    for w in workers:
        left = a.time + 30 - (time.monotonic_ns() - t_start) / 1e9
        try:
            w.wait(timeout=max(1, left))
        except subprocess.TimeoutExpired:
            raise HarnessError("worker did not finish in time")
        if w.returncode != 0:
            raise HarnessError("worker exited %d" % w.returncode)
    c.check_crashes(set())
    log("workers done")
    if not c.wait_settled(60):
        raise HarnessError("cluster did not settle within 60 s of the heal")
    log("cluster settled; draining")
    dcmd = [worker_bin, "--drain", "--worker", "99", "--threads", "4",
            "--hot", str(a.hot), "--cold", str(a.cold), "--timeout-ms", "5000",
            "--out", os.path.join(rundir, "history-drain.jsonl"),
            "--ca", os.path.join(c.tls, "ca.crt"),
            "--cert", os.path.join(c.tls, "fe.crt"),
            "--key", os.path.join(c.tls, "fe.key")]
    for i in NODES:
        dcmd += ["--seed-addr", addr_of(i)]
    r = sh(dcmd, timeout=120, check_rc=False)
    if r.returncode != 0:
        raise HarnessError("drain failed: %s" % r.stderr.strip())
    t_end = time.monotonic_ns()
    c.check_crashes(set())
    return c, nem, t_start, t_end


RUN_STATE = {}


def cleanup():
    c = RUN_STATE.get("cluster")
    nem = RUN_STATE.get("nemesis")
    for w in RUN_STATE.get("workers", []):
        if w.poll() is None:
            w.kill()
            try:
                w.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    if nem is not None:
        try:
            nem.cuts.heal()
        except Exception:  # the namespaces go next anyway
            pass
    if c is not None:
        try:
            c.stop_all()
        except Exception as e:
            log("stopping nodes: %s" % e)
    net_teardown()
    left = [p.pid for p in RUN_STATE.get("workers", []) if p.poll() is None]
    if c is not None:
        left += [p.pid for p in c.procs.values() if p.poll() is None]
    log("processes still running after cleanup: %s" % (left or "none"))
    try:
        os.unlink(PIDS_FILE)
    except OSError:
        pass


def main():
    a = parse_args()
    if os.geteuid() != 0:
        print("run.py needs root (network namespaces)", file=sys.stderr)
        return 2
    lock = open(LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("another run.py is running (%s is locked)" % LOCK_FILE,
              file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-%d" % a.seed
    rundir = os.path.join(a.results, run_id)
    os.makedirs(rundir, exist_ok=True)
    tmp = TMP_PREFIX + run_id
    log("run %s in %s" % (run_id, rundir))
    rc = 2
    harness_error = None
    try:
        stale_cleanup()  # leftovers of a run that was SIGKILLed
        os.makedirs(tmp, exist_ok=True)
        c, nem, t_start, t_end = run(a, rundir, tmp)
        rc = 0
    except Exception as e:  # noqa: BLE001 — any failure is a harness failure
        harness_error = "%s: %s" % (type(e).__name__, e)
        log("HARNESS FAILURE: " + harness_error)
    finally:
        # Cleanup must finish even if a second signal arrives.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        cleanup()
        if not a.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        log("cleaned up (namespaces, bridge, processes)")
    if harness_error is not None:
        with open(os.path.join(rundir, "harness-error.txt"), "w") as f:
            f.write(harness_error + "\n")
        return 2
    crashes = RUN_STATE["cluster"].crashes
    res = check.check_run(rundir, extra={
        "seed": a.seed, "time_s": a.time, "workers": a.workers,
        "threads": a.threads, "wall_s": (t_end - t_start) / 1e9,
        "node_crashes": crashes})
    print(res["summary_text"])
    if crashes:
        print("nodes exited by themselves: %s" % crashes)
        return 1
    return 0 if res["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
