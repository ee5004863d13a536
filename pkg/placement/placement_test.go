package placement

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
)

const mi = 1 << 20

func TestChoose(t *testing.T) {
	t.Parallel()
	hung := errors.New("hung")
	cases := map[string]struct {
		cands   []Candidate
		request uint64
		chk     Check
		want    int
		refusal bool   // want a Refusal
		errText string // want an error containing this
	}{
		"most free":                 {cands: []Candidate{{Name: "a", Figures: Figures{Free: 10}}, {Name: "b", Figures: Figures{Free: 20}}}, want: 1},
		"tie goes to the first":     {cands: []Candidate{{Name: "a", Figures: Figures{Free: 20}}, {Name: "b", Figures: Figures{Free: 20}}}, want: 0},
		"pending counts":            {cands: []Candidate{{Name: "a", Figures: Figures{Free: 30}, Pending: 15}, {Name: "b", Figures: Figures{Free: 20}}}, want: 1},
		"pending beyond free":       {cands: []Candidate{{Name: "a", Figures: Figures{Free: 10}, Pending: 50}, {Name: "b", Figures: Figures{Free: 10}, Pending: 20}}, want: 1},
		"unanswered skipped":        {cands: []Candidate{{Name: "a", Err: hung}, {Name: "b", Figures: Figures{Free: 1}}}, want: 1},
		"none answered":             {cands: []Candidate{{Name: "a", Err: hung}}, want: -1, errText: `no export can take the claim now: export "a": free space not known: hung`},
		"no check, no room is fine": {cands: []Candidate{{Name: "a", Figures: Figures{Free: 1}}}, request: 100, want: 0},
		"capacity passes exactly":   {cands: []Candidate{{Name: "a", Figures: Figures{Free: 100}}}, request: 100, chk: Check{Capacity: true}, want: 0},
		"capacity picks the one with room": {
			cands:   []Candidate{{Name: "a", Figures: Figures{Free: 50 * mi}}, {Name: "b", Figures: Figures{Free: 40 * mi}}},
			request: 45 * mi, chk: Check{Capacity: true}, want: 0,
		},
		"capacity counts unseen": {
			cands:   []Candidate{{Name: "a", Figures: Figures{Free: 50 * mi}, Pending: 10 * mi, Unseen: 10 * mi}},
			request: 45 * mi, chk: Check{Capacity: true}, want: -1, refusal: true,
			errText: `no export has room for the claim's 45Mi: export "a" has 40Mi free (50Mi, less 10Mi requested by claims being placed), the claim asks 45Mi`,
		},
		"capacity ignores what the figures show": {
			cands:   []Candidate{{Name: "a", Figures: Figures{Free: 50 * mi}, Pending: 30 * mi, Unseen: 5 * mi}, {Name: "b", Figures: Figures{Free: 30 * mi}}},
			request: 45 * mi, chk: Check{Capacity: true}, want: 0,
		},
		"ranking counts settling claims": {
			cands: []Candidate{{Name: "a", Figures: Figures{Free: 50 * mi}, Pending: 30 * mi, Unseen: 5 * mi}, {Name: "b", Figures: Figures{Free: 30 * mi}}},
			want:  1,
		},
		"ratio refuses": {
			cands:   []Candidate{{Name: "a", Figures: Figures{Free: 100 * mi, Size: 100 * mi}, Committed: 140 * mi}},
			request: 20 * mi, chk: Check{Capacity: true, Ratio: 1.5}, want: -1, refusal: true,
			errText: `export "a" would hold 160Mi of volumes, above overcommitRatio 1.5 times its size 100Mi = 150Mi (140Mi committed, the claim asks 20Mi)`,
		},
		"ratio passes exactly": {
			cands:   []Candidate{{Name: "a", Figures: Figures{Free: 100 * mi, Size: 100 * mi}, Committed: 130 * mi}},
			request: 20 * mi, chk: Check{Capacity: true, Ratio: 1.5}, want: 0,
		},
		"refused here, unknown there: retry": {
			cands:   []Candidate{{Name: "a", Figures: Figures{Free: 1}}, {Name: "b", Err: hung}},
			request: 10, chk: Check{Capacity: true}, want: -1, errText: "no export can take the claim now",
		},
	}
	for name, tc := range cases {
		got, err := Choose(tc.cands, tc.request, tc.chk)
		assert.Equal(t, tc.want, got, name)
		if tc.errText == "" && !tc.refusal {
			assert.NoError(t, err, name)
			continue
		}
		require.Error(t, err, name)
		assert.Equal(t, tc.refusal, IsRefusal(err), name)
		assert.Contains(t, err.Error(), tc.errText, name)
	}
}

