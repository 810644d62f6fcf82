//go:build prod

package main

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
)

// startEmbedded: the production build carries no embedded engines.
func startEmbedded(context.Context, zerolog.Logger) (string, string, func(), error) {
	return "", "", nil, errors.New("REDIS_URL and MYSQL_DSN are required: this production build has no embedded engines")
}
