/*
 * test_raft.c — the Raft paper's rules, sentence by sentence (in the manner
 * of etcd's raft_paper_test): each test quotes the rule it checks and drives
 * a hand-made network (harness.h) into the situation it speaks of.
 *
 * "§" refers to the extended Raft paper (Ongaro & Ousterhout, 2014);
 * "diss." to Ongaro's dissertation (2014).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"

static struct t_net net; /* large: keep it off the stack */

static enum raft_role role(uint64_t id)
{
    return raft_role(net.n[id].r);
}

/* ---- §5.2 leader election ----------------------------------------------- */

/* §5.2 "If a follower receives no communication over a period of time
 * called the election timeout, then it assumes there is no viable leader and
 * begins an election to choose a new leader." "To begin an election, a
 * follower increments its current term and transitions to candidate state.
 * It then votes for itself and issues RequestVote RPCs in parallel." */
static void test_follower_times_out_and_campaigns(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    uint32_t ticks = 0;
    while (role(1) == RAFT_FOLLOWER && ticks < 100) {
        t_tick(&net, 1, 1);
        ticks++;
    }
    /* The randomized timeout lies in [election, 2 * election) (§5.2
     * "election timeouts are chosen randomly from a fixed interval"). */
    assert_true(ticks >= 10 && ticks < 20);
    assert_int_equal(role(1), RAFT_CANDIDATE);
    assert_int_equal(raft_term(net.n[1].r), 1);
    t_ready(&net, 1);
    assert_int_equal(net.n[1].st.hs.vote, 1);
    assert_int_equal(net.n[1].st.hs.term, 1);
    assert_int_equal(t_count(&net, RAFT_MSG_VOTE, -1), 2);
    t_fini(&net);
}

/* Persist before reply (§5.1 Figure 2 "updated on stable storage before
 * responding to RPCs"): a vote request and a vote grant come out only in
 * msgs_after, the list the caller may send once the hard state is durable. */
static void test_votes_wait_for_persistence(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    raft_campaign(net.n[1].r);
    t_ready(&net, 1);
    assert_int_equal(t_count(&net, RAFT_MSG_VOTE, 1), 2);
    assert_int_equal(t_count(&net, RAFT_MSG_VOTE, 0), 0);
    /* Deliver to n2 only and look at its answer. */
    struct t_msg q = net.q[0];
    net.qn = 0;
    raft_step(net.n[q.m.to].r, &q.m);
    free(q.block);
    free(net.q[1].block);
    struct raft_ready rd;
    raft_ready(net.n[q.m.to].r, &rd);
    assert_true(rd.hard_state_changed);
    assert_int_equal(rd.hard_state.vote, 1);
    assert_int_equal(rd.msgs_count, 0);
    assert_int_equal(rd.msgs_after_count, 1);
    assert_int_equal(rd.msgs_after[0].type, RAFT_MSG_VOTE_RESP);
    raft_advance(net.n[q.m.to].r, &rd);
    t_fini(&net);
}

/* §5.2 "A candidate wins an election if it receives votes from a majority
 * of the servers in the full cluster for the same term." "Once a candidate
 * wins an election, it becomes leader. It then sends heartbeat messages to
 * all of the other servers to establish its authority." */
static void test_candidate_wins_with_majority(void **state)
{
    (void)state;
    t_init(&net, 5, 0, NULL);
    t_isolate(&net, 4);
    t_isolate(&net, 5);
    t_elect(&net, 1);
    assert_int_equal(role(1), RAFT_LEADER);
    assert_int_equal(raft_leader(net.n[2].r), 1);
    t_fini(&net);

    t_init(&net, 5, 0, NULL);
    t_isolate(&net, 3);
    t_isolate(&net, 4);
    t_isolate(&net, 5);
    t_elect(&net, 1); /* 2 of 5: no majority */
    assert_int_equal(role(1), RAFT_CANDIDATE);
    t_fini(&net);
}

/* §5.2 "If the AppendEntries RPC is from a leader whose term is at least as
 * large as the candidate's current term, then the candidate recognizes the
 * leader as legitimate and returns to follower state." */
static void test_candidate_yields_to_leader(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_isolate(&net, 2);
    raft_campaign(net.n[2].r); /* candidate in term 2, cut off */
    t_settle(&net);
    assert_int_equal(role(2), RAFT_CANDIDATE);
    t_elect(&net, 3); /* n3 leads term 2 with n1's vote */
    assert_int_equal(role(3), RAFT_LEADER);
    assert_int_equal(raft_term(net.n[3].r), raft_term(net.n[2].r));
    t_heal(&net);
    t_propose_byte(&net, 3, 7);
    t_tick(&net, 3, 1); /* a heartbeat reaches n2 */
    t_settle(&net);
    assert_int_equal(raft_leader(net.n[2].r), 3);
    t_fini(&net);
}

/* §5.2 "Each server will vote for at most one candidate in a given term, on
 * a first-come-first-served basis." */
static void test_one_vote_per_term(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    struct raft_msg m = {0};
    m.type = RAFT_MSG_VOTE;
    m.to = 3;
    m.term = 1;
    m.from = 1;
    assert_int_equal(raft_step(net.n[3].r, &m), 0);
    m.from = 2;
    assert_int_equal(raft_step(net.n[3].r, &m), 0);
    t_ready(&net, 3);
    assert_int_equal(net.qn, 2);
    assert_int_equal(net.q[0].m.to, 1);
    assert_false(net.q[0].m.flags & RAFT_MSG_F_REJECT);
    assert_int_equal(net.q[1].m.to, 2);
    assert_true(net.q[1].m.flags & RAFT_MSG_F_REJECT);
    /* Asking again, the first candidate gets the same answer. */
    t_drop_queue(&net);
    m.from = 1;
    raft_step(net.n[3].r, &m);
    t_ready(&net, 3);
    assert_false(net.q[0].m.flags & RAFT_MSG_F_REJECT);
    t_fini(&net);
}

/* §5.4.1 "the voter denies its vote if its own log is more up-to-date than
 * that of the candidate." "If the logs have last entries with different
 * terms, then the log with the later term is more up-to-date. If the logs
 * end with the same term, then whichever log is longer is more up-to-date."
 */
