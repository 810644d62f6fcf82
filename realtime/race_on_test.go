//go:build race

package realtime

// raceEnabled: the race detector's instrumented frames are larger than a production build's,
// so stack sizes are checked only without it (make test runs those tests again without -race).
const raceEnabled = true
