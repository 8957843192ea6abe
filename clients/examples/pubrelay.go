// pubrelay.go: publish through pubrelayd from Go, standard library only.
//
// Everything above main is the part to copy into your own package; main
// shows its use and is what tests/examples.py runs.  The protocol:
// pubrelay-protocol(7).  Build (Go 1.18 or later): go build pubrelay.go
//
//	pubrelay SOCKET pub KEY BODY [PROPERTY ...]      prints the message-id
//	pubrelay SOCKET lines KEY [PROPERTY ...] <FILE   one message a line
//	pubrelay SOCKET confirm MS KEY BODY [PROPERTY ...]
//	pubrelay SOCKET wait MS
//
// PROPERTY is "name: value", e.g. "message-id: order-42", "header: k=v".
// Exit status: 0 done, 1 refused or failed (the daemon's error code on
// stderr), 2 usage, 3 parked, 4 timed out.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Prop is one property line; Name may repeat ("header").
type Prop struct{ Name, Value string }

// Message is a body and its properties.
type Message struct {
	Body  []byte
	Props []Prop
}

// Error is the daemon's refusal, "ERR CODE text" (Code "" for a reply
// this client did not expect).
type Error struct{ Code, Text string }

func (e *Error) Error() string { return strings.TrimSpace(e.Code + " " + e.Text) }

// Receipt is what the broker did with a message published with a confirm.
type Receipt struct {
	Status string // "confirmed", "parked" or "timeout" (still queued)
	ID     string // its message-id
	Reason string // parked: the broker's reply code and text
}

// Client is one connection; use it from one goroutine at a time.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	Timeout time.Duration // for each exchange, on top of a confirm's or WAIT's time
}

// batch is how many requests go out before their replies are read: few
// enough that the replies never fill the daemon's max_buffer.
const batch = 1000

func Dial(path string, timeout time.Duration) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	return &Client{conn, bufio.NewReader(conn), bufio.NewWriter(conn), timeout}, nil
}

func (c *Client) Close() error { return c.conn.Close() }

