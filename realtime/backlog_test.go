package realtime

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/gorilla/websocket"
)

// stallingIndex is the location index with Attach (a driver's socket marking itself as it
// opens, before its hello) held until stall is closed: a Redis that does not answer.
type stallingIndex struct {
	*geo.Index
	stall, stalled chan struct{}
}

func (x stallingIndex) Attach(ctx context.Context, driverID, session string) error {
	x.stalled <- struct{}{}
	<-x.stall
	return x.Index.Attach(ctx, driverID, session)
}

// watcher reads a socket's frames on a goroutine of its own, and its pongs.
type watcher struct {
	frames chan inFrame
	pongs  chan struct{}
	end    chan error // the read error that ended it (a close frame: *websocket.CloseError)
}

func watch(ws *websocket.Conn) *watcher {
	w := &watcher{frames: make(chan inFrame, 64), pongs: make(chan struct{}, 8), end: make(chan error, 1)}
	ws.SetPongHandler(func(string) error {
		select {
		case w.pongs <- struct{}{}:
		default:
		}
		return nil
	})
	go func() {
		for {
			var f inFrame
			if err := ws.ReadJSON(&f); err != nil {
				w.end <- err
				return
			}
			w.frames <- f
		}
	}()
	return w
}

// next is the next frame, within 5 s.
func (w *watcher) next(t *testing.T) inFrame {
	t.Helper()
	select {
	case f := <-w.frames:
		return f
	case err := <-w.end:
		t.Fatalf("socket ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5 s")
	}
	return inFrame{}
}

// none checks that no frame comes within d.
func (w *watcher) none(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case f := <-w.frames:
		t.Fatalf("%s: got %+v, want nothing yet", why, f)
	case <-time.After(d):
	}
}

// pinged checks that the server answers a ping: its read loop is reading.
func (w *watcher) pinged(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	if err := ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.pongs:
	case <-time.After(3 * time.Second):
		t.Fatal("no pong within 3 s: the socket's read loop is waiting on the backend")
	}
}

func (w *watcher) want(t *testing.T, typ string, ref int64, code string) {
	t.Helper()
	f := w.next(t)
	if f.Type != typ || f.Data.Ref == nil || *f.Data.Ref != ref || f.Data.Code != code {
		t.Fatalf("got %s ref %v code %q, want %s ref %d code %q", f.Type, f.Data.Ref, f.Data.Code, typ, ref, code)
	}
}

