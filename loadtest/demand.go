package loadtest

import (
	"fmt"
	"time"
)

// Profile is how many bookings a second customers make at each moment of a run.
type Profile struct {
	// Name is steady, morning or flash.
	Name string
	// Base is the steady rate in bookings a second.
	Base float64
	// Length of the run the shape is laid over.
	Length time.Duration
	// FlashAt and FlashFor place the flash peak (defaults: a third into the run; one minute,
	// or a third of the run when that is shorter).
	FlashAt, FlashFor time.Duration
}

// Profile names.
const (
	Steady  = "steady"  // Base throughout
	Morning = "morning" // up to 3 x Base over the first fifth, held, down over the last fifth
	Flash   = "flash"   // Base, with 10 x Base for one minute
)

// NewProfile checks a profile and fills its defaults.
func NewProfile(name string, base float64, length time.Duration) (Profile, error) {
	p := Profile{Name: name, Base: base, Length: length}
	switch name {
	case Steady, Morning:
	case Flash:
		p.FlashFor = min(time.Minute, length/3)
		p.FlashAt = length / 3
	default:
		return Profile{}, fmt.Errorf("demand profile %q: want steady, morning or flash", name)
	}
	if base < 0 || length <= 0 {
		return Profile{}, fmt.Errorf("demand profile: want a rate >= 0 and a positive length")
	}
	return p, nil
}

// Rate is the bookings a second at elapsed time t.
func (p Profile) Rate(t time.Duration) float64 {
	switch p.Name {
	case Morning:
		ramp := p.Length / 5
		switch {
		case ramp <= 0:
			return 3 * p.Base
		case t < ramp:
			return p.Base * (1 + 2*float64(t)/float64(ramp))
		case t > p.Length-ramp:
			return p.Base * (1 + 2*max(0, float64(p.Length-t))/float64(ramp))
		}
		return 3 * p.Base
	case Flash:
		if t >= p.FlashAt && t < p.FlashAt+p.FlashFor {
			return 10 * p.Base
		}
	}
	return p.Base
}

// Expected is the number of bookings the profile asks for over its length.
func (p Profile) Expected() float64 {
	var n float64
	const step = 100 * time.Millisecond
	for t := time.Duration(0); t < p.Length; t += step {
		n += p.Rate(t) * step.Seconds()
	}
	return n
}

// Peak is the highest rate of the profile.
func (p Profile) Peak() float64 {
	switch p.Name {
	case Morning:
		return 3 * p.Base
	case Flash:
		return 10 * p.Base
	}
	return p.Base
}
