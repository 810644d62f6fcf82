// Package faultproxy is a TCP proxy for fault tests. It sits on loopback between a client (the
// engine) and a server (Redis, MariaDB) and, on command, adds latency to the server's answers,
// resets connections, stalls them like a network black hole, or lets a MySQL COMMIT reach the
// server and cuts the connection before the answer comes back (an ambiguous commit).
//
// It is test equipment: it listens on 127.0.0.1 only and must never stand in a production path.
// All methods are safe for concurrent use.
package faultproxy

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Proxy.
type Options struct {
	// MySQL makes the proxy read the client's side as MySQL packets, which ResetAtCommit needs.
	MySQL bool
	// DialTimeout bounds the dial to the server (default 2 s); a failed dial resets the client.
	DialTimeout time.Duration
}

// Proxy forwards every connection accepted on Addr to the target.
//
// Lock order: Proxy.mu only; a link's writes never happen under it.
type Proxy struct {
	ln     net.Listener
	target string
	opts   Options
	done   chan struct{}
	wg     sync.WaitGroup

	latency atomic.Int64 // nanoseconds added to each chunk the server sends
	fired   atomic.Int64 // connections cut after a COMMIT
	total   atomic.Int64 // connections accepted

	mu          sync.Mutex // guards the fields below
	links       map[*link]struct{}
	hole        chan struct{} // nil: traffic flows; else closed when the black hole ends
	commitMatch []byte
	commitLeft  int
	closed      bool
}

// Listen starts a proxy to target ("host:port") on a free loopback port.
func Listen(target string, opts Options) (*Proxy, error) {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, opts: opts, done: make(chan struct{}), links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where clients connect: 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency delays everything the server sends by d from now on (a round trip takes d longer);
// 0 removes it. Chunks already delayed keep their time; order is always kept.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// SetBlackhole stalls (on) or frees (off) all traffic: bytes in either direction are held, not
// dropped, and new connections are accepted but not connected onward, as when a network path
// silently loses packets and TCP keeps retransmitting. Freeing it delivers what was held.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.hole == nil:
		p.hole = make(chan struct{})
	case !on && p.hole != nil:
		close(p.hole)
		p.hole = nil
	}
}

// Reset cuts every open connection with a TCP reset on both sides and returns how many.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.links))
	for l := range p.links {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
	return len(ls)
}

// ResetAtCommit arms n ambiguous commits (Options.MySQL is required): the next n times a client
// sends COMMIT on a connection whose transaction (from START TRANSACTION or BEGIN) contained a
// statement with match in it
// (case-sensitive; the engine interpolates parameters, so values are in the text), the COMMIT is
// delivered, the server's answer is thrown away and both sides are reset. The server has
// committed; the client cannot know. n <= 0 disarms.
func (p *Proxy) ResetAtCommit(match string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.commitMatch, p.commitLeft = []byte(match), max(n, 0)
}

// CommitResets is how many connections were cut after a COMMIT so far.
func (p *Proxy) CommitResets() int { return int(p.fired.Load()) }

// Accepted is how many client connections the proxy has accepted so far.
func (p *Proxy) Accepted() int { return int(p.total.Load()) }

// Conns is how many connections are open now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops listening, resets every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.total.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

// waitOpen blocks while a black hole is on; false when the proxy closed meanwhile.
func (p *Proxy) waitOpen() bool {
	for {
		p.mu.Lock()
		hole := p.hole
		p.mu.Unlock()
		if hole == nil {
			return true
		}
		select {
		case <-hole:
		case <-p.done:
			return false
		}
	}
}

func (p *Proxy) serve(client net.Conn) {
	if !p.waitOpen() {
		resetConn(client)
		return
	}
	server, err := net.DialTimeout("tcp", p.target, p.opts.DialTimeout)
	if err != nil {
		resetConn(client) // the client sees the server refuse, as it would without the proxy
		return
	}
	l := &link{p: p, client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		resetConn(client)
		resetConn(server)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		l.pump(server, client, true)
	}()
	go func() {
		defer wg.Done()
		l.pump(client, server, false)
	}()
	wg.Wait()
}

