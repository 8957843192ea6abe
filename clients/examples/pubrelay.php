<?php
// pubrelay.php: publish through pubrelayd from PHP, core PHP only (php-cli).
//
// The two classes are the part to copy; the command line at the end shows its use
// and is what tests/examples.py runs.  The protocol: pubrelay-protocol(7).
//
//   php pubrelay.php SOCKET pub KEY BODY [PROPERTY ...]     prints the message-id
//   php pubrelay.php SOCKET lines KEY [PROPERTY ...] <FILE  one message a line
//   php pubrelay.php SOCKET confirm MS KEY BODY [PROPERTY ...]
//   php pubrelay.php SOCKET wait MS
//
// PROPERTY is "name: value", e.g. "message-id: order-42", "header: k=v".
// Exit status: 0 done, 1 refused or failed (the daemon's error code on
// stderr), 2 usage, 3 parked, 4 timed out.

final class PubRelayError extends RuntimeException
{
    public function __construct(
        string $message,
        public readonly string $errCode = '',   // "BADREQ", "FULL", ...; "" if not a refusal
        public readonly array $ids = [],        // publishMany: ids of the messages accepted before it
    ) {
        parent::__construct($message);
    }
}

final class PubRelay
{
    // Requests written before their replies are read: small enough that
    // the replies never fill the daemon's max_buffer.
    private const BATCH = 1000;
    private $sock;

    public function __construct(string $path = '/run/pubrelay/pubrelay.sock',
                                private float $timeout = 10.0)
    {
        $this->sock = @stream_socket_client("unix://$path", $errno, $errstr, $timeout);
        if ($this->sock === false) {
            throw new PubRelayError("cannot connect to $path: $errstr");
        }
    }

    // One message; returns its message-id (yours, or the one generated).
    public function publish(string $body, array $props = []): string
    {
        return $this->publishMany([[$body, $props]])[0];
    }

    // Pipelining: write a batch of requests, then read their replies, in
    // order.  Each message is [$body, [[$name, $value], ...]].  On a refusal
    // the messages before it are accepted, none after it (the daemon's
    // refusal latch): resend from count($e->ids).  The latch is then reset,
    // so the connection takes the next call's messages.
    public function publishMany(array $messages): array
    {
        $ids = [];
        foreach (array_chunk($messages, self::BATCH) as $batch) {
            $requests = implode('', array_map(fn($m) => self::pub($m[0], $m[1] ?? []), $batch));
            try {
                $this->write($requests);
            } catch (PubRelayError) {            // the replies to what was sent are still there
            }
            $refused = null;
            foreach ($batch as $_) {             // read every reply, even after an error
                try {
                    $reply = $this->readLine();
                } catch (PubRelayError $e) {     // the daemon went away (maybe after ERR SHUTDOWN)
                    throw $refused === null ? new PubRelayError($e->getMessage(), '', $ids)
                        : self::refusal($refused, 'message ' . (count($ids) + 1), $ids);
                }
                if ($refused === null && str_starts_with($reply, 'OK ')) {
                    $ids[] = substr($reply, 3);
                } else {
                    $refused ??= $reply;
                }
            }
            if ($refused !== null) {
                $this->reset();
                throw self::refusal($refused, 'message ' . (count($ids) + 1), $ids);
            }
        }
        return $ids;
    }

    // Publish and wait up to $ms for the broker: ['confirmed', $id, ''],
    // ['parked', $id, $reason] or ['timeout', $id, ''] (still queued).
    public function publishConfirm(string $body, array $props, int $ms): array
    {
        $props[] = ['confirm', (string)$ms];
        $this->write(self::pub($body, $props));
        $reply = $this->readLine($ms / 1000);
        // The message-id ends at the first blank: give ids without blanks.
        $w = explode(' ', $reply, 3);
        if (!in_array($w[0], ['CONFIRMED', 'PARKED', 'TIMEOUT'], true) || count($w) < 2) {
            $this->reset();
            throw self::refusal($reply, 'publish');
        }
        return [strtolower($w[0]), $w[1], $w[2] ?? ''];
    }

    // Barrier: returns the number of dead letters (0: all confirmed) once
    // every message accepted so far is settled, or null after $ms.
    public function wait(int $ms): ?int
    {
        $this->write("WAIT $ms\n");
        $reply = $this->readLine($ms / 1000);
        if ($reply === 'TIMEOUT') {
            return null;
        }
        if (preg_match('/^OK (\d+)$/', $reply, $m)) {
            return (int)$m[1];
        }
        throw self::refusal($reply, 'WAIT');
    }

