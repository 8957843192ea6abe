#!/usr/bin/python3
"""clients.py: the language clients of issue 21 against a real pubrelayd and
a private RabbitMQ node.

Prints TAP.  Run by `make check` or by hand:

    PUBRELAYD=./pubrelayd PUBRELAY=./pubrelay /usr/bin/python3 \
        tests/clients.py [SCENARIO ...]

`--list [-v]` prints the scenarios and what each proves.  The Python client
is clients/python/pubrelay.py of the source tree ($PUBRELAY_SRCDIR, else
this file's tree); what arrives is read by an independent consumer (pika)
and checked with harness.check_delivery.  40-50 s on 2 cores shared with
other runs, the broker's boot (8-20 s) included.
"""

import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness as H  # noqa: E402
import scenarios as S  # noqa: E402
from harness import log  # noqa: E402
from scenarios import check, check_eq  # noqa: E402

SRCDIR = os.environ.get("PUBRELAY_SRCDIR") or os.path.dirname(HERE)
PYCLIENT = os.path.join(SRCDIR, "clients", "python", "pubrelay.py")


def load_pubrelay():
    """The module under test, from the source tree (fails when absent)."""
    if not os.path.isfile(PYCLIENT):
        raise H.HarnessError("%s: missing" % PYCLIENT)
    sys.path.insert(0, os.path.dirname(PYCLIENT))
    import pubrelay
    if os.path.realpath(pubrelay.__file__) != os.path.realpath(PYCLIENT):
        raise H.HarnessError("imported %s, not %s"
                             % (pubrelay.__file__, PYCLIENT))
    return pubrelay


P = None        # the pubrelay module, once setup() loaded it


class Ctx:
    """The shared broker and the relays the scenario started."""

    def __init__(self, broker, name):
        self.broker = broker
        self.name = name
        self.relays = []
        self.notes = []

    def relay(self, overrides=None, uri=None):
        r = H.Relay(self.broker, self.name, overrides=overrides, uri=uri)
        self.relays.append(r)
        return r.start()

    def nowhere(self):
        """A broker URI at a port nothing listens on: messages stay in the
        outbox."""
        return "amqp://guest:guest@127.0.0.1:%d" % H.free_port()

    def consumer(self):
        return H.Consumer(self.broker)

    def queue(self, tag):
        with self.consumer() as c:
            return c.declare(H.unique_queue(tag))

    def drain(self, relay, queue):
        relay.wait_drained(60)
        with self.consumer() as c:
            return c.drain(queue)

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))


scenario = S.Registry()


def lines(n, producer=0):
    return [H.seq_line(producer, i).encode() for i in range(n)]


def ids_in_order(ids, what):
    """Generated message-ids "instance-N": one instance, N increasing."""
    inst = {i.rsplit("-", 1)[0] for i in ids}
    check_eq(len(inst), 1, "%s: instances of the generated ids" % what)
    nums = [int(i.rsplit("-", 1)[1]) for i in ids]
    check(all(a < b for a, b in zip(nums, nums[1:])),
          "%s: generated ids not increasing: %s" % (what, nums[:20]))


# ---------------------------------------------------------------------------


@scenario
def python_publish_one(ctx):
    """Python: `Client(path).publish(body, routing_key=Q)` returns the
    message-id the relay generated, and a consumer receives exactly that
    body under that message-id, persistent."""
    r = ctx.relay()
    q = ctx.queue("one")
    with P.Client(r.sock, timeout=10) as c:
        mid = c.publish(b"p0-000000", routing_key=q)
    check(isinstance(mid, str) and mid.rsplit("-", 1)[-1].isdigit(),
          "publish() returns a generated message-id: %r" % (mid,))
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 1}, allow_dups=False, persistent=True)
    check_eq(msgs[0][1].message_id, mid, "delivered message-id")


@scenario
def python_pipeline_10k(ctx):
    """Python: publish_many() pipelines 10,000 messages on one connection
    and returns their 10,000 message-ids in order; all arrive, in order,
    exactly once, each under the id its reply named.

    The batch is larger than the client's write queue (256 KiB), so this
    also runs the path that reads replies while it is still writing."""
    r = ctx.relay()
    q = ctx.queue("pipe")
    bodies = lines(10000)
    with P.Client(r.sock, timeout=30) as c:
        t0 = time.monotonic()
        ids = c.publish_many(bodies, routing_key=q)
        took = time.monotonic() - t0
        check_eq(c.ping() > 0, True, "PING after the batch")
    ctx.note("10,000 pipelined in %.2fs (%.0f msg/s)"
             % (took, 10000 / took))
    check_eq(len(ids), 10000, "message-ids returned")
    ids_in_order(ids, "publish_many")
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 10000}, allow_dups=False)
    check_eq([p.message_id for _, p in msgs], ids,
             "delivered message-ids, in order")


