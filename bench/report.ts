// What a benchmark run found: the raw rounds, their medians and ratios, the printed tables, and
// the issue's targets checked against them. Only ratios within one run mean much on a shared
// machine; the steadiest is server CPU per request relative to nginx.
import type { LoadResult } from './load.js'

export const TARGETS = ['direct', 'proxy', 'nginx-default', 'nginx-64k', 'http-proxy', 'undici-stream'] as const
export type TargetName = (typeof TARGETS)[number]

/** One load run: one body size against one target in one round. */
export interface Cell {
  round: number
  size: string
  bodyBytes: number
  connections: number
  target: TargetName
  load: LoadResult
  /** CPU seconds of the server under test (the origin itself for "direct"). */
  serverCpuSeconds: number
  /** CPU seconds of the origin during the run (for "direct", the same as serverCpuSeconds). */
  originCpuSeconds: number
}

export interface CellSummary {
  size: string
  target: TargetName
  connections: number
  rounds: number
  reqPerSec: number
  /** Body bytes per second, in 10^6 bytes. */
  mbPerSec: number
  p50Ms: number
  p99Ms: number
  /** Server CPU time per request, microseconds. */
  cpuUsPerRequest: number
  /** Server CPU time over wall time: 100 = one core saturated. */
  serverCorePercent: number
  originCpuUsPerRequest: number
  errors: number
  non2xx: number
  reqPerSecVsDirect: number | undefined
  reqPerSecVsNginx64k: number | undefined
  reqPerSecVsNginxDefault: number | undefined
  cpuVsNginx64k: number | undefined
  /** This target's figure over the proxy's, same size: the relay decision (bench/contenders.ts). */
  reqPerSecVsProxy: number | undefined
  cpuVsProxy: number | undefined
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

function ratio(value: number, reference: number | undefined): number | undefined {
  return reference === undefined || !(reference > 0) ? undefined : value / reference
}

/** Medians across rounds per (size, target), then each ratio to direct and to nginx. */
export function summarise(cells: readonly Cell[]): CellSummary[] {
  const groups = new Map<string, Cell[]>()
  for (const cell of cells) {
    const key = `${cell.size}\0${cell.target}`
    groups.set(key, [...(groups.get(key) ?? []), cell])
  }
  const base: Omit<
    CellSummary,
    | 'reqPerSecVsDirect'
    | 'reqPerSecVsNginx64k'
    | 'reqPerSecVsNginxDefault'
    | 'cpuVsNginx64k'
    | 'reqPerSecVsProxy'
    | 'cpuVsProxy'
  >[] = []
  for (const group of groups.values()) {
    const first = group[0] as Cell
    const perRequest = (seconds: number, cell: Cell) => (seconds * 1e6) / Math.max(1, cell.load.requests)
    base.push({
      size: first.size,
      target: first.target,
      connections: first.connections,
      rounds: group.length,
      reqPerSec: median(group.map((cell) => cell.load.reqPerSec)),
      mbPerSec: median(group.map((cell) => (cell.load.reqPerSec * cell.bodyBytes) / 1e6)),
      p50Ms: median(group.map((cell) => cell.load.latencyMs.p50)),
      p99Ms: median(group.map((cell) => cell.load.latencyMs.p99)),
      cpuUsPerRequest: median(group.map((cell) => perRequest(cell.serverCpuSeconds, cell))),
      serverCorePercent: median(group.map((cell) => (100 * cell.serverCpuSeconds) / cell.load.seconds)),
      originCpuUsPerRequest: median(group.map((cell) => perRequest(cell.originCpuSeconds, cell))),
      errors: group.reduce((sum, cell) => sum + cell.load.errors, 0),
      non2xx: group.reduce((sum, cell) => sum + cell.load.non2xx, 0),
    })
  }
  const find = (size: string, target: TargetName) => base.find((s) => s.size === size && s.target === target)
  return base.map((summary) => ({
    ...summary,
    reqPerSecVsDirect: ratio(summary.reqPerSec, find(summary.size, 'direct')?.reqPerSec),
    reqPerSecVsNginx64k: ratio(summary.reqPerSec, find(summary.size, 'nginx-64k')?.reqPerSec),
    reqPerSecVsNginxDefault: ratio(summary.reqPerSec, find(summary.size, 'nginx-default')?.reqPerSec),
    cpuVsNginx64k:
      summary.target === 'direct'
        ? undefined
        : ratio(summary.cpuUsPerRequest, find(summary.size, 'nginx-64k')?.cpuUsPerRequest),
    reqPerSecVsProxy: ratio(summary.reqPerSec, find(summary.size, 'proxy')?.reqPerSec),
    cpuVsProxy:
      summary.target === 'direct'
        ? undefined
        : ratio(summary.cpuUsPerRequest, find(summary.size, 'proxy')?.cpuUsPerRequest),
  }))
}

export interface LatencySummary {
  target: TargetName
  p50Ms: number
  p99Ms: number
  addedP50Ms: number | undefined
  addedP99Ms: number | undefined
}

/** Concurrency-1 runs: medians per target, and what each adds over direct. */
export function summariseLatency(runs: readonly { target: TargetName; load: LoadResult }[]): LatencySummary[] {
  const targets = [...new Set(runs.map((run) => run.target))]
  const medians = targets.map((target) => {
    const mine = runs.filter((run) => run.target === target)
    return {
      target,
      p50Ms: median(mine.map((run) => run.load.latencyMs.p50)),
      p99Ms: median(mine.map((run) => run.load.latencyMs.p99)),
    }
  })
  const direct = medians.find((m) => m.target === 'direct')
  return medians.map((m) => ({
    ...m,
    addedP50Ms: direct && m.target !== 'direct' ? m.p50Ms - direct.p50Ms : undefined,
    addedP99Ms: direct && m.target !== 'direct' ? m.p99Ms - direct.p99Ms : undefined,
  }))
}

export interface MemorySummary {
  /** A target's name, or a memory-only variant of one, such as "proxy (close-delimited)". */
  target: string
  idleBytes: number
  peakBytes: number
  aboveIdleBytes: number
  clients: number
  completed: number
  failed: number
  meanBytesPerSecondPerClient: number
}

/**
 * Memory of a fresh proxy with many slow clients at once (MAX_IN_FLIGHT_REQUESTS of them by
 * default), each with a small receive buffer and MSS (bench/slow_clients.py), so that each
 * download is held backpressured in the proxy.
 */
export interface ManyClientsSummary {
  clients: number
  bodyLabel: string
  bytesPerSecondPerClient: number
  /** The clients' SO_RCVBUF as the kernel set it (twice what was asked), and the MSS they got. */
  clientReceiveBufferBytes: number | undefined
  clientMssBytes: number | undefined
  /** The origin of this run, and its send buffer when capped (nginx's listen sndbuf=). */
  origin: string
  rampSeconds: number
  seconds: number
  idleBytes: number
  peakBytes: number
  aboveIdleBytes: number
  /** Media requests in flight in the proxy (its gauge), the most seen while sampling. */
  peakInFlight: number
  /** The fewest in flight over the second half of the run: the downloads the proxy held throughout. */
  heldInFlight: number
  /**
   * Kernel TCP buffer memory (the whole machine's, /proc/net/sockstat): the most seen, and above
   * its level at the start. Outside any process's RSS; it holds the clients', the origin's and
   * the proxy's socket buffers.
   */
  kernelTcpPeakBytes: number
  kernelTcpAboveStartBytes: number
  /** net.ipv4.tcp_mem's pressure threshold: past it the clients are stopped. */
  kernelTcpPressureBytes: number | undefined
  /**
   * The kernel memory of the proxy's own sockets (to the clients and to the origin; ss -m, the
   * most seen): what a cgroup v2 memory limit on the proxy's container would also count.
   */
  proxySocketPeakBytes: number | undefined
  /** Why the clients were stopped before their time, if they were. */
  stoppedEarly: string | undefined
  /** The container memory limit the peak is held against, when it could be read. */
  limitBytes: number | undefined
  limitSource: string
  responded: number
  completed: number
  failed: number
  failures: Record<string, number>
  meanBytesPerClient: number
}

export interface SignatureSummary {
  requests: number
  signatures: number
  per10k: number
  wholeRun: { requests: number; signatures: number }
}

/** The two routes of the host-routes comparison (bench/host-routes.ts), on one proxy. */
export const HOST_ROUTES = ['/media/:id', '/api-eu.nexmo.com/v3/media/:id'] as const
export type HostRoute = (typeof HOST_ROUTES)[number]

/** One load run of the host-routes comparison: one route in one round. */
export interface HostRouteCell {
  round: number
  route: HostRoute
  load: LoadResult
  /** CPU seconds of the proxy (the one started for this comparison) during the run. */
  proxyCpuSeconds: number
  /** CPU seconds of the TLS origin during the run. */
  originCpuSeconds: number
}

export interface HostRouteSummary {
  route: HostRoute
  reqPerSec: number
  p50Ms: number
  p99Ms: number
  cpuUsPerRequest: number
  originCpuUsPerRequest: number
  errors: number
  non2xx: number
}

export interface HostRoutesSummary {
  origin: string
  bodyLabel: string
  connections: number
  rounds: number
  seconds: number
  routes: HostRouteSummary[]
  /** Per round, host-prefixed CPU per request over /media/:id's in the same round. */
  roundRatios: number[]
  /** The median of roundRatios. */
  cpuRatio: number
  /** Upstream responses by host over the whole comparison (media_proxy_upstream_latency_seconds_count). */
  upstreamResponses: Record<string, number>
  cells: HostRouteCell[]
}

/** Medians across rounds per route, and the median of the per-round CPU ratios. */
export function summariseHostRoutes(
  cells: readonly HostRouteCell[],
  meta: Omit<HostRoutesSummary, 'routes' | 'roundRatios' | 'cpuRatio' | 'cells'>,
): HostRoutesSummary {
  const perRequest = (seconds: number, cell: HostRouteCell) => (seconds * 1e6) / Math.max(1, cell.load.requests)
  const routes = HOST_ROUTES.map((route): HostRouteSummary => {
    const mine = cells.filter((cell) => cell.route === route)
    return {
      route,
      reqPerSec: median(mine.map((cell) => cell.load.reqPerSec)),
      p50Ms: median(mine.map((cell) => cell.load.latencyMs.p50)),
      p99Ms: median(mine.map((cell) => cell.load.latencyMs.p99)),
      cpuUsPerRequest: median(mine.map((cell) => perRequest(cell.proxyCpuSeconds, cell))),
      originCpuUsPerRequest: median(mine.map((cell) => perRequest(cell.originCpuSeconds, cell))),
      errors: mine.reduce((sum, cell) => sum + cell.load.errors, 0),
      non2xx: mine.reduce((sum, cell) => sum + cell.load.non2xx, 0),
    }
  })
  const [short, prefixed] = HOST_ROUTES
  const roundRatios: number[] = []
  for (const round of new Set(cells.map((cell) => cell.round))) {
    const at = (route: HostRoute) => cells.find((cell) => cell.round === round && cell.route === route)
    const a = at(short)
    const b = at(prefixed)
    if (!a || !b) continue
    const ratioThisRound = ratio(perRequest(b.proxyCpuSeconds, b), perRequest(a.proxyCpuSeconds, a))
    if (ratioThisRound !== undefined) roundRatios.push(ratioThisRound)
  }
  return { ...meta, routes, roundRatios, cpuRatio: median(roundRatios), cells: [...cells] }
}

export function hostRoutesTable(summary: HostRoutesSummary): string {
  return table(
    ['route', 'req/s', 'p50 ms', 'p99 ms', 'CPU us/req', 'origin CPU us/req', 'CPU vs /media/:id'],
    summary.routes.map((r, i) => [
      r.route + (r.errors + r.non2xx > 0 ? ` [${r.errors} err, ${r.non2xx} non-2xx]` : ''),
      fmt(r.reqPerSec),
      fmt(r.p50Ms, 3),
      fmt(r.p99Ms, 3),
      fmt(r.cpuUsPerRequest, 1),
      fmt(r.originCpuUsPerRequest, 1),
      `${fmt(i === 0 ? 1 : summary.cpuRatio, 3)}x`,
    ]),
  )
}

/** The two proxies of the applications phase (bench/applications.ts). */
export type ApplicationsProxy = 'one' | 'many'

/** One load run of the applications phase: one proxy in one round. */
export interface ApplicationsCell {
  round: number
  proxy: ApplicationsProxy
  load: LoadResult
  /** CPU seconds of that proxy during the run. */
  proxyCpuSeconds: number
}

/** What is known of a proxy of the applications phase before its load runs. */
export interface ApplicationsProxyStart {
  proxy: ApplicationsProxy
  /** media_proxy_applications_loaded once ready. */
  applicationsLoaded: number
  /** From the spawn to the first /readyz 200. */
  readyMs: number
  /** VmRSS two seconds after ready, before any request. */
  idleRssBytes: number
  /** CPU over those two seconds (ms per second; /proc's 10 ms ticks make it coarse). */
  idleCpuMsPerSecond: number
  rssAfterLoadBytes: number
}

export interface ApplicationsProxySummary extends ApplicationsProxyStart {
  reqPerSec: number
  p50Ms: number
  p99Ms: number
  cpuUsPerRequest: number
  errors: number
  non2xx: number
}

export interface ApplicationsSummary {
  applications: number
  /** Distinct RSA keys among the applications' files. */
  distinctKeys: number
  /** Applications given one request each before the load, which then cycles over them. */
  warmApplications: number
  bodyLabel: string
  connections: number
  rounds: number
  seconds: number
  proxies: ApplicationsProxySummary[]
  /** Idle VmRSS of the many-applications proxy above the one-application proxy's. */
  rssAboveOneBytes: number
  /** Per round, the many-applications proxy's CPU per request over the one-application proxy's. */
  roundRatios: number[]
  /** The median of roundRatios. */
  cpuRatio: number
  /** Signing attempts (media_proxy_token_refreshes_total, every application and result) the warm-up requests caused. */
  warmSignatures: number
  /** Signing attempts during the load runs on the many-applications proxy (warm: none expected). */
  loadSignatures: number
  /** An application never used: signing attempts around its first and second requests, and their times. */
  cold: { firstSignatures: number; secondSignatures: number; firstMs: number; secondMs: number }
  cells: ApplicationsCell[]
}

/** Medians across rounds per proxy, and the median of the per-round CPU ratios. */
export function summariseApplications(
  cells: readonly ApplicationsCell[],
  meta: Omit<ApplicationsSummary, 'proxies' | 'rssAboveOneBytes' | 'roundRatios' | 'cpuRatio' | 'cells'> & {
    proxies: ApplicationsProxyStart[]
  },
): ApplicationsSummary {
  const perRequest = (cell: ApplicationsCell) => (cell.proxyCpuSeconds * 1e6) / Math.max(1, cell.load.requests)
  const proxies = meta.proxies.map((start): ApplicationsProxySummary => {
    const mine = cells.filter((cell) => cell.proxy === start.proxy)
    return {
      ...start,
      reqPerSec: median(mine.map((cell) => cell.load.reqPerSec)),
      p50Ms: median(mine.map((cell) => cell.load.latencyMs.p50)),
      p99Ms: median(mine.map((cell) => cell.load.latencyMs.p99)),
      cpuUsPerRequest: median(mine.map(perRequest)),
      errors: mine.reduce((sum, cell) => sum + cell.load.errors, 0),
      non2xx: mine.reduce((sum, cell) => sum + cell.load.non2xx, 0),
    }
  })
  const roundRatios: number[] = []
  for (const round of new Set(cells.map((cell) => cell.round))) {
    const at = (proxy: ApplicationsProxy) => cells.find((cell) => cell.round === round && cell.proxy === proxy)
    const one = at('one')
    const many = at('many')
    if (!one || !many) continue
    const ratioThisRound = ratio(perRequest(many), perRequest(one))
    if (ratioThisRound !== undefined) roundRatios.push(ratioThisRound)
  }
  const idle = (proxy: ApplicationsProxy) => proxies.find((p) => p.proxy === proxy)?.idleRssBytes ?? Number.NaN
  return {
    ...meta,
    proxies,
    rssAboveOneBytes: idle('many') - idle('one'),
    roundRatios,
    cpuRatio: median(roundRatios),
    cells: [...cells],
  }
}

export function applicationsTable(summary: ApplicationsSummary): string {
  const one = summary.proxies.find((p) => p.proxy === 'one')
  return table(
    [
      'proxy',
      'keys loaded',
      'ready ms',
      'idle RSS MiB',
      'RSS vs one MiB',
      'idle CPU ms/s',
      'req/s',
      'p99 ms',
      'CPU us/req',
      'CPU vs one',
      'RSS after load MiB',
    ],
    summary.proxies.map((p) => [
      (p.proxy === 'many' ? `${fmt(summary.applications)} applications` : 'one application') +
        (p.errors + p.non2xx > 0 ? ` [${p.errors} err, ${p.non2xx} non-2xx]` : ''),
      fmt(p.applicationsLoaded),
      fmt(p.readyMs),
      fmt(p.idleRssBytes / MiB, 1),
      p.proxy === 'one' ? '-' : `${summary.rssAboveOneBytes >= 0 ? '+' : ''}${fmt(summary.rssAboveOneBytes / MiB, 1)}`,
      fmt(p.idleCpuMsPerSecond, 1),
      fmt(p.reqPerSec),
      fmt(p.p99Ms, 3),
      fmt(p.cpuUsPerRequest, 1),
      p.proxy === 'one' || !one ? '1.000x' : `${fmt(summary.cpuRatio, 3)}x`,
      fmt(p.rssAfterLoadBytes / MiB, 1),
    ]),
  )
}

/** The cache phase's ways of serving a file (bench/cache.ts). */
export const CACHE_VARIANTS = ['hit', 'miss', 'no cache'] as const
export type CacheVariant = (typeof CACHE_VARIANTS)[number]

/** One load run of the cache phase: one body size, one variant, one round. */
export interface CacheCell {
  round: number
  size: string
  bodyBytes: number
  connections: number
  variant: CacheVariant
  load: LoadResult
  proxyCpuSeconds: number
  /** Requests that reached the origin during the run (its access log). */
  upstreamRequests: number
}

export interface CacheVariantSummary {
  size: string
  connections: number
  variant: CacheVariant
  reqPerSec: number
  mbPerSec: number
  p50Ms: number
  p99Ms: number
  cpuUsPerRequest: number
  /** Origin requests per response: 0 for hits, 1 for misses. */
  upstreamPerRequest: number
  /** Per round, this variant's CPU per request over the miss's, and over the proxy without a cache's. */
  roundCpuVsMiss: number[]
  roundCpuVsNoCache: number[]
  /** Per round, this variant's MB/s over the miss's. */
  roundMbPerSecVsMiss: number[]
  /** The medians of the per-round ratios. */
  cpuVsMiss: number
  cpuVsNoCache: number
  mbPerSecVsMiss: number
  errors: number
  non2xx: number
}

/** One round of GETs at once for one file not stored yet. */
export interface SharedDownloadTrial {
  clients: number
  /** Responses 200 with the whole body. */
  complete: number
  /** Requests for the file that reached the origin (its access log). */
  upstreamRequests: number
  /** The Cache-Status values the clients got, and how many got each. */
  cacheStatus: Record<string, number>
}

/** A proxy started on the stored files, or on an empty cache. */
export interface CacheRebuildStart {
  cache: 'empty' | 'stored'
  trial: number
  /** Files indexed, from its "cache opened" log line. */
  files: number
  /** From the spawn to its "cache opened" and "listening" log lines (their pino times). */
  cacheOpenedMs: number
  listeningMs: number
  idleRssBytes: number
}

export interface CacheRebuildSummary {
  files: number
  /** Where they were: tmpfs, or the benchmark's temp dir on disk. */
  filesystem: string
  /** How long writing the stored files took (the benchmark's set-up, not the proxy's). */
  writeSeconds: number
  starts: CacheRebuildStart[]
  /** Medians over the starts of each. */
  empty: { cacheOpenedMs: number; listeningMs: number; idleRssBytes: number }
  stored: { cacheOpenedMs: number; listeningMs: number; idleRssBytes: number }
}

export interface CacheSummary {
  origin: string
  rounds: number
  /** Seconds per run, by body size. */
  seconds: Record<string, number>
  variants: CacheVariantSummary[]
  sharedDownload: { bodyLabel: string; trials: SharedDownloadTrial[]; withoutCache: SharedDownloadTrial }
  /** 16 slow clients reading one stored file, as run.ts's memory run, and what reached the origin meanwhile. */
  slowHits: MemorySummary & { upstreamRequests: number }
  rebuild: CacheRebuildSummary
  cells: CacheCell[]
}

/** Medians across rounds per size and variant, and the medians of the per-round ratios. */
export function summariseCache(
  cells: readonly CacheCell[],
  meta: Omit<CacheSummary, 'variants' | 'cells'>,
): CacheSummary {
  const perRequest = (cell: CacheCell) => (cell.proxyCpuSeconds * 1e6) / Math.max(1, cell.load.requests)
  const mbPerSec = (cell: CacheCell) => (cell.load.reqPerSec * cell.bodyBytes) / 1e6
  const sizes = [...new Set(cells.map((cell) => cell.size))]
  const variants = sizes.flatMap((size) =>
    CACHE_VARIANTS.flatMap((variant): CacheVariantSummary[] => {
      const mine = cells.filter((cell) => cell.size === size && cell.variant === variant)
      const first = mine[0]
      if (!first) return []
      const roundRatios = (reference: CacheVariant, of: (cell: CacheCell) => number) =>
        mine.flatMap((cell) => {
          const other = cells.find((c) => c.size === size && c.round === cell.round && c.variant === reference)
          const r = other ? ratio(of(cell), of(other)) : undefined
          return r === undefined ? [] : [r]
        })
      const roundCpuVsMiss = roundRatios('miss', perRequest)
      const roundCpuVsNoCache = roundRatios('no cache', perRequest)
      const roundMbPerSecVsMiss = roundRatios('miss', mbPerSec)
      return [
        {
          size,
          connections: first.connections,
          variant,
          reqPerSec: median(mine.map((cell) => cell.load.reqPerSec)),
          mbPerSec: median(mine.map(mbPerSec)),
          p50Ms: median(mine.map((cell) => cell.load.latencyMs.p50)),
          p99Ms: median(mine.map((cell) => cell.load.latencyMs.p99)),
          cpuUsPerRequest: median(mine.map(perRequest)),
          upstreamPerRequest: median(mine.map((cell) => cell.upstreamRequests / Math.max(1, cell.load.requests))),
          roundCpuVsMiss,
          roundCpuVsNoCache,
          roundMbPerSecVsMiss,
          cpuVsMiss: median(roundCpuVsMiss),
          cpuVsNoCache: median(roundCpuVsNoCache),
          mbPerSecVsMiss: median(roundMbPerSecVsMiss),
          errors: mine.reduce((sum, cell) => sum + cell.load.errors, 0),
          non2xx: mine.reduce((sum, cell) => sum + cell.load.non2xx, 0),
        },
      ]
    }),
  )
  return { ...meta, variants, cells: [...cells] }
}

/** The way each variant serves a file, as the table names it. */
const CACHE_VARIANT_LABELS: Record<CacheVariant, string> = {
  hit: 'hit (one stored file)',
  miss: 'miss (a new file each request)',
  'no cache': 'no cache (a new file each request)',
}

export function cacheTable(summary: CacheSummary): string {
  const x = (value: number) => (Number.isNaN(value) ? '-' : `${fmt(value, 2)}x`)
  return table(
    [
      'body (conns)',
      'variant',
      'req/s',
      'MB/s',
      'p50 ms',
      'p99 ms',
      'CPU us/req',
      'CPU vs miss',
      'CPU vs no cache',
      'MB/s vs miss',
      'upstream/req',
    ],
    summary.variants.map((v) => [
      `${v.size} (${v.connections})`,
      CACHE_VARIANT_LABELS[v.variant] + (v.errors + v.non2xx > 0 ? ` [${v.errors} err, ${v.non2xx} non-2xx]` : ''),
      fmt(v.reqPerSec),
      fmt(v.mbPerSec, 1),
      fmt(v.p50Ms, 3),
      fmt(v.p99Ms, 3),
      fmt(v.cpuUsPerRequest, 1),
      x(v.cpuVsMiss),
      x(v.cpuVsNoCache),
      x(v.mbPerSecVsMiss),
      fmt(v.upstreamPerRequest, 2),
    ]),
  )
}

/** The shared downloads in one line: origin requests per trial, and without a cache. */
export function sharedDownloadLine(shared: CacheSummary['sharedDownload']): string {
  const statuses = (trial: SharedDownloadTrial) =>
    Object.entries(trial.cacheStatus)
      .map(([value, count]) => `${count}x "${value}"`)
      .join(', ')
  return (
    `${shared.trials[0]?.clients} GETs at once for one ${shared.bodyLabel} file not stored yet, requests at the ` +
    `origin: ${shared.trials
      .map((t) => `${t.upstreamRequests} (${t.complete}/${t.clients} complete; Cache-Status ${statuses(t)})`)
      .join(', ')}; through the proxy without a cache: ${shared.withoutCache.upstreamRequests}`
  )
}

export function cacheRebuildTable(rebuild: CacheRebuildSummary): string {
  const row = (label: string, files: number, m: CacheRebuildSummary['empty']) => [
    label,
    fmt(files),
    fmt(m.cacheOpenedMs),
    fmt(m.listeningMs),
    fmt(m.idleRssBytes / MiB, 1),
  ]
  const indexed = rebuild.starts.find((start) => start.cache === 'stored')?.files ?? 0
  return table(
    ['CACHE_DIR', 'files indexed', 'cache opened ms', 'listening ms', 'idle RSS MiB'],
    [row('empty', 0, rebuild.empty), row(`${fmt(rebuild.files)} stored files`, indexed, rebuild.stored)],
  )
}

/** The proxies of the tracing phase (bench/tracing.ts). */
export const TRACING_VARIANTS = ['before tracing', 'tracing off', 'tracing on'] as const
export type TracingVariant = (typeof TRACING_VARIANTS)[number]

/** One load run of the tracing phase: one proxy in one round. */
export interface TracingCell {
  round: number
  variant: TracingVariant
  load: LoadResult
  proxyCpuSeconds: number
}

export interface TracingVariantSummary {
  variant: TracingVariant
  reqPerSec: number
  p50Ms: number
  p99Ms: number
  cpuUsPerRequest: number
  /** Per round, this proxy's CPU per request over the one before tracing's, and over tracing off's. */
  roundCpuVsBefore: number[]
  roundCpuVsOff: number[]
  /** The medians of the per-round ratios. */
  cpuVsBefore: number
  cpuVsOff: number
  errors: number
  non2xx: number
}

/** What the OTLP sink (bench/otlp-sink.ts) received from the proxy with tracing on. */
export interface TracingExport {
  protocol: string
  /** Media requests that proxy served (media_proxy_requests_total), warm-up and checks included. */
  requests: number
  /** Spans received by the end of the last round, and once the proxy had stopped (its last batch flushed). */
  spansDuringLoad: number
  spans: number
  exports: number
  bytes: number
  /** Export bodies the sink could not decode. */
  unreadable: number
}

export interface TracingSummary {
  /** The commit built as "before tracing", and its subject line. */
  before: { commit: string; subject: string; dependencyMismatches: string[] }
  origin: string
  bodyLabel: string
  connections: number
  rounds: number
  seconds: number
  variants: TracingVariantSummary[]
  export: TracingExport
  cells: TracingCell[]
}

/** Medians across rounds per proxy, and the medians of the per-round CPU ratios. */
export function summariseTracing(
  cells: readonly TracingCell[],
  meta: Omit<TracingSummary, 'variants' | 'cells'>,
): TracingSummary {
  const perRequest = (cell: TracingCell) => (cell.proxyCpuSeconds * 1e6) / Math.max(1, cell.load.requests)
  const variants = TRACING_VARIANTS.flatMap((variant): TracingVariantSummary[] => {
    const mine = cells.filter((cell) => cell.variant === variant)
    if (mine.length === 0) return []
    const roundRatios = (reference: TracingVariant) =>
      mine.flatMap((cell) => {
        const other = cells.find((c) => c.round === cell.round && c.variant === reference)
        const r = other ? ratio(perRequest(cell), perRequest(other)) : undefined
        return r === undefined ? [] : [r]
      })
    const roundCpuVsBefore = roundRatios('before tracing')
    const roundCpuVsOff = roundRatios('tracing off')
    return [
      {
        variant,
        reqPerSec: median(mine.map((cell) => cell.load.reqPerSec)),
        p50Ms: median(mine.map((cell) => cell.load.latencyMs.p50)),
        p99Ms: median(mine.map((cell) => cell.load.latencyMs.p99)),
        cpuUsPerRequest: median(mine.map(perRequest)),
        roundCpuVsBefore,
        roundCpuVsOff,
        cpuVsBefore: median(roundCpuVsBefore),
        cpuVsOff: median(roundCpuVsOff),
        errors: mine.reduce((sum, cell) => sum + cell.load.errors, 0),
        non2xx: mine.reduce((sum, cell) => sum + cell.load.non2xx, 0),
      },
    ]
  })
  return { ...meta, variants, cells: [...cells] }
}

export function tracingTable(summary: TracingSummary): string {
  const x = (value: number) => (Number.isNaN(value) ? '-' : `${fmt(value, 3)}x`)
  const labels: Record<TracingVariant, string> = {
    'before tracing': `before tracing (${summary.before.commit})`,
    'tracing off': 'tracing off',
    'tracing on': `tracing on (every request sampled, ${summary.export.protocol})`,
  }
  return table(
    ['proxy', 'req/s', 'p50 ms', 'p99 ms', 'CPU us/req', 'CPU vs before tracing', 'CPU vs tracing off'],
    summary.variants.map((v) => [
      labels[v.variant] + (v.errors + v.non2xx > 0 ? ` [${v.errors} err, ${v.non2xx} non-2xx]` : ''),
      fmt(v.reqPerSec),
      fmt(v.p50Ms, 3),
      fmt(v.p99Ms, 3),
      fmt(v.cpuUsPerRequest, 1),
      x(v.cpuVsBefore),
      x(v.cpuVsOff),
    ]),
  )
}

/** The export in one line: what the sink received against the two spans each request makes. */
export function tracingExportLine(exported: TracingExport): string {
  return (
    `spans received by the OTLP sink from the proxy with tracing on: ${fmt(exported.spansDuringLoad)} by the end of ` +
    `the last round, ${fmt(exported.spans)} once it had stopped, for ${fmt(exported.requests)} media requests ` +
    `(${fmt(exported.spans / Math.max(1, exported.requests), 2)} per request; each makes a server and an upstream ` +
    `span), in ${fmt(exported.exports)} exports of ${fmt(exported.bytes / exported.exports / 1024, 1)} KiB on ` +
    `average` +
    (exported.unreadable > 0 ? `; ${exported.unreadable} export bodies could not be decoded` : '')
  )
}

export interface TargetCheck {
  target: string
  value: string
  /** 'no target': measured and reported, with no figure set to hold it against yet. */
  verdict: 'met' | 'missed' | 'n/a' | 'no target'
}

const MiB = 1024 * 1024
/** The many-clients verdict needs at least this share of the clients held in flight. */
const MANY_HELD_SHARE = 0.95

/** The memory run's row for the second proxy, whose upstream ends every body by closing the connection. */
export const CLOSE_DELIMITED_PROXY = 'proxy (close-delimited)'

export function checkTargets(
  summaries: readonly CellSummary[],
  latency: readonly LatencySummary[],
  memory: readonly MemorySummary[],
  signatures: SignatureSummary | undefined,
  many?: ManyClientsSummary,
  hostRoutes?: HostRoutesSummary,
  applications?: ApplicationsSummary,
  cache?: CacheSummary,
  tracing?: TracingSummary,
): TargetCheck[] {
  const at = (size: string, target: TargetName) => summaries.find((s) => s.size === size && s.target === target)
  const checks: TargetCheck[] = []
  const verdict = (ok: boolean | undefined): TargetCheck['verdict'] =>
    ok === undefined ? 'n/a' : ok ? 'met' : 'missed'

  const cpu = at('1 KiB', 'proxy')?.cpuVsNginx64k
  checks.push({
    target: '1 KiB: proxy CPU/request <= 3.0x nginx-64k',
    value: cpu === undefined ? 'no nginx' : `${fmt(cpu, 2)}x`,
    verdict: verdict(cpu === undefined ? undefined : cpu <= 3.0),
  })
  const big = at('32 MiB', 'proxy')
  const vs64k = big?.reqPerSecVsNginx64k
  const vsDefault = big?.reqPerSecVsNginxDefault
  checks.push({
    target: '32 MiB: proxy throughput >= 0.6x nginx-64k and >= nginx-default',
    value: vs64k === undefined ? 'no nginx' : `${fmt(vs64k, 2)}x nginx-64k, ${fmt(vsDefault, 2)}x nginx-default`,
    verdict: verdict(vs64k === undefined || vsDefault === undefined ? undefined : vs64k >= 0.6 && vsDefault >= 1),
  })
  const added = latency.find((l) => l.target === 'proxy')
  checks.push({
    target: 'concurrency 1, 1 KiB: added p50 <= 0.3 ms, added p99 <= 1.5 ms',
    value: added ? `+${fmt(added.addedP50Ms, 3)} ms p50, +${fmt(added.addedP99Ms, 3)} ms p99` : 'not measured',
    verdict: verdict(
      added?.addedP50Ms === undefined || added.addedP99Ms === undefined
        ? undefined
        : added.addedP50Ms <= 0.3 && added.addedP99Ms <= 1.5,
    ),
  })
  for (const [name, bodies] of [
    ['proxy', 'keep-alive'],
    [CLOSE_DELIMITED_PROXY, 'close-delimited'],
  ] as const) {
    const rss = memory.find((m) => m.target === name)
    checks.push({
      target: `16 slow 32 MiB clients, ${bodies} upstream bodies: peak RSS above idle <= 32 MiB`,
      value: rss
        ? `${fmt(rss.aboveIdleBytes / MiB, 1)} MiB above an idle ${fmt(rss.idleBytes / MiB, 1)} MiB`
        : 'not measured',
      verdict: verdict(rss ? rss.aboveIdleBytes <= 32 * MiB : undefined),
    })
  }
  if (many) {
    const limit = many.limitBytes
    // Fewer in flight than clients: the run did not hold the load the target is about.
    const held = many.heldInFlight >= MANY_HELD_SHARE * many.clients && many.stoppedEarly === undefined
    checks.push({
      target: `${fmt(many.clients)} slow downloads held at once: peak RSS plus the proxy's socket buffers (a cgroup v2 limit counts both) under the Kubernetes example's memory limit`,
      value:
        `peak ${fmt(many.peakBytes / MiB, 1)} MiB, limit ` +
        (limit === undefined ? 'unknown' : `${fmt(limit / MiB)} MiB`) +
        `; ${fmt(many.peakInFlight)} in flight at most, ${fmt(many.heldInFlight)} held through the second half` +
        (many.proxySocketPeakBytes === undefined
          ? ''
          : `; + ${fmt(many.proxySocketPeakBytes / MiB)} MiB in the proxy's socket buffers (kernel)`) +
        (many.stoppedEarly ? `; stopped early: ${many.stoppedEarly}` : ''),
      verdict: verdict(
        limit === undefined || !held ? undefined : many.peakBytes + (many.proxySocketPeakBytes ?? 0) < limit,
      ),
    })
  }
  const failed = hostRoutes?.routes.reduce((sum, r) => sum + r.errors + r.non2xx, 0) ?? 0
  const ratios = hostRoutes?.roundRatios ?? []
  checks.push({
    target: 'host-prefixed route: CPU per request <= 1.05x /media/:id',
    value:
      hostRoutes && ratios.length > 0
        ? `${fmt(hostRoutes.cpuRatio, 3)}x (median of ${ratios.length} rounds, ` +
          `${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)}; ` +
          `${hostRoutes.routes.map((r) => fmt(r.cpuUsPerRequest, 1)).join(' vs ')} us)` +
          (failed > 0 ? `; ${failed} failed responses` : '')
        : 'not measured',
    // Failed responses cost less than served ones: a run with any says nothing about the target.
    verdict: verdict(hostRoutes && ratios.length > 0 && failed === 0 ? hostRoutes.cpuRatio <= 1.05 : undefined),
  })
  const apps = applications?.applications
  const manyApps = applications?.proxies.find((p) => p.proxy === 'many')
  const oneApp = applications?.proxies.find((p) => p.proxy === 'one')
  checks.push({
    target: `${fmt(apps ?? 1_000)} applications: ready (/readyz 200) within 2 s of start`,
    value:
      manyApps && oneApp ? `${fmt(manyApps.readyMs)} ms (one application: ${fmt(oneApp.readyMs)} ms)` : 'not measured',
    verdict: verdict(manyApps ? manyApps.readyMs <= 2_000 : undefined),
  })
  checks.push({
    target: `${fmt(apps ?? 1_000)} applications: idle RSS <= 64 MiB above one application's`,
    value:
      applications && manyApps && oneApp
        ? `+${fmt(applications.rssAboveOneBytes / MiB, 1)} MiB (${fmt(manyApps.idleRssBytes / MiB, 1)} vs ` +
          `${fmt(oneApp.idleRssBytes / MiB, 1)} MiB)`
        : 'not measured',
    verdict: verdict(applications ? applications.rssAboveOneBytes <= 64 * MiB : undefined),
  })
  const appFailed = applications?.proxies.reduce((sum, p) => sum + p.errors + p.non2xx, 0) ?? 0
  const appRatios = applications?.roundRatios ?? []
  checks.push({
    target: `${fmt(apps ?? 1_000)} applications, warm token: CPU per request <= 1.05x one application's`,
    value:
      applications && appRatios.length > 0
        ? `${fmt(applications.cpuRatio, 3)}x (median of ${appRatios.length} rounds, ` +
          `${fmt(Math.min(...appRatios), 2)}-${fmt(Math.max(...appRatios), 2)}; ` +
          `${fmt(manyApps?.cpuUsPerRequest, 1)} vs ${fmt(oneApp?.cpuUsPerRequest, 1)} us)` +
          (appFailed > 0 ? `; ${appFailed} failed responses` : '')
        : 'not measured',
    // Failed responses cost less than served ones: a run with any says nothing about the target.
    verdict: verdict(
      applications && appRatios.length > 0 && appFailed === 0 ? applications.cpuRatio <= 1.05 : undefined,
    ),
  })
  checks.push({
    target: `${fmt(apps ?? 1_000)} applications, cold token: first request = exactly 1 signature, second = 0`,
    value: applications
      ? `${applications.cold.firstSignatures} on the first, ${applications.cold.secondSignatures} on the second`
      : 'not measured',
    verdict: verdict(
      applications ? applications.cold.firstSignatures === 1 && applications.cold.secondSignatures === 0 : undefined,
    ),
  })
  checks.push(...cacheChecks(cache))
  checks.push(...tracingChecks(tracing))
  checks.push({
    target: 'zero RS256 signatures per request',
    value: signatures ? `${fmt(signatures.per10k, 1)} per 10,000 requests` : 'not measured',
    verdict: verdict(signatures ? signatures.signatures === 0 : undefined),
  })
  return checks
}

/** The cache phase's targets (bench/cache.ts). */
function cacheChecks(cache: CacheSummary | undefined): TargetCheck[] {
  const verdict = (ok: boolean | undefined): TargetCheck['verdict'] =>
    ok === undefined ? 'n/a' : ok ? 'met' : 'missed'
  const at = (size: string, variant: CacheVariant) =>
    cache?.variants.find((v) => v.size === size && v.variant === variant)
  const failedAt = (size: string) =>
    cache?.variants.filter((v) => v.size === size).reduce((sum, v) => sum + v.errors + v.non2xx, 0) ?? 0
  const range = (values: readonly number[]) =>
    `median of ${values.length} rounds, ${fmt(Math.min(...values), 2)}-${fmt(Math.max(...values), 2)}`
  const checks: TargetCheck[] = []

  const smallHit = at('1 KiB', 'hit')
  const smallMiss = at('1 KiB', 'miss')
  const smallNoCache = at('1 KiB', 'no cache')
  const smallFailed = failedAt('1 KiB')
  const cpuMeasured = smallHit && smallMiss && smallHit.roundCpuVsMiss.length > 0
  checks.push({
    target: '1 KiB: a cache hit costs less CPU per request than a miss',
    value: cpuMeasured
      ? `${fmt(smallHit.cpuVsMiss, 2)}x a miss (${range(smallHit.roundCpuVsMiss)}; ` +
        `${fmt(smallHit.cpuUsPerRequest, 1)} vs ${fmt(smallMiss.cpuUsPerRequest, 1)} us), ` +
        `${fmt(smallHit.cpuVsNoCache, 2)}x no cache (${fmt(smallNoCache?.cpuUsPerRequest, 1)} us)` +
        (smallFailed > 0 ? `; ${smallFailed} failed responses` : '')
      : 'not measured',
    // Failed responses cost less than served ones: a run with any says nothing about the target.
    verdict: verdict(cpuMeasured && smallFailed === 0 ? smallHit.cpuVsMiss < 1 : undefined),
  })
  const bigHit = at('32 MiB', 'hit')
  const bigMiss = at('32 MiB', 'miss')
  const bigNoCache = at('32 MiB', 'no cache')
  const bigFailed = failedAt('32 MiB')
  const mbMeasured = bigHit && bigMiss && bigHit.roundMbPerSecVsMiss.length > 0
  checks.push({
    target: "32 MiB: a cache hit's throughput >= a miss's",
    value: mbMeasured
      ? `${fmt(bigHit.mbPerSecVsMiss, 2)}x (${range(bigHit.roundMbPerSecVsMiss)}; ` +
        `${fmt(bigHit.mbPerSec)} vs ${fmt(bigMiss.mbPerSec)} MB/s; no cache ${fmt(bigNoCache?.mbPerSec)} MB/s)` +
        (bigFailed > 0 ? `; ${bigFailed} failed responses` : '')
      : 'not measured',
    verdict: verdict(mbMeasured && bigFailed === 0 ? bigHit.mbPerSecVsMiss >= 1 : undefined),
  })
  const shared = cache?.sharedDownload
  const clients = shared?.trials[0]?.clients ?? 8
  checks.push({
    target: `${clients} concurrent misses for one ${shared?.bodyLabel ?? '32 MiB'} file: exactly 1 upstream request (at the origin)`,
    value: shared
      ? `${shared.trials.map((t) => t.upstreamRequests).join(', ')} in ${shared.trials.length} trial(s), ` +
        `${shared.trials.map((t) => t.complete).join(', ')} of ${clients} bodies complete; ` +
        `without a cache: ${shared.withoutCache.upstreamRequests}`
      : 'not measured',
    verdict: verdict(
      shared ? shared.trials.every((t) => t.upstreamRequests === 1 && t.complete === t.clients) : undefined,
    ),
  })
  const slow = cache?.slowHits
  checks.push({
    target: `${slow?.clients ?? 16} slow 32 MiB clients reading a cache hit: peak RSS above idle <= 32 MiB`,
    value: slow
      ? `${fmt(slow.aboveIdleBytes / MiB, 1)} MiB above an idle ${fmt(slow.idleBytes / MiB, 1)} MiB; ` +
        `${slow.upstreamRequests} upstream requests`
      : 'not measured',
    verdict: verdict(slow ? slow.aboveIdleBytes <= 32 * MiB && slow.upstreamRequests === 0 : undefined),
  })
  const rebuild = cache?.rebuild
  checks.push({
    target: `cache index rebuild, ${fmt(rebuild?.files ?? 100_000)} stored files: spawn to listening, and RSS`,
    value: rebuild
      ? `${fmt(rebuild.stored.listeningMs)} ms (empty cache ${fmt(rebuild.empty.listeningMs)} ms: ` +
        `+${fmt(rebuild.stored.listeningMs - rebuild.empty.listeningMs)} ms); idle RSS ` +
        `+${fmt((rebuild.stored.idleRssBytes - rebuild.empty.idleRssBytes) / MiB, 1)} MiB`
      : 'not measured',
    verdict: rebuild ? 'no target' : 'n/a',
  })
  return checks
}

/** The share of the spans expected (two per request) that must reach the sink for "tracing on" to have been measured. */
const TRACING_EXPORTED_SHARE = 0.95

/** The tracing phase's targets (bench/tracing.ts). */
function tracingChecks(tracing: TracingSummary | undefined): TargetCheck[] {
  const verdict = (ok: boolean | undefined): TargetCheck['verdict'] =>
    ok === undefined ? 'n/a' : ok ? 'met' : 'missed'
  const at = (variant: TracingVariant) => tracing?.variants.find((v) => v.variant === variant)
  const failed = tracing?.variants.reduce((sum, v) => sum + v.errors + v.non2xx, 0) ?? 0
  const range = (values: readonly number[]) =>
    `median of ${values.length} rounds, ${fmt(Math.min(...values), 3)}-${fmt(Math.max(...values), 3)}`
  const before = at('before tracing')
  const off = at('tracing off')
  const on = at('tracing on')
  const offMeasured = off && before && off.roundCpuVsBefore.length > 0
  const onMeasured = on && off && on.roundCpuVsOff.length > 0
  const exported = tracing?.export
  const spansPerRequest = exported ? exported.spans / Math.max(1, exported.requests) : 0
  // Spans dropped cost less than spans exported: a run that lost many says little about the target.
  const allExported = spansPerRequest >= 2 * TRACING_EXPORTED_SHARE
  const failedNote = failed > 0 ? `; ${failed} failed responses` : ''
  return [
    {
      target: `tracing off vs before tracing (${tracing?.before.commit ?? 'the last commit without it'}): CPU per 1 KiB request <= 1.03x`,
      value: offMeasured
        ? `${fmt(off.cpuVsBefore, 3)}x (${range(off.roundCpuVsBefore)}; ${fmt(off.cpuUsPerRequest, 1)} vs ` +
          `${fmt(before.cpuUsPerRequest, 1)} us)${failedNote}`
        : 'not measured',
      // Failed responses cost less than served ones: a run with any says nothing about the target.
      verdict: verdict(offMeasured && failed === 0 ? off.cpuVsBefore <= 1.03 : undefined),
    },
    {
      target: 'tracing on, every request sampled and exported, vs off: CPU per 1 KiB request <= 1.25x',
      value: onMeasured
        ? `${fmt(on.cpuVsOff, 3)}x (${range(on.roundCpuVsOff)}; ${fmt(on.cpuUsPerRequest, 1)} vs ` +
          `${fmt(off.cpuUsPerRequest, 1)} us); ${fmt(spansPerRequest, 2)} spans exported per request` +
          (allExported ? '' : ' (spans were dropped)') +
          failedNote
        : 'not measured',
      verdict: verdict(onMeasured && failed === 0 && allExported ? on.cpuVsOff <= 1.25 : undefined),
    },
  ]
}

export function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || Number.isNaN(value)) return '-'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** A plain-text table: the first column left-aligned, the rest right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)))
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0)))
      .join('  ')
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n')
}