// fakeExport has fixed free bytes and counts its readings.
type fakeExport struct {
	free, size uint64
	hung       time.Time
	err        error
	reads      atomic.Int32
	block      chan struct{} // when set, readings wait for it
}

func (f *fakeExport) Usage(ctx context.Context) (exportfs.Usage, error) {
	f.reads.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return exportfs.Usage{}, ctx.Err()
		}
	}
	return exportfs.Usage{FreeBytes: f.free, TotalBytes: f.size}, f.err
}

func (f *fakeExport) Hung() (time.Time, int) { return f.hung, 0 }

func newPlacer(clk *clocktesting.FakeClock, exports map[string]*fakeExport, committed map[string]uint64) *Placer {
	m := map[string]Export{}
	for k, v := range exports {
		m[k] = v
	}
	return New(Config{
		Exports:   m,
		Committed: func(name string) (uint64, error) { return committed[name], nil },
		Clock:     clk,
	})
}

// TestBurstSpreads places 100 claims at once on exports with 100 and 60
// MiB free: counting the claims placed since the reading, they fill the
// gap and then alternate, rather than all going to the first.
func TestBurstSpreads(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	a, b := &fakeExport{free: 100 * mi}, &fakeExport{free: 60 * mi}
	p := newPlacer(clk, map[string]*fakeExport{"a": a, "b": b}, nil)
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, err := p.Place(context.Background(), "pv-"+string(rune('A'+i/26))+string(rune('a'+i%26)), []string{"a", "b"}, mi, Check{})
			assert.NoError(t, err)
			mu.Lock()
			counts[name]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	assert.Equal(t, map[string]int{"a": 70, "b": 30}, counts)
	assert.EqualValues(t, 1, a.reads.Load(), "one reading shared by the burst")
	assert.EqualValues(t, 1, b.reads.Load())
}

// TestTrickleSpreads places a claim every 100 ms, across many readings: a
// claim counts for Settle whatever the readings say, so they spread as if
// placed at once.
func TestTrickleSpreads(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	a, b := &fakeExport{free: 100 * mi}, &fakeExport{free: 60 * mi}
	p := newPlacer(clk, map[string]*fakeExport{"a": a, "b": b}, nil)
	counts := map[string]int{}
	for i := range 100 {
		pv := fmt.Sprint("pv", i)
		name, err := p.Place(context.Background(), pv, []string{"a", "b"}, mi, Check{})
		require.NoError(t, err)
		counts[name]++
		p.Done(pv)
		clk.Step(100 * time.Millisecond)
	}
	assert.Equal(t, map[string]int{"a": 70, "b": 30}, counts)
	assert.Greater(t, a.reads.Load(), int32(3), "read afresh every MaxAge")
}

