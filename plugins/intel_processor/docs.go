package intel_processor

const descriptionText = `
DECNET enriches IPs, not events. For each attacker event the processor reads the IP (from metadata with
` + "`ip_metadata`" + `, or a plain JSON path: no decoding of the event) and answers from an in-process cache when
it can: a repeat sighting costs a cache lookup and is dropped (acknowledged).

### Two stages

With ` + "`lookup_topic`" + ` (as config/pipeline.yaml runs it) the work is split so that repeat sightings never
wait on new attackers. A sighting of an IP without a current row leaves the processor untouched, marked
` + "`intel_lookup: request`" + `, for the output to write to the lookup topic keyed by IP; it is acknowledged as
soon as Kafka has it, and later sightings of the IP send no request of their own while it is on its way
(` + "`request_ttl`" + `). Events read back from the lookup topic are the lookup requests: each IP is looked up
(coalesced with any lookup of it already running), every provider asked answers or fails before the row
is emitted, and the request is acknowledged once the outputs have the row. Read that topic with
` + "`ordered_topics`" + ` on the ` + "`kafka_franz`" + ` input (one batch per partition at a time) and co-partition it with the
sightings (equal partition counts, ` + "`group_balancer: range`" + `): an IP's sightings and requests then meet in
one replica's cache, and its rows and events leave in the order they were made.

Without ` + "`lookup_topic`" + ` a missed sighting is its own lookup request, looked up in its batch.

### What comes out

With ` + "`emit: changes`" + ` (the default) only events that carry a new or updated row leave, with the row at
` + "`target`" + `: one per enrichment, so millions of repeat sightings write nothing. A row is emitted by exactly
one request, even when batches run concurrently; if that request is delivered again (its batch was nacked
downstream, or the process crashed between the row and the enriched event), it emits the row again: the
processor remembers which record (topic, partition, offset) emitted each IP's row, and a warm start reads
it back from ClickHouse. A lookup that found nothing new (every provider asked failed as before) makes no
new version. With ` + "`emit: all`" + ` every event leaves, enriched, waiting at most ` + "`max_wait`" + ` for its lookup.

Metadata: ` + "`intel_verdict`" + ` (the aggregate verdict), ` + "`intel_cache`" + ` (` + "`hit`" + `, ` + "`miss`" + `, ` + "`coalesced`" + `,
` + "`partial`" + `) and, on a lookup request, ` + "`intel_lookup`" + `.

### Caching, coalescing and failures

Expiry is fixed from when the answer was fetched (a hot IP is still re-checked), with jitter that only
lengthens a row's life. Complete
rows live ` + "`cache.ttl`" + `; rows where a provider failed, was rate-limited, ran out of budget or is stale live
` + "`cache.negative_ttl`" + `, and then those providers are asked again. A failure never overwrites an answer:
a provider that answered before and fails now keeps its answer, marked ` + "`stale`" + ` (its ` + "`queried_at`" + ` says
how old), so an expired row whose refresh fails keeps its verdict. Requests that need the same IP at the
same time share one lookup: provider calls per unique IP per TTL window are one per provider, whatever the
concurrency. From 16,384 entries the cache is split by IP into 16 independently locked LRUs under one global
bound (` + "`cache.max_entries`" + ` rows, whichever shards they fall in; past it, the shard taking a new row gives up
its least recently used one), so the pipeline's threads answering repeat sightings do not queue on one
lock. Recency is kept to the second: a hit moves its row to the front of its LRU on its first use in a
second, not on every use (that list write was half of what a hit cost), so rows used within one second
leave in the order they were first used in it.

### Bulk lists and the free tiers

Free tiers answer a few thousand IPs a day (GreyNoise Community about 100, AbuseIPDB 1,000); a fleet
sees tens of thousands. Bulk lists are downloaded a few times a day and answer any number of IPs from
memory: ` + "`abuseipdb_blacklist`" + ` (up to 10,000 IPs with their confidence score; needs the AbuseIPDB key),
` + "`threatfox_export`" + ` (recent ip:port IOCs; needs the abuse.ch Auth-Key) and ` + "`spamhaus_drop`" + ` (networks, matched by longest prefix), beside
` + "`feodo`" + `. Each is a provider with its own columns (` + "`<list>_listed`" + `, ` + "`_score`" + `, ` + "`_tags`" + `, ` + "`_raw`" + `,
` + "`_queried_at`" + `, ` + "`_status`" + `, ` + "`_verdict`" + `) and status. Downloads are conditional (a 304 costs nothing) and,
with ` + "`feed_dir`" + `, kept on disk: a restart or an outage serves the last good copy, whose age is its
` + "`_queried_at`" + `. The feeds are asked first; a per-IP provider whose ` + "`skip_when`" + ` names a feed that lists the IP
is not asked (` + "`covered`" + `, final: the row is complete without it), so per-IP budgets go to the attackers no
list has. With ` + "`geoip`" + `, every row also gets ` + "`asn`" + `, ` + "`as_org`" + ` and ` + "`country`" + ` from the operator's MMDB files.

### Never stalling

A lookup waits at most ` + "`max_wait`" + ` for a provider's rate-limit token or slot (then the provider is
` + "`rate_limited`" + ` in the row, asked again after ` + "`negative_ttl`" + `); over-budget providers answer at once
(` + "`quota_exhausted`" + `). Only lookup requests wait on providers: sightings never do.

### Bad input

An event without a valid IP is flagged with an error and ` + "`decnet_error: invalid_ip`" + ` (not dropped), for
the dead-letter route. Only global unicast addresses may reach a provider (an allow-list): private,
loopback, link-local, CGNAT, multicast, documentation, benchmarking, reserved and IPv4-embedding IPv6
addresses and ` + "`never_query`" + ` networks pass through with no lookup and ` + "`intel_skipped`" + ` metadata saying
why. Only a validated, canonical address ever reaches a provider's URL or body.

### Metrics

` + "`intel_cache_hits`" + `, ` + "`intel_cache_misses`" + `, ` + "`intel_cache_partial`" + ` (sightings), ` + "`intel_lookup_requests`" + `,
` + "`intel_lookups`" + `, ` + "`intel_cache_coalesced`" + `, ` + "`intel_enriched`" + ` (rows emitted), ` + "`intel_verdicts{verdict}`" + ` (rows emitted by
aggregate verdict), ` + "`intel_cache_evictions`" + `,
` + "`intel_provider_requests{provider}`" + `, ` + "`intel_provider_errors{provider,kind}`" + `,
` + "`intel_provider_latency_ns{provider}`" + `, ` + "`intel_provider_budget_remaining{provider}`" + `,
` + "`intel_provider_calls_today{provider,key}`" + `, ` + "`intel_provider_daily_budget{provider,key}`" + `,
` + "`intel_provider_blocked_until_seconds{provider,key}`" + ` (0 when not blocked; ` + "`key`" + ` is a fingerprint of the API key,
never the key), ` + "`intel_provider_answers{provider,source}`" + ` (` + "`feed`" + `, ` + "`per_ip`" + `, or ` + "`covered`" + `: a
per-IP call saved because a bulk list had the IP), ` + "`intel_feed_loaded_seconds{provider}`" + ` (when the copy a feed answers
from was downloaded: its age is ` + "`time()`" + ` minus it), ` + "`intel_feed_entries{provider}`" + `,
` + "`intel_deferred{provider}`" + `, ` + "`intel_skipped{reason}`" + `, ` + "`intel_invalid_ip`" + `.
`
