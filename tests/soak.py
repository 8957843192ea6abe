#!/usr/bin/python3
"""soak.py: a fault-injection soak test of pubrelayd (TAP, one test): four
producers through a relay while the broker, the link and the relay itself
fail at random for PUBRELAY_SOAK_SECONDS; nothing accepted may be lost, and
each producer's first deliveries must be in order.

Four producers stream lines through `pubrelay publish --lines --print-id`
while faults are injected every 2-5 s (seeded: first each kind once in a
random order, then random picks):

    broker_kill        SIGKILL of the broker's Erlang VM, a fresh node on the
                       same data dir and ports
    close_connections  rabbitmqctl close_all_connections
    proxy_freeze       the fault proxy between relay and broker forwards
                       nothing for a few seconds (no FIN, no RST)
    proxy_reset        the proxy resets every connection (RST both ways)
    relay_kill         SIGKILL of pubrelayd, restarted on the same outbox
    memory_alarm       a memory alarm on the broker for a few seconds

A producer that gets exit 75 (or loses its connection) resends from the
first line it has no OK for (it counts the ids --print-id printed), after a
short pause.  At the end (faults stopped, proxy passing, alarm cleared,
broker and relay up) every producer finishes the lines it generated, the
relay drains, and an independent pika consumer reads the queue.  Proved:
every line a producer was told was accepted arrived at least once; each
producer's first deliveries are in order; duplicates are counted.  Summary:

    soak: messages=N faults=F lost=0 out_of_order=0 duplicates=D

Details: each producer is a succession of `pubrelay -t 10 publish --lines
--print-id` runs fed about 250 lines/s, through a relay (`heartbeat = 2`,
`confirm_timeout = 5s`, default window) that reaches its own private broker
through faultproxy.py; proxy_freeze lasts 2-6 s, memory_alarm 2-5 s, and
all of it comes from one seed, printed at the start (the same seed gives the
same fault sequence).  A producer resends after 0.2-0.5 s.  Any client exit
code other than 0 and 75, a client hanging after its input ended, or a
client whose "N accepted" disagrees with the ids it printed is a failure;
so are lost or out_of_order not 0, a sanitizer report in the relay's log,
and an exit code other than 0 after the final SIGTERM.  It also reports the
relay's counters summed over its restarts (a broker nack on these plain
queues is not expected; their count is printed when there are any).

Environment: PUBRELAYD, PUBRELAY (required), PUBRELAY_SOAK_SECONDS (length of
the fault phase, default 90), PUBRELAY_SOAK_SEED (default: from the clock),
PUBRELAY_KEEP_TMP.

    PUBRELAYD=./pubrelayd PUBRELAY=./pubrelay /usr/bin/python3 tests/soak.py
"""

import collections
import os
import random
import re
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
from harness import log  # noqa: E402
import scenarios as S  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

PRODUCERS = 4
BATCH, PAUSE = 25, 0.1          # lines per write, pause: ~250 lines/s each
FAULT_GAP = (2.0, 5.0)          # seconds between faults
FAULTS = ("broker_kill", "close_connections", "proxy_freeze", "proxy_reset",
          "relay_kill", "memory_alarm")
FINISH_TIMEOUT = 150            # producers finishing after the fault phase
SECONDS = int(os.environ.get("PUBRELAY_SOAK_SECONDS", "90"))  # fault phase


Fail = S.Failure


