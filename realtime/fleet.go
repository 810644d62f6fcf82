package realtime

import (
	"context"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// fleet holds the drivers of the regions that zoomed-out dispatchers count: one copy per gateway,
// shared by all of them, loaded from the index when a region is first wanted and kept current by
// the region's feed (loc:<region>). A dispatcher whose area is too large to be shown driver by
// driver is sent per-cell counts made from it (viewer.cells), never the drivers themselves.
//
// Lock order: fleet.mu is never held while calling the Hub (subscribe takes Hub.subMu and
// Hub.mu, and waits on Redis).
type fleet struct {
	h *Hub

	mu       sync.Mutex
	users    map[string]int                 // region -> viewers counting it
	byRegion map[string]map[string]struct{} // region -> its drivers' ids
	drivers  map[string]fleetDriver         // driver id -> last known

	activeMu sync.Mutex // guards the cache of regions with drivers
	active   []string
	activeAt time.Time
}

type fleetDriver struct {
	region string
	lat    float64
	lng    float64
	state  dispatch.DriverState
	at     time.Time
	cell   uint64 // the index cell (Grid.Cell); a coarser cell is its parent
}

func newFleet(h *Hub) *fleet {
	return &fleet{h: h, users: map[string]int{}, byRegion: map[string]map[string]struct{}{}, drivers: map[string]fleetDriver{}}
}

// activeRegions lists the regions that have ever held a driver, read again at most every 5 s.
func (f *fleet) activeRegions(ctx context.Context) ([]string, error) {
	f.activeMu.Lock()
	defer f.activeMu.Unlock()
	if f.active != nil && time.Since(f.activeAt) < 5*time.Second {
		return f.active, nil
	}
	rs, err := f.h.index.Regions(ctx)
	if err != nil {
		return nil, err
	}
	f.active, f.activeAt = rs, time.Now()
	return rs, nil
}

// acquire makes the fleet follow regions (subscribed and loaded) until as many release calls.
// On an error the regions are acquired all the same: the caller releases them.
func (f *fleet) acquire(ctx context.Context, regions []string) error {
	var fresh []string
	f.mu.Lock()
	for _, r := range regions {
		f.users[r]++
		if f.users[r] == 1 {
			fresh = append(fresh, r)
			f.byRegion[r] = map[string]struct{}{}
		}
	}
	f.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	chans := make([]string, len(fresh))
	for i, r := range fresh {
		chans[i] = "loc:" + r
	}
	// Subscribe first, then read: a point published in between comes by the feed as well, and
	// the newer of the two wins.
	f.h.subscribe(ctx, chans...)
	for _, r := range fresh {
		ps, err := f.h.index.RegionPositions(ctx, r)
		if err != nil {
			return err
		}
		f.mu.Lock()
		for _, p := range ps {
			f.putLocked(r, p.View())
		}
		f.mu.Unlock()
	}
	return nil
}

// release undoes acquire.
func (f *fleet) release(ctx context.Context, regions []string) {
	var gone []string
	f.mu.Lock()
	for _, r := range regions {
		if f.users[r] <= 0 {
			continue
		}
		f.users[r]--
		if f.users[r] > 0 {
			continue
		}
		delete(f.users, r)
		for id := range f.byRegion[r] {
			delete(f.drivers, id)
		}
		delete(f.byRegion, r)
		gone = append(gone, "loc:"+r)
	}
	f.mu.Unlock()
	f.h.unsubscribe(ctx, gone...)
}

// update takes a region's batch from its feed; a region nobody counts is ignored.
func (f *fleet) update(region string, batch []dispatch.DriverView) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.users[region] == 0 {
		return
	}
	for _, v := range batch {
		f.putLocked(region, v)
	}
}

func (f *fleet) putLocked(region string, v dispatch.DriverView) {
	old, had := f.drivers[v.ID]
	if had && old.at.After(v.UpdatedAt) {
		return // a feed message older than what a load read
	}
	if had && old.region != region {
		delete(f.byRegion[old.region], v.ID)
	}
	if v.State == dispatch.DriverOffline {
		delete(f.drivers, v.ID)
		delete(f.byRegion[region], v.ID)
		return
	}
	d := fleetDriver{region: region, lat: v.Lat, lng: v.Lng, state: v.State, at: v.UpdatedAt, cell: old.cell}
	if !had || old.lat != v.Lat || old.lng != v.Lng {
		d.cell = uint64(f.h.grid.Cell(v.Lat, v.Lng))
	}
	f.drivers[v.ID] = d
	f.byRegion[region][v.ID] = struct{}{}
}

// count adds every driver inside a to counts at resolution res.
func (f *fleet) count(a area, res int, counts *cellCounts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.drivers {
		if a.contains(d.lat, d.lng) {
			counts.driver(parentCell(d.cell, res), d.state, d.at)
		}
	}
}

// parentCell is the ancestor at res (<= the cell's own) of an H3 cell index: the resolution
// field set to res and every digit finer than res set to 7 (unused), as H3 defines it.
func parentCell(c uint64, res int) uint64 {
	own := int(c >> 52 & 0xF)
	if res >= own {
		return c
	}
	c = c&^(uint64(0xF)<<52) | uint64(res)<<52
	return c | (uint64(1)<<(uint(15-res)*3) - 1)
}