static void test_vote_requires_up_to_date_log(void **state)
{
    (void)state;
    static const struct {
        uint64_t index, log_term;
        bool granted;
    } cases[] = {
        {1, 1, false}, /* same last term, shorter */
        {2, 1, true},  /* same */
        {3, 1, true},  /* longer */
        {1, 2, true},  /* later last term wins even if shorter */
        {5, 0, false}, /* earlier last term loses even if longer */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t_init(&net, 3, 0, NULL);
        t_elect(&net, 1); /* every log: [1@1] */
        t_propose_byte(&net, 1, 1);
        t_settle(&net); /* [1@1 2@1] */
        assert_int_equal(raft_last_index(net.n[3].r), 2);
        struct raft_msg m = {0};
        m.type = RAFT_MSG_VOTE;
        m.from = 2;
        m.to = 3;
        m.term = 5;
        m.index = cases[i].index;
        m.log_term = cases[i].log_term;
        raft_step(net.n[3].r, &m);
        t_drop_queue(&net);
        t_ready(&net, 3);
        assert_int_equal(net.qn, 1);
        assert_int_equal(net.q[0].m.type, RAFT_MSG_VOTE_RESP);
        assert_int_equal(!(net.q[0].m.flags & RAFT_MSG_F_REJECT),
                         cases[i].granted);
        t_fini(&net);
    }
}

/* §5.1 "If a candidate or leader discovers that its term is out of date, it
 * immediately reverts to follower state." "If a server receives a request
 * with a stale term number, it rejects the request." */
static void test_terms_order_everything(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    struct raft_msg m = {0};
    m.type = RAFT_MSG_HEARTBEAT_RESP;
    m.from = 2;
    m.to = 1;
    m.term = 9;
    raft_step(net.n[1].r, &m);
    assert_int_equal(role(1), RAFT_FOLLOWER);
    assert_int_equal(raft_term(net.n[1].r), 9);
    /* A stale APPEND changes nothing at n3. */
    uint64_t last = raft_last_index(net.n[3].r);
    struct raft_entry e = {.term = 1, .index = last + 1};
    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_APPEND;
    m.from = 2;
    m.to = 3;
    m.term = 0;
    m.index = last;
    m.log_term = 1;
    m.entries = &e;
    m.entries_count = 1;
    raft_step(net.n[3].r, &m);
    assert_int_equal(raft_last_index(net.n[3].r), last);
    t_fini(&net);
}

/* ---- §5.3 log replication ----------------------------------------------- */

/* §5.3 "The leader appends the command to its log as a new entry, then
 * issues AppendEntries RPCs in parallel to each of the other servers" and
 * "When the entry has been safely replicated, the leader applies the entry
 * to its state machine"; followers learn the commit index and apply too. */
static void test_replicate_and_apply(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    assert_int_equal(t_propose_byte(&net, 1, 5), 0);
    assert_int_equal(t_propose_byte(&net, 2, 5), INBOX_ENOT_LEADER);
    t_settle(&net);
    for (uint64_t id = 1; id <= 3; id++) {
        assert_int_equal(raft_commit(net.n[id].r), 2);
        assert_int_equal(net.n[id].applied, 2);
        assert_int_equal(net.n[id].applied_data_sum, 5);
    }
    t_fini(&net);
}

/* The leader's own append runs in parallel with the followers' (§10.2.1):
 * its APPENDs leave before it persists, and it counts itself only once its
 * entry is reported durable. A single voter therefore commits at advance. */
static void test_leader_counts_itself_after_persist(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_propose_byte(&net, 1, 1);
    struct raft_ready rd;
    raft_ready(net.n[1].r, &rd);
    assert_int_equal(rd.entries_count, 1);
    assert_true(rd.msgs_count >= 2); /* APPENDs go out at once */
    assert_int_equal(rd.msgs[0].type, RAFT_MSG_APPEND);
    raft_advance(net.n[1].r, &rd);
    t_drop_queue(&net);
    t_fini(&net);

    t_init(&net, 1, 0, NULL);
    t_elect(&net, 1);
    uint64_t c0 = raft_commit(net.n[1].r);
    t_propose_byte(&net, 1, 1);
    raft_ready(net.n[1].r, &rd);
    assert_int_equal(raft_commit(net.n[1].r), c0);
    sim_storage_write(&net.n[1].st, &rd);
    raft_advance(net.n[1].r, &rd);
    assert_int_equal(raft_commit(net.n[1].r), c0 + 1);
    t_fini(&net);
}

/* §5.3 "If a follower's log is inconsistent with the leader's, the
 * AppendEntries consistency check will fail" — the follower rejects, with
 * a hint (its last index with a term no newer than the probe's) so the
 * leader skips whole terms instead of one entry per round trip. */
static void test_follower_rejects_with_hint(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1); /* [1@1] everywhere */
    struct raft_msg m = {0};
    m.type = RAFT_MSG_APPEND;
    m.from = 1;
    m.to = 2;
    m.term = 1;
    m.index = 7; /* n2 has only index 1 */
    m.log_term = 1;
    raft_step(net.n[2].r, &m);
    t_drop_queue(&net);
    t_ready(&net, 2);
    assert_int_equal(net.qn, 1);
    assert_int_equal(net.q[0].m.type, RAFT_MSG_APPEND_RESP);
    assert_true(net.q[0].m.flags & RAFT_MSG_F_REJECT);
    assert_int_equal(net.q[0].m.index, 7);
    assert_int_equal(net.q[0].m.hint_index, 1);
    assert_int_equal(net.q[0].m.hint_term, 1);
    t_fini(&net);
}

/* §5.3 "If an existing entry conflicts with a new one (same index but
 * different terms), delete the existing entry and all that follow it";
 * "Append any new entries not already in the log". */
static void test_follower_truncates_conflicts(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_isolate(&net, 1);
    t_propose_byte(&net, 1, 1); /* [2@1 3@1] only on n1 */
    t_propose_byte(&net, 1, 1);
    t_settle(&net);
    t_heal(&net);
    t_isolate(&net, 1);
    t_elect(&net, 2); /* term 2, no-op at 2 */
    t_heal(&net);
    assert_int_equal(role(2), RAFT_LEADER);
    t_propose_byte(&net, 2, 9);
    t_tick(&net, 2, 1); /* the heartbeat reaches n1, which then probes */
    t_settle(&net);
    assert_int_equal(role(1), RAFT_FOLLOWER);
    assert_int_equal(raft_term_at(net.n[1].r, 2), 2);
    assert_int_equal(raft_term_at(net.n[1].r, 3), 2);
    assert_int_equal(raft_last_index(net.n[1].r), 3);
    assert_int_equal(net.n[1].applied_data_sum, 9);
    t_fini(&net);
}

