package chstore

import (
	"slices"
	"testing"

	"github.com/decnet/decnet-stream/internal/chschema"
	"github.com/decnet/decnet-stream/internal/providers"
)

// chschema names the lists' columns without importing providers; reading a
// row back pairs the two by position, so they must be one list.
func TestSchemaListsAreTheProvidersLists(t *testing.T) {
	if !slices.Equal(chschema.Lists, providers.ListNames) {
		t.Fatalf("chschema.Lists %v, providers.ListNames %v", chschema.Lists, providers.ListNames)
	}
}
