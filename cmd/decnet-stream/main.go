// Command decnet-stream is a Benthos distribution for DECNET honeypot
// telemetry: every core Benthos component plus this project's plugins, and
// sub-commands of its own beside the standard ones (run, streams, lint,
// test, …): broker (cmd_broker.go), dev (cmd_dev.go) and docs (cmd_docs.go).
package main

import (
	"context"
	"os"

	"github.com/redpanda-data/benthos/v4/public/service"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"

	_ "github.com/decnet/decnet-stream/plugins/all"
	"github.com/decnet/decnet-stream/plugins/runtimeconf"
)

// Set at build time: -ldflags "-X main.version=… -X main.dateBuilt=…".
var (
	version   = "dev"
	dateBuilt = "unknown"
)

func main() {
	adoptOldKeyNames(os.Stderr)
	holdEarlyTerm(os.Args)
	service.RunCLI(context.Background(),
		service.CLIOptSetBinaryName("decnet-stream"),
		service.CLIOptSetProductName("decnet-stream"),
		service.CLIOptSetVersion(version, dateBuilt),
		service.CLIOptSetDocumentationURL("https://github.com/decnet/decnet-stream"),
		service.CLIOptSetMainSchemaFrom(func() *service.ConfigSchema { return runtimeconf.Schema(version, dateBuilt) }),
		service.CLIOptOnConfigParse(runtimeconf.OnConfigParse),
		service.CLIOptAddCommand(brokerCommand()),
		service.CLIOptAddCommand(devCommand()),
		service.CLIOptAddCommand(docsCommand()),
	)
}
