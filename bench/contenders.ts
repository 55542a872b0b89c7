// The relay decision, kept measured: the proxy relays undici's dispatch() callbacks itself
// instead of going through @fastify/http-proxy, for CPU. Two contenders run beside it in every
// throughput round, each its own Node process pinned to the server core like the proxy, with
// the image's allocator settings: the design's choice (Fastify + @fastify/http-proxy, registered
// as the first version was) and undici's own stream() under node:http. `--no-contenders` skips them.
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, HOST, waitForPort } from './ports.js'
import { type ProcessGroup, SERVER_CORE } from './processes.js'
import { imageMallocEnv } from './proxy.js'

export const CONTENDERS = ['http-proxy', 'undici-stream'] as const
export type ContenderName = (typeof CONTENDERS)[number]

export const CONTENDER_DESCRIPTIONS: Record<ContenderName, string> = {
  'http-proxy':
    'Fastify + @fastify/http-proxy 11 (reply-from, its undici 7 Agent), registered as the first version was ' +
    '(bench/contender-http-proxy.ts)',
  'undici-stream': 'node:http + undici 8 Agent.stream() into the ServerResponse (bench/contender-undici-stream.ts)',
}

export interface RunningContender {
  readonly name: ContenderName
  readonly url: string
  readonly pid: number
}

export async function startContender(
  group: ProcessGroup,
  options: { name: ContenderName; dir: string; upstreamUrl: string; token: string },
): Promise<RunningContender> {
  const script = fileURLToPath(new URL(`./contender-${options.name}.ts`, import.meta.url))
  const port = await freePort()
  const child = group.spawn(
    options.name,
    process.execPath,
    ['--import', 'tsx', script, options.upstreamUrl, String(port)],
    {
      core: SERVER_CORE,
      stderrFile: join(options.dir, `${options.name}-stderr.log`),
      env: {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'production',
        CONTENDER_TOKEN: options.token,
        ...imageMallocEnv(),
      },
    },
  )
  await waitForPort(child, port)
  return { name: options.name, url: `http://${HOST}:${port}`, pid: child.pid }
}
