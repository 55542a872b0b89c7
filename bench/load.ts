// The load generators: wrk when it is installed (a separate process pinned to the load core,
// its --latency output parsed), else one in this process (already pinned there): autocannon,
// whose per-response times are kept to get sub-millisecond percentiles (its histogram is in
// whole ms), for small bodies; for larger ones a closed loop of undici requests, because
// autocannon appends every body chunk to a string and would measure itself, not the server.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { Pool } from 'undici'
import { commandExists, LOAD_CORE, type ProcessGroup } from './processes.js'

export interface LoadSpec {
  url: string
  connections: number
  durationSeconds: number
  /** The expected body size: picks the in-process generator. */
  bodyBytes?: number
  /**
   * A header whose value cycles over `values`, one request after another (request i carries
   * values[i % n]). wrk needs a Lua script for it (written next to its output, a request()
   * function over requests formatted once); an empty list sends no such header through the same
   * script, so that a run compared with one that sends it costs the load generator the same.
   */
  headerCycle?: { name: string; values: readonly string[] }
  /**
   * Paths instead of the URL's: request i goes to prefix + i (8 hex digits, from 0) + suffix
   * when distinct, or to the path of i = 0 every time when not, through the same code either way
   * (a wrk Lua script), so that a run of one path and a run of new ones cost the load generator
   * the same.
   */
  pathSeries?: PathSeries
}

export interface PathSeries {
  prefix: string
  suffix: string
  distinct: boolean
}

/** The path of request i of a series. */
export function seriesPath(series: PathSeries, i: number): string {
  return `${series.prefix}${(series.distinct ? i : 0).toString(16).padStart(8, '0')}${series.suffix}`
}

export interface LoadResult {
  requests: number
  seconds: number
  reqPerSec: number
  latencyMs: { p50: number; p99: number }
  /** Connection errors and timeouts. */
  errors: number
  /** Responses other than 2xx/3xx. */
  non2xx: number
}

export interface LoadGenerator {
  readonly name: string
  run(spec: LoadSpec): Promise<LoadResult>
}

/** Above the slowest 32 MiB response through a busy proxy; wrk's default of 2 s is not. */
const REQUEST_TIMEOUT_SECONDS = 30

export function wrkAvailable(): boolean {
  return commandExists('wrk', ['--version'])
}

export function wrk(group: ProcessGroup, dir: string): LoadGenerator {
  const output = join(dir, 'wrk.out')
  const script = join(dir, 'wrk-header-cycle.lua')
  const seriesScript = join(dir, 'wrk-path-series.lua')
  return {
    name: 'wrk',
    async run(spec) {
      writeFileSync(output, '')
      const args = ['-t1', `-c${spec.connections}`, `-d${spec.durationSeconds}s`, '--latency']
      if (spec.headerCycle && spec.pathSeries) throw new Error('wrk: a header cycle or a path series, not both')
      if (spec.headerCycle) {
        writeFileSync(script, headerCycleScript(spec.headerCycle))
        args.push('-s', script)
      }
      if (spec.pathSeries) {
        writeFileSync(seriesScript, pathSeriesScript(spec.pathSeries))
        args.push('-s', seriesScript)
      }
      args.push('--timeout', `${REQUEST_TIMEOUT_SECONDS}s`, spec.url)
      const child = group.spawn('wrk', 'wrk', args, { core: LOAD_CORE, stdoutFile: output, stderrFile: output })
      const code = await child.exited
      const text = readFileSync(output, 'utf8')
      if (code !== 0) throw new Error(`wrk exited with ${code}: ${text.trim()}`)
      return parseWrk(text)
    },
  }
}

/** wrk's Lua: every request formatted once per thread (in init), then handed out in turn. */
function headerCycleScript(cycle: { name: string; values: readonly string[] }): string {
  const quote = (text: string) => JSON.stringify(text)
  return [
    `local values = { ${cycle.values.map(quote).join(', ')} }`,
    'local requests = {}',
    'local i = 0',
    'function init(args)',
    '  for k, value in ipairs(values) do',
    `    requests[k] = wrk.format(nil, nil, { [${quote(cycle.name)}] = value })`,
    '  end',
    '  if #requests == 0 then requests[1] = wrk.format() end',
    'end',
    'function request()',
    '  i = i % #requests + 1',
    '  return requests[i]',
    'end',
    '',
  ].join('\n')
}

/** wrk's Lua: one path formatted per request (seriesPath() in Lua; -t1, so one counter). */
function pathSeriesScript(series: PathSeries): string {
  const quote = (text: string) => JSON.stringify(text)
  return [
    `local prefix, suffix, distinct = ${quote(series.prefix)}, ${quote(series.suffix)}, ${series.distinct}`,
    'local i = -1',
    'function request()',
    '  if distinct or i < 0 then i = i + 1 end',
    '  return wrk.format(nil, string.format("%s%08x%s", prefix, i, suffix))',
    'end',
    '',
  ].join('\n')
}

