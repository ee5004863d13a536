// Package incumbent detects a running nfs-subdir-external-provisioner
// through its Endpoints leader record.
//
// The incumbent (sig-storage-lib-external-provisioner v6) elects its leader
// on an Endpoints object named like our Lease, recording the holder in an
// annotation. Our Lease never sees that record, so without this check a
// migration could run both provisioners at once.
package incumbent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderAnnotation holds the incumbent's leader-election record on its
// Endpoints object.
const LeaderAnnotation = resourcelock.LeaderElectionRecordAnnotationKey

// Status is what one reading of the record found.
type Status struct {
	// Active: an incumbent holds the record and it has not lapsed, so this
	// replica must not provision or delete.
	Active bool
	// Holder is the record's holderIdentity, "" when there is no record.
	Holder string
	// Expires is when the record lapses unless the incumbent renews it.
	Expires time.Time
}

// ParseRecord decodes the annotation's value.
func ParseRecord(raw string) (resourcelock.LeaderElectionRecord, error) {
	var rec resourcelock.LeaderElectionRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return rec, fmt.Errorf("decoding the %s annotation %.128q: %w", LeaderAnnotation, raw, err)
	}
	if rec.HolderIdentity != "" && (rec.LeaseDurationSeconds <= 0 || rec.RenewTime.IsZero()) {
		return rec, fmt.Errorf("the %s annotation %.128q names holder %.128q without a renewTime and a positive leaseDurationSeconds", LeaderAnnotation, raw, rec.HolderIdentity)
	}
	return rec, nil
}

// Evaluate decides whether rec, read at now, shows an active incumbent.
// The record lapses leaseDurationSeconds after its renewTime; seenRenewed,
// when not zero, is when this process saw the record change, and keeps it
// alive as long again, so an incumbent whose clock lags ours still counts
// as active while it renews. A record held by self, or by no one, is not
// an incumbent.
func Evaluate(rec resourcelock.LeaderElectionRecord, self string, now, seenRenewed time.Time) Status {
	if rec.HolderIdentity == "" || rec.HolderIdentity == self {
		return Status{Holder: rec.HolderIdentity}
	}
	lease := time.Duration(rec.LeaseDurationSeconds) * time.Second
	expires := rec.RenewTime.Add(lease)
	if !seenRenewed.IsZero() && seenRenewed.Add(lease).After(expires) {
		expires = seenRenewed.Add(lease)
	}
	return Status{Active: now.Before(expires), Holder: rec.HolderIdentity, Expires: expires}
}

// Checker reads the record from the API server. It is not safe for
// concurrent use.
type Checker struct {
	client          corev1client.EndpointsGetter
	namespace, name string
	self            string
	now             func() time.Time

	// The last annotation read, and when a change of it was seen.
	last        string
	seenRenewed time.Time
}

// NewChecker reads Endpoints namespace/name; self is this process's
// identity, now the clock.
func NewChecker(client corev1client.EndpointsGetter, namespace, name, self string, now func() time.Time) *Checker {
	return &Checker{client: client, namespace: namespace, name: name, self: self, now: now}
}

// Object names the Endpoints object read, for logs.
func (c *Checker) Object() string { return c.namespace + "/" + c.name }

// Check reads the record once. No object, or no annotation, is no
// incumbent. An error means the state is unknown.
func (c *Checker) Check(ctx context.Context) (Status, error) {
	ep, err := c.client.Endpoints(c.namespace).Get(ctx, c.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		c.last, c.seenRenewed = "", time.Time{}
		return Status{}, nil
	}
	if err != nil {
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w (the Role needs get on endpoints, resourceNames [%s])", err, c.name)
		}
		return Status{}, fmt.Errorf("reading Endpoints %s for the leader record of nfs-subdir-external-provisioner: %w", c.Object(), err)
	}
	raw := ep.Annotations[LeaderAnnotation]
	if raw == "" {
		c.last, c.seenRenewed = "", time.Time{}
		return Status{}, nil
	}
	rec, err := ParseRecord(raw)
	if err != nil {
		return Status{}, fmt.Errorf("endpoints %s: %w", c.Object(), err)
	}
	now := c.now()
	// A change after the first reading is a renewal seen with our clock;
	// the first reading may be years old, so only its timestamps count.
	if c.last != "" && raw != c.last {
		c.seenRenewed = now
	}
	c.last = raw
	return Evaluate(rec, c.self, now, c.seenRenewed), nil
}
