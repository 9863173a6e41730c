// Package geoip says where an address is routed from — its autonomous
// system, the AS's organisation and its country — from MMDB files the
// operator supplies (MaxMind GeoLite2 ASN/Country/City, DB-IP lite, IPinfo
// lite). It costs no provider quota, so every attacker gets it.
//
// Files are read into memory rather than mapped: a reload swaps in a new
// reader while lookups may still be reading the old one, which the garbage
// collector then frees; an unmapped file under a reader would crash it.
package geoip

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Answer is what the files say of one address; nil fields are unknown.
type Answer struct {
	ASN     *uint32
	Org     *string
	Country *string // ISO 3166-1 alpha-2
}

// DB answers from one or more MMDB files: for each field, the first file
// (in the order given) that has it wins, so an ASN file and a country file
// combine.
type DB struct {
	files   []string
	readers atomic.Pointer[[]*source]

	mu       sync.Mutex // one reload at a time
	lastErr  error
	stop     chan struct{}
	stopOnce sync.Once
}

type source struct {
	path    string
	reader  *maxminddb.Reader
	modTime time.Time
	size    int64
	dbType  string
}

// Open reads every file; any that cannot be read is an error (a file that
// is configured must be usable at start).
func Open(files []string) (*DB, error) {
	if len(files) == 0 {
		return nil, errors.New("geoip: no file given")
	}
	d := &DB{files: files, stop: make(chan struct{})}
	srcs := make([]*source, len(files))
	for i, f := range files {
		s, err := load(f)
		if err != nil {
			return nil, err
		}
		srcs[i] = s
	}
	d.readers.Store(&srcs)
	return d, nil
}

func load(path string) (*source, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: %w", err)
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("geoip: %s: %w", path, err)
	}
	return &source{path: path, reader: r, modTime: st.ModTime(), size: st.Size(), dbType: r.Metadata.DatabaseType}, nil
}

// record is the union of the shapes the supported files use.
type record struct {
	// GeoLite2-ASN, DB-IP ASN lite.
	ASN   uint32 `maxminddb:"autonomous_system_number"`
	ASOrg string `maxminddb:"autonomous_system_organization"`
	// GeoLite2-Country/City, DB-IP country lite: {"iso_code": …}; IPinfo
	// lite: the country's name (its code is country_code).
	Country           any `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
	// IPinfo lite.
	IPinfoASN   string `maxminddb:"asn"` // "AS64500"
	ASName      string `maxminddb:"as_name"`
	CountryCode string `maxminddb:"country_code"`
}

// Lookup answers for ip. A file that fails to decode an entry is skipped
// for that field: geography never fails an enrichment.
func (d *DB) Lookup(ip netip.Addr) Answer {
	var a Answer
	ip = ip.Unmap()
	for _, s := range *d.readers.Load() {
		res := s.reader.Lookup(ip)
		if !res.Found() {
			continue
		}
		var rec record
		if err := res.Decode(&rec); err != nil {
			continue
		}
		if a.ASN == nil {
			asn := rec.ASN
			if asn == 0 && rec.IPinfoASN != "" {
				if n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(rec.IPinfoASN), "AS"), 10, 32); err == nil {
					asn = uint32(n)
				}
			}
			if asn != 0 {
				a.ASN = &asn
			}
		}
		if a.Org == nil {
			if org := firstNonEmpty(rec.ASOrg, rec.ASName); org != "" {
				a.Org = &org
			}
		}
		if a.Country == nil {
			code := rec.CountryCode
			if m, ok := rec.Country.(map[string]any); ok {
				if c, ok := m["iso_code"].(string); ok {
					code = c
				}
			}
			if code = firstNonEmpty(code, rec.RegisteredCountry.ISOCode); code != "" {
				a.Country = &code
			}
		}
		if a.ASN != nil && a.Org != nil && a.Country != nil {
			break
		}
	}
	return a
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Reload reads again every file whose size or modification time changed.
// A file that cannot be read now (being replaced, say) keeps its previous
// copy in service; the error says so and the next reload tries again.
func (d *DB) Reload() (changed bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.readers.Load()
	next := make([]*source, len(old))
	var errs []error
	for i, s := range old {
		next[i] = s
		st, err := os.Stat(s.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("geoip: %w", err))
			continue
		}
		if st.ModTime().Equal(s.modTime) && st.Size() == s.size {
			continue
		}
		ns, err := load(s.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (the previous copy stays in service)", err))
			continue
		}
		next[i], changed = ns, true
	}
	if changed {
		d.readers.Store(&next)
	}
	d.lastErr = errors.Join(errs...)
	return changed, d.lastErr
}

// Watch reloads changed files every interval until Stop; onReload hears of
// each reload that changed something or failed.
func (d *DB) Watch(interval time.Duration, onReload func(changed bool, err error)) {
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if changed, err := d.Reload(); (changed || err != nil) && onReload != nil {
					onReload(changed, err)
				}
			case <-d.stop:
				return
			}
		}
	}()
}

// Stop ends Watch. Safe to call twice.
func (d *DB) Stop() { d.stopOnce.Do(func() { close(d.stop) }) }

// Describe names the loaded files and their database types, for logs.
func (d *DB) Describe() string {
	var parts []string
	for _, s := range *d.readers.Load() {
		parts = append(parts, fmt.Sprintf("%s (%s, built %s)", s.path, s.dbType,
			time.Unix(int64(s.reader.Metadata.BuildEpoch), 0).UTC().Format("2006-01-02")))
	}
	return strings.Join(parts, ", ")
}