/* ---- §5.4.2 committing entries from previous terms (Figure 8) ---------- */

/* §5.4.2 "Raft never commits log entries from previous terms by counting
 * replicas. Only log entries from the leader's current term are committed
 * by counting replicas". Here n1 leads term 2 holding 2@1, which n3 lacks;
 * when n3 acknowledges index 2, a majority holds it, yet it must stay
 * uncommitted until 3@2 (the new leader's no-op) is acknowledged too. */
static void test_figure8_old_term_entry_not_committed_by_count(void **state)
{
    (void)state;
    struct raft_options o;
    t_options(&o);
    o.msg_entries_max = 1; /* one entry per APPEND: each ack on its own */
    t_init(&net, 3, 0, &o);
    t_elect(&net, 1); /* [1@1], committed */
    t_isolate(&net, 1);
    t_propose_byte(&net, 1, 1); /* 2@1 on n1 alone */
    t_settle(&net);
    t_heal(&net);
    t_isolate(&net, 2);
    t_crash(&net, 1); /* n1 restarts as a follower with [1@1 2@1] */
    t_start(&net, 1);
    raft_campaign(net.n[1].r); /* term 2, with n3 */
    bool saw_ack_of_old_entry = false;
    for (int guard = 0; guard < 1000; guard++) {
        t_ready_all(&net);
        if (net.qn == 0)
            break;
        struct t_msg q = net.q[0];
        memmove(net.q, net.q + 1, (net.qn - 1) * sizeof(net.q[0]));
        net.qn--;
        if (!net.cut[q.m.from][q.m.to])
            raft_step(net.n[q.m.to].r, &q.m);
        if (q.m.type == RAFT_MSG_APPEND_RESP && q.m.from == 3 &&
            !(q.m.flags & RAFT_MSG_F_REJECT) && q.m.index == 2) {
            saw_ack_of_old_entry = true;
            assert_int_equal(raft_role(net.n[1].r), RAFT_LEADER);
            assert_int_equal(raft_term_at(net.n[1].r, 2), 1);
            assert_int_equal(raft_match_of(net.n[1].r, 3), 2);
            assert_int_equal(raft_commit(net.n[1].r), 1); /* not 2 */
        }
        free(q.block);
    }
    assert_true(saw_ack_of_old_entry);
    /* 3@2 is acknowledged: now 2@1 commits with it, indirectly. */
    assert_int_equal(raft_commit(net.n[1].r), 3);
    assert_int_equal(raft_term_at(net.n[1].r, 3), 2);
    t_fini(&net);
}

/* ---- pre-vote and check-quorum ------------------------------------------ */

/* diss. §9.6 "a candidate would first ask other servers whether its log was
 * up-to-date enough to get their vote. Only if the candidate believed it
 * could get votes from a majority of the cluster would it increment its
 * term" — a partitioned node does not inflate its term. */
static void test_prevote_keeps_partitioned_term(void **state)
{
    (void)state;
    struct raft_options o;
    t_options(&o);
    o.pre_vote = true;
    t_init(&net, 3, 0, &o);
    t_elect(&net, 1);
    uint64_t term = raft_term(net.n[1].r);
    t_isolate(&net, 3);
    for (int i = 0; i < 10; i++) {
        t_tick(&net, 3, 25);
        t_settle(&net);
    }
    assert_int_equal(raft_term(net.n[3].r), term);
    assert_int_equal(role(3), RAFT_PRE_CANDIDATE);
    /* Back in the cluster, it does not depose the leader. */
    t_heal(&net);
    t_propose_byte(&net, 1, 1);
    t_settle(&net);
    assert_int_equal(role(1), RAFT_LEADER);
    assert_int_equal(raft_term(net.n[1].r), term);
    assert_int_equal(role(3), RAFT_FOLLOWER);
    t_fini(&net);
}

/* diss. §6.2 "a leader steps down if an election timeout elapses without a
 * successful round of heartbeats to a majority of its cluster". */
static void test_check_quorum_steps_down(void **state)
{
    (void)state;
    struct raft_options o;
    t_options(&o);
    o.check_quorum = true;
    t_init(&net, 3, 0, &o);
    t_elect(&net, 1);
    t_isolate(&net, 1);
    for (int i = 0; i < 2 * 10; i++) {
        t_tick(&net, 1, 1);
        t_settle(&net);
    }
    assert_int_equal(role(1), RAFT_FOLLOWER);
    t_fini(&net);

    t_init(&net, 3, 0, &o); /* with a quorum it stays */
    t_elect(&net, 1);
    t_isolate(&net, 3);
    for (int i = 0; i < 40; i++) {
        t_tick(&net, 1, 1);
        t_settle(&net);
    }
    assert_int_equal(role(1), RAFT_LEADER);
    t_fini(&net);
}

/* diss. §4.2.3 "if a server receives a RequestVote request within the
 * minimum election timeout of hearing from a current leader, it does not
 * update its term or grant its vote". */
static void test_vote_ignored_while_leader_is_heard(void **state)
{
    (void)state;
    struct raft_options o;
    t_options(&o);
    o.check_quorum = true;
    t_init(&net, 3, 0, &o);
    t_elect(&net, 1);
    uint64_t term = raft_term(net.n[1].r);
    struct raft_msg m = {0};
    m.type = RAFT_MSG_VOTE;
    m.from = 3;
    m.to = 2;
    m.term = term + 5;
    m.index = 100;
    m.log_term = term;
    raft_step(net.n[2].r, &m);
    assert_int_equal(raft_term(net.n[2].r), term);
    assert_false(raft_has_ready(net.n[2].r));
    t_fini(&net);
}

/* ---- §6.4 linearizable reads -------------------------------------------- */

