package dispatch

import "time"

// ImportedCustomer is a customer carried over from the system dispatch replaces (a customer is
// otherwise created by their first booking). Only the id and when they joined are kept.
type ImportedCustomer struct {
	ID        string
	CreatedAt time.Time
}

// ImportedDriver is a driver's profile carried over from the old system, with when they joined.
type ImportedDriver struct {
	Profile   DriverProfile
	CreatedAt time.Time
}
