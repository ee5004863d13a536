package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/params"
)

// severalExportsValues is the chart README's "Several exports" example:
// two exports, one with mount options, a class on each, one spreading over
// both. TestExportsReadmeExample checks the README shows this file.
const severalExportsValues = `exports:
  - name: fast
    server: 10.0.0.1
    path: /ssd/k8s
  - name: bulk
    server: 10.0.0.2
    path: /hdd/k8s
    mountOptions: [nfsvers=4.1, hard]
storageClass:
  name: nfs-fast
  exports: [fast]
  capacityCheck: true
extraStorageClasses:
  - name: nfs-bulk
    exports: [bulk]
    capacityCheck: true
    overcommitRatio: 1.5
  - name: nfs-spread
    exports: [fast, bulk]
    capacityCheck: true
    mountOptions: [nfsvers=4.1]
`

func writeValues(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	require.NoError(t, os.WriteFile(f, []byte(text), 0o644))
	return f
}

// exportsEntry is one entry of NFS_EXPORTS, as the spec writes it.
type exportsEntry struct{ name, server, path, dir string }

// parseNFSExports splits NFS_EXPORTS the way the spec defines it: entries
// separated by ";", fields by ",", each key=value; the four keys each once.
func parseNFSExports(t *testing.T, v string) []exportsEntry {
	t.Helper()
	var out []exportsEntry
	for _, entry := range strings.Split(v, ";") {
		fields := map[string]string{}
		for _, f := range strings.Split(entry, ",") {
			k, val, ok := strings.Cut(f, "=")
			require.True(t, ok, "field %q of entry %q has no '='", f, entry)
			require.NotContains(t, fields, k, "entry %q gives %s twice", entry, k)
			fields[k] = val
		}
		require.Len(t, fields, 4, "entry %q", entry)
		out = append(out, exportsEntry{fields["name"], fields["server"], fields["path"], fields["dir"]})
	}
	return out
}

// checkExportsParse runs the provisioner's class parser, once it knows the
// parameters of issue 11 (pkg/params on main gains them alongside this
// chart; until then the check is skipped with a note).
func checkExportsParse(t *testing.T, sc *storagev1.StorageClass) {
	t.Helper()
	for k := range sc.Parameters {
		if !slices.Contains(params.Keys(), k) {
			t.Logf("pkg/params does not know parameter %q yet: class %s not parsed", k, sc.Name)
			return
		}
	}
	_, err := params.Parse(sc.Parameters)
	assert.NoError(t, err, "the provisioner rejects class %s", sc.Name)
}

