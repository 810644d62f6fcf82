//go:build failpoints

package store

import (
	"os"
	"syscall"
)

// failpoint kills the process with SIGKILL when DISPATCH_FAILPOINT names this place. Only test
// builds (-tags failpoints) contain it: the crash tests use it to die at an exact point, such as
// between publishing outbox events and marking them published ("relay-after-publish").
func failpoint(name string) {
	if os.Getenv("DISPATCH_FAILPOINT") == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
