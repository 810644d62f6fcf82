package dispatch

import "testing"

// TestCanMove tries every pair of states (and an unknown one) against the state machine of
// API.md written out here as a grid, apart from the table it checks: a row is the state a
// booking is in, a column the state it would go to, in the order of the header.
func TestCanMove(t *testing.T) {
	header := []Status{StatusScheduled, StatusSearching, StatusAssigned, StatusArrived, StatusInProgress,
		StatusCompleted, StatusCancelled, StatusUnfulfilled, "lost"}
	grid := map[Status]string{
		//                 sch sea ass arr inp com can unf lost
		StatusScheduled:   " .   x   x   .   .   .   x   .   . ", // searching when due; a manual assignment ahead
		StatusSearching:   " .   .   x   .   .   .   x   x   . ", // assigned, or nobody in time
		StatusAssigned:    " .   x   .   x   .   .   x   .   . ", // the driver gives it back, or arrives
		StatusArrived:     " .   x   .   .   x   .   x   .   . ", // the driver gives it back, or starts
		StatusInProgress:  " .   .   .   .   .   x   x   .   . ",
		StatusCompleted:   " .   .   .   .   .   .   .   .   . ",
		StatusCancelled:   " .   .   .   .   .   .   .   .   . ",
		StatusUnfulfilled: " .   x   .   .   .   .   x   .   . ", // retried, or given up
		"lost":            " .   .   .   .   .   .   .   .   . ",
	}
	for _, from := range header {
		row := []rune{}
		for _, r := range grid[from] {
			if r == 'x' || r == '.' {
				row = append(row, r)
			}
		}
		if len(row) != len(header) {
			t.Fatalf("row %s: got %d cells, want %d", from, len(row), len(header))
		}
		for i, to := range header {
			want := row[i] == 'x'
			if got := CanMove(from, to); got != want {
				t.Errorf("CanMove(%s, %s): got %v, want %v", from, to, got, want)
			}
		}
	}
}