// TestExports: each item of `exports` is mounted at /exports/<name> and
// given to the binary in NFS_EXPORTS; one with mountOptions through a
// PV/claim pair like nfs.server's; the classes carry export, capacityCheck
// and overcommitRatio.
func TestExports(t *testing.T) {
	Helm(t) // skips with -short
	objs, err := Render(t, RenderOptions{Values: []string{writeValues(t, severalExportsValues)}})
	require.NoError(t, err)
	const fullname = "nfs-subdir-external-provisioner-nfs-provisioner"

	d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
	c := container(t, d)
	assert.Nil(t, env(c, "NFS_SERVER"), "no export \"default\" without nfs.server")
	assert.Nil(t, env(c, "NFS_PATH"))
	e := env(c, "NFS_EXPORTS")
	require.NotNil(t, e)
	assert.Equal(t, "name=fast,server=10.0.0.1,path=/ssd/k8s,dir=/exports/fast;name=bulk,server=10.0.0.2,path=/hdd/k8s,dir=/exports/bulk", e.Value)
	assert.Equal(t, []exportsEntry{
		{"fast", "10.0.0.1", "/ssd/k8s", "/exports/fast"},
		{"bulk", "10.0.0.2", "/hdd/k8s", "/exports/bulk"},
	}, parseNFSExports(t, e.Value))

	assert.Equal(t, []corev1.VolumeMount{
		{Name: "fast", MountPath: "/exports/fast"},
		{Name: "bulk", MountPath: "/exports/bulk"},
	}, c.VolumeMounts)
	vols := d.Spec.Template.Spec.Volumes
	require.Len(t, vols, 2)
	assert.Equal(t, corev1.Volume{Name: "fast", VolumeSource: corev1.VolumeSource{
		NFS: &corev1.NFSVolumeSource{Server: "10.0.0.1", Path: "/ssd/k8s"},
	}}, vols[0])
	assert.Equal(t, "bulk", vols[1].Name)
	require.NotNil(t, vols[1].PersistentVolumeClaim, "mountOptions: through a PV/claim pair")
	assert.Equal(t, fullname+"-export-bulk", vols[1].PersistentVolumeClaim.ClaimName)

	// The pair, made like nfs.server's (TestIncumbentValues).
	pv := convert[corev1.PersistentVolume](t, One(t, objs, "PersistentVolume"))
	pvc := convert[corev1.PersistentVolumeClaim](t, One(t, objs, "PersistentVolumeClaim"))
	assert.Equal(t, DefaultNamespace+"-"+fullname+"-export-bulk", pv.Name)
	assert.Equal(t, vols[1].PersistentVolumeClaim.ClaimName, pvc.Name)
	assert.Equal(t, DefaultNamespace, pvc.Namespace)
	assert.Equal(t, pv.Name, pvc.Spec.VolumeName)
	require.NotNil(t, pv.Spec.ClaimRef)
	assert.Equal(t, corev1.ObjectReference{Namespace: DefaultNamespace, Name: pvc.Name}, *pv.Spec.ClaimRef)
	assert.Equal(t, []string{"nfsvers=4.1", "hard"}, pv.Spec.MountOptions)
	assert.Equal(t, &corev1.NFSVolumeSource{Server: "10.0.0.2", Path: "/hdd/k8s"}, pv.Spec.NFS)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, pv.Spec.PersistentVolumeReclaimPolicy, "nfs.reclaimPolicy")
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, pv.Spec.AccessModes)
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, pvc.Spec.AccessModes)
	assert.Equal(t, "", pv.Spec.StorageClassName)
	assert.Equal(t, "", *pvc.Spec.StorageClassName)

	classes := map[string]*storagev1.StorageClass{}
	for _, o := range OfKind(objs, "StorageClass") {
		sc := convert[storagev1.StorageClass](t, o)
		classes[sc.Name] = sc
		checkExportsParse(t, sc)
	}
	require.Len(t, classes, 3)
	assert.Equal(t, map[string]string{"archiveOnDelete": "true", "export": "fast", "capacityCheck": "true"}, classes["nfs-fast"].Parameters)
	assert.Empty(t, classes["nfs-fast"].MountOptions, "fast has no mountOptions")
	assert.Equal(t, map[string]string{"export": "bulk", "capacityCheck": "true", "overcommitRatio": "1.5"}, classes["nfs-bulk"].Parameters)
	assert.Equal(t, []string{"nfsvers=4.1", "hard"}, classes["nfs-bulk"].MountOptions, "a class on one export takes its mountOptions")
	assert.Equal(t, map[string]string{"export": "fast,bulk", "capacityCheck": "true"}, classes["nfs-spread"].Parameters)
	assert.Equal(t, []string{"nfsvers=4.1"}, classes["nfs-spread"].MountOptions, "its own")
}

