package exportfs

import (
	"context"
	"io/fs"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFailFastWhileHung checks that once a call found the export hung, the
// next calls fail at once rather than each blocking another goroutine for
// the whole timeout; that a probe per timeout period still goes through; and
// that the first answer, a late one included, lets calls through again.
func TestFailFastWhileHung(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	e := newEnv(t)
	f := New(e.root, timeout)
	release := hang(t, f)

	require.ErrorIs(t, f.CheckWritable(context.Background()), ErrTimeout)
	since, blocked := f.Hung()
	require.False(t, since.IsZero(), "the timeout marks the export hung")
	assert.Equal(t, 1, blocked)

	// The first call after the trip is a probe, and waits out its timeout.
	start := time.Now()
	err := f.CheckWritable(context.Background())
	require.ErrorIs(t, err, ErrTimeout)
	assert.GreaterOrEqual(t, time.Since(start), timeout)
	// The calls until the next period fail at once, blocking nothing.
	for range 20 {
		start := time.Now()
		err := f.CheckWritable(context.Background())
		require.ErrorIs(t, err, ErrTimeout)
		assert.Less(t, time.Since(start), timeout/2, "a call while hung fails at once")
		assert.Contains(t, err.Error(), "calls fail at once until it answers again")
		assert.Contains(t, err.Error(), "hung or unreachable")
	}
	assert.Len(t, f.slots, 2, "only the first call and the probe are blocked")

	// Probes go on, one per period, maxProbes blocked at most.
	deadline := time.Now().Add(time.Duration(3*maxProbes) * 2 * timeout)
	for time.Now().Before(deadline) {
		_ = f.CheckWritable(context.Background())
	}
	_, blocked = f.Hung()
	assert.Equal(t, 1+maxProbes, blocked, "the first call and maxProbes probes")
	assert.Len(t, f.slots, 1+maxProbes)

	// The late answers of the blocked calls close the breaker: no wait for
	// the next probe.
	release()
	require.Eventually(t, func() bool {
		since, blocked := f.Hung()
		return since.IsZero() && blocked == 0
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, f.CheckWritable(context.Background()))
	idle(t, f)
}

// TestProbeFindsAnsweringExport checks that one call stuck on a path that
// hangs does not keep the rest of the export failing: the next call is a
// probe, and its answer closes the breaker.
func TestProbeFindsAnsweringExport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, 50*time.Millisecond)
	_, release := hangSome(t, f, 1)
	require.ErrorIs(t, f.CheckWritable(context.Background()), ErrTimeout)
	f.timeout = 5 * time.Second // ample for a fast call on a loaded machine
	require.NoError(t, f.CheckWritable(context.Background()), "the probe")
	since, blocked := f.Hung()
	assert.True(t, since.IsZero())
	assert.Equal(t, 1, blocked, "the stuck call is still blocked")
	for range 3 {
		require.NoError(t, f.CheckWritable(context.Background()))
	}
	release()
	idle(t, f)
}

// TestFileCallsNeverOverlap checks that a write to the provisioner's files
// still blocked after its timeout keeps the next one from starting, so that
// a late write can't land after a later one.
func TestFileCallsNeverOverlap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, 50*time.Millisecond)
	_, release := hangSome(t, f, 1)
	require.ErrorIs(t, f.AppendFile(context.Background(), ".state/file", []byte("first\n")), ErrTimeout)
	f.timeout = 5 * time.Second
	err := f.AppendFile(context.Background(), ".state/file", []byte("second\n"))
	require.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "an earlier call on the provisioner's files is still blocked")
	require.NoError(t, f.CheckWritable(context.Background()), "other calls go on")

	release()
	require.Eventually(t, func() bool {
		return f.AppendFile(context.Background(), ".state/file", []byte("third\n")) == nil
	}, 5*time.Second, time.Millisecond)
	data, err := f.ReadFile(context.Background(), ".state/file")
	require.NoError(t, err)
	assert.Equal(t, "first\nthird\n", string(data))
}

// TestAbandonedCreationIsOwn checks that the next MkdirAll of a path whose
// creation timed out waits for the stuck call, and then reports the
// directories it made as its own rather than refusing the leaf as someone
// else's.
func TestAbandonedCreationIsOwn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, 50*time.Millisecond)
	// The first call blocks in the system call creating the leaf, which
	// completes once released.
	block := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(block) }) }
	t.Cleanup(release)
	f.afterCreate = func() {
		f.afterCreate = nil
		<-block
	}
	_, err := f.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: 0o750}, Existing{})
	require.ErrorIs(t, err, ErrTimeout)
	f.timeout = 5 * time.Second

	_, err = f.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: 0o750}, Existing{})
	require.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "an earlier attempt to create it is still blocked")

	release()
	idle(t, f)
	require.DirExists(t, e.in("ns/pvc"), "the abandoned call went on")
	made, err := f.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: 0o750}, Existing{})
	require.NoError(t, err)
	assert.True(t, made.Created)
	assert.Equal(t, []string{"ns"}, made.Parents)
	fi, err := os.Stat(e.in("ns/pvc"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o750), fi.Mode().Perm(), "the retry applied the mode")

	// Only once: a directory found again afterwards is not ours.
	_, err = f.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: 0o750}, Existing{})
	require.ErrorIs(t, err, fs.ErrExist)
}
