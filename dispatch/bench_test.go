package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/drivers4me/dispatch/realtime"
	"golang.org/x/sync/errgroup"
)

// BenchmarkOffers is one window's 1,000 offers on real Redis and MariaDB (issue 13: 1,000 offers
// in at most 200 ms). "batch" is what the matcher does now: one lease pipeline, one transaction
// for the region, one state batch and one publish pipeline. "one-by-one" is what it did: per
// offer a lease, a transaction, a state change and a publish, 16 at a time. Each op is a whole
// window of 1,000 offers:
//
//	go test ./dispatch -run '^$' -bench Offers -benchtime 5x
func BenchmarkOffers(b *testing.B) {
	const n = 1000
	ctx := context.Background()
	r := newRig(b)
	bus := realtime.NewBus(r.rdb, r.prefix, realtime.Grid{Region: geo.Region}) // offers only: no map
	for _, mode := range []string{"batch", "one-by-one"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				offers := make([]dispatch.Offer, n)
				drivers := make([]string, n)
				now := time.Now()
				for j := range offers {
					d := fmt.Sprintf("bd-%s-%d-%d", mode, i, j)
					drivers[j] = d
					bk := r.book(fmt.Sprintf("bc-%d", j), north(float64(j)), baseLng, dispatch.Manual, nil)
					offers[j] = dispatch.Offer{ID: dispatch.NewID("of"), BookingID: bk.ID, DriverID: d, Status: dispatch.OfferOpen,
						DistanceM: 500, CreatedAt: now, ExpiresAt: now.Add(15 * time.Second), Region: "bench", Fence: 1}
				}
				b.StartTimer()
				switch mode {
				case "batch":
					leases := make([]dispatch.Lease, n)
					for j, o := range offers {
						leases[j] = dispatch.Lease{DriverID: o.DriverID, Token: o.ID, TTL: 20 * time.Second}
					}
					if _, err := r.index.ReserveMany(ctx, leases); err != nil {
						b.Fatal(err)
					}
					if _, err := r.db.CreateOffers(ctx, "bench", 1, offers); err != nil {
						b.Fatal(err)
					}
					if err := r.index.SetStates(ctx, drivers, dispatch.DriverOffered); err != nil {
						b.Fatal(err)
					}
					msgs := make([]dispatch.DriverMessage, n)
					for j, o := range offers {
						msgs[j] = dispatch.DriverMessage{DriverID: o.DriverID, Type: "offer", Data: o}
					}
					if err := bus.ToDrivers(ctx, msgs); err != nil {
						b.Fatal(err)
					}
				case "one-by-one":
					var g errgroup.Group
					g.SetLimit(16)
					for _, o := range offers {
						g.Go(func() error {
							if _, err := r.index.Reserve(ctx, o.DriverID, o.ID, 20*time.Second); err != nil {
								return err
							}
							if err := r.db.CreateOffer(ctx, o); err != nil {
								return err
							}
							if err := r.index.SetState(ctx, o.DriverID, dispatch.DriverOffered); err != nil {
								return err
							}
							return bus.ToDriver(ctx, o.DriverID, "offer", o)
						})
					}
					if err := g.Wait(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/window")
		})
	}
}
