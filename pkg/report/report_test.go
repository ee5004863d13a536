package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
)

const exportPath = "/srv/nfs"

// oneExport is the set of the one export "default" at exportPath, mounted
// at root.
func oneExport(t testing.TB, root string) *exports.Set {
	t.Helper()
	set, err := exports.NewSet([]exports.Export{{Name: "default", Server: "nfs", Path: exportPath, Dir: root}})
	require.NoError(t, err)
	return set
}

func pv(name, dir string) v1.PersistentVolume {
	return v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs", Path: exportPath + "/" + dir}},
			ClaimRef:               &v1.ObjectReference{Namespace: "ns", Name: "c-" + name},
		},
	}
}

func mkdirs(t testing.TB, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	mkdirs(t, root,
		"ns-a-pv1",                                  // live
		"team/db",                                   // live, below a parent
		"team/stray",                                // orphan beside it
		"archived-ns-b-pv2-20261201-120000",         // archive of ours
		"archived-ns-c-pv3-20261101-120000",         // named so, not recorded
		"archived-old",                              // the incumbent's
		"kept",                                      // retained
		"forgotten/deep/inside",                     // orphan, not entered
		".nfs-provisioner", "lost+found", ".hidden", // never listed
	)
	require.NoError(t, os.WriteFile(filepath.Join(root, "README"), []byte("x"), 0o644))
	require.NoError(t, os.Symlink("/etc", filepath.Join(root, "link")))
	led, err := ledger.Open(context.Background(), exportfs.New(root, time.Second))
	require.NoError(t, err)
	require.NoError(t, led.Append(context.Background(),
		ledger.Record{Kind: ledger.Archive, Dir: "archived-ns-b-pv2-20261201-120000", PV: "pv2", Time: now.Add(-48 * time.Hour)},
		ledger.Record{Kind: ledger.Retained, Dir: "kept", PV: "pv4", Time: now.Add(-time.Hour)},
	))

	got, err := Classify(context.Background(), Input{
		Exports: oneExport(t, root), Name: "default", FS: os.DirFS(root).(Export), Ledger: led, Now: now,
		PVs: []v1.PersistentVolume{pv("pv1", "ns-a-pv1"), pv("pv5", "team/db"), pv("pv6", "gone"), {ObjectMeta: metav1.ObjectMeta{Name: "csi"}}},
	})
	require.NoError(t, err)
	want := []Entry{
		{Directory: "README", State: Orphan, Note: "not a directory"},
		{Directory: "archived-ns-b-pv2-20261201-120000", State: Archived, PersistentVolume: "pv2", Age: "48h0m0s"},
		{Directory: "archived-ns-c-pv3-20261101-120000", State: Orphan, Note: "named like an archive, but the ledger has no record of it"},
		{Directory: "archived-old", State: Orphan},
		{Directory: "forgotten", State: Orphan},
		{Directory: "gone", State: Missing, PersistentVolume: "pv6", Claim: "ns/c-pv6"},
		{Directory: "kept", State: Orphan, PersistentVolume: "pv4", Note: "retained when its PersistentVolume was deleted"},
		{Directory: "link", State: Orphan, Note: "not a directory"},
		{Directory: "ns-a-pv1", State: Live, PersistentVolume: "pv1", Claim: "ns/c-pv1"},
		{Directory: "team/db", State: Live, PersistentVolume: "pv5", Claim: "ns/c-pv5"},
		{Directory: "team/stray", State: Orphan},
	}
	for i := range want {
		want[i].Export = "default"
	}
	assert.Equal(t, want, got)
	assert.Equal(t, 8, Problems(got), "seven orphans, one missing")

	var buf bytes.Buffer
	require.NoError(t, Write(&buf, "json", got))
	var decoded []map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &decoded))
	assert.Equal(t, map[string]any{"export": "default", "directory": "ns-a-pv1", "state": "live", "persistentVolume": "pv1", "claim": "ns/c-pv1"}, decoded[8])
	buf.Reset()
	require.NoError(t, Write(&buf, "table", got))
	assert.Contains(t, buf.String(), "default  team/db")
	require.Error(t, Write(&buf, "yaml", got))
}

// TestClassifyTenThousand: the time for 10,000 directories, logged; the
// bound only catches a pathological slowdown.
func TestClassifyTenThousand(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	var pvs []v1.PersistentVolume
	for i := range 10000 {
		dir := fmt.Sprintf("ns-data-pvc-%05d", i)
		require.NoError(t, os.Mkdir(filepath.Join(root, dir), 0o755))
		if i%10 != 0 {
			pvs = append(pvs, pv(fmt.Sprintf("pvc-%05d", i), dir))
		}
	}
	start := time.Now()
	got, err := Classify(context.Background(), Input{Exports: oneExport(t, root), Name: "default", FS: os.DirFS(root).(Export), PVs: pvs, Now: start})
	took := time.Since(start)
	require.NoError(t, err)
	assert.Len(t, got, 10000)
	assert.Equal(t, 1000, Problems(got))
	t.Logf("classified 10,000 directories against 9,000 PVs in %v", took)
	assert.Less(t, took, 10*time.Second)
}