    // After a refused PUB the daemon refuses the connection's next ones
    // until RESET.
    private function reset(): void
    {
        $this->write("RESET\n");
        $reply = $this->readLine();
        if ($reply !== 'OK') {
            throw self::refusal($reply, 'RESET');
        }
    }

    private static function pub(string $body, array $props): string
    {
        $req = 'PUB ' . strlen($body) . "\n";
        foreach ($props as [$name, $value]) {
            if (strpbrk("$name$value", "\r\n") !== false) {
                throw new PubRelayError("property $name: line breaks cannot be sent");
            }
            $req .= "$name: $value\n";
        }
        return "$req\n$body\n";
    }

    private static function refusal(string $reply, string $what, array $ids = []): PubRelayError
    {
        if (str_starts_with($reply, 'ERR ')) {          // "ERR CODE text"
            $code = explode(' ', $reply, 3)[1];
            return new PubRelayError("$what refused: " . substr($reply, 4), $code, $ids);
        }
        return new PubRelayError("$what: unexpected reply \"$reply\"", '', $ids);
    }

    private function write(string $data): void
    {
        stream_set_timeout($this->sock, (int)ceil($this->timeout));
        while ($data !== '') {
            $n = @fwrite($this->sock, $data);   // failure reported below, not as a notice
            if ($n === false || $n === 0) {
                throw new PubRelayError('connection lost while sending');
            }
            $data = substr($data, $n);
        }
    }

    private function readLine(float $extra = 0): string
    {
        stream_set_timeout($this->sock, (int)ceil($this->timeout + $extra));
        $line = fgets($this->sock);
        if ($line === false) {
            $why = stream_get_meta_data($this->sock)['timed_out'] ? 'no reply in time' : 'connection closed';
            throw new PubRelayError("$why (the request may or may not have been taken)");
        }
        return rtrim($line, "\r\n");
    }
}

// ---- the example command line ----------------------------------------------

function props(array $args): array
{
    return array_map(fn($p) => array_map('trim', explode(':', $p, 2)) + [1 => ''], $args);
}

function main(array $argv): int
{
    [$prog, $path, $cmd] = $argv + [1 => null, 2 => null];
    $args = array_slice($argv, 3);
    $need = ['pub' => 2, 'lines' => 1, 'confirm' => 3, 'wait' => 1];
    if ($cmd === null || !isset($need[$cmd]) || count($args) < $need[$cmd]) {
        fwrite(STDERR, "usage: $prog SOCKET pub|lines|confirm|wait ARGS (see the comment at the top)\n");
        return 2;
    }
    try {
        $relay = new PubRelay($path);
        switch ($cmd) {
        case 'pub':
            echo $relay->publish($args[1], [['routing-key', $args[0]], ...props(array_slice($args, 2))]), "\n";
            return 0;
        case 'lines':
            $props = [['routing-key', $args[0]], ...props(array_slice($args, 1))];
            $lines = file('php://stdin', FILE_IGNORE_NEW_LINES);
            $rc = 0;
            try {
                $ids = $relay->publishMany(array_map(fn($l) => [$l, $props], $lines));
            } catch (PubRelayError $e) {
                $ids = $e->ids;
                fwrite(STDERR, "$prog: {$e->getMessage()}; " . count($ids) . ' of ' . count($lines) . " accepted\n");
                $rc = 1;
            }
            echo implode('', array_map(fn($id) => "$id\n", $ids));
            return $rc;
        case 'confirm':
            $props = [['routing-key', $args[1]], ...props(array_slice($args, 3))];
            [$status, $id, $reason] = $relay->publishConfirm($args[2], $props, (int)$args[0]);
            echo trim("$status $id $reason"), "\n";
            return ['confirmed' => 0, 'parked' => 3, 'timeout' => 4][$status];
        case 'wait':
            $dead = $relay->wait((int)$args[0]);
            echo $dead === null ? "timeout\n" : "ok $dead\n";
            return $dead === null ? 4 : ($dead > 0 ? 3 : 0);
        }
    } catch (PubRelayError $e) {
        fwrite(STDERR, "$prog: {$e->getMessage()}\n");
        return 1;
    }
}

if (realpath($_SERVER['SCRIPT_FILENAME'] ?? '') === __FILE__) {
    exit(main($argv));
}
