package retention

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
)

type fakeArchives struct {
	recs    []ledger.Record
	removed []string
	fail    map[string]bool
	listErr error
}

func (f *fakeArchives) Archives(context.Context) ([]ledger.Record, error) { return f.recs, f.listErr }

func (f *fakeArchives) RemoveArchive(_ context.Context, rec ledger.Record) error {
	if f.fail[rec.Dir] {
		return errors.New("export hung")
	}
	f.removed = append(f.removed, rec.Dir)
	var keep []ledger.Record
	for _, r := range f.recs {
		if r.Dir != rec.Dir {
			keep = append(keep, r)
		}
	}
	f.recs = keep
	return nil
}

type fakeSizes struct{ calls map[string]int }

func (f *fakeSizes) Scan(_ context.Context, rel string, _ exportfs.ScanOptions) (exportfs.Tally, error) {
	f.calls[rel]++
	return exportfs.Tally{Bytes: 1000}, nil
}

func TestRemovesOnlyArchivesPastRetention(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	archives := &fakeArchives{recs: []ledger.Record{
		{Kind: ledger.Archive, Dir: "archived-old-20261125-120000", PV: "pv-old", Time: now.Add(-8 * 24 * time.Hour)},
		{Kind: ledger.Archive, Dir: "archived-new-20261202-120000", PV: "pv-new", Time: now.Add(-24 * time.Hour)},
		{Kind: ledger.Archive, Dir: "archived-stuck-20261101-120000", PV: "pv-stuck", Time: now.Add(-30 * 24 * time.Hour)},
	}, fail: map[string]bool{"archived-stuck-20261101-120000": true}}
	sizes := &fakeSizes{calls: map[string]int{}}
	r := New(Config{Exports: []Export{{Name: "default", Archives: archives, Sizes: sizes}}, Retention: 7 * 24 * time.Hour, Clock: clocktesting.NewFakeClock(now)})
	logger, ctx := ktesting.NewTestContext(t)
	r.Once(ctx, logger)
	assert.Equal(t, []string{"archived-old-20261125-120000"}, archives.removed)
	r.Once(ctx, logger)
	assert.Equal(t, map[string]int{"archived-new-20261202-120000": 1, "archived-stuck-20261101-120000": 1}, sizes.calls, "each kept archive measured once")
	want := `
# HELP nfs_provisioner_archive_bytes Bytes allocated by those archives (each measured once).
# TYPE nfs_provisioner_archive_bytes gauge
nfs_provisioner_archive_bytes{export="default"} 2000
# HELP nfs_provisioner_archives Archives of released volumes this provisioner made and keeps, at its last look.
# TYPE nfs_provisioner_archives gauge
nfs_provisioner_archives{export="default"} 2
# HELP nfs_provisioner_archives_removed_total Archives removed past --archive-retention.
# TYPE nfs_provisioner_archives_removed_total counter
nfs_provisioner_archives_removed_total{export="default"} 1
`
	require.NoError(t, testutil.CollectAndCompare(r.Collector(), strings.NewReader(want)))
}

func TestNoRetentionKeepsEverything(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	archives := &fakeArchives{recs: []ledger.Record{{Kind: ledger.Archive, Dir: "archived-x-20200101-000000", Time: now.AddDate(-6, 0, 0)}}}
	r := New(Config{Exports: []Export{{Name: "default", Archives: archives}}, Clock: clocktesting.NewFakeClock(now)})
	logger, ctx := ktesting.NewTestContext(t)
	r.Once(ctx, logger)
	assert.Empty(t, archives.removed)
	assert.Equal(t, time.Hour, r.Interval())
}

func TestInterval(t *testing.T) {
	t.Parallel()
	for retention, want := range map[time.Duration]time.Duration{
		2 * time.Second:     time.Second,
		time.Minute:         15 * time.Second,
		30 * 24 * time.Hour: time.Hour,
	} {
		assert.Equal(t, want, New(Config{Retention: retention}).Interval(), retention)
	}
}