class SoakProducer:
    """Streams p<id>-<seq> lines through successive `pubrelay publish
    --lines --print-id` runs.  Invariant: lines [0, acked) got OK; lines
    [acked, generated) were written to some client without an OK and are
    resent first by the next run."""

    ACCEPTED_RE = re.compile(r"(\d+) (?:of \d+ messages )?accepted|"
                             r"(\d+) accepted of the \d+")

    def __init__(self, relay, queue, pid, stop):
        self.relay = relay
        self.queue = queue
        self.pid = pid
        self.stop = stop                # set: generate nothing new, finish
        self.generated = 0
        self.acked = 0
        self.runs = 0
        self.exit_codes = collections.Counter()
        self.problems = []              # contract violations of the client
        self.error = None
        self._t = threading.Thread(target=self._main, daemon=True,
                                   name="producer-%d" % pid)

    def start(self):
        self._t.start()
        return self

    def join(self, timeout):
        self._t.join(timeout)
        return not self._t.is_alive()

    def _lines(self, a, b):
        return "".join(H.seq_line(self.pid, i) + "\n"
                       for i in range(a, b)).encode()

    def _main(self):
        try:
            while not (self.stop.is_set() and self.acked >= self.generated):
                self._run_once()
        except Exception as e:
            self.error = "%s\n%s" % (e, traceback.format_exc())

    def _run_once(self):
        self.runs += 1
        argv = [H.binary("PUBRELAY"), "-s", self.relay.sock, "-t", "10",
                "publish", "-k", self.queue, "--lines", "--print-id"]
        p = H.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
        out, err = [], []
        readers = [
            threading.Thread(target=lambda: out.append(p.stdout.read()),
                             daemon=True),
            threading.Thread(target=lambda: err.append(p.stderr.read()),
                             daemon=True)]
        for t in readers:
            t.start()
        first = self.acked
        written = 0
        try:
            # Resend what has no OK yet, then new lines, paced.
            seq = first
            while seq < self.generated and p.poll() is None:
                end = min(seq + 500, self.generated)
                p.stdin.write(self._lines(seq, end))
                p.stdin.flush()
                written += end - seq
                seq = end
            while not self.stop.is_set() and p.poll() is None:
                end = self.generated + BATCH
                data = self._lines(self.generated, end)
                self.generated = end
                p.stdin.write(data)
                p.stdin.flush()
                written += BATCH
                time.sleep(PAUSE)
        except (BrokenPipeError, OSError):
            pass
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            H.killpg(p)
            rc = p.wait(timeout=10)
            self.problems.append("run %d: the client hung for 60 s after "
                                 "its input ended; killed" % self.runs)
        for t in readers:
            t.join(10)
        H.guardian.unwatch(p.pid)
        ids = b"".join(out).splitlines()
        stderr = b"".join(err).decode("utf-8", "replace").strip()
        n = len(ids)
        self.exit_codes[rc] += 1
        if rc == 0:
            if n != written:
                self.problems.append("run %d: exit 0 after %d ids for %d "
                                     "lines" % (self.runs, n, written))
        else:
            m = self.ACCEPTED_RE.search(stderr)
            said = None
            if m:
                said = int(m.group(1) or m.group(2))
            if said is not None and said != n:
                self.problems.append(
                    "run %d: stderr says %d accepted, --print-id printed %d "
                    "(%r)" % (self.runs, said, n, stderr[-200:]))
            if rc != 75:
                self.problems.append("run %d: exit %d (only 0 and 75 are "
                                     "expected): %r"
                                     % (self.runs, rc, stderr[-300:]))
        self.acked = first + n
        if rc != 0:
            time.sleep(random.uniform(0.2, 0.5))