/* §6.4 ReadIndex: "The leader needs to make sure it hasn't been superseded
 * by a newer leader of which it is unaware. It issues a new round of
 * heartbeats and waits for their acknowledgments from a majority". */
static void test_read_index_waits_for_heartbeat_quorum(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_isolate(&net, 1);
    assert_int_equal(raft_read_index(net.n[1].r, 42), 0);
    t_settle(&net);
    assert_int_equal(net.n[1].reads_count, 0); /* no quorum answered */
    t_heal(&net);
    assert_int_equal(raft_read_index(net.n[1].r, 43), 0);
    t_settle(&net);
    /* The new round confirms both reads: each was registered before it. */
    assert_int_equal(net.n[1].reads_count, 2);
    assert_int_equal(net.n[1].reads[0].ctx + net.n[1].reads[1].ctx, 85);
    assert_int_equal(net.n[1].reads[0].index, raft_commit(net.n[1].r));
    assert_int_equal(raft_read_index(net.n[2].r, 1), INBOX_ENOT_LEADER);
    t_fini(&net);
}

/* §6.4 step 1: "If the leader has not yet marked an entry from its current
 * term committed, it waits until it has done so." */
/* A read accepted by raft_read_index is never lost: a single voter answers
 * reads at once into the next ready batch and refuses (EBUSY) what does not
 * fit; a leader whose heartbeat rounds confirm more reads than one batch
 * holds releases the rest after raft_advance. */
static void test_reads_beyond_one_batch_not_lost(void **state)
{
    (void)state;
    const uint32_t cap = INBOX_RAFT_READS_PENDING_MAX;
    t_init(&net, 1, 0, NULL);
    t_elect(&net, 1);
    t_settle(&net);
    for (uint32_t i = 0; i < cap; i++)
        assert_int_equal(raft_read_index(net.n[1].r, i + 1), 0);
    assert_int_equal(raft_read_index(net.n[1].r, 99999), INBOX_EBUSY);
    t_settle(&net);
    assert_true(net.n[1].reads_total == cap);
    assert_int_equal(raft_read_index(net.n[1].r, 7), 0);
    t_settle(&net);
    assert_true(net.n[1].reads_total == cap + 1);
    t_fini(&net);

    /* Three voters: two rounds in flight, both confirmed before the leader's
     * next ready, filling one batch exactly (raft_read_index bounds the
     * pending reads to one batch, so rounds alone cannot overflow it). */
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_settle(&net);
    uint32_t half = cap / 2;
    for (uint32_t i = 0; i < half; i++)
        assert_int_equal(raft_read_index(net.n[1].r, i + 1), 0);
    assert_true(t_ready(&net, 1)); /* round 1 goes out */
    for (uint32_t i = 0; i < half; i++)
        assert_int_equal(raft_read_index(net.n[1].r, half + i + 1), 0);
    assert_true(t_ready(&net, 1)); /* round 2 goes out */
    /* Deliver everything, letting only the followers run their readies. */
    for (int guard = 0; guard < 100000 && net.qn > 0; guard++) {
        struct t_msg q = net.q[0];
        memmove(net.q, net.q + 1, (net.qn - 1) * sizeof(net.q[0]));
        net.qn--;
        if (q.m.to <= net.count && net.n[q.m.to].r)
            (void)raft_step(net.n[q.m.to].r, &q.m);
        free(q.block);
        for (uint64_t id = 2; id <= 3; id++)
            while (t_ready(&net, id))
                ;
    }
    t_settle(&net);
    assert_true(net.n[1].reads_total == 2u * half);
    t_fini(&net);
}

static void test_read_index_needs_commit_in_term(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_isolate(&net, 3);
    raft_campaign(net.n[1].r);
    t_ready(&net, 1);
    /* Deliver only the vote to n2 and its grant back. */
    for (int i = 0; i < 2; i++) {
        t_ready_all(&net);
        for (size_t k = 0; k < net.qn; k++) {
            struct t_msg *q = &net.q[k];
            if (q->m.to != 3)
                raft_step(net.n[q->m.to].r, &q->m);
            free(q->block);
        }
        net.qn = 0;
        if (role(1) == RAFT_LEADER)
            break;
    }
    assert_int_equal(role(1), RAFT_LEADER);
    t_ready(&net, 1);
    t_drop_queue(&net); /* the no-op is not acknowledged */
    assert_int_equal(raft_read_index(net.n[1].r, 1), INBOX_ESTALE_READ);
    t_fini(&net);
}

/* §6.4.1 leases: with a lease, a read needs no round; the lease is bounded
 * by the election timeout minus the clock-drift margin. */
static void test_lease_read(void **state)
{
    (void)state;
    struct raft_options o;
    t_options(&o);
    o.check_quorum = true;
    o.lease_reads = true;
    o.lease_drift_ticks = 2;
    t_init(&net, 3, 0, &o);
    uint64_t l = 0;
    for (int i = 0; i < 100 && !l; i++) {
        for (uint64_t id = 1; id <= 3; id++)
            t_tick(&net, id, 1);
        t_settle(&net);
        for (uint64_t id = 1; id <= 3; id++)
            if (role(id) == RAFT_LEADER)
                l = id;
    }
    assert_true(l != 0);
    t_propose_byte(&net, l, 1); /* commit an entry of its term */
    t_settle(&net);
    t_tick(&net, l, 1); /* a heartbeat round, acknowledged: the lease */
    t_settle(&net);
    t_isolate(&net, l);
    assert_int_equal(raft_read_index(net.n[l].r, 7), 0);
    t_ready(&net, l);
    assert_int_equal(net.n[l].reads_count, 1); /* served with no round */
    assert_int_equal(net.n[l].reads[0].ctx, 7);
    t_tick(&net, l, 8); /* 10 - 2 ticks after that round: lease over */
    assert_int_equal(role(l), RAFT_LEADER);
    assert_int_equal(raft_read_index(net.n[l].r, 8), 0);
    t_settle(&net);
    assert_int_equal(net.n[l].reads_count, 1); /* waits for a round */
    t_fini(&net);
}

/* ---- membership --------------------------------------------------------- */

/* Learners receive the log but neither vote nor count towards a commit
 * (diss. §4.2.1 "new servers join as non-voting members"). */
