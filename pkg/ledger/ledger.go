// Package ledger keeps, on the export itself, the record of every directory
// the provisioner made and what became of it, so ownership survives restarts
// and PV deletion.
package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"
)

// File is where the ledger lives, relative to the export root. Its directory
// starts with ".", which no claim's directory may use, so no tenant can reach
// it through a volume.
const File = ".nfs-provisioner/ledger.jsonl"

// Kind is what a record says about its directory.
type Kind string

// The kinds of records.
const (
	// Volume: Dir was made, or adopted, for the PV named PV. Ino is the
	// directory's inode number; 0 means the provisioner was about to create
	// it and doesn't know yet whether it did.
	Volume Kind = "volume"
	// Parent: Dir was created as a parent of a volume's directory (a nested
	// pathPattern), and may be removed once nothing recorded is below it.
	Parent Kind = "parent"
	// Retained: Dir is a volume's directory kept when PV was deleted.
	Retained Kind = "retained"
	// Archive: Dir is the archive of From, made when PV was deleted.
	Archive Kind = "archive"
)

// Record is one line of the ledger. A record with Drop set removes the
// record of the same Kind, Dir and PV.
type Record struct {
	Kind Kind   `json:"kind"`
	Dir  string `json:"dir"`
	PV   string `json:"pv,omitempty"`
	Ino  uint64 `json:"ino,omitempty"`
	From string `json:"from,omitempty"`
	// NS is the namespace of the volume's claim (volume, retained and
	// archive records), so that data left in a namespace's subtree goes
	// to claims of that namespace only.
	NS   string    `json:"ns,omitempty"`
	Time time.Time `json:"time,omitzero"`
	Drop bool      `json:"drop,omitempty"`
}

type key struct {
	kind    Kind
	dir, pv string
}

func (r Record) key() key { return key{r.Kind, r.Dir, r.PV} }

// Store is the file access the ledger needs; exportfs.FS provides it,
// confined to the export and refusing symbolic links.
type Store interface {
	ReadFile(ctx context.Context, rel string) ([]byte, error)
	AppendFile(ctx context.Context, rel string, data []byte) error
	ReplaceFile(ctx context.Context, rel string, data []byte) error
}

// compactSlack is how many lines beyond twice the live records the file may
// hold before it is rewritten.
const compactSlack = 256

// Ledger is the in-memory view of the file, changed only by Append, which
// writes first. It is safe for concurrent use.
type Ledger struct {
	store Store
	// writer is held by the one goroutine writing the file; the others'
	// records wait in next and go out with the following write.
	writer chan struct{}

	mu      sync.Mutex
	records map[key]Record
	// byDir holds the keys of the records of each directory.
	byDir map[string][]key
	// below counts the records other than Parent strictly below each
	// directory, so overlap checks cost one lookup per path segment.
	below map[string]int
	// lines counts the lines in the file; torn says whether it may end in
	// a partial line, which the next write must not extend.
	lines   int
	torn    bool
	next    *batch
	skipped int
}

type batch struct {
	recs []Record
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// Open reads the ledger from store; a missing file is an empty ledger. Lines
// that can't be parsed are skipped and counted (see Skipped).
func Open(ctx context.Context, store Store) (*Ledger, error) {
	l := &Ledger{
		store: store, writer: make(chan struct{}, 1),
		records: map[key]Record{}, byDir: map[string][]key{}, below: map[string]int{},
		next: newBatch(),
	}
	data, err := store.ReadFile(ctx, File)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the directory ledger %s: %w", File, err)
	}
	l.torn = len(data) > 0 && data[len(data)-1] != '\n'
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		l.lines++
		var r Record
		if err := json.Unmarshal(line, &r); err != nil || r.Dir == "" || !known(r.Kind) {
			l.skipped++
			continue
		}
		l.apply(r)
	}
	return l, nil
}

func known(k Kind) bool {
	switch k {
	case Volume, Parent, Retained, Archive:
		return true
	}
	return false
}

// Skipped tells how many lines Open could not parse.
func (l *Ledger) Skipped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.skipped
}

// Append writes recs to the file and then applies them. Concurrent calls are
// written together. On error the records may or may not be in the file; none
// is applied.
func (l *Ledger) Append(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	l.mu.Lock()
	b := l.next
	b.recs = append(b.recs, recs...)
	l.mu.Unlock()
	for {
		select {
		case <-b.done:
			return b.err
		case l.writer <- struct{}{}:
			l.flush(ctx)
			<-l.writer
		case <-ctx.Done():
			return fmt.Errorf("writing the directory ledger %s: %w", File, context.Cause(ctx))
		}
	}
}

