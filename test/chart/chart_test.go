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
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
)

// Settings deploy/ is rendered with (see deploy/deployment.yaml's header).
var deploySettings = RenderOptions{
	Release:   "nfs-provisioner",
	Namespace: "nfs-provisioner",
	Set: []string{
		"nfs.server=nfs.example.com",
		"nfs.path=/exported/path",
		"storageClass.provisionerName=k8s-sigs.io/nfs-subdir-external-provisioner",
	},
}

func incumbentValues(t *testing.T) string {
	return filepath.Join(RepoRoot(t), "test", "chart", "testdata", "incumbent-values.yaml")
}

// convert turns an unstructured object into a typed one, rejecting unknown
// fields (a misspelt key in a template).
func convert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	require.NotNil(t, u)
	out := new(T)
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true),
		"%s %s", u.GetKind(), u.GetName())
	return out
}

func container(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	require.Len(t, d.Spec.Template.Spec.Containers, 1)
	return d.Spec.Template.Spec.Containers[0]
}

func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func TestLint(t *testing.T) {
	Helm(t) // skips with -short
	for name, values := range map[string]string{
		"defaults":        DefaultValuesFile(t),
		"incumbent":       incumbentValues(t),
		"several exports": writeValues(t, severalExportsValues),
	} {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, err := RunHelm(t, "lint", "--strict", ChartDir(t), "--values", values)
			require.NoError(t, err, "%s\n%s", stdout, stderr)
			assert.Contains(t, stdout, "0 chart(s) failed")
			assert.NotContains(t, stdout, "[WARNING]")
			assert.NotContains(t, stdout, "[ERROR]")
		})
	}
}