static void test_learner_replicates_without_voting(void **state)
{
    (void)state;
    t_init(&net, 3, 1, NULL);
    t_elect(&net, 1);
    t_propose_byte(&net, 1, 3);
    t_settle(&net);
    assert_int_equal(net.n[4].applied_data_sum, 3);
    t_tick(&net, 4, 100);
    t_settle(&net);
    assert_int_equal(role(4), RAFT_FOLLOWER);
    assert_int_equal(raft_campaign(net.n[4].r), INBOX_EINVAL);
    /* Two voters down: the learner cannot make a quorum. */
    t_isolate(&net, 2);
    t_isolate(&net, 3);
    uint64_t c = raft_commit(net.n[1].r);
    t_propose_byte(&net, 1, 1);
    t_settle(&net);
    assert_int_equal(raft_commit(net.n[1].r), c);
    t_fini(&net);
}

/* Single-server changes (diss. §4.1), one at a time, and only once the
 * leader has committed an entry of its term (the 2015 safety fix); the new
 * configuration is used as soon as its entry is in the log. */
static void test_conf_changes_one_at_a_time(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    net.count = 4; /* n4 exists, empty, not yet a member */
    net.n[4].id = 4;
    net.n[4].st.snap.membership = net.n[1].st.snap.membership;
    t_start(&net, 4);
    t_elect(&net, 1);
    struct raft_conf_change cc = {RAFT_CONF_ADD_LEARNER, 4};
    uint64_t idx;
    t_isolate(&net, 2);
    t_isolate(&net, 3);
    assert_int_equal(raft_propose_conf_change(net.n[1].r, &cc, &idx), 0);
    assert_true(raft_membership_is_learner(raft_membership(net.n[1].r), 4));
    cc.op = RAFT_CONF_PROMOTE;
    assert_int_equal(raft_propose_conf_change(net.n[1].r, &cc, &idx),
                     INBOX_ECONF_CHANGE_PENDING);
    t_heal(&net);
    t_settle(&net);
    assert_int_equal(net.n[4].applied, raft_commit(net.n[1].r));
    assert_int_equal(raft_propose_conf_change(net.n[1].r, &cc, &idx), 0);
    t_settle(&net);
    assert_true(raft_membership_is_voter(raft_membership(net.n[3].r), 4));
    cc.op = RAFT_CONF_REMOVE;
    cc.node_id = 1; /* the leader removes itself and steps down */
    assert_int_equal(raft_propose_conf_change(net.n[1].r, &cc, &idx), 0);
    t_settle(&net);
    assert_int_equal(role(1), RAFT_FOLLOWER);
    t_tick(&net, 2, 30);
    t_settle(&net);
    assert_true(role(2) == RAFT_LEADER || role(3) == RAFT_LEADER ||
                role(4) == RAFT_LEADER);
    /* A change that does not apply is refused. */
    cc.op = RAFT_CONF_PROMOTE;
    cc.node_id = 9;
    for (uint64_t id = 2; id <= 4; id++)
        if (role(id) == RAFT_LEADER)
            assert_int_equal(raft_propose_conf_change(net.n[id].r, &cc, &idx),
                             INBOX_EINVAL);
    t_fini(&net);
}

/* A conf entry that is truncated away takes its configuration with it. */
static void test_conf_change_rolled_back_on_truncation(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_isolate(&net, 1);
    struct raft_conf_change cc = {RAFT_CONF_ADD_LEARNER, 4};
    uint64_t idx;
    assert_int_equal(raft_propose_conf_change(net.n[1].r, &cc, &idx), 0);
    t_settle(&net);
    t_heal(&net);
    t_isolate(&net, 1);
    t_elect(&net, 2);
    t_heal(&net);
    t_propose_byte(&net, 2, 1);
    t_tick(&net, 2, 1);
    t_settle(&net);
    assert_false(raft_membership_is_learner(raft_membership(net.n[1].r), 4));
    assert_int_equal(raft_membership(net.n[1].r)->learners_count, 0);
    t_fini(&net);
}

/* diss. §3.10 leadership transfer: "the prior leader sends a TimeoutNow
 * request to the target server ... [which] starts a new election". */
static void test_transfer_leadership(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_isolate(&net, 3);
    t_propose_byte(&net, 1, 1);
    t_settle(&net);
    t_heal(&net);
    /* n3 is behind: the leader first brings it up to date. */
    assert_int_equal(raft_transfer_leader(net.n[1].r, 3), 0);
    assert_int_equal(t_propose_byte(&net, 1, 1), INBOX_ETRANSFER_IN_PROGRESS);
    t_settle(&net);
    assert_int_equal(role(3), RAFT_LEADER);
    assert_int_equal(role(1), RAFT_FOLLOWER);
    assert_int_equal(raft_transfer_leader(net.n[1].r, 2), INBOX_ENOT_LEADER);
    t_fini(&net);
}

/* ---- §7 snapshots ------------------------------------------------------- */

/* §7 "the leader must occasionally send snapshots to followers that lag
 * behind" — in chunks, the follower installs and replication resumes. */
static void test_snapshot_to_lagging_follower(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_isolate(&net, 3);
    for (int i = 0; i < 5; i++)
        t_propose_byte(&net, 1, 1);
    t_settle(&net);
    /* Compact n1's log up to its applied index (10 bytes of "data"). */
    static const uint8_t data[10] = "snapshot!";
    sim_storage_compact(&net.n[1].st, net.n[1].applied,
                        raft_membership(net.n[1].r), data, sizeof data);
    assert_int_equal(net.n[1].st.snap.index, 6);
    t_heal(&net);
    t_propose_byte(&net, 1, 1);
    for (int i = 0; i < 10; i++) {
        t_tick(&net, 1, 1);
        t_settle(&net);
    }
    assert_true(net.n[3].installed_snapshot);
    assert_int_equal(net.n[3].st.snap.index, 6);
    assert_int_equal(net.n[3].st.snap.data_bytes, sizeof data);
    assert_memory_equal(net.n[3].st.snap_data, data, sizeof data);
    assert_int_equal(raft_last_index(net.n[3].r), 7);
    assert_int_equal(net.n[3].applied, 7);
    t_fini(&net);
}

/* ---- bounds, errors, allocation failure --------------------------------- */

