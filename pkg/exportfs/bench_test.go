package exportfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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

// BenchmarkRemoveAllLarge removes trees a tenant may build, deep and wide,
// and rm -rf the same trees as a baseline. entries/s counts files and
// directories removed per second of wall time, entries/cpu-s per second of
// CPU time (user and system, of the whole test process or of rm), which a
// busy machine distorts less; B/op of RemoveAll is all it allocated, and
// maxRSS-KiB rm's peak resident memory.
func BenchmarkRemoveAllLarge(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		build func(tb testing.TB, dir string) int // returns the entries made
	}{
		{"deep: 15000 levels of 255-byte names", func(tb testing.TB, dir string) int {
			return buildDeep(tb, dir, 15000, strings.Repeat("d", maxNameLen))
		}},
		{"wide: 100000 files in one directory", func(tb testing.TB, dir string) int {
			return buildFiles(tb, dir, 100000)
		}},
		{"spread: 100000 files in 1000 directories 3 levels down", func(tb testing.TB, dir string) int {
			return buildSpread(tb, dir, 3, 10, 100)
		}},
	} {
		b.Run(tc.name+"/RemoveAll", func(b *testing.B) {
			e := newEnv(b)
			b.ReportAllocs()
			entries, cpu := 0, 0.0
			for b.Loop() {
				b.StopTimer()
				mkdirs(b, e.in("pvc"))
				entries += tc.build(b, e.in("pvc")) + 1
				before := processCPU(b)
				b.StartTimer()
				if err := e.fs.RemoveAll(ctx, "pvc"); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += processCPU(b) - before
				b.StartTimer()
			}
			b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(entries)/cpu, "entries/cpu-s")
		})
		b.Run(tc.name+"/rm -rf baseline", func(b *testing.B) {
			e := newEnv(b)
			entries, maxRSS, cpu := 0, int64(0), 0.0
			for b.Loop() {
				b.StopTimer()
				mkdirs(b, e.in("pvc"))
				entries += tc.build(b, e.in("pvc")) + 1
				cmd := exec.Command("rm", "-rf", e.in("pvc"))
				b.StartTimer()
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
				maxRSS = max(maxRSS, ru.Maxrss)
				cpu += seconds(ru.Utime) + seconds(ru.Stime)
			}
			b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(entries)/cpu, "entries/cpu-s")
			b.ReportMetric(float64(maxRSS), "maxRSS-KiB")
		})
	}
}

// buildDeep makes a chain of depth directories called name below dir. It
// works from descriptors, as the path soon exceeds PATH_MAX.
func buildDeep(tb testing.TB, dir string, depth int, name string) int {
	tb.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	for range depth {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			tb.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
	return depth
}

// buildFiles makes n empty files in dir.
func buildFiles(tb testing.TB, dir string, n int) int {
	tb.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(fd)
	for i := range n {
		f, err := unix.Openat(fd, fmt.Sprintf("file-%d", i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			tb.Fatal(err)
		}
		unix.Close(f)
	}
	return n
}

// buildSpread makes fanout subdirectories in dir, recursively, levels deep,
// with files files in each directory of the last level.
func buildSpread(tb testing.TB, dir string, levels, fanout, files int) int {
	tb.Helper()
	if levels == 0 {
		return buildFiles(tb, dir, files)
	}
	n := 0
	for i := range fanout {
		sub := filepath.Join(dir, fmt.Sprintf("dir-%d", i))
		mkdirs(tb, sub)
		n += 1 + buildSpread(tb, sub, levels-1, fanout, files)
	}
	return n
}

// processCPU returns the user and system CPU seconds the process used.
func processCPU(tb testing.TB) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return seconds(ru.Utime) + seconds(ru.Stime)
}

func seconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// BenchmarkScan counts trees a tenant may build, and du -sx the same tree
// in the same run as a baseline (both on a warm cache). entries/s counts
// files and directories per second of wall time; B/op is all Scan
// allocated, maxRSS-KiB du's peak resident memory.
func BenchmarkScan(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		build func(tb testing.TB, dir string) int
	}{
		{"deep: 15000 levels of 255-byte names", func(tb testing.TB, dir string) int {
			return buildDeep(tb, dir, 15000, strings.Repeat("d", maxNameLen))
		}},
		{"wide: 100000 files in one directory", func(tb testing.TB, dir string) int {
			return buildFiles(tb, dir, 100000)
		}},
		{"spread: 100000 files in 1000 directories 3 levels down", func(tb testing.TB, dir string) int {
			return buildSpread(tb, dir, 3, 10, 100)
		}},
	} {
		e := newEnv(b)
		mkdirs(b, e.in("pvc"))
		entries := tc.build(b, e.in("pvc")) + 1
		b.Run(tc.name+"/Scan", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got, err := e.fs.Scan(ctx, "pvc", ScanOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if got.Inodes != uint64(entries) {
					b.Fatalf("counted %d inodes, made %d", got.Inodes, entries)
				}
			}
			b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
		b.Run(tc.name+"/du -sx baseline", func(b *testing.B) {
			var maxRSS int64
			for b.Loop() {
				cmd := exec.Command("du", "-sx", e.in("pvc"))
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				maxRSS = max(maxRSS, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
			}
			b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(maxRSS), "maxRSS-KiB")
		})
	}
}

// BenchmarkScanMillion measures a million files spread over 1,000 volumes of
// 1,000 files each, as the usage scanner sees an export: Scan of each volume
// in turn, against one du -sx of the directory holding them, in the same
// run and on the same warm cache. Peak memory: Scan's B/op, du's maxRSS.
func BenchmarkScanMillion(b *testing.B) {
	const volumes, files = 1000, 1000
	e := newEnv(b)
	for i := range volumes {
		dir := e.in(fmt.Sprintf("vols/pvc-%04d", i))
		mkdirs(b, dir)
		buildFiles(b, dir, files)
	}
	entries := volumes*(files+1) + 1
	ctx := context.Background()
	b.Run("Scan each volume", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var n uint64
			for i := range volumes {
				t, err := e.fs.Scan(ctx, fmt.Sprintf("vols/pvc-%04d", i), ScanOptions{})
				if err != nil {
					b.Fatal(err)
				}
				n += t.Inodes
			}
			if n != uint64(entries-1) {
				b.Fatalf("counted %d, made %d", n, entries-1)
			}
		}
		b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("du -sx baseline", func(b *testing.B) {
		var maxRSS int64
		for b.Loop() {
			cmd := exec.Command("du", "-sx", e.in("vols"))
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			maxRSS = max(maxRSS, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
		}
		b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		b.ReportMetric(float64(maxRSS), "maxRSS-KiB")
	})
}
