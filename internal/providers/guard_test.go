package providers

import (
	"net/netip"
	"testing"
)

func TestParseIPRefusesHostileStrings(t *testing.T) {
	for _, bad := range []string{"", "1.2.3.4/../admin", "1.2.3.4?x=", "1.2.3.4%00", "1.2.3.4\x00", "fe80::1%eth0",
		"１.2.3.4", "1.2.3", "01.2.3.4", " 1.2.3.4", "1.2.3.4 ", "http://1.2.3.4", "1.2.3.4:80", "[::1]", "0x01020304"} {
		if a, err := ParseIP(bad); err == nil {
			t.Errorf("ParseIP(%q) accepted as %v", bad, a)
		}
	}
	for in, want := range map[string]string{"203.0.113.9": "203.0.113.9", "::ffff:8.8.8.8": "8.8.8.8", "2001:DB8::1": "2001:db8::1"} {
		a, err := ParseIP(in)
		if err != nil || a.String() != want {
			t.Errorf("ParseIP(%q) = %v, %v; want %s", in, a, err, want)
		}
	}
}

func TestGuardRefusesNonRoutable(t *testing.T) {
	g, err := NewGuard([]string{"81.2.69.0/24", "2a00:1450::1", "::ffff:81.3.0.0/112"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.5", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1", "192.0.0.8",
		"192.0.2.1", "192.168.1.1", "198.18.0.1", "198.51.100.23", "203.0.113.45", "224.0.0.1", "240.0.0.1",
		"255.255.255.255", "::", "::1", "fe80::1", "fc00::1", "fd12::1", "ff02::1", "2001:db8::1", "64:ff9b::a00:1",
		"2002:a00:1::", "100::1", "3fff::1", "81.2.69.7", "2a00:1450::1",
		// Outside 2000::/3, carrying private IPv4 or reserved: the guard is an
		// allow-list, so none of these reaches a provider.
		"::10.0.0.1", "::192.168.1.1", "::127.0.0.1", "::8.8.8.8", "::ffff:0:10.0.0.1", "::ffff:10.0.0.1",
		"fec0::1", "4000::1", "8000::1", "100::", "100::ffff", "2001::1", "2001:2::1", "2001:10::1",
		// never_query written in IPv4-mapped form covers the IPv4 addresses.
		"81.3.0.9",
	} {
		if g.Check(netip.MustParseAddr(s)) == "" {
			t.Errorf("%s passed the guard", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "81.2.70.1", "2a00:1450::2", "2606:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "3ffe::1"} {
		if r := g.Check(netip.MustParseAddr(s)); r != "" {
			t.Errorf("%s refused: %s", s, r)
		}
	}
	doc := g.AllowDocumentationRangesForTesting()
	if doc.Check(netip.MustParseAddr("203.0.113.45")) != "" || doc.Check(netip.MustParseAddr("10.0.0.5")) == "" {
		t.Error("the testing exception must let documentation ranges through and nothing else")
	}
	if g.Check(netip.MustParseAddr("203.0.113.45")) == "" {
		t.Error("AllowDocumentationRangesForTesting changed the original guard")
	}
	for _, bad := range []string{"not a cidr", "::ffff:0:0/90"} {
		if _, err := NewGuard([]string{bad}); err == nil {
			t.Errorf("never_query %q accepted", bad)
		}
	}
}