func TestDefaults(t *testing.T) {
	Helm(t) // skips with -short
	objs := RenderChart(t, "")
	const fullname = "nfs-subdir-external-provisioner-nfs-provisioner"
	const provisioner = "cluster.local/nfs-subdir-external-provisioner"

	for _, o := range objs {
		if o.GetKind() == "StorageClass" || strings.HasPrefix(o.GetKind(), "Cluster") || o.GetKind() == "PersistentVolume" {
			assert.Empty(t, o.GetNamespace(), "%s %s is cluster-scoped", o.GetKind(), o.GetName())
		} else {
			assert.Equal(t, DefaultNamespace, o.GetNamespace(), "%s %s", o.GetKind(), o.GetName())
		}
	}

	t.Run("deployment", func(t *testing.T) {
		d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
		assert.Equal(t, fullname, d.Name)
		require.NotNil(t, d.Spec.Replicas)
		assert.EqualValues(t, 2, *d.Spec.Replicas)
		assert.Equal(t, appsv1.RollingUpdateDeploymentStrategyType, d.Spec.Strategy.Type)
		assert.Equal(t, fullname, d.Spec.Template.Spec.ServiceAccountName)
		c := container(t, d)
		assert.Equal(t, "ghcr.io/kube-nfs/nfs-provisioner:v0.1.0", c.Image)
		assert.Empty(t, c.Command, "the image's ENTRYPOINT runs /nfs-provisioner")

		for name, want := range map[string]string{
			"PROVISIONER_NAME":       provisioner,
			"NFS_SERVER":             "nfs.example.com",
			"NFS_PATH":               "/exported/path",
			"ENABLE_LEADER_ELECTION": "true",
		} {
			e := env(c, name)
			if assert.NotNil(t, e, name) {
				assert.Equal(t, want, e.Value, name)
			}
		}
		for name, field := range map[string]string{"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"} {
			e := env(c, name)
			if assert.NotNil(t, e, name) && assert.NotNil(t, e.ValueFrom, name) && assert.NotNil(t, e.ValueFrom.FieldRef, name) {
				assert.Equal(t, field, e.ValueFrom.FieldRef.FieldPath, name)
			}
		}

		require.Len(t, c.Ports, 1)
		assert.Equal(t, "http", c.Ports[0].Name)
		assert.EqualValues(t, 8080, c.Ports[0].ContainerPort)
		for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
			if assert.NotNil(t, probe) && assert.NotNil(t, probe.HTTPGet) {
				assert.Equal(t, path, probe.HTTPGet.Path)
				assert.Equal(t, "http", probe.HTTPGet.Port.String())
			}
		}

		require.Len(t, c.VolumeMounts, 1)
		assert.Equal(t, "/persistentvolumes", c.VolumeMounts[0].MountPath)
		assert.Equal(t, "nfs-subdir-external-provisioner-root", c.VolumeMounts[0].Name)
		vols := d.Spec.Template.Spec.Volumes
		require.Len(t, vols, 1)
		assert.Equal(t, "nfs-subdir-external-provisioner-root", vols[0].Name)
		if assert.NotNil(t, vols[0].NFS) {
			assert.Equal(t, "nfs.example.com", vols[0].NFS.Server)
			assert.Equal(t, "/exported/path", vols[0].NFS.Path)
		}

		sc := c.SecurityContext
		require.NotNil(t, sc)
		assert.Equal(t, new(true), sc.ReadOnlyRootFilesystem)
		assert.Equal(t, new(false), sc.AllowPrivilegeEscalation)
		if assert.NotNil(t, sc.SeccompProfile) {
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
		}
		if assert.NotNil(t, sc.Capabilities) {
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
			assert.ElementsMatch(t, []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"}, sc.Capabilities.Add)
		}
		psc := d.Spec.Template.Spec.SecurityContext
		if assert.NotNil(t, psc) && assert.NotNil(t, psc.RunAsUser) {
			assert.EqualValues(t, 0, *psc.RunAsUser, "root by default, for no_root_squash exports")
		}
		if aff := d.Spec.Template.Spec.Affinity; assert.NotNil(t, aff) && assert.NotNil(t, aff.PodAntiAffinity) {
			assert.Len(t, aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1, "replicas spread over nodes")
		}
	})

	t.Run("storageclass", func(t *testing.T) {
		sc := convert[storagev1.StorageClass](t, One(t, objs, "StorageClass"))
		assert.Equal(t, "nfs-client", sc.Name)
		assert.Equal(t, provisioner, sc.Provisioner)
		// Exactly the incumbent's default parameters: they are immutable,
		// so anything more would break `helm upgrade` from the incumbent.
		assert.Equal(t, map[string]string{"archiveOnDelete": "true"}, sc.Parameters)
		assert.Equal(t, corev1.PersistentVolumeReclaimDelete, *sc.ReclaimPolicy)
		assert.Equal(t, storagev1.VolumeBindingImmediate, *sc.VolumeBindingMode)
		assert.Equal(t, new(true), sc.AllowVolumeExpansion)
		assert.Empty(t, sc.MountOptions)
		assert.NotContains(t, sc.Annotations, "storageclass.kubernetes.io/is-default-class")
	})

	t.Run("pdb", func(t *testing.T) {
		pdb := convert[policyv1.PodDisruptionBudget](t, One(t, objs, "PodDisruptionBudget"))
		if assert.NotNil(t, pdb.Spec.MinAvailable) {
			assert.Equal(t, "1", pdb.Spec.MinAvailable.String())
		}
		assert.Nil(t, pdb.Spec.MaxUnavailable)
		d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
		assert.Equal(t, d.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels)
	})

	t.Run("service", func(t *testing.T) {
		svc := convert[corev1.Service](t, One(t, objs, "Service"))
		require.Len(t, svc.Spec.Ports, 1)
		assert.Equal(t, "http", svc.Spec.Ports[0].Name)
		assert.EqualValues(t, 8080, svc.Spec.Ports[0].Port)
		assert.Equal(t, "http", svc.Spec.Ports[0].TargetPort.String())
		d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
		assert.Equal(t, d.Spec.Selector.MatchLabels, svc.Spec.Selector)
		assert.Empty(t, OfKind(objs, "ServiceMonitor"), "ServiceMonitor is opt-in")
	})

	t.Run("no root volume without mount options", func(t *testing.T) {
		assert.Empty(t, OfKind(objs, "PersistentVolume"))
		assert.Empty(t, OfKind(objs, "PersistentVolumeClaim"))
	})
}

// rbacRules returns every rule of every Role and ClusterRole, by object.
func rbacRules(t *testing.T, objs []*unstructured.Unstructured) map[string][]rbacv1.PolicyRule {
	t.Helper()
	rules := map[string][]rbacv1.PolicyRule{}
	for _, o := range OfKind(objs, "ClusterRole") {
		rules["ClusterRole/"+o.GetName()] = convert[rbacv1.ClusterRole](t, o).Rules
	}
	for _, o := range OfKind(objs, "Role") {
		rules["Role/"+o.GetName()] = convert[rbacv1.Role](t, o).Rules
	}
	return rules
}

