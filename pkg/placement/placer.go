package placement

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
)

// Export is what the Placer reads of an export; exportfs.FS implements it.
type Export interface {
	Usage(ctx context.Context) (exportfs.Usage, error)
	// Hung reports since when the export hasn't answered; a hung export
	// isn't asked, it is skipped at once.
	Hung() (since time.Time, blocked int)
}

// Config is what a Placer needs.
type Config struct {
	Exports map[string]Export
	// Committed returns the sum of the capacities of the PVs on an
	// export, for the overcommit ratio.
	Committed func(export string) (uint64, error)
	// MaxAge is how long figures are reused; Timeout bounds reading them.
	MaxAge, Timeout time.Duration
	// Settle is how long a placed claim counts against its export's free
	// bytes, readings or not: a new volume is an empty directory, so the
	// figures show it only once its pods write.
	Settle time.Duration
	Clock  clock.PassiveClock
}

// Defaults of Config.
const (
	DefaultMaxAge  = 2 * time.Second
	DefaultTimeout = 2 * time.Second
	DefaultSettle  = 30 * time.Second
	// placementTTL drops a placement whose PV never showed up (its claim
	// deleted meanwhile, the PV never saved): in flight no longer.
	placementTTL = 10 * time.Minute
)

// Placer places claims on exports from fresh figures, counting the claims
// placed meanwhile. Safe for concurrent use.
type Placer struct {
	cfg Config

	mu      sync.Mutex
	figures map[string]*figure
	placed  map[string]placed // by PV name
	swept   time.Time         // when placed was last swept
}

// figure is the last reading of one export, or the one in flight.
type figure struct {
	at      time.Time // when the reading started
	f       Figures
	err     error
	reading chan struct{} // closed when the reading in flight ends; nil if none
}

// placed is one claim placed on an export: in flight until its PV shows up
// (Done), and counted against the export's free bytes for Settle after it
// was placed, and after that until a reading started since.
type placed struct {
	export string
	bytes  uint64
	at     time.Time
	done   bool
}

// New returns a Placer.
func New(cfg Config) *Placer {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Placer{cfg: cfg, figures: map[string]*figure{}, placed: map[string]placed{}}
}

// Place chooses, among names (the class's exports, in its order), the export
// for the PV pvName requesting request bytes, and counts it there until the
// PV shows up (Done) or the attempt fails (Forget). With one name and no
// capacity check there is nothing to choose and nothing is read.
func (p *Placer) Place(ctx context.Context, pvName string, names []string, request uint64, chk Check) (string, error) {
	if len(names) == 1 && !chk.Capacity {
		p.record(pvName, names[0], request)
		return names[0], nil
	}
	cands, err := p.candidates(ctx, names, chk)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Counted afresh under the lock: claims placed while the figures were
	// read count too.
	for i := range cands {
		cands[i].Pending, cands[i].Unseen, cands[i].Committed = p.pendingLocked(cands[i].Name, pvName, cands[i].Committed)
	}
	i, err := Choose(cands, request, chk)
	if err != nil {
		return "", err
	}
	p.placed[pvName] = placed{export: cands[i].Name, bytes: request, at: p.cfg.Clock.Now()}
	p.sweepLocked()
	return cands[i].Name, nil
}

// CheckGrowth checks that export may take growth bytes more for a volume
// already on it, growing to size, as chk asks: no volume may outgrow the
// export itself, whose free bytes an empty volume's growth never changes.
func (p *Placer) CheckGrowth(ctx context.Context, export string, growth, size uint64, chk Check) error {
	cands, err := p.candidates(ctx, []string{export}, chk)
	if err != nil {
		return err
	}
	p.mu.Lock()
	cands[0].Pending, cands[0].Unseen, cands[0].Committed = p.pendingLocked(export, "", cands[0].Committed)
	p.mu.Unlock()
	c := cands[0]
	if c.Err != nil {
		return fmt.Errorf("export %q: free space not known: %w", export, c.Err)
	}
	if size > c.Figures.Size {
		return &Refusal{fmt.Sprintf("the volume can't grow to %s: export %q is only %s", bytes(size), export, bytes(c.Figures.Size))}
	}
	if why := refusal(c, growth, chk); why != "" {
		return &Refusal{fmt.Sprintf("no room to grow the volume by %s: %s", bytes(growth), why)}
	}
	return nil
}

