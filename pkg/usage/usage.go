// Package usage measures what each volume on the exports holds, for the
// per-volume metrics and the VolumeOverCapacity Event. NFS keeps no
// per-directory accounting and kubelet's volume stats of an nfs volume are a
// statfs of the whole share, so every claim on it would report the same
// numbers; this walks each volume's directory instead, on the export it is
// on, on the leader, at a bounded rate.
//
// Each export is scanned by a loop of its own, all of them sharing the one
// rate: a hung export holds up the scans of its own volumes only. There a
// scan gives up after the FS timeout, later calls fail at once while the
// export doesn't answer (exportfs' breaker), and each volume is retried at
// its next interval; the loops of the other exports go on meanwhile, at
// the rate the hung one leaves unused.
package usage

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// ReasonOverCapacity is the reason of the Warning Event on a claim whose
// volume holds more than its capacity.
const ReasonOverCapacity = "VolumeOverCapacity"

// Export is the filesystem call the scanner needs; exportfs.FS has it.
type Export interface {
	Scan(ctx context.Context, rel string, opts exportfs.ScanOptions) (exportfs.Tally, error)
}

// Volume is one volume to measure.
type Volume struct {
	PV               string
	Namespace, Claim string
	ClaimUID         string
	Export           string // the export's name
	Dir              string // relative to the export root
	CapacityBytes    int64
}

// Config is what a Scanner needs.
type Config struct {
	// Exports are the exports' filesystems, by name: each volume is
	// measured on the one its Export names, and not at all if none.
	Exports map[string]Export
	// Volumes lists the volumes to measure now (the PV informer's view).
	Volumes func() []Volume
	// Interval is how often each volume is measured.
	Interval time.Duration
	// Wait, when set, holds the scans' filesystem calls to a rate (see
	// exportfs.ScanOptions); NewRate makes one.
	Wait     func(ctx context.Context) error
	Recorder record.EventRecorder
	Clock    clock.WithTicker
}

// Scanner measures every volume once per Interval, one at a time on each
// export. Safe for concurrent use; Run it only while leading.
type Scanner struct {
	cfg Config

	// syncMu makes one loop list the volumes while the others wait for
	// the list, rather than list them too.
	syncMu  sync.Mutex
	mu      sync.Mutex
	entries map[string]*entry // by PV name
	scans   map[string]uint64 // completed scans by outcome
	synced  time.Time         // when entries last followed cfg.Volumes
}

type entry struct {
	vol     Volume
	next    time.Time
	scanned time.Time // zero until the first scan completes
	tally   exportfs.Tally
	over    bool // above capacity at the last scan
}

// New returns a Scanner; cfg.Clock defaults to the real clock.
func New(cfg Config) *Scanner {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Scanner{cfg: cfg, entries: map[string]*entry{}, scans: map[string]uint64{outcomeSuccess: 0, outcomeError: 0}}
}

const (
	outcomeSuccess = "success"
	outcomeError   = "error"
)

// NewRate returns a Wait for ScanOptions letting callsPerSecond filesystem
// calls through, in bursts of a tenth of a second; nil (no bound) for 0.
// Scans that share it share the rate.
func NewRate(callsPerSecond float64) func(ctx context.Context) error {
	if callsPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(callsPerSecond), max(1, int(callsPerSecond/10))).Wait
}

// maxIdle bounds how long Run sleeps before looking for new volumes.
const maxIdle = 10 * time.Second

// Run measures volumes until ctx ends, in one loop per export, then
// forgets what it measured so a replica that no longer leads exports no
// stale series. It returns once every loop has.
func (s *Scanner) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("usage")
	defer s.reset()
	opts := exportfs.ScanOptions{Wait: s.cfg.Wait}
	var wg sync.WaitGroup
	for _, name := range s.exportNames() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if wait := s.scanNext(ctx, logger, opts, name); wait > 0 {
					s.sleep(ctx, min(wait, maxIdle))
				}
			}
		}()
	}
	wg.Wait()
}

// exportNames returns the names of cfg.Exports, sorted.
func (s *Scanner) exportNames() []string {
	names := make([]string, 0, len(s.cfg.Exports))
	for name := range s.cfg.Exports {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// scanNext measures the volume of export due first, if it is due, and
// otherwise returns how long until it is (maxIdle if there is none).
func (s *Scanner) scanNext(ctx context.Context, logger klog.Logger, opts exportfs.ScanOptions, export string) time.Duration {
	now := s.cfg.Clock.Now()
	e := s.due(now, export)
	if e == nil {
		return maxIdle
	}
	if wait := e.next.Sub(now); wait > 0 {
		return wait
	}
	tally, err := s.cfg.Exports[export].Scan(ctx, e.vol.Dir, opts)
	if ctx.Err() != nil {
		return 0
	}
	s.record(logger, e, tally, err)
	return 0
}

func (s *Scanner) sleep(ctx context.Context, d time.Duration) {
	t := s.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}

// due syncs the entries with the current volumes and returns the one of
// export to measure next, nil if there is none. A volume seen for the
// first time is first measured at a point of the interval its name picks,
// so a restart doesn't measure every volume at once.
func (s *Scanner) due(now time.Time, export string) *entry {
	// At most every maxIdle: with thousands of volumes and a scan every
	// fraction of a second, listing them for each scan would cost more
	// than the scans.
	s.syncMu.Lock()
	s.mu.Lock()
	stale := s.synced.IsZero() || now.Sub(s.synced) >= maxIdle
	s.mu.Unlock()
	if stale {
		s.sync(now, s.cfg.Volumes())
	}
	s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var first *entry
	for _, e := range s.entries {
		if e.vol.Export == export && (first == nil || e.next.Before(first.next)) {
			first = e
		}
	}
	return first
}

// sync makes the entries those of vols on one of cfg.Exports.
func (s *Scanner) sync(now time.Time, vols []Volume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]struct{}, len(vols))
	for _, v := range vols {
		if _, ok := s.cfg.Exports[v.Export]; !ok {
			continue
		}
		seen[v.PV] = struct{}{}
		if e, ok := s.entries[v.PV]; ok {
			e.vol = v
			continue
		}
		s.entries[v.PV] = &entry{vol: v, next: now.Add(spread(v.PV, s.cfg.Interval))}
	}
	for name := range s.entries {
		if _, ok := seen[name]; !ok {
			delete(s.entries, name)
		}
	}
	s.synced = now
}