func TestRBAC(t *testing.T) {
	Helm(t) // skips with -short
	for name, objs := range map[string][]*unstructured.Unstructured{
		"defaults":  RenderChart(t, ""),
		"incumbent": RenderChart(t, incumbentValues(t)),
	} {
		t.Run(name, func(t *testing.T) {
			all := rbacRules(t, objs)
			require.Len(t, all, 2, "one ClusterRole and one Role")
			for obj, rules := range all {
				for _, r := range rules {
					for _, s := range slices.Concat(r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs) {
						assert.NotContains(t, s, "*", "%s: wildcard in %+v", obj, r)
					}
					if slices.Contains(r.Resources, "endpoints") {
						// Only the incumbent's leader record, only read.
						assert.Equal(t, []string{"get"}, r.Verbs, "%s: %+v", obj, r)
						assert.Len(t, r.ResourceNames, 1, "%s: %+v", obj, r)
					}
					assert.Empty(t, r.NonResourceURLs, obj)
				}
			}

			cr := convert[rbacv1.ClusterRole](t, One(t, objs, "ClusterRole"))
			want := []rbacv1.PolicyRule{
				// Informers list and watch; the library creates PVs and
				// deletes released ones, updates a WaitForFirstConsumer
				// claim to reschedule it, and reads nodes and classes from
				// the informers' caches (never get) but for a clone's source
				// claim and PV, whose claim's finalizers it patches.
				// Resizing patches the PV's capacity and the claim's status,
				// and updates the claim's annotations.
				{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "delete", "patch"}},
				{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
				{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims/status"}, Verbs: []string{"patch"}},
				{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
				// client-go's event recorder: create, and patch a repeat.
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			}
			assert.Equal(t, want, cr.Rules)

			// The Role names the Lease the binary really uses.
			sc := convert[storagev1.StorageClass](t, One(t, objs, "StorageClass"))
			lease := (&config.Options{ProvisionerName: sc.Provisioner}).LeaseName()
			role := convert[rbacv1.Role](t, One(t, objs, "Role"))
			assert.Equal(t, []rbacv1.PolicyRule{
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{lease}, Verbs: []string{"get", "update"}},
				// The incumbent's leader record, read before standing by.
				{APIGroups: []string{""}, Resources: []string{"endpoints"}, ResourceNames: []string{lease}, Verbs: []string{"get"}},
			}, role.Rules)

			sa := One(t, objs, "ServiceAccount")
			for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
				b := convert[rbacv1.RoleBinding](t, One(t, objs, kind))
				require.Len(t, b.Subjects, 1, kind)
				assert.Equal(t, rbacv1.Subject{Kind: "ServiceAccount", Name: sa.GetName(), Namespace: DefaultNamespace}, b.Subjects[0], kind)
			}
			assert.Equal(t, cr.Name, convert[rbacv1.ClusterRoleBinding](t, One(t, objs, "ClusterRoleBinding")).RoleRef.Name)
			assert.Equal(t, role.Name, convert[rbacv1.RoleBinding](t, One(t, objs, "RoleBinding")).RoleRef.Name)
		})
	}

	t.Run("no leader election: only the incumbent's record", func(t *testing.T) {
		// Without election the binary still waits for the incumbent, so it
		// must be able to read its record.
		objs := RenderChart(t, "", "leaderElection.enabled=false", "replicaCount=1")
		role := convert[rbacv1.Role](t, One(t, objs, "Role"))
		assert.Equal(t, []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints"}, ResourceNames: []string{"cluster.local-nfs-subdir-external-provisioner"}, Verbs: []string{"get"}},
		}, role.Rules)
		assert.Equal(t, role.Name, convert[rbacv1.RoleBinding](t, One(t, objs, "RoleBinding")).RoleRef.Name)
		c := container(t, convert[appsv1.Deployment](t, One(t, objs, "Deployment")))
		assert.Equal(t, "false", env(c, "ENABLE_LEADER_ELECTION").Value)
	})

	t.Run("rbac.create=false", func(t *testing.T) {
		objs := RenderChart(t, "", "rbac.create=false")
		assert.Empty(t, rbacRules(t, objs))
		assert.Empty(t, OfKind(objs, "ClusterRoleBinding"))
		assert.Empty(t, OfKind(objs, "RoleBinding"))
	})
}

