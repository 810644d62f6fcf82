package realtime

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sockets   *prometheus.GaugeVec
	received  prometheus.Counter
	rejected  *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	dupEvents prometheus.Counter
	outside   prometheus.Counter
	gone      prometheus.Counter
	// viewUpdates are driver updates sent to dispatchers; viewCoalesced those replaced by a newer
	// point of the same driver before they left (what coalescing saved).
	viewUpdates   prometheus.Counter
	viewCoalesced prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		sockets:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dispatch_sockets", Help: "Open WebSockets by role."}, []string{"role"}),
		received:  prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_locations_received_total", Help: "Location points read from driver sockets."}),
		rejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dispatch_locations_rejected_total", Help: "Location points refused, by reason."}, []string{"reason"}),
		dropped:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dispatch_frames_dropped_total", Help: "Outgoing frames dropped or sockets closed for backpressure, by kind."}, []string{"kind"}),
		dupEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_duplicate_events_total", Help: "Booking events dropped as duplicates."}),
		outside:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_view_frames_outside_area_total", Help: "Driver updates sent to a dispatcher about a driver outside its area (must stay 0)."}),
		gone:      prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_drivers_gone_total", Help: "Drivers whose socket closed and did not come back within the grace."}),

		// what the live maps were sent, and what coalescing saved them
		viewUpdates:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_view_updates_total", Help: "Driver updates sent to dispatchers' sockets."}),
		viewCoalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_view_updates_coalesced_total", Help: "Driver updates for dispatchers replaced by a newer point before they left."}),
	}
	if reg != nil {
		reg.MustRegister(m.sockets, m.received, m.rejected, m.dropped, m.dupEvents, m.outside, m.gone, m.viewUpdates, m.viewCoalesced)
	}
	return m
}
