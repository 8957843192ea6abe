#!/usr/bin/python3
"""storage.py: the outbox's disk failing under a real pubrelayd, with faults
injected by libfiu (issue #24).

Prints TAP.  Run by `make check`, or by hand after `make`:

    PUBRELAYD=$PWD/pubrelayd PUBRELAY=$PWD/pubrelay \\
        /usr/bin/python3 tests/storage.py [SCENARIO ...]

pubrelayd runs under `fiu-run -x` (Debian's fiu-utils: libfiu's POSIX
wrappers preloaded, a control FIFO in the relay's temp dir); `fiu-ctrl`
turns a failure point on and off in the running daemon (posix/io/sync/
fdatasync and fsync with EIO, posix/io/rw/pwrite with ENOSPC) while a
pipelined client streams numbered messages to a private RabbitMQ node.
Each scenario ends with an independent consumer checking that every
message the daemon said OK to arrived, in order, under the message-id its
OK named, and that no message arrived under two message-ids.  crash_image
copies the outbox files of a frozen daemon and opens each copy with a
fresh one.  `--list [-v]` prints what each proves.
"""

import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import integration as I  # noqa: E402  (shared checks)
import scenarios as S  # noqa: E402
from scenarios import check, check_eq  # noqa: E402

EIO, ENOSPC = 5, 28


_asan = []


