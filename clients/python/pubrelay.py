"""pubrelay: a Python client for pubrelayd, the local RabbitMQ relay.

One file, standard library only (Python 3.9 or later): install it with
pubrelay (`make install`) or copy this file next to your code.  It speaks
the protocol of pubrelay-protocol(7), which is the reference for what the
daemon does with each request; this docstring and those below are the
reference for the module.

    import pubrelay

    with pubrelay.Client() as c:
        mid = c.publish(b'{"id": 42}', routing_key="orders.created",
                        exchange="amq.topic",
                        content_type="application/json",
                        headers={"source": "web"})
        ids = c.publish_many(b"event %d" % i for i in range(10000))
        c.publish(b"paid", routing_key="orders", confirm=5)  # broker's ack
        dead = c.wait(30)       # everything accepted so far confirmed?

An "OK" (the message id publish() returns) means the message is committed
to the daemon's outbox and will reach the broker even if the daemon or the
host goes down; with confirm=, publish() returns only once the broker
confirmed it.

Errors are exceptions, all subclasses of Error:

    ReplyError        the daemon refused a request: `ERR CODE text`;
                      .code and .text, and one subclass per code (Full,
                      Store, Shutdown, BadRequest, TooBig, ...; see
                      ERROR_CLASSES).  .retryable is True for the codes the
                      protocol says to retry later: FULL, STORE, SHUTDOWN,
                      LIMIT.  A code this module does not know is a plain
                      ReplyError.
    Parked            a receipt: the broker refused the message for good
                      and the daemon parked it (.message_id, .reason).
    NotConfirmed      a receipt or WAIT timed out (.message_id, None for
                      WAIT): the message stays in the outbox and will
                      still be published.
    ConnectionLost    the connection broke, or no reply came within the
                      client's timeout: a message whose OK was not read
                      may or may not be in the outbox.  ClientTimeout (also
                      a TimeoutError) is the second case; ConnectFailed
                      (retryable) a connect that failed, nothing sent.
    ProtocolError     a reply this module cannot read.

After a refused PUB the daemon skips the connection's later ones until the
client sends RESET (the refusal latch); this client sends it for you before
it raises, so the connection is usable again and the caller decides what
to resend.  After SHUTDOWN, LIMIT, DENIED, PROTO or a lost connection, the
next request connects again.  retry() repeats a call on the retryable
errors with backoff.

A Client is not thread-safe: use one per thread (or per task).
"""

import collections
import os
import random
import select
import socket
import time

__all__ = [
    "Client", "Status", "retry", "default_socket", "DEFAULT_SOCKET",
    "Error", "ReplyError", "BadRequest", "TooBig", "UnknownCommand", "Full",
    "Store", "Skipped", "NotFound", "FramingError", "Limit", "Denied",
    "Shutdown", "Parked", "NotConfirmed", "ConnectionLost", "ConnectFailed",
    "ClientTimeout", "ProtocolError",
]

__version__ = "0.1.0"

#: The socket of a packaged daemon (pubrelay.ini(5), [socket] path).
DEFAULT_SOCKET = "/run/pubrelay/pubrelay.sock"
#: Seconds a request may wait for progress, as `pubrelay -t` (30).
DEFAULT_TIMEOUT = 30.0

_FLUSH_AT = 256 * 1024      # queued request bytes that make queue() write
_RECV = 256 * 1024


def default_socket():
    """The socket path a Client uses without one: $PUBRELAY_SOCKET when set
    and not empty, else DEFAULT_SOCKET (as pubrelay(1) does)."""
    return os.environ.get("PUBRELAY_SOCKET") or DEFAULT_SOCKET


# ---------------------------------------------------------------------------
# Errors


class Error(Exception):
    """Every error this module raises (besides ValueError and TypeError
    for bad arguments).  index and results: see Client.results()."""

    index = None
    results = None
    retryable = False       # True: the same call may succeed later


class ConnectionLost(Error):
    """The connection closed or broke before the reply came."""