const WRK_TIME_UNITS: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 }

function wrkMs(value: string | undefined, unit: string | undefined): number {
  return Number(value) * (WRK_TIME_UNITS[unit ?? ''] ?? Number.NaN)
}

/** Parses wrk's summary (with --latency). */
export function parseWrk(text: string): LoadResult {
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h),/.exec(text)
  const p50 = /^\s*50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(text)
  const p99 = /^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(text)
  if (!total || !p50 || !p99) throw new Error(`unexpected wrk output: ${text.trim()}`)
  const requests = Number(total[1])
  const seconds = wrkMs(total[2], total[3]) / 1000
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const errors = socketErrors ? socketErrors.slice(1).reduce((sum, count) => sum + Number(count), 0) : 0
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0)
  return {
    requests,
    seconds,
    reqPerSec: requests / seconds,
    latencyMs: { p50: wrkMs(p50[1], p50[2]), p99: wrkMs(p99[1], p99[2]) },
    errors,
    non2xx,
  }
}

/** Bodies above this go to the undici loop in the in-process generator. */
const AUTOCANNON_MAX_BODY_BYTES = 4 * 1024

export const inProcessGenerator: LoadGenerator = {
  name: `autocannon (bodies up to ${AUTOCANNON_MAX_BODY_BYTES / 1024} KiB), undici closed loop (larger)`,
  run(spec) {
    return (spec.bodyBytes ?? 0) > AUTOCANNON_MAX_BODY_BYTES ? undiciLoop(spec) : autocannonRun(spec)
  },
}

async function autocannonRun(spec: LoadSpec): Promise<LoadResult> {
  const cycle = spec.headerCycle
  const series = spec.pathSeries
  let sent = 0
  const instance = autocannon({
    url: spec.url,
    connections: spec.connections,
    duration: spec.durationSeconds,
    timeout: REQUEST_TIMEOUT_SECONDS,
    // Each connection sends these in turn, built once; a series' path is built for every send.
    requests: series
      ? [{ setupRequest: (request) => ({ ...request, path: seriesPath(series, sent++) }) }]
      : cycle?.values.length
        ? cycle.values.map((value) => ({ headers: { [cycle.name]: value } }))
        : undefined,
  })
  const latencies: number[] = []
  instance.on('response', (_client, status, _bytes, ms) => {
    if (status < 400) latencies.push(ms)
  })
  const result = await instance
  const sorted = Float64Array.from(latencies).sort()
  return {
    requests: latencies.length,
    seconds: result.duration,
    reqPerSec: latencies.length / result.duration,
    latencyMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) },
    errors: result.errors,
    non2xx: result.non2xx,
  }
}

/** `connections` loops, each sending its next GET as soon as the previous body has been read. */
async function undiciLoop(spec: LoadSpec): Promise<LoadResult> {
  const url = new URL(spec.url)
  const pool = new Pool(url.origin, { connections: spec.connections, pipelining: 1 })
  const latencies: number[] = []
  let errors = 0
  let non2xx = 0
  const cycle = spec.headerCycle
  const series = spec.pathSeries
  let sentCount = 0
  const headersOf = (): Record<string, string> | undefined =>
    cycle?.values.length ? { [cycle.name]: cycle.values[sentCount++ % cycle.values.length] as string } : undefined
  let seriesCount = 0
  const pathOf = () => (series ? seriesPath(series, seriesCount++) : url.pathname)
  const started = performance.now()
  const deadline = started + spec.durationSeconds * 1000
  const loop = async () => {
    while (performance.now() < deadline) {
      const sent = performance.now()
      try {
        const { statusCode, body } = await pool.request({ path: pathOf(), method: 'GET', headers: headersOf() })
        for await (const _chunk of body) {
          // Read and drop: only the time to the last byte matters.
        }
        if (statusCode < 400) latencies.push(performance.now() - sent)
        else non2xx++
      } catch {
        errors++
      }
    }
  }
  await Promise.all(Array.from({ length: spec.connections }, loop))
  const seconds = (performance.now() - started) / 1000
  await pool.close()
  const sorted = Float64Array.from(latencies).sort()
  return {
    requests: latencies.length,
    seconds,
    reqPerSec: latencies.length / seconds,
    latencyMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) },
    errors,
    non2xx,
  }
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)] as number
}

/** Exactly `amount` requests (autocannon; wrk cannot stop at a count). */
export async function fixedRequests(
  url: string,
  amount: number,
  connections: number,
): Promise<{ requests: number; failed: number }> {
  const result = await autocannon({ url, amount, connections, timeout: REQUEST_TIMEOUT_SECONDS })
  return { requests: result.requests.total, failed: result.errors + result.non2xx }
}
