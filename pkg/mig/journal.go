package mig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// journalVersion is the version of the journal file format.
const journalVersion = 1

// journalRecord is an apply in progress: the GPUs it has started to change,
// each with its layout before and the layout it is going to.
type journalRecord struct {
	Version int          `json:"version"`
	Config  string       `json:"config"`
	GPUs    []journalGPU `json:"gpus"`
}

type journalGPU struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	Previous Layout `json:"previous"`
	Desired  Layout `json:"desired"`
}

func (r *journalRecord) indices() []int {
	out := make([]int, len(r.GPUs))
	for i, g := range r.GPUs {
		out[i] = g.Index
	}
	return out
}

// journal is the file that holds the apply in progress; an empty path keeps none.
type journal struct {
	path string
}

// read returns the recorded apply, or nil when there is none.
func (j journal) read() (*journalRecord, error) {
	if j.path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading mig journal: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r journalRecord
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("reading mig journal %s: %w", j.path, err)
	}
	if r.Version != journalVersion {
		return nil, fmt.Errorf("reading mig journal %s: version %d, want %d", j.path, r.Version, journalVersion)
	}
	return &r, nil
}

// write replaces the journal with r atomically: a temporary file in the same
// directory, synced, then renamed over the journal, and the directory synced.
func (j journal) write(r *journalRecord) (err error) {
	if j.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding mig journal: %w", err)
	}
	dir := filepath.Dir(j.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the directory of mig journal %s: %w", j.path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(j.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing mig journal %s: %w", j.path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, werr := tmp.Write(append(data, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("writing mig journal %s: %w", j.path, err)
	}
	if err := os.Rename(tmp.Name(), j.path); err != nil {
		return fmt.Errorf("writing mig journal %s: %w", j.path, err)
	}
	return syncDir(dir)
}

// clear removes the journal.
func (j journal) clear() error {
	if j.path == "" {
		return nil
	}
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing mig journal: %w", err)
	}
	return syncDir(filepath.Dir(j.path))
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