class ConnectFailed(ConnectionLost):
    """Connecting to the socket failed (no daemon, or not allowed): nothing
    was sent, so retrying is safe.  .errno as the OSError's."""
    retryable = True

    def __init__(self, msg, errno=None):
        super().__init__(msg)
        self.errno = errno


class ClientTimeout(ConnectionLost, TimeoutError):
    """No progress within the client's timeout; the connection is closed,
    since a late reply could no longer be matched to its request."""


class ProtocolError(Error):
    """A reply this client cannot read (the connection is closed)."""


class ReplyError(Error):
    """`ERR CODE text`: the daemon refused the request.

    code: the protocol's error code (str); text: its explanation.
    index: for a reply in results() or publish_many(), the position of the
    request it answers; results: then every result of that batch, errors in
    place (see Client.results())."""

    closes = False          # the daemon closes the connection after it

    def __init__(self, code, text=""):
        super().__init__("%s %s" % (code, text) if text else code)
        self.code = code
        self.text = text


class BadRequest(ReplyError):
    """BADREQ: a malformed request; sending it again will not help."""


class TooBig(ReplyError):
    """TOOBIG: the message can never be accepted."""


class UnknownCommand(ReplyError):
    """UNKNOWN: a verb the daemon does not know (an older daemon)."""


class Full(ReplyError):
    """FULL: the outbox (or this user's share, or the disk) is full."""
    retryable = True


class Store(ReplyError):
    """STORE: writing the outbox failed; the message is not in it."""
    retryable = True


class Skipped(ReplyError):
    """SKIPPED: not taken because an earlier PUB on the connection was
    refused; resend it."""


class NotFound(ReplyError):
    """NOTFOUND: no such dead letter."""


class FramingError(ReplyError):
    """PROTO: the daemon lost the framing and closed the connection."""
    closes = True


class Limit(ReplyError):
    """LIMIT: too many connections; refused on connecting."""
    retryable = True
    closes = True


class Denied(ReplyError):
    """DENIED: this user may not connect."""
    closes = True


class Shutdown(ReplyError):
    """SHUTDOWN: the daemon is stopping; this request was not taken."""
    retryable = True
    closes = True


#: ERR code -> exception class; other codes raise a plain ReplyError.
ERROR_CLASSES = {
    "BADREQ": BadRequest, "TOOBIG": TooBig, "UNKNOWN": UnknownCommand,
    "FULL": Full, "STORE": Store, "SKIPPED": Skipped, "NOTFOUND": NotFound,
    "PROTO": FramingError, "LIMIT": Limit, "DENIED": Denied,
    "SHUTDOWN": Shutdown,
}


class Parked(Error):
    """A receipt: the broker refused the message and it was parked as a
    dead letter.  message_id; reason, as `pubrelay dead list` shows it
    (naming the broker's reply code, e.g. 404 NOT_FOUND)."""

    def __init__(self, message_id, reason):
        super().__init__("parked %s: %s" % (message_id, reason))
        self.message_id = message_id
        self.reason = reason


class NotConfirmed(Error):
    """A receipt (message_id) or a WAIT (message_id None) was not confirmed
    within its time, or the daemon is stopping.  The messages stay in the
    outbox and will still be published."""

    def __init__(self, message_id=None):
        super().__init__("not confirmed in time: %s" % message_id
                         if message_id else "WAIT timed out")
        self.message_id = message_id


def _reply_error(line):
    code, _, text = line[4:].partition(" ")
    return ERROR_CLASSES.get(code, ReplyError)(code, text)


#: STATUS's answer: state is "queued", "inflight", "confirmed", "parked" or
#: "unknown" (see STATUS in pubrelay-protocol(7)); reason only when parked.
Status = collections.namedtuple("Status", "state message_id reason")


# ---------------------------------------------------------------------------
# Encoding


def _prop_value(name, value):
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    else:
        value = str(value)
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("property %s: a value may not hold a line end or "
                         "NUL: %r" % (name, value))
    return value


