package realtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/redis/go-redis/v9"
)

// TestPublishBatchSameChannelsAsPublish: the relay's batch path reaches exactly the audiences
// of the one-by-one path, in order.
func TestPublishBatchSameChannelsAsPublish(t *testing.T) {
	addr := os.Getenv("DISPATCH_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("the test Redis at %s does not answer (%v): start it or set DISPATCH_TEST_REDIS_ADDR", addr, err)
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	bus := NewBus(rdb, "test:"+t.Name()+":"+hex.EncodeToString(r[:])+":", geoGrid)
	ps := rdb.PSubscribe(ctx, bus.ch("ev:*"))
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	b := dispatch.Booking{ID: "b1", Pickup: dispatch.Place{Lat: 12.97, Lng: 77.59}}
	assigned := b
	assigned.Driver = &dispatch.DriverRef{ID: "d1"}
	es := []dispatch.Event{{ID: "e1", BookingID: "b1", Booking: b}, {ID: "e2", BookingID: "b1", Booking: assigned}}

	receive := func(n int) []string {
		t.Helper()
		var got []string
		for len(got) < n {
			msg, err := ps.ReceiveTimeout(ctx, 2*time.Second)
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			m := msg.(*redis.Message)
			var e dispatch.Event
			_ = json.Unmarshal([]byte(m.Payload), &e)
			got = append(got, m.Channel[len(bus.prefix):]+" "+e.ID)
		}
		return got
	}
	for _, e := range es {
		if err := bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	one := receive(5)
	if n, err := bus.PublishBatch(ctx, es); n != 2 || err != nil {
		t.Fatalf("PublishBatch: got %d, %v; want 2, nil", n, err)
	}
	batch := receive(5)
	if len(one) != len(batch) {
		t.Fatalf("Publish reached %v, PublishBatch %v", one, batch)
	}
	for i := range one {
		if one[i] != batch[i] {
			t.Fatalf("Publish reached %v, PublishBatch %v: want the same channels in the same order", one, batch)
		}
	}
	region := geo.Region(12.97, 77.59)
	sorted := append([]string(nil), batch...)
	sort.Strings(sorted)
	want := []string{"ev:bk:b1 e1", "ev:bk:b1 e2", "ev:drv:d1 e2", "ev:reg:" + region + " e1", "ev:reg:" + region + " e2"}
	for i := range want {
		if sorted[i] != want[i] {
			t.Fatalf("channels reached: got %v, want %v", sorted, want)
		}
	}
}
