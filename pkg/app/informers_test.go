package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

func TestPagedFirstList(t *testing.T) {
	t.Parallel()
	first := paged(metav1.ListOptions{ResourceVersion: "0", Limit: 500})
	assert.Equal(t, "", first.ResourceVersion, "the first list is a paged consistent list, not one answer from the watch cache")
	assert.Equal(t, int64(500), first.Limit)
	relist := metav1.ListOptions{ResourceVersion: "1234"}
	assert.Equal(t, relist, paged(relist), "later lists are left alone")
	next := metav1.ListOptions{Limit: 500, Continue: "token"}
	assert.Equal(t, next, paged(next))
}

func TestFilterWatch(t *testing.T) {
	t.Parallel()
	pending := testClaim("pending", nil)
	bound := testClaim("bound", nil)
	bound.Spec.VolumeName = "pv"
	bound.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	trimmed := func(obj runtime.Object) runtime.Object {
		obj.(metav1.Object).SetManagedFields(nil)
		return obj
	}

	in := watch.NewFake()
	w := filterWatch(in, keepClaim, trimmed)
	go func() {
		in.Add(pending.DeepCopy())
		in.Modify(bound.DeepCopy())
		in.Add(bound.DeepCopy())
		in.Delete(pending.DeepCopy())
		in.Action(watch.Bookmark, &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "9"}})
	}()
	want := []struct {
		typ  watch.EventType
		name string
	}{
		{watch.Added, "pending"},
		{watch.Deleted, "bound"},   // became bound: leaves the cache
		{watch.Deleted, "bound"},   // bound from the start: never enters it
		{watch.Deleted, "pending"}, // deleted
		{watch.Bookmark, ""},
	}
	for _, ww := range want {
		select {
		case ev := <-w.ResultChan():
			assert.Equal(t, ww.typ, ev.Type)
			pvc := ev.Object.(*v1.PersistentVolumeClaim)
			assert.Equal(t, ww.name, pvc.Name)
			assert.Nil(t, pvc.ManagedFields)
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
	w.Stop()
	w.Stop() // idempotent
	_, open := <-w.ResultChan()
	assert.False(t, open, "closed after Stop")
}

func TestFilterWatchStopWhileBlocked(t *testing.T) {
	t.Parallel()
	in := watch.NewFakeWithChanSize(1, false)
	w := filterWatch(in, keepClaim, func(o runtime.Object) runtime.Object { return o })
	in.Add(testClaim("a", nil))
	// The input holds one event: this second Add returns once the filter
	// took the first, which it can't hand on, as nobody reads.
	in.Add(testClaim("b", nil))
	w.Stop()
	require.Eventually(t, func() bool {
		select {
		case _, open := <-w.ResultChan():
			return !open
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond, "a stopped watch closes even though nobody read its event")
}