// TestIncumbentValues renders a values file written for the incumbent chart
// and checks each of its settings kept its meaning.
func TestIncumbentValues(t *testing.T) {
	Helm(t) // skips with -short
	objs := RenderChart(t, incumbentValues(t))

	sc := convert[storagev1.StorageClass](t, One(t, objs, "StorageClass"))
	assert.Equal(t, "nfs-client", sc.Name)
	assert.Equal(t, "cluster.local/nfs-subdir-external-provisioner", sc.Provisioner, "the incumbent's default provisioner name")
	// What the incumbent's template renders for these values.
	assert.Equal(t, map[string]string{
		"archiveOnDelete": "false",
		"onDelete":        "retain",
		"pathPattern":     "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}",
	}, sc.Parameters)
	assert.Equal(t, []string{"nfsvers=4.1", "hard"}, sc.MountOptions)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, *sc.ReclaimPolicy)
	assert.Equal(t, storagev1.VolumeBindingImmediate, *sc.VolumeBindingMode)
	assert.Equal(t, new(true), sc.AllowVolumeExpansion)
	assert.Equal(t, "true", sc.Annotations["storageclass.kubernetes.io/is-default-class"])
	assert.Equal(t, "platform-team", sc.Annotations["example.com/owner"])

	d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
	assert.EqualValues(t, 1, *d.Spec.Replicas)
	assert.Equal(t, appsv1.RecreateDeploymentStrategyType, d.Spec.Strategy.Type)
	pod := d.Spec.Template.Spec
	assert.Equal(t, "system-cluster-critical", pod.PriorityClassName)
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "registry-credentials"}}, pod.ImagePullSecrets)
	assert.Equal(t, map[string]string{"kubernetes.io/os": "linux"}, pod.NodeSelector)
	require.Len(t, pod.Tolerations, 1)
	assert.Equal(t, "node-role.kubernetes.io/control-plane", pod.Tolerations[0].Key)
	assert.Nil(t, pod.Affinity, "no spreading for a single replica")
	assert.Equal(t, "storage", d.Spec.Template.Labels["team"])
	assert.Equal(t, "storage", d.Labels["team"])
	assert.Equal(t, "nfs-subdir-external-provisioner-root", d.Spec.Template.Annotations["backup.velero.io/backup-volumes-excludes"])
	c := container(t, d)
	assert.Equal(t, "128Mi", c.Resources.Limits.Memory().String())
	assert.Equal(t, "10.20.30.40", env(c, "NFS_SERVER").Value)
	assert.Equal(t, "/srv/nfs/kubernetes", env(c, "NFS_PATH").Value)
	assert.Equal(t, "cluster.local/nfs-subdir-external-provisioner", env(c, "PROVISIONER_NAME").Value)
	// `securityContext: {}` in the incumbent's file keeps our defaults:
	// helm merges maps.
	if assert.NotNil(t, c.SecurityContext) {
		assert.Equal(t, new(true), c.SecurityContext.ReadOnlyRootFilesystem)
	}

	// nfs.mountOptions: the export is mounted through a PV/PVC pair, like
	// the incumbent does, with nfs.reclaimPolicy.
	require.Len(t, pod.Volumes, 1)
	vol := pod.Volumes[0]
	assert.Equal(t, "nfs-subdir-external-provisioner-root", vol.Name)
	require.NotNil(t, vol.PersistentVolumeClaim)
	pvc := convert[corev1.PersistentVolumeClaim](t, Find(objs, "PersistentVolumeClaim", vol.PersistentVolumeClaim.ClaimName))
	pv := convert[corev1.PersistentVolume](t, One(t, objs, "PersistentVolume"))
	assert.Equal(t, pv.Name, pvc.Spec.VolumeName)
	require.NotNil(t, pv.Spec.ClaimRef)
	assert.Equal(t, pvc.Name, pv.Spec.ClaimRef.Name)
	assert.Equal(t, DefaultNamespace, pv.Spec.ClaimRef.Namespace)
	assert.Equal(t, []string{"nfsvers=4.1", "hard"}, pv.Spec.MountOptions)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, pv.Spec.PersistentVolumeReclaimPolicy)
	require.NotNil(t, pv.Spec.NFS)
	assert.Equal(t, "10.20.30.40", pv.Spec.NFS.Server)
	assert.Equal(t, "/srv/nfs/kubernetes", pv.Spec.NFS.Path)
	assert.Equal(t, "", *pvc.Spec.StorageClassName)
	assert.Equal(t, "", pv.Spec.StorageClassName)

	// podDisruptionBudget.enabled: false with one replica: none, as the
	// incumbent.
	assert.Empty(t, OfKind(objs, "PodDisruptionBudget"))
}

func TestIncumbentImageRejected(t *testing.T) {
	Helm(t) // skips with -short
	msg := RenderError(t, RenderOptions{
		Values: []string{incumbentValues(t)},
		Set:    []string{"image.repository=registry.k8s.io/sig-storage/nfs-subdir-external-provisioner", "image.tag=v4.0.2"},
	})
	assert.Contains(t, msg, "the incumbent's image")
}