class Soak:
    def __init__(self, seconds, seed):
        self.seconds = seconds
        self.seed = seed
        self.rng = random.Random(seed)
        self.broker = None
        self.proxy = None
        self.relay = None
        self.queue = None
        self.faults = collections.Counter()
        self.fault_log = []
        # Relay counters summed over its restarts (they restart at zero).
        self.relay_totals = collections.Counter()
        self.t0 = None
        self.relays = []        # for the driver: the relay, once started

    def note(self, msg):
        log("soak: %s" % msg)

    def _bank_relay_stats(self):
        try:
            st = self.relay.stats()
        except Exception:
            return
        for k in ("nacked", "reconnects", "returned", "published",
                  "confirmed", "accepted"):
            if isinstance(st.get(k), int):
                self.relay_totals[k] += st[k]

    def inject(self, name):
        r = self.rng
        t = time.monotonic() - self.t0
        detail = ""
        if name == "broker_kill":
            self.broker.kill()
            time.sleep(r.uniform(0, 2))
            detail = "back after %.1fs" % self.broker.restart()
        elif name == "close_connections":
            self.broker.close_all_connections("soak")
        elif name == "proxy_freeze":
            d = r.uniform(2, 6)
            self.proxy.freeze()
            time.sleep(d)
            self.proxy.passthrough()
            detail = "%.1fs" % d
        elif name == "proxy_reset":
            detail = "%d connections" % self.proxy.reset()
        elif name == "relay_kill":
            self._bank_relay_stats()
            self.relay.kill()
            time.sleep(r.uniform(0, 1))
            self.relay.restart()
        elif name == "memory_alarm":
            d = r.uniform(2, 5)
            self.broker.memory_alarm(True)
            time.sleep(d)
            self.broker.memory_alarm(False)
            detail = "%.1fs" % d
        self.faults[name] += 1
        self.fault_log.append((t, name, detail))
        self.note("t=%.1fs fault #%d %s %s"
                  % (t, sum(self.faults.values()), name, detail))

    def run(self):
        self.note("seed=%d fault phase %ds (PUBRELAY_SOAK_SEED=%d "
                  "reproduces the fault sequence)"
                  % (self.seed, self.seconds, self.seed))
        self.broker = H.Broker().start()
        self.note("broker %s on 127.0.0.1:%d booted in %.1fs"
                  % (self.broker.node, self.broker.port,
                     self.broker.boot_seconds))
        self.proxy = FaultProxy(self.broker.port, name="soak-proxy").start()
        self.relay = H.Relay(self.broker, "soak",
                             uri=self.broker.uri(port=self.proxy.port),
                             overrides={
                                 "broker": {"heartbeat": "2",
                                            "connect_timeout": "2s"},
                                 "publish": {"confirm_timeout": "5s"}})
        H.on_exit(self.proxy.stop)
        self.relays.append(self.relay)
        self.relay.start()
        with H.Consumer(self.broker) as c:
            self.queue = c.declare(H.unique_queue("soak"))
        stop = threading.Event()
        prods = [SoakProducer(self.relay, self.queue, p, stop).start()
                 for p in range(PRODUCERS)]

        # The fault phase.
        self.t0 = time.monotonic()
        end = self.t0 + self.seconds
        # Every kind once, in a random order, then random picks.
        order = list(FAULTS)
        self.rng.shuffle(order)
        while True:
            gap = self.rng.uniform(*FAULT_GAP)
            if time.monotonic() + gap >= end:
                break
            time.sleep(gap)
            self.inject(order.pop(0) if order else self.rng.choice(FAULTS))

        # Back to health: proxy passing, no alarm, broker and relay up.
        self.proxy.passthrough()
        if not self.broker.running():
            if self.broker.proc is None or self.broker.proc.poll() is not None:
                self.broker.restart()
            else:
                self.broker.start_app()
        self.broker.memory_alarm(False)
        if not self.relay.alive():
            self.relay.restart()
        self.note("faults stopped at t=%.1fs; producers finishing"
                  % (time.monotonic() - self.t0))
        stop.set()
        deadline = time.monotonic() + FINISH_TIMEOUT
        for p in prods:
            if not p.join(max(1, deadline - time.monotonic())):
                raise Fail("producer %d did not finish within %ds of the "
                           "fault phase (acked %d of %d generated)"
                           % (p.pid, FINISH_TIMEOUT, p.acked, p.generated))
            if p.error:
                raise Fail("producer %d failed: %s" % (p.pid, p.error))
        st = self.relay.wait_drained(180)
        self._bank_relay_stats()
        self.note("relay drained: %s" % H.fmt_stats(st))
        self.note("relay totals over %d starts: %s" % (
            self.relay.starts, " ".join("%s=%d" % kv for kv in
                                        sorted(self.relay_totals.items()))))
        self.note("proxy: %s" % self.proxy.stats())

        t = time.monotonic()
        with H.Consumer(self.broker) as c:
            msgs = c.drain(self.queue, timeout=600)
            c.ch.queue_delete(queue=self.queue)
        self.note("consumed %d deliveries in %.1fs"
                  % (len(msgs), time.monotonic() - t))
        return self.verdict(prods, msgs)

    def verdict(self, prods, msgs):
        # Not check_delivery(): every problem is reported, not the first.
        per, other = H.split_by_producer(msgs)
        foreign = len(other)
        total_msgs = lost = ooo = dups = 0
        problems = []
        for p in prods:
            seqs = [d[0] for d in per.get(p.pid, [])]
            rep = H.check_order(seqs, range(p.acked), first=0,
                                last=p.generated - 1)
            total_msgs += p.acked
            lost += rep.lost
            ooo += rep.out_of_order
            dups += rep.duplicates
            self.note("producer %d: %d accepted (%d generated) in %d runs "
                      "(exit codes %s); %s"
                      % (p.pid, p.acked, p.generated, p.runs,
                         dict(p.exit_codes), rep))
            if not rep.ok:
                problems.append("producer %d: %s" % (p.pid, rep))
            if p.acked != p.generated:
                problems.append("producer %d: %d lines generated, %d "
                                "accepted at the end" % (p.pid, p.generated,
                                                         p.acked))
            for msg in p.problems[:10]:
                problems.append("producer %d: %s" % (p.pid, msg))
        if foreign:
            problems.append("%d foreign messages in the queue" % foreign)
        nacked = self.relay_totals.get("nacked", 0)
        if nacked:
            self.note("the broker nacked %d times (plain durable queue: not "
                      "expected; with window > 1 a nack may reorder first "
                      "deliveries)" % nacked)
        log("soak: messages=%d faults=%d lost=%d out_of_order=%d "
            "duplicates=%d" % (total_msgs, sum(self.faults.values()), lost,
                               ooo, dups))
        self.note("faults: %s" % dict(self.faults))
        if lost or ooo:
            problems.insert(0, "lost=%d out_of_order=%d" % (lost, ooo))
        return problems


def soak(ctx):
    # The one scenario; this module's docstring describes it.
    problems = ctx.run()
    for pr in problems:
        log("soak: FAILED: %s" % pr)
    if problems:
        raise Fail("%d problem(s), the first: %s" % (len(problems),
                                                     problems[0]))
    rc = ctx.relay.term()
    if rc != 0:
        raise Fail("pubrelayd exit code after SIGTERM: %s" % rc)


soak.__doc__ = __doc__
SCENARIOS = S.Registry()
SCENARIOS(soak)


def setup(names):
    seed_env = os.environ.get("PUBRELAY_SOAK_SEED", "")
    seed = int(seed_env) if seed_env else int(time.time() * 1000) % 1000000
    return Soak(SECONDS, seed)


def report(soak, ctx, name):
    if soak.broker is not None:
        soak.broker.dump_log(20)


def teardown(soak):
    if soak.proxy is not None:
        soak.proxy.stop()
    if soak.broker is not None:
        soak.broker.stop()


def main(argv):
    return S.run("soak.py", SCENARIOS, argv, setup, lambda soak, name: soak,
                 report=report, teardown=teardown, log_lines=60,
                 timeout=SECONDS + 420,
                 needs=("root", "broker", "pika"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
