package geo

import (
	"context"
	"fmt"
	"time"
)

// A driver's session mark: which socket, on any gateway, is the driver's latest, so that the
// gateway of a socket that closed does not declare gone a driver who came back meanwhile,
// there or elsewhere (realtime's gone.go).

// detachScript deletes a driver's session mark if it is still the caller's: lua/detach.lua.
var detachScript = luaScript("detach")

func (x *Index) sessionKey(id string) string { return x.prefix + "drv:{" + id + "}:session" }

// Attach marks session as the driver's socket, wherever it is (drv:{<driver>}:session, kept a
// day): a newer socket on any gateway replaces the mark.
func (x *Index) Attach(ctx context.Context, driverID, session string) error {
	if err := x.rdb.Set(ctx, x.sessionKey(driverID), session, 24*time.Hour).Err(); err != nil {
		return fmt.Errorf("attach driver %s: %w", driverID, translate(err))
	}
	return nil
}

// Detach drops the mark of session and reports whether it was still the driver's latest
// socket: false means the driver came back meanwhile (here or on another gateway).
func (x *Index) Detach(ctx context.Context, driverID, session string) (bool, error) {
	n, err := detachScript.Run(ctx, x.rdb, []string{x.sessionKey(driverID)}, session).Int()
	if err != nil {
		return false, fmt.Errorf("detach driver %s: %w", driverID, translate(err))
	}
	return n == 1, nil
}
