package realtime

import "sync"

// maxBacklog bounds the work a socket may have waiting on the backends. A user's messages are
// budgeted (Options.UserRate) and a driver's positions too (Options.Rate), so only a backend
// stalled for many seconds fills it: then location frames are dropped and anything else closes
// the socket with 1013 (Hub.readLoop).
const maxBacklog = 256

// backlog runs a socket's work that waits on Redis or MySQL (a hello, a status, an offer's
// answer, a watch, a trail point), one job at a time in the order pushed, on a goroutine of its
// own, so that the socket's read loop never waits on a backend: it goes on reading (pings,
// close frames, the next frames) while a slow call is answered. The goroutine is started when
// work arrives and ends when none is left, so an idle socket holds none.
//
// The read loop owns it: only the read loop and the backlog's own jobs push, and the read loop
// waits for it (wait) once it has stopped reading. While the backlog is not idle the read loop
// queues everything it would answer or handle itself behind it, so a socket's answers keep the
// order of its frames.
//
// Lock order: backlog.mu is a leaf; a job runs without it.
type backlog struct {
	mu      sync.Mutex
	jobs    []func()
	running bool // a goroutine is running the jobs
	wg      sync.WaitGroup
}

// idle reports whether no job is queued or running. Only the read loop starts work, so an idle
// backlog stays idle until the read loop pushes.
func (b *backlog) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.running
}

// push queues job after the others, or reports false when maxBacklog jobs are waiting.
func (b *backlog) push(job func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.jobs) >= maxBacklog {
		return false
	}
	b.jobs = append(b.jobs, job)
	if !b.running {
		b.running = true
		b.wg.Add(1)
		go b.run()
	}
	return true
}

// run runs the jobs until none is left.
func (b *backlog) run() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		if len(b.jobs) == 0 {
			b.running = false
			b.jobs = nil
			b.mu.Unlock()
			return
		}
		job := b.jobs[0]
		b.jobs[0] = nil
		b.jobs = b.jobs[1:]
		b.mu.Unlock()
		job()
	}
}

// wait returns once every job pushed has run. The read loop calls it when it has stopped
// pushing.
func (b *backlog) wait() { b.wg.Wait() }
