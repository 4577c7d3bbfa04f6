#!/usr/bin/env python3
"""check.py — judges a history recorded by jepsen_worker (and run.py).

Reads RUNDIR/history-*.jsonl (one JSON line per event: invoke, then ok,
fail or info) and RUNDIR/faults.jsonl, pairs each invoke with its
completion (by process id), and checks, per inbox:

  duplicate      one msg id at two seqs (enqueue answers and fetches), so a
                 retried or unknown enqueue happened more than once
  disagree       two observations put different msg ids at one seq
  phantom        a fetch shows a msg id no enqueue of that inbox sent, or
                 an enqueue that certainly failed ("fail") took effect
  fetch-shape    a fetch result is not one contiguous run of seqs starting
                 right after max(after, acked) and ending at last_seq (or at
                 the page limit), or a payload did not match its msg id
  stale-read     a fetch invoked after an enqueue returned ok reports a
                 last_seq below that enqueue's seq; or after an ack or
                 another fetch completed, an acked_seq / last_seq below
                 theirs (reads are linearizable: real-time order holds)
  ack-reappeared a fetch shows a seq at or below an acked_seq already
                 answered (to an ack or a fetch) before it was invoked
  seq-reuse      a fresh (non-dedup) enqueue got a seq at or below one
                 already observed before it was invoked
  ack-shape      an ack answered an acked_seq below its up_to or below an
                 earlier completed ack's answer
  lost           an enqueue that returned ok (or a message any fetch
                 showed) is missing from the final drain although its seq
                 is above the final acked_seq; or the final acked_seq
                 covers it while no ack up to that seq was ever invoked
  seen-backwards a seen_get (or seen_set's stored value) below a value
                 set, stored or read by an operation that completed before
                 it was invoked
  seen-phantom   a seen_get value that no seen_set ever asked for

and, when run.py recorded RUNDIR/replicas.json (each node's `inboxctl store
verify` after the run, the cluster converged and frozen):

  replica-divergence  two nodes at the same applied index of a shard hold
                 different state (state hash) or counted a different number
                 of applied commands: one applied something the other did
                 not, or applied an entry twice
  apply-count    a node's store counted a different number of applied
                 entries than its applied index (more: an index applied
                 twice)
  replica-verify a node's store could not be read, or was not at the
                 index the cluster converged on

"info" operations (outcome unknown) impose nothing on what follows but may
take effect at any time; the duplicate check is what proves they took
effect at most once. Writes RUNDIR/results.json and RUNDIR/summary.txt,
and plots (throughput and latency over time, faults shaded) when gnuplot
is installed.

  jepsen/check.py RUNDIR     exit 0 valid, 1 anomalies, 2 unreadable
"""
import bisect
import collections
import glob
import json
import os
import shutil
import subprocess
import sys

ANOMALIES_KEPT = 20  # per kind, in results.json


class Op:
    __slots__ = ("p", "f", "inbox", "t0", "t1", "type", "value", "error",
                 "phase", "idx")

    def brief(self, t_base=0):
        d = {"p": self.p, "f": self.f, "type": self.type, "inbox": self.inbox,
             "invoke_s": round((self.t0 - t_base) / 1e9, 6),
             "complete_s": (None if self.t1 is None
                            else round((self.t1 - t_base) / 1e9, 6))}
        v = dict(self.value or {})
        if "msgs" in v:
            msgs = v["msgs"]
            v["msgs"] = msgs if len(msgs) <= 6 else (
                msgs[:3] + ["... %d more ..." % (len(msgs) - 6)] + msgs[-3:])
        d["value"] = v
        if self.error:
            d["error"] = self.error
        if self.phase:
            d["phase"] = self.phase
        return d


def read_events(paths):
    events, bad = [], 0
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    events.append(json.loads(line))
                except ValueError:
                    bad += 1  # a worker killed mid-line: only the last one
    return events, bad


