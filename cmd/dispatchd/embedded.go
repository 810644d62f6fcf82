//go:build !prod

package main

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/drivers4me/dispatch/store/embedded"
	"github.com/rs/zerolog"
)

// startEmbedded starts the development engines in-process on loopback: miniredis and
// go-mysql-server. The production build (-tags prod) leaves both out.
func startEmbedded(ctx context.Context, log zerolog.Logger) (redisURL, dsn string, stop func(), err error) {
	mr, err := miniredis.Run()
	if err != nil {
		return "", "", nil, fmt.Errorf("start embedded redis: %w", err)
	}
	dsn, stopSQL, err := embedded.Start(ctx, log.With().Str("component", "embedded-mysql").Logger())
	if err != nil {
		mr.Close()
		return "", "", nil, fmt.Errorf("start embedded mysql: %w", err)
	}
	log.Info().Str("redis", mr.Addr()).Msg("embedded redis (miniredis) listening on loopback")
	return "redis://" + mr.Addr(), dsn, func() { stopSQL(); mr.Close() }, nil
}