def fiu_wrap(fifo, *args):
    """argv before pubrelayd's: fiu-run -x -f FIFO ARGS.  A pubrelayd built
    with AddressSanitizer (./configure --enable-sanitizers) wants its
    runtime first of the preloaded libraries, and fiu-run puts libfiu's
    first: a shell between them puts libasan in front, and tells
    LeakSanitizer to ignore what libfiu's own start-up keeps (the failure
    points of -c, 42 bytes)."""
    if not _asan:
        p = subprocess.run(["ldd", H.binary("PUBRELAYD")],
                           stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        libs = [ln.split("=>")[1].split()[0] for ln in
                p.stdout.decode().splitlines()
                if "libasan" in ln and "=>" in ln]
        supp = None
        if libs:
            supp = os.path.join(H.mkdtemp("pubrelay-lsan-"), "fiu.supp")
            with open(supp, "w") as f:
                f.write("leak:fiu_run_preload.so\n")
        _asan.append((libs[0], supp) if libs else None)
    argv = ["fiu-run", "-x", "-f", fifo] + list(args)
    if _asan[0] is not None:
        argv += ["sh", "-c", 'LD_PRELOAD="%s $LD_PRELOAD" LSAN_OPTIONS='
                 '"suppressions=%s:print_suppressions=0:$LSAN_OPTIONS" '
                 'exec "$@"' % _asan[0], "sh"]
    return argv


class Ctx(S.Ctx):
    def __init__(self, env, name):
        super().__init__(env, name)
        self.broker = env["broker"]
        self.notes = []

    def fiu_relay(self, overrides=None):
        """A relay under fiu-run -x, its control FIFO in its own dir."""
        r = H.Relay(self.broker, self.name, overrides=overrides)
        r.wrap = fiu_wrap(os.path.join(r.dir, "fiu"))
        self.relays.append(r)
        r.start()
        return r

    def note(self, msg):
        self.notes.append(msg)


def fiu(relay, command):
    """Run a libfiu remote control command in the running relay."""
    p = subprocess.run(["fiu-ctrl", "-f", os.path.join(relay.dir, "fiu"),
                        "-c", command, str(relay.proc.pid)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    check_eq(p.returncode, 0, "fiu-ctrl -c %r: %s" % (command,
                                                     p.stdout.decode()))


def stream_until_fault(ctx, relay, q, n, after, fault):
    """Stream n numbered messages; once `after` of them were OK'd, turn on
    the failure points of fault.  Returns (the stream, its requests)."""
    reqs = [H.encode_pub(H.seq_line(1, i), [("routing-key", q)])
            for i in range(n)]
    stream = H.PipelinedStream(relay.sock, reqs, chunk=50,
                               pause=0.005).start()
    H.wait_until(lambda: stream.ok_count() >= after, 60,
                 "%d OK replies before the fault" % after, interval=0.005)
    for point in fault:
        fiu(relay, point)
    return stream, reqs


def oks_then_refusals(stream):
    """The replies are OKs, then refusals only: never an OK after one."""
    first_bad = next((i for i, r in enumerate(stream.replies)
                      if not r.startswith("OK ")), None)
    if first_bad is not None:
        late = [r for r in stream.replies[first_bad:] if r.startswith("OK ")]
        check(not late, "an OK after a refusal: %r then %r"
              % (stream.replies[first_bad], late[:2]))
    return first_bad


def finish(ctx, relay, q, reqs, done, ok_ids):
    """Send reqs[done:] (all must be OK'd), let the relay drain, and check
    with an independent consumer that every message arrived, in order,
    each OK'd one under its OK's message-id, and none under two message-ids
    (copies of one are republished under its id); then stop the relay."""
    finish_all(ctx, relay, q, {1: (reqs, done, ok_ids)})


def finish_all(ctx, relay, q, producers):
    """finish() for {producer: (reqs, done, ok_ids)}, their rests sent one
    after another."""
    for p, (reqs, done, ok_ids) in sorted(producers.items()):
        if done < len(reqs):
            stream = H.PipelinedStream(relay.sock, reqs[done:]).start()
            check(stream.join(120), "the rest did not finish")
            check_eq(stream.ok_count(), len(reqs) - done, "OK replies to "
                     "the rest of producer %d" % p)
    relay.wait_drained(180)
    with H.Consumer(ctx.broker) as c:
        msgs = c.drain(q)
    per, _ = H.check_delivery(msgs, {p: len(v[0]) for p, v in
                                     producers.items()}, same_ids=True,
                              note=ctx.note)
    for p, (_, _, ok_ids) in sorted(producers.items()):
        I.check_ids_stable(p, per[p], ok_ids)
    check_eq(relay.term(), 0, "exit status after SIGTERM")


scenario = S.Registry()


@scenario
def fsync_eio(ctx):
    """fdatasync and fsync fail with EIO in the middle of a pipelined stream
    of 40,000 messages (sync = full).  The clients of the failed commit get
    ERR STORE, no OK follows any refusal, and pubrelayd logs one error
    naming the failed sync and exits 74 without writing again (a sync that
    failed may have lost what it covered: it starts over from the disk).
    Started again (as systemd does) without the fault, it delivers every
    message OK'd before the fault, in order, under the message-id its OK
    named; the client resends what got no OK, and those arrive too, each
    under one message-id: the failed commit, whose frames were in the
    write-ahead log, was cut from it and does not come back."""
    N = 40000
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("fsync"))
    relay = ctx.fiu_relay()
    stream, reqs = stream_until_fault(
        ctx, relay, q, N, 5000,
        ["enable name=posix/io/sync/fdatasync,failinfo=%d" % EIO,
         "enable name=posix/io/sync/fsync,failinfo=%d" % EIO])
    rc = relay.proc.wait(timeout=30)
    stream.join(30)
    check_eq(rc, 74, "pubrelayd's exit status after the failed sync")
    k = stream.ok_count()
    first_bad = oks_then_refusals(stream)
    check(first_bad is not None and
          stream.replies[first_bad].startswith("ERR STORE "),
          "the failed commit's clients: %r" %
          (stream.replies[first_bad:first_bad + 2] if first_bad is not None
           else "no refusal"))
    text = relay.log_text()
    check(text.count("a sync failed") == 1 and
          "the failed commit was cut from the write-ahead log" in text and
          "exiting with status 74" in text,
          "the log does not say once what happened: %s" % text[-1500:])
    ctx.note("%d OK before the fault, then %r" % (k, stream.replies[k]
                                                  [:60]))
    ok_ids = dict(enumerate(stream.ids[:k]))

    relay.wrap = []
    relay.restart()
    finish(ctx, relay, q, reqs, k, ok_ids)


@scenario
def write_enospc(ctx):
    """pwrite fails with ENOSPC for a moment in the middle of a pipelined
    stream of 30,000 messages: the failed commits' clients get ERR FULL
    (retry later), no OK follows a refusal on that connection, and the
    daemon stays up; once the fault is off a new connection's messages are
    accepted again without a restart, the broker gets every OK'd message in
    order under its OK's message-id, and the resend of the rest."""
    N = 30000
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("enospc"))
    relay = ctx.fiu_relay()
    stream, reqs = stream_until_fault(
        ctx, relay, q, N, 4000,
        ["enable name=posix/io/rw/pwrite,failinfo=%d" % ENOSPC])
    H.wait_until(lambda: oks_then_refusals(stream) is not None, 30,
                 "a refusal while pwrite fails")
    fiu(relay, "disable name=posix/io/rw/pwrite")
    stream.join(60)
    check(relay.alive(), "pubrelayd exited on ENOSPC")
    k = stream.ok_count()
    first_bad = oks_then_refusals(stream)
    check(stream.replies[first_bad].startswith("ERR FULL "),
          "the refusal: %r" % stream.replies[first_bad])
    ok_ids = dict(enumerate(stream.ids[:k]))
    ctx.note("%d OK, then %r" % (k, stream.replies[first_bad][:70]))
    finish(ctx, relay, q, reqs, k, ok_ids)


@scenario
def write_eio_short(ctx):
    """pwrite fails with EIO for a moment of a pipelined stream: the failed
    commit is refused (ERR STORE), no OK follows a refusal, the daemon
    stays up and takes messages again once the fault is off.  Then writes
    come back short (libfiu's posix/io/rw/pwrite/reduce) for a while:
    SQLite writes the rest, and 3,000 more messages are OK'd meanwhile.
    Every OK'd message arrives in order under its OK's id."""
    N = 30000
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("eio"))
    relay = ctx.fiu_relay()
    reqs = [H.encode_pub(H.seq_line(1, i), [("routing-key", q)])
            for i in range(N)]
    done, ok_ids = 0, {}
    for fault, want in (("posix/io/rw/pwrite,failinfo=%d" % EIO,
                         "ERR STORE "),
                        ("posix/io/rw/pwrite/reduce", None)):
        stream = H.PipelinedStream(relay.sock, reqs[done:], chunk=50,
                                   pause=0.005).start()
        H.wait_until(lambda: stream.ok_count() >= 3000, 60,
                     "3000 OK replies before the fault", interval=0.005)
        fiu(relay, "enable name=" + fault)
        if want is None:
            n = stream.ok_count()
            H.wait_until(lambda: stream.ok_count() >= n + 3000 or
                         oks_then_refusals(stream) is not None, 60,
                         "3000 more OKs with short writes")
            check(oks_then_refusals(stream) is None, "a refusal with "
                  "short writes: %r" % stream.replies[
                      oks_then_refusals(stream) or 0])
        else:
            H.wait_until(lambda: oks_then_refusals(stream) is not None, 30,
                         "a refusal under %s" % fault)
        fiu(relay, "disable name=" + fault.split(",")[0])
        stream.join(60)
        check(relay.alive(), "pubrelayd exited under %s" % fault)
        first_bad = oks_then_refusals(stream)
        if want is not None:
            check(stream.replies[first_bad].startswith(want),
                  "the refusal under %s: %r"
                  % (fault, stream.replies[first_bad]))
        k = stream.ok_count()
        ok_ids.update((done + i, mid) for i, mid in
                      enumerate(stream.ids[:k]))
        ctx.note("%s: %d OK, then %r" % (fault.split(",")[0], k,
                                         stream.replies[first_bad][:40]
                                         if first_bad is not None
                                         else "no refusal"))
        done += k
    finish(ctx, relay, q, reqs, done, ok_ids)


