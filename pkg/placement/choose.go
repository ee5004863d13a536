// Package placement picks the export each claim goes to among those its
// StorageClass names: the one with the most free bytes, counting the claims
// being placed at that moment, among those with room for it when the class
// asks for a capacity check. It also checks expansions against the same
// figures.
package placement

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Figures are an export's free and total bytes.
type Figures struct {
	Free, Size uint64
}

// Candidate is one export a claim may go to, as Choose sees it.
type Candidate struct {
	Name    string
	Figures Figures
	// Err is why the figures could not be read (a hung or failing
	// export); such a candidate is never chosen.
	Err error
	// Pending is the bytes requested by claims placed on the export
	// lately (see Config.Settle), which rank it as if already used.
	Pending uint64
	// Unseen is the part of Pending the capacity check counts: claims in
	// flight and claims placed since the figures were read.
	Unseen uint64
	// Committed is the sum of the capacities of the export's PVs and of
	// the claims in flight to it; read only with an overcommit ratio.
	Committed uint64
}

// Check is what a class asks of the export: CapacityCheck refuses a claim
// larger than the free bytes, and Ratio, when positive, one that takes the
// committed capacity above Ratio × the export's size.
type Check struct {
	Capacity bool
	Ratio    float64
}

// Refusal is a claim no export can take as the class asks; retrying helps
// only once space is freed or the class changed.
type Refusal struct{ msg string }

func (r *Refusal) Error() string { return r.msg }

// IsRefusal tells whether err is a Refusal.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

// Choose returns the index of the candidate a claim requesting request
// bytes goes to: among those whose figures were read and that pass the
// check (free bytes after Unseen), the one with the most free bytes after
// Pending; ties go to the earlier one. It fails with a Refusal when every candidate answered and
// none passes, and with a plain error (worth a retry) when none answered or
// those that answered don't pass.
func Choose(cands []Candidate, request uint64, chk Check) (int, error) {
	best := -1
	var bestFree int64
	var refused, failed []string
	for i, c := range cands {
		if c.Err != nil {
			failed = append(failed, fmt.Sprintf("export %q: free space not known: %v", c.Name, c.Err))
			continue
		}
		if why := refusal(c, request, chk); why != "" {
			refused = append(refused, why)
			continue
		}
		free := signed(c.Figures.Free) - signed(c.Pending)
		if best < 0 || free > bestFree {
			best, bestFree = i, free
		}
	}
	if best >= 0 {
		return best, nil
	}
	reasons := strings.Join(append(refused, failed...), "; ")
	if len(failed) > 0 {
		return -1, fmt.Errorf("no export can take the claim now: %s", reasons)
	}
	return -1, &Refusal{fmt.Sprintf("no export has room for the claim's %s: %s", bytes(request), reasons)}
}

// refusal says why c fails chk for request, "" if it passes.
func refusal(c Candidate, request uint64, chk Check) string {
	if !chk.Capacity {
		return ""
	}
	free := signed(c.Figures.Free) - signed(c.Unseen)
	if signed(request) > free {
		return fmt.Sprintf("export %q has %s free (%s, less %s requested by claims being placed), the claim asks %s",
			c.Name, bytes(uint64(max(free, 0))), bytes(c.Figures.Free), bytes(c.Unseen), bytes(request))
	}
	if chk.Ratio > 0 {
		limit := chk.Ratio * float64(c.Figures.Size)
		if float64(c.Committed)+float64(request) > limit {
			return fmt.Sprintf("export %q would hold %s of volumes, above overcommitRatio %g times its size %s = %s (%s committed, the claim asks %s)",
				c.Name, bytes(c.Committed+request), chk.Ratio, bytes(c.Figures.Size), bytes(uint64(limit)), bytes(c.Committed), bytes(request))
		}
	}
	return ""
}

func signed(u uint64) int64 { return int64(min(u, math.MaxInt64)) }

// bytes writes n as a quantity, e.g. 12Mi.
func bytes(n uint64) string {
	return resource.NewQuantity(signed(n), resource.BinarySI).String()
}
