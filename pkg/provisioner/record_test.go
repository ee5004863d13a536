package provisioner

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// fakeResolver answers from a table; other names don't exist.
type fakeResolver struct {
	hosts map[string][]string
	err   error

	mu      sync.Mutex
	lookups []string
}

func (r *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	r.lookups = append(r.lookups, host)
	r.mu.Unlock()
	if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > serverLookupTimeout {
		return nil, errors.New("lookup without the short deadline")
	}
	if r.err != nil {
		return nil, r.err
	}
	if addrs, ok := r.hosts[host]; ok {
		return addrs, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestSameServer(t *testing.T) {
	t.Parallel()
	hosts := map[string][]string{
		"nfs.example.com":   {"10.0.0.1", "fd00::1"},
		"alias.example.com": {"fd00:0::1"},
		"other.example.com": {"10.0.0.2"},
	}
	cases := map[string]struct {
		a, b        string
		want        bool
		wantLookups bool
	}{
		"equal":                         {"nfs.example.com", "nfs.example.com", true, false},
		"case and trailing dot":         {"NFS.Example.COM.", "nfs.example.com", true, false},
		"IPv6 brackets and zeros":       {"[FD00:0:0::1]", "fd00::1", true, false},
		"IPv4-mapped IPv6":              {"::ffff:10.0.0.1", "10.0.0.1", true, false},
		"two addresses":                 {"10.0.0.1", "10.0.0.2", false, false},
		"name and its address":          {"10.0.0.1", "nfs.example.com", true, true},
		"name and its IPv6 in brackets": {"nfs.example.com", "[fd00::1]", true, true},
		"names sharing an address":      {"alias.example.com.", "nfs.example.com", true, true},
		"name and another address":      {"10.0.0.2", "nfs.example.com", false, true},
		"names of two hosts":            {"other.example.com", "nfs.example.com", false, true},
		"name without addresses":        {"gone.example.com", "nfs.example.com", false, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := &fakeResolver{hosts: hosts}
			ctx, cancel := context.WithTimeout(context.Background(), serverLookupTimeout)
			defer cancel()
			got, err := sameServer(ctx, r, tc.a, tc.b)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantLookups, len(r.lookups) > 0, "lookups: %v", r.lookups)
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), serverLookupTimeout)
	defer cancel()
	_, err := sameServer(ctx, &fakeResolver{err: errors.New("i/o timeout")}, "10.0.0.1", "nfs.example.com")
	assert.ErrorContains(t, err, `looking up "nfs.example.com": i/o timeout`)
}

// TestDeleteChecksTheRecordAgainstThePV: Delete acts only when the recorded
// directory and spec.nfs name this export, and otherwise says what differs.
func TestDeleteChecksTheRecordAgainstThePV(t *testing.T) {
	t.Parallel()
	const dir = "ns/data"
	cases := map[string]struct {
		mutate      func(pv *v1.PersistentVolume)
		policy      string
		resolverErr error
		wantErr     []string // none: deleted
		wantOutcome string
	}{
		"as provisioned": {},
		"server in other case, trailing dot": {
			mutate: func(pv *v1.PersistentVolume) { pv.Spec.NFS.Server = "NFS.Example.com." },
		},
		"server as its address": {
			mutate: func(pv *v1.PersistentVolume) { pv.Spec.NFS.Server = "10.0.0.1" },
		},
		"another server": {
			mutate:      func(pv *v1.PersistentVolume) { pv.Spec.NFS.Server = "10.0.0.9" },
			wantErr:     []string{`PV "pvc-u1" is on NFS server "10.0.0.9", but this provisioner serves "nfs.example.com" (NFS_SERVER) and they share no address`},
			wantOutcome: metrics.Refused,
		},
		"server lookup failing": {
			mutate:      func(pv *v1.PersistentVolume) { pv.Spec.NFS.Server = "nfs" },
			resolverErr: errors.New("i/o timeout"),
			wantErr:     []string{`PV "pvc-u1" is on NFS server "nfs" and this provisioner serves "nfs.example.com"`, "i/o timeout"},
			wantOutcome: metrics.Failed,
		},
		"path elsewhere on the export": {
			mutate:      func(pv *v1.PersistentVolume) { pv.Spec.NFS.Path = testPath + "/other" },
			wantErr:     []string{`PV "pvc-u1" records directory "ns/data"`, `its spec.nfs.path is "/srv/nfs/other", not "/srv/nfs/ns/data"`},
			wantOutcome: metrics.Refused,
		},
		"path outside the export": {
			mutate:      func(pv *v1.PersistentVolume) { pv.Spec.NFS.Path = "/elsewhere/ns/data" },
			wantErr:     []string{`spec.nfs.path is "/elsewhere/ns/data", not "/srv/nfs/ns/data"`},
			wantOutcome: metrics.Refused,
		},
		"recorded directory edited": {
			mutate:      func(pv *v1.PersistentVolume) { pv.Annotations[AnnDirectory] = "other" },
			wantErr:     []string{`records directory "other"`, `spec.nfs.path is "/srv/nfs/ns/data", not "/srv/nfs/other"`},
			wantOutcome: metrics.Refused,
		},
		"not an NFS volume": {
			mutate:      func(pv *v1.PersistentVolume) { pv.Spec.NFS = nil },
			wantErr:     []string{`PV "pvc-u1" records directory "ns/data" but is not an NFS volume`},
			wantOutcome: metrics.Refused,
		},
		"retain touches nothing, so nothing to check": {
			mutate: func(pv *v1.PersistentVolume) { pv.Spec.NFS.Server = "10.0.0.9" },
			policy: "retain",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			e.p.cfg.Resolver = &fakeResolver{hosts: map[string][]string{testServer: {"10.0.0.1"}}, err: tc.resolverErr}
			policy := "delete"
			if tc.policy != "" {
				policy = tc.policy
			}
			pv, err := e.provision(t, class("nfs", map[string]string{"onDelete": policy, "pathPattern": "${.PVC.namespace}/${.PVC.name}"}), claim("ns", "data", "u1"))
			require.NoError(t, err)
			require.NoError(t, os.Mkdir(filepath.Join(e.root, "other"), 0o755))
			pv = pv.DeepCopy()
			if tc.mutate != nil {
				tc.mutate(pv)
			}
			before := snapshot(t, e.root)

			err = e.p.Delete(context.Background(), pv)
			if tc.wantErr == nil {
				require.NoError(t, err)
				if policy == "retain" {
					assert.Equal(t, before, snapshot(t, e.root))
				} else {
					assert.NoDirExists(t, filepath.Join(e.root, dir))
				}
				return
			}
			require.Error(t, err)
			for _, s := range tc.wantErr {
				assert.Contains(t, err.Error(), s)
			}
			assert.Equal(t, before, snapshot(t, e.root), "nothing touched")
			assert.InDelta(t, 1, e.count(metrics.OpDelete, tc.wantOutcome), 0)
		})
	}
}

