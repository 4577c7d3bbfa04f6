#!/usr/bin/env python3
"""run.py — a Jepsen-style run of a real three- or five-node inboxd cluster.

Builds a small network out of Linux network namespaces (jn1..jnN, one veth
each into the bridge jbr0 in the root namespace: nodes at 10.77.0.1..N, the
root namespace at 10.77.0.254), starts inboxd in each namespace, starts K
jepsen_worker processes in the root namespace, and while they run applies a
schedule of faults (the nemesis):

  kill       kill -9 a node (often the leader of a hot inbox's shard), then
             restart it on the same data directory
  crash      kill -9 a majority one node at a time, the target last, then
             restart them all
  power      a power cut of a majority or of every node at once: kill -9,
             then erase what their WALs had not synced (powerfail.c)
  pause      SIGSTOP a node, then SIGCONT
  isolate    cut one node from both peers, in both directions
  bridge     cut the two other nodes from each other; the bridge node still
             sees both halves
  oneway     one node cannot send to its peers (they can still send to it)
  halves     majority / minority halves, the target in the minority
  transfer   a leadership-transfer storm (inboxctl cluster transfer-leader)
  truncate   kill -9 a node, cut bytes off the tail of its WAL, restart it
  bitflip    kill -9 a node, flip bits in the tail of its WAL, restart it
  skew       jump a node's wall clock by seconds (libfaketime)
  member     remove a node from the cluster, wipe it, join it again, all
             under load (inboxctl cluster remove-node / add-node)

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

NODES = (1, 2, 3)  # --nodes 3 or 5 (set by main)
MAX_NODES = 5  # what a cleanup looks for, whatever --nodes was
BRIDGE = "jbr0"
NET = "10.77.0"
ROOT_IP = NET + ".254"
PORT = 7420
HOT_INBOX = "hot-0"
FAULT_KINDS = ("kill", "crash", "power", "pause", "isolate", "bridge",
               "oneway",
               "halves",
               "transfer", "truncate", "bitflip", "skew", "member")
DEFAULT_FAULTS = "kill,pause,isolate,bridge,oneway"
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1")
WAL_SEG_HEADER_BYTES = 64  # engine/wal.c SEG_HEADER_BYTES
POWERFAIL_SLOT_BYTES = 256  # jepsen/powerfail.c
SECTOR_BYTES = 512
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
    every = range(1, MAX_NODES + 1)
    for i in every:
        r = sh(["ip", "netns", "pids", ns(i)], check_rc=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for i in every:
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
        self.joined = set()  # nodes re-added by `member`: they start joining
        self.faketime = None  # libfaketime's path when `skew` is on
        self.powerfail = None  # powerfail.c's library when `power` is on

    def data_dir(self, i):
        return os.path.join(self.tmp, "n%d" % i)

    def power_file(self, i):
        return os.path.join(self.tmp, "n%d.powerfail" % i)

    def clock_file(self, i):
        return os.path.join(self.tmp, "n%d.faketime" % i)

    def set_clock(self, i, offset_s):
        """The wall-clock offset libfaketime gives node i (re-read by the
        node within a second: FAKETIME_CACHE_DURATION)."""
        tmpf = self.clock_file(i) + ".tmp"
        with open(tmpf, "w") as f:
            f.write("%+.3fs\n" % offset_s)
        os.replace(tmpf, self.clock_file(i))

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
        data = self.data_dir(i)
        os.makedirs(data, exist_ok=True)
        # A node re-added by `member` joins: the members the cluster was
        # created with, without itself (docs/node.md, "Joining").
        members = ",".join("%d@%s" % (j, addr_of(j)) for j in NODES
                           if j != i or i not in self.joined)
        if i in self.logs:
            self.logs[i].close()
        lf = open(os.path.join(self.rundir, "n%d.log" % i), "a")
        self.logs[i] = lf
        env = None
        preload = []
        if self.powerfail:
            preload.append(self.powerfail)
            env = dict(os.environ, POWERFAIL_STATE=self.power_file(i))
        if self.faketime:
            if not os.path.exists(self.clock_file(i)):
                self.set_clock(i, 0.0)
            preload.append(self.faketime)
            # Only the wall clock is skewed: monotonic time (raft's ticks,
            # timeouts) runs true, as on a host whose NTP steps the clock.
            env = dict(env or os.environ,
                       FAKETIME_TIMESTAMP_FILE=self.clock_file(i),
                       FAKETIME_CACHE_DURATION="1",
                       FAKETIME_DONT_FAKE_MONOTONIC="1",
                       # Its pthread_cond_timedwait "fix" for monotonic
                       # condvars cuts throughput five-fold here, and
                       # monotonic time is not faked anyway.
                       FAKETIME_FORCE_MONOTONIC_FIX="0")
        if preload:
            env["LD_PRELOAD"] = ":".join(preload)
        cmd = ["ip", "netns", "exec", ns(i), self.inboxd,
               "--node-id", str(i), "--node-listen", addr_of(i),
               "--node-metrics", "%s:%d" % (ip_of(i), PORT + 1),
               "--node-data-dir", data, "--cluster-members", members,
               "--cluster-join", "1" if i in self.joined else "0",
               "--cluster-shard-count", str(SHARDS),
               "--raft-tick", "50ms",
               "--store-checkpoint-interval", "1s",
               "--wal-segment-bytes", "8MiB",
               "--tls-ca", os.path.join(self.tls, "ca.crt"),
               "--tls-cert", os.path.join(self.tls, "n%d.crt" % i),
               "--tls-key", os.path.join(self.tls, "n%d.key" % i)]
        # `ip netns exec` execs inboxd: the pid is inboxd's.
        self.procs[i] = subprocess.Popen(cmd, stdout=lf, stderr=lf,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)

    def start_watched(self, i, seconds=3.0):
        """Starts node i and watches it for `seconds`: None if it is still
        running, else (exit code, the last lines of its log)."""
        self.start(i)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            p = self.procs[i]
            if p.poll() is not None:
                self.logs[i].flush()
                with open(os.path.join(self.rundir, "n%d.log" % i)) as f:
                    lines = f.read().splitlines()
                # The reason: the last error with a detail, if any.
                errs = [x for x in lines if "level=error" in x]
                errs = [x for x in errs if 'detail="' in x] or errs or \
                    lines[-1:] or ["no log"]
                why = errs[-1]
                if 'detail="' in why:
                    why = why.split('detail="', 1)[1].split('"', 1)[0]
                return p.returncode, why
            time.sleep(0.05)
        return None

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

    def ctl(self, args, timeout_ms=2000, wait_s=0):
        """inboxctl as admin against every node; wait_s: how long the
        command itself may wait (its --wait)."""
        cmd = [self.inboxctl] + args
        for i in NODES:
            cmd += ["--addr", addr_of(i)]
        cmd += ["--ca", os.path.join(self.tls, "ca.crt"),
                "--cert", os.path.join(self.tls, "admin.crt"),
                "--key", os.path.join(self.tls, "admin.key"),
                "--timeout", str(timeout_ms)]
        return sh(cmd, timeout=timeout_ms / 1000 + wait_s + 10,
                  check_rc=False)

    def leader_of(self, inbox):
        r = self.ctl(["route", inbox, "--json"])
        try:
            lid = json.loads(r.stdout)["inboxes"][0]["leader_id"]
            return lid if lid in NODES else None
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def shard_applied(self):
        """{shard: {node: applied}} from `cluster status --shards`, or None
        when a node is unreachable."""
        r = self.ctl(["cluster", "status", "--shards", "--json"],
                     timeout_ms=3000)
        try:
            st = json.loads(r.stdout)
            return {sh_["shard"]: {int(k): v for k, v in
                                   sh_["applied"].items()}
                    for sh_ in st["shards"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def wait_caught_up(self, i, seconds):
        """Seconds until node i has applied, in every shard, what the most
        advanced replica had applied when this was called; None if it has
        not within `seconds`."""
        t0 = time.monotonic()
        goal = None
        while time.monotonic() - t0 < seconds:
            m = self.shard_applied()
            if m and goal is None:
                goal = {s_: max(v.values()) for s_, v in m.items() if v}
            if m and goal and all(m.get(s_, {}).get(i, -1) >= g
                                  for s_, g in goal.items()):
                return time.monotonic() - t0
            time.sleep(0.2)
        return None

    def wait_converged(self, seconds):
        """Waits (no writes running) until every node has applied the same
        index in every shard; returns that map or None."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = self.shard_applied()
            if m and all(len(v) == len(NODES) and len(set(v.values())) == 1
                         for v in m.values()):
                return m
            time.sleep(0.3)
        return None

    def wait_settled(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r = self.ctl(["cluster", "status", "--json"], timeout_ms=3000)
            if r.returncode == 0:
                return True
            time.sleep(0.3)
        return False


# ---- a stopped node's WAL --------------------------------------------------


def wal_tail(data_dir):
    """The newest WAL segment of a node and the end of its written data
    (segments are preallocated with zeros: the last nonzero byte)."""
    segs = sorted(glob.glob(os.path.join(data_dir, "wal", "wal-*.seg")))
    if not segs:
        return None, 0
    with open(segs[-1], "rb") as f:
        img = f.read()
    return segs[-1], len(img.rstrip(b"\0"))


def wal_damage(path, end, kind, rng):
    """Damages the last `end` bytes' tail of a stopped node's segment:
    truncate cuts 1 B-64 KiB off the end of its data (a file shortened
    by a lost write), bitflip flips 1-4 bits in its last 64 KiB. Returns
    what was done."""
    base = os.path.basename(path)
    room = end - WAL_SEG_HEADER_BYTES
    if room <= 0:
        return "%s holds no records; left alone" % base
    if kind == "truncate":
        k = rng.randint(1, min(65536, room))
        os.truncate(path, end - k)
        return "%s cut from %d to %d bytes (-%d)" % (base, end, end - k, k)
    flips = []
    with open(path, "r+b") as f:
        for _ in range(rng.randint(1, 4)):
            off = rng.randrange(max(WAL_SEG_HEADER_BYTES, end - 65536), end)
            bit = rng.randrange(8)
            f.seek(off)
            b = f.read(1)[0] ^ (1 << bit)
            f.seek(off)
            f.write(bytes([b]))
            flips.append("%d.%d" % (off, bit))
        f.flush()
        os.fsync(f.fileno())
    return "%s: bits flipped at %s (data ends at %d)" % (base,
                                                        " ".join(flips), end)


def power_cut(data_dir, state_path, rng):
    """After node's kill: erase from each WAL segment what it had not
    synced (powerfail.c's record), keeping a random whole number of the
    un-synced 512-byte sectors, or none, as a disk may after a power cut.
    Returns the bytes erased."""
    synced = {}
    try:
        with open(state_path, "rb") as f:
            img = f.read()
    except OSError:
        img = b""
    for o in range(0, len(img) - POWERFAIL_SLOT_BYTES + 1,
                   POWERFAIL_SLOT_BYTES):
        slot = img[o:o + POWERFAIL_SLOT_BYTES]
        end = int.from_bytes(slot[:8], "little")
        path = slot[8:].split(b"\0", 1)[0].decode(errors="replace")
        if end and path:
            synced[path] = max(end, synced.get(path, 0))
    erased = 0
    for seg in sorted(glob.glob(os.path.join(data_dir, "wal", "wal-*.seg"))):
        if seg not in synced:
            continue  # not synced by the process that died: left whole
        with open(seg, "r+b") as f:
            data_end = len(f.read().rstrip(b"\0"))
            lo = synced[seg]
            if data_end <= lo:
                continue
            sectors = (data_end - lo) // SECTOR_BYTES
            keep = 0 if rng.random() < 0.5 else \
                rng.randint(0, sectors) * SECTOR_BYTES
            cut = lo + keep
            if cut >= data_end:
                continue
            f.seek(cut)
            f.write(b"\0" * (data_end - cut))
            f.flush()
            os.fsync(f.fileno())
            erased += data_end - cut
    return erased


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
        self.findings = []  # what the nemesis itself saw go wrong

    def finding(self, rec, what):
        self.findings.append({"kind": rec["kind"], "node": rec["node"],
                              "what": what, "t": time.monotonic_ns()})
        log("FINDING (%s, node %s): %s" % (rec["kind"], rec["node"], what))

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
        elif kind == "crash":
            # A majority dies one by one, 0.5-1.5 s apart, the target (often
            # a leader) last: by then leaders have kept log entries for the
            # dead followers across a checkpoint, so restarts replay
            # entries their stores already hold.
            victims = self.rng.sample(others, len(NODES) // 2) + [n]
            for k, v in enumerate(victims):
                if k:
                    time.sleep(self.rng.uniform(0.5, 1.5))
                self.c.kill(v)
                self.down.add(v)
            rec["victims"] = victims
            rec["shape"] = "killed %s in that order" % victims
        elif kind == "power":
            # Every node, or a majority with the target, loses power at
            # once: frozen together, killed, and their WALs lose what was
            # not synced. Acknowledged writes were synced on a quorum, so
            # none may be lost.
            if self.rng.random() < 0.5:
                victims = list(NODES)
            else:
                victims = self.rng.sample(others, len(NODES) // 2) + [n]
            for v in victims:
                self.c.pause(v)
            for v in victims:
                self.c.kill(v)
                self.down.add(v)
            lost = {v: power_cut(self.c.data_dir(v), self.c.power_file(v),
                                 self.rng) for v in victims}
            rec["victims"] = victims
            rec["shape"] = "power cut on %s; un-synced WAL bytes erased: %s" % (
                sorted(victims), ", ".join("n%d %d" % kv
                                           for kv in sorted(lost.items())))
        elif kind == "pause":
            self.c.pause(n)
        elif kind == "isolate":
            for m in others:
                self.cuts.cut(n, m)
                self.cuts.cut(m, n)
            rec["shape"] = "majority %s / minority [%d]" % (others, n)
        elif kind == "halves":
            # The target and (N-1)/2 - 1 others form the minority.
            minority = sorted([n] + self.rng.sample(
                others, (len(NODES) - 1) // 2 - 1))
            majority = [m for m in NODES if m not in minority]
            for a in minority:
                for b in majority:
                    self.cuts.cut(a, b)
                    self.cuts.cut(b, a)
            rec["shape"] = "majority %s / minority %s" % (majority, minority)
        elif kind == "bridge":
            # The others in two halves that cannot see each other; the
            # target (the bridge) sees both.
            half = list(others)
            self.rng.shuffle(half)
            a, b = sorted(half[:len(half) // 2]), sorted(half[len(half) // 2:])
            for x in a:
                for y in b:
                    self.cuts.cut(x, y)
                    self.cuts.cut(y, x)
            rec["shape"] = "%s and %s cut; %d sees both" % (a, b, n)
        elif kind in ("truncate", "bitflip"):
            # Kill the node, damage the tail of its newest WAL segment
            # (kept aside first), restart it at the heal.
            self.c.kill(n)
            self.down.add(n)
            seg, end = wal_tail(self.c.data_dir(n))
            if seg is None:
                rec["shape"] = "no WAL segment; left alone"
            else:
                rec["backup"] = (seg, seg + ".jepsen-orig")
                shutil.copyfile(seg, seg + ".jepsen-orig")
                rec["shape"] = wal_damage(seg, end, kind, self.rng)
        elif kind == "skew":
            off = self.rng.choice((-1, 1)) * self.rng.uniform(0.5, 60.0)
            self.c.set_clock(n, off)
            rec["shape"] = "wall clock %+.1f s" % off
        elif kind == "member":
            # Remove the node under load, stop it, wipe its data; the heal
            # starts it empty, joining, and adds it back.
            r = self.c.ctl(["cluster", "remove-node", str(n), "--wait", "30"],
                           wait_s=30)
            rec["shape"] = "removed"
            if r.returncode != 0:
                self.finding(rec, "cluster remove-node %d failed (exit %d): %s"
                             % (n, r.returncode, r.stderr.strip()[-300:]))
                rec["shape"] = "remove failed"
            self.c.kill(n)
            self.down.add(n)
            shutil.rmtree(self.c.data_dir(n), ignore_errors=True)
            self.c.joined.add(n)
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

    def restart_damaged(self, rec):
        """Restarts a node whose WAL tail was damaged. It may rightly refuse
        (a checksum failure before the tail is corruption, docs/storage.md):
        then the kept segment is put back, as an operator would restore
        it, and it must start."""
        n = rec["node"]
        res = self.c.start_watched(n)
        if res is None:
            rec["outcome"] = "restarted on the damaged log"
        else:
            rec["outcome"] = "refused to start (exit %d: %s)" % res
            seg, orig = rec["backup"]
            shutil.copyfile(orig, seg)
            res = self.c.start_watched(n)
            rec["outcome"] += "; segment restored, " + (
                "restarted" if res is None else "STILL FAILS")
            if res is not None:
                self.finding(rec, "node %d does not start on its restored "
                             "log (exit %d: %s)" % (n, res[0], res[1]))
        if "backup" in rec:
            os.unlink(rec.pop("backup")[1])
        self.catch_up(rec)

    def catch_up(self, rec):
        """A node back from damage or re-added must catch up: within 30 s
        it must reach what the most advanced replica had applied when it
        came back, or that is a finding (a stuck follower)."""
        n = rec["node"]
        if not self.c.alive(n):
            return
        dt = self.c.wait_caught_up(n, 30.0)
        if dt is None:
            rec["outcome"] = rec.get("outcome", "") + "; NOT caught up in 30 s"
            self.finding(rec, "node %d did not catch up within 30 s" % n)
        else:
            rec["outcome"] = rec.get("outcome", "") + \
                "; caught up in %.1f s" % dt

    def heal(self, rec):
        kind = rec["kind"]
        if kind == "kill":
            self.c.start(rec["node"])
            self.down.discard(rec["node"])
        elif kind in ("crash", "power"):
            for v in rec["victims"]:
                self.c.start(v)
                self.down.discard(v)
        elif kind in ("truncate", "bitflip"):
            self.restart_damaged(rec)
            self.down.discard(rec["node"])
        elif kind == "skew":
            self.c.set_clock(rec["node"], 0.0)
        elif kind == "member":
            n = rec["node"]
            self.c.start(n)
            self.down.discard(n)
            r = self.c.ctl(["cluster", "add-node", str(n), addr_of(n),
                            "--wait", "60"], wait_s=60)
            rec["outcome"] = "added back" if r.returncode == 0 else \
                "add-node failed"
            if r.returncode != 0:
                self.finding(rec, "cluster add-node %d failed (exit %d): %s"
                             % (n, r.returncode, r.stderr.strip()[-300:]))
            else:
                self.catch_up(rec)
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
        if "outcome" in rec:
            rec["shape"] = "%s; %s" % (rec.get("shape", ""), rec["outcome"])
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
            if self.c.faketime:
                self.c.set_clock(i, 0.0)
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
    ap.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    ap.add_argument("--faults", default=DEFAULT_FAULTS,
                    help="comma-separated, of: %s; or all" %
                         ",".join(FAULT_KINDS))
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
    if a.faults == "all":
        a.faults = ",".join(FAULT_KINDS)
    bad = set(a.faults.split(",")) - set(FAULT_KINDS) - {""}
    if bad:
        ap.error("unknown faults %s (known: %s, or all)" %
                 (sorted(bad), ",".join(FAULT_KINDS)))
    a.powerfail = None
    if "power" in a.faults.split(","):
        a.powerfail = os.path.join(os.path.abspath(a.bin), "jepsen",
                                   "libinbox_powerfail.so")
        if not os.path.exists(a.powerfail):
            ap.error("--faults power needs %s (build the inbox_powerfail "
                     "target)" % a.powerfail)
    a.faketime = None
    if "skew" in a.faults.split(","):
        a.faketime = next((p for p in FAKETIME_LIBS if os.path.exists(p)),
                          None)
        if a.faketime is None:
            ap.error("--faults skew needs libfaketime (apt-get install "
                     "faketime); looked for %s" % ", ".join(FAKETIME_LIBS))
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
    c.faketime = a.faketime
    c.powerfail = a.powerfail
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
    verify_replicas(c, rundir)
    return c, nem, t_start, t_end


def verify_replicas(c, rundir):
    """The white-box check: once every node has applied the same index in
    every shard, freeze them all at once (SIGSTOP, then SIGKILL: no
    election can add an entry in between), and read each node's store with
    `inboxctl store verify`. check.py compares them (replicas.json)."""
    path = os.path.join(rundir, "replicas.json")
    conv = None
    why = "the nodes did not converge on one applied index per shard " \
          "within 30 s of the drain"
    for _ in range(3):
        conv = c.wait_converged(30)
        if conv is None:
            break
        # A store shows its last checkpoint (docs/store.md): checkpoint
        # every node, then make sure nothing was applied since.
        for i in NODES:
            r = c.ctl(["snapshot", "--node", str(i)], timeout_ms=10000)
            if r.returncode != 0:
                raise HarnessError("inboxctl snapshot --node %d: exit %d: %s"
                                   % (i, r.returncode, r.stderr.strip()))
        if c.wait_converged(10) == conv:
            break
        why = "the cluster kept applying entries after it converged"
        conv = None
    if conv is None:
        # A healed, quiet cluster that does not converge is a finding (a
        # replica stuck or diverged), not a harness failure: the history
        # is still checked.
        with open(path, "w") as f:
            json.dump({"converged": None, "error": why,
                       "status": c.shard_applied(), "nodes": {}}, f, indent=1)
        log("replicas NOT verified: " + why)
        return
    for i in NODES:
        c.pause(i)
    for i in NODES:
        c.kill(i)
    rep = {"converged": {str(s_): min(v.values()) for s_, v in conv.items()},
           "nodes": {}}
    for i in NODES:
        r = sh([c.inboxctl, "store", "verify", c.data_dir(i), "--json"],
               timeout=60, check_rc=False)
        try:
            rep["nodes"][str(i)] = json.loads(r.stdout)
        except ValueError:
            rep["nodes"][str(i)] = {"error": "exit %d" % r.returncode,
                                    "message": (r.stdout + r.stderr)[-500:]}
    with open(path, "w") as f:
        json.dump(rep, f, indent=1)
    log("replicas verified (%d shards converged)" % len(conv))


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
    global NODES
    a = parse_args()
    NODES = tuple(range(1, a.nodes + 1))
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
    findings = RUN_STATE["nemesis"].findings
    res = check.check_run(rundir, extra={
        "seed": a.seed, "time_s": a.time, "workers": a.workers,
        "threads": a.threads, "nodes": len(NODES),
        "wall_s": (t_end - t_start) / 1e9,
        "node_crashes": crashes, "nemesis_findings": findings})
    print(res["summary_text"])
    if crashes:
        print("nodes exited by themselves: %s" % crashes)
    for f in findings:
        print("nemesis finding: %s" % f["what"])
    if crashes or findings:
        return 1
    return 0 if res["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