// TestRunTwoExports: each export is classified against the PVs that belong
// to it (the two have the same path on different servers) and its own
// ledger, in the order declared; a directory of the same name on the other
// export is no volume of it; an export that can't be read is an error
// naming it, and the others are reported still.
func TestRunTwoExports(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fastDir, bulkDir := t.TempDir(), t.TempDir()
	mkdirs(t, fastDir, "ns-a", "ns-b", "archived-x-20261201-120000")
	mkdirs(t, bulkDir, "ns-b", "archived-x-20261201-120000")
	set, err := exports.NewSet([]exports.Export{
		{Name: "fast", Server: "10.0.0.1", Path: "/k8s", Dir: fastDir},
		{Name: "dead", Server: "10.0.0.3", Path: "/gone", Dir: filepath.Join(t.TempDir(), "unmounted")},
		{Name: "bulk", Server: "10.0.0.2", Path: "/k8s", Dir: bulkDir},
	})
	require.NoError(t, err)
	// The archive is recorded on bulk's ledger only.
	led, err := ledger.Open(ctx, exportfs.New(bulkDir, time.Second))
	require.NoError(t, err)
	require.NoError(t, led.Append(ctx, ledger.Record{Kind: ledger.Archive, Dir: "archived-x-20261201-120000", PV: "pv-x", Time: time.Now().Add(-time.Hour)}))

	onFast := pv("pv-a", "ns-a")
	onFast.Annotations = map[string]string{exports.Annotation: "fast"}
	onFast.Spec.NFS.Server, onFast.Spec.NFS.Path = "10.0.0.1", "/k8s/ns-a"
	onBulk := pv("pv-b", "ns-b") // from before the annotation
	onBulk.Spec.NFS.Server, onBulk.Spec.NFS.Path = "10.0.0.2", "/k8s/ns-b"
	gone := pv("pv-c", "ns-c")
	gone.Annotations = map[string]string{exports.Annotation: "bulk"}
	gone.Spec.NFS.Server, gone.Spec.NFS.Path = "10.0.0.2", "/k8s/ns-c"
	client := fake.NewClientset(&onFast, &onBulk, &gone)

	got, err := Run(ctx, Config{Client: client, Exports: set, Timeout: time.Second})
	var exportErr *ExportError
	require.ErrorAs(t, err, &exportErr)
	assert.Equal(t, "dead", exportErr.Export.Name)
	assert.Contains(t, err.Error(), "export dead (10.0.0.3:/gone at ")
	type row struct{ export, dir string }
	states := map[row]State{}
	var order []string
	for _, e := range got {
		states[row{e.Export, e.Directory}] = e.State
		if len(order) == 0 || order[len(order)-1] != e.Export {
			order = append(order, e.Export)
		}
	}
	assert.Equal(t, map[row]State{
		{"fast", "ns-a"}:                       Live,
		{"fast", "ns-b"}:                       Orphan,
		{"fast", "archived-x-20261201-120000"}: Orphan,
		{"bulk", "ns-b"}:                       Live,
		{"bulk", "ns-c"}:                       Missing,
		{"bulk", "archived-x-20261201-120000"}: Archived,
	}, states)
	assert.Equal(t, []string{"fast", "bulk"}, order, "in the order declared")
	assert.Equal(t, 3, Problems(got))

	var buf bytes.Buffer
	require.NoError(t, Write(&buf, "table", got))
	assert.Regexp(t, `(?m)^EXPORT +DIRECTORY +STATE`, buf.String())
	assert.Regexp(t, `(?m)^fast +ns-b +orphan`, buf.String())
	assert.Regexp(t, `(?m)^bulk +ns-b +live +- +pv-b`, buf.String())
}

// blockingFS is an export whose directory listings never answer.
type blockingFS struct {
	Export
	release chan struct{}
}

func (b blockingFS) ReadDir(string) ([]fs.DirEntry, error) {
	<-b.release
	return nil, nil
}

// TestHungListingTimesOut: a listing that doesn't answer within the
// timeout fails the export's report rather than hanging it.
func TestHungListingTimesOut(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	_, err := Classify(context.Background(), Input{Exports: oneExport(t, root), Name: "default", FS: bounded{blockingFS{os.DirFS(root).(Export), release}, 50 * time.Millisecond}})
	require.ErrorIs(t, err, exportfs.ErrTimeout)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Contains(t, err.Error(), `reading ".": no answer within 50ms`)
}

// TestClassifyUntellablePVs checks that a PV that may be on this export,
// though its server or export annotation doesn't tell which, keeps its
// directory from being called an orphan, and that its absence isn't called
// missing.
func TestClassifyUntellablePVs(t *testing.T) {
	t.Parallel()
	a, b := t.TempDir(), t.TempDir()
	mkdirs(t, a, "ns-x", "ns-y")
	set, err := exports.NewSet([]exports.Export{
		{Name: "a", Server: "10.0.0.1", Path: exportPath, Dir: a},
		{Name: "b", Server: "10.0.0.2", Path: exportPath, Dir: b},
	})
	require.NoError(t, err)
	x := pv("px", "ns-x")
	x.Spec.NFS.Server = "nfs-a.example" // either address, in DNS
	y := pv("py", "ns-y")
	y.Spec.NFS.Server = "10.0.0.1"
	y.Annotations = map[string]string{exports.Annotation: "renamed"} // an export no longer served
	for name, root := range map[string]string{"a": a, "b": b} {
		got, err := Classify(context.Background(), Input{Exports: set, Name: name, FS: os.DirFS(root).(Export), PVs: []v1.PersistentVolume{x, y}})
		require.NoError(t, err)
		assert.Zero(t, Problems(got), "%s: %v", name, got)
		if name == "a" {
			require.Len(t, got, 2)
			assert.Equal(t, Live, got[0].State)
			assert.Equal(t, Live, got[1].State)
		}
	}
}
