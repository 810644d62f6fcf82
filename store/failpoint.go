//go:build !failpoints

package store

// failpoint marks a place where a test build (-tags failpoints) can make the process die; in
// every other build it does nothing.
func failpoint(string) {}