def pair_ops(events):
    """Invoke + completion by process id; a process has at most one op
    open. An invoke never completed is an "info" op."""
    open_ops, ops, errors = {}, [], []
    for e in sorted(events, key=lambda e: e["t"]):
        p = e["p"]
        if e["type"] == "invoke":
            if p in open_ops:
                errors.append("process %s invoked twice" % p)
            op = Op()
            op.p, op.f, op.inbox, op.t0 = p, e["f"], e.get("inbox"), e["t"]
            op.t1, op.type, op.value = None, "info", dict(e.get("value") or {})
            op.error, op.phase = None, e.get("phase")
            open_ops[p] = op
        else:
            op = open_ops.pop(p, None)
            if op is None:
                errors.append("completion without invoke: %s" % e)
                continue
            op.t1, op.type = e["t"], e["type"]
            op.value.update(e.get("value") or {})
            op.error = e.get("error")
            ops.append(op)
    ops.extend(open_ops.values())
    ops.sort(key=lambda o: o.t0)
    for i, op in enumerate(ops):
        op.idx = i
    return ops, errors


class PrefixMax:
    """Completed ops by completion time, with a running max of a value:
    `before(t)` is the largest value (and its op) among ops completed
    strictly before t."""

    def __init__(self, items):  # items: (t1, value, op)
        items = sorted(items, key=lambda x: x[0])
        self.ts = [x[0] for x in items]
        self.best = []
        cur = (None, None)
        for t, v, op in items:
            if cur[0] is None or v > cur[0]:
                cur = (v, op)
            self.best.append(cur)

    def before(self, t):
        i = bisect.bisect_left(self.ts, t)
        return self.best[i - 1] if i > 0 else (None, None)


