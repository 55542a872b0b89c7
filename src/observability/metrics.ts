// Prometheus metrics, on a registry owned by one app instance (prom-client's default
// registry would throw when tests build the app twice). Labels are route templates, status
// codes and fixed reasons only: never an id, an address or a raw URL.
//
// The per-request series (request count, duration, bytes, upstream latency) are plain numbers
// updated in place and read by prom-client when it is scraped: prom-client's own inc() and
// observe() validate and hash the labels on every call, which cost about 6 us per request, as
// much as the access log and the token together.
import { Counter, collectDefaultMetrics, Gauge, type Metric, type OpenMetricsContentType, Registry } from 'prom-client'
import type { CacheResult } from '../cache/media-cache.js'
import type { RefreshResult, Token } from '../credentials/token-cache.js'
import type { Outcome } from '../relay/outcome.js'
import type { RetryReason } from '../relay/retry-policy.js'
import type { TraceRef } from './tracing.js'

/** Up to ten minutes: a large download through a slow client is long, not broken. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
export const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30]

export type KeyReloadResult = 'success' | 'failure'

type Labels = Record<string, string>

/** What the cache reports as it happens. */
export interface CacheCounters {
  evicted(): void
  writeFailed(): void
}

/** One label set of a histogram: a count per bucket (the last is +Inf), a sum and a count. */
class HistogramSeries {
  readonly counts: number[]
  sum = 0
  count = 0

  constructor(
    readonly labels: Labels,
    readonly bounds: readonly number[],
  ) {
    this.counts = new Array<number>(bounds.length + 1).fill(0)
  }

  /** The latest traced observation per bucket, created once tracing samples one. */
  exemplars: Array<Exemplar | undefined> | undefined

  observe(value: number, trace?: TraceRef): void {
    const bounds = this.bounds
    let bucket = 0
    while (bucket < bounds.length && value > (bounds[bucket] as number)) bucket++
    ;(this.counts[bucket] as number)++
    this.sum += value
    this.count++
    if (trace?.sampled) this.#exemplar(bucket, value, trace)
  }

  #exemplar(bucket: number, value: number, trace: TraceRef): void {
    this.exemplars ??= new Array<Exemplar | undefined>(this.counts.length)
    const timestamp = Date.now() / 1000
    const labelSet = { trace_id: trace.traceId as string, span_id: trace.spanId as string }
    this.exemplars[bucket] = { labelSet, value, timestamp }
  }
}

/** prom-client's exemplar shape: printed only in the OpenMetrics exposition. */
interface Exemplar {
  readonly labelSet: { readonly trace_id: string; readonly span_id: string }
  readonly value: number
  readonly timestamp: number
}

/**
 * A Prometheus histogram whose observations are an array increment, registered with a
 * prom-client Registry like any of its own metrics: it answers get() in prom-client's format
 * (cumulative buckets with le, +Inf, _sum, _count), and the Registry does the exposition.
 */
class LiveHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #series: HistogramSeries[] = []

  constructor(
    readonly name: string,
    readonly help: string,
    readonly bounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric)
  }

  /** A new series; callers keep it and observe on it directly. */
  series(labels: Labels): HistogramSeries {
    const series = new HistogramSeries(labels, this.bounds)
    this.#series.push(series)
    return series
  }

  async get() {
    const bucket = `${this.name}_bucket`
    const values: Array<{
      labels: Record<string, string | number>
      value: number
      metricName: string
      exemplar?: Exemplar | undefined
    }> = []
    for (const series of this.#series) {
      let cumulative = 0
      const exemplars = series.exemplars
      this.bounds.forEach((le, i) => {
        cumulative += series.counts[i] as number
        values.push({
          labels: { le, ...series.labels },
          value: cumulative,
          metricName: bucket,
          exemplar: exemplars?.[i],
        })
      })
      values.push({
        labels: { le: '+Inf', ...series.labels },
        value: series.count,
        metricName: bucket,
        exemplar: exemplars?.[this.bounds.length],
      })
      values.push({ labels: series.labels, value: series.sum, metricName: `${this.name}_sum` })
      values.push({ labels: series.labels, value: series.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset(): void {
    for (const series of this.#series) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}

/** One label set of a counter, incremented in place and copied to prom-client when scraped. */
interface CounterSeries {
  readonly labels: Labels
  value: number
}

/** What one request updates: looked up by route, then method, then status. */
interface RequestSeries {
  readonly requests: CounterSeries
  readonly duration: HistogramSeries
  readonly bytes: CounterSeries
}

export class Metrics {
  readonly registry = new Registry()
  readonly #requestCounts: CounterSeries[] = []
  readonly #byteCounts: CounterSeries[] = []
  readonly #duration = new LiveHistogram(
    'media_proxy_request_duration_seconds',
    'Time from request received to response finished (or aborted).',
    DURATION_BUCKETS,
    this.registry,
  )
  readonly #upstreamLatency = new LiveHistogram(
    'media_proxy_upstream_latency_seconds',
    'Time from request sent upstream to upstream response headers, per upstream response.',
    UPSTREAM_BUCKETS,
    this.registry,
  )
  readonly #retries = new Counter({
    name: 'media_proxy_upstream_retries_total',
    help: 'Upstream requests retried, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  // The application label is bounded by the applications configured.
  readonly #tokenRefreshes = new Counter({
    name: 'media_proxy_token_refreshes_total',
    help: 'Application JWT signing attempts, by application and result.',
    labelNames: ['application', 'result'] as const,
    registers: [this.registry],
  })
  readonly #tokenExpiry = new Gauge({
    name: 'media_proxy_token_expiry_timestamp_seconds',
    help: "Expiry (exp claim, Unix seconds) of each application's newest JWT.",
    labelNames: ['application'] as const,
    registers: [this.registry],
  })
  readonly #cacheResults: Record<CacheResult, CounterSeries> = {
    hit: { labels: { result: 'hit' }, value: 0 },
    miss: { labels: { result: 'miss' }, value: 0 },
    bypass: { labels: { result: 'bypass' }, value: 0 },
  }
  readonly #keyReloads = new Counter({
    name: 'media_proxy_key_reloads_total',
    help: 'Private key reloads (a file replaced, added or refused), by application and result.',
    labelNames: ['application', 'result'] as const,
    registers: [this.registry],
  })

  constructor(version: string, inFlight: () => number, maxInFlight: number) {
    collectDefaultMetrics({ register: this.registry })
    new Counter({
      name: 'media_proxy_requests_total',
      help: 'Requests answered on the media port.',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [this.registry],
      collect: copySeries(this.#requestCounts),
    })
    new Counter({
      name: 'media_proxy_response_bytes_total',
      help: 'Body bytes sent to clients.',
      labelNames: ['route'] as const,
      registers: [this.registry],
      collect: copySeries(this.#byteCounts),
    })
    new Gauge({
      name: 'media_proxy_in_flight_requests',
      help: 'Media requests being served now.',
      registers: [this.registry],
      collect() {
        this.set(inFlight())
      },
    })
    new Gauge({
      name: 'media_proxy_max_in_flight_requests',
      help: 'MAX_IN_FLIGHT_REQUESTS: media requests served at once before new ones get 503.',
      registers: [this.registry],
    }).set(maxInFlight)
    new Gauge({
      name: 'media_proxy_build_info',
      help: 'Always 1; the version label says which build runs.',
      labelNames: ['version'] as const,
      registers: [this.registry],
    }).set({ version }, 1)
  }

  /** The applications-loaded gauge reads this at scrape time; the default's series start at 0. */
  watchApplications(count: () => number, defaultApplication: string | undefined): void {
    new Gauge({
      name: 'media_proxy_applications_loaded',
      help: 'Vonage applications the proxy holds a key for.',
      registers: [this.registry],
      collect() {
        this.set(count())
      },
    })
    if (defaultApplication !== undefined) this.addApplication(defaultApplication)
  }

  /** An application's series start at 0, so that its first failure shows as an increase. */
  addApplication(application: string): void {
    for (const result of ['success', 'failure'] as const) {
      this.#tokenRefreshes.inc({ application, result }, 0)
      this.#keyReloads.inc({ application, result }, 0)
    }
  }

  /** route -> method -> status -> series; the label sets are bounded (routes and statuses are ours). */
  readonly #requestSeries = new Map<string, Map<string, Map<number, RequestSeries>>>()
  readonly #bytesByRoute = new Map<string, CounterSeries>()
  /** host -> status -> series; hosts are bounded by UPSTREAM_HOSTS and UPSTREAM_BASE_URL's. */
  readonly #upstreamSeries = new Map<string, Map<number, HistogramSeries>>()

  observeRequest(outcome: Outcome): void {
    const { method, route, status } = outcome
    // Three lookups, no allocation: this runs for every request.
    const series =
      this.#requestSeries.get(route)?.get(method)?.get(status) ?? this.#newRequestSeries(method, route, status)
    series.requests.value++
    series.duration.observe(outcome.seconds, outcome.trace)
    series.bytes.value += outcome.bytes
    const cache = outcome.media?.cache
    if (cache) this.#cacheResults[cache].value++
  }

  /** The cache's series, registered only when there is a cache. */
  watchCache(cache: {
    readonly storedBytes: number
    readonly files: number
    readonly maxBytes: number
  }): CacheCounters {
    new Counter({
      name: 'media_proxy_cache_requests_total',
      help: 'Media requests by what the cache did: hit (from disk), miss (fetched, and stored when it could be), bypass (HEAD or conditional request for a file not stored).',
      labelNames: ['result'] as const,
      registers: [this.registry],
      collect: copySeries(Object.values(this.#cacheResults)),
    })
    new Gauge({
      name: 'media_proxy_cache_stored_bytes',
      help: 'Bytes of the files in the cache (CACHE_MAX_BYTES at most).',
      registers: [this.registry],
      collect() {
        this.set(cache.storedBytes)
      },
    })
    new Gauge({
      name: 'media_proxy_cache_max_bytes',
      help: 'CACHE_MAX_BYTES: the most the cache holds.',
      registers: [this.registry],
    }).set(cache.maxBytes)
    new Gauge({
      name: 'media_proxy_cache_files',
      help: 'Files in the cache.',
      registers: [this.registry],
      collect() {
        this.set(cache.files)
      },
    })
    const evictions = new Counter({
      name: 'media_proxy_cache_evictions_total',
      help: 'Files removed from the cache to keep it under CACHE_MAX_BYTES.',
      registers: [this.registry],
    })
    const writeFailures = new Counter({
      name: 'media_proxy_cache_write_failures_total',
      help: 'Files the cache could not write (disk full, read-only, I/O error): they were served uncached.',
      registers: [this.registry],
    })
    return { evicted: () => evictions.inc(), writeFailed: () => writeFailures.inc() }
  }

  observeUpstream(status: number, seconds: number, host: string): void {
    const byStatus = getOrAdd(this.#upstreamSeries, host, () => new Map<number, HistogramSeries>())
    const series =
      byStatus.get(status) ??
      getOrAdd(byStatus, status, () => this.#upstreamLatency.series({ host, status: String(status) }))
    series.observe(seconds)
  }

  /** The first request with this label set: its series, created and filed. */
  #newRequestSeries(method: string, route: string, status: number): RequestSeries {
    const byMethod = getOrAdd(this.#requestSeries, route, () => new Map<string, Map<number, RequestSeries>>())
    const byStatus = getOrAdd(byMethod, method, () => new Map<number, RequestSeries>())
    const labels = { method, route, status: String(status) }
    const requests = { labels, value: 0 }
    this.#requestCounts.push(requests)
    const bytes = getOrAdd(this.#bytesByRoute, route, () => {
      const series = { labels: { route }, value: 0 }
      this.#byteCounts.push(series)
      return series
    })
    const series = { requests, duration: this.#duration.series(labels), bytes }
    byStatus.set(status, series)
    return series
  }

  countRetry(reason: RetryReason): void {
    this.#retries.inc({ reason })
  }

  countTokenRefresh(application: string, result: RefreshResult, token: Token | undefined): void {
    this.#tokenRefreshes.inc({ application, result })
    if (token) this.#tokenExpiry.set({ application }, token.exp)
  }

  /** A key that is gone takes its expiry series with it. */
  forgetApplication(application: string): void {
    this.#tokenExpiry.remove({ application })
  }

  countKeyReload(application: string, result: KeyReloadResult): void {
    this.#keyReloads.inc({ application, result })
  }

  /**
   * The Prometheus text format; or OpenMetrics, with the duration histogram's exemplars (trace
   * ids), when tracing is on and the scrape prefers it. The OpenMetrics view is built from
   * stand-ins: prom-client renames a counter it renders as OpenMetrics (dropping `_total` from
   * the metric itself), which must never touch the real ones.
   */
  async exposition(accept?: string): Promise<{ contentType: string; body: string }> {
    if (!this.#exemplarsEnabled || !wantsOpenMetrics(accept)) {
      return { contentType: this.registry.contentType, body: await this.registry.metrics() }
    }
    const view = new OpenMetricsRegistry(Registry.OPENMETRICS_CONTENT_TYPE)
    for (const metric of this.registry.getMetricsAsArray() as unknown as RegisteredMetric[]) {
      const standIn = {
        name: metric.name,
        help: metric.help,
        type: metric.type,
        aggregator: metric.aggregator,
        reset() {},
        async get() {
          const value = await metric.get()
          return value.type === 'counter' ? { ...value, name: value.name.replace(/_total$/, '') } : value
        },
      }
      view.registerMetric(standIn as unknown as Metric)
    }
    return { contentType: Registry.OPENMETRICS_CONTENT_TYPE, body: await view.metrics() }
  }

  #exemplarsEnabled = false

  /** With tracing on, a scrape that asks for OpenMetrics gets exemplars. */
  enableExemplars(): void {
    this.#exemplarsEnabled = true
  }
}

/** What prom-client's typings leave out: a registered metric's get(), and the Registry's content type. */
interface RegisteredMetric {
  readonly name: string
  readonly help: string
  readonly type: string
  readonly aggregator: string
  get(): Promise<{ name: string; type: string }>
}
const OpenMetricsRegistry = Registry as unknown as new (
  type: OpenMetricsContentType,
) => Registry<OpenMetricsContentType>

/** Whether an Accept header prefers OpenMetrics to the text format (by q-value). */
export function wantsOpenMetrics(accept: string | undefined): boolean {
  if (!accept) return false
  let openMetrics = 0
  let text = 0
  for (const range of accept.split(',')) {
    const [type, ...parameters] = range.split(';').map((part) => part.trim().toLowerCase())
    const q = Number(parameters.find((parameter) => parameter.startsWith('q='))?.slice(2) ?? '1')
    if (!(q >= 0 && q <= 1)) continue
    if (type === 'application/openmetrics-text') openMetrics = Math.max(openMetrics, q)
    else if (type === 'text/plain') text = Math.max(text, q)
  }
  return openMetrics > 0 && openMetrics >= text
}

/** A prom-client collect() that sets a counter from series counted elsewhere. */
function copySeries(series: readonly CounterSeries[]) {
  return function (this: Counter) {
    this.reset()
    for (const { labels, value } of series) this.inc(labels, value)
  }
}

function getOrAdd<K, V>(map: Map<K, V>, key: K, create: () => V): V {
  let value = map.get(key)
  if (value === undefined) {
    value = create()
    map.set(key, value)
  }
  return value
}
