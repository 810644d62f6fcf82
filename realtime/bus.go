package realtime

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// Bus publishes to the gateways through Redis; any role may use it (a dispatcher process
// sends offers, the outbox relay publishes booking events). Safe for concurrent use.
type Bus struct {
	rdb    redis.UniversalClient
	prefix string
	grid   Grid
}

var (
	_ dispatch.Publisher = (*Bus)(nil)
	_ dispatch.Notifier  = (*Bus)(nil)
)

// NewBus returns a Bus over rdb; every channel name starts with prefix (environments sharing
// one Redis keep apart), and the channels of regions are grid's.
func NewBus(rdb redis.UniversalClient, prefix string, grid Grid) *Bus {
	return &Bus{rdb: rdb, prefix: prefix, grid: grid}
}

func (b *Bus) ch(name string) string { return b.prefix + name }

// Publish implements dispatch.Publisher for the outbox relay. An event goes to the channels of
// its audiences only: the booking's (its customer's watchers), its pickup region's (dispatchers
// whose area covers it) and its driver's, so a gateway receives what its own viewers need.
func (b *Bus) Publish(ctx context.Context, e dispatch.Event) error {
	pipe := b.rdb.Pipeline()
	if _, err := b.queueEvent(ctx, pipe, e); err != nil {
		return err
	}
	_, err := pipe.Exec(ctx)
	return err
}

// queueEvent queues e's publications (one per audience channel) on pipe.
func (b *Bus) queueEvent(ctx context.Context, pipe redis.Pipeliner, e dispatch.Event) ([]*redis.IntCmd, error) {
	p, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	cmds := []*redis.IntCmd{
		pipe.Publish(ctx, b.ch("ev:bk:"+e.BookingID), p),
		pipe.Publish(ctx, b.ch("ev:reg:"+b.grid.Region(e.Booking.Pickup.Lat, e.Booking.Pickup.Lng)), p),
	}
	if d := e.Booking.DriverID(); d != "" {
		cmds = append(cmds, pipe.Publish(ctx, b.ch("ev:drv:"+d), p))
	}
	return cmds, nil
}

// PublishBatch publishes events in order, to the same channels as Publish, in one pipeline (one
// round trip), for the outbox relay: one event per round trip fell minutes behind when Redis
// answered slowly. It returns how many events were published before the first that failed.
func (b *Bus) PublishBatch(ctx context.Context, es []dispatch.Event) (int, error) {
	pipe := b.rdb.Pipeline()
	cmds := make([][]*redis.IntCmd, 0, len(es))
	for _, e := range es {
		cs, err := b.queueEvent(ctx, pipe, e)
		if err != nil {
			return 0, err
		}
		cmds = append(cmds, cs)
	}
	_, err := pipe.Exec(ctx)
	for i, cs := range cmds {
		for _, c := range cs {
			if c.Err() != nil {
				return i, c.Err()
			}
		}
	}
	if err != nil {
		return 0, err
	}
	return len(cmds), nil
}

// ToDriver implements dispatch.Notifier: the frame reaches the driver's gateway, wherever it is.
func (b *Bus) ToDriver(ctx context.Context, driverID, typ string, data any) error {
	p, err := json.Marshal(outFrame{Type: typ, Data: data})
	if err != nil {
		return err
	}
	return b.rdb.Publish(ctx, b.ch("to:drv:"+driverID), p).Err()
}

var (
	_ dispatch.BatchNotifier = (*Bus)(nil)
	_ dispatch.OfferEvents   = (*Bus)(nil)
)

// ToDrivers implements dispatch.BatchNotifier: a window's frames in one pipeline.
func (b *Bus) ToDrivers(ctx context.Context, msgs []dispatch.DriverMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	pipe := b.rdb.Pipeline()
	for _, m := range msgs {
		p, err := json.Marshal(outFrame{Type: m.Type, Data: m.Data})
		if err != nil {
			return err
		}
		pipe.Publish(ctx, b.ch("to:drv:"+m.DriverID), p)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// offerClosedChannel carries offers closed outside the matchers (declined, revoked), to all of
// them: few messages, and each matcher keeps those of its own bookings.
const offerClosedChannel = "ev:offer"

// OfferClosed implements dispatch.OfferEvents.
func (b *Bus) OfferClosed(ctx context.Context, o dispatch.Offer) error {
	p, err := json.Marshal(closedOffer{ID: o.ID, BookingID: o.BookingID, DriverID: o.DriverID, Status: o.Status})
	if err != nil {
		return err
	}
	return b.rdb.Publish(ctx, b.ch(offerClosedChannel), p).Err()
}

type closedOffer struct {
	ID        string               `json:"offer_id"`
	BookingID string               `json:"booking_id"`
	DriverID  string               `json:"driver_id"`
	Status    dispatch.OfferStatus `json:"status"`
}

// MatchFeed is what a matcher learns by change: the booking events of every region, and the
// offers closed outside it.
type MatchFeed interface {
	Observe(b dispatch.Booking)
	ObserveOfferClosed(o dispatch.Offer)
}

// Follow feeds m from the bus until ctx ends: the outbox relay's booking events (every region's
// channel) and the closed offers. Messages published while the subscription is down are lost;
// the matcher's sweep is the safety net. It returns nil when ctx ends.
func (b *Bus) Follow(ctx context.Context, m MatchFeed) error {
	ps := b.rdb.PSubscribe(ctx, b.ch("ev:reg:*"))
	defer ps.Close()
	if err := ps.Subscribe(ctx, b.ch(offerClosedChannel)); err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow closed offers: %w", err)
	}
	receive(ctx, ps.Channel(redis.WithChannelSize(8192)), func(msg *redis.Message) {
		if msg.Channel == b.ch(offerClosedChannel) {
			var o closedOffer
			if json.Unmarshal([]byte(msg.Payload), &o) == nil && o.ID != "" {
				m.ObserveOfferClosed(dispatch.Offer{ID: o.ID, BookingID: o.BookingID, DriverID: o.DriverID, Status: o.Status})
			}
			return
		}
		var e dispatch.Event
		if json.Unmarshal([]byte(msg.Payload), &e) == nil && e.Booking.ID != "" {
			e.Booking.Version = e.Version // the booking's own JSON leaves it out
			m.Observe(e.Booking)
		}
	})
	return nil
}

// receive calls handle with each message of ch, one at a time, until ctx is done or ch is
// closed (its subscription closed). Hub.Run and Follow read their subscriptions with it.
func receive(ctx context.Context, ch <-chan *redis.Message, handle func(*redis.Message)) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			handle(msg)
		}
	}
}
