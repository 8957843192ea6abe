#!/usr/bin/python3
"""failures.py: how pubrelayd behaves when the broker link or the disk fails.

Prints TAP.  Run by `make check` (automake's TAP driver) or by hand:

    PUBRELAYD=./pubrelayd PUBRELAY=./pubrelay /usr/bin/python3 \
        tests/failures.py [SCENARIO ...]

Same conventions as integration.py: one private RabbitMQ node for the run
(a second, independent one only when `failover` runs), a fresh pubrelayd per
scenario in its own temp dir, one TAP line per scenario, a scenario fails
(never skips) when something it needs cannot be set up.  Some scenarios need
root: the disk scenarios and the read-only case mount small tmpfs file
systems (`mount -t tmpfs -o size=2m`, unmounted at the end of the
scenario); where mounting is impossible they fail, naming the reason.
After each scenario both nodes are put back in service (VM running, app
started, memory watermark back at 0.4).  About 4 minutes on 2 cores.
`--list -v` says what each scenario proves.
"""

import os
import subprocess
import random
import re
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import integration as I  # noqa: E402  (shared checks)
import scenarios as S  # noqa: E402
from harness import log  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

Failure = I.Failure
check = I.check
check_eq = I.check_eq
term_within = I.term_within
lines_for = I.lines_for



class Brokers:
    """The run's broker(s): the first started at once, the second (for
    failover) in the background when a scenario that needs it is selected."""

    def __init__(self):
        self.first = None
        self._second = None
        self._second_error = None
        self._second_thread = None

    def start_second_in_background(self):
        def boot():
            try:
                self._second = H.Broker().start()
            except Exception as e:
                self._second_error = e
        self._second_thread = threading.Thread(target=boot, daemon=True)
        self._second_thread.start()

    def second(self):
        if self._second_thread is None:
            self.start_second_in_background()
        self._second_thread.join(H.Broker.BOOT_TIMEOUT + 30)
        if self._second is None:
            raise H.HarnessError("cannot start the second RabbitMQ node: %s"
                                 % (self._second_error or "boot timed out"))
        return self._second

    def all(self):
        return [b for b in (self.first, self._second) if b is not None]


class Ctx:
    """What a scenario gets: the broker(s), and a registry of what it started
    (relays, proxies, tmpfs mounts) so the driver can show and clean it up."""

    def __init__(self, brokers, name):
        self.brokers = brokers
        self.broker = brokers.first
        self.name = name
        self.relays = []
        self.proxies = []
        self.mounts = []
        self.notes = []

    def broker2(self):
        return self.brokers.second()

    def relay(self, name=None, overrides=None, uri=None, start=True,
              broker=None):
        r = H.Relay(broker or self.broker, name or self.name,
                    overrides=overrides, uri=uri)
        self.relays.append(r)
        if start:
            r.start()
        return r

    def proxy(self, broker=None):
        p = FaultProxy((broker or self.broker).port,
                       name="faultproxy-" + self.name).start()
        self.proxies.append(p)
        return p

    def tmpfs(self, size="2m"):
        t = H.Tmpfs(size)
        self.mounts.append(t)
        return t

    def consumer(self, broker=None):
        return H.Consumer(broker or self.broker)

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))


scenario = S.Registry()


# ---------------------------------------------------------------------------
# Helpers


def pub_pipelined(relay, reqs, what="PUB"):
    """Send the encoded PUBs in one write and read the replies: all OK, or a
    Failure.  Returns the message-ids."""
    with H.RawClient(relay.sock, timeout=30) as c:
        c.send(b"".join(reqs))
        replies = [c.read_line() for _ in reqs]
    bad = [(i, r) for i, r in enumerate(replies)
           if r is None or not r.startswith("OK ")]
    check(not bad, "%s: replies other than OK: %r" % (what, bad[:3]))
    return [r[3:] for r in replies]


def check_queue(ctx, q, producer, n, allow_dups=True, broker=None):
    """Everything in queue q: only producer's messages, 0 to n - 1 in
    order (harness.check_delivery()).  Returns those deliveries."""
    with ctx.consumer(broker) as c:
        msgs = c.drain(q)
    per, _ = H.check_delivery(msgs, {producer: n}, allow_dups=allow_dups,
                              note=ctx.note)
    return per.get(producer, [])


def dead_rows(relay):
    try:
        with H.RawClient(relay.sock, timeout=10) as c:
            return c.dead_list_all()
    except H.ProtocolError as e:
        raise Failure("DEAD LIST over the socket: %s" % e)


def dead_row_for(relay, message_id):
    rows = [r for r in dead_rows(relay) if r["message_id"] == message_id]
    check(len(rows) == 1, "DEAD LIST: %d rows with message-id %s (all: %r)"
          % (len(rows), message_id, dead_rows(relay)))
    return rows[0]


def own_broker(tag, conf):
    """A private node of the scenario's own, with conf lines appended to
    its rabbitmq.conf (stopped at exit if the scenario does not)."""
    return H.Broker(extra_conf=conf, name="pubrelaytest-%s-%d"
                    % (tag, os.getpid())).start()


def restart_blocked(relay, what):
    """Once the relay is blocked by the broker's alarm, SIGTERM it (exit 0)
    and start it again in the alarm; its log's length before the start."""
    wait_stat(relay, "state", lambda v: v == "blocked", 30,
              "state blocked " + what)
    check_eq(relay.term(timeout=20), 0, "exit code after SIGTERM while "
             "blocked")
    mark = len(relay.log_text())
    relay.restart()
    return mark


def wait_parked_for_good(relay, mids, attempts, timeout=60):
    """Wait until each message-id in mids is a dead letter with `attempts`
    attempts: parked at its first refusal, retried by the relay on its own
    and refused again until max_attempts.  Returns the DEAD LIST rows."""
    def done():
        rows = {r["message_id"]: r for r in dead_rows(relay)}
        return all(m in rows and rows[m]["attempts"] == attempts
                   for m in mids)
    H.wait_until(done, timeout, "%s parked with %d attempts"
                 % (", ".join(mids), attempts))
    return [dead_row_for(relay, m) for m in mids]


def client_dead_list(ctx, relay, message_id, reason_word):
    """`pubrelay dead list` names the parked message with the reason."""
    rc, out, err = relay.cmd("dead", "list")
    ctx.note("pubrelay dead list: rc=%d\n%s%s" % (rc, out, err))
    check_eq(rc, 0, "exit code of `pubrelay dead list` (stderr %r)"
             % err.strip())
    hits = [ln for ln in out.splitlines() if message_id in ln]
    check(hits, "`pubrelay dead list` does not show message-id %s: %r"
          % (message_id, out))
    check(any(reason_word in ln for ln in hits),
          "`pubrelay dead list` line for %s lacks the reason %s: %r"
          % (message_id, reason_word, hits))


def wait_stat(relay, key, pred, timeout, what):
    return relay.wait_stats(lambda s: key in s and pred(s[key]), timeout,
                            "%s (stats %s)" % (what, key))


def parked_log_lines(relay, row):
    """Log lines about parking the dead letter `row` (a DEAD LIST row): they
    name it by message-id or by outbox id."""
    by_id = re.compile(r"\bid %d\b" % row["id"])
    return [ln for ln in relay.log_text().splitlines()
            if re.search(r"\bpark", ln, re.I)
            and (row["message_id"] in ln or by_id.search(ln))]


class SlowConsumer:
    """Consumes a queue in a thread, acking one message every `delay`
    seconds (prefetch 1), and records (body, properties) in delivery order.
    finish() lets it run at full speed until the queue stays empty."""

    def __init__(self, broker, queue, delay):
        self.broker = broker
        self.queue = queue
        self.delay = delay
        self.got = []
        self.error = None
        self._finish = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def _run(self):
        try:
            conn = self.broker.connect()
            try:
                ch = conn.channel()
                ch.basic_qos(prefetch_count=1)
                idle = 0
                for m, props, body in ch.consume(self.queue,
                                                 inactivity_timeout=0.25):
                    if m is None:
                        idle += 1
                        if self._finish.is_set() and idle >= 8:
                            break
                        continue
                    idle = 0
                    self.got.append((body, props))
                    ch.basic_ack(m.delivery_tag)
                    if not self._finish.is_set():
                        time.sleep(self.delay)
                ch.cancel()
            finally:
                conn.close()
        except Exception as e:
            self.error = e

    def finish(self, timeout=60):
        """Call once the relay is drained: consume the rest and stop."""
        self._finish.set()
        self._t.join(timeout)
        if self._t.is_alive():
            raise H.HarnessError("slow consumer still busy after %ds"
                                 % timeout)
        if self.error:
            raise H.HarnessError("slow consumer failed: %r" % (self.error,))
        return self.got


def stream_with_fault(ctx, relay, q, fault, P=2, N=20000, pace=(100, 0.05),
                      trigger=3000):
    """P paced producers stream N lines each; once `trigger` messages are
    confirmed, fault(relay) runs.  Then: every producer exits 0, the relay
    drains, and every message arrives with per-producer first deliveries in
    order and duplicates only of a republished suffix."""
    prods = [H.LinesProducer(relay, q, lines_for(p, N), pace=pace).start()
             for p in range(P)]
    relay.wait_stats(lambda s: s.get("confirmed", 0) >= trigger, 60,
                     "%d messages confirmed before the fault" % trigger)
    ctx.note("fault at: %s" % H.fmt_stats(relay.stats()))
    fault(relay)
    for p, pr in enumerate(prods):
        pr.join(180)
        check_eq(pr.rc, 0, "producer %d exit code (%s)" % (p, pr.describe()))
    st = relay.wait_drained(120)
    ctx.note("drained: %s" % H.fmt_stats(st))
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {p: N for p in range(P)}, note=ctx.note)
    return st


# ---------------------------------------------------------------------------
# 1. Broker nacks: a queue at x-max-length with x-overflow = reject-publish


def nack_run(ctx, window):
    """A slowly drained queue of at most 100 messages that rejects publishes
    when full makes the broker nack for real.  The relay goes back to the
    nacked message (go-back-N) after a backoff, on the same connection."""
    P, N = 2, 1000
    relay = ctx.relay(overrides={"publish": {"window": str(window)}})
    q = H.unique_queue("nack%d" % window)
    with ctx.consumer() as c:
        c.ch.queue_declare(queue=q, durable=True, arguments={
            "x-max-length": 100, "x-overflow": "reject-publish"})
    cons = SlowConsumer(ctx.broker, q, delay=0.002).start()
    try:
        prods = [H.LinesProducer(relay, q, lines_for(p, N)).start()
                 for p in range(P)]
        for p, pr in enumerate(prods):
            pr.join(60)
            check_eq(pr.rc, 0, "producer %d exit code (%s)"
                     % (p, pr.describe()))
        st = relay.wait_drained(180)
    finally:
        msgs = cons.finish(120)
        with ctx.consumer() as c:
            left = c.count(q)
            c.ch.queue_delete(queue=q)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check_eq(left, 0, "messages left in the queue after the consumer")
    check(st.get("nacked", 0) > 0, "the broker nacked nothing (stats nacked "
          "= %s): the queue never overflowed, the test proves nothing"
          % st.get("nacked"))
    check_eq(st.get("reconnects"), 0, "stats reconnects (a nack is handled "
             "on the same connection)")
    return msgs, st