// TestExportsBesideDefault: nfs.server's export ("default") renders as
// before, the items of `exports` are added beside it.
func TestExportsBesideDefault(t *testing.T) {
	Helm(t)                                    // skips with -short
	objs := RenderChart(t, incumbentValues(t), // nfs.server with nfs.mountOptions
		"exports[0].name=fast", "exports[0].server=10.0.0.1", "exports[0].path=/ssd",
		"exports[1].name=bulk", "exports[1].server=10.0.0.2", "exports[1].path=/hdd", "exports[1].mountOptions={nfsvers=3}",
		"extraStorageClasses[0].name=nfs-both", "extraStorageClasses[0].exports={default,fast}", "extraStorageClasses[0].mountOptions={nfsvers=4.1}")
	d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
	c := container(t, d)
	assert.Equal(t, "10.20.30.40", env(c, "NFS_SERVER").Value)
	assert.Equal(t, "/srv/nfs/kubernetes", env(c, "NFS_PATH").Value)
	assert.Equal(t, "name=fast,server=10.0.0.1,path=/ssd,dir=/exports/fast;name=bulk,server=10.0.0.2,path=/hdd,dir=/exports/bulk", env(c, "NFS_EXPORTS").Value)
	assert.Equal(t, []corev1.VolumeMount{
		{Name: "nfs-subdir-external-provisioner-root", MountPath: "/persistentvolumes"},
		{Name: "fast", MountPath: "/exports/fast"},
		{Name: "bulk", MountPath: "/exports/bulk"},
	}, c.VolumeMounts)
	claims := map[string]string{} // pod volume -> claim
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims[v.Name] = v.PersistentVolumeClaim.ClaimName
		}
	}
	assert.Len(t, claims, 2, "nfs.server's and bulk's through a claim, fast inline")
	require.Len(t, OfKind(objs, "PersistentVolume"), 2)
	require.Len(t, OfKind(objs, "PersistentVolumeClaim"), 2)
	for vol, claim := range claims {
		pvc := convert[corev1.PersistentVolumeClaim](t, Find(objs, "PersistentVolumeClaim", claim))
		pv := convert[corev1.PersistentVolume](t, Find(objs, "PersistentVolume", pvc.Spec.VolumeName))
		assert.Equal(t, claim, pv.Spec.ClaimRef.Name, vol)
		switch vol {
		case "bulk":
			assert.Equal(t, []string{"nfsvers=3"}, pv.Spec.MountOptions)
			assert.Equal(t, "10.0.0.2", pv.Spec.NFS.Server)
		default:
			assert.Equal(t, []string{"nfsvers=4.1", "hard"}, pv.Spec.MountOptions)
			assert.Equal(t, "10.20.30.40", pv.Spec.NFS.Server)
		}
	}
	sc := convert[storagev1.StorageClass](t, Find(objs, "StorageClass", "nfs-client"))
	assert.NotContains(t, sc.Parameters, "export", "a class without exports stays as it was")
	both := convert[storagev1.StorageClass](t, Find(objs, "StorageClass", "nfs-both"))
	assert.Equal(t, map[string]string{"export": "default,fast"}, both.Parameters)
}

// TestExportClassParameters: export, capacityCheck and overcommitRatio as
// the values give them, and absent when unset (null), so that classes
// stay as they are on upgrade.
func TestExportClassParameters(t *testing.T) {
	Helm(t) // skips with -short
	values := writeValues(t, `
nfs: {server: nfs.example.com, path: /k8s}
exports:
  - {name: a, server: 10.0.0.1, path: /a}
  - {name: b, server: 10.0.0.2, path: /b}
storageClass:
  exports: null
  capacityCheck: null
  overcommitRatio: null
extraStorageClasses:
  - {name: one, exports: [a]}
  - {name: two, exports: [b, a], capacityCheck: "true", overcommitRatio: "2"}
  - {name: int-ratio, capacityCheck: true, overcommitRatio: 3}
  - {name: big-ratio, capacityCheck: true, overcommitRatio: 1000000}
  - {name: fine-ratio, capacityCheck: true, overcommitRatio: 1.25}
  - {name: unchecked, capacityCheck: false}
  - {name: empty-list, exports: []}
`)
	got := map[string]map[string]string{}
	for _, o := range OfKind(RenderChart(t, values), "StorageClass") {
		sc := convert[storagev1.StorageClass](t, o)
		got[sc.Name] = sc.Parameters
		checkExportsParse(t, sc)
	}
	assert.Equal(t, map[string]map[string]string{
		"nfs-client": {"archiveOnDelete": "true"},
		"one":        {"export": "a"},
		"two":        {"export": "b,a", "capacityCheck": "true", "overcommitRatio": "2"},
		"int-ratio":  {"capacityCheck": "true", "overcommitRatio": "3"},
		"big-ratio":  {"capacityCheck": "true", "overcommitRatio": "1000000"},
		"fine-ratio": {"capacityCheck": "true", "overcommitRatio": "1.25"},
		"unchecked":  {"capacityCheck": "false"},
		"empty-list": nil,
	}, got)
}

