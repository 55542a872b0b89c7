// The host-prefixed routes' cost beside the short route's, on one proxy. The issue's target: "A
// host-prefixed request costs at most 5 % more CPU than /media/:id (the allowlist lookup and the
// extra TLS connection pool are per host, not per request)". Both routes go over TLS, as they do
// in production: a throwaway CA (src/emulator/throwaway-ca.ts) signs one certificate for
// api-us.nexmo.com and api-eu.nexmo.com, a TLS origin serves the media files with it, and a
// proxy started for this (node dist/main.js, pinned as the other) runs with
// UPSTREAM_BASE_URL=https://api-us.nexmo.com, UPSTREAM_CONNECT_TO=<the origin> and
// NODE_EXTRA_CA_CERTS=<the CA>, so that /media/<id> reaches "api-us.nexmo.com" and
// /api-eu.nexmo.com/v3/media/<id> reaches "api-eu.nexmo.com" (SNI and certificate checked for
// each name), both at the same origin. Rounds alternate which route goes first; the verdict is
// the median of the per-round ratios of the proxy's CPU per request. Everything started here,
// and the certificates, is gone when it returns.
import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { makeThrowawayCa } from '../src/emulator/throwaway-ca.js'
import type { LoadGenerator } from './load.js'
import { type BodySize, type OriginKind, type RunningOrigin, startTlsOrigin } from './origin.js'
import { type Child, cpuSeconds, type ProcessGroup } from './processes.js'
import { type RunningProxy, startProxy } from './proxy.js'
import {
  fmt,
  HOST_ROUTES,
  type HostRoute,
  type HostRouteCell,
  type HostRoutesSummary,
  summariseHostRoutes,
} from './report.js'

/** UPSTREAM_BASE_URL's host: where /media/<id> goes. */
export const BASE_HOST = 'api-us.nexmo.com'
const SETTLE_MS = 100
/** Seconds the host-routes setup takes besides its load runs: the CA (two RSA keys), origin, proxy, checks. */
export const HOST_ROUTES_SETUP_SECONDS = 2

export interface HostRoutesOptions {
  group: ProcessGroup
  dir: string
  mediaRoot: string
  keyPath: string
  originKind: OriginKind
  load: LoadGenerator
  body: BodySize
  rounds: number
  seconds: number
  warmupSeconds: number
  log: (message: string) => void
}

/** The host a route names in its path, or BASE_HOST for the short route. */
function upstreamHostOf(route: HostRoute): string {
  const first = route.split('/')[1] ?? ''
  return first === 'media' ? BASE_HOST : first
}

export async function measureHostRoutes(options: HostRoutesOptions): Promise<HostRoutesSummary> {
  const { group, dir, body, log } = options
  const started = performance.now()
  const tlsDir = join(dir, 'host-routes-tls')
  mkdirSync(tlsDir, { mode: 0o700 })
  let origin: (RunningOrigin & { child: Child }) | undefined
  let proxy: RunningProxy | undefined
  try {
    const hosts = [...new Set(HOST_ROUTES.map(upstreamHostOf))]
    const ca = makeThrowawayCa(tlsDir, hosts, { days: 1 })
    origin = await startTlsOrigin(group, { kind: options.originKind, dir, root: options.mediaRoot, tls: ca })
    proxy = await startProxy(group, {
      name: 'proxy-host-routes',
      dir,
      upstreamUrl: `https://${BASE_HOST}`,
      keyPath: options.keyPath,
      env: { UPSTREAM_CONNECT_TO: `127.0.0.1:${origin.port}`, NODE_EXTRA_CA_CERTS: ca.caPath },
    })
    log(
      `host routes: a proxy (pid ${proxy.pid}) with UPSTREAM_BASE_URL=https://${BASE_HOST}, ` +
        `UPSTREAM_CONNECT_TO=127.0.0.1:${origin.port} (${origin.description}), NODE_EXTRA_CA_CERTS=<throwaway CA>`,
    )
    const { mediaUrl } = proxy
    const urls = Object.fromEntries(
      HOST_ROUTES.map((route) => [route, `${mediaUrl}${route.replace(':id', body.id)}`]),
    ) as Record<HostRoute, string>
    const expected = readFileSync(join(options.mediaRoot, 'v3', 'media', body.id))
    for (const route of HOST_ROUTES) {
      const response = await fetch(urls[route])
      const got = Buffer.from(await response.arrayBuffer())
      if (response.status !== 200 || !got.equals(expected)) {
        throw new Error(`host routes: ${route}: status ${response.status}, ${got.length} bytes: not the media`)
      }
    }
    const reached = await upstreamResponses(proxy.adminUrl)
    const missing = hosts.filter((host) => !((reached[host] ?? 0) >= 1))
    if (missing.length > 0) {
      throw new Error(`host routes: no upstream response from ${missing.join(', ')} (${JSON.stringify(reached)})`)
    }

    const spec = (route: HostRoute, durationSeconds: number) => ({
      url: urls[route],
      connections: body.connections,
      durationSeconds,
      bodyBytes: body.bytes,
    })
    log(`host routes: warm-up ${options.warmupSeconds} s per route, then ${options.rounds} interleaved round(s)`)
    for (const route of HOST_ROUTES) await options.load.run(spec(route, options.warmupSeconds))
    const cells: HostRouteCell[] = []
    const pids = [proxy.pid]
    for (let round = 1; round <= options.rounds; round++) {
      // Alternate which route goes first, so that neither always follows the other.
      const order = round % 2 === 1 ? HOST_ROUTES : [...HOST_ROUTES].reverse()
      for (const route of order) {
        const proxyBefore = cpuSeconds(pids)
        const originBefore = cpuSeconds(origin.pids)
        const load = await options.load.run(spec(route, options.seconds))
        const cell: HostRouteCell = {
          round,
          route,
          load,
          proxyCpuSeconds: cpuSeconds(pids) - proxyBefore,
          originCpuSeconds: cpuSeconds(origin.pids) - originBefore,
        }
        cells.push(cell)
        log(
          `host routes round ${round}/${options.rounds} ${route.padEnd(31)} ${fmt(load.reqPerSec).padStart(7)} req/s  ` +
            `${fmt((cell.proxyCpuSeconds * 1e6) / Math.max(1, load.requests), 1).padStart(8)} us CPU/req`,
        )
        await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))
      }
    }
    log(`host routes: ${fmt((performance.now() - started) / 1000, 1)} s in all`)
    return summariseHostRoutes(cells, {
      origin: origin.description,
      bodyLabel: body.label,
      connections: body.connections,
      rounds: options.rounds,
      seconds: options.seconds,
      upstreamResponses: await upstreamResponses(proxy.adminUrl),
    })
  } finally {
    if (proxy) await group.stop(proxy.child)
    if (origin) await group.stop(origin.child)
    rmSync(tlsDir, { recursive: true, force: true })
  }
}

/** Upstream responses by host so far: media_proxy_upstream_latency_seconds_count, summed over statuses. */
async function upstreamResponses(adminUrl: string): Promise<Record<string, number>> {
  const response = await fetch(`${adminUrl}/metrics`)
  if (!response.ok) throw new Error(`GET ${adminUrl}/metrics answered ${response.status}`)
  const byHost: Record<string, number> = {}
  for (const line of (await response.text()).split('\n')) {
    if (!line.startsWith('media_proxy_upstream_latency_seconds_count{')) continue
    const host = /[{,]host="([^"]*)"/.exec(line)?.[1]
    if (host === undefined) continue
    byHost[host] = (byHost[host] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return byHost
}