@scenario
def checkpoint_sync(ctx):
    """With sync = normal a commit is not synced: fdatasync and fsync run
    when SQLite copies the write-ahead log into the database file (the
    checkpoint), and for the commit that reserves message ids, the first
    one.  Failing them with EIO for 59,000 pipelined messages
    costs no OK and no restart: the log keeps what a failed checkpoint
    copied and grows past its working size (no checkpoint completes), the
    log says no sync failed; with the fault off a checkpoint completes and
    the log is cut back to its limit, and every message arrives in order
    under its OK's message-id."""
    N, FAULTED = 70000, 60000
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("ckpt"))
    relay = ctx.fiu_relay({"outbox": {"sync": "normal"}})
    wal = relay.outbox + "-wal"
    # SQLite's default working size: 1000 frames of a 4096-byte page.
    working, limit = 32 + 1000 * (4096 + 24), 2 * (32 + 1000 * (4096 + 24))
    reqs = [H.encode_pub(H.seq_line(1, i), [("routing-key", q)])
            for i in range(N)]
    # After the first commit, which reserves ids and so is synced.
    stream = H.PipelinedStream(relay.sock, reqs[:FAULTED], chunk=50,
                               pause=0.002).start()
    H.wait_until(lambda: stream.ok_count() >= 1000, 60, "1000 OK replies",
                 interval=0.005)
    for point in ("fdatasync", "fsync"):
        fiu(relay, "enable name=posix/io/sync/%s,failinfo=%d" % (point, EIO))
    check(stream.join(120), "the stream under failing syncs did not finish")
    grown = os.path.getsize(wal)
    for point in ("fdatasync", "fsync"):
        fiu(relay, "disable name=posix/io/sync/" + point)
    check(relay.alive(), "pubrelayd exited (%s) when checkpoints could not "
          "sync" % relay.proc.poll())
    check_eq(stream.ok_count(), FAULTED, "OK replies while syncs failed "
             "(first refusal: %r)" % (stream.replies[oks_then_refusals(
                 stream) or 0],))
    check(grown > working, "the log did not grow past its working size "
          "(%d bytes) while syncs failed: %d bytes" % (working, grown))
    ok_ids = dict(enumerate(stream.ids))
    # The log is cut back when a commit starts it over after a checkpoint
    # that completed: watch its size while the rest is written and drained.
    sizes, stop = [grown], threading.Event()

    def watch():
        while not stop.wait(0.005):
            sizes.append(os.path.getsize(wal))
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rest = H.PipelinedStream(relay.sock, reqs[FAULTED:]).start()
        check(rest.join(120), "the rest did not finish")
        check_eq(rest.ok_count(), N - FAULTED, "OK replies after the fault")
        ok_ids.update((FAULTED + i, mid) for i, mid in enumerate(rest.ids))
        relay.wait_drained(180)
        H.wait_until(lambda: min(sizes) <= limit, 60,
                     "the log to be cut back to %d bytes (from %d)"
                     % (limit, grown))
    finally:
        stop.set()
        watcher.join()
    check("a sync failed" not in relay.log_text(),
          "a failed checkpoint sync was taken for a failed commit")
    ctx.note("log %d bytes while syncs failed, then %d"
             % (grown, min(sizes)))
    finish(ctx, relay, q, reqs, N, ok_ids)


