package dispatch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Hellos arriving while a read is under way share the next read, each answered with its own
// driver's Resume; a lone one is read at once; a read's error reaches every hello of its batch.
func TestResumeBatch(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var reads [][]string
	b := &resumeBatch{read: func(ctx context.Context, ids []string) (map[string]Resume, error) {
		mu.Lock()
		reads = append(reads, slices.Clone(ids))
		first := len(reads) == 1
		mu.Unlock()
		if first {
			<-release
		}
		out := map[string]Resume{}
		for _, id := range ids {
			if id == "broken" {
				return nil, fmt.Errorf("read failed")
			}
			out[id] = Resume{Offers: []OfferOf{{Offer: Offer{ID: "of-" + id, DriverID: id}}}}
		}
		return out, nil
	}}
	ctx := context.Background()
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ask := func(id string) {
		defer wg.Done()
		r, err := b.get(ctx, id)
		if err == nil && (len(r.Offers) != 1 || r.Offers[0].Offer.ID != "of-"+id) {
			err = fmt.Errorf("driver %s got %+v", id, r)
		}
		errs <- err
	}
	wg.Add(1)
	go ask("d0")
	for waited := 0; ; waited++ { // the first read is under way
		mu.Lock()
		started := len(reads) == 1
		mu.Unlock()
		if started {
			break
		}
		if waited > 500 {
			t.Fatal("the first hello was not read at once")
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Add(1)
		go ask(fmt.Sprintf("d%d", i))
	}
	for waited := 0; ; waited++ { // every other hello waiting for the next read
		b.mu.Lock()
		queued := len(b.waiting)
		b.mu.Unlock()
		if queued == n-1 {
			break
		}
		if waited > 5000 {
			t.Fatalf("%d hellos waiting, want %d", queued, n-1)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(reads) != 2 || len(reads[0]) != 1 || len(reads[1]) != n-1 {
		t.Fatalf("reads of %v drivers, want 2: the first alone, the other %d together", lens(reads), n-1)
	}
	// An error reaches the whole batch, and the next hello is read afresh.
	if _, err := b.get(ctx, "broken"); err == nil {
		t.Fatal("a failed read: got no error")
	}
	if r, err := b.get(ctx, "d7"); err != nil || len(r.Offers) != 1 {
		t.Fatalf("after a failed read: got %+v, %v", r, err)
	}
}

func lens(xs [][]string) []int {
	var out []int
	for _, x := range xs {
		out = append(out, len(x))
	}
	return out
}
