#!/usr/bin/python3
"""prometheus.py: the metrics endpoint scraped by a real Prometheus, and the
shipped rules (contrib/prometheus/) checked and unit-tested by promtool.

Prints TAP.  Run by `make check`, or by hand after `make`:

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \\
        /usr/bin/python3 tests/prometheus.py [SCENARIO ...]

Debian's prometheus server runs as a child of this suite with its own
config, data dir and loopback port in a temp dir, scraping one pubrelayd
(job "pubrelay", [metrics] listen on a free port) every second and
evaluating the shipped rules every second; everything is read back through
Prometheus's HTTP query API.  The broker is a private RabbitMQ node.
`--list [-v]` prints what each scenario proves.  About 40 s.
"""

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import scenarios as S  # noqa: E402
from harness import log  # noqa: E402
from scenarios import check, check_eq  # noqa: E402

SRCDIR = os.environ.get("PUBRELAY_SRCDIR",
                        os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__))))
RULES_DIR = os.path.join(SRCDIR, "contrib", "prometheus")
RULES = os.path.join(RULES_DIR, "pubrelay.rules.yml")
RULES_TEST = os.path.join(RULES_DIR, "pubrelay.rules.test.yml")
# What the rules file holds: 5 recording rules and 16 alerts.
N_RULES = 21