@scenario
def random_faults(ctx):
    """For 2 minutes two clients stream numbered messages while libfiu fails
    pwrite with EIO and makes it short, and fails fdatasync with EIO, at
    random (probability 0.002, 0.001 and 0.002 a call), and the broker
    drains (its deletes fail too).  Each failed sync makes pubrelayd exit
    74, and the test starts it again, as systemd does, under the same
    faults.  Each client does what a well-behaved one does: after a
    refusal or a closed connection it sends again, from the first message
    without an OK.  At the end, with the faults off, every message was
    OK'd, and the consumer gets them all, in order, each under its OK's
    message-id and no message under two ids (a commit whose sync failed
    must not come back from the write-ahead log at the restart); the log
    says once per exit what happened."""
    import time
    N, SECONDS, BATCH = 300000, 120, 10000
    P = (1, 2)
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("random"))
    relay = ctx.fiu_relay()
    faults = ["enable_random name=posix/io/rw/pwrite,probability=0.002,"
              "failinfo=%d" % EIO,
              "enable_random name=posix/io/rw/pwrite/reduce,"
              "probability=0.001",
              "enable_random name=posix/io/sync/fdatasync,"
              "probability=0.002,failinfo=%d" % EIO]
    reqs = {p: [H.encode_pub(H.seq_line(p, i), [("routing-key", q)])
                for i in range(N)] for p in P}
    done = {p: 0 for p in P}
    ok_ids = {p: {} for p in P}
    limit = {p: N for p in P}   # after the faults: the end of the last send
    sent_to = dict(done)
    refusals, restarts = 0, 0
    end = time.monotonic() + SECONDS
    armed = over = False
    while any(done[p] < limit[p] for p in P):
        if not relay.alive():
            rc = relay.proc.wait()
            check_eq(rc, 74, "pubrelayd's exit status under faults")
            restarts += 1
            relay.restart()
            armed = False
        if not over and time.monotonic() >= end:
            over = True
            if armed:
                for f in faults:
                    fiu(relay, "disable name=" + f.split(" name=")[1]
                        .split(",")[0])
                armed = False
            limit = dict(sent_to)
        elif not over and not armed:
            for f in faults:
                fiu(relay, f)
            armed = True
        streams = {}
        for p in P:
            sent_to[p] = min(done[p] + BATCH, limit[p])
            if done[p] >= sent_to[p]:
                continue
            try:
                streams[p] = H.PipelinedStream(
                    relay.sock, reqs[p][done[p]:sent_to[p]], chunk=50,
                    pause=0.02).start()
            except OSError:
                # Exiting after a failed sync: its socket is gone already.
                relay.proc.wait(timeout=30)
                break
        for p, stream in streams.items():
            stream.join(120)
            bad = oks_then_refusals(stream)
            k = stream.ok_count()
            ok_ids[p].update((done[p] + i, mid) for i, mid in
                             enumerate(stream.ids[:k]))
            done[p] += k
            if bad is not None or k == 0:
                refusals += 1
        check(refusals < 2000, "no progress: %d refusals" % refusals)
    check(over, "all %d messages of each producer sent within the %d s of "
          "faults" % (N, SECONDS))
    ctx.note("%s messages, %d streams cut short, %d restarts after a failed "
             "sync" % ("+".join(str(limit[p]) for p in P), refusals,
                       restarts))
    check(restarts > 0, "no sync failed in %d s" % SECONDS)
    check_eq(relay.log_text().count("a sync failed"), restarts,
             "log lines saying a sync failed")
    finish_all(ctx, relay, q, {p: (reqs[p][:limit[p]], limit[p], ok_ids[p])
                               for p in P})


