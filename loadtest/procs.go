package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// A peak run with more sockets than one process may hold (20,000 open files here) re-executes
// its own binary as children, each running a slice of the drivers. The parent keeps the
// customers, the dispatchers and the OTPs (children ask for them over loopback HTTP).
//
// Protocol, one JSON document a line:
//   parent -> child stdin:  childConfig, then the words "drain" and "stop" (EOF means stop)
//   child -> parent stdout: {"progress": ...} four times a second, {"result": ...} at the end
// Logs go to stderr, which the parent passes through.

type childConfig struct {
	URL         string        `json:"url"`
	REST        string        `json:"rest,omitempty"`
	Secret      []byte        `json:"secret"`
	FirstDriver int           `json:"first_driver"`
	Drivers     int           `json:"drivers"`
	Registered  bool          `json:"registered,omitempty"`
	Tick        time.Duration `json:"tick"`
	AcceptP     float64       `json:"accept_p"`
	IgnoreP     float64       `json:"ignore_p"`
	ReconnectP  float64       `json:"reconnect_p"`
	Approach    time.Duration `json:"approach"`
	TripTime    time.Duration `json:"trip_time"`
	City        City          `json:"city"`
	Seed        int64         `json:"seed"`
	IDPrefix    string        `json:"id_prefix"`
	LocalAddrs  []string      `json:"local_addrs"`
	OTPURL      string        `json:"otp_url"`
	Start       time.Time     `json:"start"`
}

type childProgress struct {
	Totals    Totals `json:"totals"`
	LastOffer int64  `json:"last_offer_ms"`
}

type childResult struct {
	Totals Totals     `json:"totals"`
	Series SeriesData `json:"series"`
}

type childLine struct {
	Progress *childProgress `json:"progress,omitempty"`
	Result   *childResult   `json:"result,omitempty"`
}

// RunChild is the child side of a multi-process peak run: it reads its configuration from
// stdin, runs its drivers until told to stop, and writes progress and its result to stdout.
// cmd/loadtest calls it for `peak -child`; nothing else should.
func RunChild(ctx context.Context, stdin io.Reader, stdout io.Writer, log zerolog.Logger) error {
	in := bufio.NewReader(stdin)
	var cfg childConfig
	if err := readChildConfig(in, &cfg); err != nil {
		return err
	}
	if err := CheckLoopback(cfg.URL); err != nil {
		return err
	}
	if err := CheckLoopback(cfg.OTPURL); err != nil {
		return err
	}
	series := NewSeries(cfg.Start)
	if cfg.REST != "" {
		if err := CheckLoopback(cfg.REST); err != nil {
			return err
		}
	}
	fleet := NewFleet(FleetOptions{URL: cfg.URL, REST: cfg.REST, Secret: cfg.Secret, Drivers: cfg.Drivers, FirstDriver: cfg.FirstDriver, Registered: cfg.Registered,
		Tick: cfg.Tick, AcceptP: cfg.AcceptP, IgnoreP: cfg.IgnoreP, ReconnectP: cfg.ReconnectP, Approach: cfg.Approach,
		TripTime: cfg.TripTime, City: cfg.City, Seed: cfg.Seed, IDPrefix: cfg.IDPrefix, LocalAddrs: cfg.LocalAddrs,
		OTP: remoteOTP(cfg.OTPURL), Series: series}, log)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer stop()
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			switch strings.TrimSpace(sc.Text()) {
			case "drain":
				fleet.Drain()
			case "stop":
				return
			}
		}
	}()
	var wmu sync.Mutex
	enc := json.NewEncoder(stdout)
	write := func(l childLine) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(l)
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = write(childLine{Progress: &childProgress{Totals: fleet.Counts.Totals(), LastOffer: fleet.lastOffer.Load()}})
			}
		}
	}()
	err := fleet.Run(runCtx)
	close(done)
	if werr := write(childLine{Result: &childResult{Totals: fleet.Counts.Totals(), Series: series.Data()}}); werr != nil && err == nil {
		err = werr
	}
	return err
}

// remoteOTP asks the parent for a booking's OTP.
func remoteOTP(base string) func(ctx context.Context, bookingID string) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context, bookingID string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/"+url.PathEscape(bookingID), nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("otp of %s: %s %s", bookingID, resp.Status, strings.TrimSpace(string(b)))
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// otpHandler serves GET /otp/{booking} from the parent's customers.
func otpHandler(otp func(ctx context.Context, bookingID string) (string, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /otp/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, err := otp(r.Context(), r.PathValue("id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = io.WriteString(w, v)
	})
	return mux
}

// child is the parent's handle on one child process of a peak run.
type child struct {
	*spawned

	mu       sync.Mutex
	progress childProgress
	result   *childResult
}

// spawned is a child process of this binary (a slice of a run's sockets): its configuration
// goes in as the first line of its stdin, and each line it writes to stdout goes to the
// parent's onLine. Logs go to stderr. It runs in its own process group, so that a Ctrl-C on the
// terminal reaches the parent only, which then stops its children in order.
type spawned struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when stdout has ended
	err   error         // reading stdout failed (read once done is closed)
}

func spawn(exe string, args []string, cfg any, stderr io.Writer, onLine func([]byte)) (*spawned, error) {
	cmd := exec.Command(exe, args...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start child %s: %w", exe, err)
	}
	s := &spawned{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	b, _ := json.Marshal(cfg)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("configure child: %w", err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 1<<20), 1<<30)
		for sc.Scan() {
			onLine(sc.Bytes())
		}
		s.err = sc.Err()
	}()
	return s, nil
}

func (s *spawned) say(word string) { _, _ = io.WriteString(s.stdin, word+"\n") }

// end closes the child's stdin (which tells it to stop) and waits for it; past timeout it is
// killed.
func (s *spawned) end(timeout time.Duration) error {
	_ = s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(timeout):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return errors.Join(s.cmd.Wait(), s.err)
}

// readChildConfig reads a child's configuration, the first line of its stdin, into cfg.
func readChildConfig(in *bufio.Reader, cfg any) error {
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read child configuration: %w", err)
	}
	if err := json.Unmarshal(line, cfg); err != nil {
		return fmt.Errorf("child configuration: %w", err)
	}
	return nil
}

// startChild runs a child of a peak run (RunChild) and keeps its last progress and its result.
func startChild(exe string, args []string, cfg childConfig, stderr io.Writer) (*child, error) {
	c := &child{}
	sp, err := spawn(exe, args, cfg, stderr, func(line []byte) {
		var l childLine
		if json.Unmarshal(line, &l) != nil {
			return
		}
		c.mu.Lock()
		if l.Progress != nil {
			c.progress = *l.Progress
		}
		if l.Result != nil {
			c.result = l.Result
		}
		c.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	c.spawned = sp
	return c, nil
}

func (c *child) last() childProgress {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.progress
}

// finish tells the child to stop and waits for its result; past timeout it is killed.
func (c *child) finish(timeout time.Duration) (*childResult, error) {
	c.say("stop")
	werr := c.end(timeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.result == nil {
		return nil, fmt.Errorf("child %d gave no result: %w", c.cmd.Process.Pid, errors.Join(werr, errors.New("see its stderr")))
	}
	return c.result, nil
}

// kill ends a child that will not be asked nicely (the parent is failing).
func (c *child) kill() {
	_ = c.cmd.Process.Signal(os.Kill)
	<-c.done
	_ = c.cmd.Wait()
}
