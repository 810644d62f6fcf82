package dispatch

import (
	"context"
	"errors"
	"fmt"
)

// A driver's lifecycle: the socket opens (DriverHello), the driver goes on duty or off it
// (GoOnline, GoOffline), its bookings hold and release it (holdDriver, releaseDriver), and its
// socket closes for good (DriverGone). realtime only carries the frames; the rules are here.

// DriverHello is what a driver's socket is told as it opens (API.md `hello`): the driver's
// state, and what a reconnect resumes: the booking it is busy with and its offers still open.
type DriverHello struct {
	State DriverState
	// Active is the booking the driver is busy with (ActiveBookingOf), as a driver sees it.
	Active *Booking
	Offers []OfferOf
}

// DriverHello reads what a driver's new socket is told. What cannot be read is left out (an
// unknown state is offline) and the error returned with the rest: the socket opens anyway, and
// the events that follow bring the driver up to date.
func (s *Service) DriverHello(ctx context.Context, a Actor) (DriverHello, error) {
	if a.Role != "driver" {
		return DriverHello{}, fmt.Errorf("only drivers have a driver's hello: %w", ErrForbidden)
	}
	h := DriverHello{State: DriverOffline}
	var errs []error
	if st, err := s.loc.State(ctx, a.ID); err != nil {
		errs = append(errs, fmt.Errorf("state of driver %s: %w", a.ID, err))
	} else {
		h.State = st
	}
	var res Resume
	var err error
	if s.resumes != nil {
		res, err = s.resumes.get(ctx, a.ID)
	} else {
		res, err = s.store.Resume(ctx, a.ID)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("resume driver %s: %w", a.ID, err))
	}
	if res.Active != nil {
		b := res.Active.Public()
		h.Active = &b
	}
	h.Offers = res.Offers
	return h, errors.Join(errs...)
}

// GoOnline puts a driver on duty and returns the state recorded. Only a driver who may
// (DriverProfile.MayGoOnline: registered, verified, not suspended, licence valid) goes online,
// else ErrForbidden saying why. A driver busy with a booking (ActiveBookingOf) is back with it,
// assigned or on its trip; any other is available.
func (s *Service) GoOnline(ctx context.Context, a Actor) (DriverState, error) {
	if a.Role != "driver" {
		return "", fmt.Errorf("only drivers go online: %w", ErrForbidden)
	}
	if err := s.mayGoOnline(ctx, a.ID); err != nil {
		return "", err
	}
	want := DriverAvailable
	b, err := s.store.ActiveBookingOf(ctx, a.ID)
	switch {
	case err == nil:
		want = busyState(b)
	case !errors.Is(err, ErrNotFound):
		return "", fmt.Errorf("driver %s online: %w", a.ID, err)
	}
	if err := s.loc.SetState(ctx, a.ID, want); err != nil {
		return "", fmt.Errorf("driver %s online: %w", a.ID, err)
	}
	return want, nil
}

// GoOffline takes a driver off duty and returns the state recorded (offline). A driver busy
// with a booking may not: ErrConflict, until it is finished or cancelled.
func (s *Service) GoOffline(ctx context.Context, a Actor) (DriverState, error) {
	if a.Role != "driver" {
		return "", fmt.Errorf("only drivers go offline: %w", ErrForbidden)
	}
	b, err := s.store.ActiveBookingOf(ctx, a.ID)
	switch {
	case err == nil:
		return "", Errorf(Conflict, "finish or cancel booking %s before going offline", b.ID)
	case !errors.Is(err, ErrNotFound):
		return "", fmt.Errorf("driver %s offline: %w", a.ID, err)
	}
	if err := s.loc.SetState(ctx, a.ID, DriverOffline); err != nil {
		return "", fmt.Errorf("driver %s offline: %w", a.ID, err)
	}
	return DriverOffline, nil
}

