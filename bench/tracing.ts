// Tracing's cost, issue 17's targets: "Tracing off: no measurable difference from today (<= 3 %
// CPU per 1 KiB request). Tracing on, sampling everything: <= 25 % more CPU per 1 KiB request."
// Three proxies (node dist/main.js, pinned as the other) in front of the benchmark's origin:
// "before tracing", the proxy as it was at BEFORE_TRACING_COMMIT, the last commit before tracing
// (and before the disk cache and signed links, off in the others), checked out in a git worktree
// (bench/worktrees.ts) and built there against this checkout's node_modules (that commit's
// dependencies are a subset of today's, at the same versions: checked, and warned about if not);
// "tracing off", today's build as the benchmark runs it elsewhere; and "tracing on", the same with
// OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local OTLP/HTTP sink (bench/otlp-sink.ts, on the load
// core) and the default exporter protocol and sampler (http/protobuf, parentbased_always_on).
// Every request to every proxy carries a sampled W3C traceparent, cycled over a few (wrk's Lua
// script on all three, so that the load generator costs the same), so tracing on records and
// exports every request: a server span and an upstream span each, counted at the sink. The 1 KiB
// load runs against each in interleaved rounds, each round's order rotated; the verdicts are the
// medians of the per-round ratios of CPU per request. Everything started here, and the worktree,
// is gone when it returns.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { LoadGenerator, LoadSpec } from './load.js'
import type { BodySize } from './origin.js'
import { freePort, HOST, waitForPort } from './ports.js'
import { type Child, cpuSeconds, LOAD_CORE, type ProcessGroup, REPO_ROOT } from './processes.js'
import { buildProxy, type RunningProxy, readProxyMetrics, startProxy } from './proxy.js'
import {
  fmt,
  summariseTracing,
  TRACING_VARIANTS,
  type TracingCell,
  type TracingExport,
  type TracingSummary,
  type TracingVariant,
} from './report.js'
import { dependencyMismatches, type Worktrees } from './worktrees.js'

/** The last commit before tracing (and the disk cache and signed links) came in. */
export const BEFORE_TRACING_COMMIT = 'ea49125'
/** The exporter's default, which the proxy with tracing on runs with. */
const OTLP_PROTOCOL = 'http/protobuf'
/** Distinct traceparents the requests cycle over. */
const TRACEPARENTS = 64
const SETTLE_MS = 100
const OTLP_SINK = fileURLToPath(new URL('./otlp-sink.ts', import.meta.url))
/**
 * Seconds the tracing phase takes besides its load runs: the worktree and its build, the sink,
 * three proxies and their checks, and the last spans flushed at the end.
 */
export const TRACING_SETUP_SECONDS = 8

export interface TracingOptions {
  group: ProcessGroup
  worktrees: Worktrees
  dir: string
  mediaRoot: string
  upstreamUrl: string
  originDescription: string
  keyPath: string
  load: LoadGenerator
  body: BodySize
  rounds: number
  seconds: number
  warmupSeconds: number
  log: (message: string) => void
}

interface SinkStats {
  exports: number
  bytes: number
  spans: number
  unreadable: number
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export async function measureTracing(options: TracingOptions): Promise<TracingSummary> {
  const { group, dir, body, log } = options
  const started = performance.now()
  const worktree = join(dir, 'before-tracing')
  const running: Child[] = []
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).trim()
    options.worktrees.add(BEFORE_TRACING_COMMIT, worktree)
    const before = {
      commit: git('rev-parse', '--short', BEFORE_TRACING_COMMIT),
      subject: git('log', '-1', '--format=%s', BEFORE_TRACING_COMMIT),
      dependencyMismatches: dependencyMismatches(worktree),
    }
    if (before.dependencyMismatches.length > 0) {
      log(
        `warning: tracing: ${before.commit}'s locked dependencies differ from those installed here, which its ` +
          `build runs with: ${before.dependencyMismatches.join(', ')}`,
      )
    }
    log(`tracing: building ${before.commit} in a worktree (${worktree}), node_modules linked to this checkout's`)
    buildProxy(worktree)

    const sinkPort = await freePort()
    const sink = group.spawn('otlp-sink', process.execPath, ['--import', 'tsx', OTLP_SINK, String(sinkPort)], {
      core: LOAD_CORE,
      stderrFile: join(dir, 'otlp-sink-stderr.log'),
    })
    running.push(sink)
    await waitForPort(sink, sinkPort)
    const sinkUrl = `http://${HOST}:${sinkPort}`
    const sinkStats = async (): Promise<SinkStats> => (await fetch(`${sinkUrl}/stats`)).json() as Promise<SinkStats>

