package realtime

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/loadtest/faultproxy"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// liveChannels is the hub's channels Redis has subscribers on, without the prefix, sorted.
func (g *gateway) liveChannels(t *testing.T) []string {
	t.Helper()
	chans, err := g.rdb.PubSubChannels(context.Background(), g.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chans {
		chans[i] = strings.TrimPrefix(c, g.prefix)
	}
	slices.Sort(chans)
	return chans
}

// waitChannels waits until Redis's subscribed channels of the hub are want (sorted): SUBSCRIBE
// takes effect a moment after it is sent.
func (g *gateway) waitChannels(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := g.liveChannels(t)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channels subscribed in Redis: got %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newStallableGateway is a gateway whose hub subscribes through a fault proxy.
func newStallableGateway(t *testing.T) (*gateway, *faultproxy.Proxy) {
	t.Helper()
	proxy, err := faultproxy.Listen(testRedisAddr(), faultproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() }) // after the gateway's cleanup, which closes its sockets
	// A stall must outlast the tests' checks: a read (the reconnection's HELLO) waits 30 s.
	pubsub := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 30 * time.Second})
	t.Cleanup(func() { pubsub.Close() })
	g := newGatewayVia(t, Options{}, nil, pubsub)
	t.Cleanup(func() { proxy.SetBlackhole(false) }) // before the gateway's cleanup, if a test fails
	return g, proxy
}

// stall cuts the hub's pub/sub connection and holds the new one: the PubSub reconnects,
// holding its lock, and every SUBSCRIBE or UNSUBSCRIBE waits behind it until
// proxy.SetBlackhole(false).
func stall(t *testing.T, proxy *faultproxy.Proxy) {
	t.Helper()
	proxy.SetBlackhole(true)
	accepted := proxy.Accepted()
	proxy.Reset()
	for deadline := time.Now().Add(10 * time.Second); proxy.Accepted() == accepted; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pub/sub connection did not reconnect after a reset")
		}
	}
}

// While the pub/sub connection hangs (Redis unreachable as it reconnects) and a socket waits
// for its SUBSCRIBE, the hub's lock is free: readiness answers, and a driver whose channels
// are subscribed already opens a socket and is greeted. Once Redis answers again, the waiting
// socket is greeted too and Redis holds every channel wanted.
func TestStalledSubscribeHoldsNoHubLock(t *testing.T) {
	g, proxy := newStallableGateway(t)
	g.dial(t, "a")
	g.waitChannels(t, []string{"ev:drv:a", "to:drv:a"})

	stall(t, proxy)
	// Driver b's socket opens; its session's SUBSCRIBE waits on the held connection.
	h := http.Header{}
	h.Set("Authorization", "Bearer b")
	b, _, err := websocket.DefaultDialer.Dial(g.url, h)
	if err != nil {
		t.Fatalf("dial b: %v", err)
	}
	defer b.Close()
	time.Sleep(300 * time.Millisecond) // b's session starts at once: give it time to reach the SUBSCRIBE

	answered := make(chan struct{})
	go func() { g.hub.Draining(); close(answered) }()
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
		t.Fatal("Draining (readiness) waited on a SUBSCRIBE blocked in Redis")
	}
	// a again (a new socket replacing its first): its channels are subscribed, so it is greeted.
	g.dial(t, "a")

	proxy.SetBlackhole(false)
	_ = b.SetReadDeadline(time.Now().Add(40 * time.Second))
	var f inFrame
	if err := b.ReadJSON(&f); err != nil || f.Type != "hello" {
		t.Fatalf("b's first frame once Redis answers: got %q (%v), want hello", f.Type, err)
	}
	g.waitChannels(t, []string{"ev:drv:a", "ev:drv:b", "to:drv:a", "to:drv:b"})
}

// A session's need of a channel that begins or ends while the command for its previous change
// is still on its way is not lost: an UNSUBSCRIBE held up in Redis, then a SUBSCRIBE of the
// same channel, leave it subscribed; a SUBSCRIBE held up, then an UNSUBSCRIBE, leave it not.
func TestSubscribeRacesUnsubscribe(t *testing.T) {
	g, proxy := newStallableGateway(t)
	ctx := context.Background()
	g.hub.subscribe(ctx, "kept")
	g.waitChannels(t, []string{"kept"})
	for _, tc := range []struct {
		name          string
		first, second func()
	}{
		{"UNSUBSCRIBE held, then SUBSCRIBE", func() { g.hub.unsubscribe(ctx, "kept") }, func() { g.hub.subscribe(ctx, "kept") }},
		{"SUBSCRIBE held, then UNSUBSCRIBE", func() { g.hub.subscribe(ctx, "gone") }, func() { g.hub.unsubscribe(ctx, "gone") }},
	} {
		stall(t, proxy)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); tc.first() }()
		time.Sleep(200 * time.Millisecond) // the first is held up in Redis by now
		go func() { defer wg.Done(); tc.second() }()
		time.Sleep(200 * time.Millisecond)
		proxy.SetBlackhole(false)
		wg.Wait()
		g.waitChannels(t, []string{"kept"})
		time.Sleep(300 * time.Millisecond) // a command sent late would show by now
		if got := g.liveChannels(t); !slices.Equal(got, []string{"kept"}) {
			t.Errorf("%s: channels subscribed in Redis: got %v, want [kept]", tc.name, got)
		}
	}
}

// However subscribe and unsubscribe calls of many sessions interleave, on the same channels
// and on others, Redis ends up subscribed to exactly the channels some session still needs.
func TestSubscriptionsFollowNeeds(t *testing.T) {
	g := newGateway(t, Options{})
	ctx := context.Background()
	channels := []string{"c0", "c1", "c2", "c3", "c4", "c5"}
	const sessions, steps = 8, 200
	held := make([]map[string]int, sessions)
	var wg sync.WaitGroup
	for i := range sessions {
		held[i] = map[string]int{}
		wg.Add(1)
		go func(mine map[string]int, r *rand.Rand) {
			defer wg.Done()
			for range steps {
				c := channels[r.IntN(len(channels))]
				if mine[c] > 0 && r.IntN(2) == 0 {
					g.hub.unsubscribe(ctx, c)
					mine[c]--
				} else {
					g.hub.subscribe(ctx, c)
					mine[c]++
				}
			}
		}(held[i], rand.New(rand.NewPCG(uint64(i), 17)))
	}
	wg.Wait()
	var want []string
	for _, c := range channels {
		n := 0
		for _, mine := range held {
			n += mine[c]
		}
		g.hub.mu.Lock()
		counted := g.hub.subs[c]
		g.hub.mu.Unlock()
		if counted != n {
			t.Errorf("%s: hub counts %d sessions, want %d", c, counted, n)
		}
		if n > 0 {
			want = append(want, c)
		}
	}
	g.waitChannels(t, want)

	// Then everyone leaves: nothing stays subscribed.
	for _, mine := range held {
		for c, n := range mine {
			for range n {
				g.hub.unsubscribe(ctx, c)
			}
		}
	}
	g.waitChannels(t, nil)
}