// A socket's read loop never waits on Redis or MySQL: while its session waits on a backend that
// does not answer (the driver's hello on Redis, a status on MySQL), the socket still reads (a
// ping is answered) and takes its next frames; their answers wait for the one before, so the
// socket stays ordered, and a position sent after a status is indexed with the state the status
// recorded. On the old code the read loop made these calls itself and no pong came.
func TestReadLoopWaitsOnNoBackend(t *testing.T) {
	dial := func(t *testing.T, g *gateway, id string) (*websocket.Conn, *watcher) {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+id)
		ws, _, err := websocket.DefaultDialer.Dial(g.url, h)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws, watch(ws)
	}
	send := func(t *testing.T, ws *websocket.Conn, frame string) {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	stalled := func(t *testing.T, c chan struct{}, what string) {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not called", what)
		}
	}
	ms := time.Now().UnixMilli()
	good := `{"type":"location","seq":2,"data":{"lat":12.9716,"lng":77.5946,"acc":5,"ts":` + itoa(ms) + `}}`
	bad := `{"type":"location","seq":3,"data":{"lat":95,"lng":77.5946,"acc":5,"ts":` + itoa(ms+1) + `}}`
	forbidden := `{"type":"watch.area","seq":4,"data":{}}` // refused by the read loop itself

	t.Run("hello waits on Redis", func(t *testing.T) {
		stall, hold := make(chan struct{}), make(chan struct{}, 1)
		defer func() {
			select {
			case <-stall:
			default:
				close(stall)
			}
		}()
		g := newGatewayOver(t, Options{Rate: 1000}, func(x *geo.Index) Index { return stallingIndex{x, stall, hold} })
		ws, w := dial(t, g, "h1")
		stalled(t, hold, "Attach")
		w.pinged(t, ws)
		send(t, ws, `{"type":"status","seq":1,"data":{"state":"online"}}`)
		send(t, ws, good)
		send(t, ws, bad)
		send(t, ws, forbidden)
		w.none(t, 300*time.Millisecond, "before the hello")
		close(stall)
		if f := w.next(t); f.Type != "hello" {
			t.Fatalf("first frame: got %+v, want hello", f)
		}
		w.want(t, "ack", 1, "")
		w.want(t, "error", 3, "invalid_argument")
		w.want(t, "error", 4, "permission_denied")
		if p := g.waitPosition(t, "h1", ms); p.State != dispatch.DriverAvailable {
			t.Fatalf("indexed %+v, want available (the state recorded by the status sent before)", p)
		}
	})

	t.Run("status waits on MySQL", func(t *testing.T) {
		g := newGateway(t, Options{Rate: 1000})
		ws, w := dial(t, g, "s1")
		if f := w.next(t); f.Type != "hello" {
			t.Fatalf("first frame: got %+v, want hello", f)
		}
		stall := make(chan struct{})
		g.store.mu.Lock()
		g.store.stall, g.store.stalled = stall, make(chan struct{}, 1)
		g.store.mu.Unlock()
		defer func() {
			select {
			case <-stall:
			default:
				close(stall)
			}
		}()
		send(t, ws, `{"type":"status","seq":1,"data":{"state":"online"}}`)
		stalled(t, g.store.stalled, "the store's Driver")
		w.pinged(t, ws)
		send(t, ws, good)
		send(t, ws, bad)
		send(t, ws, forbidden)
		w.none(t, 300*time.Millisecond, "before the status is answered")
		close(stall)
		w.want(t, "ack", 1, "")
		w.want(t, "error", 3, "invalid_argument")
		w.want(t, "error", 4, "permission_denied")
		if p := g.waitPosition(t, "s1", ms); p.State != dispatch.DriverAvailable {
			t.Fatalf("indexed %+v, want available (the state recorded by the status sent before)", p)
		}
	})

	t.Run("a backlog past its bound", func(t *testing.T) {
		g := newGateway(t, Options{Rate: 1e6, UserRate: 1e6})
		ws, w := dial(t, g, "o1")
		if f := w.next(t); f.Type != "hello" {
			t.Fatalf("first frame: got %+v, want hello", f)
		}
		stall := make(chan struct{})
		g.store.mu.Lock()
		g.store.stall, g.store.stalled = stall, make(chan struct{}, maxBacklog+8)
		g.store.mu.Unlock()
		defer close(stall)
		send(t, ws, `{"type":"status","seq":1,"data":{"state":"online"}}`)
		stalled(t, g.store.stalled, "the store's Driver")
		// Positions past the bound are dropped and counted; the socket stays open.
		before := g.rejected("backlog")
		for i := range maxBacklog + 10 {
			send(t, ws, `{"type":"location","data":{"lat":12.9716,"lng":77.5946,"ts":`+itoa(ms+int64(i))+`}}`)
		}
		w.pinged(t, ws)
		if got := g.rejected("backlog") - before; got != 10 {
			t.Fatalf("rejected{reason=backlog}: got %v, want 10", got)
		}
		// Anything else past the bound closes the socket with 1013.
		send(t, ws, `{"type":"status","seq":2,"data":{"state":"online"}}`)
		select {
		case err := <-w.end:
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater {
				t.Fatalf("socket ended with %v, want close 1013", err)
			}
		case f := <-w.frames:
			t.Fatalf("got %+v, want the socket closed with 1013", f)
		case <-time.After(5 * time.Second):
			t.Fatal("socket still open 5 s after its backlog overflowed")
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
