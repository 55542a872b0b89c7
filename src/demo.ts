// `npm run demo`: a throwaway key pair, the Vonage emulator serving two sample images and a
// Voice recording, and the proxy in front of it, then curl lines that download them. No Vonage
// account needed.
//
// The emulator speaks TLS as Vonage's hosts do: a throwaway CA (made with openssl in the key
// folder) signs one certificate naming every host of the default UPSTREAM_HOSTS, the proxy
// trusts that CA in-process (certificates are still verified), and UPSTREAM_CONNECT_TO sends
// every HTTPS connection to the emulator. So the proxy runs as in production: upstream
// https://api-us.nexmo.com, and the host-prefixed routes (/api-eu.nexmo.com/v3/media/<id>)
// reach "api-eu.nexmo.com". Without openssl the emulator falls back to plain http, and only
// the short routes (/media, /v1/files) are shown.
//
// The demo sets its own settings, so that the curl line it prints works whatever the shell
// exports: from the environment it takes only where to listen and how much to log (HONOURED),
// and it names, in one line on stderr, any other setting it found there and ignored.
//
// However it stops, it closes both servers and deletes the throwaway keys: on Ctrl-C, SIGTERM
// or SIGHUP, on a failed start-up (a port taken, say), on an exception, and when whoever
// started it goes away. That last case is the one `npm run demo` needs: npm runs the script
// as `sh -c 'tsx src/demo.ts'`, tsx runs this file in a child node, and npm passes a SIGINT or
// SIGTERM sent to npm alone on to `sh` only. On SIGTERM (and on SIGHUP, which npm does not
// pass on, or SIGKILL) sh dies, npm exits, and tsx and this process used to live on as
// orphans, holding both ports and the key folder. So this process watches its parent and,
// while that parent is one of the launchers in between (tsx, `sh -c`, npm, npx, pnpm, yarn),
// that launcher's parent too: when one of them is re-parented or gone, the chain above it is
// broken and the demo stops. (No signal reaches us when that happens, and `process.ppid` alone
// would not see it: our parent, tsx, outlives sh. There is no IPC channel or stdin pipe from
// npm to watch either: npm runs scripts with inherited stdio.) What this cannot mend: a SIGINT
// sent to npm alone goes to `sh` only, and sh (dash, like POSIX shells running a command)
// holds it until its child ends, so nothing stops and nothing is orphaned; Ctrl-C reaches the
// whole process group and works. Only an `exec` in the npm script would pass it on.
import { execFileSync } from 'node:child_process'
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { crc32, deflateSync } from 'node:zlib'
import { buildApp, type ProxyApp } from './app.js'
import { ConfigError, EX_CONFIG, loadConfig } from './config.js'
import { VonageEmulator } from './emulator/emulator.js'
import { makeThrowawayCa, type ThrowawayCa } from './emulator/throwaway-ca.js'

const SAMPLE_ID = '1b456509-974c-458b-aafa-45fc48a4d976'
/** A second image, shown as arriving on api-eu.nexmo.com: the host-prefixed route. */
const EU_SAMPLE_ID = '8f7e6d5c-4b3a-4c2d-9e1f-0a1b2c3d4e5f'
/** A Voice recording, at /v1/files. */
const RECORDING_ID = '6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e'
const RECORDING_SECONDS = 3
/** Where the proxy thinks it downloads from; UPSTREAM_CONNECT_TO sends it to the emulator. */
const VONAGE_BASE_URL = 'https://api-us.nexmo.com'
/** How long the emulator's throwaway certificates are valid: a demo left running for days. */
const CERTIFICATE_DAYS = 7
/** The only settings taken from the environment: none of them changes what the curl line needs. */
const HONOURED = ['HOST', 'ADMIN_HOST', 'PORT', 'ADMIN_PORT', 'LOG_LEVEL']
const WATCH_INTERVAL_MS = 500
/** A stop that takes longer than this (a hung close) ends the process anyway. */
const STOP_DEADLINE_MS = 5_000

const dir = mkdtempSync(join(tmpdir(), 'vonage-media-proxy-demo-'))
// Every way out of the process (process.exit, the end of the event loop, an uncaught
// exception) passes through 'exit'; signals are turned into process.exit below.
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))

let emulator: VonageEmulator | undefined
let app: ProxyApp | undefined
let stopping = false
/** Closes whatever has started, then exits; a second request (another Ctrl-C) exits at once. */
function stop(exitCode: number): void {
  if (stopping) process.exit(1)
  stopping = true
  clearInterval(watcher)
  setTimeout(() => process.exit(1), STOP_DEADLINE_MS).unref()
  void Promise.allSettled([app?.close(1_000), emulator?.close()]).finally(() => process.exit(exitCode))
}
const watcher = watchLaunchers((gone) => {
  process.stderr.write(`demo: ${gone} went away; stopping and deleting the throwaway keys\n`)
  stop(0)
})
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => stop(0))

try {
  await start()
} catch (err) {
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`demo: ${err instanceof ConfigError ? 'config error' : 'could not start'}: ${message}\n`)
  stop(err instanceof ConfigError ? EX_CONFIG : 1)
}

