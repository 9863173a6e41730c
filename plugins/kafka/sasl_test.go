package kafka

import (
	"context"
	"strings"
	"testing"
)

// OAUTHBEARER sends the token (and its extensions) as RFC 7628's initial
// response; without a token the config is refused, not sent empty.
func TestSASLOAuthBearer(t *testing.T) {
	conf, err := inputSpec().ParseYAML(`
seed_brokers: [ "127.0.0.1:9092" ]
topics: [ a ]
sasl:
  - mechanism: OAUTHBEARER
    token: eyJhbGciOi.x.y
    extensions: { logicalCluster: lkc-1 }
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	mechs, err := parseSASL(conf)
	if err != nil || len(mechs) != 1 || mechs[0].Name() != "OAUTHBEARER" {
		t.Fatalf("mechanisms %v, %v", mechs, err)
	}
	_, first, err := mechs[0].Authenticate(context.Background(), "broker:9092")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(first); !strings.Contains(got, "auth=Bearer eyJhbGciOi.x.y\x01") || !strings.Contains(got, "logicalCluster=lkc-1\x01") {
		t.Fatalf("initial response %q", got)
	}

	conf, err = inputSpec().ParseYAML(`{ seed_brokers: [ "127.0.0.1:9092" ], topics: [ a ], sasl: [ { mechanism: OAUTHBEARER } ] }`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseSASL(conf); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("a tokenless OAUTHBEARER was accepted: %v", err)
	}
}