// TestSchemaRejects checks that values.schema.json stops wrong values at
// install time with a message naming the value.
func TestSchemaRejects(t *testing.T) {
	Helm(t) // skips with -short
	cases := map[string]struct {
		o    RenderOptions
		want []string
	}{
		"unknown onDelete": {
			o:    RenderOptions{Set: []string{"storageClass.onDelete=foo"}},
			want: []string{"storageClass.onDelete", `must be one of the following: "delete", "retain", "archive"`},
		},
		"replicaCount not a number": {
			o:    RenderOptions{Set: []string{"replicaCount=x"}},
			want: []string{"replicaCount", "Expected: integer, given: string"},
		},
		"missing nfs.server": {
			o:    RenderOptions{Values: []string{}, Set: []string{"nfs.path=/x"}},
			want: []string{"nfs", "server is required"},
		},
		"relative nfs.path": {
			o:    RenderOptions{Set: []string{"nfs.path=exports/k8s"}},
			want: []string{"nfs.path", "Does not match pattern"},
		},
		"unquoted mode": {
			o:    RenderOptions{Set: []string{"storageClass.mode=770"}},
			want: []string{"storageClass.mode", "Expected: [string,null], given: integer"},
		},
		"bad mode": {
			o:    RenderOptions{SetString: []string{"storageClass.mode=0999"}},
			want: []string{"storageClass.mode", "Does not match pattern"},
		},
		"misspelt storageClass key": {
			o:    RenderOptions{Set: []string{"storageClass.archiveOnDeletion=false"}},
			want: []string{"storageClass", "Additional property archiveOnDeletion is not allowed"},
		},
		"extra class without a name": {
			o:    RenderOptions{Set: []string{"extraStorageClasses[0].onDelete=retain"}},
			want: []string{"extraStorageClasses.0", "name is required"},
		},
		"extra class with a bad binding mode": {
			o:    RenderOptions{Set: []string{"extraStorageClasses[0].name=x", "extraStorageClasses[0].volumeBindingMode=Later"}},
			want: []string{"extraStorageClasses.0.volumeBindingMode"},
		},
		"negative uid": {
			o:    RenderOptions{Set: []string{"storageClass.uid=-1"}},
			want: []string{"storageClass.uid"},
		},
		"bad lease duration": {
			o:    RenderOptions{Set: []string{"leaderElection.leaseDuration=15"}},
			want: []string{"leaderElection.leaseDuration"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := tc.o
			if o.Values == nil {
				o.Values = []string{DefaultValuesFile(t)}
			}
			msg := RenderError(t, o)
			assert.Contains(t, msg, "values don't meet the specifications of the schema")
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

// TestTemplateChecks covers what the schema cannot express.
func TestTemplateChecks(t *testing.T) {
	Helm(t) // skips with -short
	cases := map[string]struct {
		set  []string
		want string
	}{
		"two replicas without leader election": {
			set:  []string{"leaderElection.enabled=false"},
			want: "leaderElection.enabled=false with replicaCount=2",
		},
		"duplicate class name": {
			set:  []string{"extraStorageClasses[0].name=nfs-client"},
			want: `StorageClass name "nfs-client" is used twice`,
		},
		"two default classes": {
			set:  []string{"storageClass.defaultClass=true", "extraStorageClasses[0].name=b", "extraStorageClasses[0].defaultClass=true"},
			want: "more than one StorageClass has defaultClass: true",
		},
		"ServiceMonitor without Service": {
			set:  []string{"metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"},
			want: "metrics.serviceMonitor.enabled needs metrics.service.enabled",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			msg := RenderError(t, RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: tc.set})
			assert.Contains(t, msg, tc.want)
		})
	}
}

// TestStorageClassParameters checks the parameters of every class, and that
// the provisioner's own parser accepts them.
func TestStorageClassParameters(t *testing.T) {
	Helm(t) // skips with -short
	values := filepath.Join(t.TempDir(), "values.yaml")
	require.NoError(t, os.WriteFile(values, []byte(`
nfs:
  server: nfs.example.com
  path: /exports/k8s
  mountOptions: [nfsvers=4.1]
storageClass:
  mode: "2775"
  uid: 1000
  gid: "2000"
  allowSharedPath: true
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
`), 0o644))
	objs := RenderChart(t, values)
	classes := map[string]*storagev1.StorageClass{}
	for _, o := range OfKind(objs, "StorageClass") {
		sc := convert[storagev1.StorageClass](t, o)
		classes[sc.Name] = sc
		assert.Equal(t, "cluster.local/nfs-subdir-external-provisioner", sc.Provisioner, sc.Name)
		_, err := params.Parse(sc.Parameters)
		assert.NoError(t, err, "the provisioner rejects class %s", sc.Name)
	}
	require.Len(t, classes, 4)

	main := classes["nfs-client"]
	assert.Equal(t, map[string]string{
		"archiveOnDelete": "true",
		"pathPattern":     "${.PVC.namespace}/${.PVC.name}",
		"mode":            "2775",
		"uid":             "1000",
		"gid":             "2000",
		"allowSharedPath": "true",
	}, main.Parameters)
	assert.Equal(t, []string{"nfsvers=4.1"}, main.MountOptions)

	retain := classes["nfs-retain"]
	assert.Equal(t, map[string]string{"onDelete": "retain"}, retain.Parameters)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, *retain.ReclaimPolicy)
	assert.Equal(t, storagev1.VolumeBindingWaitForFirstConsumer, *retain.VolumeBindingMode)
	assert.Equal(t, new(false), retain.AllowVolumeExpansion)
	assert.Equal(t, []string{"nfsvers=3", "nolock"}, retain.MountOptions)
	assert.Equal(t, "storage", retain.Annotations["team"])

	del := classes["nfs-delete"]
	assert.Equal(t, map[string]string{"archiveOnDelete": "false", "allowSharedPath": "false", "uid": "0"}, del.Parameters)
	assert.Empty(t, del.MountOptions, "an explicit empty list overrides nfs.mountOptions")

	plain := classes["nfs-plain"]
	assert.Empty(t, plain.Parameters, "the provisioner's defaults apply")
	assert.Equal(t, []string{"nfsvers=4.1"}, plain.MountOptions, "inherits nfs.mountOptions")
	assert.Equal(t, corev1.PersistentVolumeReclaimDelete, *plain.ReclaimPolicy)
	assert.Equal(t, new(true), plain.AllowVolumeExpansion)

	t.Run("incumbent's path pattern", func(t *testing.T) {
		sc := convert[storagev1.StorageClass](t, One(t, RenderChart(t, incumbentValues(t)), "StorageClass"))
		_, err := params.Parse(sc.Parameters)
		assert.NoError(t, err)
	})
}

func TestPodDisruptionBudget(t *testing.T) {
	Helm(t) // skips with -short
	cases := map[string]struct {
		set            []string
		none           bool
		minAvail, maxU string
	}{
		"default":                            {minAvail: "1"},
		"maxUnavailable wins":                {set: []string{"podDisruptionBudget.maxUnavailable=1"}, maxU: "1"},
		"percent":                            {set: []string{"podDisruptionBudget.minAvailable=50%"}, minAvail: "50%"},
		"one replica: would block drains":    {set: []string{"replicaCount=1"}, none: true},
		"one replica with maxUnavailable":    {set: []string{"replicaCount=1", "podDisruptionBudget.maxUnavailable=1"}, maxU: "1"},
		"disabled, one replica (incumbent)":  {set: []string{"replicaCount=1", "podDisruptionBudget.enabled=false"}, none: true},
		"disabled, two replicas (incumbent)": {set: []string{"podDisruptionBudget.enabled=false", "podDisruptionBudget.maxUnavailable=1"}, maxU: "1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pdbs := OfKind(RenderChart(t, "", tc.set...), "PodDisruptionBudget")
			if tc.none {
				assert.Empty(t, pdbs)
				return
			}
			require.Len(t, pdbs, 1)
			pdb := convert[policyv1.PodDisruptionBudget](t, pdbs[0])
			if tc.minAvail != "" {
				require.NotNil(t, pdb.Spec.MinAvailable)
				assert.Equal(t, tc.minAvail, pdb.Spec.MinAvailable.String())
				assert.Nil(t, pdb.Spec.MaxUnavailable)
			} else {
				require.NotNil(t, pdb.Spec.MaxUnavailable)
				assert.Equal(t, tc.maxU, pdb.Spec.MaxUnavailable.String())
				assert.Nil(t, pdb.Spec.MinAvailable)
			}
		})
	}
}

