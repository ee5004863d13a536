package exportfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func BenchmarkMkdirAll(b *testing.B) {
	ctx := context.Background()
	b.Run("new leaf and parent", func(b *testing.B) {
		e := newEnv(b)
		i := 0
		for b.Loop() {
			if _, err := e.fs.MkdirAll(ctx, fmt.Sprintf("ns-%d/pvc", i), DirOptions{Mode: 0o777}, Existing{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("new leaf, 3 existing parents", func(b *testing.B) {
		e := newEnv(b)
		mkdirs(b, e.in("a/b/c"))
		i := 0
		for b.Loop() {
			if _, err := e.fs.MkdirAll(ctx, fmt.Sprintf("a/b/c/pvc-%d", i), DirOptions{Mode: 0o777}, Existing{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("existing", func(b *testing.B) {
		e := newEnv(b)
		for b.Loop() {
			if _, err := e.fs.MkdirAll(ctx, "ns/pvc", DirOptions{Mode: 0o777}, Existing{Any: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("os.MkdirAll+Chmod baseline", func(b *testing.B) {
		e := newEnv(b)
		i := 0
		for b.Loop() {
			p := e.in(fmt.Sprintf("ns-%d/pvc", i))
			if err := os.MkdirAll(p, 0o777); err != nil {
				b.Fatal(err)
			}
			if err := os.Chmod(p, 0o777); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkRemoveAll(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		width int // subdirectories, each with width files
	}{
		{"empty dir", 0},
		{"10x10 tree", 10},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			for b.Loop() {
				b.StopTimer()
				buildTree(b, e.in("pvc"), tc.width)
				b.StartTimer()
				if err := e.fs.RemoveAll(ctx, "pvc"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/os.RemoveAll baseline", func(b *testing.B) {
			e := newEnv(b)
			for b.Loop() {
				b.StopTimer()
				buildTree(b, e.in("pvc"), tc.width)
				b.StartTimer()
				if err := os.RemoveAll(e.in("pvc")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func buildTree(b *testing.B, dir string, width int) {
	mkdirs(b, dir)
	for i := range width {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i))
		mkdirs(b, sub)
		for j := range width {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", j)), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}
