package dispatch

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMayGoOnline(t *testing.T) {
	// 18:30 UTC on 31 March is already 1 April in India.
	now := time.Date(2027, 3, 31, 18, 30, 0, 0, time.UTC)
	ok := DriverProfile{ID: "d1", Verified: true, LicenceExpires: "2027-04-01"}
	for _, tc := range []struct {
		name string
		edit func(*DriverProfile)
		want string // "" : may go online
	}{
		{"verified, licence valid through today", func(*DriverProfile) {}, ""},
		{"not verified", func(d *DriverProfile) { d.Verified = false }, "not verified"},
		{"suspended", func(d *DriverProfile) { d.Suspended = true }, "suspended"},
		{"licence expired yesterday in India", func(d *DriverProfile) { d.LicenceExpires = "2027-03-31" }, "licence expired on 2027-03-31"},
		{"no licence expiry", func(d *DriverProfile) { d.LicenceExpires = "" }, "no valid licence expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := ok
			tc.edit(&d)
			err := d.MayGoOnline(now)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != "" && (!errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want ErrForbidden saying %q", err, tc.want)
			}
		})
	}
}

func TestDriverProfileValidate(t *testing.T) {
	good := DriverProfile{ID: "drv-1", Name: "Lakshmi Rao", Phone: "+919845012345", LicenceNo: "KA01 20190012345",
		LicenceExpires: "2030-01-31", Transmissions: []Transmission{Manual, Automatic}, Cities: []string{"bengaluru"}}
	for _, tc := range []struct {
		name  string
		edit  func(*DriverProfile)
		field string // "" : valid
	}{
		{"valid", func(*DriverProfile) {}, ""},
		{"no id", func(d *DriverProfile) { d.ID = "" }, "id"},
		{"blank name", func(d *DriverProfile) { d.Name = "  " }, "name"},
		{"short phone", func(d *DriverProfile) { d.Phone = "12345" }, "phone"},
		{"lower-case licence", func(d *DriverProfile) { d.LicenceNo = "ka01x" }, "licence_no"},
		{"licence date", func(d *DriverProfile) { d.LicenceExpires = "31/01/2030" }, "licence_expires"},
		{"no transmissions", func(d *DriverProfile) { d.Transmissions = nil }, "transmissions"},
		{"unknown transmission", func(d *DriverProfile) { d.Transmissions = []Transmission{"cvt"} }, "transmissions"},
		{"twice manual", func(d *DriverProfile) { d.Transmissions = []Transmission{Manual, Manual} }, "transmissions"},
		{"no cities", func(d *DriverProfile) { d.Cities = nil }, "cities"},
		{"city in capitals", func(d *DriverProfile) { d.Cities = []string{"Pune"} }, "cities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			tc.edit(&d)
			err := d.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.field != "" && (!errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.field)):
				t.Errorf("got %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}
