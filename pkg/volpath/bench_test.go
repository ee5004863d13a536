package volpath

import (
	"strings"
	"testing"
)

// Benchmarks of what runs once per claim (Resolve, hence Expand and
// Validate) and once per PV event (FromNFSPath, Ancestors, for the
// directory index). Run with: go test -run '^$' -bench . -benchmem ./pkg/volpath

func benchClaim() Claim {
	return Claim{
		Namespace: "team-a",
		Name:      "data-mysql-0",
		UID:       "0b6e1f4c-1111-2222-3333-444455556666",
		PVName:    "pvc-0b6e1f4c-1111-2222-3333-444455556666",
		Labels: map[string]string{
			"app": "mysql", "app.kubernetes.io/name": "db", "app.kubernetes.io/instance": "prod",
			"tier": "backend", "team": "payments",
		},
		Annotations: map[string]string{"nfs.io/storage-path": "mysql/primary", "owner": "alice"},
	}
}

func BenchmarkResolve(b *testing.B) {
	c := benchClaim()
	for _, tc := range []struct{ name, pattern string }{
		{"default (no pattern)", ""},
		{"namespace/name", "${.PVC.namespace}/${.PVC.name}"},
		{"labels and annotation", "${.PVC.labels.app.kubernetes.io/name}/${.PVC.labels.tier}/${.PVC.annotations.nfs.io/storage-path}/${.PVC.name}"},
		{"literal only", "shared/static"},
		{"missing label, default", "${.PVC.labels.nope}"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Resolve(tc.pattern, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("refused (..)", func(b *testing.B) {
		c := benchClaim()
		c.Labels["evil"] = ".."
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Resolve("${.PVC.labels.evil}/x", c); err == nil {
				b.Fatal("want a refusal")
			}
		}
	})
}

func BenchmarkExpand(b *testing.B) {
	c := benchClaim()
	for _, tc := range []struct{ name, pattern string }{
		{"one reference", "${.PVC.name}"},
		{"four references", "${.PVC.namespace}/${.PVC.labels.app}/${.PVC.annotations.owner}/${.PV.name}"},
		{"no reference", "a/b/c"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Expand(tc.pattern, c)
			}
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	for _, tc := range []struct{ name, path string }{
		{"flat", "team-a-data-mysql-0-pvc-0b6e1f4c-1111-2222-3333-444455556666"},
		{"nested", "team-a/mysql/primary/data-mysql-0"},
		{"deep, 255-byte segments", strings.Repeat(strings.Repeat("x", 255)+"/", 15) + "x"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := Validate(tc.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFromNFSPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromNFSPath("/srv/nfs/", "/srv/nfs/team-a-data-mysql-0-pvc-0b6e1f4c-1111-2222-3333-444455556666"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNFSPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NFSPath("/srv/nfs/", "team-a/mysql/primary/data-mysql-0")
	}
}

func BenchmarkAncestors(b *testing.B) {
	for _, tc := range []struct{ name, path string }{
		{"flat", "team-a-data-mysql-0"},
		{"4 levels", "team-a/mysql/primary/data-mysql-0"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Ancestors(tc.path)
			}
		})
	}
}

func BenchmarkOverlaps(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Overlaps("team-a/mysql/primary", "team-a/mysql/primary-2")
	}
}

func BenchmarkCheckPattern(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckPattern("${.PVC.namespace}/${.PVC.labels.app}/${.PVC.name}"); err != nil {
			b.Fatal(err)
		}
	}
}