class Checker:
    def __init__(self, ops, t_base):
        self.ops = ops
        self.t_base = t_base
        self.anomalies = collections.defaultdict(list)

    def flag(self, kind, msg, *ops, **kw):
        a = {"kind": kind, "msg": msg,
             "ops": [o.brief(self.t_base) for o in ops if o is not None]}
        a.update(kw)
        self.anomalies[kind].append(a)

    # -- per-fetch shape ----------------------------------------------------
    def fetch_shape(self, f):
        v = f.value
        msgs, acked, last = v.get("msgs", []), v["acked"], v["last"]
        lo = max(v.get("after", 0), acked)
        seqs = [m[0] for m in msgs]
        if v.get("bad_payload", 0):
            self.flag("fetch-shape", "%d payloads do not match their msg id"
                      % v["bad_payload"], f)
        if acked > last:
            self.flag("fetch-shape", "acked %d above last %d" % (acked, last),
                      f)
        if not seqs:
            if last > lo and len(msgs) < v.get("max", 1 << 62):
                self.flag("fetch-shape", "empty although seqs %d..%d are "
                          "pending" % (lo + 1, last), f)
            return
        if seqs[0] != lo + 1:
            self.flag("fetch-shape", "first seq %d, expected %d "
                      "(after %d, acked %d)" % (seqs[0], lo + 1,
                                                v.get("after", 0), acked), f)
        for a, b in zip(seqs, seqs[1:]):
            if b != a + 1:
                self.flag("fetch-shape", "gap or disorder: %d then %d" % (a, b),
                          f)
                break
        if seqs[-1] > last:
            self.flag("fetch-shape", "seq %d above last %d" % (seqs[-1], last),
                      f)
        if len(seqs) < v.get("max", 1 << 62) and seqs[-1] != last:
            self.flag("fetch-shape", "stops at %d below last %d without "
                      "reaching the page limit" % (seqs[-1], last), f)

    # -- messages: duplicates, disagreements, phantoms ---------------------
    def messages(self, by_inbox):
        for inbox, ops in by_inbox.items():
            id_seqs = collections.defaultdict(dict)   # id -> seq -> op
            seq_ids = collections.defaultdict(dict)   # seq -> id -> op
            sent = collections.defaultdict(list)      # id -> enqueue ops
            for op in ops:
                if op.f == "enqueue":
                    sent[op.value["id"]].append(op)
                    if op.type == "ok":
                        s = op.value["seq"]
                        id_seqs[op.value["id"]].setdefault(s, op)
                        seq_ids[s].setdefault(op.value["id"], op)
                elif op.f == "fetch" and op.type == "ok":
                    for s, mid in op.value.get("msgs", []):
                        id_seqs[mid].setdefault(s, op)
                        seq_ids[s].setdefault(mid, op)
            for mid, seqs in id_seqs.items():
                if len(seqs) > 1:
                    self.flag("duplicate", "msg %s at seqs %s" %
                              (mid, sorted(seqs)), *seqs.values(),
                              inbox=inbox)
                if mid not in sent:
                    s, op = next(iter(seqs.items()))
                    self.flag("phantom", "msg %s at seq %d was never sent to "
                              "this inbox" % (mid, s), op, inbox=inbox)
                elif all(o.type == "fail" for o in sent[mid]):
                    s, op = next(iter(seqs.items()))
                    self.flag("phantom", "msg %s took effect (seq %d) though "
                              "every enqueue of it failed" % (mid, s),
                              sent[mid][0], op, inbox=inbox)
            for s, ids in seq_ids.items():
                if len(ids) > 1:
                    self.flag("disagree", "seq %d holds %s" % (s, sorted(ids)),
                              *ids.values(), inbox=inbox)
            self.known = getattr(self, "known", {})
            self.known[inbox] = (id_seqs, sent)

    # -- real-time order: reads after writes and after other reads ---------
    def realtime(self, inbox, ops):
        ok = [o for o in ops if o.type == "ok"]
        enq = PrefixMax([(o.t1, o.value["seq"], o) for o in ok
                         if o.f == "enqueue"])
        acks = PrefixMax([(o.t1, o.value["acked"], o) for o in ok
                          if o.f == "ack"] +
                         [(o.t1, o.value["acked"], o) for o in ok
                          if o.f == "fetch"])
        lasts = PrefixMax([(o.t1, o.value["last"], o) for o in ok
                           if o.f == "fetch"])
        for f in ok:
            if f.f == "fetch":
                v = f.value
                s, e = enq.before(f.t0)
                if s is not None and v["last"] < s:
                    self.flag("stale-read", "fetch last_seq %d, but seq %d "
                              "was enqueued before it began" % (v["last"], s),
                              e, f, inbox=inbox)
                a, ao = acks.before(f.t0)
                if a is not None:
                    shown = [m[0] for m in v.get("msgs", []) if m[0] <= a]
                    if shown:
                        self.flag("ack-reappeared", "seqs %s shown after "
                                  "acked_seq %d was answered" %
                                  (shown[:5], a), ao, f, inbox=inbox)
                    elif v["acked"] < a:
                        self.flag("stale-read", "fetch acked_seq %d below %d "
                                  "answered before it began" % (v["acked"], a),
                                  ao, f, inbox=inbox)
                last, lo = lasts.before(f.t0)
                if last is not None and v["last"] < last:
                    self.flag("stale-read", "fetch last_seq %d below %d read "
                              "before it began" % (v["last"], last), lo, f,
                              inbox=inbox)
            elif f.f == "enqueue" and not f.value.get("dedup"):
                s = f.value["seq"]
                for pm, what in ((enq, "enqueued"), (lasts, "read as last")):
                    prev, po = pm.before(f.t0)
                    if prev is not None and s <= prev:
                        self.flag("seq-reuse", "fresh enqueue got seq %d, but "
                                  "seq %d was %s before it began" %
                                  (s, prev, what), po, f, inbox=inbox)
                a, ao = acks.before(f.t0)
                if a is not None and s <= a:
                    self.flag("seq-reuse", "fresh enqueue got seq %d at or "
                              "below acked_seq %d" % (s, a), ao, f,
                              inbox=inbox)
            elif f.f == "ack":
                v = f.value
                if v["acked"] < v["up_to"]:
                    self.flag("ack-shape", "ack up to %d answered acked %d" %
                              (v["up_to"], v["acked"]), f, inbox=inbox)
                a, ao = acks.before(f.t0)
                if a is not None and v["acked"] < a:
                    self.flag("ack-shape", "ack answered acked %d below %d "
                              "answered before it began" % (v["acked"], a),
                              ao, f, inbox=inbox)

    # -- lost: the final drain ----------------------------------------------
    def lost(self, inbox, ops):
        drain = [o for o in ops if o.phase == "drain" and o.f == "fetch"
                 and o.type == "ok"]
        if not drain:
            self.flag("drain-missing", "inbox %s was never drained" % inbox,
                      inbox=inbox)
            return
        first = min((o for o in drain if o.value.get("after", 0) == 0),
                    key=lambda o: o.t0, default=drain[0])
        final_acked = max(o.value["acked"] for o in drain)
        shown = {}
        for o in drain:
            for s, mid in o.value.get("msgs", []):
                shown[s] = mid
        id_seqs, sent = self.known.get(inbox, ({}, {}))
        up_tos = [o.value["up_to"] for o in ops if o.f == "ack"
                  and o.type in ("ok", "info")]
        max_up_to = max(up_tos, default=0)
        if final_acked > max_up_to:
            self.flag("lost", "final acked_seq %d, but no ack above %d was "
                      "ever sent" % (final_acked, max_up_to), first,
                      inbox=inbox)
        for mid, seqs in id_seqs.items():
            for s, op in seqs.items():
                if s > final_acked and shown.get(s) != mid:
                    self.flag("lost", "msg %s (seq %d) missing from the final "
                              "drain (acked_seq %d)" % (mid, s, final_acked),
                              op, first, inbox=inbox)

    # -- last-seen ----------------------------------------------------------
    def seen(self, inbox, ops):
        ok = [o for o in ops if o.type == "ok"]
        floor = PrefixMax(
            [(o.t1, o.value["ts"], o) for o in ok if o.f == "seen_set"] +
            [(o.t1, o.value["stored"], o) for o in ok if o.f == "seen_set"] +
            [(o.t1, o.value["ts"], o) for o in ok if o.f == "seen_get"])
        asked = {o.value["ts"] for o in ops if o.f == "seen_set"}
        for o in ok:
            if o.f == "seen_get":
                got = o.value["ts"]
                if got != 0 and got not in asked:
                    self.flag("seen-phantom", "seen_get %d never set" % got, o,
                              inbox=inbox)
            elif o.f == "seen_set":
                got = o.value["stored"]
                if got < o.value["ts"]:
                    self.flag("seen-backwards", "seen_set %d stored %d" %
                              (o.value["ts"], got), o, inbox=inbox)
            else:
                continue
            v, vo = floor.before(o.t0)
            if v is not None and got < v:
                self.flag("seen-backwards", "%s answered %d, below %d from "
                          "an op completed before it began" % (o.f, got, v),
                          vo, o, inbox=inbox)

    def run(self, require_drain=True):
        by_inbox = collections.defaultdict(list)
        for op in self.ops:
            if op.inbox is not None:
                by_inbox[op.inbox].append(op)
        for op in self.ops:
            if op.f == "fetch" and op.type == "ok":
                self.fetch_shape(op)
        self.messages(by_inbox)
        for inbox, ops in by_inbox.items():
            self.realtime(inbox, ops)
            self.seen(inbox, ops)
            touched = any(o.f in ("enqueue", "ack", "fetch") for o in ops)
            if require_drain and touched:
                self.lost(inbox, ops)


