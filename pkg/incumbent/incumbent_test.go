package incumbent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// What the incumbent's library (client-go's EndpointsLock) writes.
const renewed = `{"holderIdentity":"nfs-client-provisioner-5d9c_1b2f","leaseDurationSeconds":15,"acquireTime":"2026-12-02T10:00:00Z","renewTime":"2026-12-02T11:00:00Z","leaderTransitions":3}`

var renewTime = time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)

func TestParseRecord(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		raw     string
		holder  string
		wantErr string
	}{
		"incumbent's record": {raw: renewed, holder: "nfs-client-provisioner-5d9c_1b2f"},
		"released":           {raw: `{"holderIdentity":"","leaseDurationSeconds":1,"acquireTime":null,"renewTime":null}`},
		"not JSON":           {raw: `holder=x`, wantErr: "decoding the control-plane.alpha.kubernetes.io/leader annotation"},
		"no lease duration":  {raw: `{"holderIdentity":"x","renewTime":"2026-12-02T11:00:00Z"}`, wantErr: "positive leaseDurationSeconds"},
		"no renew time":      {raw: `{"holderIdentity":"x","leaseDurationSeconds":15}`, wantErr: "without a renewTime"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec, err := ParseRecord(tc.raw)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.holder, rec.HolderIdentity)
		})
	}
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	rec, err := ParseRecord(renewed)
	require.NoError(t, err)
	expires := renewTime.Add(15 * time.Second)
	tests := map[string]struct {
		self        string
		now         time.Time
		seenRenewed time.Time
		active      bool
		expires     time.Time
	}{
		"just renewed":             {now: renewTime.Add(time.Second), active: true, expires: expires},
		"last second of the lease": {now: expires.Add(-time.Millisecond), active: true, expires: expires},
		"lapsed":                   {now: expires, expires: expires},
		"left over for days":       {now: renewTime.Add(72 * time.Hour), expires: expires},
		"our own identity":         {self: "nfs-client-provisioner-5d9c_1b2f", now: renewTime},
		// Its clock lags ours by a minute, but it renews: the change we saw counts.
		"lagging clock, renewal seen": {now: renewTime.Add(time.Minute), seenRenewed: renewTime.Add(time.Minute - 2*time.Second), active: true, expires: renewTime.Add(time.Minute + 13*time.Second)},
		"renewal seen long ago":       {now: renewTime.Add(time.Hour), seenRenewed: renewTime.Add(time.Minute), expires: renewTime.Add(time.Minute + 15*time.Second)},
		// The record's own time is later than what we saw: it wins.
		"seen before the renew time": {now: renewTime, seenRenewed: renewTime.Add(-time.Minute), active: true, expires: expires},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			self := tc.self
			if self == "" {
				self = "nfs-provisioner-0_ab12cd34"
			}
			s := Evaluate(rec, self, tc.now, tc.seenRenewed)
			assert.Equal(t, tc.active, s.Active, "active")
			assert.True(t, tc.expires.Equal(s.Expires), "expires %s, want %s", s.Expires, tc.expires)
		})
	}
	released := rec
	released.HolderIdentity = ""
	assert.False(t, Evaluate(released, "me", renewTime, renewTime).Active, "a released record")
}

// clock is a settable now().
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func endpoints(annotation string) *v1.Endpoints {
	ep := &v1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "nfs", Name: "k8s-sigs.io-nfs-subdir-external-provisioner"}}
	if annotation != "" {
		ep.Annotations = map[string]string{LeaderAnnotation: annotation}
	}
	return ep
}

func TestCheckerReadsTheEndpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := map[string]struct {
		objects []runtime.Object
		now     time.Time
		active  bool
		holder  string
		wantErr string
	}{
		"no Endpoints object":   {now: renewTime},
		"no annotation":         {objects: []runtime.Object{endpoints("")}, now: renewTime},
		"live incumbent":        {objects: []runtime.Object{endpoints(renewed)}, now: renewTime.Add(5 * time.Second), active: true, holder: "nfs-client-provisioner-5d9c_1b2f"},
		"stale record":          {objects: []runtime.Object{endpoints(renewed)}, now: renewTime.Add(time.Hour), holder: "nfs-client-provisioner-5d9c_1b2f"},
		"unreadable record":     {objects: []runtime.Object{endpoints("{")}, now: renewTime, wantErr: "endpoints nfs/k8s-sigs.io-nfs-subdir-external-provisioner: decoding"},
		"another object's name": {objects: []runtime.Object{func() runtime.Object { ep := endpoints(renewed); ep.Name = "other"; return ep }()}, now: renewTime},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(tc.objects...)
			c := NewChecker(client.CoreV1(), "nfs", "k8s-sigs.io-nfs-subdir-external-provisioner", "me", (&clock{tc.now}).now)
			s, err := c.Check(ctx)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.active, s.Active)
			assert.Equal(t, tc.holder, s.Holder)
		})
	}
}

func TestCheckerNamesTheMissingRule(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	client.PrependReactor("get", "endpoints", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "endpoints"}, "x", errors.New("RBAC"))
	})
	_, err := NewChecker(client.CoreV1(), "nfs", "x", "me", time.Now).Check(context.Background())
	require.Error(t, err)
	assert.True(t, apierrors.IsForbidden(err), "wrapped: %v", err)
	assert.Contains(t, err.Error(), "the Role needs get on endpoints, resourceNames [x]")
}

// An incumbent whose clock lags ours by a minute writes renewTimes that
// look lapsed; its renewals, seen changing, keep it active.
func TestCheckerSeesRenewalsOfALaggingIncumbent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := fake.NewClientset(endpoints(renewed))
	clk := &clock{renewTime.Add(time.Minute)}
	c := NewChecker(client.CoreV1(), "nfs", "k8s-sigs.io-nfs-subdir-external-provisioner", "me", clk.now)

	s, err := c.Check(ctx)
	require.NoError(t, err)
	assert.False(t, s.Active, "first reading: only the timestamps count")

	renew := func(at string) {
		ep := endpoints(`{"holderIdentity":"nfs-client-provisioner-5d9c_1b2f","leaseDurationSeconds":15,"acquireTime":"2026-12-02T10:00:00Z","renewTime":"` + at + `"}`)
		_, err := client.CoreV1().Endpoints("nfs").Update(ctx, ep, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	renew("2026-12-02T11:00:02Z")
	clk.t = clk.t.Add(2 * time.Second)
	s, err = c.Check(ctx)
	require.NoError(t, err)
	assert.True(t, s.Active, "renewed since the last reading")

	clk.t = clk.t.Add(14 * time.Second)
	s, err = c.Check(ctx)
	require.NoError(t, err)
	assert.True(t, s.Active, "within a lease duration of the renewal we saw")

	clk.t = clk.t.Add(time.Second)
	s, err = c.Check(ctx)
	require.NoError(t, err)
	assert.False(t, s.Active, "no renewal for a lease duration: it stopped")

	require.NoError(t, client.CoreV1().Endpoints("nfs").Delete(ctx, "k8s-sigs.io-nfs-subdir-external-provisioner", metav1.DeleteOptions{}))
	s, err = c.Check(ctx)
	require.NoError(t, err)
	assert.Equal(t, Status{}, s, "gone")
}
