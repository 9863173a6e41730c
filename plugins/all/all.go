// Package all imports every component of this project, so that a binary,
// or a test that runs configs in process, registers them all in one line.
package all

import (
	_ "github.com/decnet/decnet-stream/plugins/clickhouse"
	_ "github.com/decnet/decnet-stream/plugins/concurrent_switch"
	_ "github.com/decnet/decnet-stream/plugins/control"
	_ "github.com/decnet/decnet-stream/plugins/dead_letter"
	_ "github.com/decnet/decnet-stream/plugins/decnet_bus"
	_ "github.com/decnet/decnet-stream/plugins/decnet_webhook"
	_ "github.com/decnet/decnet-stream/plugins/intel_processor"
	_ "github.com/decnet/decnet-stream/plugins/kafka"
	_ "github.com/decnet/decnet-stream/plugins/prometheus"
	_ "github.com/decnet/decnet-stream/plugins/topic_router"
)