# ---- statistics and plots ---------------------------------------------------


def stats(ops, t_base):
    counts = collections.defaultdict(lambda: collections.Counter())
    for o in ops:
        key = o.f + (" (drain)" if o.phase == "drain" else "")
        counts[key][o.type] += 1
    info_enq = [o for o in ops if o.f == "enqueue" and o.type == "info"]
    return {k: dict(v) for k, v in sorted(counts.items())}, len(info_enq)


def unknown_resolution(ops):
    """How the unknown enqueues ended: later acknowledged by a retry with
    the same id, seen by a fetch, or never known."""
    ok_ids = {(o.inbox, o.value["id"]) for o in ops
              if o.f == "enqueue" and o.type == "ok"}
    seen = set()
    for o in ops:
        if o.f == "fetch" and o.type == "ok":
            for _, mid in o.value.get("msgs", []):
                seen.add((o.inbox, mid))
    unk = {(o.inbox, o.value["id"]) for o in ops
           if o.f == "enqueue" and o.type == "info"}
    return {"unknown_ids": len(unk),
            "later_ok_by_retry": len(unk & ok_ids),
            "seen_by_fetch_only": len((unk & seen) - ok_ids),
            "never_resolved": len(unk - ok_ids - seen)}


def timeline(ops, t_base, t_end, bin_s=1.0):
    nbins = int((t_end - t_base) / 1e9 / bin_s) + 1
    rows = [[0, 0, 0, []] for _ in range(nbins)]  # ok, fail, info, lat_ms
    for o in ops:
        if o.phase == "drain":
            continue
        t = o.t1 if o.t1 is not None else o.t0
        b = min(nbins - 1, max(0, int((t - t_base) / 1e9 / bin_s)))
        r = rows[b]
        r[{"ok": 0, "fail": 1}.get(o.type, 2)] += 1
        if o.type == "ok":
            r[3].append((o.t1 - o.t0) / 1e6)
    out = []
    for i, (ok, fail, info, lat) in enumerate(rows):
        lat.sort()
        p50 = lat[len(lat) // 2] if lat else 0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
        out.append((i * bin_s, ok / bin_s, fail / bin_s, info / bin_s, p50,
                    p99))
    return out


def plot(rundir, tl, faults, t_base):
    gp = shutil.which("gnuplot")
    if gp is None:
        return "skipped: gnuplot is not installed"
    dat = os.path.join(rundir, "timeline.dat")
    with open(dat, "w") as f:
        f.write("# t_s ok_per_s fail_per_s info_per_s p50_ms p99_ms\n")
        for row in tl:
            f.write(" ".join("%.3f" % x for x in row) + "\n")
    shades = []
    colors = {"kill": "#ffb0b0", "crash": "#ff7070", "power": "#c04040",
              "pause": "#b0c8ff", "isolate": "#ffe0a0",
              "bridge": "#d0ffb0", "oneway": "#e0b0ff", "halves": "#ffd0a0",
              "transfer": "#c0f0f0", "truncate": "#ff9090",
              "bitflip": "#ff90c0", "skew": "#f0f090", "member": "#b0b0b0"}
    for i, fl in enumerate(faults):
        a, b = (fl["start"] - t_base) / 1e9, (fl["end"] - t_base) / 1e9
        shades.append("set object %d rect from %.3f, graph 0 to %.3f, graph 1 "
                      "fc rgb '%s' fs solid 0.5 noborder behind" %
                      (i + 1, a, b, colors.get(fl["kind"], "#dddddd")))
        shades.append("set label %d '%s %s' at %.3f, graph 0.97 font ',8' "
                      "rotate by 90 right" % (i + 1, fl["kind"],
                                              fl.get("node", ""), a + 0.2))
    # PNG (cairo, else libgd) when gnuplot has it, else SVG, always built in.
    terms = subprocess.run([gp, "-e", "set terminal"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           timeout=30).stdout
    if "pngcairo" in terms:
        term, out = "pngcairo size 1200,800", "timeline.png"
    elif " png " in terms:
        term, out = "png size 1200,800", "timeline.png"
    else:
        term, out = "svg size 1200,800 dynamic", "timeline.svg"
    script = "\n".join([
        "set terminal " + term,
        "set output '%s'" % os.path.join(rundir, out),
        "set multiplot layout 2,1",
        "set xlabel 'seconds'", "set grid",
    ] + shades + [
        "set ylabel 'ops/s'",
        "set title 'throughput (each fault shaded, labelled with its kind "
        "and node)'",
        "plot '%s' u 1:2 w l lw 2 t 'ok', '' u 1:3 w l t 'fail', "
        "'' u 1:4 w l t 'info'" % dat,
        "set ylabel 'ms'", "set logscale y", "set title 'latency of ok ops'",
        "plot '%s' u 1:($5>0?$5:1/0) w l t 'p50', '' u 1:($6>0?$6:1/0) w l "
        "t 'p99'" % dat,
        "unset multiplot"])
    gpf = os.path.join(rundir, "timeline.gp")
    with open(gpf, "w") as f:
        f.write(script + "\n")
    r = subprocess.run([gp, gpf], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        return "failed: " + r.stderr.strip()[:300]
    return out


# ---- replicas (white-box, after the run) ----------------------------------------


def check_replicas(rep):
    """rep: {"converged": {shard: applied index}, "nodes": {id: the JSON
    of `inboxctl store verify --json`}}. Returns (anomalies {kind: [..]},
    a one-line summary)."""
    out = collections.defaultdict(list)
    if rep.get("error"):
        out["replica-verify"].append({
            "kind": "replica-verify",
            "msg": "%s; applied per shard and node: %s" % (
                rep["error"], json.dumps(rep.get("status")))})
        return out, "replicas: not compared (%s)" % rep["error"]
    conv = {int(k): v for k, v in (rep.get("converged") or {}).items()}
    by_shard = collections.defaultdict(dict)
    for nid, v in sorted(rep.get("nodes", {}).items()):
        if not isinstance(v, dict) or v.get("error") or "shards" not in v:
            out["replica-verify"].append({
                "kind": "replica-verify", "node": nid,
                "msg": "node %s: store not verified: %s" % (
                    nid, (v or {}).get("message", v) if isinstance(v, dict)
                    else v)})
            continue
        for sh in v["shards"]:
            by_shard[sh["shard"]][nid] = sh
            # A node hands every raft index to its store once (no-ops and
            # conf entries too) or installs it by snapshot: the count is
            # the index (docs/store.md, applied_commands).
            if sh["applied_commands"] != sh["applied_index"]:
                out["apply-count"].append({
                    "kind": "apply-count", "node": nid, "shard": sh["shard"],
                    "msg": "node %s shard %d: %d entries applied by index "
                           "%d" % (nid, sh["shard"], sh["applied_commands"],
                                   sh["applied_index"])})
    compared = 0
    for shard, per in sorted(by_shard.items()):
        want = conv.get(shard)
        if want is not None:
            for nid, sh in sorted(per.items()):
                if sh["applied_index"] != want:
                    out["replica-verify"].append({
                        "kind": "replica-verify", "node": nid,
                        "shard": shard,
                        "msg": "node %s shard %d: store at index %d, the "
                               "cluster converged on %d" % (
                                   nid, shard, sh["applied_index"], want)})
        groups = collections.defaultdict(dict)
        for nid, sh in per.items():
            groups[sh["applied_index"]][nid] = sh
        for idx, g in sorted(groups.items()):
            if len(g) < 2:
                continue
            compared += 1
            states = {(sh["state_hash"], sh["applied_commands"])
                      for sh in g.values()}
            if len(states) > 1:
                out["replica-divergence"].append({
                    "kind": "replica-divergence", "shard": shard,
                    "msg": "shard %d at index %d: %s" % (shard, idx, ", ".join(
                        "node %s hash %s commands %d" % (
                            nid, sh["state_hash"], sh["applied_commands"])
                        for nid, sh in sorted(g.items())))})
    summary = "replicas: %d node(s), %d shard(s) compared at equal indexes" % (
        len(rep.get("nodes", {})), compared)
    return out, summary


# ---- entry points -------------------------------------------------------------


def check_ops(ops, require_drain=True):
    t_base = min((o.t0 for o in ops), default=0)
    c = Checker(ops, t_base)
    c.run(require_drain)
    return c


def check_run(rundir, extra=None):
    paths = sorted(glob.glob(os.path.join(rundir, "history-*.jsonl")))
    events, bad_lines = read_events(paths)
    ops, pair_errors = pair_ops(events)
    faults = []
    fp = os.path.join(rundir, "faults.jsonl")
    if os.path.exists(fp):
        with open(fp) as f:
            faults = [json.loads(x) for x in f if x.strip()]
    c = check_ops(ops)
    t_base = c.t_base
    t_end = max([o.t1 or o.t0 for o in ops] + [t_base])
    counts, _ = stats(ops, t_base)
    anomalies = {k: {"count": len(v), "examples": v[:ANOMALIES_KEPT]}
                 for k, v in sorted(c.anomalies.items())}
    if pair_errors:
        anomalies["history"] = {"count": len(pair_errors),
                                "examples": pair_errors[:ANOMALIES_KEPT]}
    replicas_line = None
    rp = os.path.join(rundir, "replicas.json")
    if os.path.exists(rp):
        with open(rp) as f:
            rep_anoms, replicas_line = check_replicas(json.load(f))
        for k, v in sorted(rep_anoms.items()):
            anomalies[k] = {"count": len(v), "examples": v[:ANOMALIES_KEPT]}
    valid = not anomalies and not (extra or {}).get("node_crashes")
    tl = timeline(ops, t_base, t_end)
    plots = plot(rundir, tl, faults, t_base)
    fault_windows = [dict(f, start_s=round((f["start"] - t_base) / 1e9, 3),
                          end_s=round((f["end"] - t_base) / 1e9, 3))
                     for f in faults]
    # Availability: ok ops per second inside each fault window, against
    # the rate outside every window (the drain excluded).
    done = sorted(o.t1 for o in ops if o.type == "ok" and o.phase != "drain")
    inside_n, inside_ns = 0, 0
    for f in fault_windows:
        n = (bisect.bisect_right(done, f["end"]) -
             bisect.bisect_left(done, f["start"]))
        dur = max(1, f["end"] - f["start"])
        f["ok_per_s"] = round(n / (dur / 1e9), 1)
        inside_n += n
        inside_ns += dur
    span = (done[-1] - done[0]) if len(done) > 1 else 1
    calm_ok_per_s = round((len(done) - inside_n) /
                          max(1e-9, (span - inside_ns) / 1e9), 1)
    res = {"valid": valid, "ops": len(ops), "counts": counts,
           "unknown_enqueues": unknown_resolution(ops),
           "anomalies": anomalies, "faults": fault_windows,
           "calm_ok_per_s": calm_ok_per_s,
           "truncated_lines": bad_lines, "plots": plots,
           "history_files": [os.path.basename(p) for p in paths]}
    res.update(extra or {})
    lines = ["run %s" % os.path.basename(os.path.normpath(rundir)),
             "valid: %s" % str(valid).lower(),
             "ops: %d (%d history lines could not be read)" % (len(ops),
                                                               bad_lines)]
    for f, cnt in counts.items():
        lines.append("  %-16s %s" % (f, "  ".join("%s %d" % kv for kv in
                                                  sorted(cnt.items()))))
    u = res["unknown_enqueues"]
    lines.append("unknown enqueues: %d ids; %d later ok by a retry, %d seen "
                 "only by a fetch, %d never resolved" %
                 (u["unknown_ids"], u["later_ok_by_retry"],
                  u["seen_by_fetch_only"], u["never_resolved"]))
    lines.append("faults: %d (ok ops/s outside faults: %.0f)" %
                 (len(faults), calm_ok_per_s))
    for f in fault_windows:
        lines.append("  %7.2f-%7.2fs %-8s node %s  %6.0f ok/s  %s" % (
            f["start_s"], f["end_s"], f["kind"], f.get("node"),
            f["ok_per_s"], f.get("shape", f.get("why", ""))))
    if replicas_line:
        lines.append(replicas_line)
        res["replicas"] = replicas_line
    if anomalies:
        lines.append("ANOMALIES:")
        for k, v in anomalies.items():
            lines.append("  %s: %d" % (k, v["count"]))
            for ex in v["examples"][:3]:
                lines.append("    " + (ex["msg"] if isinstance(ex, dict)
                                       else str(ex)))
    else:
        lines.append("anomalies: none")
    if extra and "wall_s" in extra:
        lines.append("load + drain wall time: %.1f s" % extra["wall_s"])
    lines.append("plots: %s" % plots)
    res["summary_text"] = "\n".join(lines)
    with open(os.path.join(rundir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(rundir, "summary.txt"), "w") as f:
        f.write(res["summary_text"] + "\n")
    return res


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print("usage: check.py RUNDIR", file=sys.stderr)
        return 2
    res = check_run(sys.argv[1])
    print(res["summary_text"])
    return 0 if res["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
