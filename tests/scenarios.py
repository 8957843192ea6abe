"""scenarios.py: the TAP driver shared by every scenario suite
(integration.py, failures.py, cluster.py, pid1.py, tls.py, systemd.py and
soak.py), and their `--list`.

A suite registers its scenarios with a Registry and hands run() what differs
between suites: how to set up the broker(s) for the run, how to make a
scenario's context, what extra to show when a scenario fails, what to clean
up after each one, how to put the broker(s) back in service, and how to
stop them.  The driver does the rest the same way for every suite: the
usage and unknown-scenario checks, the TAP plan and lines, a time limit per
scenario, the relays' logs and stats on failure, killing what the scenario
left running, and the sanitizer reports in the relays' logs (a scenario
whose relay logged one fails even if its checks passed).

`--list` (listing() below) prints each scenario's name and the first
paragraph of its docstring, `--list -v` all of it, and starts nothing.  The
docstring is the one description of a scenario (what it does, what it
proves): a scenario without one makes `--list` fail.

A scenario's context must have `relays` (the harness.Relay objects it
started); Ctx below is the least one.  A suite names what it cannot run
without (run()'s needs: root, RabbitMQ, systemd, tools); on a machine that
lacks one it skips as a whole, saying why, and fails instead when
PUBRELAY_REQUIRE_ALL is set.  Past that a scenario fails (never skips) when
something it needs cannot be set up.
"""

import inspect
import signal
import sys
import time
import traceback

import harness as H
from harness import log

SCENARIO_TIMEOUT = 300     # seconds; a scenario taking longer fails

# What ASan/UBSan/LSan print: a relay log holding one fails the scenario.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer",
                   "SUMMARY: AddressSanitizer", "WARNING: ThreadSanitizer")


Failure = H.Failure     # an assertion about the product failed


class ScenarioTimeout(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def check_eq(got, want, what):
    if got != want:
        raise Failure("%s: got %r, want %r" % (what, got, want))


def sanitizer_reports(text):
    """The lines of a relay log from the first sanitizer report on."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if any(m in ln for m in SANITIZER_MARKS):
            return lines[i:]
    return []


class Ctx:
    """The least context: the run's shared state (setup()'s), the relays
    the scenario started, and notes (with run(tap_notes=True), shown on
    its TAP line)."""

    def __init__(self, world, name):
        self.world = world
        self.name = name
        self.relays = []
        self.notes = []


class Registry:
    """The suite's scenarios, in the order they are defined."""

    def __init__(self):
        self.items = []

    def __call__(self, fn):
        self.items.append((fn.__name__, fn))
        return fn

    def names(self):
        return [n for n, _ in self.items]


def listing(prog, items, argv):
    """Handle `--list [-v]` (and -h) for a suite's [(name, fn)] items.

    Returns None when argv asks for neither (the suite runs), else the exit
    code: 0 when listed, 2 when a scenario has no docstring."""
    args = argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print("usage: %s [SCENARIO ...]\n       %s --list [-v]\n"
              "scenarios: %s" % (prog, prog, " ".join(n for n, _ in items)))
        return 0
    if "--list" not in args:
        return None
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `--list | head`
    rest = [a for a in args if a not in ("--list", "-v", "--verbose")]
    if rest:
        sys.stderr.write("%s: --list takes only -v, not %s\n"
                         % (prog, " ".join(rest)))
        return 2
    verbose = "-v" in args or "--verbose" in args
    missing = []
    for name, fn in items:
        doc = inspect.cleandoc(fn.__doc__ or "").strip()
        if not doc:
            missing.append(name)
            continue
        if not verbose:
            doc = doc.split("\n\n")[0]
        print(name)
        for ln in doc.splitlines():
            print(("    " + ln).rstrip())
        if verbose:
            print()
    if missing:
        sys.stderr.write("%s: FAIL: scenario(s) without a docstring: %s "
                         "(every scenario says what it proves)\n"
                         % (prog, " ".join(missing)))
        return 2
    return 0


def _time_limit(seconds, what):
    """Raise ScenarioTimeout in the main thread after seconds."""
    def alarm(signum, frame):
        raise ScenarioTimeout("%s still running after %ds: aborted"
                              % (what, seconds))
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)


def start_broker(more=""):
    """The private RabbitMQ node of a suite's setup(), started and logged
    (more: what else to say on that line); HarnessError when it cannot
    start."""
    try:
        b = H.Broker().start()
    except Exception as e:
        raise H.HarnessError("cannot start the RabbitMQ broker: %s" % (e,))
    log("broker %s on 127.0.0.1:%d booted in %.1fs%s"
        % (b.node, b.port, b.boot_seconds, "; " + more if more else ""))
    return b