async function start(): Promise<void> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const keyPath = join(dir, 'private.key')
  writeFileSync(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  const own = { VONAGE_APPLICATION_ID: randomUUID(), VONAGE_PRIVATE_KEY_PATH: keyPath }

  // The settings once without the emulator's address: a bad HOST or PORT stops the demo before
  // openssl runs, and the host list the certificate must name is the proxy's own default.
  const hosts = loadConfig({ env: demoEnv({ ...own, UPSTREAM_BASE_URL: VONAGE_BASE_URL }).env }).upstreamHosts
  const tls = throwawayTls([...new Set([...hosts, new URL(VONAGE_BASE_URL).hostname])])

  emulator = new VonageEmulator({
    publicKey,
    applicationId: own.VONAGE_APPLICATION_ID,
    port: Number(process.env.EMULATOR_PORT ?? 0),
    ...('ca' in tls ? { tls: { cert: tls.ca.certPem, key: tls.ca.keyPem } } : {}),
  })
  const addImage = (id: string, blue: number) => {
    const path = join(dir, `${id}.png`)
    writeFileSync(path, samplePng(160, 90, blue))
    emulator?.media.addFile(id, path)
  }
  addImage(SAMPLE_ID, 160)
  addImage(EU_SAMPLE_ID, 60)
  emulator.files.addWav(RECORDING_ID, RECORDING_SECONDS)
  const emulatorUrl = await emulator.listen()

  const { env, ignored } = demoEnv(
    'ca' in tls
      ? { ...own, UPSTREAM_BASE_URL: VONAGE_BASE_URL, UPSTREAM_CONNECT_TO: `127.0.0.1:${new URL(emulatorUrl).port}` }
      : { ...own, UPSTREAM_BASE_URL: emulatorUrl },
  )
  const config = loadConfig({ env })
  if (ignored.size > 0) {
    process.stderr.write(
      `demo: ignoring ${[...ignored].join(', ')} from the environment: the demo sets its own settings ` +
        `and takes only ${HONOURED.join(', ')}\n`,
    )
  }
  app = await buildApp(config, {
    onShutdownRequest: () => stop(0),
    ...('ca' in tls ? { upstreamCa: tls.ca.caPem } : {}),
  })
  const { mediaUrl, adminUrl } = await app.listen()

  const curl = (file: string, url: string) =>
    `  curl -fsS -o ${file} -w '%{http_code} %{content_type} %{size_download} bytes\\n' ${url}`
  const euWebhookUrl = `https://api-eu.nexmo.com/v3/media/${EU_SAMPLE_ID}`
  const emulatorLines =
    'ca' in tls
      ? [
          `Vonage Media API emulator: ${emulatorUrl} (application ${own.VONAGE_APPLICATION_ID}, key in ${dir})`,
          `  speaks TLS for all ${hosts.size} Vonage hosts of UPSTREAM_HOSTS with a throwaway CA the proxy trusts ` +
            `(${tls.ca.caPath}); UPSTREAM_CONNECT_TO sends every upstream connection here`,
        ]
      : [
          `Vonage Media API emulator: ${emulatorUrl} (application ${own.VONAGE_APPLICATION_ID}, key in ${dir})`,
          `  over plain http, without TLS: ${tls.reason}; so only the short routes are shown`,
        ]
  const hostRoute =
    'ca' in tls
      ? [
          `The webhook said ${euWebhookUrl}; through the proxy:`,
          '',
          curl('sample-eu.png', toProxyUrl(euWebhookUrl, mediaUrl)),
          '',
          `Any Vonage file URL works the same way: replace "https://" with "${mediaUrl}/".`,
        ]
      : []
  process.stdout.write(
    [
      '',
      ...emulatorLines,
      `vonage-media-proxy:        ${mediaUrl} (admin: ${adminUrl}/metrics, /readyz)`,
      '',
      'Download the sample image through the proxy, with no credentials:',
      '',
      curl('sample.png', `${mediaUrl}/media/${SAMPLE_ID}`),
      '',
      `A Voice recording (the record webhook said https://api-us.nexmo.com/v1/files/${RECORDING_ID}):`,
      '',
      curl('recording.wav', `${mediaUrl}/v1/files/${RECORDING_ID}`),
      '',
      ...hostRoute,
      'Press Ctrl-C to stop both and delete the throwaway keys.',
      '',
    ].join('\n'),
  )
}

