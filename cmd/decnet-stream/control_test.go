package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/bus/bustest"
)

// The heartbeat appears on its topic, and a stop command on system.control
// makes the worker exit cleanly after committing the command's offset, so a
// restarted worker does not stop again.
func TestHeartbeatAndControlStop(t *testing.T) {
	addr := startBroker(t, "system.health", "system.control", "system.enrich.control")
	worker := exec.Command(binary, "streams", "../../config/streams/control.yaml", "../../config/streams/heartbeat.yaml")
	worker.Env = append(os.Environ(), "KAFKA_SEED_BROKERS="+addr, "HEARTBEAT_INTERVAL=200ms")
	worker.Stdout, worker.Stderr = os.Stderr, os.Stderr
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = worker.Wait(); close(exited) }()
	defer func() {
		_ = worker.Process.Kill() // no-op once it exited
		<-exited
	}()

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("system.health"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var beat *kgo.Record
	for beat == nil {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no heartbeat on system.health")
		}
		if rs := fs.Records(); len(rs) > 0 {
			beat = rs[0]
		}
	}
	var hb struct {
		Topic   string `json:"topic"`
		Payload struct {
			Worker string  `json:"worker"`
			TS     float64 `json:"ts"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(beat.Value, &hb); err != nil || hb.Topic != "system.enrich.health" || hb.Payload.Worker != "enrich" || hb.Payload.TS == 0 || string(beat.Key) != "enrich" {
		t.Fatalf("heartbeat %s (key %s): %v", beat.Value, beat.Key, err)
	}

	adm := kadm.NewClient(cl)
	for { // the control consumer starts at the latest offset: wait until it is in
		groups, err := adm.DescribeGroups(ctx, "decnet-intel-control")
		if err == nil && groups["decnet-intel-control"].State == "Stable" {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the control consumer never joined its group")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ignore := &kgo.Record{Topic: "system.control", Key: []byte("enrich"), Value: []byte(`{"v":1,"id":"c0","topic":"system.enrich.control","type":"control","ts":1,"payload":{"action":"start","requested_by":"test","ts":1}}`)}
	stop := &kgo.Record{Topic: "system.control", Key: []byte("enrich"), Value: []byte(`{"v":1,"id":"c1","topic":"system.enrich.control","type":"control","ts":1,"payload":{"action":"stop","requested_by":"test","ts":1}}`)}
	if err := cl.ProduceSync(ctx, ignore, stop).FirstErr(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("the worker did not exit cleanly: %v", exitErr)
		}
	case <-ctx.Done():
		t.Fatal("the worker did not stop")
	}
	committed, err := adm.FetchOffsets(context.Background(), "decnet-intel-control")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(context.Background(), "system.control")
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(o.Topic, o.Partition)
		if o.Offset > 0 && (!ok || c.At != o.Offset) {
			t.Errorf("%s/%d: committed %v, end %d: the stop would be read again", o.Topic, o.Partition, c.At, o.Offset)
		}
	})
}

// On a DECNET host the workers panel sees the stage: its heartbeat arrives
// on DECNET's bus as system.enrich.health, and the panel's stop button (a
// stop on system.enrich.control) drains it and it exits 0.
func TestBusHeartbeatAndControlStop(t *testing.T) {
	dir, err := os.MkdirTemp("", "bus")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b, err := bustest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	watch := b.Watch()
	worker := exec.Command(binary, "streams", "../../config/streams/decnet/control.yaml", "../../config/streams/decnet/heartbeat.yaml")
	worker.Env = append(os.Environ(), "DECNET_BUS_SOCKET="+b.Path, "HEARTBEAT_INTERVAL=200ms")
	worker.Stdout, worker.Stderr = os.Stderr, os.Stderr
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = worker.Wait(); close(exited) }()
	defer func() {
		_ = worker.Process.Kill()
		<-exited
	}()
	timeout := time.After(30 * time.Second)
	for beat := false; !beat; {
		select {
		case ev := <-watch:
			var hb struct {
				Type    string `json:"type"`
				Payload struct {
					Worker string  `json:"worker"`
					TS     float64 `json:"ts"`
				} `json:"payload"`
			}
			beat = ev.Topic == "system.enrich.health" && json.Unmarshal(ev.Envelope, &hb) == nil &&
				hb.Type == "health" && hb.Payload.Worker == "enrich" && hb.Payload.TS > 0
		case <-timeout:
			t.Fatal("no heartbeat on the bus as system.enrich.health")
		}
	}
	for b.Subscribers("system.enrich.control") == 0 {
		select {
		case <-timeout:
			t.Fatal("the control stream never subscribed to system.enrich.control")
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.Publish("system.enrich.control", "control", json.RawMessage(`{"action":"stop","requested_by":"panel","ts":1}`))
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("the worker did not exit cleanly: %v", exitErr)
		}
	case <-timeout:
		t.Fatal("the worker did not stop")
	}
}