def run(argv, timeout=120):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Prometheus:
    """A private Prometheus server scraping one target every second."""

    def __init__(self, target):
        self.dir = H.mkdtemp("pubrelay-prom-")
        self.port = H.free_port()
        self.proc = None
        conf = os.path.join(self.dir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "rule_files:\n  - %s\n"
                    "scrape_configs:\n  - job_name: pubrelay\n"
                    "    static_configs:\n"
                    "      - targets: ['%s']\n" % (json.dumps(RULES), target))
        self.argv = ["prometheus", "--config.file=" + conf,
                     "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                     "--web.listen-address=127.0.0.1:%d" % self.port,
                     "--log.level=warn"]
        self.logpath = os.path.join(self.dir, "prometheus.log")

    def start(self):
        with open(self.logpath, "ab") as out:
            self.proc = H.spawn(self.argv, cwd=self.dir, stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        H.on_exit(self.stop)

        def ready():
            if self.proc.poll() is not None:
                raise H.HarnessError("prometheus exited with %s: %s"
                                     % (self.proc.returncode,
                                        H.tail(self.logpath)))
            try:
                return self.get("/-/ready", raw=True) is not None
            except OSError:
                return False
        H.wait_until(ready, 60, "prometheus to be ready", interval=0.2)
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                H.killpg(self.proc)
            H.reap(self.proc)
            self.proc = None

    def get(self, path, raw=False, **params):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode("utf-8")
        if raw:
            return body
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise H.HarnessError("%s: %s" % (path, body[:500]))
        return doc["data"]

    def query(self, expr):
        """{instance-free label string: value} of an instant query."""
        data = self.get("/api/v1/query", query=expr)
        out = {}
        for r in data["result"]:
            labels = dict(r["metric"])
            for k in ("instance", "job"):
                labels.pop(k, None)
            key = ",".join("%s=%s" % kv for kv in sorted(labels.items()))
            out[key] = float(r["value"][1])
        return out

    def value(self, expr):
        """The one value of expr now, None when it has no sample."""
        got = self.query(expr)
        if len(got) > 1:
            raise H.HarnessError("%s: %d series" % (expr, len(got)))
        return next(iter(got.values())) if got else None

    def wait_value(self, expr, want, timeout=30):
        H.wait_until(lambda: self.value(expr) == want, timeout,
                     "Prometheus to see %s == %s (last: %r)"
                     % (expr, want, self.value(expr)), interval=0.25)

    def alerts(self):
        """{alertname: state} of the active alerts."""
        return {a["labels"]["alertname"]: a["state"]
                for a in self.get("/api/v1/alerts")["alerts"]}


class Ctx(S.Ctx):
    def __init__(self, env, name):
        super().__init__(env, name)
        self.broker = env["broker"]


scenario = S.Registry()


@scenario
def rules_check(ctx):
    """`promtool check rules` accepts contrib/prometheus/pubrelay.rules.yml
    (syntax, PromQL, templates) and finds every rule: 5 recording rules
    and 16 alerts (N_RULES)."""
    rc, out = run(["promtool", "check", "rules", RULES])
    log(out)
    check_eq(rc, 0, "promtool check rules")
    check("SUCCESS: %d rules found" % N_RULES in out, "rules found: %r"
          % out)


@scenario
def rules_unit(ctx):
    """`promtool test rules` of contrib/prometheus/pubrelay.rules.test.yml:
    each alert fires on the series that should fire it, with its labels
    and summary, not before its `for:` and not on the look-alikes (an
    outbox without a limit, a flat backlog); the recording rules give the
    rates, ratio and mean they name."""
    rc, out = run(["promtool", "test", "rules", RULES_TEST])
    log(out)
    check_eq(rc, 0, "promtool test rules")
    check("SUCCESS" in out, "promtool test rules: %r" % out)


@scenario
def scraped(ctx):
    """A real Prometheus scrapes the relay's /metrics every second with the
    shipped rules loaded.  Through its query API: the target is up and
    pubrelay_up is 1; the accepted counter reaches the messages published;
    every rule evaluates without error against the real series.  With the
    broker app stopped the backlog gauge rises to the messages published
    meanwhile, the link state reads disconnected or connecting, and
    PubrelayBrokerLinkDown goes pending (its `for:` is 5m); after
    start_app the backlog falls to 0, confirmed counts them all and the
    alert is gone.  With the relay stopped the target goes down and
    PubrelayNotScraped goes pending."""
    port = H.free_port()
    relay = H.Relay(ctx.broker, ctx.name,
                    overrides={"metrics": {"listen": str(port)}})
    ctx.relays.append(relay)
    relay.start()
    prom = Prometheus("127.0.0.1:%d" % port).start()
    try:
        with H.Consumer(ctx.broker) as c:
            q = c.declare(H.unique_queue("prom"))
        prom.wait_value('up{job="pubrelay"}', 1.0)
        prom.wait_value("pubrelay_up", 1.0)
        rc, _, err = relay.cmd("publish", "-k", q, "--lines",
                               data=b"".join(b"p%d\n" % i for i in range(5)))
        check_eq(rc, 0, "publish 5 (stderr %r)" % err)
        prom.wait_value("pubrelay_accepted_total", 5.0)
        prom.wait_value("pubrelay_confirmed_total", 5.0)

        def rules_ok():
            groups = prom.get("/api/v1/rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            bad = [(r["name"], r.get("lastError")) for r in rules
                   if r.get("health") != "ok"]
            return len(rules) == N_RULES and not bad
        H.wait_until(rules_ok, 30, "every shipped rule evaluated, health ok")
        H.wait_until(lambda: (prom.value("pubrelay:accepted:rate5m") or 0)
                     > 0, 30, "the recording rule pubrelay:accepted:rate5m "
                     "to see the messages")

        ctx.broker.stop_app()
        try:
            rc, _, err = relay.cmd("publish", "-k", q, "--lines",
                                   data=b"".join(b"d%d\n" % i
                                                 for i in range(9)))
            check_eq(rc, 0, "publish 9, broker down (stderr %r)" % err)
            prom.wait_value("pubrelay_backlog_messages", 9.0)
            prom.wait_value('pubrelay_link_state{state="connected"}', 0.0)
            H.wait_until(lambda: prom.alerts().get("PubrelayBrokerLinkDown")
                         == "pending", 30,
                         "PubrelayBrokerLinkDown to go pending")
        finally:
            ctx.broker.start_app()
        prom.wait_value("pubrelay_backlog_messages", 0.0, timeout=60)
        prom.wait_value("pubrelay_confirmed_total", 14.0)
        H.wait_until(lambda: "PubrelayBrokerLinkDown" not in prom.alerts(),
                     30, "PubrelayBrokerLinkDown to clear")

        check_eq(relay.term(), 0, "pubrelayd exit code after SIGTERM")
        prom.wait_value('up{job="pubrelay"}', 0.0)
        H.wait_until(lambda: prom.alerts().get("PubrelayNotScraped")
                     == "pending", 30, "PubrelayNotScraped to go pending")
    except Exception:
        log("prometheus log: %s" % H.tail(prom.logpath))
        raise
    finally:
        prom.stop()


def setup(names):
    rc, out = run(["prometheus", "--version"])
    return {"broker": S.start_broker(out.splitlines()[0] if out else
                                     "prometheus --version: nothing")}


def main(argv):
    return S.run("prometheus.py", scenario, argv, setup, Ctx,
                 repair=lambda env, last: S.ensure_broker(env["broker"]),
                 teardown=lambda env: env["broker"].stop(),
                 needs=("broker", "pika", "prometheus", "promtool"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