func TestReadingsAndWhatCounts(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	a, b := &fakeExport{free: 10 * mi, size: 10 * mi}, &fakeExport{free: 9 * mi, size: 10 * mi}
	p := newPlacer(clk, map[string]*fakeExport{"a": a, "b": b}, map[string]uint64{"a": 6 * mi})
	ctx := context.Background()
	both := []string{"a", "b"}
	place := func(pv string) string {
		t.Helper()
		name, err := p.Place(ctx, pv, both, 2*mi, Check{})
		require.NoError(t, err)
		return name
	}

	assert.Equal(t, "a", place("pv1"))
	p.Done("pv1")
	assert.Equal(t, "b", place("pv2"), "pv1 is done but placed after a's reading, which can't show it: a 8Mi < b 9Mi")
	assert.Equal(t, "a", place("pv3"), "a 8Mi, b 7Mi with pv2 in flight")
	assert.EqualValues(t, 1, a.reads.Load(), "one reading within MaxAge")

	clk.Step(DefaultMaxAge)
	assert.Equal(t, "b", place("pv4"), "pv1 still settles: a 10-2-2, b 9-2")
	assert.EqualValues(t, 2, a.reads.Load(), "re-read once the reading is MaxAge old")
	clk.Step(DefaultSettle)
	assert.Equal(t, "a", place("pv5"), "pv1 settled, pv3 in flight: a 10-2, b 9-2-2")
	assert.EqualValues(t, 3, a.reads.Load())

	// The ratio counts the PVs' capacities and the claims in flight: 6Mi of
	// PVs, pv3 and pv5 (pv1 is done: its PV is among the 6Mi).
	err := p.CheckGrowth(ctx, "a", 6*mi, 8*mi, Check{Capacity: true, Ratio: 1.5})
	require.Error(t, err)
	assert.True(t, IsRefusal(err))
	assert.Contains(t, err.Error(), "10Mi committed")
	require.NoError(t, p.CheckGrowth(ctx, "a", 6*mi, 8*mi, Check{Capacity: true, Ratio: 1.6}))
	err = p.CheckGrowth(ctx, "a", mi, 11*mi, Check{Capacity: true})
	require.ErrorContains(t, err, `the volume can't grow to 11Mi: export "a" is only 10Mi`)
	err = p.CheckGrowth(ctx, "a", 7*mi, 8*mi, Check{Capacity: true})
	require.ErrorContains(t, err, `export "a" has 6Mi free (10Mi, less 4Mi requested by claims being placed), the claim asks 7Mi`)
}

func TestHungExportIsNotAsked(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	a, b := &fakeExport{free: 100 * mi, hung: time.Now()}, &fakeExport{free: mi}
	p := newPlacer(clk, map[string]*fakeExport{"a": a, "b": b}, nil)
	name, err := p.Place(context.Background(), "pv1", []string{"a", "b"}, mi, Check{})
	require.NoError(t, err)
	assert.Equal(t, "b", name)
	assert.EqualValues(t, 0, a.reads.Load(), "a hung export is skipped without a call")
}

func TestSlowReadingIsBounded(t *testing.T) {
	t.Parallel()
	a, b := &fakeExport{free: 100 * mi, block: make(chan struct{})}, &fakeExport{free: mi}
	defer close(a.block)
	p := New(Config{Exports: map[string]Export{"a": a, "b": b}, Timeout: 50 * time.Millisecond})
	start := time.Now()
	name, err := p.Place(context.Background(), "pv1", []string{"a", "b"}, mi, Check{})
	require.NoError(t, err)
	assert.Equal(t, "b", name, "an export that doesn't answer within the timeout is skipped")
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestOneExportWithoutCheckReadsNothing(t *testing.T) {
	t.Parallel()
	a := &fakeExport{err: errors.New("not mounted")}
	p := newPlacer(clocktesting.NewFakeClock(time.Now()), map[string]*fakeExport{"a": a}, nil)
	name, err := p.Place(context.Background(), "pv1", []string{"a"}, mi, Check{})
	require.NoError(t, err)
	assert.Equal(t, "a", name)
	assert.EqualValues(t, 0, a.reads.Load())
	_, err = p.Place(context.Background(), "pv2", []string{"a"}, mi, Check{Capacity: true})
	require.ErrorContains(t, err, "not mounted", "a capacity check needs the figures")
	assert.False(t, IsRefusal(err), "retried, not refused")
}

func TestForgetAndMemory(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	a := &fakeExport{free: 10 * mi}
	p := newPlacer(clk, map[string]*fakeExport{"a": a}, nil)
	for i := range 1000 {
		name := "pv" + string(rune(i))
		_, err := p.Place(context.Background(), name, []string{"a"}, mi, Check{})
		require.NoError(t, err)
		if i%2 == 0 {
			p.Done(name)
		} else {
			p.Forget(name)
		}
	}
	assert.Len(t, p.placed, 500, "forgotten at once, done kept while they settle")
	clk.Step(DefaultSettle + DefaultMaxAge + time.Second)
	p.Done("none")
	assert.Empty(t, p.placed, "settled placements are swept")
}
