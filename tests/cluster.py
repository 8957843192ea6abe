#!/usr/bin/python3
"""cluster.py: pubrelayd against a 3-node RabbitMQ cluster and a quorum queue.

Prints TAP.  Run by `make check` (automake's TAP driver) or by hand:

    PUBRELAYD=./pubrelayd PUBRELAY=./pubrelay /usr/bin/python3 \
        tests/cluster.py [SCENARIO ...]

Same conventions as integration.py and failures.py: one private cluster for
the run (harness.Cluster: three nodes on this machine, each with its own
name, ports and temp dir, a shared Erlang cookie), a fresh pubrelayd per
scenario in its own temp dir with one `uri` per node, one TAP line per
scenario, a scenario fails (never skips) when something it needs cannot be
set up; no root needed.  `--list -v` says what each scenario proves.

The relay gets one `uri` per node, in node order (`connect_timeout = 2s`).
Which node it is on comes from STATS `broker`, cross-checked with
`rabbitmqctl list_connections` (exactly one connection in the cluster, on
that node's port).  Boot and join take 20-30 s on 2 cores; the whole file
about 65 s when it passes (about 95 s when follow_cluster fails on a
stalled link).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import integration as I  # noqa: E402  (shared checks)
import scenarios as S  # noqa: E402
from harness import log  # noqa: E402

Failure = I.Failure
check = I.check
check_eq = I.check_eq
lines_for = I.lines_for

CLUSTER_SIZE = 3
QUORUM = {"x-queue-type": "quorum"}
GROW_TIMEOUT = 60          # seconds for the relay to confirm again on a node


class Ctx:
    """What a scenario gets: the cluster, and the relays it started (their
    logs are shown when it fails)."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.relays = []
        self.notes = []
        self.queue = None

    def relay(self, name=None, overrides=None, start=True):
        """A relay with one uri per node, in node order."""
        ov = {"broker": {"connect_timeout": "2s"}}
        for sect, keys in (overrides or {}).items():
            ov.setdefault(sect, {}).update(keys)
        r = H.Relay(self.cluster[0], name or self.name, overrides=ov,
                    uri=self.cluster.uris())
        self.relays.append(r)
        if start:
            r.start()
        return r

    def consumer(self, node=None):
        return H.Consumer(node or self.cluster.any_live())

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))


scenario = S.Registry()


# ---------------------------------------------------------------------------
# Helpers


def quorum_queue(ctx, name):
    """A durable quorum queue with a member on every node (declared through
    node 1, so its first leader is there), empty."""
    q = H.unique_queue(name)
    with ctx.consumer(ctx.cluster[0]) as c:
        c.declare(q, arguments=QUORUM)
    info = ctx.cluster.queue_info(q)
    check_eq(info.get("type"), "quorum", "type of queue %s" % q)
    ctx.cluster.wait_queue_online(q, 30)
    return q


def delete_queue(ctx, q, node=None):
    try:
        with ctx.consumer(node) as c:
            c.ch.queue_delete(queue=q)
    except Exception as e:      # the verdict is in; only tidy up
        log("%s: cannot delete queue %s: %s" % (ctx.name, q, e))


def connected_to(cluster, node=None, not_node=None):
    """A STATS predicate: connected, to `node` (or to any node other than
    `not_node`)."""
    def pred(s):
        if s.get("state") != "connected":
            return False
        on = cluster.node_in_uri(s.get("broker"))
        if on is None:
            return False
        if node is not None and on is not node:
            return False
        if not_node is not None and on is not_node:
            return False
        return True
    return pred