static void test_bounds_and_errors(void **state)
{
    (void)state;
    struct raft_options o;
    t_options(&o);
    o.uncommitted_bytes_max = 3;
    o.msg_bytes_max = 16;
    t_init(&net, 3, 0, &o);
    t_elect(&net, 1);
    t_isolate(&net, 1);
    uint8_t big[17] = {0};
    uint64_t idx;
    assert_int_equal(raft_propose(net.n[1].r, big, sizeof big, &idx),
                     INBOX_ERANGE);
    assert_int_equal(t_propose_byte(&net, 1, 1), 0);
    assert_int_equal(t_propose_byte(&net, 1, 1), 0);
    assert_int_equal(t_propose_byte(&net, 1, 1), 0);
    assert_int_equal(t_propose_byte(&net, 1, 1), INBOX_ETOO_MANY_PROPOSALS);
    /* Other groups' or malformed messages are refused. */
    struct raft_msg m = {0};
    m.type = RAFT_MSG_HEARTBEAT;
    m.from = 2;
    m.to = 1;
    m.group = 77;
    assert_int_equal(raft_step(net.n[1].r, &m), INBOX_EINVAL);
    m.group = 0;
    m.type = 99;
    assert_int_equal(raft_step(net.n[1].r, &m), INBOX_EINVAL);
    t_fini(&net);
}

/* Allocation failure is an error, never a half-done change. */
static void test_allocation_failure(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    uint64_t last = raft_last_index(net.n[1].r);
    net.fail_allocs_after = 0;
    int rc = t_propose_byte(&net, 1, 1);
    assert_true(rc == 0 || rc == INBOX_ENOMEM);
    if (rc == INBOX_ENOMEM)
        assert_int_equal(raft_last_index(net.n[1].r), last);
    /* Keep failing while the cluster runs: nothing breaks, nothing leaks;
     * once memory is back, it makes progress. */
    for (long k = 0; k < 40; k++) {
        net.fail_allocs_after = k;
        t_propose_byte(&net, 1, 1);
        t_tick(&net, 1, 1);
        t_settle(&net);
    }
    net.fail_allocs_after = -1;
    for (int i = 0; i < 50 && role(1) != RAFT_LEADER; i++) {
        for (uint64_t id = 1; id <= 3; id++)
            t_tick(&net, id, 1);
        t_settle(&net);
    }
    uint64_t leader = 0;
    for (uint64_t id = 1; id <= 3; id++)
        if (role(id) == RAFT_LEADER)
            leader = id;
    if (!leader) {
        t_elect(&net, 1);
        leader = 1;
    }
    uint64_t c = raft_commit(net.n[leader].r);
    assert_int_equal(t_propose_byte(&net, leader, 1), 0);
    t_settle(&net);
    assert_true(raft_commit(net.n[leader].r) > c);
    t_fini(&net);
}

/* A restarted node keeps its term, vote and log, and its membership. */
static void test_restart_keeps_durable_state(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_propose_byte(&net, 1, 1);
    struct raft_conf_change cc = {RAFT_CONF_ADD_LEARNER, 5};
    uint64_t idx;
    t_settle(&net);
    assert_int_equal(raft_propose_conf_change(net.n[1].r, &cc, &idx), 0);
    t_settle(&net);
    uint64_t term = raft_term(net.n[2].r), last = raft_last_index(net.n[2].r);
    t_crash(&net, 2);
    t_start(&net, 2);
    assert_int_equal(raft_term(net.n[2].r), term);
    assert_int_equal(raft_last_index(net.n[2].r), last);
    assert_true(raft_membership_is_learner(raft_membership(net.n[2].r), 5));
    t_fini(&net);
}

/* ---- a follower whose disk lost acknowledged entries -------------------- */

/* The WAL cuts a torn tail on restart, so a follower can come back with a
 * shorter log than the leader's match for it says (it acknowledged entries
 * its disk then lost), and with the hard state of some earlier record. The
 * paper assumes this never happens; the leader must still notice and bring
 * the follower back up to date, without a storm of messages. */

/* Drop every stable entry after last, as a cut WAL tail would. */
static void cut_log(struct mem_storage *s, uint64_t last)
{
    while (s->count > 0 && s->ents[s->count - 1].index > last) {
        free(s->ents[s->count - 1].data);
        s->count--;
    }
}

/* The first rejecting HEARTBEAT_RESP seen by tick_and_deliver, kept to be
 * replayed later as a stale duplicate. */
static struct raft_msg hb_reject;
static bool hb_reject_seen;

/* One tick of every live node, then deliver queued messages in order until
 * the network is quiet or budget messages went through. Returns how many
 * were delivered: a hot message loop shows up as the whole budget. */
static size_t tick_and_deliver(size_t budget)
{
    for (uint64_t id = 1; id <= net.count; id++)
        if (net.n[id].r)
            raft_tick(net.n[id].r);
    size_t k = 0;
    for (; k < budget; k++) {
        t_ready_all(&net);
        if (net.qn == 0)
            break;
        struct t_msg q = net.q[0];
        memmove(net.q, net.q + 1, (net.qn - 1) * sizeof(net.q[0]));
        net.qn--;
        struct t_node *to = q.m.to <= net.count ? &net.n[q.m.to] : NULL;
        if (q.m.type == RAFT_MSG_HEARTBEAT_RESP &&
            (q.m.flags & RAFT_MSG_F_REJECT) && !hb_reject_seen) {
            hb_reject = q.m; /* no entries, nothing to own */
            hb_reject_seen = true;
        }
        if (to && to->r && !net.cut[q.m.from][q.m.to])
            (void)raft_step(to->r, &q.m);
        free(q.block);
    }
    t_ready_all(&net);
    return k;
}

#define LOST_TAIL_TICKS 40u
#define LOST_TAIL_MSGS_PER_TICK_MAX 32u

/* n3 acknowledges up to index 6, crashes, and restarts with its log cut
 * back to index cut. old_hs: its hard state is also the one it had when its
 * log ended at 3 (a cut WAL tail loses the HARD_STATE records interleaved
 * with the entries), and a new leader of a later term was elected after
 * that, so n3 also comes back in an older term. old_entries (with old_hs):
 * entries 4.. come back with term 1, as if the cut had taken the records
 * that overwrote older ones of an earlier leader. busy: clients keep
 * writing while n3 recovers. */