// TestExportChecks: what the templates refuse, with the schema out of the
// way where it would refuse first (names, missing server).
func TestExportChecks(t *testing.T) {
	Helm(t) // skips with -short
	two := []string{"exports[0].name=a", "exports[0].server=s1", "exports[0].path=/a",
		"exports[1].name=b", "exports[1].server=s2", "exports[1].path=/b"}
	noServer := func(set ...string) RenderOptions {
		return RenderOptions{Values: []string{}, Set: append(slices.Clone(two), set...)}
	}
	withServer := func(set ...string) RenderOptions {
		return RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: append(slices.Clone(two), set...)}
	}
	cases := map[string]struct {
		o    RenderOptions
		want string
	}{
		"duplicate name": {
			o:    withServer("exports[1].name=a"),
			want: `exports[1].name "a" is used twice`,
		},
		"default beside nfs.server": {
			o:    withServer("exports[1].name=default"),
			want: `exports[1] is named "default", the name of the export nfs.server and nfs.path declare`,
		},
		"not a DNS label": {
			o:    RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: append(slices.Clone(two), "exports[0].name=Fast"), SkipSchema: true},
			want: `exports[0].name "Fast" is not a lowercase DNS label`,
		},
		"too long": {
			o:    RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: append(slices.Clone(two), "exports[0].name="+strings.Repeat("a", 64)), SkipSchema: true},
			want: `is not a lowercase DNS label`,
		},
		"ends with a dash": {
			o:    RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: append(slices.Clone(two), "exports[0].name=a-"), SkipSchema: true},
			want: `exports[0].name "a-" is not a lowercase DNS label`,
		},
		"neither nfs.server nor exports": {
			o:    RenderOptions{Values: []string{}, SkipSchema: true},
			want: "nfs.server is not set and exports is empty",
		},
		"comma in a path": {
			o:    RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: append(slices.Clone(two), `exports[0].path=/a\,b`), SkipSchema: true},
			want: "which NFS_EXPORTS cannot carry",
		},
		"name of nfs.volumeName": {
			o:    withServer("exports[0].name=nfs-subdir-external-provisioner-root"),
			want: `exports[0].name "nfs-subdir-external-provisioner-root" is nfs.volumeName`,
		},
		"class on an unknown export": {
			o:    withServer("storageClass.exports={a,c}"),
			want: `StorageClass "nfs-client" lists export "c", which is not served: the exports are a, b, default`,
		},
		"class on default without nfs.server": {
			o:    noServer("extraStorageClasses[0].name=x", "extraStorageClasses[0].exports={a}"),
			want: `StorageClass "nfs-client" has no exports, so its claims would go to the export "default", which only nfs.server declares`,
		},
		"overcommitRatio without capacityCheck": {
			o:    withServer("extraStorageClasses[0].name=x", "extraStorageClasses[0].overcommitRatio=1.5"),
			want: `StorageClass "x" sets overcommitRatio without capacityCheck: true`,
		},
		"overcommitRatio with capacityCheck false": {
			o:    withServer("storageClass.capacityCheck=false", "storageClass.overcommitRatio=2"),
			want: `StorageClass "nfs-client" sets overcommitRatio without capacityCheck: true`,
		},
		"class over exports with different mount options": {
			o:    withServer("exports[1].mountOptions={nfsvers=3}", "storageClass.exports={a,b}"),
			want: `StorageClass "nfs-client" spreads over exports with different mountOptions (a has [], b has ["nfsvers=3"]): set mountOptions on the class`,
		},
		"nfs.mountOptions without nfs.server": {
			o:    noServer("storageClass.exports={a}", "nfs.mountOptions={hard}"),
			want: "nfs.mountOptions is set but nfs.server is not",
		},
		"NFS_EXPORTS in extraEnv": {
			o:    RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: []string{"extraEnv[0].name=NFS_EXPORTS", "extraEnv[0].value=x"}},
			want: "extraEnv[0] sets NFS_EXPORTS, which the chart sets itself: set exports instead",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			msg := RenderError(t, tc.o)
			assert.Contains(t, msg, tc.want)
			assert.NotContains(t, msg, "values don't meet the specifications of the schema", "the template's check, not the schema's")
		})
	}

	t.Run("allowed", func(t *testing.T) {
		for name, o := range map[string]RenderOptions{
			"default as a name without nfs.server": noServer("exports[0].name=default"),
			"same mount options over two exports": withServer("exports[0].mountOptions={hard}", "exports[1].mountOptions={hard}",
				"storageClass.exports={a,b}"),
			"a 63-character name": withServer("exports[0].name=" + strings.Repeat("a", 63)),
		} {
			t.Run(name, func(t *testing.T) {
				_, err := Render(t, o)
				assert.NoError(t, err)
			})
		}
	})
}