def ensure_broker(broker):
    """Put a suite's broker back in service after a scenario that faulted
    it (and failed half-way): a repair() for run()."""
    if broker.proc is None or broker.proc.poll() is not None:
        log("broker %s: not running after the scenario; restarting it"
            % broker.node)
        broker.restart()
    elif not H.tcp_connectable(broker.port):
        log("broker %s: app stopped after the scenario; starting it"
            % broker.node)
        broker.start_app()


def _noop(*a):
    pass


def run(prog, registry, argv, setup, make_ctx, report=_noop, cleanup=_noop,
        repair=_noop, teardown=_noop, log_lines=40,
        timeout=SCENARIO_TIMEOUT, tap_notes=False, needs=()):
    """Run the scenarios argv names (all when none) and print TAP.

    setup(names) -> env: starts the broker(s), within timeout seconds; an
    exception fails every scenario with its text.  make_ctx(env, name) ->
    ctx.  report(env, ctx, name): more to log when a scenario failed.
    cleanup(ctx): after each scenario, besides killing its relays.
    repair(env, last): put the broker(s) back in service (an exception
    fails the scenarios after).  teardown(env) -> a word for the final line
    ("broker stop").  timeout: seconds a scenario may take.  tap_notes:
    ctx.notes joined on the scenario's TAP line.  needs: what the suite
    cannot run without (harness.lacking()); when the machine lacks one the
    suite skips as a whole (harness.skip_all()).
    Returns the exit code: 0 when every scenario passed."""
    rc = listing(prog, registry.items, argv)
    if rc is not None:
        return rc
    names = registry.names()
    wanted = argv[1:]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print("Bail out! unknown scenario(s): %s (known: %s)"
              % (" ".join(unknown), " ".join(names)))
        return 2
    selected = [(n, f) for n, f in registry.items
                if not wanted or n in wanted]
    why = H.lacking(needs)
    if why is not None:
        H.skip_all("%s %s" % (prog, why))
    print("1..%d" % len(selected))
    sys.stdout.flush()
    t_start = time.monotonic()

    setup_error = None
    env = None
    try:
        H.binary("PUBRELAYD")
        H.binary("PUBRELAY")
    except H.HarnessError as e:
        setup_error = str(e)
    if setup_error is None:
        try:
            _time_limit(timeout, "setup")
            try:
                env = setup([n for n, _ in selected])
            finally:
                signal.alarm(0)
        except Exception as e:
            setup_error = str(e)
            log("setup: FAILED: %s" % e)
            log(traceback.format_exc())

    failed = 0
    for i, (name, fn) in enumerate(selected, 1):
        if setup_error is not None:
            log("%s: %s" % (name, setup_error))
            print("not ok %d - %s" % (i, name))
            sys.stdout.flush()
            failed += 1
            continue
        ctx = make_ctx(env, name)
        t0 = time.monotonic()
        ok = True
        try:
            _time_limit(timeout, "scenario")
            try:
                fn(ctx)
            finally:
                signal.alarm(0)
        except Exception as e:
            ok = False
            if isinstance(e, (Failure, H.HarnessError, ScenarioTimeout)):
                log("%s: FAILED: %s" % (name, e))
            else:
                log("%s: ERROR: %s" % (name, e))
            log(traceback.format_exc())
            for r in ctx.relays:
                if r.alive():
                    try:
                        log("%s: relay stats: %s"
                            % (name, H.fmt_stats(r.stats())))
                    except Exception:
                        pass
                r.dump_log(log_lines)
            try:
                report(env, ctx, name)
            except Exception as e:
                log("%s: cannot report more: %s" % (name, e))
        finally:
            for r in ctx.relays:
                if r.alive():
                    r.kill()
            try:
                cleanup(ctx)
            except Exception as e:
                log("%s: cleanup: %s" % (name, e))
            try:
                repair(env, i == len(selected))
            except Exception as e:
                log("cannot put the broker back in service: %s" % e)
                setup_error = "the broker is broken after %s: %s" % (name, e)
        for r in ctx.relays:
            bad = sanitizer_reports(r.log_text())
            if bad:
                ok = False
                log("%s: sanitizer report in %s:" % (name, r.logpath))
                log("\n".join(bad[:40]))
        log("%s: %.1fs" % (name, time.monotonic() - t0))
        if not ok:
            failed += 1
        notes = getattr(ctx, "notes", None) if tap_notes else None
        print("%s %d - %s%s" % ("ok" if ok else "not ok", i, name,
                                ": " + "; ".join(notes) if notes else ""))
        sys.stdout.flush()

    t = time.monotonic()
    what = "broker stop"
    if env is not None:
        what = teardown(env) or what
    log("total %.1fs (%s %.1fs)" % (time.monotonic() - t_start, what,
                                    time.monotonic() - t))
    return 1 if failed else 0
