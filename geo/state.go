package geo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// A driver's state and reservation. The driver's own record (drv:{<driver>}) holds the truth;
// the copy in its region's position record is what searches filter on, and a change to it is
// published on the region's feed (SetStates, in batch.go, does the work for one driver or many).
// A reservation is a lease, drv:{<driver>}:lease.

// stateScript sets the state in a driver's record in a region: lua/state.lua.
var stateScript = luaScript("state")

// casStateScript sets a driver's own state if it is still the one expected: lua/cas_state.lua.
var casStateScript = luaScript("cas_state")

// releaseScript deletes a lease only if it still carries the caller's token: lua/release.lua.
var releaseScript = luaScript("release")

// SetState implements dispatch.Locator: the driver's own record first (the truth), then the
// copy in the index that searches filter on, which is published on the region's feed
// (SetStates for one driver).
func (x *Index) SetState(ctx context.Context, driverID string, s dispatch.DriverState) error {
	return x.SetStates(ctx, []string{driverID}, s)
}

// publish sends views as one message on the region's feed through c (SetStates gives it a
// pipeline, which it runs itself).
func (x *Index) publish(ctx context.Context, c redis.Cmdable, region string, views []dispatch.DriverView) error {
	b, err := json.Marshal(views)
	if err != nil {
		return err
	}
	return c.Publish(ctx, x.FeedChannel(region), b).Err()
}

// State implements dispatch.Locator.
func (x *Index) State(ctx context.Context, driverID string) (dispatch.DriverState, error) {
	s, err := x.rdb.HGet(ctx, x.drvKey(driverID), "state").Result()
	if errors.Is(err, redis.Nil) {
		return dispatch.DriverOffline, nil
	}
	if err != nil {
		return "", fmt.Errorf("driver %s state: %w", driverID, translate(err))
	}
	return dispatch.DriverState(s), nil
}

// Reserve implements dispatch.Locator with SET NX PX: the lease is a compare-and-set on the
// driver's own slot, so two dispatchers can never both hold it.
func (x *Index) Reserve(ctx context.Context, driverID, token string, ttl time.Duration) (bool, error) {
	ok, err := x.rdb.SetNX(ctx, x.leaseKey(driverID), token, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("reserve driver %s: %w", driverID, translate(err))
	}
	return ok, nil
}

// Release implements dispatch.Locator.
func (x *Index) Release(ctx context.Context, driverID, token string) error {
	if err := releaseScript.Run(ctx, x.rdb, []string{x.leaseKey(driverID)}, token).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release driver %s: %w", driverID, translate(err))
	}
	return nil
}