func TestOptionalObjects(t *testing.T) {
	Helm(t) // skips with -short
	t.Run("ServiceMonitor", func(t *testing.T) {
		objs := RenderChart(t, "", "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kube-prometheus-stack")
		sm := One(t, objs, "ServiceMonitor")
		assert.Equal(t, "monitoring.coreos.com/v1", sm.GetAPIVersion())
		assert.Equal(t, "kube-prometheus-stack", sm.GetLabels()["release"])
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		require.Len(t, endpoints, 1)
		assert.Equal(t, "http", endpoints[0].(map[string]any)["port"])
		assert.Equal(t, "/metrics", endpoints[0].(map[string]any)["path"])
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		svc := One(t, objs, "Service")
		for k, v := range sel {
			assert.Equal(t, v, svc.GetLabels()[k], "ServiceMonitor selects the Service by %s", k)
		}
	})
	t.Run("no Service", func(t *testing.T) {
		assert.Empty(t, OfKind(RenderChart(t, "", "metrics.service.enabled=false"), "Service"))
	})
	t.Run("extra args and env, lease timings", func(t *testing.T) {
		objs := RenderChart(t, "", "extraArgs={--workers=16,--fs-timeout=1m}",
			"extraEnv[0].name=KUBE_API_QPS", "extraEnv[0].value=50", "leaderElection.leaseDuration=30s",
			"extraEnv[1].name=NODE", "extraEnv[1].valueFrom.fieldRef.fieldPath=spec.nodeName")
		c := container(t, convert[appsv1.Deployment](t, One(t, objs, "Deployment")))
		assert.Equal(t, []string{"--workers=16", "--fs-timeout=1m"}, c.Args)
		assert.Equal(t, "50", env(c, "KUBE_API_QPS").Value, "a number is quoted")
		assert.Equal(t, "spec.nodeName", env(c, "NODE").ValueFrom.FieldRef.FieldPath)
		assert.Equal(t, "30s", env(c, "LEADER_ELECT_LEASE_DURATION").Value)
		assert.Nil(t, env(c, "LEADER_ELECT_RENEW_DEADLINE"))
	})
	t.Run("existing service account", func(t *testing.T) {
		objs := RenderChart(t, "", "serviceAccount.create=false", "serviceAccount.name=shared")
		assert.Empty(t, OfKind(objs, "ServiceAccount"))
		d := convert[appsv1.Deployment](t, One(t, objs, "Deployment"))
		assert.Equal(t, "shared", d.Spec.Template.Spec.ServiceAccountName)
		b := convert[rbacv1.ClusterRoleBinding](t, One(t, objs, "ClusterRoleBinding"))
		assert.Equal(t, "shared", b.Subjects[0].Name)
	})
	t.Run("names", func(t *testing.T) {
		objs := RenderChart(t, "", "fullnameOverride=nfs")
		assert.NotNil(t, Find(objs, "Deployment", "nfs"))
		sc := convert[storagev1.StorageClass](t, One(t, objs, "StorageClass"))
		assert.Equal(t, "cluster.local/nfs", sc.Provisioner, "the incumbent's provisioner name for fullnameOverride")
		objs = RenderChart(t, "", "storageClass.provisionerName=example.com/nfs")
		sc = convert[storagev1.StorageClass](t, One(t, objs, "StorageClass"))
		assert.Equal(t, "example.com/nfs", sc.Provisioner)
		c := container(t, convert[appsv1.Deployment](t, One(t, objs, "Deployment")))
		assert.Equal(t, "example.com/nfs", env(c, "PROVISIONER_NAME").Value)
	})
}