// TestEachExportOnItsOwn: each export's archives are removed and measured
// on it only, under its own label; an export whose archives can't be
// listed is skipped, keeping its last figures, and the others go on.
func TestEachExportOnItsOwn(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	old, recent := now.Add(-8*24*time.Hour), now.Add(-time.Hour)
	fast := &fakeArchives{recs: []ledger.Record{
		{Kind: ledger.Archive, Dir: "archived-a-20261125-120000", PV: "pv-a", Time: old},
		{Kind: ledger.Archive, Dir: "archived-b-20261203-110000", PV: "pv-b", Time: recent},
	}}
	bulk := &fakeArchives{recs: []ledger.Record{
		{Kind: ledger.Archive, Dir: "archived-c-20261203-110000", PV: "pv-c", Time: recent},
	}}
	broken := &fakeArchives{recs: []ledger.Record{
		{Kind: ledger.Archive, Dir: "archived-d-20261125-120000", PV: "pv-d", Time: old},
		{Kind: ledger.Archive, Dir: "archived-e-20261203-110000", PV: "pv-e", Time: recent},
	}, listErr: errors.New("export hung")}
	fastSizes, bulkSizes, brokenSizes := &fakeSizes{calls: map[string]int{}}, &fakeSizes{calls: map[string]int{}}, &fakeSizes{calls: map[string]int{}}
	r := New(Config{Exports: []Export{
		{Name: "broken", Archives: broken, Sizes: brokenSizes},
		{Name: "fast", Archives: fast, Sizes: fastSizes},
		{Name: "bulk", Archives: bulk, Sizes: bulkSizes},
	}, Retention: 7 * 24 * time.Hour, Clock: clocktesting.NewFakeClock(now)})
	logger, ctx := ktesting.NewTestContext(t)
	r.Once(ctx, logger)
	assert.Equal(t, []string{"archived-a-20261125-120000"}, fast.removed, "the failing export listed first doesn't stop the others")
	assert.Empty(t, bulk.removed)
	assert.Empty(t, broken.removed)
	assert.Equal(t, map[string]int{"archived-b-20261203-110000": 1}, fastSizes.calls)
	assert.Equal(t, map[string]int{"archived-c-20261203-110000": 1}, bulkSizes.calls)
	assert.Empty(t, brokenSizes.calls)

	broken.listErr = nil
	r.Once(ctx, logger)
	assert.Equal(t, []string{"archived-d-20261125-120000"}, broken.removed)
	assert.Equal(t, map[string]int{"archived-e-20261203-110000": 1}, brokenSizes.calls)
	broken.listErr = errors.New("export hung")
	r.Once(ctx, logger)
	want := `
# HELP nfs_provisioner_archive_bytes Bytes allocated by those archives (each measured once).
# TYPE nfs_provisioner_archive_bytes gauge
nfs_provisioner_archive_bytes{export="broken"} 1000
nfs_provisioner_archive_bytes{export="bulk"} 1000
nfs_provisioner_archive_bytes{export="fast"} 1000
# HELP nfs_provisioner_archives Archives of released volumes this provisioner made and keeps, at its last look.
# TYPE nfs_provisioner_archives gauge
nfs_provisioner_archives{export="broken"} 1
nfs_provisioner_archives{export="bulk"} 1
nfs_provisioner_archives{export="fast"} 1
# HELP nfs_provisioner_archives_removed_total Archives removed past --archive-retention.
# TYPE nfs_provisioner_archives_removed_total counter
nfs_provisioner_archives_removed_total{export="broken"} 1
nfs_provisioner_archives_removed_total{export="bulk"} 0
nfs_provisioner_archives_removed_total{export="fast"} 1
`
	require.NoError(t, testutil.CollectAndCompare(r.Collector(), strings.NewReader(want)))
	problems, err := testutil.CollectAndLint(r.Collector())
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestRunLoopsPerExport: Run works each export in a loop of its own, so an
// export whose listing never answers doesn't keep the others' archives.
func TestRunLoopsPerExport(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ok := &fakeArchives{recs: []ledger.Record{{Kind: ledger.Archive, Dir: "archived-a-20261125-120000", PV: "pv-a", Time: now.Add(-8 * 24 * time.Hour)}}}
	r := New(Config{Exports: []Export{{Name: "hung", Archives: hungArchives{}}, {Name: "ok", Archives: ok}}, Retention: 7 * 24 * time.Hour, Clock: clocktesting.NewFakeClock(now)})
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.state[1].removed == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// hungArchives never answers until its context ends.
type hungArchives struct{}

func (hungArchives) Archives(ctx context.Context) ([]ledger.Record, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (hungArchives) RemoveArchive(ctx context.Context, _ ledger.Record) error {
	<-ctx.Done()
	return ctx.Err()
}
