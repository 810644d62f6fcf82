package api

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"time"

	"codeberg.org/go-pdf/fpdf"
	"github.com/drivers4me/dispatch/dispatch"
)

// quoteAnswer is POST /v1/quotes: {fare, city, surge} and, where quotes are kept, the
// quote_id a booking may name until expires_at.
func quoteAnswer(q dispatch.Quote) any {
	return struct {
		Fare      dispatch.Fare `json:"fare"`
		City      string        `json:"city"`
		Surge     float64       `json:"surge"`
		QuoteID   string        `json:"quote_id,omitempty"`
		ExpiresAt time.Time     `json:"expires_at,omitzero"`
	}{q.Fare, q.City, q.Surge, q.ID, q.ExpiresAt}
}

func (s *Server) cities(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	writeJSON(w, 200, map[string]any{"cities": s.svc.Cities()})
}

// receipt answers JSON, or a PDF to a client that asks for one (Accept: application/pdf).
func (s *Server) receipt(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	rc, err := s.svc.Receipt(r.Context(), a, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), "application/pdf") {
		writeJSON(w, 200, rc)
		return
	}
	body, err := ReceiptPDF(rc)
	if err != nil {
		s.log.Error().Err(err).Str("booking", rc.BookingID).Msg("receipt PDF")
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", "receipt-"+rc.BookingID+".pdf"))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(200)
	_, _ = w.Write(body)
}

// ReceiptPDF renders a receipt as a one-page A4 tax invoice. The standard PDF fonts have no ₹
// sign, so amounts read "Rs." there.
func ReceiptPDF(rc dispatch.Receipt) ([]byte, error) {
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.SetTitle("Invoice "+rc.InvoiceNo, true)
	pdf.SetAuthor("Drivers4Me", true)
	pdf.SetCreationDate(rc.IssuedAt)
	pdf.SetModificationDate(rc.IssuedAt)
	tr := pdf.UnicodeTranslatorFromDescriptor("")
	text := func(s string) string { return tr(strings.ReplaceAll(s, "₹", "Rs. ")) }
	pdf.AddPage()
	pdf.SetFont("Helvetica", "B", 18)
	pdf.CellFormat(0, 10, text("Drivers4Me - Tax invoice"), "", 1, "L", false, 0, "")
	pdf.Ln(2)
	pdf.SetFont("Helvetica", "", 11)
	ist := time.FixedZone("IST", 5*3600+1800)
	rows := [][2]string{
		{"Invoice no", rc.InvoiceNo},
		{"Issued", rc.IssuedAt.In(ist).Format("02 Jan 2006 15:04 IST")},
		{"Booking", rc.BookingID},
		{"City", firstNonEmpty(rc.CityName, rc.City)},
		{"Customer", rc.CustomerID},
	}
	if rc.GSTIN != "" {
		rows = append(rows, [2]string{"GSTIN", rc.GSTIN})
	}
	for _, row := range rows {
		pdf.CellFormat(35, 7, text(row[0]), "", 0, "L", false, 0, "")
		pdf.CellFormat(0, 7, text(row[1]), "", 1, "L", false, 0, "")
	}
	pdf.Ln(4)
	pdf.SetFont("Helvetica", "B", 11)
	pdf.CellFormat(140, 8, text("Item"), "B", 0, "L", false, 0, "")
	pdf.CellFormat(0, 8, text("Amount"), "B", 1, "R", false, 0, "")
	pdf.SetFont("Helvetica", "", 11)
	for _, l := range rc.Fare.Lines {
		pdf.CellFormat(140, 7, text(l.Label), "", 0, "L", false, 0, "")
		pdf.CellFormat(0, 7, text(money(l.AmountPaise)), "", 1, "R", false, 0, "")
	}
	pdf.SetFont("Helvetica", "B", 12)
	pdf.CellFormat(140, 9, text("Total"), "T", 0, "L", false, 0, "")
	pdf.CellFormat(0, 9, text(money(rc.Fare.TotalPaise)), "T", 1, "R", false, 0, "")
	pdf.Ln(6)
	pdf.SetFont("Helvetica", "", 9)
	pdf.MultiCell(0, 5, text("Amounts in Indian rupees (INR). GST is charged as the line above says, on the whole of the charges before it."), "", "L", false)
	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, fmt.Errorf("render receipt %s: %w", rc.InvoiceNo, err)
	}
	return buf.Bytes(), nil
}

// money formats paise as "Rs. 1,234.50" (Indian grouping: 1,23,456.00).
func money(p int64) string {
	neg := p < 0
	if neg {
		p = -p
	}
	r := fmt.Sprintf("%d", p/100)
	if len(r) > 3 {
		head, tail := r[:len(r)-3], r[len(r)-3:]
		var parts []string
		for len(head) > 2 {
			parts = append([]string{head[len(head)-2:]}, parts...)
			head = head[:len(head)-2]
		}
		parts = append([]string{head}, parts...)
		r = strings.Join(parts, ",") + "," + tail
	}
	s := fmt.Sprintf("Rs. %s.%02d", r, p%100)
	if neg {
		s = "-" + s
	}
	return s
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}
