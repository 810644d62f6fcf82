package api

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/ledongthuc/pdf"
)

// pdfText reads a PDF's text back with a PDF reader (the content streams are compressed: this
// is parsing, not searching the bytes).
func pdfText(t *testing.T, b []byte) string {
	t.Helper()
	r, err := pdf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("not a PDF a reader can open: %v", err)
	}
	var out strings.Builder
	for i := 1; i <= r.NumPage(); i++ {
		rows, err := r.Page(i).GetTextByRow()
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		for _, row := range rows {
			for _, w := range row.Content {
				out.WriteString(w.S)
			}
			out.WriteString("\n")
		}
	}
	return out.String()
}

func TestReceiptPDF(t *testing.T) {
	// Bengaluru, 4 h by day: base 39900, extra 2 × 14900 = 29800, fee 4900, subtotal 74600,
	// GST 13428, total 88028.
	fare := dispatch.DefaultTariff().Estimate(time.Date(2026, 7, 10, 10, 0, 0, 0, time.FixedZone("IST", 19800)), 4, 1)
	rc := dispatch.Receipt{BookingID: "bk_42", City: "bengaluru", CityName: "Bengaluru", CustomerID: "cu_7",
		IssuedAt: time.Date(2026, 7, 10, 9, 0, 0, 0, time.UTC), Fare: fare, GSTIN: "29AAAAA0000A1Z5", InvoiceNo: "BLR/2627/000042"}
	b, err := ReceiptPDF(rc)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("BLR/2627/000042")) {
		t.Errorf("the invoice number is in the file as plain bytes: want compressed content streams, so the test reads a parsed PDF")
	}
	text := pdfText(t, b)
	for _, want := range []string{
		"Tax invoice", "BLR/2627/000042", "bk_42", "Bengaluru", "cu_7", "29AAAAA0000A1Z5", "10 Jul 2026 14:30 IST",
		"Base fare (first 2 h)", "Rs. 399.00", "Extra hours (2 h × Rs. 149)", "Rs. 298.00", "Convenience fee", "Rs. 49.00",
		"GST 18%", "Rs. 134.28", "Total", "Rs. 880.28",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("PDF text lacks %q; got:\n%s", want, text)
		}
	}
}

func TestMoney(t *testing.T) {
	for p, want := range map[int64]string{
		0: "Rs. 0.00", 5: "Rs. 0.05", 88028: "Rs. 880.28", 123456: "Rs. 1,234.56",
		12345678: "Rs. 1,23,456.78", 1234567890: "Rs. 1,23,45,678.90", -150: "-Rs. 1.50",
	} {
		if got := money(p); got != want {
			t.Errorf("money(%d): got %q, want %q", p, got, want)
		}
	}
}