// TestDeleteAfterNFSPathChanged: a PV made when NFS_PATH was /srv/nfs,
// deleted by a provisioner now serving /srv, must not delete the directory
// its record names below /srv.
func TestDeleteAfterNFSPathChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "/srv")
	for _, d := range []string{"nfs/ns/data", "ns/data"} {
		require.NoError(t, os.MkdirAll(filepath.Join(e.root, d), 0o755))
	}
	pv := fullPV("pvc-u1", testServer, "/srv/nfs/ns/data", ours("ns/data", "delete"))
	require.NoError(t, e.volumes.Add(pv))
	before := snapshot(t, e.root)

	err := e.p.Delete(context.Background(), pv)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `records directory "ns/data" (annotation nfs.kube-nfs.io/directory), but its spec.nfs.path is "/srv/nfs/ns/data", not "/srv/ns/data" as on this export (NFS_PATH "/srv")`)
	assert.Equal(t, before, snapshot(t, e.root))

	// The same through the informer cache.
	small := NewCompactor(testProvisioner, testSet("/srv")).Compact(pv)
	require.ErrorContains(t, e.p.Delete(context.Background(), small), `records directory "ns/data"`)
	assert.Equal(t, before, snapshot(t, e.root))
}

// TestIndexSeesEveryServerSpelling: a PV on this export guards its
// directory however it spells the server.
func TestIndexSeesEveryServerSpelling(t *testing.T) {
	t.Parallel()
	for _, server := range []string{"10.0.0.1", "NFS.example.com.", "[fd00::1]", "nfs"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			e.p.cfg.Resolver = &fakeResolver{}
			sc := class("nfs", map[string]string{"onDelete": "delete", "pathPattern": "${.PVC.labels.dir}"})
			withDir := func(c *v1.PersistentVolumeClaim, dir string) *v1.PersistentVolumeClaim {
				c.Labels = map[string]string{"dir": dir}
				return c
			}
			mine, err := e.provision(t, sc, withDir(claim("ns", "a", "u1"), "mine"))
			require.NoError(t, err)

			static := fullPV("static", server, testPath+"/shared", nil)
			require.NoError(t, e.volumes.Add(static))
			_, err = e.provision(t, sc, withDir(claim("ns", "b", "u2"), "shared"))
			assert.ErrorContains(t, err, `directory "shared" is already used by PersistentVolume "static"`)
			_, err = e.provision(t, sc, withDir(claim("ns", "c", "u3"), "shared/x"))
			assert.ErrorContains(t, err, `lies inside the directory of PersistentVolume "static"`)

			nested := fullPV("nested", server, testPath+"/mine/sub", nil)
			require.NoError(t, e.volumes.Add(nested))
			err = e.p.Delete(context.Background(), mine)
			assert.ErrorContains(t, err, `refusing to delete directory "mine": PersistentVolume "nested" uses a directory nested with it`)
			assert.DirExists(t, filepath.Join(e.root, "mine"))
		})
	}
}
