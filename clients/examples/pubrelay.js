// pubrelay.js: publish through pubrelayd from Node.js, core modules only.
//
// The class is the part to copy; main() at the end shows its use and is
// what tests/examples.py runs.  The protocol: pubrelay-protocol(7).
//
//   node pubrelay.js SOCKET pub KEY BODY [PROPERTY ...]     prints the message-id
//   node pubrelay.js SOCKET lines KEY [PROPERTY ...] <FILE  one message a line
//   node pubrelay.js SOCKET confirm MS KEY BODY [PROPERTY ...]
//   node pubrelay.js SOCKET wait MS
//
// PROPERTY is "name: value", e.g. "message-id: order-42", "header: k=v".
// Exit status: 0 done, 1 refused or failed (the daemon's error code on
// stderr), 2 usage, 3 parked, 4 timed out.
'use strict';
const net = require('net');

class PubRelayError extends Error {
  // code: the daemon's error code ("BADREQ", "FULL", ...), '' if not a refusal;
  // ids: publishMany, the ids of the messages accepted before it.
  constructor(message, code = '', ids = []) {
    super(message);
    this.code = code;
    this.ids = ids;
  }
}

class PubRelay {
  static connect(path = '/run/pubrelay/pubrelay.sock', timeout = 10000) {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      sock.once('connect', () => resolve(new PubRelay(sock, timeout)));
      sock.once('error', (e) => reject(new PubRelayError(`cannot connect to ${path}: ${e.message}`)));
    });
  }

  constructor(sock, timeout) {
    this.sock = sock;
    this.timeout = timeout;  // ms for each reply, on top of a confirm's or WAIT's time
    this.buf = '';
    this.waiting = [];       // one {resolve, reject} per reply expected, in order
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => {
      this.buf += chunk;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).replace(/\r$/, '');
        this.buf = this.buf.slice(i + 1);
        const w = this.waiting.shift();
        if (w) w.resolve(line);
      }
    });
    const fail = (why) => {
      for (const w of this.waiting.splice(0)) {
        w.reject(new PubRelayError(`${why} (the request may or may not have been taken)`));
      }
    };
    sock.on('error', (e) => fail(e.message));
    sock.on('close', () => fail('connection closed'));
    sock.on('timeout', () => {  // idle with no reply due is fine
      if (this.waiting.length) { fail('no reply in time'); sock.destroy(); }
    });
  }

  close() { this.sock.end(); }

  // One message; resolves to its message-id (yours, or the one generated).
  async publish(body, props = []) {
    return (await this.publishMany([[body, props]]))[0];
  }

  // Pipelining: write a batch of requests, then read their replies in order.
  // messages: [[body, [[name, value], ...]], ...].  On a refusal the messages
  // before it are accepted, none after it (the daemon's refusal latch):
  // resend from err.ids.length.  The latch is then reset, so the connection
  // takes the next call's messages.
  async publishMany(messages) {
    const ids = [];
    for (let start = 0; start < messages.length; start += PubRelay.BATCH) {
      const batch = messages.slice(start, start + PubRelay.BATCH);
      const replies = this.send(batch.map(([body, props]) => pub(body, props || [])));
      let refused = null;
      let lost = null;
      for (const r of await Promise.allSettled(replies)) {  // every reply, even after an error
        if (r.status === 'rejected') lost = lost || r.reason;
        else if (refused === null && r.value.startsWith('OK ')) ids.push(r.value.slice(3));
        else if (refused === null) refused = r.value;
      }
      if (refused === null && lost) {  // the daemon went away
        lost.ids = ids;
        throw lost;
      }
      if (refused !== null) {  // not reset when the daemon went away (maybe after ERR SHUTDOWN)
        if (!lost) await this.reset();
        throw refusal(refused, `message ${ids.length + 1}`, ids);
      }
    }
    return ids;
  }

  // Publish and wait up to ms for the broker: {status: 'confirmed' | 'parked'
  // | 'timeout' (still queued), id, reason (parked: the broker's reply)}.
  async publishConfirm(body, props, ms) {
    const reply = await this.send([pub(body, [...props, ['confirm', ms]])], ms)[0];
    // The message-id ends at the first blank: give ids without blanks.
    const [word, id, ...reason] = reply.split(' ');
    if (['CONFIRMED', 'PARKED', 'TIMEOUT'].includes(word) && id !== undefined) {
      return { status: word.toLowerCase(), id, reason: reason.join(' ') };
    }
    await this.reset();
    throw refusal(reply, 'publish');
  }

  // Barrier: resolves to the number of dead letters (0: all confirmed) once
  // every message accepted so far is settled, or null after ms.
  async wait(ms) {
    const reply = await this.send([`WAIT ${ms}\n`], ms)[0];
    if (reply === 'TIMEOUT') return null;
    const m = /^OK (\d+)$/.exec(reply);
    if (m) return Number(m[1]);
    throw refusal(reply, 'WAIT');
  }

  // After a refused PUB the daemon refuses the connection's next ones until RESET.
  async reset() {
    const reply = await this.send(['RESET\n'])[0];
    if (reply !== 'OK') throw refusal(reply, 'RESET');
  }

  // Writes the requests at once; returns a promise of each one's reply.
  send(requests, extraMs = 0) {
    if (this.sock.destroyed) {  // else nothing would ever settle them
      return requests.map(() => Promise.reject(new PubRelayError('connection closed')));
    }
    this.sock.setTimeout(this.timeout + extraMs);
    const replies = requests.map(() => new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
    }));
    this.sock.write(Buffer.concat(requests.map((r) => Buffer.from(r))));
    return replies;
  }
}
PubRelay.BATCH = 1000;  // few enough that the replies never fill max_buffer

