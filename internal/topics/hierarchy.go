// Package topics is DECNET's subject hierarchy in Go: the names, builders
// that refuse malformed segments, NATS wildcard patterns, and the v1 event
// envelope. It has no Benthos or Kafka types; the topic_router processor and
// the kafka_franz input build on it.
package topics

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Roots of the hierarchy.
const (
	RootTopology   = "topology"
	RootDecky      = "decky"
	RootAttacker   = "attacker"
	RootSystem     = "system"
	RootCredential = "credential"
)

// Mutation states of topology.<id>.mutation.<state>.
const (
	MutationEnqueued = "enqueued"
	MutationApplying = "applying"
	MutationApplied  = "applied"
	MutationFailed   = "failed"
)

// Leaves under topology.<id>, decky.<id>, attacker, credential and system.
const (
	TopologyStatus = "status"

	DeckyState         = "state"
	DeckyTraffic       = "traffic"
	DeckyMutateRequest = "mutate_request"
	DeckyMutation      = "mutation"

	AttackerObserved       = "observed"
	AttackerScored         = "scored"
	AttackerFingerprinted  = "fingerprinted"
	AttackerSessionStarted = "session.started"
	AttackerSessionEnded   = "session.ended"
	AttackerIntelEnriched  = "intel.enriched"

	CredentialCaptured      = "captured"
	CredentialReuseDetected = "reuse.detected"

	SystemLog       = "log"
	SystemBusHealth = "bus.health"
	SystemHealth    = "health"
	SystemControl   = "control"
)

// Control actions carried on system.<worker>.control.
const (
	ControlStop  = "stop"
	ControlStart = "start"
)

// Full subjects that are used as they are.
const (
	SubjectAttackerObserved            = RootAttacker + "." + AttackerObserved
	SubjectAttackerScored              = RootAttacker + "." + AttackerScored
	SubjectAttackerIntelEnriched       = RootAttacker + "." + AttackerIntelEnriched
	SubjectCredentialCaptured          = RootCredential + "." + CredentialCaptured
	SubjectWebhookSubscriptionsChanged = RootSystem + ".webhook.subscriptions_changed"
)

// ErrBadSegment is wrapped by every builder error.
var ErrBadSegment = errors.New("invalid subject segment")

// checkSegment rejects a caller-supplied token that would change the shape
// of a subject: empty, or holding a separator, a wildcard or white space.
func checkSegment(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrBadSegment, what)
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || r == 0 {
			return fmt.Errorf("%w: %s %q contains %q", ErrBadSegment, what, s, r)
		}
	}
	return nil
}

// checkLeaf accepts a dotted leaf (bus.health) whose every token is a valid
// segment.
func checkLeaf(what, leaf string) error {
	if leaf == "" {
		return fmt.Errorf("%w: %s is empty", ErrBadSegment, what)
	}
	for _, tok := range strings.Split(leaf, ".") {
		if err := checkSegment(what+" token", tok); err != nil {
			return err
		}
	}
	return nil
}

// TopologyMutation is topology.<id>.mutation.<state>.
func TopologyMutation(id, state string) (string, error) {
	if err := checkSegment("topology id", id); err != nil {
		return "", err
	}
	if err := checkSegment("mutation state", state); err != nil {
		return "", err
	}
	return RootTopology + "." + id + ".mutation." + state, nil
}

// TopologyStatusOf is topology.<id>.status.
func TopologyStatusOf(id string) (string, error) {
	if err := checkSegment("topology id", id); err != nil {
		return "", err
	}
	return RootTopology + "." + id + "." + TopologyStatus, nil
}

// Decky is decky.<id>.<type>.
func Decky(id, typ string) (string, error) {
	if err := checkSegment("decky id", id); err != nil {
		return "", err
	}
	if err := checkSegment("decky event type", typ); err != nil {
		return "", err
	}
	return RootDecky + "." + id + "." + typ, nil
}

// DeckyMutationOf is decky.<id>.mutation.
func DeckyMutationOf(id string) (string, error) { return Decky(id, DeckyMutation) }

// System is system.<leaf>; the leaf may be dotted (bus.health).
func System(leaf string) (string, error) { return rooted(RootSystem, leaf) }

// Credential is credential.<leaf>; the leaf may be dotted (reuse.detected).
func Credential(leaf string) (string, error) { return rooted(RootCredential, leaf) }

// Attacker is attacker.<leaf>; the leaf may be dotted (session.started).
func Attacker(leaf string) (string, error) { return rooted(RootAttacker, leaf) }

func rooted(root, leaf string) (string, error) {
	if err := checkLeaf(root+" leaf", leaf); err != nil {
		return "", err
	}
	return root + "." + leaf, nil
}

// WorkerHealth is system.<worker>.health, a supervised worker's heartbeat.
func WorkerHealth(worker string) (string, error) { return worker3(worker, SystemHealth) }

// WorkerControl is system.<worker>.control, where a worker takes commands.
func WorkerControl(worker string) (string, error) { return worker3(worker, SystemControl) }

func worker3(worker, leaf string) (string, error) {
	if err := checkSegment("worker name", worker); err != nil {
		return "", err
	}
	return RootSystem + "." + worker + "." + leaf, nil
}