def relay_node(ctx, relay, st=None):
    """The node the relay says it is connected to (STATS broker), checked
    against the cluster's own list of connections: exactly one AMQP
    connection (the relay's), on that node."""
    st = st or relay.stats()
    check_eq(st.get("state"), "connected", "relay state")
    node = ctx.cluster.node_in_uri(st.get("broker"))
    check(node is not None, "STATS broker %r names no node of the cluster"
          % st.get("broker"))
    # The relay's STATS can run ahead of the broker's connection tracking
    # by a moment: poll.
    seen = []

    def one_on_node():
        conns = ctx.cluster.connections()
        seen[:] = [(b.node if b else "?", name) for b, name in conns]
        return len(conns) == 1 and conns[0][0] is node
    try:
        H.wait_until(one_on_node, 15, "list_connections to show exactly "
                     "one AMQP connection in the cluster, on %s" % node.node)
    except H.HarnessError as e:
        raise Failure("STATS says the relay is on %s, but: %s; connections "
                      "seen: %s" % (node.node, e, seen))
    return node


def short(node):
    """pubrelaycl-<pid>-2@localhost on port P -> "node2(:P)"."""
    return "node%s(:%d)" % (node.node.split("@")[0].rsplit("-", 1)[-1],
                            node.port)


# ---------------------------------------------------------------------------
# 1. quorum_basic


@scenario
def quorum_basic(ctx):
    """The relay, given the three nodes' uris, publishes to a quorum queue:
    2 producers of 5,000 lines arrive exactly once, each in order, every
    message persistent and with a message-id; no reconnect, no nack."""
    P, N = 2, 5000
    cl = ctx.cluster
    q = quorum_queue(ctx, ctx.name)
    relay = ctx.relay()
    st = relay.wait_stats(connected_to(cl), 30, "the relay connected")
    node = relay_node(ctx, relay, st)
    ctx.note("relay on %s (%s); queue leader %s"
             % (short(node), st.get("broker"),
                cl.queue_info(q).get("leader")))
    prods = [H.LinesProducer(relay, q, lines_for(p, N)).start()
             for p in range(P)]
    for p, pr in enumerate(prods):
        pr.join(120)
        check_eq(pr.rc, 0, "producer %d exit code (%s)" % (p, pr.describe()))
    st = relay.wait_drained(120)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check_eq(st.get("confirmed"), P * N, "stats confirmed")
    check_eq(st.get("reconnects"), 0, "stats reconnects")
    check_eq(st.get("nacked", 0), 0, "stats nacked")
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {p: N for p in range(P)}, allow_dups=False,
                     same_ids=True, persistent=True, note=ctx.note)
    ctx.note("messages=%d duplicates=0" % len(msgs))
    delete_queue(ctx, q)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 2. follow_cluster


def kill_and_follow(ctx, relay, victim, grow=2000):
    """SIGKILL `victim` (the node the relay is on); the relay must connect
    to another node by itself and go on confirming.  Returns the node it
    went to."""
    cl = ctx.cluster
    st0 = relay.stats()
    t0 = time.monotonic()
    cl.kill(victim)
    ctx.note("SIGKILLed %s at confirmed=%s backlog=%s"
             % (short(victim), st0.get("confirmed"), st0.get("backlog")))
    st = relay.wait_stats(
        lambda s: connected_to(cl, not_node=victim)(s)
        and s.get("reconnects", 0) > st0.get("reconnects", 0), 60,
        "the relay connected to a node other than %s" % victim.node)
    t_conn = time.monotonic() - t0
    to = cl.node_in_uri(st.get("broker"))
    c1 = st.get("confirmed", 0)
    try:
        st = relay.wait_stats(lambda s: s.get("confirmed", 0) >= c1 + grow,
                              GROW_TIMEOUT, "%d more confirms after the relay "
                              "moved to %s" % (grow, to.node))
    except H.HarnessError as e:
        raise Failure("%s\n%s" % (e, stalled_report(ctx, relay, to, st)))
    ctx.note("relay on %s %.1fs after the kill, %d more confirmed %.1fs "
             "after it; %s" % (short(to), t_conn, grow,
                               time.monotonic() - t0, H.fmt_stats(st)))
    check(connected_to(cl, node=to)(st), "the relay left %s again while "
          "confirming: broker=%s state=%s"
          % (to.node, st.get("broker"), st.get("state")))
    return to


