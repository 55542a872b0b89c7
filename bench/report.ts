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

/** Memory of a fresh proxy with many slow clients at once (MAX_IN_FLIGHT_REQUESTS of them by default). */
export interface ManyClientsSummary {
  clients: number
  bodyLabel: string
  bytesPerSecondPerClient: number
  rampSeconds: number
  seconds: number
  idleBytes: number
  peakBytes: number
  aboveIdleBytes: number
  /** Media requests in flight in the proxy (its gauge), the most seen while sampling. */
  peakInFlight: number
  /**
   * Kernel TCP buffer memory (the whole machine's, /proc/net/sockstat), the most seen above its
   * level at the start: outside the proxy's RSS, but charged to a cgroup v2 memory limit.
   */
  kernelTcpAboveStartBytes: number
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

export interface TargetCheck {
  target: string
  value: string
  verdict: 'met' | 'missed' | 'n/a'
}

const MiB = 1024 * 1024

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
    checks.push({
      target: `${fmt(many.clients)} slow clients: peak RSS under the Kubernetes example's memory limit`,
      value:
        `peak ${fmt(many.peakBytes / MiB, 1)} MiB, limit ` +
        (limit === undefined ? 'unknown' : `${fmt(limit / MiB)} MiB`) +
        `; ${fmt(many.peakInFlight)} in flight at most`,
      verdict: verdict(limit === undefined ? undefined : many.peakBytes < limit),
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
  checks.push({
    target: 'zero RS256 signatures per request',
    value: signatures ? `${fmt(signatures.per10k, 1)} per 10,000 requests` : 'not measured',
    verdict: verdict(signatures ? signatures.signatures === 0 : undefined),
  })
  return checks
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
  return table(
    [
      'target',
      'clients',
      'in flight (max)',
      'idle MiB',
      'peak MiB',
      'above idle MiB',
      'limit MiB',
      'peak < limit',
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
        fmt(many.idleBytes / MiB, 1),
        fmt(many.peakBytes / MiB, 1),
        fmt(many.aboveIdleBytes / MiB, 1),
        limit === undefined ? '-' : fmt(limit / MiB),
        limit === undefined ? 'n/a' : many.peakBytes < limit ? 'yes' : 'NO',
        fmt(many.kernelTcpAboveStartBytes / MiB),
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