/** The proxy URL for a Vonage file URL: what the README tells every client to do. */
function toProxyUrl(vonageUrl: string, mediaUrl: string): string {
  return vonageUrl.replace(/^https:\/\//, `${mediaUrl}/`)
}

/**
 * A certificate for the emulator naming every one of `hosts`, from a throwaway CA in the key
 * folder (so deleted with it); or, when that cannot be made (no openssl), the reason, in a few words.
 */
function throwawayTls(hosts: string[]): { ca: ThrowawayCa } | { reason: string } {
  try {
    return { ca: makeThrowawayCa(dir, hosts, { days: CERTIFICATE_DAYS }) }
  } catch (err) {
    return { reason: err instanceof Error ? err.message : String(err) }
  }
}

/**
 * The environment loadConfig sees: the demo's own settings, the HONOURED ones from the real
 * environment, and nothing else. Every other variable loadConfig asks for (INBOUND_API_KEYS,
 * VONAGE_*, UPSTREAM_*, CONFIG_FILE, a setting added later) reads as unset, and is recorded in
 * `ignored` when the real environment has it, as are the demo's own settings the environment
 * also sets. Asking loadConfig, rather than keeping a list here, keeps this right as settings
 * are added.
 */
function demoEnv(own: Record<string, string>): { env: NodeJS.ProcessEnv; ignored: Set<string> } {
  const target: NodeJS.ProcessEnv = { ...own }
  for (const name of HONOURED) if (process.env[name] !== undefined) target[name] = process.env[name]
  const ignored = new Set(Object.keys(own).filter((name) => process.env[name]?.trim()))
  const env = new Proxy(target, {
    get(values, name) {
      if (typeof name === 'string' && !Object.hasOwn(values, name) && process.env[name]?.trim()) ignored.add(name)
      return Reflect.get(values, name)
    },
  })
  return { env, ignored }
}

interface ProcessInfo {
  ppid: number
  args: string[]
}

/**
 * Polls this process's parent and, while the parent is a launcher (see the top of the file),
 * the launcher's parent, and so on; calls `onGone` once, naming the process that went away,
 * when one of them has a new parent (its own died) or is gone. The timer does not keep the
 * process alive.
 */
function watchLaunchers(onGone: (gone: string) => void): NodeJS.Timeout {
  const watched: { pid: number; ppid: number }[] = [{ pid: process.pid, ppid: process.ppid }]
  const names = new Map<number, string>()
  for (let pid = process.ppid; pid > 1 && watched.length < 8; ) {
    const info = readProcesses([pid]).get(pid)
    if (!info) break
    names.set(pid, `${info.args.join(' ')} (pid ${pid})`)
    if (!isLauncher(info.args)) break
    watched.push({ pid, ppid: info.ppid })
    pid = info.ppid
  }
  const timer = setInterval(() => {
    const now = readProcesses(watched.slice(1).map(({ pid }) => pid))
    for (const { pid, ppid } of watched) {
      const current = pid === process.pid ? process.ppid : now.get(pid)?.ppid
      if (current === ppid) continue
      clearInterval(timer)
      onGone(current === undefined ? (names.get(pid) ?? `pid ${pid}`) : (names.get(ppid) ?? `the parent (pid ${ppid})`))
      return
    }
  }, WATCH_INTERVAL_MS)
  timer.unref()
  return timer
}

/** npm (its process title is "npm run demo"), npx, pnpm, yarn, `sh -c '…'`, tsx's CLI. */
function isLauncher(args: string[]): boolean {
  const [first = '', second = ''] = args.map((arg) => basename(arg))
  if (/^(npm|npx|pnpm|yarn)( |$)/.test(first)) return true
  if (/^(sh|dash|bash|zsh|ash|ksh)$/.test(first) && args[1] === '-c') return true
  return (
    [first, second].some((name) => /^(tsx|npm-cli\.js|npx-cli\.js|pnpm\.c?js|yarn\.c?js)$/.test(name)) ||
    (args[1] ?? '').replaceAll('\\', '/').endsWith('/tsx/dist/cli.mjs')
  )
}

/**
 * Parent and command line of each of `pids` that still exists: from /proc on Linux, from
 * `ps` elsewhere (macOS, the BSDs); nothing on Windows, where the demo watches only its parent.
 */
function readProcesses(pids: number[]): Map<number, ProcessInfo> {
  const found = new Map<number, ProcessInfo>()
  if (pids.length === 0 || process.platform === 'win32') return found
  if (existsSync('/proc/self/stat')) {
    for (const pid of pids) {
      try {
        // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)
        found.set(pid, { ppid, args })
      } catch {
        // gone
      }
    }
    return found
  }
  let out = ''
  try {
    out = execFileSync('ps', ['-o', 'pid=,ppid=,command=', '-p', pids.join(',')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    })
  } catch {
    // ps exits 1 when none of the pids exists
  }
  for (const line of out.split('\n')) {
    const [pid, ppid, ...args] = line.trim().split(/\s+/)
    if (pid && ppid) found.set(Number(pid), { ppid: Number(ppid), args })
  }
  return found
}

/** A small gradient PNG (8-bit RGB), so the demo downloads a real image. */
function samplePng(width: number, height: number, blue: number): Buffer {
  const rows: Buffer[] = []
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3)
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round((255 * x) / width)
      row[2 + x * 3] = Math.round((255 * y) / height)
      row[3 + x * 3] = blue
    }
    rows.push(row)
  }
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4)
    length.writeUInt32BE(data.length)
    const typed = Buffer.concat([Buffer.from(type, 'ascii'), data])
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(typed))
    return Buffer.concat([length, typed, crc])
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header.set([8, 2, 0, 0, 0], 8)
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ])
}
