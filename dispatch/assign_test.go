package dispatch

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// bruteAssign enumerates every matching and returns the best (count, cost): most rows matched,
// then cheapest. Duplicate edges count at their cheapest, +Inf edges not at all.
func bruteAssign(rows, cols int, edges []Edge) (count int, cost float64) {
	w := denseCosts(rows, cols, edges)
	used := make([]bool, cols)
	bestN, bestC := 0, 0.0
	var walk func(r, n int, c float64)
	walk = func(r, n int, c float64) {
		if r == rows {
			if n > bestN || (n == bestN && c < bestC) {
				bestN, bestC = n, c
			}
			return
		}
		walk(r+1, n, c)
		for col := 0; col < cols; col++ {
			if x := w[r][col]; !used[col] && !math.IsInf(x, 1) {
				used[col] = true
				walk(r+1, n+1, c+x)
				used[col] = false
			}
		}
	}
	walk(0, 0, 0)
	return bestN, bestC
}

// denseCosts is the dense cost matrix, +Inf where there is no edge.
func denseCosts(rows, cols int, edges []Edge) [][]float64 {
	w := make([][]float64, rows)
	for r := range w {
		w[r] = make([]float64, cols)
		for c := range w[r] {
			w[r][c] = math.Inf(1)
		}
	}
	for _, e := range edges {
		w[e.Row][e.Col] = min(w[e.Row][e.Col], e.Cost)
	}
	return w
}

// scoreAssign checks that got is a valid assignment over edges and returns its count and cost.
func scoreAssign(t testing.TB, rows, cols int, edges []Edge, got []int) (count int, cost float64) {
	t.Helper()
	if len(got) != rows {
		t.Fatalf("got %d rows in the result, want %d", len(got), rows)
	}
	w := denseCosts(rows, cols, edges)
	used := make([]bool, cols)
	for r, c := range got {
		if c == -1 {
			continue
		}
		if c < 0 || c >= cols {
			t.Fatalf("row %d got column %d, want -1 or 0..%d", r, c, cols-1)
		}
		if used[c] {
			t.Fatalf("column %d given twice", c)
		}
		used[c] = true
		if math.IsInf(w[r][c], 1) {
			t.Fatalf("row %d got column %d, which is not an edge", r, c)
		}
		count++
		cost += w[r][c]
	}
	return count, cost
}

// randomAssignCase draws a small problem: some pairs missing, some duplicated, costs either small
// integers (many ties) or reals, optionally negative.
func randomAssignCase(rng *rand.Rand, maxSide int) (rows, cols int, edges []Edge) {
	rows, cols = rng.IntN(maxSide+1), rng.IntN(maxSide+1)
	density := rng.Float64()
	ints := rng.IntN(2) == 0
	neg := rng.IntN(4) == 0
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			for k := 0; k < 1+rng.IntN(2); k++ { // sometimes a duplicate
				if rng.Float64() >= density {
					continue
				}
				cost := rng.Float64() * 100
				if ints {
					cost = float64(rng.IntN(10))
				}
				if neg {
					cost -= 50
				}
				edges = append(edges, Edge{r, c, cost})
			}
		}
	}
	rng.Shuffle(len(edges), func(i, j int) { edges[i], edges[j] = edges[j], edges[i] })
	return rows, cols, edges
}

func TestAssignMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 600; i++ {
		rows, cols, edges := randomAssignCase(rng, 7)
		t.Run(fmt.Sprintf("%03d_%dx%d_%dedges", i, rows, cols, len(edges)), func(t *testing.T) {
			wantN, wantC := bruteAssign(rows, cols, edges)
			gotN, gotC := scoreAssign(t, rows, cols, edges, Assign(rows, cols, edges))
			if gotN != wantN || math.Abs(gotC-wantC) > 1e-9 {
				t.Fatalf("Assign: got %d rows for %v, want %d for %v", gotN, gotC, wantN, wantC)
			}
			gN, gC := scoreAssign(t, rows, cols, edges, AssignGreedy(rows, cols, edges))
			if gN > wantN {
				t.Fatalf("AssignGreedy: got %d rows, more than the maximum %d", gN, wantN)
			}
			if gN == wantN && gC < wantC-1e-9 {
				t.Fatalf("AssignGreedy: got cost %v at %d rows, cheaper than the optimum %v", gC, gN, wantC)
			}
		})
	}
}

