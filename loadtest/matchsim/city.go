package matchsim

import (
	"math"
	"math/rand/v2"
)

// The simulated city: a box around Bengaluru.
const (
	latMin, latMax = 12.85, 13.10
	lngMin, lngMax = 77.45, 77.75
)

// point is a position in degrees.
type point struct{ lat, lng float64 }

// hotspot is a centre of demand. Weights are relative booking volumes: a guess at where
// people who own a car and hire someone to drive it book from (offices, the central
// residential belt, the IT corridors), not measured data.
type hotspot struct {
	name   string
	at     point
	weight float64
	sigmaM float64 // spread of bookings around the centre, metres (per axis)
}

var hotspots = []hotspot{
	{name: "Koramangala", at: point{12.9352, 77.6245}, weight: 3, sigmaM: 1500},
	{name: "Indiranagar", at: point{12.9719, 77.6412}, weight: 2, sigmaM: 1200},
	{name: "MG Road", at: point{12.9756, 77.6050}, weight: 2, sigmaM: 1200},
	{name: "HSR Layout", at: point{12.9116, 77.6474}, weight: 2, sigmaM: 1500},
	{name: "Whitefield", at: point{12.9698, 77.7350}, weight: 2, sigmaM: 2000},
	{name: "Marathahalli", at: point{12.9591, 77.6974}, weight: 1.5, sigmaM: 1500},
	{name: "Electronic City", at: point{12.8620, 77.6650}, weight: 1.5, sigmaM: 1500},
	{name: "Jayanagar", at: point{12.9250, 77.5938}, weight: 1.5, sigmaM: 1500},
	{name: "Hebbal", at: point{13.0358, 77.5970}, weight: 1.5, sigmaM: 2000},
	{name: "Malleshwaram", at: point{13.0035, 77.5710}, weight: 1, sigmaM: 1200},
}

// Where bookings and free drivers come from. Bookings cluster: three in four are near a
// hotspot. Drivers spread wider: they come online from home, most of them in the residential
// outskirts, so only one in three starts near a hotspot and then within a wider radius.
const (
	bookingHotspotShare = 0.75
	driverHotspotShare  = 0.35
	driverSpread        = 3 // driver sigma = driverSpread x the hotspot's booking sigma
)

// sampler draws positions from one seeded stream.
type sampler struct {
	rng   *rand.Rand
	total float64
}

func newSampler(rng *rand.Rand) *sampler {
	s := &sampler{rng: rng}
	for _, h := range hotspots {
		s.total += h.weight
	}
	return s
}

func (s *sampler) booking() point { return s.draw(bookingHotspotShare, 1) }

// driver is a driver becoming free: with probability returning one whose trip just ended at
// its drop point, drawn like a pickup (hourly hires are mostly round trips, and one-way trips
// end at another place people book from), else one coming online from home.
func (s *sampler) driver(returning float64) point {
	if s.rng.Float64() < returning {
		return s.booking()
	}
	return s.draw(driverHotspotShare, driverSpread)
}

// draw picks a hotspot with probability share (then a normal offset of spread x its sigma),
// else a uniform point in the box; points outside the box are drawn again.
func (s *sampler) draw(share, spread float64) point {
	for {
		var p point
		if s.rng.Float64() < share {
			h := s.pick()
			sigma := h.sigmaM * spread
			p = offset(h.at, s.rng.NormFloat64()*sigma, s.rng.NormFloat64()*sigma)
		} else {
			p = point{latMin + s.rng.Float64()*(latMax-latMin), lngMin + s.rng.Float64()*(lngMax-lngMin)}
		}
		if p.lat >= latMin && p.lat <= latMax && p.lng >= lngMin && p.lng <= lngMax {
			return p
		}
	}
}

func (s *sampler) pick() hotspot {
	x := s.rng.Float64() * s.total
	for _, h := range hotspots {
		if x -= h.weight; x < 0 {
			return h
		}
	}
	return hotspots[len(hotspots)-1]
}

const earthRadiusM = 6371008.8

// offset moves p by north and east metres (flat-earth: fine over a city).
func offset(p point, northM, eastM float64) point {
	const degM = earthRadiusM * math.Pi / 180
	return point{p.lat + northM/degM, p.lng + eastM/(degM*math.Cos(p.lat*math.Pi/180))}
}

// distanceM is the haversine distance in metres, the same formula as dispatch.DistanceM. matchsim
// keeps its own copy so that the simulator depends on dispatch alone (geo brings H3 and cgo).
func distanceM(a, b point) float64 {
	const rad = math.Pi / 180
	dLat := (b.lat - a.lat) * rad
	dLng := (b.lng - a.lng) * rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(a.lat*rad)*math.Cos(b.lat*rad)*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * earthRadiusM * math.Asin(math.Min(1, math.Sqrt(h)))
}