def encode_pub(body, properties=None, headers=None):
    """The bytes of one PUB request.

    body: bytes-like, or str (sent as UTF-8).  properties: {name: value},
    names with '_' or '-' (routing_key or routing-key), values str, int or
    bool (mandatory).  headers: {name: value} for the AMQP headers table.
    A value holding a line end or NUL raises ValueError here rather than
    break the framing."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = ["PUB %d\n" % len(body)]
    if properties:
        for name, value in properties.items():
            if value is None:
                continue
            name = name.replace("_", "-")
            head.append("%s: %s\n" % (name, _prop_value(name, value)))
    if headers:
        for name, value in headers.items():
            name = _prop_value("header", name)
            if not name or "=" in name:
                raise ValueError("header name %r: empty or holds '='" % name)
            head.append("header: %s=%s\n" % (name, _prop_value(name, value)))
    head.append("\n")
    return b"".join(("".join(head).encode("utf-8"), body, b"\n"))


def _confirm_ms(seconds):
    ms = int(round(seconds * 1000))
    return min(max(ms, 1), 86400000)


# ---------------------------------------------------------------------------
# The client


# What a request waits for: its kind and how long the daemon may take on
# purpose before it answers (a receipt's or a WAIT's time).
_Pending = collections.namedtuple("_Pending", "kind patience")


class Client:
    """A connection to pubrelayd.

    Client(path=None, timeout=30.0, connect=True): path is the daemon's
    Unix socket (default_socket() when None).  timeout (seconds) bounds
    each wait for progress (connecting, sending, each reply); a receipt or
    WAIT may take its own time on top of it.  Reaching it raises
    ClientTimeout and closes the connection.  The connection opens here
    (unless connect=False) and again, on the next request, after the
    daemon closed it.

    Simple requests: publish(), ping(), stats(), status(), wait(), reset().
    Pipelining: queue() requests, then results() collects their replies
    in order; publish_many() does both for an iterable of messages.  A
    simple request made while queued requests wait first collects their
    replies as results() does, raising their first error instead of
    sending: call results() yourself before it.

    A context manager: leaving the block normally collects the results of
    requests still queued (raising their first error), then closes; with
    an exception it only closes."""

    def __init__(self, path=None, timeout=DEFAULT_TIMEOUT, connect=True):
        self.path = path or default_socket()
        self.timeout = timeout
        self._sock = None
        self._out = bytearray()
        self._in = bytearray()
        self._pending = collections.deque()
        self._done = []         # replies of pipelined requests, parsed
        self._eof = False
        self._untaken = None    # [error, n]: n requests after a closing one
        if connect:
            self.connect()

    # -- connection ---------------------------------------------------------

    def connect(self):
        """Open the connection (closing an open one first)."""
        self.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.path)
        except socket.timeout:
            s.close()
            raise ClientTimeout("connect %s: no answer in %gs"
                                % (self.path, self.timeout)) from None
        except OSError as e:
            s.close()
            raise ConnectFailed("connect %s: %s" % (self.path, e.strerror
                                                    or e), e.errno) from e
        s.setblocking(False)
        self._sock = s
        self._eof = False
        return self

    def close(self):
        """Close the connection.  Queued requests whose replies were not
        collected are dropped: a PUB among them may or may not have been
        committed."""
        self._drop()
        self._done = []
        self._untaken = None

    def _drop(self):
        """Close the socket, keeping the replies parsed so far."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._out.clear()
        self._in.clear()
        self._pending.clear()

    @property
    def connected(self):
        return self._sock is not None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self._batch_open():
                self.results()
        finally:
            self.close()

    # -- I/O ------------------------------------------------------------------

    def _lost(self, msg, cls=ConnectionLost):
        e = cls("%s: %s" % (self.path, msg))
        e.results = self._done
        self.close()
        raise e

    def _io_once(self, wait):
        """One select(): send what the socket takes, read what came.
        Returns True when bytes moved or the daemon closed."""
        s = self._sock
        r, w, _ = select.select([] if self._eof else [s],
                                [s] if self._out else [], [], wait)
        progress = False
        if w:
            try:
                n = s.send(self._out)
                del self._out[:n]
                progress = n > 0
            except BlockingIOError:
                pass
            except OSError:
                # The daemon closed (after SHUTDOWN, PROTO, or killed):
                # what it answered before may still be there to read.
                self._out.clear()
                progress = True
        if r:
            try:
                chunk = s.recv(_RECV)
            except BlockingIOError:
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self._eof = True
                self._out.clear()
                progress = True
            elif chunk:
                self._in += chunk
                progress = True
        return progress

    def _pump(self, done):
        """Send and read until done() holds; waits at most the timeout (and
        the oldest request's own time) for each bit of progress."""
        idle_since = time.monotonic()
        while not done():
            if self._eof and not self._out:
                self._lost("connection closed by the daemon")
            patience = self.timeout
            if self._pending:
                patience += self._pending[0].patience
            left = idle_since + patience - time.monotonic()
            if left <= 0:
                self._lost("no progress in %gs" % patience, ClientTimeout)
            try:
                if self._io_once(min(left, 86400.0)):
                    idle_since = time.monotonic()
            except InterruptedError:
                pass

    def _have_reply(self):
        """Is the oldest pending request's reply whole in the buffer?"""
        i = self._in.find(b"\n")
        if i < 0:
            return False
        kind = self._pending[0].kind if self._pending else None
        if kind == "stats" and self._in[:6] == b"STATS ":
            try:
                n = int(bytes(self._in[:i]).split(b" ", 1)[1])
            except (IndexError, ValueError):
                return True     # _reply() says what is wrong with it
            return len(self._in) >= i + 1 + n
        return True

    def _line(self):
        i = self._in.find(b"\n")
        line = bytes(self._in[:i])
        del self._in[:i + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line.decode("utf-8", "replace")

    def _reply(self):
        """Read and parse the reply of the oldest pending request: its
        value, or an Error instance (returned, not raised)."""
        self._pump(self._have_reply)
        kind = self._pending.popleft().kind
        line = self._line()
        if line.startswith("ERR "):
            e = _reply_error(line)
            if e.closes:
                # Nothing after it was taken, and no reply will come; the
                # requests queued after it until results() are not sent.
                self._untaken = [e, len(self._pending)]
                self._drop()
            return e
        verb, _, rest = line.partition(" ")
        if kind == "pub":
            if verb in ("OK", "CONFIRMED") and rest:
                return rest
            if verb == "TIMEOUT" and rest:
                return NotConfirmed(rest)
            if verb == "PARKED" and rest:
                # A generated message-id holds no blank, so the reason
                # follows the first one (a client's own id with blanks
                # cannot be told from the reason).
                mid, _, reason = rest.partition(" ")
                return Parked(mid, reason)
        elif kind in ("ping", "reset"):
            if line == ("PONG" if kind == "ping" else "OK"):
                return True
        elif kind == "wait":
            if verb == "OK" and rest.isdigit():
                return int(rest)
            if line == "TIMEOUT":
                return NotConfirmed(None)
        elif kind == "status":
            state = verb.lower()
            if state in ("queued", "inflight", "confirmed", "unknown") \
                    and rest:
                return Status(state, rest, None)
            if state == "parked" and rest:
                mid, _, reason = rest.partition(" ")
                return Status(state, mid, reason)
        elif kind == "stats":
            if verb == "STATS" and rest.isdigit():
                n = int(rest)
                data = bytes(self._in[:n])
                del self._in[:n]
                return data.decode("utf-8", "replace")
        e = ProtocolError("unexpected reply to %s: %r" % (kind.upper(), line))
        e.results = self._done
        self.close()
        raise e

    def _collect_ready(self):
        """Parse the replies already read, without waiting."""
        while self._pending and self._have_reply():
            self._done.append(self._reply())

    def _queue(self, data, kind, patience=0.0):
        if self._untaken is not None:
            self._untaken[1] += 1
            return
        if self._sock is None:
            self.connect()
        self._out += data
        self._pending.append(_Pending(kind, patience))
        if len(self._out) >= _FLUSH_AT:
            # Read the replies as they come, so that the daemon never stops
            # reading us for replies we left unread (max_buffer).
            def below():
                self._collect_ready()
                return len(self._out) < _FLUSH_AT
            self._pump(below)

    def _simple(self, data, kind, patience=0.0):
        if self._batch_open():
            self.results()
        self._queue(data, kind, patience)
        v = self._reply()
        self._done = []
        if isinstance(v, Error):
            if kind == "pub" and isinstance(v, ReplyError):
                self._reset_latch()
            raise v
        return v

    def _batch_open(self):
        """Were requests queued whose results() was not collected?"""
        return bool(self._pending or self._done
                    or self._untaken is not None)

    def _reset_latch(self):
        """RESET after a refused PUB, when the connection is still open."""
        if self._sock is not None:
            self._queue(b"RESET\n", "reset")
            if self._reply() is not True:
                raise ProtocolError("RESET was not answered OK")


    # -- requests -------------------------------------------------------------

    def publish(self, body, routing_key="", exchange="", *, confirm=None,
                idempotency_key=None, headers=None, **properties):
        """Publish one message; returns its message-id (str).

        body: bytes-like or str (UTF-8).  routing_key, exchange: where the
        broker routes it (default: the default exchange, which routes to
        the queue named routing_key).  headers: {name: value}, the AMQP
        headers table (string values).  properties: the other properties
        of pubrelay-protocol(7), as keywords with '_' for '-':
        content_type, content_encoding, correlation_id, reply_to, type,
        app_id, message_id, delivery_mode (1 or 2), priority, expiration
        (ms), timestamp (Unix seconds), mandatory (bool).  None leaves one
        out.

        Without confirm, the message-id returns once the message is
        committed to the outbox (durable).  With confirm=seconds it returns
        once the broker confirmed it, raises Parked if the broker refused
        it (it is parked), NotConfirmed if neither happened in that time.

        idempotency_key: a repeat of a key the daemon stored returns the
        first message's id and stores nothing (see IDEMPOTENCY KEYS in
        pubrelay-protocol(7)).

        Raises ReplyError (Full, Store, BadRequest, ...) when refused; the
        client then resets the refusal latch, so the next publish() is
        taken."""
        data, patience = self._encode(body, routing_key, exchange, confirm,
                                      idempotency_key, headers, properties)
        return self._simple(data, "pub", patience)

    def _encode(self, body, routing_key, exchange, confirm, idempotency_key,
                headers, properties):
        props = {}
        if exchange:
            props["exchange"] = exchange
        if routing_key:
            props["routing-key"] = routing_key
        props.update(properties)
        patience = 0.0
        if confirm is not None:
            props["confirm"] = _confirm_ms(confirm)
            patience = confirm
        if idempotency_key is not None:
            props["idempotency-key"] = idempotency_key
        return encode_pub(body, props, headers), patience

    def queue(self, body, routing_key="", exchange="", *, confirm=None,
              idempotency_key=None, headers=None, **properties):
        """Queue a publish() without waiting for its reply (pipelining);
        results() returns the replies.  Takes publish()'s arguments.
        Writes to the socket as the queue grows, reading the replies that
        came meanwhile."""
        data, patience = self._encode(body, routing_key, exchange, confirm,
                                      idempotency_key, headers, properties)
        self._queue(data, "pub", patience)

    def results(self, return_errors=False):
        """Send what is queued and return the replies of every queued
        request since the last results(), in request order: for a PUB its
        message-id, or an Error instance (ReplyError, Parked,
        NotConfirmed).

        Unless return_errors, the first error is raised instead, with
        .index (its position) and .results (the whole list, errors in
        place) set.  The messages that got a message-id are always a prefix
        of those sent, apart from receipts (Parked, NotConfirmed: those
        were committed): after a refusal, later PUBs are Skipped.  A
        refusal resets the latch here, so the caller can resend from the
        first refused message on this connection.  After an error that
        closes the connection (Shutdown, FramingError), every later request
        of the batch gets an error of the same class: it was not taken.

        ConnectionLost (or ProtocolError) is raised whatever
        return_errors says; its .results holds the replies read before:
        the requests after them may or may not have been taken."""
        try:
            while self._pending:
                self._done.append(self._reply())
            if self._untaken is not None:
                e, n = self._untaken
                self._done += [type(e)(e.code, "not taken: an earlier "
                                       "request was answered ERR %s and the "
                                       "connection closed" % e.code)
                               for _ in range(n)]
        finally:
            out, self._done = self._done, []
            self._untaken = None
        if any(isinstance(v, ReplyError) and not v.closes for v in out):
            self._reset_latch()
        if not return_errors:
            for i, v in enumerate(out):
                if isinstance(v, Error):
                    v.index = i
                    v.results = out
                    raise v
        return out

    def publish_many(self, messages, **common):
        """Pipeline many messages; returns their message-ids in order.

        messages: an iterable of bodies, or of (body, {keyword: value})
        pairs whose keywords are publish()'s.  common: publish() keywords
        for every message (a pair's own override them).  Raises as
        results() does: the first error, with .index of its message and
        .results.  After a refusal (a ReplyError) the messages from
        e.index on were not taken: resend them, on this connection or
        another.  A receipt's error (Parked, NotConfirmed) is no refusal:
        that message was committed, and the next ones were taken too.
        """
        if self._batch_open():
            self.results()
        for m in messages:
            if isinstance(m, tuple):
                body, kw = m
                if common:
                    kw = dict(common, **kw)
            else:
                body, kw = m, common
            self.queue(body, **kw)
        return self.results()

    def ping(self):
        """PING; returns the round trip in seconds (the reply waits for
        this connection's earlier PUBs to be committed)."""
        t0 = time.monotonic()
        self._simple(b"PING\n", "ping")
        return time.monotonic() - t0

    def reset(self):
        """RESET: clear the refusal latch (the client does it after each
        refusal it reports)."""
        self._simple(b"RESET\n", "reset")

    def wait(self, timeout=None):
        """WAIT: block until every message the daemon accepted before it,
        from any client, was confirmed by the broker or parked; returns the
        number of those parked (0: all confirmed).  timeout: seconds (None:
        without end); raises NotConfirmed when it passes."""
        if timeout is None:
            return self._simple(b"WAIT\n", "wait", float("inf"))
        return self._simple(b"WAIT %d\n" % _confirm_ms(timeout), "wait",
                            timeout)

    def status(self, message_id):
        """STATUS: what became of a message this daemon accepted, by the
        generated message-id its publish() returned.  Returns a Status
        (state: queued, inflight, confirmed, parked with reason, or
        unknown)."""
        mid = _prop_value("message-id", message_id)
        if not mid:
            raise ValueError("status: an empty message-id")
        return self._simple(b"STATUS %s\n" % mid.encode("utf-8"), "status")

    def stats(self):
        """STATS: the daemon's statistics as {name: value}; values are int
        when they are decimal numbers, else str ("-" for none).  Fields
        are listed in pubrelayd(8); look them up by name."""
        text = self._simple(b"STATS\n", "stats")
        out = {}
        for ln in text.splitlines():
            name, sp, value = ln.partition(" ")
            if not name or not sp:
                continue
            out[name] = int(value) if value.isdigit() else value
        return out


# ---------------------------------------------------------------------------
# Retrying


def retry(fn, *args, attempts=8, delay=0.05, max_delay=5.0,
          on=(Full, Store, Shutdown, Limit, ConnectFailed), **kwargs):
    """Call fn(*args, **kwargs), again on the errors in `on` (the codes
    the protocol says to retry later, and a failed connect), up to
    attempts times in all,
    sleeping delay, 2 x delay, ... (at most max_delay, with jitter)
    between.  Returns fn's value or raises its last error.

    With a Client method as fn, a SHUTDOWN or LIMIT reconnects on the next
    call; a refused PUB was not stored, so repeating it publishes it once:

        mid = pubrelay.retry(c.publish, body, routing_key="jobs")

    Not for publish_many(), which would send its accepted prefix again:
    resend from the error's .index instead.  Add ConnectionLost to `on` only with an idempotency_key (or your own
    message_id for consumers to drop duplicates): a publish whose reply
    was lost may have been committed."""
    wait = delay
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except on:
            if i == attempts - 1:
                raise
        time.sleep(min(max_delay, wait) * random.uniform(0.5, 1.0))
        wait *= 2
    raise AssertionError("unreachable")
