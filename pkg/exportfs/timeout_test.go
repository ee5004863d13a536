package exportfs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allOps calls every exported operation once.
var allOps = map[string]func(ctx context.Context, f *FS) error{
	"MkdirAll": func(ctx context.Context, f *FS) error {
		_, err := f.MkdirAll(ctx, "ns/pvc", DirOptions{Mode: 0o755}, Existing{})
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
	block := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(block) }) }
	t.Cleanup(release)
	f.beforeOp = func() { <-block }
	return release
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	for name, op := range allOps {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			f := New(e.root, 50*time.Millisecond)
			hang(t, f)
			start := time.Now()
			err := op(context.Background(), f)
			require.ErrorIs(t, err, ErrTimeout)
			assert.Less(t, time.Since(start), 2*time.Second)
			assert.Contains(t, err.Error(), "may be hung or unreachable")
			assert.Contains(t, err.Error(), e.root)
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
			hang(t, f)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
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
	_, err := f.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: 0o755}, Existing{})
	require.ErrorIs(t, err, ErrTimeout)
	release()
	require.Eventually(t, func() bool { return len(f.slots) == 0 }, 5*time.Second, time.Millisecond)
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

func TestNoTimeoutWhenFast(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, time.Nanosecond)
	// With a timeout far below any syscall, some calls may time out, but a
	// finished result always wins over a simultaneous timeout and every
	// error is a timeout.
	for range 50 {
		_, err := f.MkdirAll(context.Background(), "pvc", DirOptions{Mode: 0o755}, Existing{Any: true})
		if err != nil {
			require.True(t, errors.Is(err, ErrTimeout), "%v", err)
		}
	}
}
