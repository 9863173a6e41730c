package providers

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrInvalidIP is wrapped by ParseIP errors.
var ErrInvalidIP = errors.New("invalid IP address")

// ParseIP parses an attacker IP strictly: a plain IPv4 or IPv6 literal, no
// zone, no surrounding text. IPv4-mapped IPv6 is unmapped, so one host has
// one canonical form. Anything else (paths, queries, NULs, look-alike
// digits) is refused here, before any URL could be built from it.
func ParseIP(s string) (netip.Addr, error) {
	if s == "" || len(s) > 64 {
		return netip.Addr{}, fmt.Errorf("%w: %q", ErrInvalidIP, s)
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %q", ErrInvalidIP, s)
	}
	if addr.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w: %q has a zone", ErrInvalidIP, s)
	}
	return addr.Unmap(), nil
}

// The guard is an allow-list: an address may leave only if it is global
// unicast IPv4 outside the IANA special-purpose registry's non-global
// entries, or inside 2000::/3 (IPv6 global unicast) outside that registry's
// non-global entries. Everything else, including IPv6 forms that embed an
// IPv4 address (::a.b.c.d, ::ffff:0:a.b.c.d), is refused.

type specialRange struct {
	prefix netip.Prefix
	reason string
}

func ranges(rs ...string) []specialRange {
	out := make([]specialRange, 0, len(rs)/2)
	for i := 0; i < len(rs); i += 2 {
		out = append(out, specialRange{netip.MustParsePrefix(rs[i]), rs[i+1]})
	}
	return out
}

// special4 are the IPv4 ranges that are not globally reachable (RFC 6890
// and the IANA IPv4 special-purpose registry), named for the skip reason.
var special4 = ranges(
	"0.0.0.0/8", "this-network",
	"10.0.0.0/8", "private",
	"100.64.0.0/10", "cgnat",
	"127.0.0.0/8", "loopback",
	"169.254.0.0/16", "link-local",
	"172.16.0.0/12", "private",
	"192.0.0.0/24", "ietf-protocol-assignment",
	"192.0.2.0/24", "documentation",
	"192.88.99.0/24", "6to4-relay",
	"192.168.0.0/16", "private",
	"198.18.0.0/15", "benchmarking",
	"198.51.100.0/24", "documentation",
	"203.0.113.0/24", "documentation",
	"224.0.0.0/4", "multicast",
	"240.0.0.0/4", "reserved", // includes 255.255.255.255
)

// globalUnicast6 is the only IPv6 space that may leave.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// special6 are the non-global entries of the IANA IPv6 special-purpose
// registry inside 2000::/3.
var special6 = ranges(
	"2001:db8::/32", "documentation",
	"2001::/23", "ietf-protocol-assignment", // Teredo, benchmarking, ORCHID, …
	"2002::/16", "6to4",
	"3fff::/20", "documentation",
)

// outside6 names what an IPv6 address outside 2000::/3 is, for the skip
// reason; anything not listed is "not-global-unicast".
var outside6 = ranges(
	"::/128", "unspecified",
	"::1/128", "loopback",
	"::ffff:0:0/96", "ipv4-mapped",
	"::ffff:0:0:0/96", "ipv4-translated",
	"::/96", "ipv4-compatible",
	"64:ff9b::/96", "nat64",
	"64:ff9b:1::/48", "nat64",
	"100::/64", "discard",
	"fc00::/7", "unique-local",
	"fe80::/10", "link-local",
	"fec0::/10", "site-local",
	"ff00::/8", "multicast",
)

func reasonIn(rs []specialRange, addr netip.Addr) string {
	for _, r := range rs {
		if r.prefix.Contains(addr) {
			return r.reason
		}
	}
	return ""
}

// v4Plain marks first octets under which no special IPv4 range lies, so
// most public addresses skip the range scan.
var v4Plain = func() (t [256]bool) {
	for i := range t {
		t[i] = true
	}
	for _, r := range special4 {
		first := r.prefix.Addr().As4()[0]
		last := first | byte(0xff>>min(r.prefix.Bits(), 8))
		for o := int(first); o <= int(last); o++ {
			t[o] = false
		}
	}
	return t
}()

// Guard decides which addresses may be sent to a third party.
type Guard struct {
	neverQuery []netip.Prefix
	// allowDocumentation lets the documentation ranges through: the
	// recorded provider fixtures use them. Only for tests and fixture-fed
	// demos, never in production.
	allowDocumentation bool
}

// NewGuard refuses everything but global unicast addresses, and the
// operator's own networks (never_query CIDRs or addresses; an IPv4 network
// may be written in IPv4-mapped form, ::ffff:a.b.c.d/n).
func NewGuard(neverQuery []string) (*Guard, error) {
	g := &Guard{}
	for _, c := range neverQuery {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(c))
			if aerr != nil {
				return nil, fmt.Errorf("never_query: %q is not a CIDR or address", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			// Addresses are checked unmapped: so must the network be.
			if p.Bits() < 96 {
				return nil, fmt.Errorf("never_query: %q is IPv4-mapped but shorter than /96", c)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		g.neverQuery = append(g.neverQuery, p.Masked())
	}
	return g, nil
}

// AllowDocumentationRangesForTesting lets RFC 5737 / RFC 3849 documentation
// addresses through the guard, because the recorded provider fixtures use
// them. Every other non-routable range stays refused.
func (g *Guard) AllowDocumentationRangesForTesting() *Guard {
	c := *g
	c.allowDocumentation = true
	return &c
}

// Check returns "" when addr may be sent to a provider, else why not.
func (g *Guard) Check(addr netip.Addr) string {
	if !addr.IsValid() {
		return "invalid"
	}
	if addr.Zone() != "" {
		return "zoned"
	}
	addr = addr.Unmap()
	var why string
	switch {
	case addr.Is4() && v4Plain[addr.As4()[0]]:
	case addr.Is4():
		why = reasonIn(special4, addr)
	case !globalUnicast6.Contains(addr):
		if why = reasonIn(outside6, addr); why == "" {
			why = "not-global-unicast"
		}
	default:
		why = reasonIn(special6, addr)
	}
	if why == "documentation" && g != nil && g.allowDocumentation {
		why = ""
	}
	if why != "" {
		return why
	}
	return g.neverQueryReason(addr)
}

func (g *Guard) neverQueryReason(addr netip.Addr) string {
	if g != nil {
		for _, p := range g.neverQuery {
			if p.Contains(addr) {
				return "never_query"
			}
		}
	}
	return ""
}
