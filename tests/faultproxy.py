"""faultproxy.py: a fault-injecting TCP proxy for the failure tests.

It sits between pubrelayd and the broker (127.0.0.1 only) and forwards bytes
until the test tells it otherwise:

    pass      forward everything, both directions (the start mode)
    freeze    forward nothing in either direction, for existing and new
              connections alike, but keep every socket open: no FIN, no RST.
              The peers see a network that went silent (a stalled link, a
              dead middlebox).  Bytes they write pile up in socket buffers.
              New connections are accepted and held; they are connected to
              the target only once the proxy passes again.
    refuse    reset new connections at once (accept, then RST); existing
              connections keep forwarding
    drop      accept new connections and never answer them (a blackhole);
              existing connections keep forwarding
    hold      forward the broker's bytes, and at most `allow` more bytes of
              the clients' (hold(allow)), then stop reading them: a live
              broker that stops reading with its buffers full (a resource
              alarm).  With FaultProxy(rcvbuf=N) the held bytes the kernel
              takes are few.

and, at any time:

    reset()   RST every current connection on both sides (SO_LINGER 0, then
              close): pubrelayd and the broker both see ECONNRESET

Standard library only.  One thread runs a selectors loop over non-blocking
sockets; the control methods are thread-safe and return once the loop applied
them.  It counts the connections it accepted (`accepted`) and those open now
(`active()`).

Used from a test:

    p = FaultProxy(broker.port).start()
    uri = broker.uri(port=p.port)
    ... p.freeze(); ...; p.passthrough(); p.reset(); p.refuse(); ...
    p.stop()

or by hand, `python3 faultproxy.py TARGET_PORT [LISTEN_PORT]`, which reads
mode names (pass, freeze, refuse, drop, reset, stats, quit) from stdin.
"""

import queue
import selectors
import socket
import struct
import sys
import threading

MODES = ("pass", "freeze", "refuse", "drop", "hold")
BUF_MAX = 1 << 20           # bytes buffered per direction before reading stops
RECV_SIZE = 65536


def _rst_close(sock):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pair:
    """One proxied connection: the client side (pubrelayd) and the upstream
    side (the broker), with a buffer per direction."""

    def __init__(self, client, n):
        self.n = n
        self.client = client
        self.up = None                  # connected when first forwarded
        self.to_up = bytearray()        # client -> broker, not yet written
        self.to_client = bytearray()    # broker -> client, not yet written
        self.client_eof = False         # client sent FIN
        self.up_eof = False             # broker sent FIN
        self.up_shut = False            # FIN forwarded to the broker
        self.client_shut = False        # FIN forwarded to the client
        self.held = False               # "drop": never forwarded

    def socks(self):
        return [s for s in (self.client, self.up) if s is not None]


