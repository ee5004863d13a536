package clone

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchTree is the tree BenchmarkCopy copies: many small files and a few
// large ones, as a typical volume holds.
const (
	benchDirs       = 200
	benchSmallFiles = 20000
	benchSmallSize  = 1 << 10
	benchLargeFiles = 4
	benchLargeSize  = 32 << 20
)

// BenchmarkCopy copies one tree with Copy and with `cp -a`, in the same
// run and the same page cache, reporting bytes/s (MB/s) and entries/s.
func BenchmarkCopy(b *testing.B) {
	root := b.TempDir()
	src := filepath.Join(root, "src")
	small := make([]byte, benchSmallSize)
	for i := range small {
		small[i] = byte(i)
	}
	for i := range benchSmallFiles {
		p := fmt.Sprintf("%s/d%03d/f%05d", src, i%benchDirs, i)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, small, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	large := make([]byte, benchLargeSize)
	for i := range large {
		large[i] = byte(i * 7)
	}
	for i := range benchLargeFiles {
		if err := os.WriteFile(fmt.Sprintf("%s/large%d", src, i), large, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	const entries = benchDirs + benchSmallFiles + benchLargeFiles
	const size = benchSmallFiles*benchSmallSize + benchLargeFiles*benchLargeSize

	// who is RUSAGE_SELF for Copy, RUSAGE_CHILDREN for cp: CPU time is
	// what the shared machine's noise leaves fair to compare.
	run := func(b *testing.B, who int, copyTo func(b *testing.B, dst string)) {
		b.SetBytes(size)
		n := 0
		var spent, cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			dst := fmt.Sprintf("dst-%d", n)
			n++
			if err := os.Mkdir(filepath.Join(root, dst), 0o700); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start, cpu0 := time.Now(), cpuTime(b, who)
			copyTo(b, dst)
			spent += time.Since(start)
			cpu += cpuTime(b, who) - cpu0
			b.StopTimer()
			if err := os.RemoveAll(filepath.Join(root, dst)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(entries*n)/spent.Seconds(), "entries/s")
		b.ReportMetric(float64(entries*n)/cpu.Seconds(), "entries/cpu-s")
	}
	b.Run("clone.Copy", func(b *testing.B) {
		run(b, unix.RUSAGE_SELF, func(b *testing.B, dst string) {
			res, err := Copy(context.Background(), root, "src", dst, Options{})
			if err != nil {
				b.Fatal(err)
			}
			if res.Entries != entries || res.Bytes != size {
				b.Fatalf("copied %d entries and %d bytes, want %d and %d", res.Entries, res.Bytes, entries, size)
			}
		})
	})
	b.Run("cp -a", func(b *testing.B) {
		if _, err := exec.LookPath("cp"); err != nil {
			b.Skip("no cp")
		}
		run(b, unix.RUSAGE_CHILDREN, func(b *testing.B, dst string) {
			if out, err := exec.Command("cp", "-a", src+"/.", filepath.Join(root, dst)).CombinedOutput(); err != nil {
				b.Fatalf("cp -a: %v: %s", err, out)
			}
		})
	})
}

func cpuTime(b *testing.B, who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
