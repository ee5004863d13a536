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
}

func (f *fakeArchives) Archives(context.Context) ([]ledger.Record, error) { return f.recs, nil }

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
	r := New(Config{Archives: archives, Sizes: sizes, Retention: 7 * 24 * time.Hour, Clock: clocktesting.NewFakeClock(now)})
	logger, ctx := ktesting.NewTestContext(t)
	r.Once(ctx, logger)
	assert.Equal(t, []string{"archived-old-20261125-120000"}, archives.removed)
	r.Once(ctx, logger)
	assert.Equal(t, map[string]int{"archived-new-20261202-120000": 1, "archived-stuck-20261101-120000": 1}, sizes.calls, "each kept archive measured once")
	want := `
# HELP nfs_provisioner_archive_bytes Bytes allocated by those archives (each measured once).
# TYPE nfs_provisioner_archive_bytes gauge
nfs_provisioner_archive_bytes 2000
# HELP nfs_provisioner_archives Archives of released volumes this provisioner made and keeps, at its last look.
# TYPE nfs_provisioner_archives gauge
nfs_provisioner_archives 2
# HELP nfs_provisioner_archives_removed_total Archives removed past --archive-retention.
# TYPE nfs_provisioner_archives_removed_total counter
nfs_provisioner_archives_removed_total 1
`
	require.NoError(t, testutil.CollectAndCompare(r.Collector(), strings.NewReader(want)))
}

func TestNoRetentionKeepsEverything(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	archives := &fakeArchives{recs: []ledger.Record{{Kind: ledger.Archive, Dir: "archived-x-20200101-000000", Time: now.AddDate(-6, 0, 0)}}}
	r := New(Config{Archives: archives, Clock: clocktesting.NewFakeClock(now)})
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