static void lost_tail_case(uint64_t cut, bool old_hs, bool old_entries,
                           bool busy)
{
    hb_reject_seen = false;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_propose_byte(&net, 1, 1);
    t_propose_byte(&net, 1, 1);
    t_settle(&net); /* [1@1 2@1 3@1] everywhere, committed */
    struct raft_hard_state hs_early = net.n[3].st.hs;
    assert_int_equal(raft_last_index(net.n[3].r), 3);
    uint64_t leader = 1;
    if (old_hs) {
        t_elect(&net, 2); /* term 2: n3 votes for n2; no-op 4@2 */
        leader = 2;
        t_propose_byte(&net, 2, 1);
        t_propose_byte(&net, 2, 1);
    } else {
        for (int i = 0; i < 3; i++)
            t_propose_byte(&net, 1, 1);
    }
    t_settle(&net);
    assert_int_equal(role(leader), RAFT_LEADER);
    assert_int_equal(raft_last_index(net.n[leader].r), 6);
    assert_int_equal(raft_commit(net.n[leader].r), 6);
    assert_int_equal(raft_match_of(net.n[leader].r, 3), 6);

    t_crash(&net, 3);
    cut_log(&net.n[3].st, cut);
    if (old_hs)
        net.n[3].st.hs = hs_early;
    for (size_t i = 0; old_entries && i < net.n[3].st.count; i++) {
        struct mem_entry *e = &net.n[3].st.ents[i];
        if (e->index > 3) {
            e->term = 1;
            if (e->len == 1)
                e->data[0] = 100; /* applying it would show in the sum */
        }
    }
    net.n[3].applied_data_sum = 0; /* it applies everything again */
    t_start(&net, 3);
    assert_int_equal(raft_last_index(net.n[3].r), cut);

    size_t per_tick_max = 0;
    uint32_t tick = 0, caught_up_at = 0;
    for (; tick < LOST_TAIL_TICKS; tick++) {
        if (busy && tick < 10)
            assert_int_equal(t_propose_byte(&net, leader, 1), 0);
        size_t k = tick_and_deliver(1000);
        if (k > per_tick_max)
            per_tick_max = k;
        bool caught_up = raft_match_of(net.n[leader].r, 3) ==
                             raft_last_index(net.n[leader].r) &&
                         net.n[3].applied == raft_commit(net.n[leader].r);
        if (caught_up && caught_up_at == 0)
            caught_up_at = tick + 1;
        if (caught_up && tick >= 10)
            break; /* writes over */
    }
    /* Never applied an entry the leader does not hold (old_entries). */
    assert_int_equal(net.n[3].applied_data_sum, net.n[leader].applied_data_sum);
    struct raft *l = net.n[leader].r;
    uint64_t last = raft_last_index(l);
    print_message("lost tail (cut %llu, old hs %d, old entries %d, busy %d): "
                  "first caught up in tick %u; at the end leader last %llu "
                  "commit %llu match(n3) "
                  "%llu; n3 last %llu applied %llu; most messages in one "
                  "tick %zu\n",
                  (unsigned long long)cut, old_hs, old_entries, busy,
                  caught_up_at, (unsigned long long)last,
                  (unsigned long long)raft_commit(l),
                  (unsigned long long)raft_match_of(l, 3),
                  (unsigned long long)raft_last_index(net.n[3].r),
                  (unsigned long long)net.n[3].applied, per_tick_max);
    assert_int_equal(role(leader), RAFT_LEADER);
    assert_true(per_tick_max <= LOST_TAIL_MSGS_PER_TICK_MAX); /* no storm */
    /* The first heartbeat round exposes the lost tail. */
    assert_true(caught_up_at >= 1 && caught_up_at <= 2);
    assert_int_equal(raft_commit(l), last);
    assert_int_equal(raft_last_index(net.n[3].r), last);
    assert_int_equal(raft_term_at(net.n[3].r, last), raft_term_at(l, last));
    assert_int_equal(raft_match_of(l, 3), last);
    assert_int_equal(net.n[3].applied, last);
    /* Counted once; a duplicate of the follower's answer, arriving now, is
     * recognised as stale and changes nothing. */
    struct raft_progress_info pi;
    assert_int_equal(raft_progress_of(l, 3, &pi), 0);
    assert_int_equal(pi.regressions_count, 1);
    assert_true(hb_reject_seen);
    assert_int_equal(raft_step(l, &hb_reject), 0);
    t_ready_all(&net);
    assert_int_equal(raft_progress_of(l, 3, &pi), 0);
    assert_int_equal(pi.regressions_count, 1);
    uint64_t regressed = 0;
    assert_int_equal(raft_regressions(l, &regressed), 1); /* the node's view */
    assert_int_equal(regressed, 3);
    assert_int_equal(pi.match, last);
    assert_int_equal(t_count(&net, RAFT_MSG_APPEND, -1), 0);
    t_fini(&net);
}

/* An idle cluster: no new entry will ever make n3 reject an APPEND, so the
 * leader must learn of the lost tail from the heartbeats alone. */
static void test_lost_tail_follower_catches_up_idle(void **state)
{
    (void)state;
    lost_tail_case(3, false, false, false);
    lost_tail_case(0, false, false, false);
}

/* Writes keep coming: n3 rejects every APPEND past its end, at prev <= the
 * match the leader holds for it. */
static void test_lost_tail_follower_catches_up_busy(void **state)
{
    (void)state;
    lost_tail_case(2, false, false, true);
}

/* The hard state went with the tail: n3 restarts in an older term, with an
 * older vote and commit; or with entries of an older term where the leader
 * holds its match (index there, term wrong). */
static void test_lost_tail_and_hard_state(void **state)
{
    (void)state;
    lost_tail_case(3, true, false, false);
    lost_tail_case(3, true, false, true);
    lost_tail_case(6, true, true, false);
    lost_tail_case(5, true, true, true);
}

/* A rejection at prev <= match may be stale: an answer to an older probe,
 * reordered or duplicated by the network, sent before the follower had the
 * entries it later acknowledged. It must neither lower match nor make the
 * leader probe again at once (doing so on every such answer is a message
 * loop when the follower really lost its tail). */
