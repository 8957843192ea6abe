"""pubrelay demo: broker (existing or private), pubrelayd, client, consumer.

Run through scripts/demo.sh, which builds first.  Set DEMO_BROKER_PORT to use
a broker on another local port.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests"))

import harness  # noqa: E402  (private broker management, shared with tests)
import pika     # noqa: E402

QUEUE = "pubrelay-demo"


def say(msg):
    print("==> " + msg, flush=True)


def broker_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=port, connection_attempts=1,
            socket_timeout=2, credentials=pika.PlainCredentials("guest", "guest")))
        conn.close()
        return True
    except Exception:
        return False


def main():
    port = int(os.environ.get("DEMO_BROKER_PORT", "5672"))
    broker = None
    if broker_answers(port):
        say("using the RabbitMQ broker already answering on 127.0.0.1:%d" % port)
    else:
        say("no broker answers on 127.0.0.1:%d: starting a private RabbitMQ node" % port)
        broker = harness.Broker()
        broker.start()
        port = broker.port
        say("private node %s up on 127.0.0.1:%d (%.1f s)"
            % (broker.node, port, broker.boot_seconds or 0))

    work = tempfile.mkdtemp(prefix="pubrelay-demo-")
    sock = os.path.join(work, "pubrelay.sock")
    ini = os.path.join(work, "pubrelay.ini")
    # 0600: the URI holds a password, and pubrelayd refuses a config that
    # others can read in that case.
    with os.fdopen(os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                           0o600), "w") as f:
        f.write("[broker]\nuri = amqp://guest:guest@127.0.0.1:%d\n"
                "[socket]\npath = %s\n[outbox]\npath = %s/outbox.db\n"
                % (port, sock, work))
    daemon = None
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=port,
            credentials=pika.PlainCredentials("guest", "guest")))
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.queue_purge(QUEUE)
        say("declared durable queue '%s'" % QUEUE)

        say("starting: pubrelayd -c %s" % ini)
        daemon = subprocess.Popen([os.path.join(TOP, "pubrelayd"), "-c", ini])
        client = os.path.join(TOP, "pubrelay")
        deadline = time.monotonic() + 10
        while subprocess.run([client, "-s", sock, "ping"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("pubrelayd did not start")
            time.sleep(0.05)

        say("publishing with the client:")
        for i in range(1, 4):
            cmd = [client, "-s", sock, "publish", "-k", QUEUE,
                   "--content-type", "text/plain", "--header", "demo=yes",
                   "hello %d from pubrelay" % i]
            print("    $ pubrelay -s SOCK publish -k %s --content-type text/plain "
                  "--header demo=yes 'hello %d from pubrelay'" % (QUEUE, i))
            subprocess.run(cmd, check=True)
        print("    $ printf 'line one\\nline two\\n' | pubrelay -s SOCK publish -k %s --lines"
              % QUEUE)
        subprocess.run([client, "-s", sock, "publish", "-k", QUEUE, "--lines"],
                       input=b"line one\nline two\n", check=True)

        say("messages arriving in queue '%s':" % QUEUE)
        got = 0
        deadline = time.monotonic() + 15
        while got < 5 and time.monotonic() < deadline:
            method, props, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            got += 1
            print("    %-24s message-id=%s content-type=%s headers=%s"
                  % (body.decode(), props.message_id, props.content_type, props.headers))
        say("pubrelay stats:")
        subprocess.run([client, "-s", sock, "stats"])
        conn.close()
        if got != 5:
            raise SystemExit("only %d of 5 messages arrived" % got)
        say("done: 5 of 5 messages arrived")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=10)
        if broker is not None:
            say("stopping the private RabbitMQ node")
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
