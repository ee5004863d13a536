package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// goldenClassValues sets every parameter a StorageClass of the chart can
// carry without `exports` (the single export of nfs.server/nfs.path).
const goldenClassValues = `
nfs:
  mountOptions: [nfsvers=4.1]
storageClass:
  mode: "2775"
  uid: 1000
  gid: "2000"
  allowSharedPath: true
  archiveOnDelete: false
  onDelete: archive
  pathPattern: "${.PVC.namespace}/${.PVC.name}"
extraStorageClasses:
  - name: nfs-retain
    onDelete: retain
    reclaimPolicy: Retain
    volumeBindingMode: WaitForFirstConsumer
    allowVolumeExpansion: false
    mountOptions: [nfsvers=3, nolock]
    annotations: {team: storage}
  - name: nfs-delete
    archiveOnDelete: "false"
    allowSharedPath: "false"
    uid: 0
    mountOptions: []
  - name: nfs-plain
`

// goldenRenders are the renders pinned byte for byte in testdata/golden.
func goldenRenders(t *testing.T) map[string]RenderOptions {
	dir := t.TempDir()
	everyOption := filepath.Join(dir, "every-option.yaml")
	require.NoError(t, os.WriteFile(everyOption, []byte(everyOptionValues), 0o644))
	classes := filepath.Join(dir, "classes.yaml")
	require.NoError(t, os.WriteFile(classes, []byte(goldenClassValues), 0o644))
	return map[string]RenderOptions{
		"defaults":     {Values: []string{DefaultValuesFile(t)}},
		"incumbent":    {Values: []string{incumbentValues(t)}},
		"every-option": {Values: []string{DefaultValuesFile(t), everyOption}},
		"classes":      {Values: []string{DefaultValuesFile(t), classes}},
		"deploy":       deploySettings,
	}
}

// TestSingleExportRenderUnchanged: with `exports` empty (every values file
// written before issue 11, the incumbent's included) the chart renders what it
// rendered before, byte for byte: StorageClass parameters are immutable, and
// any change to the Deployment rolls the pods of every release on upgrade.
// The PrometheusRule and dashboard are left out (they changed on purpose:
// the export metrics gained the label `export`).
//
// testdata/golden/*.yaml are `helm template` outputs of the chart before
// `exports` was added (commit 4d3be3e), with the chart's version and
// appVersion replaced by CHART_VERSION and APP_VERSION; *.notes.txt its
// NOTES.txt. NFS_PROVISIONER_UPDATE_GOLDEN=1 rewrites them: only do that for
// a change meant to reach every existing release.
// NFS_PROVISIONER_GOLDEN_CHART=<dir> renders another chart directory, e.g.
// an older commit's (git archive), to make or check the goldens with it.
func TestSingleExportRenderUnchanged(t *testing.T) {
	Helm(t) // skips with -short
	chart := os.Getenv("NFS_PROVISIONER_GOLDEN_CHART")
	version, appVersion := chartVersions(t)
	update := os.Getenv("NFS_PROVISIONER_UPDATE_GOLDEN") == "1"
	for name, o := range goldenRenders(t) {
		o.Chart = chart
		t.Run(name, func(t *testing.T) {
			stdout, stderr, err := RunHelm(t, o.args(t)...)
			require.NoError(t, err, stderr)
			got := strings.NewReplacer(
				"helm.sh/chart: nfs-provisioner-"+version+"\n", "helm.sh/chart: nfs-provisioner-CHART_VERSION\n",
				"app.kubernetes.io/version: \""+appVersion+"\"\n", "app.kubernetes.io/version: \"APP_VERSION\"\n",
				"nfs-provisioner:v"+strings.TrimPrefix(appVersion, "v")+"\"\n", "nfs-provisioner:vAPP_VERSION\"\n",
			).Replace(stdout)
			notes := RenderNotes(t, o)
			for file, got := range map[string]string{
				filepath.Join("testdata", "golden", name+".yaml"):      got,
				filepath.Join("testdata", "golden", name+".notes.txt"): notes,
			} {
				if update {
					require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
					require.NoError(t, os.WriteFile(file, []byte(got), 0o644))
					continue
				}
				want, err := os.ReadFile(file)
				require.NoError(t, err)
				assert.Equal(t, string(want), got, "the render of %s changed", file)
			}
		})
	}
}

func chartVersions(t *testing.T) (version, appVersion string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(ChartDir(t), "Chart.yaml"))
	require.NoError(t, err)
	var c struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &c))
	require.NotEmpty(t, c.Version)
	require.NotEmpty(t, c.AppVersion)
	return c.Version, c.AppVersion
}