static void test_stale_probe_rejection_ignored(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    t_propose_byte(&net, 1, 1);
    t_settle(&net);
    uint64_t L = raft_last_index(net.n[1].r); /* 2, n3's match too */
    assert_int_equal(raft_match_of(net.n[1].r, 3), L);
    t_isolate(&net, 3);
    t_propose_byte(&net, 1, 1); /* L+1, never reaches n3 */
    t_settle(&net);
    t_heal(&net);
    /* n3 answers an APPEND at prev L+1 with a rejection: back to PROBE,
     * probing at prev L. */
    struct raft_msg m = {0};
    m.type = RAFT_MSG_APPEND_RESP;
    m.flags = RAFT_MSG_F_REJECT;
    m.from = 3;
    m.to = 1;
    m.term = raft_term(net.n[1].r);
    m.index = L + 1;
    m.hint_index = L;
    m.hint_term = raft_term_at(net.n[1].r, L);
    assert_int_equal(raft_step(net.n[1].r, &m), 0);
    t_ready(&net, 1);
    struct raft_progress_info pi;
    assert_int_equal(raft_progress_of(net.n[1].r, 3, &pi), 0);
    assert_int_equal(pi.state, 0); /* PROBE */
    assert_int_equal(pi.next, L + 1);
    t_drop_queue(&net);
    /* An old rejection of prev L (from before n3 had L) arrives now. */
    m.index = L;
    m.hint_index = 1;
    m.hint_term = raft_term_at(net.n[1].r, 1);
    assert_int_equal(raft_step(net.n[1].r, &m), 0);
    t_ready(&net, 1);
    assert_int_equal(t_count(&net, RAFT_MSG_APPEND, -1), 0);
    assert_int_equal(raft_progress_of(net.n[1].r, 3, &pi), 0);
    assert_int_equal(pi.match, L);
    assert_int_equal(pi.regressions_count, 0);
    t_drop_queue(&net);
    t_fini(&net);
}

/* No legitimate leader lacks a committed entry (§5.4.1 Leader
 * Completeness). A voter that has heard of commit index c from a leader —
 * here a follower whose log was cut below c — refuses any candidate whose
 * log ends before c, even one as up to date as its own shortened log;
 * otherwise its vote could elect a leader without entries it once held. */
static void test_lost_tail_voter_refuses_short_candidate(void **state)
{
    (void)state;
    t_init(&net, 3, 0, NULL);
    t_elect(&net, 1);
    for (int i = 0; i < 5; i++)
        t_propose_byte(&net, 1, 1);
    t_settle(&net); /* [1..6]@1, committed */
    t_crash(&net, 3);
    cut_log(&net.n[3].st, 3);
    t_start(&net, 3);
    /* One heartbeat reaches n3: the leader's commit, 6. */
    t_tick(&net, 1, 1);
    t_ready(&net, 1);
    for (size_t i = 0; i < net.qn; i++)
        if (net.q[i].m.type == RAFT_MSG_HEARTBEAT && net.q[i].m.to == 3)
            raft_step(net.n[3].r, &net.q[i].m);
    t_drop_queue(&net);
    t_ready(&net, 3);
    t_drop_queue(&net);
    struct raft_msg m = {0};
    m.type = RAFT_MSG_VOTE;
    m.from = 2;
    m.to = 3;
    m.term = raft_term(net.n[3].r) + 1;
    m.index = 3; /* as up to date as n3's own log, short of index 6 */
    m.log_term = 1;
    raft_step(net.n[3].r, &m);
    t_ready(&net, 3);
    assert_int_equal(net.qn, 1);
    assert_int_equal(net.q[0].m.type, RAFT_MSG_VOTE_RESP);
    assert_true(net.q[0].m.flags & RAFT_MSG_F_REJECT);
    t_drop_queue(&net);
    m.index = 6; /* a candidate holding the committed entries */
    raft_step(net.n[3].r, &m);
    t_ready(&net, 3);
    assert_int_equal(net.qn, 1);
    assert_false(net.q[0].m.flags & RAFT_MSG_F_REJECT);
    t_drop_queue(&net);
    t_fini(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follower_times_out_and_campaigns),
        cmocka_unit_test(test_votes_wait_for_persistence),
        cmocka_unit_test(test_candidate_wins_with_majority),
        cmocka_unit_test(test_candidate_yields_to_leader),
        cmocka_unit_test(test_one_vote_per_term),
        cmocka_unit_test(test_vote_requires_up_to_date_log),
        cmocka_unit_test(test_terms_order_everything),
        cmocka_unit_test(test_replicate_and_apply),
        cmocka_unit_test(test_leader_counts_itself_after_persist),
        cmocka_unit_test(test_follower_rejects_with_hint),
        cmocka_unit_test(test_follower_truncates_conflicts),
        cmocka_unit_test(test_figure8_old_term_entry_not_committed_by_count),
        cmocka_unit_test(test_prevote_keeps_partitioned_term),
        cmocka_unit_test(test_check_quorum_steps_down),
        cmocka_unit_test(test_vote_ignored_while_leader_is_heard),
        cmocka_unit_test(test_read_index_waits_for_heartbeat_quorum),
        cmocka_unit_test(test_read_index_needs_commit_in_term),
        cmocka_unit_test(test_reads_beyond_one_batch_not_lost),
        cmocka_unit_test(test_lease_read),
        cmocka_unit_test(test_learner_replicates_without_voting),
        cmocka_unit_test(test_conf_changes_one_at_a_time),
        cmocka_unit_test(test_conf_change_rolled_back_on_truncation),
        cmocka_unit_test(test_transfer_leadership),
        cmocka_unit_test(test_snapshot_to_lagging_follower),
        cmocka_unit_test(test_bounds_and_errors),
        cmocka_unit_test(test_allocation_failure),
        cmocka_unit_test(test_restart_keeps_durable_state),
        cmocka_unit_test(test_lost_tail_follower_catches_up_idle),
        cmocka_unit_test(test_lost_tail_follower_catches_up_busy),
        cmocka_unit_test(test_lost_tail_and_hard_state),
        cmocka_unit_test(test_stale_probe_rejection_ignored),
        cmocka_unit_test(test_lost_tail_voter_refuses_short_candidate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