@scenario
def python_properties(ctx):
    """Python: keyword properties reach the broker as AMQP properties:
    exchange and routing key (amq.direct, bound), headers, the client's own
    message-id (returned by publish()), content type, correlation id,
    priority, timestamp, transient delivery; a binary body with newlines,
    NULs and a PUB line inside arrives byte for byte.  A property value
    with a line end is refused by the client before anything is sent."""
    r = ctx.relay()
    q = H.unique_queue("props")
    with ctx.consumer() as cons:
        cons.declare(q)
        cons.ch.queue_bind(queue=q, exchange="amq.direct", routing_key=q)
    body = bytes(range(256)) + b"\nPUB 3\n\nabc\n\x00\r\n"
    with P.Client(r.sock) as c:
        mid = c.publish(body, routing_key=q, exchange="amq.direct",
                        headers={"tenant": "t-1", "trace": "a=b c"},
                        message_id="order-42 v1", content_type="app/x",
                        correlation_id="corr-7", priority=5,
                        timestamp=1700000000, delivery_mode=1,
                        mandatory=True)
        check_eq(mid, "order-42 v1", "publish() returns the client's id")
        try:
            c.publish(b"x", routing_key=q, type="a\nPUB 1")
            raise S.Failure("a value with a newline was sent")
        except ValueError:
            pass
        c.publish(b"after", routing_key=q, exchange="amq.direct")
    msgs = ctx.drain(r, q)
    check_eq([m[0] for m in msgs], [body, b"after"], "bodies delivered")
    p = msgs[0][1]
    got = {"message_id": p.message_id, "headers": p.headers,
           "content_type": p.content_type,
           "correlation_id": p.correlation_id, "priority": p.priority,
           "timestamp": p.timestamp, "delivery_mode": p.delivery_mode}
    check_eq(got, {"message_id": "order-42 v1",
                   "headers": {"tenant": "t-1", "trace": "a=b c"},
                   "content_type": "app/x", "correlation_id": "corr-7",
                   "priority": 5, "timestamp": 1700000000,
                   "delivery_mode": 1}, "AMQP properties")


@scenario
def python_receipts(ctx):
    """Python: publish(confirm=s) returns the id once the broker confirmed
    it (STATUS then says confirmed); to a missing exchange it raises Parked
    with the broker's 404 NOT_FOUND as reason (STATUS parked, WAIT counts
    one dead letter); with no broker it raises NotConfirmed naming the
    message, which stays queued.  Receipts in a pipeline come back in
    order, errors in place with results(return_errors=True)."""
    r = ctx.relay()
    q = ctx.queue("rcpt")
    with P.Client(r.sock, timeout=10) as c:
        mid = c.publish(b"p0-000000", routing_key=q, confirm=20)
        check_eq(c.status(mid), P.Status("confirmed", mid, None),
                 "STATUS after CONFIRMED")
        try:
            c.publish(b"lost", exchange="no-such-exchange", routing_key=q,
                      confirm=20)
            raise S.Failure("publish to a missing exchange confirmed")
        except P.Parked as e:
            ctx.note("parked: %s" % e.reason)
            check("404" in e.reason and "NOT_FOUND" in e.reason,
                  "Parked reason names 404 NOT_FOUND: %r" % e.reason)
            parked = e.message_id
        st = c.status(parked)
        check_eq((st.state, st.message_id), ("parked", parked),
                 "STATUS of the parked message")
        check("404" in st.reason, "STATUS reason: %r" % (st.reason,))
        check_eq(c.wait(20), 1, "WAIT: dead letters up to the last message")
        c.queue(b"p0-000001", routing_key=q, confirm=20)
        c.queue(b"lost", exchange="no-such-exchange", confirm=20)
        c.queue(b"p0-000002", routing_key=q, confirm=20)
        res = c.results(return_errors=True)
        check(isinstance(res[0], str) and isinstance(res[1], P.Parked)
              and isinstance(res[2], str), "pipelined receipts: %r" % res)
    # The 404 closes the channel: a message in flight beside the parked
    # one is republished, so a duplicate of it is allowed (DESIGN.md).
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 3})

    r2 = ctx.relay(uri=ctx.nowhere())
    with P.Client(r2.sock, timeout=10) as c:
        t0 = time.monotonic()
        try:
            c.publish(b"later", routing_key=q, confirm=0.3)
            raise S.Failure("confirmed without a broker")
        except P.NotConfirmed as e:
            took = time.monotonic() - t0
            check(e.message_id and 0.25 <= took < 5,
                  "NotConfirmed %r after %.2fs" % (e.message_id, took))
            check_eq(c.status(e.message_id).state, "queued",
                     "STATUS of a message not confirmed in time")


