package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Drivers' profiles and calendars, ratings, retries and the audit trail (API.md v1.1).

// driverBody is what POST /v1/drivers takes: a new driver is never verified at once.
type driverBody struct {
	ID             string                  `json:"id"`
	Name           string                  `json:"name"`
	Phone          string                  `json:"phone"`
	LicenceNo      string                  `json:"licence_no"`
	LicenceExpires string                  `json:"licence_expires"`
	Transmissions  []dispatch.Transmission `json:"transmissions"`
	Cities         []string                `json:"cities"`
}

func (s *Server) createDriver(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req driverBody
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	d, err := s.svc.CreateDriver(r.Context(), a, dispatch.DriverProfile{ID: req.ID, Name: req.Name, Phone: req.Phone,
		LicenceNo: req.LicenceNo, LicenceExpires: req.LicenceExpires, Transmissions: req.Transmissions, Cities: req.Cities})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

func (s *Server) patchDriver(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var p dispatch.DriverPatch
	if err := readJSON(r, &p); err != nil {
		writeError(w, err)
		return
	}
	d, err := s.svc.UpdateDriver(r.Context(), a, r.PathValue("id"), p)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, d)
}

func (s *Server) driverProfile(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	d, err := s.svc.DriverProfile(r.Context(), a, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, d)
}

func (s *Server) listDrivers(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	q := r.URL.Query()
	f := dispatch.DriverFilter{City: q.Get("city")}
	if v := q.Get("verified"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, dispatch.Errorf(dispatch.InvalidArgument, "verified must be true or false"))
			return
		}
		f.Verified = &b
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, dispatch.Errorf(dispatch.InvalidArgument, "limit must be 1 to 1000"))
			return
		}
		f.Limit = n
	}
	ds, err := s.svc.Drivers(r.Context(), a, f)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"drivers": ds})
}

func (s *Server) calendar(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	q := r.URL.Query()
	var from, to time.Time
	for _, f := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, dispatch.Errorf(dispatch.InvalidArgument, "%s must be an RFC 3339 time like 2026-01-02T15:04:05+05:30", f.name))
				return
			}
			*f.t = t
		}
	}
	bs, err := s.svc.Calendar(r.Context(), a, r.PathValue("id"), from, to)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"blocks": bs})
}

func (s *Server) rate(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req struct {
		Stars   int    `json:"stars"`
		Comment string `json:"comment"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := s.svc.Rate(r.Context(), a, r.PathValue("id"), req.Stars, req.Comment); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	s.answer(w)(s.svc.Retry(r.Context(), a, r.PathValue("id")))
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	es, err := s.svc.Events(r.Context(), a, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"events": es})
}

// candidates lists the drivers a dispatcher may assign the booking to by hand.
func (s *Server) candidates(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	ds, err := s.svc.AssignCandidates(r.Context(), a, r.PathValue("id"), 15000, 10)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"drivers": ds})
}

// named fills the names and ratings of views from drivers' profiles (best effort: a view
// without a profile, or when the profiles cannot be read, keeps its id only).
func (s *Server) named(r *http.Request, views []dispatch.DriverView) {
	_ = s.svc.NameViews(r.Context(), views)
}
