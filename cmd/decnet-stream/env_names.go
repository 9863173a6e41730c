package main

import (
	"fmt"
	"io"
	"os"
)

// oldKeyNames maps DECNET's names for the provider keys (the documented
// ones, which a DECNET host already sets) to the names this project used
// before it adopted them.
var oldKeyNames = map[string]string{
	"DECNET_GREYNOISE_API_KEY": "GREYNOISE_API_KEY",
	"DECNET_ABUSEIPDB_API_KEY": "ABUSEIPDB_API_KEY",
	"DECNET_THREATFOX_API_KEY": "THREATFOX_API_KEY",
}

// adoptOldKeyNames keeps deployments that set the old names working: a
// DECNET_ name left unset takes the old name's value, and a warning says
// which to rename (never the value).
func adoptOldKeyNames(w io.Writer) {
	for name, old := range oldKeyNames {
		if os.Getenv(name) != "" {
			continue
		}
		if v := os.Getenv(old); v != "" {
			_ = os.Setenv(name, v)
			fmt.Fprintf(w, "decnet-stream: %s is deprecated, set %s instead (its value is used for now)\n", old, name)
		}
	}
}