@scenario
def python_wait_status(ctx):
    """Python: with the broker unreachable, wait(0.3) raises NotConfirmed
    and status() says queued; a wait() without a limit, pending when the
    relay gets SIGTERM, raises Shutdown (retryable, connection closed);
    connecting then raises ConnectFailed, which retry() repeats while the
    relay is restarted against the broker.  The same Client
    connects again and wait() returns 0 once the broker confirmed
    everything, status() then says confirmed, and the messages arrive."""
    q = ctx.queue("wait")
    r = ctx.relay(uri=ctx.nowhere())
    with P.Client(r.sock) as c:
        ids = c.publish_many(lines(100), routing_key=q)
        try:
            c.wait(0.3)
            raise S.Failure("WAIT returned with the broker unreachable")
        except P.NotConfirmed as e:
            check(e.message_id is None, "WAIT's NotConfirmed has no id")
        check_eq(c.status(ids[-1]).state, "queued", "STATUS, no broker")
        check_eq(c.status("ffffffffffffffff-1").state, "unknown",
                 "STATUS of an id the relay never gave")
    c = P.Client(r.sock, timeout=30)
    box = {}

    def waiter():
        try:
            box["value"] = c.wait()
        except Exception as e:
            box["error"] = e
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    r.wait_stats(lambda s: s.get("receipts_waiting", 0) >= 1, 30,
                 "the WAIT to be taken")
    check_eq(r.term(), 0, "relay exit after SIGTERM")
    t.join(30)
    e = box.get("error")
    check(isinstance(e, P.Shutdown) and e.retryable,
          "WAIT pending at SIGTERM: %r" % box)
    check(not c.connected, "closed after SHUTDOWN")
    r.sections["broker"]["uri"] = ctx.broker.uri()
    H.write_ini(r.ini, r.sections)
    # No daemon: ConnectFailed, which retry() repeats (the relay restarts
    # on the second try).
    tries = []

    def connect():
        tries.append(1)
        if len(tries) == 2:
            r.restart()
        return P.Client(r.sock).close()
    try:
        connect()
        raise S.Failure("connected with no daemon")
    except P.ConnectFailed as e:
        check(e.retryable, "ConnectFailed is retryable")
    P.retry(connect, delay=0.1)
    check_eq(len(tries), 2, "connect tries")
    with c:
        check_eq(c.wait(), 0, "WAIT once the broker is reachable")
        check_eq(c.status(ids[-1]).state, "confirmed",
                 "STATUS after WAIT")
        check_eq(c.status(ids[0]).state, "confirmed", "STATUS of the first")
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 100}, allow_dups=False)


@scenario
def python_idempotency(ctx):
    """Python: a publish() repeating an idempotency_key returns the first
    message's id (also in a pipeline and on a new connection) and stores
    nothing: the queue holds one message, the first body."""
    r = ctx.relay()
    q = ctx.queue("idem")
    with P.Client(r.sock) as c:
        first = c.publish(b"p0-000000", routing_key=q, idempotency_key="k-1")
        again = c.publish(b"p0-000001", routing_key=q,
                          idempotency_key="k-1")
        many = c.publish_many([b"p0-000002", b"p0-000003"], routing_key=q,
                              idempotency_key="k-1")
    with P.Client(r.sock) as c:
        later = c.publish(b"p0-000004", routing_key=q, idempotency_key="k-1")
        check_eq(c.stats().get("idempotency_hits"), 4, "STATS hits")
    check_eq([again, many[0], many[1], later], [first] * 4,
             "ids of the repeats")
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 1}, allow_dups=False)


