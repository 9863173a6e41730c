package chschema

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Plan is what Upgrade found: statements that bring the table to the
// current shape (run in order), and differences it leaves to the operator.
type Plan struct {
	Statements []string
	Warnings   []string
}

// Upgrade compares an existing table (its columns as DESCRIBE TABLE lists
// them and its engine_full from system.tables) with the shape this version
// writes on a server of version v. Missing columns are added, types that
// widen without rewriting data (String to LowCardinality(String), T to
// Nullable(T)) are modified, and the TTL is set when retention is enabled.
// Any other difference is an error that says what differs and how to fix
// it: the output must not write into a table it does not understand.
func Upgrade(o Options, v Version, have []Column, engineFull string) (Plan, error) {
	var p Plan
	if err := o.check(); err != nil {
		return p, err
	}
	types := make(map[string]string, len(have))
	for _, c := range have {
		types[c.Name] = c.Type
	}
	var problems []string
	alter := func(clause string) {
		p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s%s %s", o.LocalTable(), o.onCluster(), clause))
		if o.Cluster != "" {
			// The Distributed table mirrors the columns of the shards.
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s%s %s", o.Table, o.onCluster(), clause))
		}
	}
	prev := ""
	for _, want := range Columns(v) {
		got, ok := types[want.Name]
		switch {
		case !ok:
			clause := fmt.Sprintf("ADD COLUMN %s %s", want.Name, want.Type)
			if prev != "" {
				clause += " AFTER " + prev
			}
			alter(clause)
		case got == want.Type:
		case widens(got, want.Type):
			alter(fmt.Sprintf("MODIFY COLUMN %s %s", want.Name, want.Type))
		default:
			problems = append(problems, fmt.Sprintf("column %s is %s, want %s (ALTER TABLE %s%s MODIFY COLUMN %s %s, once you know its values convert)",
				want.Name, got, want.Type, o.LocalTable(), o.onCluster(), want.Name, want.Type))
		}
		prev = want.Name
	}
	wantTTL, gotTTL := o.ttl(v), tableTTL(engineFull)
	switch {
	case wantTTL != "" && canonicalTTL(gotTTL) != canonicalTTL(wantTTL):
		p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s%s MODIFY TTL %s", o.LocalTable(), o.onCluster(), wantTTL))
	case o.RetentionDays > 0 && !v.TTL():
		p.Warnings = append(p.Warnings, fmt.Sprintf("retention of %d days asked for, but ClickHouse %s has no TTL: rows are kept", o.RetentionDays, v))
	case wantTTL == "" && gotTTL != "":
		p.Warnings = append(p.Warnings, fmt.Sprintf("table %s deletes rows by TTL %s, but no retention is configured (rows are kept by default); "+
			"left as it is: remove it with ALTER TABLE %s%s REMOVE TTL, or set the retention", o.LocalTable(), gotTTL, o.LocalTable(), o.onCluster()))
	}
	if len(problems) > 0 {
		return Plan{}, errors.New("table " + o.Table + " differs from the attacker_intel shape in ways that cannot be changed safely: " + strings.Join(problems, "; "))
	}
	return p, nil
}

// widens reports whether a column of type from can become type to by ALTER
// MODIFY COLUMN without losing or reinterpreting a value.
func widens(from, to string) bool {
	f, t := strip(from, "LowCardinality"), strip(to, "LowCardinality")
	return f == t || t == "Nullable("+f+")"
}

func strip(typ, wrapper string) string {
	if strings.HasPrefix(typ, wrapper+"(") && strings.HasSuffix(typ, ")") {
		return typ[len(wrapper)+1 : len(typ)-1]
	}
	return typ
}

var ttlClause = regexp.MustCompile(`\bTTL\s+(.+?)(?:\s+SETTINGS\b|$)`)

// tableTTL is the table-level TTL expression in engine_full, "" for none.
func tableTTL(engineFull string) string {
	m := ttlClause.FindStringSubmatch(engineFull)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

var intervalDays = regexp.MustCompile(`(?i)INTERVAL\s+(\d+)\s+DAY`)

// canonicalTTL makes the TTL we render and the one a server reports
// comparable: current servers print INTERVAL 30 DAY as toIntervalDay(30).
func canonicalTTL(s string) string {
	s = intervalDays.ReplaceAllString(s, "toIntervalDay($1)")
	return strings.Join(strings.Fields(s), "")
}