func TestNotes(t *testing.T) {
	Helm(t) // skips with -short
	notes := RenderNotes(t, RenderOptions{Values: []string{DefaultValuesFile(t)}})
	for _, want := range []string{
		"kubectl -n nfs-provisioner get pods",
		"get lease cluster.local-nfs-subdir-external-provisioner",
		"name: test-claim",
		"storageClassName: nfs-client",
		"SUCCESS",
		"/metrics",
	} {
		assert.Contains(t, notes, want)
	}
	assert.NotContains(t, notes, "WARNING")

	notes = RenderNotes(t, RenderOptions{Values: []string{incumbentValues(t)}, Set: []string{"podSecurityPolicy.enabled=true"}})
	assert.Contains(t, notes, "accessModes: [ReadWriteMany]")
	assert.Contains(t, notes, "podSecurityPolicy.enabled is ignored")
}

// deployObjects reads the manifests deploy/kustomization.yaml lists.
func deployObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), "deploy")
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	var k struct {
		Namespace string   `json:"namespace"`
		Resources []string `json:"resources"`
	}
	require.NoError(t, yaml.Unmarshal(data, &k))
	assert.Equal(t, "nfs-provisioner", k.Namespace)
	assert.Subset(t, k.Resources, []string{"rbac.yaml", "deployment.yaml", "class.yaml", "pdb.yaml", "service.yaml"})
	assert.NotContains(t, k.Resources, "test-claim.yaml", "users apply the test claim separately")
	assert.NotContains(t, k.Resources, "test-pod.yaml", "users apply the test pod separately")
	paths := make([]string, len(k.Resources))
	for i, r := range k.Resources {
		paths[i] = filepath.Join(dir, r)
	}
	return LoadManifests(t, paths...)
}

