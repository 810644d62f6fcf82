package dispatch

import "time"

// FareLine is one line of a fare breakdown. Lines of a Fare add up to its TotalPaise.
type FareLine struct {
	Code        string `json:"code"`
	Label       string `json:"label"`
	AmountPaise int64  `json:"amount_paise"`
}

// Fare is a price in paise with its breakdown (API.md "Fare").
type Fare struct {
	Currency   string     `json:"currency"`
	TotalPaise int64      `json:"total_paise"`
	Lines      []FareLine `json:"lines"`
}

// Tariff prices hours of a driver's time in one city.
type Tariff struct {
	City string `json:"city"`
	// BaseHours is the minimum billed; BasePaise covers them.
	BaseHours      int   `json:"base_hours"`
	BasePaise      int64 `json:"base_paise"`
	ExtraHourPaise int64 `json:"extra_hour_paise"`
	ConvenienceFee int64 `json:"convenience_fee_paise"`
	GSTBasisPoints int64 `json:"gst_basis_points"`
}

// Estimate is the fare quoted at booking time for hours starting at start.
func (t Tariff) Estimate(start time.Time, hours int, surge float64) Fare {
	return t.Final(start, start.Add(time.Duration(hours)*time.Hour), hours, surge)
}

// Final is the fare for a trip that ran from start to end on a booking of bookedHours.
func (t Tariff) Final(start, end time.Time, bookedHours int, surge float64) Fare {
	var lines []FareLine
	lines = append(lines, FareLine{"base", "Base fare", t.BasePaise})
	if bookedHours > t.BaseHours {
		lines = append(lines, FareLine{"extra_hours", "Extra hours", int64(bookedHours-t.BaseHours) * t.ExtraHourPaise})
	}
	lines = append(lines, FareLine{"convenience_fee", "Convenience fee", t.ConvenienceFee})
	var sub int64
	for _, l := range lines {
		sub += l.AmountPaise
	}
	gst := (sub*t.GSTBasisPoints + 5000) / 10000
	lines = append(lines, FareLine{"gst", "GST", gst})
	return Fare{Currency: "INR", TotalPaise: sub + gst, Lines: lines}
}

// DefaultTariff is the tariff used when no configuration names the city.
func DefaultTariff() Tariff {
	return Tariff{City: "bengaluru", BaseHours: 2, BasePaise: 39900, ExtraHourPaise: 14900, ConvenienceFee: 4900, GSTBasisPoints: 1800}
}
