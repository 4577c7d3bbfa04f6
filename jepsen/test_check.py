#!/usr/bin/env python3
"""test_check.py — proves check.py: a clean synthetic history passes, and
each planted anomaly is caught (and named).

  python3 jepsen/test_check.py      (stdlib unittest; no cluster needed)
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402

A, B, C, D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


class H:
    """A history builder: each op(...) appends an invoke at t and its
    completion at t + 5 (times in ms, stored as ns)."""

    def __init__(self):
        self.events = []

    def op(self, t, p, f, inbox, typ, inv=None, res=None, phase=None):
        e = {"t": t * 1000000, "p": p, "type": "invoke", "f": f,
             "inbox": inbox, "value": inv or {}}
        if phase:
            e["phase"] = phase
        self.events.append(e)
        if typ is not None:
            c = {"t": (t + 5) * 1000000, "p": p, "type": typ, "f": f,
                 "inbox": inbox, "value": dict(inv or {}, **(res or {}))}
            if phase:
                c["phase"] = phase
            self.events.append(c)
        return self

    def enq(self, t, p, inbox, mid, typ="ok", seq=None, dedup=False):
        res = {"seq": seq, "dedup": dedup} if typ == "ok" else {}
        return self.op(t, p, "enqueue", inbox, typ, {"id": mid}, res)

    def fetch(self, t, p, inbox, msgs, acked, last, after=0, mx=256,
              phase=None):
        return self.op(t, p, "fetch", inbox, "ok", {"after": after, "max": mx},
                       {"acked": acked, "last": last,
                        "msgs": [list(m) for m in msgs], "bad_payload": 0},
                       phase=phase)

    def ack(self, t, p, inbox, up_to, acked, typ="ok"):
        return self.op(t, p, "ack", inbox, typ, {"up_to": up_to},
                       {"acked": acked} if typ == "ok" else {})

    def seen_set(self, t, p, inbox, ts, stored):
        return self.op(t, p, "seen_set", inbox, "ok", {"ts": ts},
                       {"stored": stored})

    def seen_get(self, t, p, inbox, ts):
        return self.op(t, p, "seen_get", inbox, "ok", None, {"ts": ts})

    def drain(self, t, inbox, msgs, acked, last):
        return self.fetch(t, 999000, inbox, msgs, acked, last, mx=1024,
                          phase="drain")

    def check(self):
        ops, errors = check.pair_ops(self.events)
        assert not errors, errors
        return dict(check.check_ops(ops).anomalies)


def clean():
    """Two enqueues, a read, an ack, last-seen, an unknown enqueue retried
    with the same id, and the final drain."""
    return (H()
            .enq(0, 1, "x", A, seq=1)
            .enq(10, 1, "x", B, seq=2)
            .fetch(20, 2, "x", [(1, A), (2, B)], acked=0, last=2)
            .ack(30, 2, "x", 1, acked=1)
            .fetch(40, 2, "x", [(2, B)], acked=1, last=2)
            .seen_set(50, 1, "x", 100, stored=100)
            .seen_set(60, 2, "x", 50, stored=100)   # older: a no-op
            .seen_get(70, 2, "x", 100)
            .enq(80, 1, "x", C, typ="info")
            .enq(90, 100001, "x", C, seq=3, dedup=True)
            .seen_get(95, 3, "x", 100))


class CleanHistory(unittest.TestCase):
    def test_clean_history_passes(self):
        h = clean().drain(200, "x", [(2, B), (3, C)], acked=1, last=3)
        self.assertEqual(h.check(), {})

    def test_clean_history_through_files(self):
        h = clean().drain(200, "x", [(2, B), (3, C)], acked=1, last=3)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "history-w0.jsonl"), "w") as f:
                for e in h.events:
                    f.write(json.dumps(e) + "\n")
                f.write('{"t": 1, "p": 7, "ty')  # a torn last line
            res = check.check_run(d)
            self.assertTrue(res["valid"], res["anomalies"])
            self.assertEqual(res["truncated_lines"], 1)
            self.assertTrue(os.path.exists(os.path.join(d, "results.json")))

    def test_unknown_enqueue_never_applied_is_fine(self):
        h = (H().enq(0, 1, "x", A, seq=1)
             .enq(10, 2, "x", B, typ="info")
             .drain(100, "x", [(1, A)], acked=0, last=1))
        self.assertEqual(h.check(), {})

    def test_concurrent_read_may_miss_write(self):
        # The fetch began before the enqueue answered: either result is ok.
        h = (H().enq(0, 1, "x", A, seq=1)
             .fetch(2, 2, "x", [], acked=0, last=0)
             .drain(100, "x", [(1, A)], acked=0, last=1))
        self.assertEqual(h.check(), {})


class PlantedAnomalies(unittest.TestCase):
    def assertCaught(self, anomalies, kind):
        self.assertIn(kind, anomalies, "not caught: %s (got %s)" %
                      (kind, sorted(anomalies)))
        for a in anomalies[kind]:
            self.assertTrue(a["ops"] or a.get("inbox"), a)

    def test_lost_acknowledged_enqueue(self):
        # B was acknowledged at seq 2; the drain no longer has it and the
        # acked seq (1) does not cover it.
        h = clean().drain(200, "x", [(3, C)], acked=1, last=3)
        an = h.check()
        self.assertCaught(an, "lost")
        self.assertTrue(any(B in a["msg"] for a in an["lost"]))

    def test_lost_behind_a_phantom_ack(self):
        # acked_seq jumped to 3 though no ack above 1 was ever sent.
        h = clean().drain(200, "x", [], acked=3, last=3)
        self.assertCaught(h.check(), "lost")

    def test_duplicate(self):
        # The retried unknown enqueue C was applied twice.
        h = clean().drain(200, "x", [(2, B), (3, C), (4, C)], acked=1, last=4)
        self.assertCaught(h.check(), "duplicate")

    def test_stale_read(self):
        # A fetch that began after B's enqueue answered does not see it.
        h = (clean().fetch(100, 4, "x", [(2, B)], acked=1, last=2)
             .enq(110, 1, "x", D, seq=4)
             .fetch(120, 4, "x", [(2, B), (3, C)], acked=1, last=3)
             .drain(200, "x", [(2, B), (3, C), (4, D)], acked=1, last=4))
        self.assertCaught(h.check(), "stale-read")

    def test_acked_message_reappears(self):
        h = (clean().fetch(100, 4, "x", [(1, A), (2, B), (3, C)], acked=0,
                           last=3)
             .drain(200, "x", [(2, B), (3, C)], acked=1, last=3))
        an = h.check()
        self.assertCaught(an, "ack-reappeared")

    def test_seen_goes_backwards(self):
        h = (clean().seen_get(100, 4, "x", 50)
             .drain(200, "x", [(2, B), (3, C)], acked=1, last=3))
        self.assertCaught(h.check(), "seen-backwards")

    def test_seen_successive_gets_decrease(self):
        h = (H().seen_set(0, 1, "y", 10, stored=10)
             .seen_set(1, 2, "y", 20, stored=20)  # concurrent with the gets
             .seen_get(2, 3, "y", 20)
             .seen_get(10, 3, "y", 10))
        self.assertCaught(h.check(), "seen-backwards")

    def test_seen_phantom(self):
        h = H().seen_set(0, 1, "y", 10, stored=10).seen_get(10, 2, "y", 77)
        self.assertCaught(h.check(), "seen-phantom")

    def test_two_reads_disagree_on_a_seq(self):
        h = (clean().fetch(100, 4, "x", [(2, D), (3, C)], acked=1, last=3)
             .enq(105, 1, "x", D, typ="info")
             .drain(200, "x", [(2, B), (3, C)], acked=1, last=3))
        self.assertCaught(h.check(), "disagree")

    def test_gap_in_a_fetch(self):
        h = (clean().fetch(100, 4, "x", [(2, B)], acked=1, last=3)
             .drain(200, "x", [(2, B), (3, C)], acked=1, last=3))
        self.assertCaught(h.check(), "fetch-shape")

    def test_failed_enqueue_took_effect(self):
        h = (clean().enq(100, 1, "x", D, typ="fail")
             .drain(200, "x", [(2, B), (3, C), (4, D)], acked=1, last=4))
        self.assertCaught(h.check(), "phantom")

    def test_seq_reused_by_a_fresh_enqueue(self):
        h = (clean().enq(100, 1, "x", D, seq=2)
             .drain(200, "x", [(2, B), (3, C)], acked=1, last=3))
        self.assertCaught(h.check(), "seq-reuse")



def verified(*shards):
    """One node's `inboxctl store verify --json`: shards as (shard, index,
    commands, hash)."""
    return {"shards": [{"shard": s, "applied_index": i, "applied_term": 1,
                        "applied_commands": c, "state_hash": h,
                        "ok": c <= i} for s, i, c, h in shards],
            "violations": sum(c > i for _, i, c, _ in shards), "ok": True}


class TestReplicas(unittest.TestCase):
    """check_replicas: the white-box comparison of the nodes' stores."""

    def rep(self, **nodes):
        return {"converged": {"0": 10, "1": 20},
                "nodes": {k[1:]: v for k, v in nodes.items()}}

    def test_equal_replicas_pass(self):
        same = verified((0, 10, 10, "aa"), (1, 20, 20, "bb"))
        out, line = check.check_replicas(self.rep(n1=same, n2=same, n3=same))
        self.assertEqual(dict(out), {})
        self.assertIn("2 shard(s) compared", line)

    def test_a_replayed_entry_diverges(self):
        # Same index, one more command counted and a different state: the
        # shape of DOUBLE_APPLY_AFTER_RESTART.
        ok = verified((0, 10, 10, "aa"), (1, 20, 20, "bb"))
        bad = verified((0, 10, 11, "ac"), (1, 20, 20, "bb"))
        out, _ = check.check_replicas(self.rep(n1=ok, n2=bad, n3=ok))
        self.assertEqual(sorted(out), ["apply-count", "replica-divergence"])
        self.assertIn("shard 0 at index 10", out["replica-divergence"][0]["msg"])

    def test_more_commands_than_indexes(self):
        ok = verified((0, 10, 10, "aa"), (1, 20, 20, "bb"))
        bad = verified((0, 10, 12, "aa"), (1, 20, 20, "bb"))
        out, _ = check.check_replicas(self.rep(n1=ok, n2=bad))
        self.assertIn("apply-count", out)  # found on node 2 alone

    def test_diverged_state_same_count(self):
        ok = verified((0, 10, 10, "aa"))
        bad = verified((0, 10, 10, "ab"))
        out, _ = check.check_replicas(self.rep(n1=ok, n2=bad))
        self.assertEqual(sorted(out), ["replica-divergence"])

    def test_unreadable_or_behind(self):
        ok = verified((0, 10, 10, "aa"), (1, 20, 20, "bb"))
        behind = verified((0, 10, 10, "aa"), (1, 19, 19, "b0"))
        out, _ = check.check_replicas(self.rep(
            n1=ok, n2=behind, n3={"error": "CORRUPT", "message": "bad"}))
        self.assertEqual(len(out["replica-verify"]), 2)
        self.assertNotIn("replica-divergence", out)  # 19 vs 20: not compared

    def test_not_converged(self):
        out, line = check.check_replicas({
            "converged": None, "error": "the nodes did not converge",
            "status": {"0": {"1": 5, "2": 9}}, "nodes": {}})
        self.assertEqual(sorted(out), ["replica-verify"])
        self.assertIn("not compared", line)

    def test_run_verdict_includes_replicas(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "history-w0.jsonl"), "w") as f:
                for e in clean().events:
                    f.write(json.dumps(e) + "\n")
            ok = verified((0, 10, 10, "aa"))
            with open(os.path.join(d, "replicas.json"), "w") as f:
                json.dump({"converged": {"0": 10},
                           "nodes": {"1": ok, "2": verified(
                               (0, 10, 10, "ff"))}}, f)
            res = check.check_run(d)
            self.assertFalse(res["valid"])
            self.assertIn("replica-divergence", res["anomalies"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
