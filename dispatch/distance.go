package dispatch

import "math"

// EarthRadiusM is the mean Earth radius every distance of the engine is measured with.
const EarthRadiusM = 6371008.8

const radPerDeg = math.Pi / 180

// DistanceM is the great-circle (haversine) distance in metres: the one formula of the engine
// (pickup distances, searches, trips, ETAs).
func DistanceM(lat1, lng1, lat2, lng2 float64) float64 {
	return DistanceCosM(lat1, lng1, math.Cos(lat1*radPerDeg), lat2, lng2, math.Cos(lat2*radPerDeg))
}

// DistanceCosM is DistanceM with the cosines of both latitudes given: a search that measures
// one point against many keeps them.
func DistanceCosM(lat1, lng1, cosLat1, lat2, lng2, cosLat2 float64) float64 {
	dLat, dLng := (lat2-lat1)*radPerDeg, (lng2-lng1)*radPerDeg
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + cosLat1*cosLat2*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * EarthRadiusM * math.Asin(math.Min(1, math.Sqrt(a)))
}