// Publish sends one message and returns its message-id.
func (c *Client) Publish(body []byte, props ...Prop) (string, error) {
	ids, err := c.PublishMany([]Message{{body, props}})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// PublishMany pipelines: it writes a batch of requests, then reads their
// replies in order.  It returns the ids of the accepted messages, always
// the first ones (the daemon's refusal latch): after an error, resend from
// msgs[len(ids)].  The latch is then reset, so the connection takes the
// next call's messages.
func (c *Client) PublishMany(msgs []Message) ([]string, error) {
	for _, m := range msgs {
		if err := checkProps(m.Props); err != nil {
			return nil, err
		}
	}
	ids := make([]string, 0, len(msgs))
	for start := 0; start < len(msgs); start += batch {
		end := start + batch
		if end > len(msgs) {
			end = len(msgs)
		}
		c.deadline(0)
		for _, m := range msgs[start:end] {
			writePub(c.w, m.Body, m.Props)
		}
		// A failed write still leaves the replies to what was sent to read.
		c.w.Flush()
		var refused error
		for i := start; i < end; i++ { // every reply, even after an error
			line, err := c.readLine()
			if err != nil && refused != nil { // the daemon went away (maybe after ERR SHUTDOWN)
				return ids, refused
			} else if err != nil {
				return ids, err
			}
			if refused == nil && strings.HasPrefix(line, "OK ") {
				ids = append(ids, line[3:])
			} else if refused == nil {
				refused = fmt.Errorf("message %d refused: %w", i+1, refusal(line))
			}
		}
		if refused != nil {
			if err := c.reset(); err != nil {
				return ids, err
			}
			return ids, refused
		}
	}
	return ids, nil
}

// PublishConfirm publishes and waits up to ms milliseconds for the broker.
func (c *Client) PublishConfirm(ms int, body []byte, props ...Prop) (Receipt, error) {
	props = append(props, Prop{"confirm", strconv.Itoa(ms)})
	if err := checkProps(props); err != nil {
		return Receipt{}, err
	}
	c.deadline(ms)
	writePub(c.w, body, props)
	if err := c.w.Flush(); err != nil {
		return Receipt{}, err
	}
	line, err := c.readLine()
	if err != nil {
		return Receipt{}, err
	}
	// The message-id ends at the first blank: give ids without blanks.
	w := strings.SplitN(line, " ", 3)
	switch {
	case len(w) >= 2 && (w[0] == "CONFIRMED" || w[0] == "TIMEOUT"):
		return Receipt{Status: strings.ToLower(w[0]), ID: w[1]}, nil
	case len(w) == 3 && w[0] == "PARKED":
		return Receipt{"parked", w[1], w[2]}, nil
	}
	if err := c.reset(); err != nil {
		return Receipt{}, err
	}
	return Receipt{}, refusal(line)
}

// Wait is a barrier: once every message accepted so far is confirmed or
// parked it returns the number of dead letters (0: all confirmed), or
// timedOut after ms milliseconds.
func (c *Client) Wait(ms int) (dead int, timedOut bool, err error) {
	c.deadline(ms)
	fmt.Fprintf(c.w, "WAIT %d\n", ms)
	if err := c.w.Flush(); err != nil {
		return 0, false, err
	}
	line, err := c.readLine()
	if err != nil {
		return 0, false, err
	}
	if line == "TIMEOUT" {
		return 0, true, nil
	}
	if strings.HasPrefix(line, "OK ") {
		if dead, err := strconv.Atoi(line[3:]); err == nil {
			return dead, false, nil
		}
	}
	return 0, false, refusal(line)
}

// reset: after a refused PUB the daemon refuses the connection's next ones
// until RESET.
func (c *Client) reset() error {
	c.deadline(0)
	c.w.WriteString("RESET\n")
	if err := c.w.Flush(); err != nil {
		return err
	}
	line, err := c.readLine()
	if err == nil && line != "OK" {
		err = refusal(line)
	}
	return err
}

func checkProps(props []Prop) error {
	for _, p := range props {
		if strings.ContainsAny(p.Name+p.Value, "\r\n") {
			return fmt.Errorf("property %s: line breaks cannot be sent", p.Name)
		}
	}
	return nil
}

// writePub buffers one request: the caller flushes (a full buffer flushes by
// itself; a write error sticks to w and Flush returns it).
func writePub(w *bufio.Writer, body []byte, props []Prop) {
	fmt.Fprintf(w, "PUB %d\n", len(body))
	for _, p := range props {
		fmt.Fprintf(w, "%s: %s\n", p.Name, p.Value)
	}
	w.WriteString("\n")
	w.Write(body)
	w.WriteString("\n")
}

// deadline bounds the exchange that follows (writes too: a daemon may stop
// reading) to c.Timeout plus ms.
func (c *Client) deadline(ms int) {
	c.conn.SetDeadline(time.Now().Add(c.Timeout + time.Duration(ms)*time.Millisecond))
}

func (c *Client) readLine() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no reply (the request may or may not have been taken): %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func refusal(line string) *Error {
	if strings.HasPrefix(line, "ERR ") {
		code, text, _ := strings.Cut(line[4:], " ")
		return &Error{code, text}
	}
	return &Error{"", fmt.Sprintf("unexpected reply %q", line)}
}

// ---- the example command line ----------------------------------------------

func props(key string, args []string) []Prop {
	ps := []Prop{{"routing-key", key}}
	for _, a := range args {
		name, value, _ := strings.Cut(a, ":")
		ps = append(ps, Prop{strings.TrimSpace(name), strings.TrimSpace(value)})
	}
	return ps
}

func run(args []string) int {
	need := map[string]int{"pub": 2, "lines": 1, "confirm": 3, "wait": 1}
	if len(args) < 2 || len(args)-2 < need[args[1]] || need[args[1]] == 0 {
		fmt.Fprintln(os.Stderr, "usage: pubrelay SOCKET pub|lines|confirm|wait ARGS (see the comment at the top)")
		return 2
	}
	c, err := Dial(args[0], 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pubrelay:", err)
		return 1
	}
	defer c.Close()
	a := args[2:]
	switch args[1] {
	case "pub":
		id, err := c.Publish([]byte(a[1]), props(a[0], a[2:])...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pubrelay: publish refused:", err)
			return 1
		}
		fmt.Println(id)
	case "lines":
		var msgs []Message
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(nil, 128<<20) // the largest max_message_size
		ps := props(a[0], a[1:])
		for sc.Scan() {
			msgs = append(msgs, Message{[]byte(sc.Text()), ps})
		}
		if err := sc.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "pubrelay: reading standard input:", err)
			return 1
		}
		ids, err := c.PublishMany(msgs)
		for _, id := range ids {
			fmt.Println(id)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "pubrelay: %v; %d of %d accepted\n", err, len(ids), len(msgs))
			return 1
		}
	case "confirm":
		ms, _ := strconv.Atoi(a[0])
		r, err := c.PublishConfirm(ms, []byte(a[2]), props(a[1], a[3:])...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pubrelay: publish refused:", err)
			return 1
		}
		fmt.Println(strings.TrimSpace(r.Status + " " + r.ID + " " + r.Reason))
		return map[string]int{"confirmed": 0, "parked": 3, "timeout": 4}[r.Status]
	case "wait":
		ms, _ := strconv.Atoi(a[0])
		dead, timedOut, err := c.Wait(ms)
		switch {
		case err != nil:
			fmt.Fprintln(os.Stderr, "pubrelay: wait refused:", err)
			return 1
		case timedOut:
			fmt.Println("timeout")
			return 4
		}
		fmt.Println("ok", dead)
		if dead > 0 {
			return 3
		}
	}
	return 0
}

func main() { os.Exit(run(os.Args[1:])) }
