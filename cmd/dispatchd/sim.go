//go:build !prod

package main

import (
	"context"

	"github.com/drivers4me/dispatch/loadtest"
	"github.com/rs/zerolog"
)

// simulation is make run's simulated fleet (DISPATCH_SIMULATE_DRIVERS, _BOOKINGS_PER_MIN):
// loadtest's drivers and customers, clients of this process's own API and socket at addr
// (host:port on loopback) once it listens. It is nil when the settings ask for no driver.
// Only the development build carries it; the production build (-tags prod, sim_prod.go)
// refuses the settings, and so leaves out loadtest with its plotting and PDF code.
func simulation(cfg Config, log zerolog.Logger) (func(ctx context.Context, addr string) error, error) {
	if cfg.SimDrivers == 0 {
		return nil, nil
	}
	return func(ctx context.Context, addr string) error {
		// A simulated driver at a booking learns its OTP from the simulated customer who made it,
		// or else from make run's printed customer, as a customer at the car would tell it.
		var sim *loadtest.Fleet
		told := devCustomerOTP("http://"+addr, []byte(cfg.JWTSecret))
		sim = loadtest.NewFleet(loadtest.FleetOptions{URL: "ws://" + addr + "/v1/ws",
			Secret: []byte(cfg.JWTSecret), Drivers: cfg.SimDrivers, BookingsPerMinute: cfg.SimBookings, City: loadtest.Bengaluru, Seed: 1,
			OTP: func(ctx context.Context, id string) (string, error) {
				if otp, err := sim.OTP(ctx, id); err == nil {
					return otp, nil
				}
				return told(ctx, id)
			}}, log)
		return sim.Run(ctx)
	}, nil
}
