package dead_letter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

func newTestProcessor(t *testing.T, yaml string) *processor {
	t.Helper()
	conf, err := spec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newProcessor(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWhatFitsIsLeftAlone(t *testing.T) {
	p := newTestProcessor(t, `{}`)
	body := strings.Repeat("x", 900_000)
	msg := service.NewMessage([]byte(body))
	msg.MetaSetMut("decnet_error", "bad_key")
	out, _ := p.Process(context.Background(), msg)
	if b, _ := out[0].AsBytes(); string(b) != body {
		t.Fatal("a record that fits was changed")
	}
	if _, ok := out[0].MetaGet(MetaTruncated); ok {
		t.Fatal("marked truncated")
	}
}

// 1 MiB ± 1 KB and 5 MB: every one comes out small enough to write, with
// its size and hash to find the original.
func TestOversizedBodiesAreCutWithTheirSizeAndHash(t *testing.T) {
	p := newTestProcessor(t, `{}`)
	for _, n := range []int{1<<20 - 1024, 1 << 20, 1<<20 + 1024, 5_000_000} {
		body := []byte(strings.Repeat("y", n))
		msg := service.NewMessage(body)
		msg.MetaSetMut("decnet_error", "bad_envelope")
		msg.MetaSetMut("decnet_error_detail", strings.Repeat("d", 10_000))
		out, _ := p.Process(context.Background(), msg)
		got, _ := out[0].AsBytes()
		sum := sha256.Sum256(body)
		if len(got) != 64<<10 || string(got) != string(body[:64<<10]) {
			t.Errorf("%d bytes: kept %d", n, len(got))
		}
		if v, _ := out[0].MetaGet(MetaOriginalBytes); v != strconv.Itoa(n) {
			t.Errorf("%d bytes: original size %q", n, v)
		}
		if v, _ := out[0].MetaGet(MetaSHA256); v != hex.EncodeToString(sum[:]) {
			t.Errorf("%d bytes: hash %q", n, v)
		}
		if v, _ := out[0].MetaGet("decnet_error_detail"); len(v) > 4096+len("…") {
			t.Errorf("%d bytes: detail of %d bytes kept", n, len(v))
		}
		if v, _ := out[0].MetaGet("decnet_error"); v != "bad_envelope" {
			t.Errorf("the reason was lost: %q", v)
		}
	}
}
