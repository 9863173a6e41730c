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

// special are ranges that are never globally routable or are reserved,
// beyond what net/netip's predicates cover (IANA special-purpose registries).
var special = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "cgnat"},
	{netip.MustParsePrefix("192.0.0.0/24"), "ietf-protocol-assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4-relay"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
	{netip.MustParsePrefix("100::/64"), "discard"},
	{netip.MustParsePrefix("2001::/23"), "ietf-protocol-assignment"},
	{netip.MustParsePrefix("2002::/16"), "6to4"},
	{netip.MustParsePrefix("64:ff9b::/96"), "nat64"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "nat64"},
	{netip.MustParsePrefix("5f00::/16"), "srv6"},
}

// v4Plain marks first octets under which no special IPv4 range lies, so
// most public addresses skip the range scan.
var v4Plain = func() (t [256]bool) {
	for i := range t {
		t[i] = true
	}
	for _, o := range []int{0, 10, 100, 127, 169, 172, 192, 198, 203} {
		t[o] = false
	}
	for o := 224; o < 256; o++ {
		t[o] = false
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

// NewGuard refuses the non-routable ranges and the operator's own networks
// (never_query CIDRs).
func NewGuard(neverQuery []string) (*Guard, error) {
	g := &Guard{}
	for _, c := range neverQuery {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			if a, aerr := netip.ParseAddr(strings.TrimSpace(c)); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return nil, fmt.Errorf("never_query: %q is not a CIDR or address", c)
			}
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
	if addr.Is4() && v4Plain[addr.As4()[0]] {
		return g.neverQueryReason(addr)
	}
	switch {
	case addr.IsUnspecified():
		return "unspecified"
	case addr.IsLoopback():
		return "loopback"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast():
		return "link-local"
	case addr.IsMulticast():
		return "multicast"
	case addr.IsPrivate():
		return "private"
	case addr == netip.MustParseAddr("255.255.255.255"):
		return "broadcast"
	}
	for _, s := range special {
		if s.prefix.Contains(addr) {
			if s.reason == "documentation" && g != nil && g.allowDocumentation {
				continue
			}
			return s.reason
		}
	}
	if !addr.IsGlobalUnicast() {
		return "not-global-unicast"
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
