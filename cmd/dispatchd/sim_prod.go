//go:build prod

package main

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
)

// simulation: the production build carries no simulated fleet (sim.go has it). Settings that
// ask for one are refused rather than ignored, so that nobody believes a fleet is running.
func simulation(cfg Config, _ zerolog.Logger) (func(context.Context, string) error, error) {
	if cfg.SimDrivers != 0 || cfg.SimBookings != 0 {
		return nil, errors.New("DISPATCH_SIMULATE_DRIVERS and DISPATCH_SIMULATE_BOOKINGS_PER_MIN must be unset or 0: " +
			"this production build (-tags prod) has no simulated fleet; use the development build (make run) or bin/loadtest")
	}
	return nil, nil
}