@scenario
def python_errors(ctx):
    """Python: refusals raise the ReplyError of their code, and the
    connection stays usable where the protocol keeps it open: BADREQ
    (BadRequest, not retryable) and TOOBIG on the same socket, the next
    publish() taken (the client reset the latch); in a pipeline, the first
    error raised with its index and the later message Skipped; PROTO
    (FramingError) closes, and the next request connects again.

    The messages that got an id are the ones that arrive."""
    r = ctx.relay(overrides={"outbox": {"max_bytes": "20K"}})
    q = ctx.queue("err")
    got = []
    with P.Client(r.sock) as c:
        fd = c._sock.fileno()
        try:
            c.publish(b"x", routng_key=q)
            raise S.Failure("an unknown property was accepted")
        except P.BadRequest as e:
            check_eq((e.code, e.retryable), ("BADREQ", False), "BADREQ")
            check("routng-key" in e.text, "BADREQ text: %r" % e.text)
        got.append(c.publish(b"p0-000000", routing_key=q))
        try:
            c.publish(b"x" * 21000, routing_key=q)
            raise S.Failure("a message over max_bytes was accepted")
        except P.TooBig as e:
            check_eq(e.code, "TOOBIG", "TOOBIG code")
        got.append(c.publish(b"p0-000001", routing_key=q))
        check_eq(c._sock.fileno(), fd, "the same connection throughout")
        try:
            c.publish_many([b"p0-000002", (b"x", {"priority": "high"}),
                            b"p0-000003"], routing_key=q)
            raise S.Failure("a bad priority was accepted")
        except P.BadRequest as e:
            check_eq(e.index, 1, "index of the refused message")
            check(isinstance(e.results[0], str)
                  and isinstance(e.results[2], P.Skipped),
                  "batch results: %r" % e.results)
            got.append(e.results[0])
        got.append(c.publish(b"p0-000003", routing_key=q))
        try:
            c.publish(b"x", routing_key=q, headers={"big": "v" * 9000})
            raise S.Failure("a line over max_line was accepted")
        except P.FramingError as e:
            check_eq(e.code, "PROTO", "PROTO code")
        check(not c.connected, "closed after PROTO")
        got.append(c.publish(b"p0-000004", routing_key=q))
    ids_in_order(got, "accepted")
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 5}, allow_dups=False)
    check_eq([p.message_id for _, p in msgs], got, "delivered ids")


@scenario
def python_full_retry(ctx):
    """Python: with the broker blocked (memory alarm) and max_bytes = 20K,
    publish_many() raises Full (retryable) with the accepted prefix in
    .results and Skipped after it; pubrelay.retry() repeats a publish
    through FULL until the outbox has room (the alarm is lifted on its
    second try); resuming from each first refused message gets all 3,000
    in, in order, exactly once."""
    b = ctx.broker
    q = ctx.queue("full")
    r = ctx.relay(overrides={"outbox": {"max_bytes": "20K"}})
    bodies = lines(3000)
    b.memory_alarm(True)
    try:
        # The relay learns of the alarm (connection.blocked) only when it
        # publishes; until the broker confirms, the outbox keeps each row.
        with P.Client(r.sock) as c:
            try:
                c.publish_many(bodies, routing_key=q)
                raise S.Failure("3,000 messages fit in 20K")
            except P.Full as e:
                check(e.retryable and 0 < e.index < 3000,
                      "Full at %r, retryable %r" % (e.index, e.retryable))
                check(all(isinstance(x, str) for x in e.results[:e.index])
                      and all(isinstance(x, P.Skipped)
                              for x in e.results[e.index + 1:]),
                      "an accepted prefix, then Skipped")
                done = e.index
            ctx.note("full after %d" % done)
            tries = []

            def publish_lifting_alarm():
                tries.append(time.monotonic())
                if len(tries) == 2:
                    b.memory_alarm(False)
                return c.publish(bodies[done], routing_key=q)
            P.retry(publish_lifting_alarm, attempts=12, delay=0.2,
                    max_delay=2)
            check(len(tries) >= 2, "retry() called %d times" % len(tries))
            done += 1
            deadline = time.monotonic() + 60
            while done < len(bodies):
                check(time.monotonic() < deadline, "resending took 60s")
                try:
                    done += len(c.publish_many(bodies[done:], routing_key=q))
                except P.Full as e:
                    done += e.index
                    r.wait_stats(lambda s: s.get("backlog", 1) < 100, 60,
                                 "the outbox to drain")
    finally:
        b.memory_alarm(False)
    msgs = ctx.drain(r, q)
    H.check_delivery(msgs, {0: 3000}, allow_dups=False)


def run_python(code, env_extra, what, path):
    """/usr/bin/python3 -I -S (no site dir: the standard library only) with
    path first on sys.path; returns its stdout lines."""
    env = {"PATH": "/usr/bin:/bin"}
    env.update(env_extra)
    p = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c",
                        "import sys; sys.path.insert(0, %r)\n%s"
                        % (path, code)], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    check_eq(p.returncode, 0, "%s: exit code (stderr %r)" % (what, err))
    return out.splitlines()


SNIPPET = """
import pubrelay
print(pubrelay.__file__)
with pubrelay.Client() as c:
    print(c.path)
    print(c.publish(b"p0-000000", routing_key=%r))
"""


