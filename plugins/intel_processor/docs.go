package intel_processor

const descriptionText = `
DECNET enriches IPs, not events. For each attacker event the processor reads the IP (a plain JSON path,
no decoding of the event), and answers from an in-process cache when it can: a repeat sighting costs a
cache lookup. Missing IPs are looked up in every enabled provider in parallel, within each provider's
limits; a batch never waits longer than ` + "`max_wait`" + `.

### What comes out

With ` + "`emit: changes`" + ` (the default) only events whose IP got a new or updated enrichment leave the
processor — the first sighting, the first after expiry, the first after a deferred provider filled in —
each with the enrichment at ` + "`target`" + `; every other event is dropped (acknowledged) after its cache
hit, so millions of repeat sightings write nothing. With ` + "`emit: all`" + ` every event leaves, enriched.

Each change is carried by exactly one event, even when batches run concurrently. If that event is
delivered again (its batch was nacked downstream: ClickHouse down, a Kafka write failed) it carries the
change again: the processor remembers which record (topic, partition, offset) carried each IP's change.

Metadata: ` + "`intel_verdict`" + ` (the aggregate verdict) and ` + "`intel_cache`" + ` (` + "`hit`" + `, ` + "`miss`" + `,
` + "`coalesced`" + `, ` + "`partial`" + `).

### Caching and coalescing

Expiry is fixed from when the answer was fetched (a hot IP is still re-checked), with jitter. Complete
rows live ` + "`cache.ttl`" + `; rows where a provider failed, was deferred or ran out of budget live
` + "`cache.negative_ttl`" + `, and then only those providers are asked again, their answers merged without
clobbering earlier good ones. Batches that need the same IP at the same time share one lookup: provider
calls per unique IP per TTL window are one per provider, whatever the concurrency.

### Never stalling

A provider that has not answered by ` + "`max_wait`" + ` is ` + "`deferred`" + ` in the row; its lookup goes on in the
background and fills the cache. Rate-limited and over-budget providers answer at once
(` + "`rate_limited`" + `, ` + "`quota_exhausted`" + `), so cache hits keep their pace while misses are slow.

### Bad input

An event without a valid IP is flagged with an error and ` + "`decnet_error: invalid_ip`" + ` (not dropped), for
the dead-letter route. Private, loopback, link-local, CGNAT, multicast, documentation, benchmarking and
reserved addresses and ` + "`never_query`" + ` networks pass through with no lookup and ` + "`intel_skipped`" + `
metadata saying why. Only a validated, canonical address ever reaches a provider's URL or body.

### Metrics

` + "`intel_cache_hits`" + `, ` + "`intel_cache_misses`" + `, ` + "`intel_cache_coalesced`" + `, ` + "`intel_cache_partial`" + `,
` + "`intel_cache_evictions`" + `, ` + "`intel_provider_requests{provider}`" + `, ` + "`intel_provider_errors{provider,kind}`" + `,
` + "`intel_provider_latency_ns{provider}`" + `, ` + "`intel_provider_budget_remaining{provider}`" + `,
` + "`intel_deferred{provider}`" + `, ` + "`intel_skipped{reason}`" + `, ` + "`intel_invalid_ip`" + `.
`