function pub(body, props) {
  const b = Buffer.from(body);
  let head = `PUB ${b.length}\n`;
  for (const [name, value] of props) {
    if (/[\r\n]/.test(name + value)) throw new PubRelayError(`property ${name}: line breaks cannot be sent`);
    head += `${name}: ${value}\n`;
  }
  return Buffer.concat([Buffer.from(head + '\n'), b, Buffer.from('\n')]);
}

function refusal(reply, what, ids = []) {
  const m = /^ERR (\S+) ?(.*)$/.exec(reply);  // "ERR CODE text"
  if (m) return new PubRelayError(`${what} refused: ${m[1]} ${m[2]}`, m[1], ids);
  return new PubRelayError(`${what}: unexpected reply "${reply}"`, '', ids);
}

module.exports = { PubRelay, PubRelayError };

// ---- the example command line ----------------------------------------------

function props(key, args) {
  return [['routing-key', key], ...args.map((a) => {
    const i = a.indexOf(':');
    return i < 0 ? [a, ''] : [a.slice(0, i).trim(), a.slice(i + 1).trim()];
  })];
}

async function main([path, cmd, ...a]) {
  const need = { pub: 2, lines: 1, confirm: 3, wait: 1 };
  if (!(cmd in need) || a.length < need[cmd]) {
    console.error('usage: pubrelay.js SOCKET pub|lines|confirm|wait ARGS (see the comment at the top)');
    return 2;
  }
  const relay = await PubRelay.connect(path);
  try {
    if (cmd === 'pub') {
      console.log(await relay.publish(a[1], props(a[0], a.slice(2))));
    } else if (cmd === 'lines') {
      const lines = require('fs').readFileSync(0, 'utf8').split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      const p = props(a[0], a.slice(1));
      try {
        const ids = await relay.publishMany(lines.map((l) => [l, p]));
        process.stdout.write(ids.map((id) => id + '\n').join(''));
      } catch (e) {
        if (!(e instanceof PubRelayError)) throw e;
        process.stdout.write(e.ids.map((id) => id + '\n').join(''));
        e.message += `; ${e.ids.length} of ${lines.length} accepted`;
        throw e;
      }
    } else if (cmd === 'confirm') {
      const r = await relay.publishConfirm(a[2], props(a[1], a.slice(3)), Number(a[0]));
      console.log(`${r.status} ${r.id} ${r.reason}`.trim());
      return { confirmed: 0, parked: 3, timeout: 4 }[r.status];
    } else {
      const dead = await relay.wait(Number(a[0]));
      console.log(dead === null ? 'timeout' : `ok ${dead}`);
      return dead === null ? 4 : dead > 0 ? 3 : 0;
    }
    return 0;
  } finally {
    relay.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((rc) => { process.exitCode = rc; }, (e) => {
    if (!(e instanceof PubRelayError)) throw e;
    console.error(`pubrelay.js: ${e.message}`);
    process.exitCode = 1;
  });
}