@scenario
def nack_window1(ctx):
    """window = 1: strict order even with nacks; no duplicates either (a
    nacked message was not enqueued, and nothing is published behind it).

    A durable queue with `x-max-length = 100`, `x-overflow = reject-publish`
    and a consumer acking one message every 2 ms, so the broker nacks for real;
    `[publish] window = 1`, 2 producers of 1,000 lines. Proves: `nacked > 0`
    (else the test proved nothing), `reconnects == 0` (a nack is handled on the
    same connection), every message arrives, each producer's deliveries
    strictly in order and without duplicates."""
    msgs, st = nack_run(ctx, 1)
    H.check_delivery(msgs, {0: 1000, 1: 1000}, allow_dups=False,
                     note=ctx.note)


@scenario
def nack_window64(ctx):
    """window = 64: every message arrives; first deliveries may be reordered
    by a nack inside the window (the documented exception), so only
    completeness is asserted and the reordering is reported.

    Also: no reconnect; duplicates, like reordered first deliveries, are only
    reported."""
    msgs, st = nack_run(ctx, 64)
    per, other = H.split_by_producer(msgs)
    check_eq(len(other), 0, "foreign messages in the queue")
    for p in range(2):
        check(p in per, "no message of producer %d arrived" % p)
        rep = H.check_order([d[0] for d in per[p]], range(1000), 0, 999)
        ctx.note("producer %d: %d delivered, lost=%d out_of_order=%d "
                 "duplicates=%d" % (p, rep.delivered, rep.lost,
                                    rep.out_of_order, rep.duplicates))
        check_eq(rep.lost, 0, "producer %d: accepted messages that never "
                 "arrived (%s)" % (p, rep))
        check_eq(rep.unsent, 0, "producer %d: deliveries of numbers never "
                 "sent (%s)" % (p, rep))


# ---------------------------------------------------------------------------
# 2. basic.return: mandatory messages nobody can route