// TestExportSchemaRejects: values.schema.json on the new keys.
func TestExportSchemaRejects(t *testing.T) {
	Helm(t) // skips with -short
	item := []string{"exports[0].name=a", "exports[0].server=s1", "exports[0].path=/a"}
	cases := map[string]struct {
		set  []string
		want []string
	}{
		"item without path":       {set: []string{"exports[0].name=a", "exports[0].server=s1"}, want: []string{"exports.0", "path is required"}},
		"item without name":       {set: []string{"exports[0].server=s1", "exports[0].path=/a"}, want: []string{"exports.0", "name is required"}},
		"item without server":     {set: []string{"exports[0].name=a", "exports[0].path=/a"}, want: []string{"exports.0", "server is required"}},
		"name not a DNS label":    {set: append(slices.Clone(item), "exports[0].name=Fast"), want: []string{"exports.0.name", "Does not match pattern"}},
		"name of 64 characters":   {set: append(slices.Clone(item), "exports[0].name="+strings.Repeat("a", 64)), want: []string{"exports.0.name", "Does not match pattern"}},
		"relative path":           {set: append(slices.Clone(item), "exports[0].path=a"), want: []string{"exports.0.path", "Does not match pattern"}},
		"misspelt item key":       {set: append(slices.Clone(item), "exports[0].mountOption={hard}"), want: []string{"exports.0", "Additional property mountOption is not allowed"}},
		"class export bad name":   {set: []string{"storageClass.exports={A}"}, want: []string{"storageClass.exports.0", "Does not match pattern"}},
		"class export twice":      {set: append(slices.Clone(item), "storageClass.exports={a,a}"), want: []string{"storageClass.exports", "unique"}},
		"class exports a string":  {set: []string{"extraStorageClasses[0].name=x", "extraStorageClasses[0].exports=a"}, want: []string{"extraStorageClasses.0.exports", "Invalid type"}},
		"capacityCheck yes":       {set: []string{"storageClass.capacityCheck=yes"}, want: []string{"storageClass.capacityCheck"}},
		"overcommitRatio zero":    {set: []string{"storageClass.capacityCheck=true", "storageClass.overcommitRatio=0"}, want: []string{"storageClass.overcommitRatio"}},
		"overcommitRatio -1":      {set: []string{"storageClass.capacityCheck=true", "storageClass.overcommitRatio=-1"}, want: []string{"storageClass.overcommitRatio"}},
		"overcommitRatio \"0.0\"": {set: []string{"storageClass.capacityCheck=true", `storageClass.overcommitRatio="0.0"`}, want: []string{"storageClass.overcommitRatio"}},
		"overcommitRatio text":    {set: []string{"extraStorageClasses[0].name=x", "extraStorageClasses[0].capacityCheck=true", "extraStorageClasses[0].overcommitRatio=lots"}, want: []string{"extraStorageClasses.0.overcommitRatio"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			msg := RenderError(t, RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: tc.set})
			assert.Contains(t, msg, "values don't meet the specifications of the schema")
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
		})
	}
	t.Run("nfs.server not required with exports", func(t *testing.T) {
		_, err := Render(t, RenderOptions{Values: []string{}, Set: append(slices.Clone(item), "storageClass.exports={a}")})
		assert.NoError(t, err)
	})
	t.Run("overcommitRatio accepted", func(t *testing.T) {
		for _, v := range []string{"1.5", "2", "0.5", ".5"} {
			_, err := Render(t, RenderOptions{Values: []string{DefaultValuesFile(t)},
				Set: []string{"storageClass.capacityCheck=true"}, SetString: []string{"storageClass.overcommitRatio=" + v}})
			assert.NoError(t, err, v)
		}
	})
}

