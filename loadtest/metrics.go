package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Metrics is a scrape of a Prometheus text exposition: each sample by its full name with
// labels as written (`name{a="b"}`), and each metric name summed over its labels.
type Metrics struct {
	Samples map[string]float64
	Sums    map[string]float64
}

// Scrape reads the Prometheus text format from url (a loopback address only).
func Scrape(ctx context.Context, url string) (Metrics, error) {
	if err := CheckLoopback(url); err != nil {
		return Metrics{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Metrics{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Metrics{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads the Prometheus text format (no timestamps, as client_golang writes it).
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{Samples: map[string]float64{}, Sums: map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return m, fmt.Errorf("metrics line %q: no value", line)
		}
		key, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return m, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m.Samples[key] = v
		name := key
		if j := strings.IndexByte(key, '{'); j >= 0 {
			name = key[:j]
		}
		m.Sums[name] += v
	}
	return m, sc.Err()
}

// Has reports whether a metric name appears.
func (m Metrics) Has(name string) bool {
	_, ok := m.Sums[name]
	return ok
}

// Quantile estimates the q-th quantile (0..1) of a histogram from its buckets, interpolating
// linearly inside the bucket as Prometheus' histogram_quantile does. ok is false when the
// histogram is absent or empty.
func (m Metrics) Quantile(name string, q float64) (v float64, ok bool) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + "_bucket{"
	for k, n := range m.Samples {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		i := strings.Index(k, `le="`)
		if i < 0 {
			continue
		}
		rest := k[i+4:]
		le, err := strconv.ParseFloat(rest[:strings.IndexByte(rest, '"')], 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, n})
	}
	if len(bs) == 0 {
		return 0, false
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	total := bs[len(bs)-1].n
	if total == 0 {
		return 0, false
	}
	rank := q * total
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLe, true
			}
			if b.n == prevN {
				return b.le, true
			}
			return prevLe + (b.le-prevLe)*(rank-prevN)/(b.n-prevN), true
		}
		prevLe, prevN = b.le, b.n
	}
	return prevLe, true
}

// Minus is m with before's samples subtracted: the change over a run of every counter and
// histogram bucket (gauges subtract too, which is meaningless but harmless).
func (m Metrics) Minus(before Metrics) Metrics {
	out := Metrics{Samples: map[string]float64{}, Sums: map[string]float64{}}
	for k, v := range m.Samples {
		out.Samples[k] = v - before.Samples[k]
	}
	for k, v := range m.Sums {
		out.Sums[k] = v - before.Sums[k]
	}
	return out
}

// Plus adds another process's scrape (counters and histogram buckets add up across processes).
func (m Metrics) Plus(o Metrics) Metrics {
	out := Metrics{Samples: map[string]float64{}, Sums: map[string]float64{}}
	for _, x := range []Metrics{m, o} {
		for k, v := range x.Samples {
			out.Samples[k] += v
		}
		for k, v := range x.Sums {
			out.Sums[k] += v
		}
	}
	return out
}

// ScrapeEach scrapes every URL; a URL that does not answer is left out of the map, with its
// error joined into err.
func ScrapeEach(ctx context.Context, urls []string) (map[string]Metrics, error) {
	out := map[string]Metrics{}
	var errs []error
	for _, u := range urls {
		m, err := Scrape(ctx, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[u] = m
	}
	return out, errors.Join(errs...)
}

// Gained sums, over the URLs scraped both times, what each gained between before and after.
func Gained(before, after map[string]Metrics) Metrics {
	sum := Metrics{Samples: map[string]float64{}, Sums: map[string]float64{}}
	for u, a := range after {
		if b, ok := before[u]; ok {
			sum = sum.Plus(a.Minus(b))
		}
	}
	return sum
}
