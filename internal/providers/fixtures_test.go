package providers

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/fixtures"
)

// manifestEntry is one recorded provider response (internal/fixtures/data/providers).
type manifestEntry struct {
	Provider string `json:"provider"`
	File     string `json:"file"`
	Request  struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    map[string]string `json:"body"`
	} `json:"request"`
	Response struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
	} `json:"response"`
	Verdict string `json:"verdict"`
}

func manifest(t testing.TB) (dir string, entries []manifestEntry) {
	t.Helper()
	dir, err := fixtures.Path("providers")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Fixtures []manifestEntry `json:"fixtures"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return dir, m.Fixtures
}

// recorded is one request a fixture server saw.
type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fixtureServer serves one response for every request and records them all.
// It fails the test if a request names a non-routable address.
type fixtureServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
}

func newFixtureServer(t testing.TB, status int, headers map[string]string, body []byte) *fixtureServer {
	t.Helper()
	fs := &fixtureServer{}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fs.mu.Lock()
		fs.requests = append(fs.requests, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), b})
		fs.mu.Unlock()
		assertRoutable(t, r.URL.Path+"?"+r.URL.RawQuery+" "+string(b))
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fixtureServer) count() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.requests)
}

func (fs *fixtureServer) last() recorded {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.requests[len(fs.requests)-1]
}

// assertRoutable is the servers' own check that no private, reserved or
// never_query address ever reaches a provider (documentation ranges are
// what the fixtures use and are let through by the test guard).
func assertRoutable(t testing.TB, request string) {
	for _, tok := range strings.FieldsFunc(request, func(r rune) bool {
		return strings.ContainsRune("/?&=\" {}:,", r) && r != ':'
	}) {
		for _, cand := range []string{tok, strings.TrimPrefix(tok, "ipAddress=")} {
			if a, err := netip.ParseAddr(cand); err == nil {
				if why := testGuard().Check(a); why != "" {
					t.Errorf("provider server received %s address %s", why, a)
				}
			}
		}
	}
}

var neverQueryForTests = []string{"81.2.69.0/24"}

func testGuard() *Guard {
	g, err := NewGuard(neverQueryForTests)
	if err != nil {
		panic(err)
	}
	return g.AllowDocumentationRangesForTesting()
}

func testCommon(base string) Common {
	return Common{BaseURL: base, Guard: testGuard(), Limits: Limits{Timeout: 2 * time.Second}}
}