@scenario
def start_faults(ctx):
    """Faults a start cannot get past, with 500 messages waiting in the
    outbox (broker app stopped when they came): mmap failing with ENOMEM
    (the write-ahead log's shared-memory index), open failing with EMFILE
    and with EACCES, each from the first call on.  pubrelayd exits 73 naming the
    outbox (or its lock file) and the error, leaves the file as it was,
    and a start without the fault delivers all 500, in order."""
    N = 500
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("startf"))
    ctx.broker.stop_app()
    try:
        relay = H.Relay(ctx.broker, ctx.name)
        ctx.relays.append(relay)
        relay.start()
        reqs = [H.encode_pub(H.seq_line(1, i), [("routing-key", q)])
                for i in range(N)]
        stream = H.PipelinedStream(relay.sock, reqs).start()
        check(stream.join(60) and stream.ok_count() == N, "500 OKs")
        ok_ids = dict(enumerate(stream.ids))
        check_eq(relay.term(), 0, "exit status after SIGTERM")
    finally:
        ctx.broker.start_app()
    with open(relay.outbox, "rb") as f:
        before = f.read()
    for fault, what in (("posix/mm/mmap,failinfo=12", relay.outbox),
                        ("posix/io/oc/open,failinfo=24",
                         relay.outbox + ".lock"),
                        ("posix/io/oc/open,failinfo=13",
                         relay.outbox + ".lock")):
        relay.wrap = fiu_wrap("", "-c", "enable name=" + fault)
        relay.start(wait=False)
        rc = relay.proc.wait(timeout=30)
        log_text = relay.log_text().split("==== harness: start")[-1]
        check(rc == 73 and what + ":" in log_text,
              "%s: exit %s, log %r" % (fault, rc, log_text[-400:]))
        ctx.note("%s: %s" % (fault.split(",")[0],
                             log_text.strip().splitlines()[-1][:90]))
    with open(relay.outbox, "rb") as f:
        check(f.read() == before, "the failed starts changed the outbox")
    relay.wrap = []
    relay.start()
    finish(ctx, relay, q, reqs, N, ok_ids)


