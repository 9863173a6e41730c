package kafka

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TLS to Kafka is verified unless a config says otherwise: a listener whose
// certificate no CA vouches for is refused at the handshake.
func TestTLSIsVerifiedByDefault(t *testing.T) {
	for _, tcp := range []string{"", "tcp: { connect_timeout: 5s, tcp_user_timeout: 30s }\n"} {
		t.Run(map[bool]string{true: "franz-go's TLS dialer", false: "our dialer, with tcp settings"}[tcp == ""], func(t *testing.T) {
			tlsVerified(t, tcp)
		})
	}
}

// tlsVerified pings an unverifiable TLS listener with extra client config.
func tlsVerified(t *testing.T, extra string) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	spec := service.NewConfigSpec().Fields(append(clientFields(), upstreamClientFields()...)...)
	conf, err := spec.ParseYAML(fmt.Sprintf("seed_brokers: [ %q ]\ntls: { enabled: true }\n%s", addr, extra), nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := parseClientConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	if cc.tls == nil || cc.tls.InsecureSkipVerify {
		t.Fatalf("tls enabled parsed as %+v: not verified", cc.tls)
	}
	cl, err := kgo.NewClient(append(cc.opts(service.MockResources().Logger()), kgo.RequestRetries(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = cl.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("ping over unverifiable TLS: %v, want a certificate error", err)
	}
}