// flush writes the waiting batch, then compacts the file if it has grown to
// over twice its live records. The caller holds writer.
func (l *Ledger) flush(ctx context.Context) {
	l.mu.Lock()
	b := l.next
	if len(b.recs) == 0 {
		l.mu.Unlock()
		return
	}
	l.next = newBatch()
	var buf bytes.Buffer
	if l.torn {
		buf.WriteByte('\n')
	}
	for _, r := range b.recs {
		line, _ := json.Marshal(r) // a Record always marshals
		buf.Write(line)
		buf.WriteByte('\n')
	}
	l.mu.Unlock()

	err := l.store.AppendFile(ctx, File, buf.Bytes())
	l.mu.Lock()
	var live []byte
	if err != nil {
		l.torn = true
		err = fmt.Errorf("writing the directory ledger %s: %w", File, err)
	} else {
		l.torn = false
		l.lines += len(b.recs)
		for _, r := range b.recs {
			l.apply(r)
		}
		if l.lines > 2*len(l.records)+compactSlack {
			live = l.encodeLocked()
		}
	}
	n := len(l.records)
	l.mu.Unlock()
	b.err = err
	close(b.done)

	if live != nil {
		// Failing to compact loses nothing: the file still holds every
		// line, and the next write tries again.
		if l.store.ReplaceFile(ctx, File, live) == nil {
			l.mu.Lock()
			l.lines = n
			l.mu.Unlock()
		}
	}
}

// encodeLocked returns the live records as file contents.
func (l *Ledger) encodeLocked() []byte {
	var buf bytes.Buffer
	for _, r := range l.records {
		line, _ := json.Marshal(r)
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func (l *Ledger) apply(r Record) {
	k := r.key()
	_, had := l.records[k]
	if r.Drop {
		if !had {
			return
		}
		delete(l.records, k)
		keys := l.byDir[r.Dir]
		for i, other := range keys {
			if other == k {
				keys = append(keys[:i], keys[i+1:]...)
				break
			}
		}
		if len(keys) == 0 {
			delete(l.byDir, r.Dir)
		} else {
			l.byDir[r.Dir] = keys
		}
		l.count(r, -1)
		return
	}
	l.records[k] = r
	if !had {
		l.byDir[r.Dir] = append(l.byDir[r.Dir], k)
		l.count(r, 1)
	}
}

func (l *Ledger) count(r Record, delta int) {
	if r.Kind == Parent {
		return
	}
	for i := 0; i < len(r.Dir); i++ {
		if r.Dir[i] != '/' {
			continue
		}
		a := r.Dir[:i]
		if l.below[a] += delta; l.below[a] == 0 {
			delete(l.below, a)
		}
	}
}

// Of returns every record of kind k.
func (l *Ledger) Of(k Kind) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for key, r := range l.records {
		if key.kind == k {
			out = append(out, r)
		}
	}
	return out
}

// Has tells whether a record of kind k for the PV pvName exists, without
// copying the records.
func (l *Ledger) Has(k Kind, pvName string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key := range l.records {
		if key.kind == k && key.pv == pvName {
			return true
		}
	}
	return false
}

// At returns the records of dir itself.
func (l *Ledger) At(dir string) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for _, k := range l.byDir[dir] {
		out = append(out, l.records[k])
	}
	return out
}

// Below counts the records, parents aside, strictly below dir.
func (l *Ledger) Below(dir string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.below[dir]
}

// Around returns a record, parents aside, that overlaps dir without being
// at dir itself: one at an ancestor of dir, else one below it.
func (l *Ledger) Around(dir string) (Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; i < len(dir); i++ {
		if dir[i] != '/' {
			continue
		}
		for _, k := range l.byDir[dir[:i]] {
			if k.kind != Parent {
				return l.records[k], true
			}
		}
	}
	if l.below[dir] == 0 {
		return Record{}, false
	}
	// Rare (a refusal): find one to name.
	for k, r := range l.records {
		if k.kind != Parent && strings.HasPrefix(k.dir, dir+"/") {
			return r, true
		}
	}
	return Record{}, false
}