@scenario
def crash_image(ctx):
    """sync = full, the broker app stopped (nothing is deleted): while a
    pipelined client streams 20,000 messages, pubrelayd is frozen
    (SIGSTOP) at five moments and its outbox files copied as the disk
    holds them, the shared-memory index left out (as after a power loss);
    the OKs received before each copy are counted first.  Each copy is
    then opened by a fresh pubrelayd with the broker back: every message
    OK'd before its copy is delivered from it, in order, under the
    message-id its OK named (WAL recovery, a checkpoint caught halfway
    included)."""
    import random
    import shutil
    import signal
    N, SHOTS = 20000, 5
    with H.Consumer(ctx.broker) as c:
        q = c.declare(H.unique_queue("image"))
    ctx.broker.stop_app()
    images = []
    try:
        relay = H.Relay(ctx.broker, ctx.name)
        ctx.relays.append(relay)
        relay.start()
        reqs = [H.encode_pub(H.seq_line(1, i, pad=200), [("routing-key", q)])
                for i in range(N)]
        stream = H.PipelinedStream(relay.sock, reqs, chunk=20,
                                   pause=0.002).start()
        rnd = random.Random(os.getpid())
        marks = sorted(rnd.sample(range(1000, N - 1000), SHOTS))
        for n, mark in enumerate(marks):
            H.wait_until(lambda: stream.ok_count() >= mark, 120,
                         "%d OK replies" % mark, interval=0.002)
            k = stream.ok_count()
            ids = list(stream.ids[:k])
            os.kill(relay.proc.pid, signal.SIGSTOP)
            try:
                d = H.mkdtemp("pubrelay-image-")
                for sfx in ("", "-wal"):
                    if os.path.exists(relay.outbox + sfx):
                        shutil.copyfile(relay.outbox + sfx,
                                        os.path.join(d, "outbox.db" + sfx))
            finally:
                os.kill(relay.proc.pid, signal.SIGCONT)
            images.append((d, k, ids))
        check(stream.join(120), "the stream did not finish")
        relay.kill()
    finally:
        ctx.broker.start_app()
    for d, k, ids in images:
        r = H.Relay(ctx.broker, ctx.name + "-image",
                    overrides={"outbox": {"path": os.path.join(d,
                                                               "outbox.db")}})
        ctx.relays.append(r)
        r.start()
        r.wait_drained(120)
        check_eq(r.term(), 0, "exit status of the image's relay")
        with H.Consumer(ctx.broker) as c:
            msgs = c.drain(q)
            c.declare(q)        # empty for the next image
        per = {}
        for body, props in msgs:
            seq = H.parse_seq(body)
            if seq is not None:
                per.setdefault(seq[1], props.message_id)
        missing = [i for i in range(k) if i not in per]
        check(not missing, "image after %d OKs: %d OK'd messages missing, "
              "the first %r" % (k, len(missing), missing[:5]))
        bad = [i for i in range(k) if per[i] != ids[i]]
        check(not bad, "image after %d OKs: message-ids other than the "
              "OKs' for %r" % (k, bad[:5]))
        got = [H.parse_seq(b)[1] for b, _ in msgs if H.parse_seq(b)]
        check(got == sorted(got), "image after %d OKs: out of order" % k)
        ctx.note("%d OK'd, %d in the image" % (k, len(per)))


def setup(names):
    return {"broker": S.start_broker()}


def main(argv):
    return S.run("storage.py", scenario, argv, setup, Ctx,
                 repair=lambda env, last: S.ensure_broker(env["broker"]),
                 teardown=lambda env: env["broker"].stop(), tap_notes=True,
                 needs=("broker", "pika", "fiu-run", "fiu-ctrl"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