// TestAssignCardinalityFirst: one column, a dear row first and a cheap one second. Growing the
// matching row by row would keep the dear one.
func TestAssignCardinalityFirst(t *testing.T) {
	tests := []struct {
		name       string
		rows, cols int
		edges      []Edge
		want       []int
	}{
		{"cheap row wins the only column", 2, 1, []Edge{{0, 0, 10}, {1, 0, 1}}, []int{-1, 0}},
		// Cheapest-first would give row 0 column 0 and leave row 1 with nothing.
		{"two matched beat one cheap", 2, 2, []Edge{{0, 0, 1}, {0, 1, 100}, {1, 0, 2}}, []int{1, 0}},
		{"pays more to match more", 3, 2, []Edge{{0, 0, 1}, {1, 0, 2}, {1, 1, 1000}, {2, 1, 5}},
			[]int{0, -1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assign(tt.rows, tt.cols, tt.edges)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAssignEdgeCases(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name       string
		rows, cols int
		edges      []Edge
		want       []int
	}{
		{"no rows", 0, 3, nil, []int{}},
		{"no cols", 3, 0, nil, []int{-1, -1, -1}},
		{"nothing", 0, 0, nil, []int{}},
		{"no edges", 2, 2, nil, []int{-1, -1}},
		{"row without edges", 3, 3, []Edge{{0, 0, 1}, {2, 2, 1}}, []int{0, -1, 2}},
		// The second (0,0) edge is cheaper, so swapping is cheaper than keeping 0-1 / 1-0.
		{"duplicate keeps cheapest", 2, 2, []Edge{{0, 0, 9}, {0, 1, 5}, {1, 0, 5}, {1, 1, 8}, {0, 0, 1}, {0, 0, 50}},
			[]int{0, 1}},
		{"negative costs", 2, 2, []Edge{{0, 0, -5}, {0, 1, -1}, {1, 0, -10}, {1, 1, 3}}, []int{1, 0}},
		{"+Inf is no edge", 1, 2, []Edge{{0, 0, inf}}, []int{-1}},
		{"more rows than cols", 3, 1, []Edge{{0, 0, 3}, {1, 0, 2}, {2, 0, 4}}, []int{-1, 0, -1}},
		{"more cols than rows", 1, 3, []Edge{{0, 0, 3}, {0, 1, 2}, {0, 2, 4}}, []int{1}},
		{"zero costs", 2, 2, []Edge{{0, 0, 0}, {0, 1, 0}, {1, 0, 0}}, []int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assign(tt.rows, tt.cols, tt.edges)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAssignPanicsOnBadInput(t *testing.T) {
	tests := []struct {
		name  string
		edges []Edge
	}{
		{"row out of range", []Edge{{2, 0, 1}}},
		{"negative col", []Edge{{0, -1, 1}}},
		{"NaN cost", []Edge{{0, 0, math.NaN()}}},
		{"-Inf cost", []Edge{{0, 0, math.Inf(-1)}}},
	}
	for _, tt := range tests {
		for _, f := range []struct {
			name string
			fn   func(int, int, []Edge) []int
		}{{"Assign", Assign}, {"AssignGreedy", AssignGreedy}} {
			t.Run(tt.name+"/"+f.name, func(t *testing.T) {
				defer func() {
					if recover() == nil {
						t.Fatalf("got no panic, want one")
					}
				}()
				f.fn(2, 2, tt.edges)
			})
		}
	}
}

func TestAssignGreedyCheapestFirst(t *testing.T) {
	// Cheapest first takes (0,0)=1 and then (1,1)=10; the optimum is 2+2.
	edges := []Edge{{0, 0, 1}, {0, 1, 2}, {1, 0, 2}, {1, 1, 10}}
	if got, want := fmt.Sprint(AssignGreedy(2, 2, edges)), "[0 1]"; got != want {
		t.Fatalf("AssignGreedy: got %v, want %v", got, want)
	}
	if got, want := fmt.Sprint(Assign(2, 2, edges)), "[1 0]"; got != want {
		t.Fatalf("Assign: got %v, want %v", got, want)
	}
}

// referenceAssign is an independent oracle for windows too big for brute force: min-cost flow
// by successive shortest paths with Bellman-Ford on the explicit network (no potentials, no
// heaps), source -> rows -> columns -> sink, all capacities 1. Each augmentation along a
// shortest path keeps the flow the cheapest of its size, so the last one is the answer.
func referenceAssign(rows, cols int, edges []Edge) (count int, cost float64) {
	type arc struct {
		to, rev int
		cap     int
		cost    float64
	}
	n := rows + cols + 2
	src, sink := rows+cols, rows+cols+1
	adj := make([][]arc, n)
	add := func(u, v int, c float64) {
		adj[u] = append(adj[u], arc{v, len(adj[v]), 1, c})
		adj[v] = append(adj[v], arc{u, len(adj[u]) - 1, 0, -c})
	}
	w := denseCosts(rows, cols, edges)
	for r := 0; r < rows; r++ {
		add(src, r, 0)
		for c := 0; c < cols; c++ {
			if !math.IsInf(w[r][c], 1) {
				add(r, rows+c, w[r][c])
			}
		}
	}
	for c := 0; c < cols; c++ {
		add(rows+c, sink, 0)
	}
	for {
		dist := make([]float64, n)
		for i := range dist {
			dist[i] = math.Inf(1)
		}
		prevNode, prevArc := make([]int, n), make([]int, n)
		dist[src] = 0
		for changed, i := true, 0; changed && i < n; i++ {
			changed = false
			for u := range adj {
				if math.IsInf(dist[u], 1) {
					continue
				}
				for k, a := range adj[u] {
					if a.cap > 0 && dist[u]+a.cost < dist[a.to]-1e-12 {
						dist[a.to], prevNode[a.to], prevArc[a.to] = dist[u]+a.cost, u, k
						changed = true
					}
				}
			}
		}
		if math.IsInf(dist[sink], 1) {
			return count, cost
		}
		for v := sink; v != src; v = prevNode[v] {
			a := &adj[prevNode[v]][prevArc[v]]
			a.cap--
			adj[v][a.rev].cap++
		}
		count++
		cost += dist[sink]
	}
}

func TestAssignMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 120; i++ {
		rows, cols := 1+rng.IntN(60), 1+rng.IntN(60)
		var edges []Edge
		if i%2 == 0 {
			_, _, edges = windowCase(uint64(i), rows, cols, 1, min(cols, 8))
		} else {
			p := 1 + rng.IntN(6) // edges a row, on average
			for r := 0; r < rows; r++ {
				for c := 0; c < cols; c++ {
					if rng.IntN(cols) < p {
						edges = append(edges, Edge{r, c, float64(rng.IntN(20)) - 5})
					}
				}
			}
		}
		t.Run(fmt.Sprintf("%03d_%dx%d_%dedges", i, rows, cols, len(edges)), func(t *testing.T) {
			wantN, wantC := referenceAssign(rows, cols, edges)
			gotN, gotC := scoreAssign(t, rows, cols, edges, Assign(rows, cols, edges))
			if gotN != wantN || math.Abs(gotC-wantC) > 1e-6 {
				t.Fatalf("got %d rows for %v, want %d for %v", gotN, gotC, wantN, wantC)
			}
		})
	}
}

// TestAssignLargeAgainstGreedy checks validity and that the optimum is never beaten by greedy
// on windows too big for brute force.
func TestAssignLargeAgainstGreedy(t *testing.T) {
	for _, size := range [][2]int{{50, 100}, {200, 400}, {300, 300}, {400, 200}} {
		rows, cols, edges := windowCase(uint64(size[0]), size[0], size[1], 10, 20)
		t.Run(fmt.Sprintf("%dx%d", rows, cols), func(t *testing.T) {
			n, c := scoreAssign(t, rows, cols, edges, Assign(rows, cols, edges))
			gn, gc := scoreAssign(t, rows, cols, edges, AssignGreedy(rows, cols, edges))
			if gn > n || (gn == n && gc < c-1e-6) {
				t.Fatalf("greedy got %d rows for %v, optimum %d for %v", gn, gc, n, c)
			}
		})
	}
}

// FuzzAssign decodes a small problem from bytes: rows, cols, then 3 bytes an edge
// (row, col, cost), and compares Assign with brute force.
func FuzzAssign(f *testing.F) {
	f.Add([]byte{2, 2, 0, 0, 1, 0, 1, 2, 1, 0, 2, 1, 1, 10})
	f.Add([]byte{3, 1, 0, 0, 3, 1, 0, 2, 2, 0, 4})
	f.Add([]byte{7, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18})
	f.Add(binary.LittleEndian.AppendUint64([]byte{5, 6}, 0xdeadbeefcafef00d))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		rows, cols := int(data[0]%8), int(data[1]%8)
		var edges []Edge
		for p := 2; p+3 <= len(data) && rows > 0 && cols > 0; p += 3 {
			edges = append(edges, Edge{int(data[p]) % rows, int(data[p+1]) % cols, float64(int8(data[p+2])) / 4})
		}
		wantN, wantC := bruteAssign(rows, cols, edges)
		gotN, gotC := scoreAssign(t, rows, cols, edges, Assign(rows, cols, edges))
		if gotN != wantN || math.Abs(gotC-wantC) > 1e-9 {
			t.Fatalf("Assign(%d, %d, %v): got %d rows for %v, want %d for %v", rows, cols, edges, gotN, gotC, wantN, wantC)
		}
		gN, gC := scoreAssign(t, rows, cols, edges, AssignGreedy(rows, cols, edges))
		if gN > wantN || (gN == wantN && gC < wantC-1e-9) {
			t.Fatalf("AssignGreedy: got %d rows for %v, optimum %d for %v", gN, gC, wantN, wantC)
		}
	})
}

// windowCase is a matching window shaped like the city: rows and cols are points in a unit
// square, each row has lo..hi candidate edges to its nearest columns, cost = distance.
func windowCase(seed uint64, rows, cols, lo, hi int) (int, int, []Edge) {
	rng := rand.New(rand.NewPCG(seed, 7))
	type pt struct{ x, y float64 }
	cp := make([]pt, cols)
	for i := range cp {
		cp[i] = pt{rng.Float64(), rng.Float64()}
	}
	edges := make([]Edge, 0, rows*hi)
	d := make([]float64, cols)
	idx := make([]int, cols)
	for r := 0; r < rows; r++ {
		p := pt{rng.Float64(), rng.Float64()}
		for c := range cp {
			d[c] = math.Hypot(cp[c].x-p.x, cp[c].y-p.y)
			idx[c] = c
		}
		k := min(cols, lo+rng.IntN(hi-lo+1))
		// Partial selection sort: the k nearest columns.
		for i := 0; i < k; i++ {
			m := i
			for j := i + 1; j < cols; j++ {
				if d[idx[j]] < d[idx[m]] {
					m = j
				}
			}
			idx[i], idx[m] = idx[m], idx[i]
			edges = append(edges, Edge{r, idx[i], d[idx[i]] * 10000})
		}
	}
	return rows, cols, edges
}

func BenchmarkAssign(b *testing.B) {
	// 500x600 is the tight end of the product's range: 1.2 drivers per booking.
	for _, size := range [][2]int{{50, 100}, {200, 400}, {500, 2000}, {500, 600}} {
		rows, cols, edges := windowCase(1, size[0], size[1], 10, 20)
		b.Run(fmt.Sprintf("%dx%d", rows, cols), func(b *testing.B) {
			for b.Loop() {
				Assign(rows, cols, edges)
			}
		})
		b.Run(fmt.Sprintf("greedy/%dx%d", rows, cols), func(b *testing.B) {
			for b.Loop() {
				AssignGreedy(rows, cols, edges)
			}
		})
	}
}
