package realtime

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"syscall"
	"unsafe"

	"github.com/gorilla/websocket"
)

// A socket's reader is a goroutine, and at 100,000 sockets its stack is most of what a gateway
// holds: blocked inside gorilla's frame reader it sits some 3 KB deep, which keeps an 8 KB
// stack. An idle socket's reader instead waits for its next byte in a shallow frame (idleWait),
// where the runtime's stack shrinking halves the stack at the next GC; the reader grows it again
// for the frame and returns to the shallow wait. It may wait there only when gorilla holds no
// byte of the socket it has not handed out in a message already read: framedConn, the
// connection gorilla reads from, follows the frame headers of what passes through it (it
// neither copies nor reads ahead) and knows where each message ends.

// framedConn is the server side of one socket as gorilla reads it. Read is called only by the
// socket's read loop (gorilla reads on the goroutine that asks it for a message).
type framedConn struct {
	net.Conn
	raw    syscall.RawConn // nil when the connection is not a TCP socket: no idle wait
	passed int64           // bytes handed to gorilla
	hdr    [14]byte        // the frame header at hand, hn bytes of it so far
	hn     int
	left   int64   // payload bytes of the frame at hand not yet passed
	ends   []int64 // where the messages passed end (offsets in the stream), oldest first
	read   int64   // where the last message the read loop took ends
	// What peek and waiting saw (hdr holds the bytes: it is free between messages); peekFn and
	// waitingFn are f.peek and f.waiting, made once rather than at every wait.
	peeked, avail int
	peekFn        func(fd uintptr) bool
	waitingFn     func(fd uintptr)
}

func newFramedConn(c net.Conn) *framedConn {
	f := &framedConn{Conn: c}
	if tc, ok := c.(*net.TCPConn); ok {
		f.raw, _ = tc.SyscallConn()
	}
	f.peekFn, f.waitingFn = f.peek, f.waiting
	return f
}

func (f *framedConn) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	for i := 0; i < n; {
		if f.left > 0 {
			k := int(min(int64(n-i), f.left))
			i += k
			if f.left -= int64(k); f.left == 0 {
				f.frameEnd(f.passed + int64(i))
			}
			continue
		}
		f.hdr[f.hn] = p[i]
		f.hn++
		i++
		if f.hn < 2 || f.hn < headerLen(f.hdr[1]) {
			continue
		}
		f.left = payloadLen(f.hdr[:f.hn])
		f.hn = 0
		if f.left == 0 {
			f.frameEnd(f.passed + int64(i))
		}
	}
	f.passed += int64(n)
	return n, err
}

// frameEnd notes the end of the frame whose header is in hdr: a final data frame (text,
// binary or the last continuation) ends a message; control frames end none.
func (f *framedConn) frameEnd(at int64) {
	if fin, op := f.hdr[0]&0x80 != 0, f.hdr[0]&0x0f; fin && op < 8 {
		f.ends = append(f.ends, at)
	}
}

// headerLen is the length of a frame header whose second byte is b1 (RFC 6455 5.2).
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4 // the mask
	}
	return n
}

func payloadLen(h []byte) int64 {
	switch l := int64(h[1] & 0x7f); l {
	case 126:
		return int64(h[2])<<8 | int64(h[3])
	case 127:
		var v int64
		for _, b := range h[2:10] {
			v = v<<8 | int64(b)
		}
		return v & (1<<63 - 1)
	default:
		return l
	}
}

// tookMessage tells f that the read loop has read a whole message (the oldest passed).
func (f *framedConn) tookMessage() {
	if len(f.ends) > 0 {
		f.read = f.ends[0]
		f.ends = f.ends[:copy(f.ends, f.ends[1:])] // in place: a message each does not allocate
	}
}

// drained reports whether gorilla holds nothing unread: every byte passed ends at or before the
// last message the read loop took.
func (f *framedConn) drained() bool {
	return f.raw != nil && f.passed == f.read && f.hn == 0 && f.left == 0
}

// idleWait returns once the socket has a data frame (or a close, or anything else gorilla must
// read) to read, an error, or its read deadline passed; it must be called from a shallow frame
// (see above) and only when f is drained. Pings and pongs arriving meanwhile are read here and
// given to control, still in the shallow frame: gorilla, given a pong, would read it and then
// wait deep inside for the next frame, and the pong to the server's ping every 20 s would leave
// every idle reader there.
func (f *framedConn) idleWait(control func(op int, payload []byte)) {
	for {
		f.peeked, f.avail = 0, 0
		if f.raw.Read(f.peekFn) != nil || f.peeked < 2 {
			return
		}
		b0, b1 := f.hdr[0], f.hdr[1]
		op, size := int(b0&0x0f), 6+int(b1&0x7f)
		if b0&0x80 == 0 || (op != websocket.PingMessage && op != websocket.PongMessage) || b1&0x80 == 0 || b1&0x7f > 125 {
			return // not a control frame from a client: gorilla's to read
		}
		if f.raw.Control(f.waitingFn) != nil || f.avail < size {
			return // not all of it here yet: gorilla reads it
		}
		frame := make([]byte, size)
		if _, err := io.ReadFull(f.Conn, frame); err != nil {
			return // gorilla will see the error too
		}
		payload := frame[6:]
		for i := range payload {
			payload[i] ^= frame[2+i%4]
		}
		control(op, payload)
	}
}

// peek looks, without taking them, at the first two bytes waiting on the socket (a frame's
// header); false, to be called again when a byte comes, when none waits.
func (f *framedConn) peek(fd uintptr) bool {
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&f.hdr[0])), 2,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno == syscall.EAGAIN {
		return false
	}
	if errno == 0 {
		f.peeked = int(n)
	}
	return true
}

// waiting reads how many bytes wait on the socket (SIOCINQ) into avail: asked only of a control
// frame's header, not of every data frame.
func (f *framedConn) waiting(fd uintptr) {
	var avail int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&avail))); e == 0 {
		f.avail = int(avail)
	}
}

// framing hands gorilla's upgrader a framedConn for the connection it hijacks.
type framing struct {
	http.ResponseWriter
	conn *framedConn
}

func (w *framing) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = newFramedConn(c)
	return w.conn, rw, nil
}
