//go:build !prod

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/drivers4me/dispatch/api"
)

// devCustomer is the customer whose token make run prints (cmd/dispatchd/run-dev.sh).
const devCustomer = "dev-customer"

// devCustomerOTP is, in development only (the simulated fleet), what the printed customer would
// tell the simulated driver at the car: the OTP its own view of the booking shows, read as that
// customer through the API (base is http://host:port). Any other customer's booking answers
// 404 to it, so the fleet learns no OTP it was not told.
func devCustomerOTP(base string, secret []byte) func(ctx context.Context, bookingID string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context, bookingID string) (string, error) {
		tok, err := api.Sign(secret, "customer", devCustomer, time.Minute, "", "")
		if err != nil {
			return "", err
		}
		req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/bookings/"+url.PathEscape(bookingID), nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		var b struct {
			Status string `json:"status"`
			OTP    string `json:"otp"`
		}
		if res.StatusCode != http.StatusOK {
			return "", fmt.Errorf("booking %s is not %s's (%d)", bookingID, devCustomer, res.StatusCode)
		}
		if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
			return "", err
		}
		if b.OTP == "" {
			return "", fmt.Errorf("booking %s shows %s no OTP (status %s)", bookingID, devCustomer, b.Status)
		}
		return b.OTP, nil
	}
}
