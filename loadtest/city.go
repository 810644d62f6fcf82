// Package loadtest simulates the people around the engine: drivers moving through a real Indian
// city on their own sockets, customers booking to a demand profile, dispatchers watching areas;
// Peak runs the peak-hour scenario and Result is its report (JSON, Markdown, PNG charts).
//
// It speaks only the public wire contract (API.md), only ever to loopback addresses
// (CheckLoopback), and every run is bounded in sockets, rate and time and stops by itself. What
// the peak scenario knows of the server comes from the wire, /metrics and, for the invariant,
// the caller's MySQL check; it never drives the engine through its Go packages.
//
// Lock order in a simulated driver: socket.wmu, then socket.pmu, then driverSim.mu.
package loadtest

import (
	"fmt"
	"math"
	"math/rand"

	"github.com/uber/h3-go/v4"
)

// City is a box and the hotspots where drivers and demand gather.
type City struct {
	Name                           string
	MinLat, MinLng, MaxLat, MaxLng float64
	Hotspots                       [][2]float64
}

// Presets of real city bounds.
var (
	Bengaluru = City{Name: "bengaluru", MinLat: 12.85, MinLng: 77.48, MaxLat: 13.10, MaxLng: 77.75,
		Hotspots: [][2]float64{{12.9756, 77.6050}, {12.9352, 77.6245}, {12.9698, 77.7500}, {12.9784, 77.6408}, {13.0358, 77.5970}, {12.9116, 77.6474}}}
	Delhi = City{Name: "delhi", MinLat: 28.45, MinLng: 76.95, MaxLat: 28.80, MaxLng: 77.35,
		Hotspots: [][2]float64{{28.6315, 77.2167}, {28.5562, 77.1000}, {28.5355, 77.2410}, {28.6519, 77.1909}}}
	Mumbai = City{Name: "mumbai", MinLat: 18.89, MinLng: 72.80, MaxLat: 19.27, MaxLng: 72.98,
		Hotspots: [][2]float64{{19.0596, 72.8295}, {18.9220, 72.8347}, {19.1136, 72.8697}, {19.0760, 72.8777}}}
)

// CityByName returns a preset.
func CityByName(name string) (City, bool) {
	for _, c := range []City{Bengaluru, Delhi, Mumbai} {
		if c.Name == name {
			return c, true
		}
	}
	return City{}, false
}

// Point draws a point: near a hotspot with probability hot, else anywhere in the box.
func (c City) Point(r *rand.Rand, hot float64) (lat, lng float64) {
	if len(c.Hotspots) > 0 && r.Float64() < hot {
		h := c.Hotspots[r.Intn(len(c.Hotspots))]
		// About 2.5 km standard deviation around the hotspot.
		lat = h[0] + r.NormFloat64()*0.022
		lng = h[1] + r.NormFloat64()*0.022
		return c.clamp(lat, lng)
	}
	return c.MinLat + r.Float64()*(c.MaxLat-c.MinLat), c.MinLng + r.Float64()*(c.MaxLng-c.MinLng)
}

func (c City) clamp(lat, lng float64) (float64, float64) {
	return math.Max(c.MinLat, math.Min(c.MaxLat, lat)), math.Max(c.MinLng, math.Min(c.MaxLng, lng))
}

// step moves a point by metres along heading (degrees from north) and keeps it in the box,
// turning back at the edges.
func (c City) step(lat, lng, heading, metres float64) (float64, float64, float64) {
	rad := heading * math.Pi / 180
	nlat := lat + metres*math.Cos(rad)/111320
	nlng := lng + metres*math.Sin(rad)/(111320*math.Cos(lat*math.Pi/180))
	if nlat < c.MinLat || nlat > c.MaxLat || nlng < c.MinLng || nlng > c.MaxLng {
		heading = math.Mod(heading+180, 360)
		nlat, nlng = c.clamp(nlat, nlng)
	}
	return nlat, nlng, heading
}

// distanceM is the great-circle distance between two points in metres (h3's haversine: the
// load generator keeps its own books without the server's geo package).
func distanceM(lat1, lng1, lat2, lng2 float64) float64 {
	return h3.GreatCircleDistanceM(h3.LatLng{Lat: lat1, Lng: lng1}, h3.LatLng{Lat: lat2, Lng: lng2})
}

// bearing is the heading from one point to another, in degrees from north.
func bearing(lat1, lng1, lat2, lng2 float64) float64 {
	y := math.Sin((lng2-lng1)*math.Pi/180) * math.Cos(lat2*math.Pi/180)
	x := math.Cos(lat1*math.Pi/180)*math.Sin(lat2*math.Pi/180) -
		math.Sin(lat1*math.Pi/180)*math.Cos(lat2*math.Pi/180)*math.Cos((lng2-lng1)*math.Pi/180)
	return math.Mod(math.Atan2(y, x)*180/math.Pi+360, 360)
}

// nearestHotspot is the hotspot closest to a point (the point itself when there is none).
func (c City) nearestHotspot(lat, lng float64) (float64, float64) {
	best, bl, bg := math.Inf(1), lat, lng
	for _, h := range c.Hotspots {
		if d := math.Hypot(h[0]-lat, (h[1]-lng)*math.Cos(lat*math.Pi/180)); d < best {
			best, bl, bg = d, h[0], h[1]
		}
	}
	return bl, bg
}

// Area is a box a dispatcher watches.
type Area struct {
	Name                           string
	MinLat, MinLng, MaxLat, MaxLng float64
}

// Districts are the areas n dispatchers watch: first a box of about 6 x 6 km around each
// hotspot (where the action is), then the cells of a grid over the whole city, then again.
func (c City) Districts(n int) []Area {
	var all []Area
	const half = 0.027 // about 3 km of latitude
	for i, h := range c.Hotspots {
		dl := half / math.Cos(h[0]*math.Pi/180)
		all = append(all, Area{Name: fmt.Sprintf("hotspot-%d", i), MinLat: h[0] - half, MinLng: h[1] - dl, MaxLat: h[0] + half, MaxLng: h[1] + dl})
	}
	const grid = 3
	dLat, dLng := (c.MaxLat-c.MinLat)/grid, (c.MaxLng-c.MinLng)/grid
	for i := 0; i < grid; i++ {
		for j := 0; j < grid; j++ {
			all = append(all, Area{Name: fmt.Sprintf("grid-%d-%d", i, j), MinLat: c.MinLat + float64(i)*dLat, MinLng: c.MinLng + float64(j)*dLng,
				MaxLat: c.MinLat + float64(i+1)*dLat, MaxLng: c.MinLng + float64(j+1)*dLng})
		}
	}
	out := make([]Area, n)
	for i := range out {
		out[i] = all[i%len(all)]
	}
	return out
}