// spread maps name to an offset within interval.
func spread(name string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return time.Duration(h.Sum64() % uint64(interval))
}

func (s *Scanner) record(logger klog.Logger, e *entry, tally exportfs.Tally, err error) {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	e.next = now.Add(s.cfg.Interval)
	if err != nil {
		s.scans[outcomeError]++
		s.mu.Unlock()
		if errors.Is(err, fs.ErrNotExist) {
			logger.Info("The directory of a volume is missing on the export; its usage is not measured", "PV", e.vol.PV, "export", e.vol.Export, "directory", e.vol.Dir)
		} else {
			logger.Info("Measuring a volume's usage failed; retried at the next interval", "PV", e.vol.PV, "export", e.vol.Export, "directory", e.vol.Dir, "err", err.Error())
		}
		return
	}
	s.scans[outcomeSuccess]++
	e.tally, e.scanned = tally, now
	wasOver := e.over
	capacity := e.vol.CapacityBytes
	e.over = capacity > 0 && tally.Bytes > uint64(capacity)
	vol := e.vol
	s.mu.Unlock()
	if e.over && !wasOver && s.cfg.Recorder != nil && vol.Claim != "" {
		s.cfg.Recorder.Event(claimRef(vol), v1.EventTypeWarning, ReasonOverCapacity, overMessage(tally.Bytes, capacity))
	}
}

// overMessage says by how much a volume is above its capacity, and why
// nothing stopped it.
func overMessage(used uint64, capacity int64) string {
	over := used - uint64(capacity)
	return fmt.Sprintf("the volume holds %s, %s (%.0f%%) more than its capacity of %s; NFS does not enforce a claim's size, so writes go on until the export is full: free space in the volume or expand the claim",
		formatBytes(used), formatBytes(over), 100*float64(over)/float64(capacity), formatBytes(uint64(capacity)))
}

func claimRef(v Volume) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: v.Namespace, Name: v.Claim, UID: types.UID(v.ClaimUID)}
}

// formatBytes writes n in binary units, one decimal.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (s *Scanner) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries, s.synced = map[string]*entry{}, time.Time{}
}

// Sample is the last measurement of one volume, for the metrics.
type Sample struct {
	Volume
	Scanned time.Time // zero: not measured yet
	Tally   exportfs.Tally
}

// Samples returns the volumes known and their last measurement.
func (s *Scanner) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sample, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, Sample{Volume: e.vol, Scanned: e.scanned, Tally: e.tally})
	}
	return out
}

// Scans returns how many scans completed, by outcome.
func (s *Scanner) Scans() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.scans))
	for k, v := range s.scans {
		out[k] = v
	}
	return out
}

// VolumesOf picks, from pvs, the volumes to measure: Bound NFS PVs that
// provisioner made (or the incumbent it replaces, under the same name), each
// on its export of set (set.Home). The directory is the one the PV mounts,
// from spec.nfs.path below that export's path. A PV that names the export's
// server otherwise (compared with exports.NormalServer), annotated or not,
// is skipped rather than guessed at.
func VolumesOf(pvs []*v1.PersistentVolume, provisioner string, set *exports.Set) []Volume {
	var out []Volume
	for _, pv := range pvs {
		if pv.Spec.NFS == nil || pv.Status.Phase != v1.VolumeBound || pv.Annotations["pv.kubernetes.io/provisioned-by"] != provisioner {
			continue
		}
		export, ok := set.Home(pv)
		if !ok {
			continue
		}
		if exports.NormalServer(pv.Spec.NFS.Server) != exports.NormalServer(export.Server) {
			continue
		}
		dir, err := volpath.FromNFSPath(export.Path, pv.Spec.NFS.Path)
		if err != nil || dir == "" {
			continue
		}
		v := Volume{PV: pv.Name, Export: export.Name, Dir: dir}
		if q, ok := pv.Spec.Capacity[v1.ResourceStorage]; ok {
			v.CapacityBytes = q.Value()
		}
		if ref := pv.Spec.ClaimRef; ref != nil {
			v.Namespace, v.Claim, v.ClaimUID = ref.Namespace, ref.Name, string(ref.UID)
		}
		out = append(out, v)
	}
	return out
}
