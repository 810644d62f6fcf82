package realtime

import (
	"context"
	"encoding/json"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// Bus publishes to the gateways through Redis; any role may use it (a dispatcher process
// sends offers, the outbox relay publishes booking events). Safe for concurrent use.
type Bus struct {
	rdb    redis.UniversalClient
	prefix string
}

var (
	_ dispatch.Publisher = (*Bus)(nil)
	_ dispatch.Notifier  = (*Bus)(nil)
)

// NewBus returns a Bus over rdb; every channel name starts with prefix (environments sharing
// one Redis keep apart).
func NewBus(rdb redis.UniversalClient, prefix string) *Bus { return &Bus{rdb: rdb, prefix: prefix} }

func (b *Bus) ch(name string) string { return b.prefix + name }

// Publish implements dispatch.Publisher for the outbox relay.
func (b *Bus) Publish(ctx context.Context, e dispatch.Event) error {
	p, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.rdb.Publish(ctx, b.ch("ev:bookings"), p).Err()
}

// ToDriver implements dispatch.Notifier: the frame reaches the driver's gateway, wherever it is.
func (b *Bus) ToDriver(ctx context.Context, driverID, typ string, data any) error {
	p, err := json.Marshal(outFrame{Type: typ, Data: data})
	if err != nil {
		return err
	}
	return b.rdb.Publish(ctx, b.ch("to:drv:"+driverID), p).Err()
}