// link is one proxied connection.
type link struct {
	p              *Proxy
	client, server net.Conn
	once           sync.Once
	inTx           bool        // the client has a transaction open (c2s reader only)
	inMatch        bool        // ... and it matched ResetAtCommit (c2s reader only)
	cutOnAnswer    atomic.Bool // the next bytes from the server answer an armed COMMIT
}

func (l *link) reset() {
	l.once.Do(func() {
		resetConn(l.client)
		resetConn(l.server)
	})
}

// resetConn closes c with SO_LINGER 0, so the peer gets a RST rather than a FIN.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pump copies src to dst through a queue: a reader goroutine (this one) and a writer that holds
// each chunk until it is due and no black hole is on. Any error ends the whole link.
func (l *link) pump(dst, src net.Conn, fromClient bool) {
	q := make(chan chunk, 64)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-l.p.done:
					t.Stop()
					return
				}
			}
			if !l.p.waitOpen() {
				return
			}
			if _, err := dst.Write(c.b); err != nil {
				l.reset()
				return
			}
		}
	}()
	defer func() {
		close(q)
		<-wdone
		l.reset()
	}()
	if fromClient && l.p.opts.MySQL {
		l.readPackets(src, q)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !fromClient && l.cutOnAnswer.Load() {
				l.p.fired.Add(1)
				return // the answer to the COMMIT is lost; the deferred reset cuts both sides
			}
			c := chunk{b: append([]byte(nil), buf[:n]...)}
			if !fromClient {
				c.due = time.Now().Add(time.Duration(l.p.latency.Load()))
			}
			q <- c
		}
		if err != nil {
			return
		}
	}
}

var (
	begin    = []byte("BEGIN")
	startTx  = []byte("START TRANSACTION")
	commit   = []byte("COMMIT")
	rollback = []byte("ROLLBACK")
)

// readPackets reads the client's side as MySQL packets (3-byte length, sequence number,
// payload) and queues each whole, watching commands (sequence 0) for ResetAtCommit.
func (l *link) readPackets(src io.Reader, q chan<- chunk) {
	hdr := make([]byte, 4)
	for {
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		pkt := make([]byte, 4+n)
		copy(pkt, hdr)
		if _, err := io.ReadFull(src, pkt[4:]); err != nil {
			return
		}
		if hdr[3] == 0 && n > 0 && pkt[4] == 0x03 { // COM_QUERY
			l.inspect(bytes.TrimSpace(pkt[5:]))
		}
		q <- chunk{b: pkt}
	}
}

// inspect follows the client's transaction and arms the cut when an armed COMMIT goes by. Only
// statements inside an explicit transaction count: a matching statement in autocommit mode must
// not arm the next, unrelated, transaction of the connection.
func (l *link) inspect(query []byte) {
	p := l.p
	switch {
	case bytes.EqualFold(query, begin) || (len(query) >= len(startTx) && bytes.EqualFold(query[:len(startTx)], startTx)):
		l.inTx, l.inMatch = true, false
	case bytes.EqualFold(query, commit):
		if l.inTx && l.inMatch {
			p.mu.Lock()
			arm := p.commitLeft > 0
			if arm {
				p.commitLeft--
			}
			p.mu.Unlock()
			if arm {
				l.cutOnAnswer.Store(true)
			}
		}
		l.inTx, l.inMatch = false, false
	case bytes.EqualFold(query, rollback):
		l.inTx, l.inMatch = false, false
	case l.inTx:
		p.mu.Lock()
		m := p.commitMatch
		armed := p.commitLeft > 0
		p.mu.Unlock()
		if armed && len(m) > 0 && bytes.Contains(query, m) {
			l.inMatch = true
		}
	}
}