// mayGoOnline says whether the driver may go online now: an unknown driver, an unverified or
// suspended one, or one whose licence has expired may not (ErrForbidden, saying which).
func (s *Service) mayGoOnline(ctx context.Context, driverID string) error {
	d, err := s.store.Driver(ctx, driverID)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("driver %s is not registered: ask a dispatcher to create your profile: %w", driverID, ErrForbidden)
	}
	if err != nil {
		return err
	}
	return d.MayGoOnline(s.opts.Now())
}

// busyState is the state of a driver whose current booking is b: on its trip once it started,
// else assigned.
func busyState(b Booking) DriverState {
	if b.Status == StatusInProgress {
		return DriverOnTrip
	}
	return DriverAssigned
}

// holdDriver marks the driver assigned when the booking is due soon; a booking assigned further
// ahead only holds its calendar block.
func (s *Service) holdDriver(ctx context.Context, driverID string, b Booking) {
	if !b.StartAt.Before(s.opts.Now().Add(DueWithin)) {
		return
	}
	if err := s.loc.SetState(ctx, driverID, DriverAssigned); err != nil {
		// The booking is the driver's (the store's truth); the index shows it at the next status.
		s.opts.Log.Warn().Err(err).Str("driver", driverID).Str("booking", b.ID).Msg("mark the driver assigned")
	}
}

// releaseDriver frees a driver whose booking ended or was given up, unless another booking of
// theirs holds them now (one under way, or one due within DueWithin).
func (s *Service) releaseDriver(ctx context.Context, driverID string) {
	// A failure to set the state leaves it as it is, until the driver's next status.
	warn := func(err error, what string) {
		s.opts.Log.Warn().Err(err).Str("driver", driverID).Msg("release the driver: " + what)
	}
	st, err := s.loc.State(ctx, driverID)
	if err != nil {
		warn(err, "read its state")
		return
	}
	if st == DriverOffline {
		return
	}
	want := DriverAvailable
	b, err := s.store.ActiveBookingOf(ctx, driverID)
	switch {
	case err == nil:
		want = busyState(b)
	case !errors.Is(err, ErrNotFound):
		// Free all the same: the store's calendar refuses any booking that would overlap.
		warn(err, "read its current booking (freed all the same)")
	}
	if err := s.loc.SetState(ctx, driverID, want); err != nil {
		warn(err, "set it "+string(want))
	}
}

// DriverGone takes a driver whose socket closed and did not come back within the gateway's
// grace. A free or offered driver goes offline, so no matcher counts on them, and an open offer
// to them is revoked and its booking matched again at once: a customer does not wait out the
// offer's timeout for a phone that dropped. A driver with a booking keeps it (they may be
// driving through a tunnel).
func (s *Service) DriverGone(ctx context.Context, driverID string) error {
	st, err := s.loc.State(ctx, driverID)
	if err != nil {
		return fmt.Errorf("driver %s gone: %w", driverID, err)
	}
	if st != DriverAvailable && st != DriverOffered {
		return nil
	}
	if err := s.loc.SetState(ctx, driverID, DriverOffline); err != nil {
		return fmt.Errorf("driver %s gone: %w", driverID, err)
	}
	offers, err := s.store.OpenOffers(ctx, driverID)
	if err != nil {
		return fmt.Errorf("driver %s gone: %w", driverID, err)
	}
	for _, o := range offers {
		closed, err := s.store.CloseOffer(ctx, o.ID, driverID, OfferRevoked, s.opts.Now())
		if errors.Is(err, ErrConflict) {
			continue // answered or expired meanwhile
		}
		if err != nil {
			return fmt.Errorf("driver %s gone: revoke offer %s: %w", driverID, o.ID, err)
		}
		s.offerClosed(ctx, closed)
		if err := s.loc.Release(ctx, driverID, o.ID); err != nil {
			return fmt.Errorf("driver %s gone: %w", driverID, err)
		}
	}
	return nil
}