@scenario
def python_module_alone(ctx):
    """Python: pubrelay.py copied alone into an empty directory imports and
    publishes under `python3 -I -S` (no site packages: standard library
    only), finding the socket in $PUBRELAY_SOCKET; the message arrives
    under the id it printed.  The same for the file `make install
    DESTDIR=...` puts in Python's site directory."""
    r = ctx.relay()
    q = ctx.queue("alone")
    d = H.mkdtemp("pubrelay-pyclient-")
    shutil.copy(PYCLIENT, d)
    check_eq(os.listdir(d), ["pubrelay.py"], "the copy's directory")
    out = run_python(SNIPPET % q, {"PUBRELAY_SOCKET": r.sock}, "copy", d)
    check_eq(out[:2], [os.path.join(d, "pubrelay.py"), r.sock],
             "module file and socket")
    ids = [out[2]]

    dest = H.mkdtemp("pubrelay-install-")
    found = [p for p in H.make_install(dest).get("pubrelay.py", [])
             if "-packages" in p]
    check_eq(len(found), 1, "pubrelay.py installed in a site directory: "
             "%r" % found)
    site = os.path.dirname(found[0])
    out = run_python(SNIPPET % q, {"PUBRELAY_SOCKET": r.sock}, "installed",
                     site)
    check_eq(out[:2], [found[0], r.sock], "installed module and socket")
    ids.append(out[2])
    msgs = ctx.drain(r, q)
    check_eq([(b, p.message_id) for b, p in msgs],
             [(b"p0-000000", ids[0]), (b"p0-000000", ids[1])],
             "deliveries and their ids")


def doc_blocks(path, section):
    """The ```python blocks of one `## section` of a Markdown file."""
    with open(path) as f:
        text = f.read()
    start = text.find("\n## %s\n" % section)
    if start < 0:
        raise H.HarnessError("%s: no section %r" % (path, section))
    end = text.find("\n## ", start + 1)
    body = text[start:end if end > 0 else len(text)]
    blocks = [b.split("```", 1)[0] for b in body.split("```python\n")[1:]]
    if not blocks:
        raise H.HarnessError("%s, %s: no python blocks" % (path, section))
    return blocks


@scenario
def python_docs_examples(ctx):
    """Python: the code blocks of docs/CLIENTS.md's Python section run as
    shown, in order, in one process (PUBRELAY_SOCKET naming the relay,
    `bodies` given), and what they publish arrives: the JSON order through
    amq.topic, the pipelined bodies, the confirmed "paid", the retried
    "job"."""
    r = ctx.relay()
    topic = H.unique_queue("doc-topic")
    with ctx.consumer() as cons:
        for q in ("events", "orders", "jobs"):
            cons.declare(q)
        cons.declare(topic)
        cons.ch.queue_bind(queue=topic, exchange="amq.topic",
                           routing_key="orders.created")
    blocks = doc_blocks(os.path.join(SRCDIR, "docs", "CLIENTS.md"),
                        "Python")
    code = ("import sys\nsys.path.insert(0, %r)\n"
            "bodies = [b'p0-%%06d' %% i for i in range(1000)]\n"
            % os.path.dirname(PYCLIENT) + "\n".join(blocks)
            + "\nprint('dead', dead)\n")
    p = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code],
                       env={"PATH": "/usr/bin:/bin",
                            "PUBRELAY_SOCKET": r.sock},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    err = p.stderr.decode(errors="replace")
    check_eq(p.returncode, 0, "the examples' exit code (stderr %r)" % err)
    check_eq(p.stdout.decode().split(), ["dead", "0"], "their output")
    r.wait_drained(60)
    with ctx.consumer() as cons:
        got = {q: [b for b, _ in cons.drain(q)]
               for q in ("events", "orders", "jobs", topic)}
    check_eq(got[topic], [b'{"id": 42}'], "the order via amq.topic")
    check_eq(got["orders"], [b"paid"], "the confirmed message")
    check_eq(got["jobs"], [b"job"], "the retried message")
    H.check_delivery(got["events"], {0: 1000}, allow_dups=False)


# ---------------------------------------------------------------------------


def setup(names):
    global P
    P = load_pubrelay()
    return S.start_broker()


def main(argv):
    # The memory alarm is lifted by python_full_retry's own finally.
    return S.run("clients.py", scenario, argv, setup, Ctx,
                 repair=lambda b, last: S.ensure_broker(b),
                 teardown=lambda b: b.stop(), tap_notes=True,
                 needs=("broker", "pika"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
