package decnet_webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const secret = "s3cret"

func newTestInput(t *testing.T, extra string) (*input, string) {
	t.Helper()
	conf, err := spec().ParseYAML("address: 127.0.0.1:0\nsecret: "+secret+"\n"+extra, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := newInput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in, "http://" + in.Addr() + "/decnet/webhook"
}

type answer struct {
	status int
	err    error
}

// post sends a signed event and answers on the returned channel.
func post(url string, body []byte) <-chan answer {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	out := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("X-DECNET-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- answer{err: err}
			return
		}
		resp.Body.Close()
		out <- answer{status: resp.StatusCode}
	}()
	return out
}

func event(id string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"payload":{"attacker_ip":"203.0.113.45"},"topic":"attacker.observed","ts":%q,"type":"observed","v":1}`,
		id, time.Now().UTC().Format(time.RFC3339Nano)))
}

func status(t *testing.T, ch <-chan answer) int {
	t.Helper()
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a.status
}

// A request that times out while its event waits for slow outputs gets
// 503 and DECNET retries; the retries must not forward the event a second
// time: while it is still on its way they are told to come back, and once
// the outputs have it they are answered 200 without forwarding it again.
func TestARetryOfAnEventStillOnItsWayIsNotForwardedTwice(t *testing.T) {
	in, url := newTestInput(t, "timeout: 50ms\n")
	body := event("aa")
	first := post(url, body)
	batch, ack, err := in.ReadBatch(context.Background()) // the outputs are slow to take it
	if err != nil {
		t.Fatal(err)
	}
	if got := status(t, first); got != http.StatusServiceUnavailable {
		t.Fatalf("timed-out request: %d, want 503", got)
	}
	if got := status(t, post(url, body)); got != http.StatusServiceUnavailable {
		t.Fatalf("a retry while the event is on its way: %d, want 503", got)
	}
	if raw, _ := batch[0].AsBytes(); !bytes.Equal(raw, body) {
		t.Fatalf("read %s", raw)
	}
	if err := ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := status(t, post(url, body)); got != http.StatusOK {
		t.Fatalf("a retry after delivery: %d, want 200", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if b, _, err := in.ReadBatch(ctx); err == nil {
		t.Fatalf("the event was forwarded again: %d messages", len(b))
	}
}

// An event the outputs refused is DECNET's to retry, and the retry is
// forwarded.
func TestARefusedEventIsForwardedOnRetry(t *testing.T) {
	in, url := newTestInput(t, "")
	body := event("bb")
	for i, want := range []int{http.StatusServiceUnavailable, http.StatusOK} {
		res := post(url, body)
		_, ack, err := in.ReadBatch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var nack error
		if i == 0 {
			nack = errors.New("kafka is away")
		}
		if err := ack(context.Background(), nack); err != nil {
			t.Fatal(err)
		}
		if got := status(t, res); got != want {
			t.Fatalf("attempt %d: %d, want %d", i+1, got, want)
		}
	}
}

// When max_in_flight events wait, the next is told to retry later.
func TestBackpressureAnswers429(t *testing.T) {
	in, url := newTestInput(t, "max_in_flight: 1\n")
	first := post(url, event("c1"))
	waitQueued := time.Now().Add(5 * time.Second)
	for len(in.queue) == 0 && time.Now().Before(waitQueued) {
		time.Sleep(time.Millisecond)
	}
	if got := status(t, post(url, event("c2"))); got != http.StatusTooManyRequests {
		t.Fatalf("with the queue full: %d, want 429", got)
	}
	_, ack, err := in.ReadBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = ack(context.Background(), nil)
	if got := status(t, first); got != http.StatusOK {
		t.Fatalf("first: %d", got)
	}
}