@scenario
def return_park(ctx):
    """[publish] mandatory = yes, on_unroutable left at its default (park),
    max_attempts = 3.  Two unroutable messages among routable ones: each is
    parked at its first return, retried by the relay twice on its own and
    returned each time, then kept with a NO_ROUTE reason and logged once;
    the others arrive in order; no reconnect.  `pubrelay dead list` shows them;
    after binding a queue `pubrelay dead retry ID` replays one (it arrives
    with the same message-id, at the tail); `pubrelay dead purge --all`
    deletes the other.

    `mandatory = yes`, `on_unroutable` at its default (park), `max_attempts =
    3`; two unroutable messages (amq.direct, no binding) among 15 routable
    ones, pipelined. Proves: both parked at their first return and retried by
    the relay until each has `attempts == 3`, a reason with `NO_ROUTE`, its
    exchange and routing key (`DEAD LIST` on the socket), shown by `pubrelay
    dead list`, logged once as parked; `returned >= 6`; no reconnect; the 15
    others arrive in order. After binding the routing key, `pubrelay dead retry
    ID` replays one: it arrives once with the same message-id; a retry of an
    unknown id exits non-zero; `pubrelay dead purge --all` empties the table
    (`dead_messages == 0`, empty list)."""
    MAX = 3
    relay = ctx.relay(overrides={"publish": {"mandatory": "yes",
                                             "max_attempts": str(MAX)}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("retpark"))
    k1, k2 = q + "-nobody-1", q + "-nobody-2"
    rk = [("routing-key", q)]
    reqs = ([H.encode_pub(H.seq_line(1, i), rk) for i in range(5)]
            + [H.encode_pub("unroutable-1", [("exchange", "amq.direct"),
                                             ("routing-key", k1)])]
            + [H.encode_pub(H.seq_line(1, i), rk) for i in range(5, 10)]
            + [H.encode_pub("unroutable-2", [("exchange", "amq.direct"),
                                             ("routing-key", k2)])]
            + [H.encode_pub(H.seq_line(1, i), rk) for i in range(10, 15)])
    mids = pub_pipelined(relay, reqs)
    mid1, mid2 = mids[5], mids[11]
    wait_parked_for_good(relay, [mid1, mid2], MAX)
    st = relay.wait_drained(60)
    ctx.note("parked and drained: %s" % H.fmt_stats(st))
    # Each is returned at least MAX times; a return of the second inside a
    # window that the first one's retry breaks is not an attempt (that copy
    # is republished anyway), so `returned` may exceed 2 * MAX.
    check(st.get("returned", 0) >= 2 * MAX, "stats returned = %s, want at "
          "least %d (%d attempts for each of 2 unroutable messages)"
          % (st.get("returned"), 2 * MAX, MAX))
    check_eq(st.get("reconnects"), 0, "stats reconnects")
    for mid, key in ((mid1, k1), (mid2, k2)):
        row = dead_row_for(relay, mid)
        ctx.note("dead letter: %r" % row)
        check("NO_ROUTE" in row["reason"], "dead letter %s reason %r lacks "
              "NO_ROUTE" % (mid, row["reason"]))
        check_eq(row["attempts"], MAX, "attempts of dead letter %s" % mid)
        check_eq((row["exchange"], row["routing_key"]), ("amq.direct", key),
                 "exchange and routing key of dead letter %s" % mid)
        client_dead_list(ctx, relay, mid, "NO_ROUTE")
        logged = parked_log_lines(relay, row)
        check_eq(len(logged), 1, "log lines about parking %s (%r)"
                 % (mid, logged))
    check_queue(ctx, q, 1, 15)

    # Replay the first: bind its routing key to the queue, retry by id.
    with ctx.consumer() as c:
        c.ch.queue_bind(queue=q, exchange="amq.direct", routing_key=k1)
    row1 = dead_row_for(relay, mid1)
    rc, out, err = relay.cmd("dead", "retry", row1["id"])
    ctx.note("pubrelay dead retry %d: rc=%d %s%s"
             % (row1["id"], rc, out.strip(), err.strip()))
    check_eq(rc, 0, "exit code of `pubrelay dead retry %d` (%s)"
             % (row1["id"], err.strip()))
    st = relay.wait_drained(60)
    check_eq(st.get("dead_messages"), 1, "stats dead_messages after retry")
    with ctx.consumer() as c:
        msgs = c.drain(q)
    check_eq([(b, p.message_id) for b, p in msgs],
             [(b"unroutable-1", mid1)],
             "the replayed message (body, message-id) in the queue")
    rc, out, err = relay.cmd("dead", "retry", 999999999)
    ctx.note("pubrelay dead retry 999999999: rc=%d %s" % (rc, err.strip()))
    check(rc != 0, "`pubrelay dead retry` of an id that is not parked "
          "exited 0")

    # Purge the other.
    rc, out, err = relay.cmd("dead", "purge", "--all")
    ctx.note("pubrelay dead purge --all: rc=%d %s%s"
             % (rc, out.strip(), err.strip()))
    check_eq(rc, 0, "exit code of `pubrelay dead purge --all` (%s)"
             % err.strip())
    st = relay.stats()
    check_eq(st.get("dead_messages"), 0, "stats dead_messages after purge")
    check_eq(dead_rows(relay), [], "DEAD LIST after purge")
    rc, out, err = relay.cmd("dead", "list")
    check(rc == 0 and mid2 not in out, "`pubrelay dead list` after purge: "
          "rc=%d %r" % (rc, out))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def return_retry(ctx):
    """on_unroutable = retry, window = 1: an unroutable message is retried
    with backoff and holds the ones behind it (nothing is parked); once a
    binding makes it routable, everything arrives in order.

    `on_unroutable = retry`, `max_attempts = 2`, `window = 1`: the 6th of 15
    messages is unroutable: it is returned again and again (>= 4 times) without
    being parked, the 9 behind it wait (`backlog == 10`, only 5 in the queue);
    after a binding everything arrives in order, exactly once, with the
    message-ids of the OK replies."""
    relay = ctx.relay(overrides={"publish": {
        "mandatory": "yes", "on_unroutable": "retry", "max_attempts": "2",
        "window": "1"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("retretry"))
    key = q + "-later"
    rk = [("routing-key", q)]
    reqs = ([H.encode_pub(H.seq_line(1, i), rk) for i in range(5)]
            + [H.encode_pub(H.seq_line(1, 5), [("exchange", "amq.direct"),
                                               ("routing-key", key)])]
            + [H.encode_pub(H.seq_line(1, i), rk) for i in range(6, 15)])
    mids = pub_pipelined(relay, reqs)
    st = wait_stat(relay, "returned", lambda v: v >= 4, 60,
                   "the unroutable message returned 4 times (beyond "
                   "max_attempts = 2: retry never parks)")
    ctx.note("retrying: %s" % H.fmt_stats(st))
    check_eq(st.get("dead_messages"), 0, "stats dead_messages with "
             "on_unroutable = retry")
    check_eq(st.get("backlog"), 10, "stats backlog (the returned message and "
             "the 9 behind it)")
    check_eq(st.get("reconnects"), 0, "stats reconnects")
    with ctx.consumer() as c:
        check_eq(c.count(q), 5, "messages in the queue while the 6th is "
                 "unroutable (those behind it must wait)")
        c.ch.queue_bind(queue=q, exchange="amq.direct", routing_key=key)
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check_eq(st.get("reconnects"), 0, "stats reconnects")
    mine = check_queue(ctx, q, 1, 15, allow_dups=False)
    I.check_ids_stable(1, mine, dict(enumerate(mids)))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def return_same_id(ctx):
    """Returns of messages that share a message-id with another one in
    flight (window 64, mandatory, max_attempts = 1: a wrong match parks the
    wrong message at once).  20 pairs, each A routed to a durable queue and
    B, with A's message-id, unroutable: first with different routing keys
    (the return names B: exactly B is parked, every A arrives once, no
    republishing); then through a headers exchange, same exchange, routing
    key and body size, A's header matching the binding and B's not (the
    return cannot tell them apart: the relay republishes one at a time, so
    every A arrives, first deliveries in order, and exactly the 20 B are
    parked, as a binding added for them and `DEAD RETRY ALL` show).

    `mandatory = yes`, `window = 64`, `max_attempts = 1` (a wrong match parks
    the wrong message at once); 20 pairs, each A routed to a durable queue and
    B, with A's message-id, unroutable. With different routing keys: exactly
    the 20 B are parked (their routing key), the A arrive once each, in order.
    Through a headers exchange (same exchange, routing key, message-id and body
    size; only A's header matches the binding), where the return cannot tell
    the two apart: 20 parked, no reconnect, every A arrives (first deliveries
    in order, duplicates allowed), and after a binding for B's header `pubrelay
    dead retry --all` delivers exactly the 20 B, once each, in order. The old
    match by message-id alone parked the A and lost the B."""
    relay = ctx.relay(overrides={"publish": {"mandatory": "yes",
                                             "window": "64",
                                             "max_attempts": "1"}})
    P = 20
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("sameid"))
        qh = c.declare(H.unique_queue("sameid-h"))
        qb = c.declare(H.unique_queue("sameid-b"))
        hx = H.unique_queue("sameid-hx")
        c.ch.exchange_declare(exchange=hx, exchange_type="headers",
                              durable=False, auto_delete=True)
        c.ch.queue_bind(queue=qh, exchange=hx, routing_key="",
                        arguments={"x-match": "all", "route": "a"})
    nobody = q + "-nobody"

    def parked(want_key):
        st = wait_stat(relay, "dead_messages", lambda v: v >= P, 60,
                       "%d messages parked" % P)
        relay.wait_drained(60)
        rows = dead_rows(relay)
        ctx.note("%d parked: %s" % (len(rows), H.fmt_stats(st)))
        check_eq(len(rows), P, "dead letters")
        check_eq(sorted(set(r["routing_key"] for r in rows)), [want_key],
                 "routing keys of the dead letters")
        return rows

    # Different routing keys: the return says which message it is.
    reqs = []
    for i in range(P):
        mid = "%s-pair-%d" % (q, i)
        reqs.append(H.encode_pub(H.seq_line(1, i), [
            ("routing-key", q), ("message-id", mid)]))
        reqs.append(H.encode_pub(H.seq_line(1, i), [
            ("routing-key", nobody), ("message-id", mid)]))
    pub_pipelined(relay, reqs)
    parked(nobody)
    check_queue(ctx, q, 1, P, allow_dups=False)
    rc, out, err = relay.cmd("dead", "purge", "--all")
    check_eq(rc, 0, "exit code of `pubrelay dead purge --all` (%s)"
             % err.strip())

    # Alike but for a header: the return cannot say which of the two.
    reqs = []
    for i in range(P):
        mid = "%s-alike-%d" % (q, i)
        for route, producer in (("a", 2), ("b", 3)):
            reqs.append(H.encode_pub(H.seq_line(producer, i), [
                ("exchange", hx), ("routing-key", "k"),
                ("message-id", mid), ("header", "route=" + route)]))
    pub_pipelined(relay, reqs)
    parked("k")
    st = relay.stats()
    check_eq(st.get("reconnects"), 0, "stats reconnects")
    check_queue(ctx, qh, 2, P, allow_dups=True)
    with ctx.consumer() as c:
        c.ch.queue_bind(queue=qb, exchange=hx, routing_key="",
                        arguments={"x-match": "all", "route": "b"})
    rc, out, err = relay.cmd("dead", "retry", "--all")
    check_eq(rc, 0, "exit code of `pubrelay dead retry --all` (%s)"
             % err.strip())
    relay.wait_drained(60)
    check_queue(ctx, qb, 3, P, allow_dups=False)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 3. The broker closes the channel: 404 NOT_FOUND, 403 ACCESS_REFUSED


@scenario
def poison_no_stall(ctx):
    """mandatory = yes, on_unroutable and on_rejected = park (the defaults),
    window 256.  While one client streams 3000 messages, another sends 20
    that the broker refuses: unroutable ones (returned) and ones to an
    exchange that does not exist (the channel is closed, 404).  Each refused
    message is parked at its first refusal, without a go-back of the stream
    or a search for the culprit one message at a time (the 404 names the
    exchange), retried by the relay twice on its own, and kept after its
    third refusal; the stream arrives complete and in order (the messages
    in flight when a channel closes may come twice).  The old relay retried
    each refused message in the stream, one at a time behind a backoff."""
    relay = ctx.relay(overrides={"publish": {"mandatory": "yes",
                                             "max_attempts": "3"},
                                 "log": {"level": "debug"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("poison"))
    N, P = 3000, 20
    stream = H.PipelinedStream(relay.sock, [
        H.encode_pub(H.seq_line(1, i), [("routing-key", q)])
        for i in range(N)], chunk=20, pause=0.01).start()
    poison_ids = []
    with H.RawClient(relay.sock, timeout=30) as c:
        for i in range(P):
            if i % 2:
                props = [("exchange", "pubrelay-missing-%d" % os.getpid()),
                         ("routing-key", q)]
            else:
                props = [("exchange", "amq.direct"),
                         ("routing-key", q + "-nobody")]
            reply = c.request(H.encode_pub("poison-%d" % i, props))
            check(reply.startswith("OK "), "poison %d: %r" % (i, reply))
            poison_ids.append(reply[3:])
            time.sleep(0.05)
    stream.join(60)
    check_eq(stream.ok_count(), N, "stream OKs")
    wait_parked_for_good(relay, poison_ids, 3, timeout=90)
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check(st.get("reconnects", 0) == 0, "no reconnect: %s"
          % st.get("reconnects"))
    probes = [ln for ln in relay.log_text().splitlines()
              if "one at a time" in ln]
    ctx.note("lines about republishing one at a time: %d %r"
             % (len(probes), probes[:2]))
    check_eq(len(probes), 0, "go-backs one message at a time")
    check_queue(ctx, q, 1, N)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


def rejected_park_run(ctx, relay, q, bad_exchange, reason, fix, rk_bad):
    """10 good, 1 to bad_exchange, 10 good (pipelined): the bad one is
    parked with `reason` at once (the reply names its exchange), retried by
    the relay up to max_attempts = 3, the others arrive in order, the
    channel is reopened on the same connection; after fix() the dead letter
    is replayed and arrives with its message-id."""
    rk = [("routing-key", q)]
    reqs = ([H.encode_pub(H.seq_line(1, i), [("exchange", "amq.direct")] + rk)
             for i in range(10)]
            + [H.encode_pub("rejected-1", [("exchange", bad_exchange),
                                           ("routing-key", rk_bad)])]
            + [H.encode_pub(H.seq_line(1, i), rk) for i in range(10, 20)])
    mids = pub_pipelined(relay, reqs)
    mid = mids[10]
    wait_parked_for_good(relay, [mid], 3)
    st = relay.wait_drained(60)
    ctx.note("parked and drained: %s" % H.fmt_stats(st))
    check(st.get("reconnects", 0) <= 1, "stats reconnects = %s: a reconnect "
          "storm (a channel error needs a new channel, not a new connection)"
          % st.get("reconnects"))
    row = dead_row_for(relay, mid)
    ctx.note("dead letter: %r" % row)
    check(reason in row["reason"], "dead letter reason %r lacks %s"
          % (row["reason"], reason))
    check_eq(row["attempts"], 3, "attempts of the dead letter")
    client_dead_list(ctx, relay, mid, reason)
    logged = parked_log_lines(relay, row)
    check_eq(len(logged), 1, "log lines about parking %s (%r)" % (mid, logged))
    check_queue(ctx, q, 1, 20)

    fix()
    rc, out, err = relay.cmd("dead", "retry", "--all")
    ctx.note("pubrelay dead retry --all: rc=%d %s%s"
             % (rc, out.strip(), err.strip()))
    check_eq(rc, 0, "exit code of `pubrelay dead retry --all` (%s)"
             % err.strip())
    st = relay.wait_drained(60)
    check_eq(st.get("dead_messages"), 0, "stats dead_messages after retry")
    with ctx.consumer() as c:
        msgs = c.drain(q)
    check_eq([(b, p.message_id) for b, p in msgs], [(b"rejected-1", mid)],
             "the replayed message (body, message-id) in the queue")
    check(relay.stats().get("reconnects", 0) <= 1, "reconnects grew")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def rejected_404_park(ctx):
    """on_rejected = park: a message to a missing exchange (channel closed
    with 404) is parked with NOT_FOUND after max_attempts; the others go on
    in order; at most one reconnect.  Declaring the exchange and `pubrelay
    dead retry --all` delivers it.

    In numbers: the message sits between 20 others, is parked at once and kept
    with `attempts == 3` (logged once as parked), `reconnects <= 1`; `dead
    retry --all` delivers it with its message-id."""
    relay = ctx.relay(overrides={"publish": {"on_rejected": "park",
                                             "max_attempts": "3"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("rej404"))
        c.ch.queue_bind(queue=q, exchange="amq.direct", routing_key=q)
    ex = q + "-missing"

    def fix():
        with ctx.consumer() as c:
            c.ch.exchange_declare(exchange=ex, exchange_type="direct")
            c.ch.queue_bind(queue=q, exchange=ex, routing_key="k")
    try:
        rejected_park_run(ctx, relay, q, ex, "NOT_FOUND", fix, "k")
    finally:
        with ctx.consumer() as c:
            c.ch.exchange_delete(exchange=ex)


@scenario
def rejected_404_retry(ctx):
    """on_rejected = retry: the message to the missing exchange is retried
    with backoff (nothing parked, no reconnect storm) and holds the ones
    behind it; once the exchange exists everything arrives in order.

    In numbers: it holds the 9 behind it, `backlog == 10` after 4 s of retries
    beyond `max_attempts`, `reconnects <= 1`; then all 20 arrive in order."""
    # debug: every attempt is logged ("refused (attempt N)"), not the first
    relay = ctx.relay(overrides={"publish": {"on_rejected": "retry",
                                             "max_attempts": "2"},
                                 "log": {"level": "debug"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("rej404r"))
    ex = q + "-later"
    rk = [("routing-key", q)]
    reqs = ([H.encode_pub(H.seq_line(1, i), rk) for i in range(10)]
            + [H.encode_pub(H.seq_line(1, 10), [("exchange", ex)] + rk)]
            + [H.encode_pub(H.seq_line(1, i), rk) for i in range(11, 20)])
    mids = pub_pipelined(relay, reqs)
    try:
        wait_stat(relay, "backlog", lambda v: v == 10, 30,
                  "the 10 messages before the rejected one confirmed")
        H.wait_until(lambda: "NOT_FOUND" in relay.log_text(), 30,
                     "the relay to log the 404 (NOT_FOUND)")
        # a third attempt, beyond max_attempts = 2, and not parked
        H.wait_until(lambda: re.search(r"outbox id \d+ refused \(attempt "
                                       r"3\)", relay.log_text()), 30,
                     "a third attempt of the refused message")
        st = relay.stats()
        ctx.note("retrying: %s" % H.fmt_stats(st))
        check_eq(st.get("dead_messages"), 0, "stats dead_messages with "
                 "on_rejected = retry")
        check_eq(st.get("backlog"), 10, "stats backlog (the rejected message "
                 "and the 9 behind it)")
        check(st.get("reconnects", 0) <= 1, "stats reconnects = %s: a "
              "reconnect storm" % st.get("reconnects"))
        with ctx.consumer() as c:
            n = c.count(q)
            check(n >= 10, "only %d messages in the queue before the "
                  "rejected one" % n)
            c.ch.exchange_declare(exchange=ex, exchange_type="direct")
            c.ch.queue_bind(queue=q, exchange=ex, routing_key=q)
        st = relay.wait_drained(60)
        ctx.note("drained: %s" % H.fmt_stats(st))
        check(st.get("reconnects", 0) <= 1, "stats reconnects = %s"
              % st.get("reconnects"))
        with ctx.consumer() as c:
            msgs = c.drain(q)
    finally:
        with ctx.consumer() as c:
            c.ch.exchange_delete(exchange=ex)
    per, _ = H.check_delivery(msgs, {1: 20}, note=ctx.note)
    I.check_ids_stable(1, per[1], dict(enumerate(mids)))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def rejected_403_park(ctx):
    """A user with write permission on amq.default and amq.direct only: a
    message to another (existing) exchange closes the channel with 403 and
    is parked with ACCESS_REFUSED; the others arrive in order.  After the
    permission is granted, the replay arrives."""
    b = ctx.broker
    user = "pubrelay-limited-%d-%04x" % (os.getpid(), random.randrange(65536))
    b.add_user(user, "secret", configure="^$",
               write=r"^(amq\.default|amq\.direct)$", read=".*")
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("rej403"))
        c.ch.queue_bind(queue=q, exchange="amq.direct", routing_key=q)
        ex = q + "-forbidden"
        c.ch.exchange_declare(exchange=ex, exchange_type="direct")
        c.ch.queue_bind(queue=q, exchange=ex, routing_key="k")
    relay = ctx.relay(uri=b.uri(user=user, password="secret"),
                      overrides={"publish": {"on_rejected": "park",
                                             "max_attempts": "3"}})

    def fix():
        b.ctl("set_permissions", "-p", "/", user, "^$", ".*", ".*")
    try:
        rejected_park_run(ctx, relay, q, ex, "ACCESS_REFUSED", fix, "k")
    finally:
        with ctx.consumer() as c:
            c.ch.exchange_delete(exchange=ex)
        b.ctl("delete_user", user, check=False)


# ---------------------------------------------------------------------------
# 4. connection.blocked: a memory alarm on the broker


@scenario
def blocked(ctx):
    """A memory alarm (watermark of 1 byte): state becomes `blocked` once
    the relay tries to publish, clients still get their OKs at once (the
    outbox grows), no reconnect; when the alarm clears it drains, in order,
    exactly once.  Then again, and SIGTERM while blocked: exit 0 within a few
    seconds, the backlog is there after the restart (blocked again), and it
    drains once the alarm clears.

    In numbers: the alarm is `set_vm_memory_high_watermark absolute 1`, 2,000
    OKs come in under 10 s, the watermark goes back to 0.4; SIGTERM while
    blocked exits 0 in under 5 s and the backlog after the restart is the
    same."""
    b = ctx.broker
    relay = ctx.relay()
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("blocked"))
    pr = H.LinesProducer(relay, q, lines_for(1, 1000)).start()
    pr.join(60)
    check_eq(pr.rc, 0, "producer before the alarm (%s)" % pr.describe())
    relay.wait_drained(60)
    try:
        b.memory_alarm(True)
        H.wait_until(lambda: b.alarms(), 20, "the memory alarm to be raised")
        t0 = time.monotonic()
        pr = H.LinesProducer(relay, q, lines_for(1, 3000, 1000)).start()
        pr.join(60)
        took = time.monotonic() - t0
        check_eq(pr.rc, 0, "producer during the alarm (%s)" % pr.describe())
        ctx.note("2000 OKs in %.2fs during the alarm" % took)
        check(took < 10, "2000 OKs took %.1fs during a memory alarm" % took)
        st = wait_stat(relay, "state", lambda v: v == "blocked", 30,
                       "state blocked during the alarm")
        ctx.note("blocked: %s" % H.fmt_stats(st))
        time.sleep(3)
        st = relay.stats()
        check_eq(st.get("state"), "blocked", "state 3 s later")
        check_eq(st.get("reconnects"), 0, "stats reconnects while blocked")
        check(st.get("backlog", 0) > 0, "backlog while blocked: %s"
              % st.get("backlog"))
    finally:
        b.memory_alarm(False)
    st = relay.wait_drained(60)
    ctx.note("unblocked and drained: %s" % H.fmt_stats(st))
    check_eq(st.get("reconnects"), 0, "stats reconnects after the alarm")
    check(st.get("state") == "connected", "state after the alarm: %s"
          % st.get("state"))

    # Again, and SIGTERM while blocked.
    try:
        b.memory_alarm(True)
        H.wait_until(lambda: b.alarms(), 20, "the memory alarm to be raised")
        pr = H.LinesProducer(relay, q, lines_for(1, 5000, 3000)).start()
        pr.join(60)
        check_eq(pr.rc, 0, "producer during the 2nd alarm (%s)"
                 % pr.describe())
        wait_stat(relay, "state", lambda v: v == "blocked", 30,
                  "state blocked during the 2nd alarm")
        # Frames the broker read before blocking may still be confirmed:
        # take the backlog once it holds still for a second.
        prev = [None]

        def steady():
            b_now = relay.stats().get("backlog")
            same, prev[0] = b_now == prev[0], b_now
            return same
        H.wait_until(steady, 15, "the backlog to hold still while blocked",
                     interval=1.0)
        st = relay.stats()
        backlog = st.get("backlog")
        ctx.note("blocked again: %s" % H.fmt_stats(st))
        check(backlog > 0, "backlog while blocked: %s" % backlog)
        term_within(ctx, relay, "while blocked", 5)
        relay.restart()
        st = relay.stats()
        ctx.note("after restart: %s" % H.fmt_stats(st))
        check_eq(st.get("backlog"), backlog, "backlog after the restart")
        wait_stat(relay, "state", lambda v: v == "blocked", 30,
                  "state blocked after the restart (alarm still on)")
    finally:
        b.memory_alarm(False)
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check_queue(ctx, q, 1, 5000)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def blocked_long(ctx):
    """A memory alarm that outlasts TCP_USER_TIMEOUT (2 x heartbeat, 10 s
    here) while the broker's window is closed on unsent frames: the broker
    answers the window probes, so the link is alive and must be kept, not
    cut and reconnected every 10 s (sending a window again each time).
    1 KiB messages: the window fits the socket buffers, the publisher reads
    connection.blocked and waits in its loop.  64 KiB messages, relay
    restarted during the alarm with them in the outbox: it writes a 16 MiB
    window into the closed one and waits inside the write.  No reconnect in
    14 s either way; when the alarm clears, everything arrives in order."""
    b = ctx.broker
    heartbeat = 5
    relay = ctx.relay(overrides={"broker": {"heartbeat": str(heartbeat)},
                                 "log": {"level": "debug"}})
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("blocked-long"))

    def alarm_outlasts_timeout(what):
        time.sleep(2 * heartbeat + 4)
        st = relay.stats()
        ctx.note("%s, %d s into the alarm: %s"
                 % (what, 2 * heartbeat + 4, H.fmt_stats(st)))
        check_eq(st.get("reconnects"), 0, "reconnects during an alarm "
                 "longer than 2 x heartbeat (%s; last_error %s)"
                 % (what, st.get("last_error")))
        check(st.get("backlog", 0) > 0, "backlog while blocked (%s): %s"
              % (what, st.get("backlog")))

    def pipelined(first, n, pad):
        # One write: committed together, published as a full window
        # before connection.blocked can arrive.
        pub_pipelined(relay, [
            H.encode_pub(H.seq_line(1, i, pad=pad), [("routing-key", q)])
            for i in range(first, first + n)],
            "%d x %d B during the alarm" % (n, pad))

    try:
        b.memory_alarm(True)
        H.wait_until(lambda: b.alarms(), 20, "the memory alarm to be raised")
        pipelined(0, 3000, 1024)
        alarm_outlasts_timeout("3000 x 1 KiB")
    finally:
        b.memory_alarm(False)
    st = relay.wait_drained(120)
    check_eq(st.get("reconnects"), 0, "reconnects after the alarm")

    try:
        b.memory_alarm(True)
        H.wait_until(lambda: b.alarms(), 20, "the memory alarm to be raised")
        pipelined(3000, 300, 65536)
        mark = restart_blocked(relay, "during the 2nd alarm")
        alarm_outlasts_timeout("300 x 64 KiB, restarted")
        held = [ln for ln in relay.log_text()[mark:].splitlines()
                if "holds its receive window closed" in ln]
        ctx.note("after the restart: %r" % held[:1])
        check(held, "the restarted relay saw the broker's window closed "
              "(debug log line)")
    finally:
        b.memory_alarm(False)
    st = relay.wait_drained(120)
    check_eq(st.get("reconnects"), 0, "reconnects after the 2nd alarm")
    # Frames the broker read before blocking may be sent again after the
    # restart: duplicates allowed there, never a gap or a reordering.
    check_queue(ctx, q, 1, 3300)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def blocked_wal(ctx):
    """A relay restarted during a memory alarm with 8 MiB of 64 KiB
    messages in its outbox writes a window into the broker's closed one
    before connection.blocked arrives, and waits inside that write (a
    broker of its own with 16 KiB socket buffers, so that 4 MiB in flight
    do not fit them).  It must not keep a read of the outbox open meanwhile,
    or no checkpoint passes it and the write-ahead log grows with every
    message producers send, outside max_bytes.  48 MiB more accepted during
    the alarm: the log stays under 16 MiB (its working size is 4 MiB); then
    everything arrives in order."""
    b = own_broker("smallbuf", ["tcp_listen_options.recbuf = 16384",
                                "tcp_listen_options.sndbuf = 16384"])
    relay = ctx.relay(overrides={"log": {"level": "debug"}}, broker=b)
    wal = relay.outbox + "-wal"
    with ctx.consumer(b) as c:
        q = c.declare(H.unique_queue("blocked-wal"))
    batch, pad = 32, 65536

    def pipelined(k):
        pub_pipelined(relay, [
            H.encode_pub(H.seq_line(1, i, pad=pad), [("routing-key", q)])
            for i in range(k * batch, (k + 1) * batch)],
            "%d x 64 KiB during the alarm" % batch)

    sizes = []
    try:
        b.memory_alarm(True)
        H.wait_until(lambda: b.alarms(), 20, "the memory alarm to be raised")
        for k in range(4):
            pipelined(k)
        mark = restart_blocked(relay, "with 8 MiB queued")
        H.wait_until(lambda: "holds its receive window closed" in
                     relay.log_text()[mark:], 30, "the restarted relay to "
                     "wait in a write into the closed window (debug line)")
        for k in range(4, 28):
            pipelined(k)
            sizes.append(os.path.getsize(wal))
        st = relay.stats()
        ctx.note("log size after each 2 MiB: %s; %s"
                 % (" ".join("%.1f" % (n / 1048576.0) for n in sizes),
                    H.fmt_stats(st)))
        check(max(sizes) < 16 * 1048576, "the write-ahead log stayed under "
              "16 MiB while 48 MiB came in (largest %.1f MiB)"
              % (max(sizes) / 1048576.0))
    finally:
        b.memory_alarm(False)
    relay.wait_drained(120)
    # Frames the broker read before blocking may be sent again after the
    # restart: duplicates allowed there, never a gap or a reordering.
    check_queue(ctx, q, 1, batch * 28, broker=b)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    b.stop()


@scenario
def wal_held_full(ctx):
    """Another program holds a read of the outbox open (a backup, an
    sqlite3 shell): no checkpoint passes it, and the write-ahead log grows
    beside the rows with every message.  What it holds beyond twice its
    working size counts against max_bytes: with max_bytes 32M and no broker,
    64 KiB messages get FULL, naming the log, before 26 MiB of them were
    accepted (counting the rows alone, at 32 MiB, with as much again in the
    log).  Once the read ends, the space comes back without a restart and
    messages are accepted again."""
    import sqlite3
    relay = ctx.relay(uri=DEAD_URI, overrides={"outbox": {"max_bytes": "32M"}})
    pad = 65536

    def enc(i):
        return H.encode_pub(H.seq_line(1, i, pad=pad),
                            [("routing-key", "wal-held")])
    pub_pipelined(relay, [enc(0)], "a first message")
    con = sqlite3.connect(relay.outbox, isolation_level=None)
    try:
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM outbox").fetchone()
        accepted, reply = 1, None
        with H.RawClient(relay.sock, timeout=30) as c:
            for i in range(1, 1000):
                reply = c.request(enc(i))
                if not reply.startswith("OK "):
                    break
                accepted += 1
        wal = os.path.getsize(relay.outbox + "-wal")
        ctx.note("%d x 64 KiB accepted, then %r; log %.1f MiB"
                 % (accepted, reply, wal / 1048576.0))
        check(reply is not None and reply.startswith("ERR FULL ") and
              "write-ahead log" in reply, "FULL naming the log: %r" % reply)
        check(accepted * pad < 26 * 1048576, "FULL before 26 MiB of "
              "messages (%.1f MiB accepted)" % (accepted * pad / 1048576.0))
    finally:
        con.execute("COMMIT")
        con.close()

    def accepted_again():
        with H.RawClient(relay.sock, timeout=30) as c:
            return c.request(enc(accepted)).startswith("OK ")
    H.wait_until(accepted_again, 15, "a message accepted once the read "
                 "ended", interval=0.3)
    wal = os.path.getsize(relay.outbox + "-wal")
    check(wal <= 8 * 1048576, "the log back under 8 MiB: %.1f MiB"
          % (wal / 1048576.0))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def frame_max_park(ctx):
    """A broker whose frame_max (4096) is smaller than the content header
    a message's properties need (40 headers of 200 bytes): sent, the broker
    would close the connection, and again after every reconnect.  Accepted
    while the relay had never connected (frame_max unknown), it is parked
    with the reason when it reaches the head of the window, and the
    messages around it are delivered in order without a reconnect.  Once
    the limit is known, such a message is refused at once with TOOBIG."""
    b = own_broker("frame", ["frame_max = 4096"])
    with ctx.consumer(b) as c:
        q = c.declare(H.unique_queue("frame-max"))
    big = [("routing-key", q), ("message-id", "too-big-1")] + [
        ("header", "h%02d=%s" % (i, "x" * 200)) for i in range(40)]
    b.stop_app()
    # max_attempts 1: parked for good at once, no retry of its own
    relay = ctx.relay(broker=b, overrides={"publish": {"max_attempts": "1"}})
    ids = pub_pipelined(relay, [
        H.encode_pub(H.seq_line(1, 0), [("routing-key", q)]),
        H.encode_pub(H.seq_line(1, 1), big),
        H.encode_pub(H.seq_line(1, 2), [("routing-key", q)])],
        "two messages around one too big for the broker")
    check_eq(ids[1], "too-big-1", "the big one's id")
    b.start_app()
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check_eq(st.get("parked"), 1, "parked")
    check_eq(st.get("reconnects"), 0, "reconnects")
    row = dead_row_for(relay, "too-big-1")
    check("frame_max" in row["reason"], "the dead letter's reason names "
          "frame_max: %r" % row["reason"])
    client_dead_list(ctx, relay, "too-big-1", "frame_max")

    with H.RawClient(relay.sock, timeout=10) as c:
        reply = c.request(H.encode_pub(H.seq_line(1, 99), big))
    ctx.note("once frame_max is known: %r" % reply)
    check(reply.startswith("ERR TOOBIG ") and "frame_max" in reply,
          "refused with TOOBIG naming frame_max: %r" % reply)
    pub_pipelined(relay, [H.encode_pub(H.seq_line(1, 3), [("routing-key",
                                                            q)])])
    relay.wait_drained(30)
    with ctx.consumer(b) as c:
        msgs = c.drain(q)
    seqs = [H.parse_seq(body) for body, _ in msgs]
    check_eq(seqs, [(1, 0), (1, 2), (1, 3)], "the messages delivered, in "
             "order (all but the big ones)")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    b.stop()


# ---------------------------------------------------------------------------
# 5. A stalled network, through the fault proxy


def freeze_noticed(ctx, px, relay, what, limit, cause):
    """Freeze the proxy; the relay must leave `connected` within limit
    seconds and name the cause (a regex) in last_error.  Returns STATS."""
    px.freeze()
    t0 = time.monotonic()
    st = relay.wait_stats(lambda s: s.get("state") != "connected", 20,
                          "pubrelayd to notice the %s" % what)
    took = time.monotonic() - t0
    ctx.note("%s noticed after %.1fs: state=%s last_error=%s"
             % (what, took, st.get("state"), st.get("last_error")))
    check(took <= limit, "the %s was noticed after %.1fs (want <= %g s)"
          % (what, took, limit))
    check(re.search(cause, str(st.get("last_error")), re.I),
          "last_error does not match %r: %r" % (cause, st.get("last_error")))
    return st


STALL_OVERRIDES = {"broker": {"heartbeat": "2", "connect_timeout": "2s"},
                   "publish": {"confirm_timeout": "5s"}}


def wait_reconnected(relay, what, before=0):
    """Wait until the relay has reconnected (reconnects > before) after
    what, and is connected."""
    relay.wait_stats(lambda s: s.get("reconnects", 0) > before
                     and s.get("state") == "connected", 30,
                     "pubrelayd to reconnect after the %s" % what)


def stall_stream(ctx, tag, overrides, fault):
    """A relay with overrides reaches the broker through a fresh fault
    proxy; stream_with_fault() with fault(px, relay).  Returns (px, relay)
    for more after it."""
    px = ctx.proxy()
    relay = ctx.relay(uri=ctx.broker.uri(port=px.port), overrides=overrides)
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue(tag))
    stream_with_fault(ctx, relay, q, lambda relay: fault(px, relay))
    ctx.note("proxy: %s" % px.stats())
    return px, relay


@scenario
def stall_freeze(ctx):
    """heartbeat = 2, confirm_timeout = 5s.  The proxy freezes (no bytes,
    no FIN, no RST) during a stream: the relay notices within 10 s
    (last_error names the heartbeat or the confirm timeout), reconnects
    once the proxy passes again, and everything arrives (duplicates only of
    the unconfirmed suffix).  Then a freeze of an idle link: the heartbeat
    alone detects it.

    Through `faultproxy.py`, `heartbeat = 2`, `confirm_timeout = 5s`: the proxy
    freezes during a stream (2 paced producers, 20,000 lines each): the relay
    leaves `connected` within 10 s with `last_error` naming the heartbeat or
    the confirm timeout; after the proxy passes again it reconnects and every
    message arrives, duplicates only of the unconfirmed suffix. Then a freeze
    of the idle link: detected by the heartbeat within 10 s."""
    def fault(px, relay):
        # heartbeat 2 and confirm_timeout 5s: within 10 s
        freeze_noticed(ctx, px, relay, "frozen link", 10,
                       r"heartbeat|confirm")
        time.sleep(2)
        px.passthrough()
        wait_reconnected(relay, "freeze")
    px, relay = stall_stream(ctx, "freeze", STALL_OVERRIDES, fault)

    # An idle link: only heartbeats can tell.
    r0 = relay.stats().get("reconnects", 0)
    freeze_noticed(ctx, px, relay, "frozen idle link", 10, r"heartbeat")
    px.passthrough()
    wait_reconnected(relay, "idle freeze", r0)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def stall_confirm_timeout(ctx):
    """heartbeat = 30 (far away), confirm_timeout = 3s: a freeze during a
    stream is detected by the confirm timeout alone (within about 6 s,
    last_error names it), the relay reconnects once the proxy passes again,
    and everything arrives."""
    def fault(px, relay):
        # heartbeat 30, confirm_timeout 3s: the confirm timeout, by 6 s
        freeze_noticed(ctx, px, relay, "frozen link", 6, r"confirm")
        px.passthrough()
        wait_reconnected(relay, "freeze")
    px, relay = stall_stream(ctx, "confirmto", {
        "broker": {"heartbeat": "30", "connect_timeout": "2s"},
        "publish": {"confirm_timeout": "3s"}}, fault)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def stall_reset(ctx):
    """The proxy resets every connection (RST both ways) mid-stream, then
    refuses new connections for 3 s (each attempt is reset), then passes:
    the relay reconnects and everything arrives in order.

    While the proxy refuses, the attempts are seen and reset and `state` is not
    `connected`."""
    def fault(px, relay):
        px.refuse()
        n = px.reset()
        check(n >= 1, "the proxy had no connection to reset")
        st = relay.wait_stats(lambda s: s.get("state") != "connected", 10,
                              "pubrelayd to notice the reset")
        ctx.note("reset noticed: state=%s last_error=%s"
                 % (st.get("state"), st.get("last_error")))
        time.sleep(3)
        ps = px.stats()
        check(ps["refused"] >= 1, "no reconnect attempt in 3 s while "
              "refused (proxy: %s)" % ps)
        check(relay.stats().get("state") != "connected",
              "state connected while the proxy refuses every connection")
        px.passthrough()
        wait_reconnected(relay, "reset")
    px, relay = stall_stream(ctx, "reset", STALL_OVERRIDES, fault)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 6. Failover between two independent nodes


@scenario
def failover(ctx):
    """Two independent nodes, `uri = first` then `uri = second`.

    A: both up, the relay publishes to the first; the first's app stops in
       the middle of a stream: publishing goes on on the second, which is
       tried first (the lost node is not retried first).
    B: the first comes back: the relay stays on the second (a working link
       is not given up), everything goes there.
    C: the second's app stops: a lost working link starts again at the
       first uri, so the relay goes back to the first.
    Per producer, the deliveries of the node it started on, followed by
    those of the node it ended on, are in order with duplicates only of a
    republished suffix.

    In B: STATS `broker` unchanged, no reconnect, and a whole producer lands on
    the second."""
    b1, b2 = ctx.broker, ctx.broker2()
    relay = ctx.relay(uri=[b1.uri(), b2.uri()],
                      overrides={"broker": {"connect_timeout": "2s"}})
    q = H.unique_queue("failover")
    for b in (b1, b2):
        with ctx.consumer(b) as c:
            c.declare(q)

    def on(b):
        port = re.compile(r":%d(?!\d)" % b.port)
        return lambda s: bool(port.search(str(s.get("broker")))) \
            and s.get("state") == "connected"

    relay.wait_stats(on(b1), 30, "the relay connected to the first node")
    try:
        # A
        pr = H.LinesProducer(relay, q, lines_for(1, 10000),
                             pace=(100, 0.05)).start()
        relay.wait_stats(lambda s: s.get("confirmed", 0) >= 2000, 60,
                         "2000 confirmed on the first node")
        b1.stop_app()
        st = relay.wait_stats(on(b2), 30, "the relay on the second node")
        ctx.note("failed over: %s" % H.fmt_stats(st))
        # The lost first node is not the first one tried again.
        check("connect to" not in str(st.get("last_error")),
              "after losing the first node the relay tried it again "
              "before the second: last_error=%s" % st.get("last_error"))
        pr.join(120)
        check_eq(pr.rc, 0, "producer 1 (%s)" % pr.describe())
        relay.wait_drained(60)
        # B: the first node comes back; the relay stays where it is, no
        # reconnect from the moment the node returns (3 s for a relay that
        # would go back to its first uri to do so).
        r0 = relay.stats().get("reconnects")
        b1.start_app()
        time.sleep(3)
        pr = H.LinesProducer(relay, q, lines_for(2, 2000)).start()
        pr.join(60)
        check_eq(pr.rc, 0, "producer 2 (%s)" % pr.describe())
        st = relay.wait_drained(60)
        ctx.note("first node back: %s" % H.fmt_stats(st))
        check(on(b2)(st), "the relay left the second node when the first "
              "came back: broker=%s" % st.get("broker"))
        check_eq(st.get("reconnects"), r0, "stats reconnects while both "
                 "nodes are up")
        # C
        c0 = st.get("confirmed", 0)
        pr = H.LinesProducer(relay, q, lines_for(3, 10000),
                             pace=(100, 0.05)).start()
        relay.wait_stats(lambda s: s.get("confirmed", 0) >= c0 + 1000, 60,
                         "1000 of producer 3 confirmed on the second node")
        b2.stop_app()
        st = relay.wait_stats(on(b1), 30, "the relay back on the first node")
        ctx.note("back on the first: %s" % H.fmt_stats(st))
        pr.join(120)
        check_eq(pr.rc, 0, "producer 3 (%s)" % pr.describe())
        st = relay.wait_drained(60)
    finally:
        for b in (b1, b2):
            if not H.tcp_connectable(b.port):
                b.start_app()
    with ctx.consumer(b1) as c:
        per1, other1 = H.split_by_producer(c.drain(q))
        c.ch.queue_delete(queue=q)
    with ctx.consumer(b2) as c:
        per2, other2 = H.split_by_producer(c.drain(q))
        c.ch.queue_delete(queue=q)
    check_eq(other1 + other2, [], "foreign messages in the queues")
    ctx.note("first node: %s" % {p: len(v) for p, v in per1.items()})
    ctx.note("second node: %s" % {p: len(v) for p, v in per2.items()})
    check(per1.get(1) and per2.get(1), "producer 1 should have messages on "
          "both nodes")
    H.check_producer(1, per1.get(1, []) + per2.get(1, []), 10000,
                     note=ctx.note)
    check(not per1.get(2), "producer 2 (sent while both were up, the relay "
          "on the second) has %d messages on the first node"
          % len(per1.get(2, [])))
    H.check_producer(2, per2.get(2, []), 2000, note=ctx.note)
    check(per1.get(3) and per2.get(3), "producer 3 should have messages on "
          "both nodes")
    H.check_producer(3, per2.get(3, []) + per1.get(3, []), 10000,
                     note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 7. The disk holding the outbox fills up


def fill_disk(path):
    """Write zeros to path until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def fs_report(fs):
    """Free bytes of a tmpfs and the size of each file on it."""
    files = []
    for name in sorted(os.listdir(fs.dir)):
        try:
            files.append("%s=%d" % (name, os.path.getsize(
                os.path.join(fs.dir, name))))
        except OSError:
            pass
    return "tmpfs free %d bytes; files: %s" % (fs.free_bytes(),
                                               " ".join(files))


def wait_drained_on(ctx, relay, fs, what):
    """wait_drained, with the tmpfs state in the failure message."""
    try:
        st = relay.wait_stats(
            lambda s: s.get("outbox_messages") == 0 and
            s.get("backlog") == 0 and s.get("in_flight") == 0, 60,
            "the outbox to drain " + what)
    except H.HarnessError as e:
        raise Failure("%s; %s" % (e, fs_report(fs)))
    ctx.note("drained: %s; %s" % (H.fmt_stats(st), fs_report(fs)))
    return st


def resend_until_in(ctx, relay, q, lines, done, deadline_s=120):
    """Resend lines[done:] until all are accepted; only FULL may refuse."""
    deadline = time.monotonic() + deadline_s
    attempts = 0
    while done < len(lines):
        check(time.monotonic() < deadline, "resending took over %ds (%d of "
              "%d in)" % (deadline_s, done, len(lines)))
        pr = H.LinesProducer(relay, q, lines[done:],
                             extra_args=["--print-id"]).start()
        pr.join(60)
        attempts += 1
        n = len(pr.stdout.splitlines())
        if pr.rc == 0:
            check_eq(n, len(lines) - done, "ids printed by a successful "
                     "resend")
            done = len(lines)
            break
        err = pr.stderr.decode(errors="replace")
        check(pr.rc == 75 and "FULL" in err, "resend: only FULL (75) is "
              "expected: %s" % pr.describe())
        done += n
        time.sleep(0.5)
    return attempts


@scenario
def disk_full_drain(ctx):
    """The outbox on a 24 MB tmpfs with min_free = 16M, the broker down:
    1 KB lines until the client gets the retryable FULL (exit 75).  What was accepted stays
    (backlog = accepted), the daemon and the connection go on.  Then the
    broker comes back: the relay must drain the outbox and accept again by
    itself (deleting confirmed rows on a full disk is the catch), and a
    client resending from the first refused line gets everything in, in
    order, exactly once.

    The outbox on a 24 MB tmpfs with `min_free = 16M`, the broker down, 1 KB
    lines until the client exits 75 naming FULL (its count of accepted lines
    equals the ids `--print-id` printed); `backlog` equals that count, a raw
    PUB gets `ERR FULL`, the connection still answers PING. The broker comes
    back: the outbox must drain (deleting confirmed rows on a full disk) and
    the relay accept again by itself; a client resending from the first refused
    line gets all 12,000 in, in order, exactly once."""
    b = ctx.broker
    fs = ctx.tmpfs("24m")
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("diskfull"))
    N = 12000
    lines = [H.seq_line(1, i, pad=1000) for i in range(N)]
    b.stop_app()
    try:
        relay = ctx.relay(overrides={
            "outbox": {"path": os.path.join(fs.dir, "outbox.db"),
                       "min_free": "16M"}})
        pr = H.LinesProducer(relay, q, lines, extra_args=["--print-id"]) \
            .start()
        pr.join(120)
        err = pr.stderr.decode(errors="replace")
        accepted = len(pr.stdout.splitlines())
        ctx.note("producer: rc=%s accepted=%d stderr=%r; tmpfs free %d bytes"
                 % (pr.rc, accepted, err.strip(), fs.free_bytes()))
        check_eq(pr.rc, 75, "client exit code when the disk is full")
        check("FULL" in err, "the client's error does not name FULL: %r"
              % err)
        m = re.search(r"(\d+) (?:of \d+ messages )?accepted", err)
        check(m is not None and int(m.group(1)) == accepted,
              "accepted count in stderr %r vs %d ids printed"
              % (err, accepted))
        check(0 < accepted < N, "some but not all accepted (%d)" % accepted)
        check(relay.alive(), "pubrelayd died on a full disk")
        st = relay.stats()
        ctx.note("full: %s" % H.fmt_stats(st))
        check_eq(st.get("backlog"), accepted, "stats backlog = accepted")
        with H.RawClient(relay.sock) as rc:
            rep = rc.pub(lines[accepted], [("routing-key", q)])
            check(rep.startswith("ERR FULL"), "PUB on a full disk: %r" % rep)
            check_eq(rc.ping(), "PONG", "connection kept after FULL")
        ctx.note(fs_report(fs))
    finally:
        b.start_app()
    wait_drained_on(ctx, relay, fs, "once the broker is back (the relay "
                    "must delete confirmed rows although the disk is full)")
    attempts = resend_until_in(ctx, relay, q, lines, accepted)
    ctx.note("all %d in after %d resends" % (N, attempts))
    relay.wait_drained(60)
    check_queue(ctx, q, 1, N, allow_dups=False)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def disk_full_free(ctx):
    """The outbox on an 8 MB tmpfs with no reserve (min_free = 0, so SQLite
    itself hits SQLITE_FULL), the broker down, and the disk filled by
    another file: lines until FULL (exit 75); once that file is deleted
    the relay accepts again by itself (no restart, broker
    still down): the next 200 lines (200 KB) go in; after the broker is back
    every accepted line arrives in order, exactly once."""
    b = ctx.broker
    fs = ctx.tmpfs("8m")
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("diskfree"))
    N = 4000
    lines = [H.seq_line(2, i, pad=1000) for i in range(N)]
    ballast = os.path.join(fs.dir, "ballast")
    b.stop_app()
    try:
        relay = ctx.relay(overrides={
            "outbox": {"path": os.path.join(fs.dir, "outbox.db"),
                       "min_free": "0"}})
        done = 0
        pr = H.LinesProducer(relay, q, lines[:100],
                             extra_args=["--print-id"]).start()
        pr.join(60)
        check_eq(pr.rc, 0, "the first 100 lines (%s)" % pr.describe())
        done = 100
        fill_disk(ballast)
        ctx.note("ballast of %d bytes; tmpfs free %d bytes"
                 % (os.path.getsize(ballast), fs.free_bytes()))
        full = False
        for _ in range(20):
            pr = H.LinesProducer(relay, q, lines[done:done + 500],
                                 extra_args=["--print-id"]).start()
            pr.join(60)
            done += len(pr.stdout.splitlines())
            if pr.rc != 0:
                err = pr.stderr.decode(errors="replace")
                check(pr.rc == 75 and "FULL" in err, "with the disk full: "
                      "only FULL (75) is expected: %s" % pr.describe())
                full = True
                break
        check(full, "the outbox never got FULL with the disk filled up")
        st = relay.stats()
        ctx.note("FULL after %d lines: %s" % (done, H.fmt_stats(st)))
        check_eq(st.get("backlog"), done, "stats backlog = accepted")
        os.unlink(ballast)
        ctx.note("ballast deleted: %s" % fs_report(fs))
        t0 = time.monotonic()
        N = done + 200
        attempts = resend_until_in(ctx, relay, q, lines[:N], done, 30)
        ctx.note("accepted again %.1fs after the space came back (%d "
                 "attempts); %s" % (time.monotonic() - t0, attempts,
                                    fs_report(fs)))
        # At once: the next request after the file went is committed, not
        # one after some later recheck.
        check_eq(attempts, 1, "resends until the relay accepted again")
    finally:
        if os.path.exists(ballast):
            os.unlink(ballast)
        b.start_app()
    wait_drained_on(ctx, relay, fs, "once the broker is back (with free "
                    "space on the disk)")
    check_queue(ctx, q, 2, N, allow_dups=False)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def park_disk_full(ctx):
    """A message the broker returns (mandatory, max_attempts = 1) while the
    outbox's disk is full: parking it fails and is tried again (every
    100 ms and at each commit), logged once as a warning, not each time;
    the message is neither lost nor deleted as confirmed.  Once the disk
    has room it is parked (a notice says so) and the rest arrived.

    A message the broker returns (`mandatory = yes`, `max_attempts = 1`) while
    the outbox's 8 MB tmpfs is full: the park fails and is retried, one warning
    for ten attempts (the rest at debug), nothing parked, lost or deleted; once
    the disk has room it is parked (a notice says so), with its NO_ROUTE
    reason, and the other ten arrive."""
    b = ctx.broker
    fs = ctx.tmpfs("8m")
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("parkfull"))
    ballast = os.path.join(fs.dir, "ballast")
    nobody = q + "-nobody"
    b.stop_app()
    try:
        relay = ctx.relay(overrides={
            "outbox": {"path": os.path.join(fs.dir, "outbox.db"),
                       "min_free": "0"},
            "publish": {"mandatory": "yes", "max_attempts": "1"},
            "log": {"level": "debug"}})
        rk = [("routing-key", q)]
        reqs = ([H.encode_pub(H.seq_line(1, i), rk) for i in range(5)]
                + [H.encode_pub("unroutable", [("exchange", "amq.direct"),
                                               ("routing-key", nobody)])]
                + [H.encode_pub(H.seq_line(1, i), rk) for i in range(5, 10)])
        mid = pub_pipelined(relay, reqs)[5]
        fill_disk(ballast)
        ctx.note("disk filled: %s" % fs_report(fs))
        b.start_app()
        failed = re.compile(r"^pubrelayd: (\w+): outbox: cannot park id ",
                            re.M)
        H.wait_until(lambda: len(failed.findall(relay.log_text())) >= 10,
                     60, "ten failed attempts to park on the full disk")
        levels = failed.findall(relay.log_text())
        ctx.note("park attempts on the full disk: %d; %s"
                 % (len(levels), fs_report(fs)))
        check_eq(levels.count("warning"), 1, "warnings for the failing "
                 "park (levels %s)" % sorted(set(levels)))
        st = relay.stats()
        check_eq(st.get("dead_messages"), 0, "dead_messages on the full "
                 "disk")
        check(st.get("outbox_messages", 0) >= 1, "the returned message is "
              "gone from the outbox: %s" % H.fmt_stats(st))
    finally:
        if os.path.exists(ballast):
            os.unlink(ballast)
        b.start_app()
    st = wait_stat(relay, "dead_messages", lambda v: v == 1, 30,
                   "the message parked once the disk has room")
    check("after failed attempts" in relay.log_text(), "no notice that "
          "parking works again")
    row = dead_row_for(relay, mid)
    check("NO_ROUTE" in row["reason"], "reason %r" % row["reason"])
    wait_drained_on(ctx, relay, fs, "after the park")
    check_queue(ctx, q, 1, 10)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


def damage_page_of(path, marker):
    """Overwrite the b-tree page type byte of the table leaf page holding
    marker in the SQLite file path (not page 1); returns (offset, the byte
    it was, the page's bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    page_size = int.from_bytes(data[16:18], "big")
    if page_size == 1:
        page_size = 65536
    at = data.find(marker)
    check(at > 0 and data.find(marker, at + 1) == -1,
          "%r is in %s %d times, want once" % (marker, path,
                                              data.count(marker)))
    offset = at // page_size * page_size
    check(offset > 0, "the marker is on page 1")
    check(data[offset] == 0x0D, "page %d of %s is not a table leaf (type "
          "%#x)" % (offset // page_size + 1, path, data[offset]))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00")
        f.flush()
        os.fsync(f.fileno())
    return offset, data[offset], data[offset:offset + page_size]


@scenario
def outbox_unreadable(ctx):
    """The publisher cannot read the outbox: a leaf page in the middle of
    the backlog is damaged on disk (new commits go on: they only touch the
    last leaf).  The rows before it, read in the same fetch as the failure,
    are published; the failure is logged once as a warning naming the
    file, then at debug level, though it is tried again at every commit,
    tick and ack; nothing is published past it.  Once the page reads again
    a notice says so and every message arrives in order, exactly once.

    The leaf page holding row 100 of 300 is damaged on disk (its page type
    byte) after a clean stop; new commits still work (they touch the last leaf
    only). The rows before the page, read in the fetch that fails, are
    published (the old publisher kept them encoded and unsent); the read fails
    at every commit: one warning naming the outbox for ten or more failures
    (the rest at debug), nothing published past it; once the byte is back a
    notice says reading works again and all 311 messages arrive in order,
    exactly once, without a reconnect."""
    b = ctx.broker
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("unreadable"))
    N, M, AT = 300, 10, 100
    rk = [("routing-key", q)]
    b.stop_app()
    try:
        relay = ctx.relay(overrides={"log": {"level": "debug"}})
        pub_pipelined(relay, [H.encode_pub(H.seq_line(1, i, pad=400), rk)
                              for i in range(N)])
        check_eq(relay.term(), 0, "exit code of the run that filled the "
                 "outbox")
    finally:
        b.start_app()
    check(not os.path.exists(relay.outbox + "-wal"), "a write-ahead log is "
          "left after a clean stop: the rows may not be in the main file")
    offset, byte, page = damage_page_of(relay.outbox,
                                        H.seq_line(1, AT).encode() + b"-")
    before = min(int(m) for m in re.findall(rb"p1-(\d{6})-", page))
    check(0 < before <= AT, "rows before the damaged page: %d" % before)
    relay.restart()
    failed = re.compile(r"^pubrelayd: (\w+): cannot read the outbox (\S+): ",
                        re.M)
    H.wait_until(lambda: failed.search(relay.log_text()), 20,
                 "the publisher's failed read of the damaged outbox")
    with ctx.consumer() as c:
        H.wait_until(lambda: c.count(q) >= before, 20, "the %d messages "
                     "before the damaged page in the queue" % before)
    for i in range(N, N + M):
        pub_pipelined(relay, [H.encode_pub(H.seq_line(1, i, pad=400), rk)])
    H.wait_until(lambda: len(failed.findall(relay.log_text())) >= M, 20,
                 "%d failed reads (one per commit at least)" % M)
    found = failed.findall(relay.log_text())
    ctx.note("failed reads of the damaged outbox: %d; %d rows before it"
             % (len(found), before))
    check_eq([lvl for lvl, _ in found].count("warning"), 1,
             "warnings for the failing read (levels %s)"
             % sorted(set(lvl for lvl, _ in found)))
    check(all(path == relay.outbox for _, path in found),
          "the line does not name %s: %r" % (relay.outbox, found[:2]))
    with ctx.consumer() as c:
        check_eq(c.count(q), before, "messages in the queue with the page "
                 "damaged")

    with open(relay.outbox, "r+b") as f:
        f.seek(offset)
        f.write(bytes([byte]))
    # A commit moves the log's header: the reader drops its cached pages.
    pub_pipelined(relay, [H.encode_pub(H.seq_line(1, N + M, pad=400), rk)])
    H.wait_until(lambda: "reading the outbox %s works again" % relay.outbox
                 in relay.log_text(), 20, "the notice that reading works "
                 "again")
    with ctx.consumer() as c:
        H.wait_until(lambda: c.count(q) >= N + M + 1, 60, "all %d messages "
                     "in the queue" % (N + M + 1))
    check_eq(relay.stats().get("reconnects"), 0, "stats reconnects")
    check_queue(ctx, q, 1, N + M + 1, allow_dups=False)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 8. Outboxes pubrelayd must refuse at start-up


DEAD_URI = "amqp://guest:guest@127.0.0.1:1"    # nothing listens on port 1


def startup_ini(d, outbox, uri=DEAD_URI):
    ini = os.path.join(d, "pubrelay.ini")
    H.write_ini(ini, {
        "broker": {"uri": uri, "reconnect_min": "100ms",
                   "reconnect_max": "1s"},
        "socket": {"path": os.path.join(d, "pubrelay.sock")},
        "outbox": {"path": outbox},
    })
    return ini


def expect_refused(ctx, what, outbox, ini, sock=None):
    """pubrelayd -c ini must exit 73, name the outbox in its error, leave
    the file as it was and create no socket."""
    before = H.file_bytes(outbox)
    d = os.path.dirname(outbox)
    listing = sorted(os.listdir(d)) if os.path.isdir(d) else None
    rc, out, err = I.run_daemon(["-c", ini])
    ctx.note("%s: exit %d, stderr: %s" % (what, rc, err.strip()))
    check_eq(rc, 73, "%s: exit code" % what)
    check(outbox in err, "%s: the error does not name %s: %r"
          % (what, outbox, err))
    check(H.file_bytes(outbox) == before, "%s: %s was changed"
          % (what, outbox))
    after = sorted(os.listdir(d)) if os.path.isdir(d) else None
    if after != listing:
        ctx.note("%s: files next to the outbox: before %s, after %s"
                 % (what, listing, after))
    if sock is not None:
        check(not os.path.exists(sock), "%s: the socket %s was created"
              % (what, sock))
    return err


def make_outbox(ctx, d, name, messages=5):
    """A real outbox written by pubrelayd (messages left in it: the broker
    uri is dead), then a clean stop."""
    outbox = os.path.join(d, name)
    ini = startup_ini(d, outbox)
    # A small tmpfs is below the default min_free reserve: no reserve here.
    r = H.Relay(ctx.broker, ctx.name + "-mk", uri=DEAD_URI,
                overrides={"outbox": {"path": outbox, "min_free": "0"}})
    ctx.relays.append(r)
    r.start()
    pub_pipelined(r, [H.encode_pub(H.seq_line(1, i), [("routing-key", "x")])
                      for i in range(messages)])
    check_eq(r.term(), 0, "exit code of the relay that made %s" % outbox)
    return outbox, ini


@scenario
def startup_errors(ctx):
    """Exit 73 with the outbox named, the file untouched and no socket, for:
    garbage bytes; another application's SQLite database; an outbox locked
    by a running pubrelayd (which goes on working); an outbox on a read-only
    file system (fine again once writable); an outbox with a newer schema
    (user_version 99); an outbox in a directory that does not exist (not
    created).

    Exit 73, the outbox named in the error, the file's bytes unchanged and no
    socket created, for: 16 KB of garbage; another application's SQLite
    database; an outbox written by pubrelayd whose `user_version` was set to
    99; a path in a missing directory (not created); an outbox locked by a
    running pubrelayd (which goes on accepting); an outbox on a tmpfs remounted
    read-only (and once it is writable again the relay starts and finds its
    backlog)."""
    d = H.mkdtemp("pubrelay-startup-")
    sock = os.path.join(d, "pubrelay.sock")

    garbage = os.path.join(d, "garbage.db")
    with open(garbage, "wb") as f:
        f.write(random.Random(7).randbytes(16384))
    expect_refused(ctx, "garbage bytes", garbage, startup_ini(d, garbage),
                   sock)

    other = os.path.join(d, "other.db")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('not a pubrelay outbox')")
    db.commit()
    db.close()
    expect_refused(ctx, "another SQLite database", other,
                   startup_ini(d, other), sock)

    newer, ini = make_outbox(ctx, d, "newer.db")
    db = sqlite3.connect(newer)
    v = db.execute("PRAGMA user_version").fetchone()[0]
    ctx.note("schema version written by pubrelayd: %d" % v)
    check(0 < v < 99, "pubrelayd wrote user_version %d" % v)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    expect_refused(ctx, "newer schema", newer, ini, sock)

    missing = os.path.join(d, "no-such-dir", "outbox.db")
    err = expect_refused(ctx, "missing directory", missing,
                         startup_ini(d, missing), sock)
    check("%s: directory %s: No such file or directory"
          % (missing, os.path.dirname(missing)) in err,
          "the error names the missing directory: %r" % err)
    check(not os.path.exists(os.path.dirname(missing)),
          "pubrelayd created the missing directory")

    # Locked: a running pubrelayd holds it; a second one must not start.
    a = ctx.relay(name=ctx.name + "-a", uri=DEAD_URI)
    bdir = H.mkdtemp("pubrelay-startup-b-")
    bsock = os.path.join(bdir, "pubrelay.sock")
    bini = os.path.join(bdir, "pubrelay.ini")
    H.write_ini(bini, {"broker": {"uri": DEAD_URI},
                       "socket": {"path": bsock},
                       "outbox": {"path": a.outbox}})
    pub_pipelined(a, [H.encode_pub("before", [("routing-key", "x")])])
    expect_refused(ctx, "locked by a running pubrelayd", a.outbox, bini,
                   bsock)
    check(a.alive(), "the first pubrelayd died")
    pub_pipelined(a, [H.encode_pub("after", [("routing-key", "x")])])
    check_eq(a.stats().get("backlog"), 2, "backlog of the first pubrelayd")
    check_eq(a.term(), 0, "exit code of the first pubrelayd")

    # Read-only file system.
    fs = ctx.tmpfs("4m")
    ro, ini = make_outbox(ctx, fs.dir, "outbox.db", messages=7)
    fs.remount("ro")
    try:
        expect_refused(ctx, "read-only file system", ro, ini)
    finally:
        fs.remount("rw")
    r = H.Relay(ctx.broker, ctx.name + "-rw", uri=DEAD_URI,
                overrides={"outbox": {"path": ro, "min_free": "0"}})
    ctx.relays.append(r)
    r.start()
    check_eq(r.stats().get("backlog"), 7, "backlog once the file system is "
             "writable again")
    check_eq(r.term(), 0, "exit code after SIGTERM")


# ---------------------------------------------------------------------------
# 9. Shutdown during an outage


@scenario
def shutdown_outage(ctx):
    """SIGTERM with the broker's app stopped exits 0 within a few seconds;
    after the restart the backlog is there and drains in order, exactly
    once.  Then SIGTERM in the middle of a stream whose link is frozen
    (the proxy forwards nothing; heartbeat and confirm timeout far away):
    the same.

    SIGTERM with the broker's app stopped: exit 0 in under 5 s, the 2,000
    messages are the backlog after the restart and arrive in order, exactly
    once. Then SIGTERM in the middle of a stream whose link the proxy froze
    (heartbeat and confirm timeout far away, so the relay still thinks it is
    connected): exit 0 in under 5 s, and after a restart everything arrives."""
    b = ctx.broker
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("shutdown"))
    N = 2000
    b.stop_app()
    try:
        relay = ctx.relay()
        pr = H.LinesProducer(relay, q, lines_for(1, N)).start()
        pr.join(60)
        check_eq(pr.rc, 0, "producer with the broker down (%s)"
                 % pr.describe())
        relay.wait_stats(lambda s: s.get("state") != "connected", 10,
                         "state != connected with the broker down")
        time.sleep(1)
        term_within(ctx, relay, "during the outage", 5)
        relay.restart()
        check_eq(relay.stats().get("backlog"), N, "backlog after restart")
    finally:
        b.start_app()
    relay.wait_drained(60)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    check_queue(ctx, q, 1, N, allow_dups=False)

    # A frozen link in the middle of a stream.
    px = ctx.proxy()
    relay = ctx.relay(name=ctx.name + "-frozen",
                      uri=b.uri(port=px.port),
                      overrides={"broker": {"heartbeat": "60"},
                                 "publish": {"confirm_timeout": "60s"}})
    N = 20000
    pr = H.LinesProducer(relay, q, lines_for(2, N), pace=(200, 0.02)).start()
    relay.wait_stats(lambda s: s.get("confirmed", 0) >= 2000, 60,
                     "2000 confirmed before the freeze")
    px.freeze()
    pr.join(60)
    check_eq(pr.rc, 0, "producer with a frozen link (%s)" % pr.describe())
    st = relay.stats()
    ctx.note("frozen: %s" % H.fmt_stats(st))
    # What this case is about: SIGTERM while the relay still thinks it is
    # connected, with publishes the broker has not confirmed.
    check_eq(st.get("state"), "connected", "state at SIGTERM (frozen link)")
    check(st.get("in_flight", 0) > 0, "nothing in flight at SIGTERM: %s"
          % H.fmt_stats(st))
    check(st.get("backlog", 0) > 0, "no backlog at SIGTERM: %s"
          % H.fmt_stats(st))
    term_within(ctx, relay, "with a frozen link", 5)
    px.reset()
    px.passthrough()
    relay.restart()
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    with ctx.consumer() as c:
        msgs = c.drain(q)
    H.check_delivery(msgs, {2: N}, note=ctx.note)
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")


@scenario
def shutdown_stuck_connect(ctx):
    """SIGTERM while the publisher thread is stuck in a TCP connect that
    shutdown(2) cannot reach (a listener whose accept queue is full drops
    the SYNs; connect_timeout 30 s): pubrelayd exits 0 after its 2 + 1 s
    grace without the thread, saying so, without a crash from the thread
    it leaves behind; after a restart on the real broker the backlog is
    there and drains in order.

    The exit comes within 8 s of the SIGTERM."""
    import socket
    b = ctx.broker
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("stuck-connect"))
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname(), timeout=5)
    try:
        relay = ctx.relay(uri="amqp://guest:guest@127.0.0.1:%d"
                          % hole.getsockname()[1],
                          overrides={"broker": {"connect_timeout": "30s"}})
        N = 500
        pr = H.LinesProducer(relay, q, lines_for(1, N)).start()
        pr.join(60)
        check_eq(pr.rc, 0, "producer while the connect hangs (%s)"
                 % pr.describe())
        st = relay.stats()
        check_eq(st.get("state"), "connecting", "state while the connect "
                 "hangs")
        term_within(ctx, relay, "in a hung connect", 8)
        check("publisher thread did not stop" in relay.log_text(),
              "the log says the publisher thread was left behind")
    finally:
        filler.close()
        hole.close()
    relay.sections["broker"]["uri"] = b.uri()
    H.write_ini(relay.ini, relay.sections)
    relay.restart()
    st = relay.wait_drained(60)
    ctx.note("drained: %s" % H.fmt_stats(st))
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
    check_queue(ctx, q, 1, N, allow_dups=False)


@scenario
def socket_in_place(ctx):
    """A socket file left by a crash (nobody listens: connect refused) is
    replaced; one a daemon answers on is left alone: the second daemon
    exits 71 naming the path, the first still answers on it.

    A socket file nobody listens on (connect refused) is replaced; on one a
    daemon answers, a second daemon exits 71 naming the path and the first
    still answers on the same file; a daemon run as `nobody`, who may write the
    directory but not connect to root's 0600 socket (`EACCES`), must not take
    the path either (needs root); as `nobody` with `[socket] group = root` it
    exits 71 naming the chown, the group and the error, and leaves no socket
    file."""
    import socket
    d = H.mkdtemp("pubrelay-sockfile-")
    sock = os.path.join(d, "pubrelay.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)
    stale.close()                 # the file stays; nobody listens
    check(os.path.exists(sock), "a stale socket file to start with")
    relay = ctx.relay(overrides={"socket": {"path": sock}})
    with relay.client() as c:
        check_eq(c.ping(), "PONG", "daemon on the stale socket's path")
    ino = os.stat(sock).st_ino
    ini = startup_ini(d, os.path.join(d, "second.db"))
    rc, out, err = I.run_daemon(["-c", ini])
    ctx.note("second daemon on a live socket: exit %d, %s"
             % (rc, err.strip()))
    check_eq(rc, 71, "second daemon on a live socket: exit code")
    check("another daemon" in err and sock in err,
          "the error names the live socket: %r" % err)
    check_eq(os.stat(sock).st_ino, ino, "the live socket file is the "
             "same")
    with relay.client() as c:
        check_eq(c.ping(), "PONG", "the first daemon still answers")

    # A user who may write the directory but not connect (EACCES) cannot
    # tell a live socket from a stale one: it must not take the path.
    import subprocess
    import shutil
    check(os.geteuid() == 0, "socket_in_place needs root to run a daemon "
          "as another user")
    os.chmod(d, 0o777)
    os.chmod(sock, 0o600)
    other = H.mkdtemp("pubrelay-sockfile-nobody-")
    os.chmod(other, 0o777)
    daemon = os.path.join(other, "pubrelayd")
    shutil.copy(H.binary("PUBRELAYD"), daemon)
    os.chmod(daemon, 0o755)

    def as_nobody(socket_keys, what):
        """pubrelayd run as nobody with these [socket] keys: exit code and
        stderr."""
        ini = os.path.join(other, "pubrelay.ini")
        # No password in the uri: the file is readable by nobody.
        H.write_ini(ini, {"broker": {"uri": "amqp://127.0.0.1:1"},
                          "socket": socket_keys,
                          "outbox": {"path": os.path.join(other,
                                                          "nobody.db")}})
        os.chmod(ini, 0o644)
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup",
                            "--clear-groups", daemon, "-c", ini],
                           capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        err = p.stderr.decode(errors="replace")
        ctx.note("daemon as nobody %s: exit %d, %s"
                 % (what, p.returncode, err.strip()))
        return p.returncode, err

    rc, err = as_nobody({"path": sock}, "on root's 0600 socket")
    check_eq(rc, 71, "daemon that cannot probe the socket: exit code")
    check("cannot be probed" in err, "the error says why: %r" % err)
    check_eq(os.stat(sock).st_ino, ino, "the live socket was not replaced")
    with relay.client() as c:
        check_eq(c.ping(), "PONG", "the first daemon still answers")
    check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")

    # [socket] group that the daemon's user may not chown to: the error
    # names the step and the group, and no socket file is left.
    own = os.path.join(other, "own.sock")
    rc, err = as_nobody({"path": own, "group": "root"},
                        "with [socket] group = root")
    check_eq(rc, 71, "socket group it cannot chown to: exit code")
    check("%s: chown to [socket] group root (gid 0): Operation not "
          "permitted (the daemon's user is not in that group)"
          % own in err, "the error names the step and the cause: %r" % err)
    check(not os.path.exists(own), "a socket file was left behind")


# ---------------------------------------------------------------------------
# Driver


# Scenarios whose failure report includes the brokers' logs.
BROKER_STORIES = ("nack_window1", "nack_window64", "rejected_403_park",
                  "blocked", "failover", "shutdown_outage")


def ensure_brokers(brokers):
    """Put every broker back in service: VM running, app started, no
    alarm."""
    for b in brokers.all():
        S.ensure_broker(b)
        b.memory_alarm(False)


def setup(names):
    brokers = Brokers()
    if "failover" in names:
        brokers.start_second_in_background()
    brokers.first = S.start_broker()
    log("broker dir %s" % brokers.first.dir)
    return brokers


def report(brokers, ctx, name):
    for p in ctx.proxies:
        try:
            log("%s: proxy: %s" % (name, p.stats()))
        except Exception:
            pass
    if name in BROKER_STORIES:
        for b in brokers.all():
            b.dump_log(15)


def cleanup(ctx):
    for p in ctx.proxies:
        p.stop()
    for m in ctx.mounts:
        m.umount()


def teardown(brokers):
    for b in brokers.all():
        b.stop()


@scenario
def check_outbox(ctx):
    """`pubrelayd --check-outbox` beside a running relay with 300 messages
    waiting (broker app stopped): exit 0, "integrity ok", and the counts
    (messages 300, their bytes, no dead letters, schema 6), while the relay
    goes on accepting.  After a clean stop a table leaf page is damaged on
    disk: exit 65, "integrity FAILED" with "problem" lines, and the file is
    the same bytes after the check as before (read-only).  A file that is
    no outbox: exit 66 naming it."""
    b = ctx.broker
    with ctx.consumer() as c:
        q = c.declare(H.unique_queue("checkob"))
    rk = [("routing-key", q)]
    pubrelayd = H.binary("PUBRELAYD")

    def check_run(ini):
        p = subprocess.run([pubrelayd, "-c", ini, "--check-outbox"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        out = p.stdout.decode()
        vals = dict(ln.split(" ", 1) for ln in out.splitlines()
                    if " " in ln)
        return p.returncode, out, p.stderr.decode(), vals

    b.stop_app()
    try:
        relay = ctx.relay()
        pub_pipelined(relay, [H.encode_pub(H.seq_line(1, i, pad=400), rk)
                              for i in range(300)])
        rc, out, err, vals = check_run(relay.ini)
        check_eq(rc, 0, "--check-outbox beside the relay (stdout %r, "
                 "stderr %r)" % (out, err))
        check_eq((vals.get("integrity"), vals.get("messages"),
                  vals.get("dead_messages"), vals.get("schema")),
                 ("ok", "300", "0", "6"), "its report")
        check(int(vals["message_bytes"]) > 300 * 400 and
              int(vals["file_bytes"]) + int(vals["wal_bytes"]) >
              300 * 400, "sizes: %r" % vals)
        pub_pipelined(relay, [H.encode_pub("after", rk)])
        check_eq(relay.term(), 0, "exit code after SIGTERM")
    finally:
        b.start_app()
    check(not os.path.exists(relay.outbox + "-wal"), "a write-ahead log is "
          "left after a clean stop")
    damage_page_of(relay.outbox, H.seq_line(1, 150).encode() + b"-")
    with open(relay.outbox, "rb") as f:
        before = f.read()
    rc, out, err, vals = check_run(relay.ini)
    check_eq(rc, 65, "--check-outbox of a damaged file (stdout %r, stderr "
             "%r)" % (out, err))
    check(vals.get("integrity") == "FAILED" and "\nproblem " in out,
          "the report of the damaged file: %r" % out)
    with open(relay.outbox, "rb") as f:
        check(f.read() == before, "the check changed the file")
    with open(relay.outbox, "wb") as f:
        f.write(b"not an outbox at all\n" * 300)
    rc, out, err, vals = check_run(relay.ini)
    check(rc == 66 and relay.outbox in err, "--check-outbox of a file that "
          "is no outbox: exit %d, stderr %r" % (rc, err))


def main(argv):
    return S.run("failures.py", scenario, argv, setup, Ctx, report=report,
                 cleanup=cleanup,
                 repair=lambda brokers, last: ensure_brokers(brokers),
                 teardown=teardown,
                 needs=("root", "broker", "pika"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
