package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReport runs `nfs-provisioner report -o json` on a cluster with a live
// volume, an archive, a retained directory, an orphan and a PV whose
// directory is gone, and checks each is classified and the exit code says
// there are problems.
func TestReport(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.startProvisioner()
	const ns = "team-a"
	e.namespace(ns)
	e.class("archive", map[string]string{"onDelete": "archive"})
	e.class("retain", map[string]string{"onDelete": "retain"})
	for _, c := range []struct{ name, class string }{{"live", "archive"}, {"gone", "archive"}, {"kept", "retain"}, {"lost", "archive"}} {
		e.claim(ns, c.name, c.class)
	}
	_, live := e.waitBound(ns, "live", 30*time.Second)
	_, gone := e.waitBound(ns, "gone", 30*time.Second)
	_, kept := e.waitBound(ns, "kept", 30*time.Second)
	_, lost := e.waitBound(ns, "lost", 30*time.Second)
	for _, c := range []string{"gone", "kept"} {
		require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, c, metav1.DeleteOptions{}))
	}
	e.waitPVGone(gone.Name, 30*time.Second)
	e.waitPVGone(kept.Name, 30*time.Second)
	archive := e.findArchives(ns + "-gone-" + gone.Name)
	require.Len(t, archive, 1)
	require.NoError(t, os.Mkdir(filepath.Join(e.exportDir, "stray"), 0o755))
	lostDir := ns + "-lost-" + lost.Name
	require.NoError(t, os.RemoveAll(filepath.Join(e.exportDir, lostDir)))

	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, ns+"-live-"+live.Name, "data"), make([]byte, 100<<10), 0o644))
	cmd := exec.CommandContext(e.ctx, e.bin, "report", "-o", "json", "--bytes", "--export-dir="+e.exportDir)
	cmd.Env = append(os.Environ(), "PROVISIONER_NAME="+provisionerName, "NFS_SERVER="+e.nfs.Server, "NFS_PATH="+e.nfs.ExportPath, "KUBECONFIG="+e.kubeconfig)
	start := time.Now()
	out, err := cmd.Output()
	t.Logf("report took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "exit code 3 expected, got %v", err)
	assert.Equal(t, 3, exit.ExitCode(), "orphans and a missing directory found")

	var entries []map[string]any
	require.NoError(t, json.Unmarshal(out, &entries))
	byDir := map[string]map[string]any{}
	for _, en := range entries {
		byDir[en["directory"].(string)] = en
		assert.Equal(t, "default", en["export"])
	}
	state := func(dir string) any { return byDir[dir]["state"] }
	assert.Equal(t, "live", state(ns+"-live-"+live.Name))
	assert.Equal(t, ns+"/live", byDir[ns+"-live-"+live.Name]["claim"])
	assert.Equal(t, duBytes(t, filepath.Join(e.exportDir, ns+"-live-"+live.Name)), byDir[ns+"-live-"+live.Name]["bytes"], "bytes as du -sxB1 counts them")
	assert.NotContains(t, byDir[lostDir], "bytes", "nothing to measure")
	assert.Equal(t, "archived", state(archive[0]))
	assert.Equal(t, gone.Name, byDir[archive[0]]["persistentVolume"])
	assert.NotEmpty(t, byDir[archive[0]]["age"])
	assert.Equal(t, "orphan", state(ns+"-kept-"+kept.Name))
	assert.Equal(t, "retained when its PersistentVolume was deleted", byDir[ns+"-kept-"+kept.Name]["note"])
	assert.Equal(t, "orphan", state("stray"))
	assert.Equal(t, "missing", state(lostDir))
	for dir, en := range byDir {
		if dir != lostDir {
			assert.Contains(t, en, "bytes", dir)
		}
	}
	assert.Len(t, entries, 5)
}