export function throughputTable(summaries: readonly CellSummary[]): string {
  const x = (value: number | undefined) => (value === undefined ? '-' : `${fmt(value, 2)}x`)
  return table(
    [
      'body (conns)',
      'target',
      'req/s',
      'MB/s',
      'p50 ms',
      'p99 ms',
      'CPU us/req',
      'core %',
      'req/s vs direct',
      'req/s vs ngx-64k',
      'CPU vs ngx-64k',
    ],
    summaries.map((s) => [
      `${s.size} (${s.connections})`,
      s.target + (s.errors + s.non2xx > 0 ? ` [${s.errors} err, ${s.non2xx} non-2xx]` : ''),
      fmt(s.reqPerSec),
      fmt(s.mbPerSec, 1),
      fmt(s.p50Ms, 3),
      fmt(s.p99Ms, 3),
      fmt(s.cpuUsPerRequest, 1),
      fmt(s.serverCorePercent),
      x(s.reqPerSecVsDirect),
      x(s.reqPerSecVsNginx64k),
      x(s.cpuVsNginx64k),
    ]),
  )
}

/** The proxy beside the relays it was chosen over, at the given sizes: CPU per request and throughput. */
export function relayDecisionTable(summaries: readonly CellSummary[], sizes: readonly string[]): string {
  const x = (value: number | undefined) => (value === undefined ? '-' : `${fmt(value, 2)}x`)
  const relays: readonly TargetName[] = ['proxy', 'http-proxy', 'undici-stream']
  const rows = sizes.flatMap((size) =>
    relays.flatMap((target) => {
      const s = summaries.find((summary) => summary.size === size && summary.target === target)
      if (!s) return []
      return [
        [
          `${s.size} (${s.connections})`,
          s.target + (s.errors + s.non2xx > 0 ? ` [${s.errors} err, ${s.non2xx} non-2xx]` : ''),
          fmt(s.cpuUsPerRequest, 1),
          x(s.cpuVsProxy),
          x(s.cpuVsNginx64k),
          fmt(s.reqPerSec),
          fmt(s.mbPerSec, 1),
          x(s.reqPerSecVsProxy),
        ],
      ]
    }),
  )
  return table(
    ['body (conns)', 'relay', 'CPU us/req', 'CPU vs proxy', 'CPU vs ngx-64k', 'req/s', 'MB/s', 'req/s vs proxy'],
    rows,
  )
}

