package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
)

const exportPath = "/srv/nfs"

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
		Name: "default", ExportPath: exportPath, Export: os.DirFS(root).(Export), Ledger: led, Now: now,
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
	got, err := Classify(context.Background(), Input{Name: "default", ExportPath: exportPath, Export: os.DirFS(root).(Export), PVs: pvs, Now: start})
	took := time.Since(start)
	require.NoError(t, err)
	assert.Len(t, got, 10000)
	assert.Equal(t, 1000, Problems(got))
	t.Logf("classified 10,000 directories against 9,000 PVs in %v", took)
	assert.Less(t, took, 10*time.Second)
}
