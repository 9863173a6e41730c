package geoip

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// writeMMDB builds a small MMDB of dbType with records by network, as the
// real files are shaped; no downloaded database is in the repository.
func writeMMDB(t testing.TB, path, dbType string, records map[string]mmdbtype.Map) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(network, rec); err != nil {
			t.Fatal(err)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func asnRecord(asn uint32, org string) mmdbtype.Map {
	return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(asn), "autonomous_system_organization": mmdbtype.String(org)}
}

func countryRecord(code string) mmdbtype.Map {
	return mmdbtype.Map{
		"country":            mmdbtype.Map{"iso_code": mmdbtype.String(code), "names": mmdbtype.Map{"en": mmdbtype.String("x")}},
		"registered_country": mmdbtype.Map{"iso_code": mmdbtype.String(code)},
	}
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// An ASN file and a country file combine; IPv6 and IPv4-mapped addresses
// are found; an address in neither has nothing, not zeroes.
func TestGeoLite2ASNAndCountryCombine(t *testing.T) {
	dir := t.TempDir()
	asnFile, countryFile := filepath.Join(dir, "GeoLite2-ASN.mmdb"), filepath.Join(dir, "GeoLite2-Country.mmdb")
	writeMMDB(t, asnFile, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"45.1.0.0/16":    asnRecord(64500, "Example Hosting"),
		"2a0b:4340::/32": asnRecord(64501, "Example v6"),
	})
	writeMMDB(t, countryFile, "GeoLite2-Country", map[string]mmdbtype.Map{"45.0.0.0/8": countryRecord("NL")})
	db, err := Open([]string{asnFile, countryFile})
	if err != nil {
		t.Fatal(err)
	}
	a := db.Lookup(netip.MustParseAddr("45.1.2.3"))
	if a.ASN == nil || *a.ASN != 64500 || str(a.Org) != "Example Hosting" || str(a.Country) != "NL" {
		t.Fatalf("45.1.2.3: %v %s %s", a.ASN, str(a.Org), str(a.Country))
	}
	if a := db.Lookup(netip.MustParseAddr("::ffff:45.1.2.3")); a.ASN == nil || *a.ASN != 64500 {
		t.Fatalf("mapped: %+v", a)
	}
	if a := db.Lookup(netip.MustParseAddr("2a0b:4340::1")); a.ASN == nil || *a.ASN != 64501 || a.Country != nil {
		t.Fatalf("v6: %v %s %s", a.ASN, str(a.Org), str(a.Country))
	}
	if a := db.Lookup(netip.MustParseAddr("8.8.8.8")); a.ASN != nil || a.Org != nil || a.Country != nil {
		t.Fatalf("not in the files: %+v", a)
	}
}

// IPinfo's lite database is shaped differently: "asn": "AS64502", "as_name",
// "country_code", and "country" is a name.
func TestIPinfoLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipinfo_lite.mmdb")
	writeMMDB(t, path, "ipinfo lite", map[string]mmdbtype.Map{"45.2.0.0/16": {
		"asn": mmdbtype.String("AS64502"), "as_name": mmdbtype.String("IPinfo Example"), "as_domain": mmdbtype.String("example.net"),
		"country": mmdbtype.String("Germany"), "country_code": mmdbtype.String("DE"), "continent": mmdbtype.String("Europe"),
	}})
	db, err := Open([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	a := db.Lookup(netip.MustParseAddr("45.2.9.9"))
	if a.ASN == nil || *a.ASN != 64502 || str(a.Org) != "IPinfo Example" || str(a.Country) != "DE" {
		t.Fatalf("%v %s %s", a.ASN, str(a.Org), str(a.Country))
	}
}

// A file replaced on disk is read again; a half-written one keeps the
// previous copy in service and says so.
func TestReloadTakesANewFileAndSurvivesABadOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "asn.mmdb")
	writeMMDB(t, path, "GeoLite2-ASN", map[string]mmdbtype.Map{"45.1.0.0/16": asnRecord(64500, "Before")})
	db, err := Open([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := db.Reload(); changed || err != nil {
		t.Fatalf("an unchanged file: %v %v", changed, err)
	}
	writeMMDB(t, path, "GeoLite2-ASN", map[string]mmdbtype.Map{"45.1.0.0/16": asnRecord(64999, "After update")})
	later := time.Now().Add(time.Minute)
	_ = os.Chtimes(path, later, later) // a new mtime even within the file system's resolution
	if changed, err := db.Reload(); !changed || err != nil {
		t.Fatalf("a new file: %v %v", changed, err)
	}
	if a := db.Lookup(netip.MustParseAddr("45.1.0.1")); *a.ASN != 64999 || str(a.Org) != "After update" {
		t.Fatalf("after reload: %v %s", *a.ASN, str(a.Org))
	}
	if err := os.WriteFile(path, []byte("half a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := db.Reload(); changed || err == nil {
		t.Fatalf("a broken file: %v %v", changed, err)
	}
	if a := db.Lookup(netip.MustParseAddr("45.1.0.1")); a.ASN == nil || *a.ASN != 64999 {
		t.Fatal("a broken file replaced the good copy")
	}
	if _, err := Open([]string{path}); err == nil {
		t.Fatal("a broken file opened at start")
	}
}