class FaultProxy:
    def __init__(self, target_port, target_host="127.0.0.1", listen_port=0,
                 name="faultproxy", rcvbuf=None):
        self.target = (target_host, target_port)
        self.name = name
        self.mode = "pass"
        self.allow = 0              # client bytes still read in "hold"
        self.accepted = 0           # connections accepted since start
        self.refused = 0            # connections reset at accept (refuse)
        self.upstream_failures = 0  # connects to the target that failed
        self.resets = 0             # connections reset by reset()
        self.events = []            # (what, detail) log for diagnostics
        self._pairs = []
        self._n = 0
        self._cmds = queue.Queue()
        self._sel = selectors.DefaultSelector()
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:      # accepted sockets inherit it
            self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                   rcvbuf)
        self._lsock.bind(("127.0.0.1", listen_port))
        self._lsock.listen(128)
        self._lsock.setblocking(False)
        self.port = self._lsock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = None
        self._running = False
        self._lock = threading.Lock()   # guards the counters read by tests

    # -- control (any thread) -------------------------------------------------

    def start(self):
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=self.name)
        self._thread.start()
        return self

    def _call(self, fn, *args, timeout=10):
        if not self._running:
            raise RuntimeError("faultproxy is not running")
        done = threading.Event()
        box = []
        self._cmds.put((fn, args, done, box))
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if not done.wait(timeout):
            raise RuntimeError("faultproxy loop did not answer in %ss"
                               % timeout)
        if box and isinstance(box[0], BaseException):
            raise box[0]
        return box[0] if box else None

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError("mode %r (known: %s)" % (mode, ", ".join(MODES)))
        return self._call(self._set_mode, mode)

    def passthrough(self):
        return self.set_mode("pass")

    def freeze(self):
        return self.set_mode("freeze")

    def refuse(self):
        return self.set_mode("refuse")

    def drop(self):
        return self.set_mode("drop")

    def hold(self, allow=0):
        """Read at most allow more bytes from the clients, then none."""
        return self._call(self._set_hold, allow)

    def reset(self):
        """RST every current connection; returns how many were reset."""
        return self._call(self._reset_all)

    def active(self):
        """Connections open now (held ones included)."""
        return self._call(lambda: len(self._pairs))

    def stats(self):
        return self._call(lambda: {
            "mode": self.mode, "accepted": self.accepted,
            "active": len(self._pairs), "refused": self.refused,
            "resets": self.resets,
            "upstream_failures": self.upstream_failures})

    def stop(self):
        if not self._running:
            return
        try:
            self._call(self._shutdown)
        except RuntimeError:
            pass
        self._running = False
        self._thread.join(5)

    # -- the loop (proxy thread only) ----------------------------------------

    def _note(self, what, detail=""):
        self.events.append((what, detail))
        if len(self.events) > 1000:
            del self.events[:500]

    def _set_mode(self, mode):
        old, self.mode = self.mode, mode
        self._note("mode", "%s -> %s" % (old, mode))
        return old

    def _set_hold(self, allow):
        self.allow = allow
        return self._set_mode("hold")

    def _reset_all(self):
        n = 0
        for pr in list(self._pairs):
            self._kill(pr, rst=True)
            n += 1
        self.resets += n
        self._note("reset", "%d connections" % n)
        return n

    def _shutdown(self):
        for pr in list(self._pairs):
            self._kill(pr, rst=True)
        self._running = False

    def _kill(self, pr, rst):
        for s in pr.socks():
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if rst:
                _rst_close(s)
            else:
                try:
                    s.close()
                except OSError:
                    pass
        if pr in self._pairs:
            self._pairs.remove(pr)

    def _accept(self):
        while True:
            try:
                c, _ = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._note("accept error", str(e))
                return
            self.accepted += 1
            self._n += 1
            if self.mode == "refuse":
                self.refused += 1
                _rst_close(c)
                self._note("refused", "#%d" % self._n)
                continue
            c.setblocking(False)
            pr = _Pair(c, self._n)
            pr.held = self.mode == "drop"
            self._pairs.append(pr)
            self._note("accepted", "#%d (%s)" % (self._n, self.mode))

    def _connect_up(self, pr):
        """Connect the upstream side (blocking, on loopback: immediate)."""
        try:
            u = socket.create_connection(self.target, timeout=2)
        except OSError as e:
            self.upstream_failures += 1
            self._note("upstream connect failed", "#%d: %s" % (pr.n, e))
            self._kill(pr, rst=True)    # as a refused connection would look
            return False
        u.setblocking(False)
        u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pr.up = u
        return True

    def _want(self, pr):
        """{sock: events} this pair wants now."""
        w = {}
        if pr.held or self.mode == "freeze":
            return w            # nothing moves; sockets stay open
        ev_c = 0
        ev_u = 0
        if (not pr.client_eof and len(pr.to_up) < BUF_MAX
                and (self.mode != "hold" or self.allow > 0)):
            ev_c |= selectors.EVENT_READ
        if pr.to_client and not pr.client_shut:
            ev_c |= selectors.EVENT_WRITE
        if not pr.up_eof and len(pr.to_client) < BUF_MAX:
            ev_u |= selectors.EVENT_READ
        if pr.to_up and not pr.up_shut:
            ev_u |= selectors.EVENT_WRITE
        if ev_c:
            w[pr.client] = ev_c
        if ev_u:
            w[pr.up] = ev_u
        return w

    def _sync_registrations(self):
        for pr in list(self._pairs):
            if pr.up is None and not pr.held and self.mode != "freeze":
                if not self._connect_up(pr):
                    continue
            want = self._want(pr)
            for s in pr.socks():
                ev = want.get(s, 0)
                try:
                    key = self._sel.get_key(s)
                except KeyError:
                    key = None
                if ev == 0:
                    if key is not None:
                        self._sel.unregister(s)
                elif key is None:
                    self._sel.register(s, ev, pr)
                elif key.events != ev:
                    self._sel.modify(s, ev, pr)

    def _on_event(self, sock, pr, mask):
        if pr not in self._pairs:
            return
        is_client = sock is pr.client
        if mask & selectors.EVENT_READ:
            size = RECV_SIZE
            if is_client and self.mode == "hold":
                size = min(size, self.allow)
            try:
                data = sock.recv(size) if size > 0 else None
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                # The peer reset: pass the reset on.
                self._note("peer reset", "#%d %s side"
                           % (pr.n, "client" if is_client else "upstream"))
                self._kill(pr, rst=True)
                return
            if data == b"":
                if is_client:
                    pr.client_eof = True
                else:
                    pr.up_eof = True
            elif data:
                (pr.to_up if is_client else pr.to_client).extend(data)
                if is_client and self.mode == "hold":
                    self.allow -= len(data)
        if mask & selectors.EVENT_WRITE:
            buf = pr.to_client if is_client else pr.to_up
            if buf:
                try:
                    n = sock.send(buf)
                    del buf[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self._kill(pr, rst=True)
                    return
        self._half_close(pr)

    def _half_close(self, pr):
        """Forward FINs once the buffers are flushed; close a pair that is
        finished both ways."""
        if pr.client_eof and not pr.to_up and not pr.up_shut and pr.up:
            pr.up_shut = True
            try:
                pr.up.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if pr.up_eof and not pr.to_client and not pr.client_shut:
            pr.client_shut = True
            try:
                pr.client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if pr.up_shut and pr.client_shut:
            self._kill(pr, rst=False)

    def _loop(self):
        self._sel.register(self._lsock, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while self._running:
                self._sync_registrations()
                for key, mask in self._sel.select(timeout=0.5):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, InterruptedError):
                            pass
                    else:
                        self._on_event(key.fileobj, key.data, mask)
                while True:
                    try:
                        fn, args, done, box = self._cmds.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        box.append(fn(*args))
                    except Exception as e:  # report to the caller
                        box.append(e)
                    done.set()
        finally:
            for pr in list(self._pairs):
                self._kill(pr, rst=True)
            for s in (self._lsock, self._wake_r, self._wake_w):
                try:
                    s.close()
                except OSError:
                    pass
            # Answer anything still queued so no caller waits for ever.
            while True:
                try:
                    _, _, done, box = self._cmds.get_nowait()
                except queue.Empty:
                    break
                box.append(None)
                done.set()


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: faultproxy.py TARGET_PORT [LISTEN_PORT]\n")
        return 64
    p = FaultProxy(int(argv[1]),
                   listen_port=int(argv[2]) if len(argv) > 2 else 0).start()
    print("listening on 127.0.0.1:%d -> 127.0.0.1:%s" % (p.port, argv[1]))
    sys.stdout.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if not cmd:
            continue
        if cmd == "quit":
            break
        try:
            if cmd == "reset":
                print("reset %d connections" % p.reset())
            elif cmd == "stats":
                print(p.stats())
            else:
                p.set_mode(cmd)
                print("mode", cmd)
        except (ValueError, RuntimeError) as e:
            print("error:", e)
        sys.stdout.flush()
    p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