// TestExportsNotes: the release notes list the exports and the classes'
// exports, and say where a SUCCESS file lands.
func TestExportsNotes(t *testing.T) {
	Helm(t) // skips with -short
	notes := RenderNotes(t, RenderOptions{Values: []string{writeValues(t, severalExportsValues)}})
	for _, want := range []string{
		`NFS export:       10.0.0.1:/ssd/k8s (export "fast", at /exports/fast)`,
		`NFS export:       10.0.0.2:/hdd/k8s (mount options: nfsvers=4.1,hard) (export "bulk", at /exports/bulk)`,
		"StorageClass:     nfs-spread (exports: fast, bulk)",
		"turn Ready once one of them is writable",
		"One Deployment per failure domain",
		"storageClassName: nfs-fast",
		"under the path of the export the claim went to",
	} {
		assert.Contains(t, notes, want)
	}
	assert.NotContains(t, notes, "/nfs-storage", "nfs.path is not used without nfs.server")

	notes = RenderNotes(t, RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: []string{
		"exports[0].name=fast", "exports[0].server=10.0.0.1", "exports[0].path=/ssd"}})
	assert.Contains(t, notes, `NFS export:       nfs.example.com:/exported/path (export "default")`)
	assert.Contains(t, notes, "/exported/path/<namespace>-test-claim-<pv name>/SUCCESS", "the class of export default")
}

// TestExportsReadme: the chart README's example is severalExportsValues
// (rendered by TestExports and TestServerSideDryRun), and it has the
// section on failure domains the notes point to.
func TestExportsReadme(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(ChartDir(t), "README.md"))
	require.NoError(t, err)
	readme := string(raw)
	assert.Contains(t, readme, "\n## Several exports\n")
	assert.Contains(t, readme, "\n### One Deployment per failure domain\n")
	assert.Contains(t, readme, "```yaml\n"+severalExportsValues+"```\n", "the README's example is severalExportsValues")
}

// TestOneReleasePerFailureDomain: the README's two releases, one per NFS
// server, in one namespace: no object of one has the name of one of the
// other, and they have different provisioner names (and so Leases).
func TestOneReleasePerFailureDomain(t *testing.T) {
	Helm(t) // skips with -short

	seen := map[string]string{} // kind/namespace/name -> release
	provisioners := map[string]bool{}
	for _, r := range []struct{ release, server, path, class string }{
		{"nfs-a", "10.0.0.1", "/ssd/k8s", "nfs-a"},
		{"nfs-b", "10.0.0.2", "/hdd/k8s", "nfs-b"},
	} {
		objs, err := Render(t, RenderOptions{Release: r.release, Set: []string{
			"nfs.server=" + r.server, "nfs.path=" + r.path, "storageClass.name=" + r.class}})
		require.NoError(t, err)
		for _, o := range objs {
			key := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
			assert.NotContains(t, seen, key, "%s of release %s", key, r.release)
			seen[key] = r.release
		}
		sc := convert[storagev1.StorageClass](t, One(t, objs, "StorageClass"))
		assert.False(t, provisioners[sc.Provisioner], "provisioner name %s twice", sc.Provisioner)
		provisioners[sc.Provisioner] = true
	}
}
