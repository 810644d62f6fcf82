package geo

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"sync"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// Options configure an Index.
type Options struct {
	// Prefix is put before every key (tests use it to keep runs apart). It must not contain braces.
	Prefix string
}

// Index is the Redis location index. It is safe for concurrent use.
type Index struct {
	rdb    redis.UniversalClient
	prefix string

	mu      sync.Mutex        // guards regions
	regions map[string]string // driver id -> region last written by this process
}

var _ dispatch.Locator = (*Index)(nil)

// NewIndex returns an index over rdb. The caller owns rdb and closes it.
func NewIndex(rdb redis.UniversalClient, opts Options) *Index {
	return &Index{rdb: rdb, prefix: opts.Prefix, regions: map[string]string{}}
}

func (x *Index) posKey(region string) string   { return x.prefix + "geo:{r" + region + "}:pos" }
func (x *Index) cellsKey(region string) string { return x.prefix + "geo:{r" + region + "}:cells" }
func (x *Index) drvKey(id string) string       { return x.prefix + "drv:{" + id + "}" }
func (x *Index) leaseKey(id string) string     { return x.prefix + "drv:{" + id + "}:lease" }
func (x *Index) regionsKey() string            { return x.prefix + "geo:regions" }

// FeedChannel is the pub/sub channel of a region's position changes: a JSON array of
// dispatch.DriverView. Write publishes the points it applies on it, from the update script itself
// (one message per region and flush, in the write's own round trip), and state changes too
// (SetState, Sweep). Replicas and
// dispatchers' maps subscribe to it.
func (x *Index) FeedChannel(region string) string { return x.prefix + "loc:" + region }

// Forget drops what this process remembers of a driver's region, so that the next point reads
// it from Redis again: call it when the driver's socket closes (it may reconnect to another
// gateway, which may move it to another region).
func (x *Index) Forget(driverID string) {
	x.mu.Lock()
	delete(x.regions, driverID)
	x.mu.Unlock()
}

//go:embed lua/*.lua
var luaFiles embed.FS

// luaScript is the script in lua/<name>.lua, whose opening comment says its KEYS, ARGV and
// answer. Every key a script touches shares one hash tag (the package doc's key design). It
// panics when the file is missing: scripts are package variables, so that is at init.
func luaScript(name string) *redis.Script {
	src, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(fmt.Sprintf("geo: Lua script %s: %v", name, err))
	}
	return redis.NewScript(string(src))
}

// scripts are the ones LoadScripts loads, among them every script the index runs in a
// pipeline: there Script.Run cannot fall back to EVAL on NOSCRIPT, so execPipe reloads them.
var scripts = []*redis.Script{updateScript, removeScript, stateScript, sweepScript, casStateScript, scanScript, releaseScript}

// LoadScripts loads the Lua scripts (on every shard of a cluster). Pipelines send EVALSHA,
// which a Redis that restarted or never saw the script answers NOSCRIPT: execPipe then loads
// them and retries once.
func (x *Index) LoadScripts(ctx context.Context) error {
	for _, sc := range scripts {
		if err := sc.Load(ctx, x.rdb).Err(); err != nil {
			return fmt.Errorf("load script: %w", err)
		}
	}
	return nil
}

// execPipe builds and runs a pipeline, reloading the scripts and running it again on NOSCRIPT.
func (x *Index) execPipe(ctx context.Context, build func(redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		pipe := x.rdb.Pipeline()
		build(pipe)
		_, err := pipe.Exec(ctx)
		if err == nil || errors.Is(err, redis.Nil) {
			return nil
		}
		if attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if lerr := x.LoadScripts(ctx); lerr != nil {
				return lerr
			}
			continue
		}
		return err
	}
}