// TestDeployMatchesChart checks that deploy/ is the chart's default
// rendering (with deploySettings). After changing the chart, re-render with
//
//	helm template nfs-provisioner charts/nfs-provisioner -n nfs-provisioner \
//	  --set nfs.server=nfs.example.com --set nfs.path=/exported/path \
//	  --set storageClass.provisionerName=k8s-sigs.io/nfs-subdir-external-provisioner
//
// and carry the change into deploy/*.yaml (without the helm.sh/chart and
// app.kubernetes.io/managed-by labels, keeping the files' header comments).
func TestDeployMatchesChart(t *testing.T) {
	Helm(t) // skips with -short
	deploy := deployObjects(t)
	chart, err := Render(t, deploySettings)
	require.NoError(t, err)

	for _, o := range chart {
		d := Find(deploy, o.GetKind(), o.GetName())
		if !assert.NotNil(t, d, "deploy/ lacks %s %s", o.GetKind(), o.GetName()) {
			continue
		}
		assert.Equal(t, o.GetNamespace(), d.GetNamespace(), "%s %s", o.GetKind(), o.GetName())
		assert.Equal(t, o.GetAPIVersion(), d.GetAPIVersion(), "%s %s", o.GetKind(), o.GetName())
		switch o.GetKind() {
		case "ClusterRole", "Role":
			assert.Equal(t, o.Object["rules"], d.Object["rules"], "%s %s: rules", o.GetKind(), o.GetName())
		case "ClusterRoleBinding", "RoleBinding":
			assert.Equal(t, o.Object["subjects"], d.Object["subjects"], "%s %s", o.GetKind(), o.GetName())
			assert.Equal(t, o.Object["roleRef"], d.Object["roleRef"], "%s %s", o.GetKind(), o.GetName())
		case "StorageClass":
			for _, f := range []string{"provisioner", "parameters", "reclaimPolicy", "volumeBindingMode", "allowVolumeExpansion", "mountOptions"} {
				assert.Equal(t, o.Object[f], d.Object[f], "StorageClass %s: %s", o.GetName(), f)
			}
		case "ServiceAccount":
		default:
			// Deployment (container spec, probes, env, security, volumes
			// included), PodDisruptionBudget, Service.
			assert.Equal(t, o.Object["spec"], d.Object["spec"], "%s %s: spec", o.GetKind(), o.GetName())
		}
	}
	for _, d := range deploy {
		if d.GetKind() == "Namespace" {
			assert.Equal(t, "nfs-provisioner", d.GetName())
			continue
		}
		assert.NotNil(t, Find(chart, d.GetKind(), d.GetName()), "deploy/ has %s %s, which the chart does not render", d.GetKind(), d.GetName())
	}

	// Spelled out, for the reader: the container spec and the RBAC rules.
	dd := convert[appsv1.Deployment](t, Find(deploy, "Deployment", "nfs-provisioner"))
	cd := convert[appsv1.Deployment](t, Find(chart, "Deployment", "nfs-provisioner"))
	assert.Equal(t, container(t, cd), container(t, dd))
	assert.Equal(t, rbacRules(t, chart), rbacRules(t, deploy))
}

func TestDeployTestClaimAndPod(t *testing.T) {
	Helm(t) // skips with -short
	dir := filepath.Join(RepoRoot(t), "deploy")
	objs := LoadManifests(t, filepath.Join(dir, "test-claim.yaml"), filepath.Join(dir, "test-pod.yaml"))
	pvc := convert[corev1.PersistentVolumeClaim](t, Find(objs, "PersistentVolumeClaim", "test-claim"))
	class := convert[storagev1.StorageClass](t, One(t, deployObjects(t), "StorageClass"))
	assert.Equal(t, class.Name, *pvc.Spec.StorageClassName)
	pod := convert[corev1.Pod](t, Find(objs, "Pod", "test-pod"))
	require.Len(t, pod.Spec.Volumes, 1)
	assert.Equal(t, "test-claim", pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName)
	assert.Contains(t, strings.Join(pod.Spec.Containers[0].Command, " "), "touch /mnt/SUCCESS")
	assert.Equal(t, corev1.RestartPolicyNever, pod.Spec.RestartPolicy)
}
