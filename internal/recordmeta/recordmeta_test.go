package recordmeta

import "testing"

type meta map[string]any

func (m meta) MetaGetMut(k string) (any, bool) { v, ok := m[k]; return v, ok }

func TestOfReadsWhatTheInputWritesAndAMappingMayRewrite(t *testing.T) {
	want := Record{Topic: "attacker.observed", Partition: 3, Offset: 1234}
	for _, m := range []meta{
		{Topic: "attacker.observed", Partition: 3, Offset: 1234},                   // as the input writes
		{Topic: "attacker.observed", Partition: int64(3), Offset: "1234"},          // rewritten by a mapping
		{Topic: "attacker.observed", Partition: float64(3), Offset: float64(1234)}, // through arithmetic
	} {
		if got, ok := Of(m); !ok || got != want {
			t.Errorf("%v: got %+v, %v", m, got, ok)
		}
	}
	for _, m := range []meta{
		{},
		{Topic: "attacker.observed", Partition: 3},
		{Topic: "attacker.observed", Offset: 1234},
		{Partition: 3, Offset: 1234},
		{Topic: "", Partition: 3, Offset: 1234},
		{Topic: "attacker.observed", Partition: -1, Offset: 1234},
		{Topic: "attacker.observed", Partition: int64(1) << 40, Offset: 1234},
		{Topic: "attacker.observed", Partition: 3, Offset: "12x"},
		{Topic: "attacker.observed", Partition: 3, Offset: 12.5},
		{Topic: 7, Partition: 3, Offset: 1234},
	} {
		if got, ok := Of(m); ok {
			t.Errorf("%v read as %+v", m, got)
		}
	}
}
