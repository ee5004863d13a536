package exportfs

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allOps calls every exported operation once.
var allOps = map[string]func(ctx context.Context, f *FS) error{
	"MkdirAll": func(ctx context.Context, f *FS) error {
		_, err := f.MkdirAll(ctx, "ns/pvc", DirOptions{Mode: 0o755}, Existing{Any: true})
		return err
	},
	"RemoveAll": func(ctx context.Context, f *FS) error { return f.RemoveAll(ctx, "ns/pvc") },
	"Rename":    func(ctx context.Context, f *FS) error { return f.Rename(ctx, "ns/pvc", "archived") },
	"Exists": func(ctx context.Context, f *FS) error {
		_, err := f.Exists(ctx, "ns/pvc")
		return err
	},
	"Usage": func(ctx context.Context, f *FS) error {
		_, err := f.Usage(ctx)
		return err
	},
	"CheckWritable": func(ctx context.Context, f *FS) error { return f.CheckWritable(ctx) },
}

// hang makes every operation of f block before it starts, as on a hung NFS
// mount, until the returned function is called (also on cleanup).
func hang(t *testing.T, f *FS) (release func()) {
	_, release = hangSome(t, f, -1)
	return release
}

// hangSome is hang for the first n operations only (all for n < 0); entered
// receives a value as each blocked operation starts.
func hangSome(t *testing.T, f *FS, n int) (entered <-chan struct{}, release func()) {
	block := make(chan struct{})
	in := make(chan struct{}, 1000)
	var once sync.Once
	release = func() { once.Do(func() { close(block) }) }
	t.Cleanup(release)
	var calls atomic.Int64
	f.beforeOp = func() {
		if n >= 0 && calls.Add(1) > int64(n) {
			return
		}
		in <- struct{}{}
		<-block
	}
	return in, release
}

// prepare makes what the allOps operation name needs to succeed.
func prepare(t *testing.T, e *env, name string) {
	t.Helper()
	if name == "Rename" {
		mkdirs(t, e.in("ns/pvc"))
		require.NoError(t, os.RemoveAll(e.in("ns/archived")))
	}
}

// idle waits until no operation of f holds a slot.
func idle(t *testing.T, f *FS) {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.slots) == 0 && len(f.removals) == 0 }, 5*time.Second, time.Millisecond)
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	for name, op := range allOps {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			f := New(e.root, timeout)
			release := hang(t, f)
			start := time.Now()
			err := op(context.Background(), f)
			elapsed := time.Since(start)
			require.ErrorIs(t, err, ErrTimeout)
			assert.GreaterOrEqual(t, elapsed, timeout, "not given up before the timeout")
			assert.Less(t, elapsed, 2*time.Second)
			assert.Contains(t, err.Error(), "no answer within 50ms", "the operation itself timed out, not a wait for a slot")
			assert.Contains(t, err.Error(), "may be hung or unreachable")
			assert.Contains(t, err.Error(), e.root)

			// Once the export answers again, so does the FS.
			release()
			idle(t, f)
			prepare(t, e, name)
			require.NoError(t, op(context.Background(), f))
		})
	}
}

// TestFastCallAfterHang checks that an operation stuck on the export does
// not make the next, fast ones time out or be refused.
func TestFastCallAfterHang(t *testing.T) {
	t.Parallel()
	for name, op := range allOps {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			f := New(e.root, 50*time.Millisecond)
			_, release := hangSome(t, f, 1)
			require.ErrorIs(t, op(context.Background(), f), ErrTimeout)
			assert.Len(t, f.slots, 1, "the stuck call keeps its slot")
			f.timeout = 5 * time.Second // ample for a fast call on a loaded machine
			if name == "MkdirAll" {
				// Not the same path, which waits for the stuck call (see
				// TestAbandonedCreationIsOwn).
				op = func(ctx context.Context, f *FS) error {
					_, err := f.MkdirAll(ctx, "ns/other", DirOptions{Mode: 0o755}, Existing{Any: true})
					return err
				}
			}
			for range 3 {
				prepare(t, e, name)
				require.NoError(t, op(context.Background(), f))
			}
			release()
			idle(t, f)
		})
	}
}

func TestContextDone(t *testing.T) {
	t.Parallel()
	for name, op := range allOps {
		t.Run(name+"/cancelled while blocked", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			f := New(e.root, time.Hour)
			entered, _ := hangSome(t, f, -1)
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-entered
				cancel()
			}()
			start := time.Now()
			err := op(ctx, f)
			require.ErrorIs(t, err, context.Canceled)
			assert.NotErrorIs(t, err, ErrTimeout)
			assert.Less(t, time.Since(start), 2*time.Second)
		})
		t.Run(name+"/deadline while blocked", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			f := New(e.root, 0) // no FS timeout: ctx alone bounds it
			hang(t, f)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			require.ErrorIs(t, op(ctx, f), context.DeadlineExceeded)
		})
		t.Run(name+"/already cancelled", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			f := New(e.root, time.Hour)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.ErrorIs(t, op(ctx, f), context.Canceled)
			entries, err := readDirNames(e.root)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing was done")
		})
	}
}

// TestAbandonedOperationStops checks that work released after its caller
// gave up does not go on to create anything.
func TestAbandonedOperationStops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, 20*time.Millisecond)
	release := hang(t, f)
	_, err := f.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: 0o755}, Existing{Any: true})
	require.ErrorIs(t, err, ErrTimeout)
	release()
	idle(t, f)
	assert.NoDirExists(t, e.in("ns"))
}

// TestStuckOperationsBounded checks that a hung export cannot pile up more
// than maxStuck goroutines, and that the FS recovers when it unhangs.
func TestStuckOperationsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, 20*time.Millisecond)
	release := hang(t, f)
	var wg sync.WaitGroup
	for range maxStuck {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.ErrorIs(t, f.CheckWritable(context.Background()), ErrTimeout)
		}()
	}
	wg.Wait()
	assert.Len(t, f.slots, maxStuck)

	start := time.Now()
	err := f.CheckWritable(context.Background())
	require.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "still blocked")
	assert.Less(t, time.Since(start), 2*time.Second)

	release()
	require.Eventually(t, func() bool {
		return f.CheckWritable(context.Background()) == nil
	}, 5*time.Second, 5*time.Millisecond)
}

// TestNoTimeoutWhenFast checks that fast calls never time out, and that
// calls timing out at once give back every slot.
func TestNoTimeoutWhenFast(t *testing.T) {
	t.Parallel()
	t.Run("ample timeout", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		f := New(e.root, 5*time.Second)
		for range 50 {
			_, err := f.MkdirAll(context.Background(), "pvc/sub", DirOptions{Mode: 0o755}, Existing{Any: true})
			require.NoError(t, err)
			require.NoError(t, f.RemoveAll(context.Background(), "pvc"))
		}
	})
	t.Run("timeout below any system call", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		f := New(e.root, time.Nanosecond)
		for range 50 {
			_, err := f.MkdirAll(context.Background(), "pvc", DirOptions{Mode: 0o755}, Existing{Any: true})
			if err != nil {
				require.ErrorIs(t, err, ErrTimeout)
			}
			if err := f.RemoveAll(context.Background(), "pvc"); err != nil {
				require.ErrorIs(t, err, ErrTimeout)
			}
		}
		idle(t, f)
	})
}