export function latencyTable(latency: readonly LatencySummary[]): string {
  return table(
    ['target', 'p50 ms', 'p99 ms', 'added p50 ms', 'added p99 ms'],
    latency.map((l) => [l.target, fmt(l.p50Ms, 3), fmt(l.p99Ms, 3), fmt(l.addedP50Ms, 3), fmt(l.addedP99Ms, 3)]),
  )
}

export function memoryTable(memory: readonly MemorySummary[]): string {
  return table(
    ['target', 'idle MiB', 'peak MiB', 'above idle MiB', 'clients done', 'MB/s per client'],
    memory.map((m) => [
      m.target,
      fmt(m.idleBytes / MiB, 1),
      fmt(m.peakBytes / MiB, 1),
      fmt(m.aboveIdleBytes / MiB, 1),
      `${m.completed}/${m.clients}${m.failed > 0 ? ` (${m.failed} failed)` : ''}`,
      fmt(m.meanBytesPerSecondPerClient / 1e6, 2),
    ]),
  )
}

/** One row: the fresh proxy's memory with many slow clients, against the example's limit. */
export function manyClientsTable(many: ManyClientsSummary): string {
  const limit = many.limitBytes
  const mib = (bytes: number | undefined) => (bytes === undefined ? '-' : fmt(bytes / MiB))
  return table(
    [
      'target',
      'clients',
      'in flight (max)',
      'held (min, 2nd half)',
      'idle MiB',
      'peak MiB',
      'above idle MiB',
      'limit MiB',
      'peak < limit',
      "proxy's sockets MiB",
      'kernel TCP MiB',
      'KB read per client',
    ],
    [
      [
        'proxy',
        `${fmt(many.responded)}/${fmt(many.clients)} got 200` +
          (many.failed > 0
            ? ` (${fmt(many.failed)} failed: ${Object.entries(many.failures)
                .map(([why, count]) => `${count} ${why}`)
                .join(', ')})`
            : ''),
        fmt(many.peakInFlight),
        fmt(many.heldInFlight),
        fmt(many.idleBytes / MiB, 1),
        fmt(many.peakBytes / MiB, 1),
        fmt(many.aboveIdleBytes / MiB, 1),
        mib(limit),
        limit === undefined ? 'n/a' : many.peakBytes < limit ? 'yes' : 'NO',
        mib(many.proxySocketPeakBytes),
        `${mib(many.kernelTcpPeakBytes)} of ${mib(many.kernelTcpPressureBytes)}`,
        fmt(many.meanBytesPerClient / 1e3),
      ],
    ],
  )
}

export function targetsTable(checks: readonly TargetCheck[]): string {
  return table(
    ['target', 'this run', 'verdict'],
    checks.map((c) => [c.target, c.value, c.verdict]),
  )
}