def stalled_report(ctx, relay, node, st_moved):
    """Why confirms stalled after the relay moved to `node`: its counters
    since the move, and whether a fresh channel on the same node gets a
    publish to the same queue confirmed (a probe message; the scenario has
    failed anyway)."""
    st = relay.stats()
    out = ["since STATS first showed the relay on %s: confirmed +%d, "
           "published +%d, "
           "nacked +%d, reconnects +%d; state=%s backlog=%s"
           % (node.node,
              st.get("confirmed", 0) - st_moved.get("confirmed", 0),
              st.get("published", 0) - st_moved.get("published", 0),
              st.get("nacked", 0) - st_moved.get("nacked", 0),
              st.get("reconnects", 0) - st_moved.get("reconnects", 0),
              st.get("state"), st.get("backlog"))]
    try:
        out.append("queue: %s" % ctx.cluster.queue_info(ctx.queue))
    except Exception as e:
        out.append("queue: list_queues failed: %s" % e)
    try:
        import pika
        with H.Consumer(node) as c:
            c.ch.confirm_delivery()
            c.ch.basic_publish("", ctx.queue, b"cluster-probe",
                               pika.BasicProperties(delivery_mode=2))
        out.append("a fresh pika channel on %s: publish to the same queue "
                   "confirmed (the broker takes messages there; the relay's "
                   "channel does not get them confirmed)" % node.node)
    except Exception as e:
        out.append("a fresh pika channel on %s: publish failed too: %r"
                   % (node.node, e))
    nacks = [ln for ln in relay.log_text().splitlines() if "nacked" in ln]
    if nacks:
        out.append("relay log: %d nack lines, the first: %s"
                   % (len(nacks), nacks[0]))
    return "\n".join(out)