    const start = async (name: string, extra: Partial<Parameters<typeof startProxy>[1]>) => {
      const proxy = await startProxy(group, {
        name,
        dir,
        upstreamUrl: options.upstreamUrl,
        keyPath: options.keyPath,
        ...extra,
      })
      running.push(proxy.child)
      return proxy
    }
    const proxies: Record<TracingVariant, RunningProxy> = {
      'before tracing': await start('proxy-before-tracing', { root: worktree }),
      'tracing off': await start('proxy-tracing-off', {}),
      'tracing on': await start('proxy-tracing-on', {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: sinkUrl, OTEL_EXPORTER_OTLP_PROTOCOL: OTLP_PROTOCOL },
      }),
    }
    log(
      `tracing: ${TRACING_VARIANTS.map((variant) => `${variant} (pid ${proxies[variant].pid})`).join(', ')} in ` +
        `front of ${options.originDescription}; tracing on exports to an OTLP sink at ${sinkUrl}`,
    )

    const traceparents = Array.from(
      { length: TRACEPARENTS },
      () => `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`,
    )
    const expected = readFileSync(join(options.mediaRoot, 'v3', 'media', body.id))
    for (const variant of TRACING_VARIANTS) {
      const response = await fetch(`${proxies[variant].mediaUrl}/media/${body.id}`, {
        headers: { traceparent: traceparents[0] as string },
      })
      const got = Buffer.from(await response.arrayBuffer())
      if (response.status !== 200 || !got.equals(expected)) {
        throw new Error(`tracing: ${variant}: status ${response.status}, ${got.length} bytes: not the media`)
      }
    }

    const spec = (variant: TracingVariant, durationSeconds: number): LoadSpec => ({
      url: `${proxies[variant].mediaUrl}/media/${body.id}`,
      connections: body.connections,
      durationSeconds,
      bodyBytes: body.bytes,
      headerCycle: { name: 'traceparent', values: traceparents },
    })
    log(
      `tracing: ${body.label} load with sampled traceparents; warm-up ${options.warmupSeconds} s each, then ` +
        `${options.rounds} interleaved round(s) of ${options.seconds} s`,
    )
    for (const variant of TRACING_VARIANTS) {
      await options.load.run(spec(variant, options.warmupSeconds))
      await sleep(SETTLE_MS)
    }
    const cells: TracingCell[] = []
    for (let round = 1; round <= options.rounds; round++) {
      // Rotate the order each round, so that no proxy always runs right after another.
      const order = TRACING_VARIANTS.map(
        (_, i) => TRACING_VARIANTS[(i + round - 1) % TRACING_VARIANTS.length] as TracingVariant,
      )
      for (const variant of order) {
        const pid = proxies[variant].pid
        const cpuBefore = cpuSeconds([pid])
        const load = await options.load.run(spec(variant, options.seconds))
        const cell: TracingCell = { round, variant, load, proxyCpuSeconds: cpuSeconds([pid]) - cpuBefore }
        cells.push(cell)
        log(
          `tracing round ${round}/${options.rounds} ${variant.padEnd(14)} ` +
            `${fmt(load.reqPerSec).padStart(7)} req/s  ` +
            `${fmt((cell.proxyCpuSeconds * 1e6) / Math.max(1, load.requests), 1).padStart(8)} us CPU/req`,
        )
        await sleep(SETTLE_MS)
      }
    }

    const traced = proxies['tracing on']
    const spansDuringLoad = (await sinkStats()).spans
    const { requests } = await readProxyMetrics(traced.adminUrl)
    // SIGTERM: the proxy exports what its batch processor still holds before it exits.
    await group.stop(traced.child)
    const received = await sinkStats()
    const exported: TracingExport = {
      protocol: OTLP_PROTOCOL,
      requests,
      spansDuringLoad,
      spans: received.spans,
      exports: received.exports,
      bytes: received.bytes,
      unreadable: received.unreadable,
    }
    log(
      `tracing: the sink received ${fmt(received.spans)} spans in ${fmt(received.exports)} exports for ` +
        `${fmt(requests)} media requests; ${fmt((performance.now() - started) / 1000, 1)} s in all`,
    )
    return summariseTracing(cells, {
      before,
      origin: options.originDescription,
      bodyLabel: body.label,
      connections: body.connections,
      rounds: options.rounds,
      seconds: options.seconds,
      export: exported,
    })
  } finally {
    for (const child of running.reverse()) await group.stop(child)
    options.worktrees.remove(worktree)
  }
}
