package realtime

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// parsePoint reads the data of a `location` frame without reflection: the frame every driver
// sends several times a second is the gateway's hottest path. It handles the object the apps
// send (number fields; unknown number fields skipped) and reports false for anything else
// (strings, nulls, nesting, escapes, a fractional ts, bad syntax), which the caller then hands
// to encoding/json, so the answer is always encoding/json's.
func parsePoint(b []byte) (dispatch.Point, bool) {
	var p dispatch.Point
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return p, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return p, skipSpace(b, i+1) == len(b)
	}
	for {
		// "key"
		if i >= len(b) || b[i] != '"' {
			return p, false
		}
		k := i + 1
		for k < len(b) && b[k] != '"' {
			if b[k] == '\\' || b[k] < 0x20 {
				return p, false
			}
			k++
		}
		if k >= len(b) {
			return p, false
		}
		key := b[i+1 : k]
		i = skipSpace(b, k+1)
		if i >= len(b) || b[i] != ':' {
			return p, false
		}
		i = skipSpace(b, i+1)
		// number
		j, integer := scanNumber(b, i)
		if j == i {
			return p, false
		}
		num := b[i:j]
		switch string(key) {
		case "ts":
			if !integer {
				return p, false // encoding/json refuses it for an int64: let it say so
			}
			v, err := strconv.ParseInt(string(num), 10, 64)
			if err != nil {
				return p, false
			}
			p.TS = v
		case "lat", "lng", "acc", "heading", "speed":
			v, err := strconv.ParseFloat(string(num), 64)
			if err != nil {
				return p, false
			}
			switch string(key) {
			case "lat":
				p.Lat = v
			case "lng":
				p.Lng = v
			case "acc":
				p.Acc = v
			case "heading":
				p.Heading = v
			case "speed":
				p.Speed = v
			}
		default:
			// An unknown field: ignored, as encoding/json would (its number is valid JSON).
			if isPointField(key) {
				return p, false // a case variant encoding/json would match ("LAT")
			}
		}
		i = skipSpace(b, j)
		if i >= len(b) {
			return p, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return p, skipSpace(b, i+1) == len(b)
		default:
			return p, false
		}
	}
}

// fastLocation reads a whole `location` frame, {"type":"location","seq":N,"data":{...}} with
// its keys in any order, without reflection; false for anything else (another type, an escape,
// an unknown or repeated key, data parsePoint does not take), which the caller then hands to
// encoding/json. The envelope it returns has no Data: its point is already read.
func fastLocation(b []byte) (Envelope, bool) {
	var env Envelope
	var p dispatch.Point
	var haveType, haveSeq, haveData bool
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return env, false
	}
	i = skipSpace(b, i+1)
	for {
		key, j, ok := rawString(b, i)
		if !ok {
			return env, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return env, false
		}
		i = skipSpace(b, i+1)
		switch string(key) {
		case "type":
			v, j, ok := rawString(b, i)
			if haveType || !ok || string(v) != "location" {
				return env, false
			}
			haveType, i = true, j
		case "seq":
			j, integer := scanNumber(b, i)
			if haveSeq || j == i || !integer {
				return env, false
			}
			v, err := strconv.ParseInt(string(b[i:j]), 10, 64)
			if err != nil {
				return env, false
			}
			env.Seq, haveSeq, i = &v, true, j
		case "data":
			// parsePoint takes numbers only, so the first '}' ends the object it can take.
			if haveData || i >= len(b) || b[i] != '{' {
				return env, false
			}
			j := i + 1
			for j < len(b) && b[j] != '}' {
				j++
			}
			if j >= len(b) {
				return env, false
			}
			if p, ok = parsePoint(b[i : j+1]); !ok {
				return env, false
			}
			haveData, i = true, j+1
		default:
			return env, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return env, false
		}
		if b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if b[i] != '}' || skipSpace(b, i+1) != len(b) || !haveType || !haveData {
			return env, false
		}
		env.Type, env.point, env.parsed = "location", p, true
		return env, true
	}
}

// rawString reads a JSON string without escapes at b[i]: its bytes and the index after it.
func rawString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	k := i + 1
	for k < len(b) && b[k] != '"' {
		if b[k] == '\\' || b[k] < 0x20 {
			return nil, i, false
		}
		k++
	}
	if k >= len(b) {
		return nil, i, false
	}
	return b[i+1 : k], k + 1, true
}

// isPointField reports whether key matches a field of dispatch.Point case-insensitively.
func isPointField(key []byte) bool {
	if len(key) > 7 {
		return false
	}
	var low [7]byte
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	switch string(low[:len(key)]) {
	case "lat", "lng", "acc", "heading", "speed", "ts":
		return true
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanNumber returns the end of the JSON number starting at i (i itself when there is none)
// and whether it is an integer.
func scanNumber(b []byte, i int) (int, bool) {
	start := i
	integer := true
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return start, false
	}
	if i < len(b) && b[i] == '.' {
		integer = false
		i++
		d := i
		if i = skipDigits(b, i); i == d {
			return start, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		integer = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		if i = skipDigits(b, i); i == d {
			return start, false
		}
	}
	return i, integer
}

// skipDigits returns the index of the first byte at or after i that is not an ASCII digit.
func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// appendViews appends views as the JSON array encoding/json makes of them, without reflection
// (every driver update a dispatcher's socket is sent, viewer.pull). It falls back to
// encoding/json for what its fast path does not cover.
func appendViews(b []byte, views []dispatch.DriverView) []byte {
	b = append(b, '[')
	for i := range views {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendView(b, &views[i])
	}
	return append(b, ']')
}

func appendView(b []byte, v *dispatch.DriverView) []byte {
	if v.Name != "" || v.DistanceM != nil || v.Rating != nil || !plainString(v.ID) || !plainString(string(v.State)) ||
		!plainFloat(v.Lat) || !plainFloat(v.Lng) || !plainFloat(v.Heading) || v.UpdatedAt.Year() < 1000 || v.UpdatedAt.Year() > 9999 {
		j, _ := json.Marshal(v)
		return append(b, j...)
	}
	b = append(b, `{"id":"`...)
	b = append(b, v.ID...)
	b = append(b, `","lat":`...)
	b = strconv.AppendFloat(b, v.Lat, 'f', -1, 64)
	b = append(b, `,"lng":`...)
	b = strconv.AppendFloat(b, v.Lng, 'f', -1, 64)
	b = append(b, `,"heading":`...)
	b = strconv.AppendFloat(b, v.Heading, 'f', -1, 64)
	b = append(b, `,"state":"`...)
	b = append(b, v.State...)
	b = append(b, `","updated_at":"`...)
	b = v.UpdatedAt.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// plainString: no byte encoding/json would escape.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// plainFloat: encoding/json writes it as strconv's shortest 'f' format.
func plainFloat(f float64) bool {
	a := math.Abs(f)
	return a == 0 || (a >= 1e-6 && a < 1e21)
}