@scenario
def follow_cluster(ctx):
    """Four producers stream while the node the relay is connected to is
    SIGKILLed, comes back, and then the node the relay moved to is
    SIGKILLed too (a quorum queue on three nodes keeps a majority through
    each: one node down at a time).

    Proves: the relay follows the cluster by itself (connects to a live
    node, keeps confirming, no restart, no operator action, nothing parked),
    the producers are not disturbed (every client exits 0), the outbox
    drains, and from a surviving node every accepted message arrives, each
    producer's in order with duplicates only of a republished suffix and
    the same message-id on every copy.

    4 producers stream (`pubrelay publish --lines`, about 400 lines/s each,
    until told to stop) while the node the relay is on (node 1, also the
    queue's first leader) is SIGKILLed: the relay must be connected to another
    node and 2,000 more messages confirmed there. The killed node is booted
    again and rejoins (every queue member online); the relay stays where it is.
    Then the node the relay is on now is SIGKILLed: again it must move and go
    on confirming (two of three nodes stay up throughout, so the queue keeps
    its majority). The producers stop; every client exits 0, the outbox drains,
    the relay was never restarted, `reconnects >= 2`, nothing parked. A pika
    consumer on a node that was never killed reads the queue: every accepted
    line arrived, each producer's in order with duplicates only of a
    republished suffix (`harness.check_delivery`), every copy with the same
    message-id. It prints `messages=N delivered=D duplicates=X reconnects=R
    nacked=K`. When the relay connects to another node but confirms do not
    resume within 60 s, the failure reports the relay's counters since the move
    (published, nacked, reconnects) and whether a publish to the same queue on
    a fresh pika channel on that node is confirmed (a probe message; the
    scenario has failed anyway), which tells a stuck channel from a stuck
    queue."""
    P = 4
    cl = ctx.cluster
    q = ctx.queue = quorum_queue(ctx, ctx.name)
    relay = ctx.relay()
    st = relay.wait_stats(connected_to(cl), 30, "the relay connected")
    first = relay_node(ctx, relay, st)
    ctx.note("relay on %s; queue leader %s"
             % (short(first), cl.queue_info(q).get("leader")))
    prods = [H.StreamProducer(relay, q, p, pace=(20, 0.05)).start()
             for p in range(P)]
    killed = []         # down now
    ever_killed = []
    try:
        relay.wait_stats(lambda s: s.get("confirmed", 0) >= 3000, 60,
                         "3000 confirmed before the first kill")
        # 1. the node the relay is on dies
        second = kill_and_follow(ctx, relay, first)
        killed.append(first)
        ever_killed.append(first)
        relay_node(ctx, relay)
        # 2. it comes back and rejoins; the relay keeps its working link
        secs = cl.restart(first)
        killed.remove(first)
        cl.wait_queue_online(q, 60)
        st = relay.stats()
        info = cl.queue_info(q)
        ctx.note("%s back in the cluster after %.1fs; queue leader %s, "
                 "%d of %d members online; relay: %s"
                 % (short(first), secs, info.get("leader"),
                    len(info.get("online") or []),
                    len(info.get("members") or []), H.fmt_stats(st)))
        on = relay_node(ctx, relay, st)
        check(on is second, "the relay left %s while it worked (now on %s)"
              % (second.node, on.node))
        # 3. the node the relay is on now dies too
        third = kill_and_follow(ctx, relay, second)
        killed.append(second)
        ever_killed.append(second)
        relay_node(ctx, relay)
        ctx.note("followed %s -> %s -> %s" % (short(first), short(second),
                                              short(third)))
    finally:
        for pr in prods:
            pr.stop()
    for p, pr in enumerate(prods):
        pr.join(120)
        check_eq(pr.rc, 0, "producer %d exit code (%s)" % (p, pr.describe()))
    st = relay.wait_drained(120)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check(relay.alive() and relay.starts == 1, "the relay was restarted")
    check(st.get("reconnects", 0) >= 2, "stats reconnects = %s after two "
          "node kills" % st.get("reconnects"))
    check_eq(st.get("dead_messages", 0), 0, "stats dead_messages")
    check_eq(st.get("state"), "connected", "stats state at the end")
    # Consume from a node that was never killed (any live one otherwise).
    live = cl.live(exclude=killed)
    check(live, "no live node left to consume from")
    survivor = ([b for b in live if b not in ever_killed] or live)[0]
    sent = {p: pr.written() for p, pr in enumerate(prods)}
    with ctx.consumer(survivor) as c:
        msgs = c.drain(q, timeout=180)
    per, reports = H.check_delivery(
        msgs, {p: pr.accepted() for p, pr in enumerate(prods)}, sent=sent,
        same_ids=True, note=ctx.note)
    for p in range(P):
        check(sent[p] > 0 and p in per, "producer %d: %d sent, %d arrived"
              % (p, sent[p], len(per.get(p, []))))
    dups = sum(r.duplicates for r in reports.values())
    ctx.note("messages=%d delivered=%d duplicates=%d reconnects=%s "
             "nacked=%s (consumed from %s)"
             % (sum(sent.values()), len(msgs), dups, st.get("reconnects"),
                st.get("nacked"), short(survivor)))
    delete_queue(ctx, q, survivor)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# Driver


def setup(names):
    cluster = H.Cluster(CLUSTER_SIZE)
    try:
        cluster.start()
    except Exception as e:
        cluster.dump_logs(15)
        raise H.HarnessError("cannot start the RabbitMQ cluster: %s" % (e,))
    log("cluster of %d booted in %.1fs, joined in %.1fs: %s"
        % (CLUSTER_SIZE, cluster.boot_seconds, cluster.join_seconds,
           ", ".join("%s on 127.0.0.1:%d (dir %s)" % (b.node, b.port, b.dir)
                     for b in cluster)))
    return cluster


def repair(cluster, last):
    if not last:                # the last one needs no repair
        cluster.ensure()


def teardown(cluster):
    cluster.stop()
    return "cluster stop"


def main(argv):
    return S.run("cluster.py", scenario, argv, setup, Ctx,
                 report=lambda cluster, ctx, name: cluster.dump_logs(15),
                 repair=repair, teardown=teardown, log_lines=60,
                 needs=("broker", "pika"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