// Done marks the PV's claim as no longer in flight: the PV exists, so its
// capacity is among the export's committed bytes.
func (p *Placer) Done(pvName string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pl, ok := p.placed[pvName]; ok {
		pl.done = true
		p.placed[pvName] = pl
	}
	p.sweepLocked()
}

// Forget drops the PV's placement: the attempt failed and left nothing.
func (p *Placer) Forget(pvName string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.placed, pvName)
}

func (p *Placer) record(pvName, export string, request uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.placed[pvName] = placed{export: export, bytes: request, at: p.cfg.Clock.Now()}
	p.sweepLocked()
}

// sweepLocked drops, at most once a second, the placements that no longer
// count: done and settled, or never done within placementTTL (the claim
// deleted meanwhile, the PV never saved).
func (p *Placer) sweepLocked() {
	now := p.cfg.Clock.Now()
	if now.Sub(p.swept) < time.Second {
		return
	}
	p.swept = now
	for name, pl := range p.placed {
		if now.Sub(pl.at) > placementTTL || (pl.done && now.Sub(pl.at) > p.cfg.Settle+p.cfg.MaxAge) {
			delete(p.placed, name)
		}
	}
}

// pendingLocked returns the bytes placed on export lately (in flight,
// placed within Settle of its last reading, or since), the part of them
// that reading can't show (in flight or placed since), and committed plus
// the bytes in flight to it, leaving out the PV being placed again
// (except).
func (p *Placer) pendingLocked(export, except string, committed uint64) (pending, unseen, inFlight uint64) {
	var readAt time.Time
	if f := p.figures[export]; f != nil {
		readAt = f.at
	}
	inFlight = committed
	for name, pl := range p.placed {
		if pl.export != export || name == except {
			continue
		}
		if !pl.done {
			inFlight += pl.bytes
		}
		if !pl.done || !pl.at.Before(readAt) {
			unseen += pl.bytes
		}
		if !pl.done || readAt.Sub(pl.at) < p.cfg.Settle {
			pending += pl.bytes
		}
	}
	return pending, unseen, inFlight
}

// candidates reads, at once, the figures of every export in names (fresh
// ones, or those at most MaxAge old) and, with a ratio, their committed
// capacity.
func (p *Placer) candidates(ctx context.Context, names []string, chk Check) ([]Candidate, error) {
	cands := make([]Candidate, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		cands[i].Name = name
		wg.Add(1)
		go func() {
			defer wg.Done()
			cands[i].Figures, cands[i].Err = p.read(ctx, name)
		}()
	}
	wg.Wait()
	if chk.Ratio > 0 {
		for i := range cands {
			c, err := p.cfg.Committed(cands[i].Name)
			if err != nil {
				return nil, err
			}
			cands[i].Committed = c
		}
	}
	return cands, nil
}

// read returns the export's figures, at most MaxAge old; concurrent callers
// share one reading.
func (p *Placer) read(ctx context.Context, name string) (Figures, error) {
	export, ok := p.cfg.Exports[name]
	if !ok {
		return Figures{}, fmt.Errorf("no export %q is served", name)
	}
	for {
		p.mu.Lock()
		f := p.figures[name]
		if f != nil && f.reading == nil && p.cfg.Clock.Since(f.at) < p.cfg.MaxAge {
			p.mu.Unlock()
			return f.f, f.err
		}
		if f != nil && f.reading != nil {
			ch := f.reading
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Figures{}, ctx.Err()
			}
		}
		ch := make(chan struct{})
		prev := f
		p.figures[name] = &figure{reading: ch}
		if prev != nil {
			p.figures[name].at, p.figures[name].f, p.figures[name].err = prev.at, prev.f, prev.err
		}
		p.mu.Unlock()

		start := p.cfg.Clock.Now()
		var got Figures
		var err error
		if since, _ := export.Hung(); !since.IsZero() {
			err = fmt.Errorf("not answering since %s", since.UTC().Format(time.RFC3339))
		} else {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
			var u exportfs.Usage
			u, err = export.Usage(rctx)
			cancel()
			got = Figures{Free: u.FreeBytes, Size: u.TotalBytes}
		}
		p.mu.Lock()
		p.figures[name] = &figure{at: start, f: got, err: err}
		p.mu.Unlock()
		close(ch)
		return got, err
	}
}
