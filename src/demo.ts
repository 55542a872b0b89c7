// `npm run demo`: a throwaway key pair, the Vonage emulator serving two sample images, a Voice
// recording and an HTML "attachment", the proxy in front of it, then curl lines that download
// them and the address of an agent desktop page that shows them in a browser. No Vonage
// account needed.
//
// The page (on 127.0.0.1, port PAGE_PORT or any free one: it is for a browser on this machine)
// is what an application's own server would render: per request, it asks the proxy's
// POST /links for fresh signed links (the demo turns on LINK_SIGNING_KEYS with a throwaway key,
// and CORS_ALLOWED_ORIGINS with the page's origin), so the browser never holds a key. It
// embeds the images and the recording, offers the HTML file as a link (the proxy sends it as a
// download, under a CSP sandbox: its script, which would call the page's /beacon, never runs),
// and shows one link signed to have expired already.
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
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { crc32, deflateSync } from 'node:zlib'
import { buildApp, type ProxyApp } from './app.js'
import { ConfigError, EX_CONFIG, loadConfig } from './config.js'
import { VonageEmulator } from './emulator/emulator.js'
import { makeThrowawayCa, type ThrowawayCa } from './emulator/throwaway-ca.js'
import { linkUrl, signLink } from './links/signature.js'

const SAMPLE_ID = '1b456509-974c-458b-aafa-45fc48a4d976'
/** A second image, shown as arriving on api-eu.nexmo.com: the host-prefixed route. */
const EU_SAMPLE_ID = '8f7e6d5c-4b3a-4c2d-9e1f-0a1b2c3d4e5f'
/** A Voice recording, at /v1/files. */
const RECORDING_ID = '6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e'
const RECORDING_SECONDS = 3
/** An HTML file a customer sent, whose script would report to the page's /beacon if it ever ran. */
const ATTACHMENT_ID = '2a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d'
const ATTACHMENT_NAME = 'invoice.html'
/** Where the agent desktop page listens: a browser on this machine opens it. */
const DESK_HOST = '127.0.0.1'
/** How long the page's links work; a reload signs fresh ones. */
const DESK_LINK_SECONDS = 600
/** The page's "expired link" ended this long before the page was rendered. */
const EXPIRED_SECONDS_AGO = 60
/** How long the page's server waits for POST /links. */
const LINK_REQUEST_TIMEOUT_MS = 5_000
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
let desk: DeskServer | undefined
let stopping = false
/** Closes whatever has started, then exits; a second request (another Ctrl-C) exits at once. */
function stop(exitCode: number): void {
  if (stopping) process.exit(1)
  stopping = true
  clearInterval(watcher)
  setTimeout(() => process.exit(1), STOP_DEADLINE_MS).unref()
  void Promise.allSettled([app?.close(1_000), emulator?.close(), desk?.close()]).finally(() => process.exit(exitCode))
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
  // The page listens first: its origin is the one CORS_ALLOWED_ORIGINS lists, and the one the
  // attachment's script would report to.
  desk = await listenDesk(Number(process.env.PAGE_PORT ?? 0))
  emulator.media.addBuffer(ATTACHMENT_ID, attachmentHtml(`${desk.origin}/beacon`), {
    contentType: 'text/html; charset=utf-8',
    fileName: ATTACHMENT_NAME,
  })
  const signingKey = randomBytes(32).toString('base64url')
  const links = { LINK_SIGNING_KEYS: signingKey, CORS_ALLOWED_ORIGINS: desk.origin }

  const { env, ignored } = demoEnv(
    'ca' in tls
      ? {
          ...own,
          ...links,
          UPSTREAM_BASE_URL: VONAGE_BASE_URL,
          UPSTREAM_CONNECT_TO: `127.0.0.1:${new URL(emulatorUrl).port}`,
        }
      : { ...own, ...links, UPSTREAM_BASE_URL: emulatorUrl },
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
  const euWebhookUrl = `https://api-eu.nexmo.com/v3/media/${EU_SAMPLE_ID}`
  desk.show({
    mediaUrl,
    signingKey,
    euImage: 'ca' in tls ? { url: euWebhookUrl } : { path: `/v3/media/${EU_SAMPLE_ID}` },
  })

  const curl = (file: string, url: string) =>
    `  curl -fsS -o ${file} -w '%{http_code} %{content_type} %{size_download} bytes\\n' ${url}`
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
          '',
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
      `Agent desktop, in a browser: ${desk.url} (the images and the recording through signed links, ` +
        'an HTML attachment that only downloads, an expired link)',
      '',
      'Press Ctrl-C to stop all three and delete the throwaway keys.',
      '',
    ].join('\n'),
  )
}

/** The proxy URL for a Vonage file URL: what the README tells every client to do. */
function toProxyUrl(vonageUrl: string, mediaUrl: string): string {
  return vonageUrl.replace(/^https:\/\//, `${mediaUrl}/`)
}

/** What POST /links takes to name a file: a proxy path, or a Vonage URL as a webhook gave it. */
type LinkRequest = { readonly path: string } | { readonly url: string }

/** What the page needs once the proxy listens. */
interface DeskSources {
  /** The media port: where the page's server asks POST /links, and the expired link's base. */
  readonly mediaUrl: string
  /** LINK_SIGNING_KEYS' one key: only for the expired link, which POST /links will not sign. */
  readonly signingKey: string
  /** The second image as its webhook gave it: a Vonage URL over TLS, else a short path. */
  readonly euImage: LinkRequest
}

interface DeskServer {
  readonly origin: string
  readonly url: string
  show(sources: DeskSources): void
  close(): Promise<void>
}

/**
 * The agent desktop's server: GET / renders the page with fresh links (503 until `show`),
 * GET /beacon counts a call from the attachment's script (which should never come).
 */
async function listenDesk(port: number): Promise<DeskServer> {
  let sources: DeskSources | undefined
  let beaconCalls = 0
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, 'Only GET.\n')
    if (path === '/beacon') {
      beaconCalls++
      process.stderr.write("demo: the HTML attachment's script ran in a browser (it called /beacon)\n")
      res.writeHead(204, { 'cache-control': 'no-store' }).end()
      return
    }
    if (path !== '/') return sendText(res, 404, 'Not found.\n')
    if (sources === undefined) return sendText(res, 503, 'The proxy is starting: reload in a moment.\n')
    deskPage(sources, beaconCalls).then(
      ({ html, csp }) => {
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': csp,
          'x-content-type-options': 'nosniff',
          // The links are fresh on every render, and the page's URL is nobody else's business.
          'cache-control': 'no-store',
          'referrer-policy': 'no-referrer',
        })
        res.end(req.method === 'HEAD' ? undefined : html)
      },
      (err: unknown) =>
        sendText(res, 502, `Could not get the page's links: ${err instanceof Error ? err.message : String(err)}\n`),
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`the agent desktop page (PAGE_PORT ${port}): ${err.message}`)))
    server.listen(port, DESK_HOST, resolve)
  })
  const origin = `http://${DESK_HOST}:${(server.address() as AddressInfo).port}`
  return {
    origin,
    url: `${origin}/`,
    show: (given) => {
      sources = given
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(text)
}

/** The page and its CSP: it runs no script, and loads images and audio from the media port only. */
async function deskPage(sources: DeskSources, beaconCalls: number): Promise<{ html: string; csp: string }> {
  const link = (request: LinkRequest) => requestLink(sources.mediaUrl, request)
  const [usImage, euImage, recording, attachment] = await Promise.all([
    link({ path: `/v3/media/${SAMPLE_ID}` }),
    link(sources.euImage),
    link({ path: `/v1/files/${RECORDING_ID}` }),
    link({ path: `/v3/media/${ATTACHMENT_ID}` }),
  ])
  // POST /links signs only links to come: the page's server signs this one itself.
  const expiredPath = `/v3/media/${SAMPLE_ID}`
  const expires = Math.floor(Date.now() / 1000) - EXPIRED_SECONDS_AGO
  const expired = linkUrl(sources.mediaUrl, expiredPath, expires, signLink(sources.signingKey, expiredPath, expires))
  const media = [...new Set([usImage, euImage, recording, expired].map((url) => new URL(url).origin))]
  const csp = [
    "default-src 'none'",
    `img-src ${media.join(' ')}`,
    `media-src ${media.join(' ')}`,
    `style-src '${DESK_STYLE_HASH}'`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ')
  // crossorigin="anonymous": a CORS request, which CORS_ALLOWED_ORIGINS admits for this origin.
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Agent desktop · vonage-media-proxy demo</title>
<style>${DESK_STYLE}</style>
</head>
<body>
<header><h1>Agent desktop</h1><p>Conversation with +44 7700 900123 · WhatsApp and Voice</p></header>
<ol>
<li><p class="from">Customer · photo (api-us.nexmo.com)</p>
<img id="image-us" src="${attr(usImage)}" crossorigin="anonymous" width="160" height="90" alt="the customer's photo"></li>
<li><p class="from">Customer · photo (api-eu.nexmo.com)</p>
<img id="image-eu" src="${attr(euImage)}" crossorigin="anonymous" width="160" height="90" alt="the customer's second photo"></li>
<li><p class="from">Voice · call recording, ${RECORDING_SECONDS} s</p>
<audio id="recording" src="${attr(recording)}" crossorigin="anonymous" controls preload="auto"></audio></li>
<li><p class="from">Customer · attachment (text/html)</p>
<a id="attachment" href="${attr(attachment)}">${ATTACHMENT_NAME}</a>
<p class="note">The proxy sends it as a download, under a CSP sandbox: a browser never runs its script.</p></li>
<li class="expired"><p class="from">expired link: signed to end ${EXPIRED_SECONDS_AGO} s before this page</p>
<img id="expired" src="${attr(expired)}" crossorigin="anonymous" width="160" height="90" alt="expired link"></li>
</ol>
<p id="script-ran" data-count="${beaconCalls}" class="${beaconCalls === 0 ? 'safe' : 'alarm'}">${
    beaconCalls === 0
      ? "The attachment's script has never run."
      : `The attachment's script ran: it called this page's /beacon ${beaconCalls} times.`
  }</p>
<footer>Links signed by this page's server through POST /links, good for ${DESK_LINK_SECONDS / 60} minutes;
the browser holds no key. Reload for fresh ones.</footer>
</body>
</html>
`
  return { html, csp }
}

/** Asks the proxy for a link, as an application's server would (the demo has no client keys). */
async function requestLink(mediaUrl: string, request: LinkRequest): Promise<string> {
  const res = await fetch(`${mediaUrl}/links`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...request, ttlSeconds: DESK_LINK_SECONDS }),
    signal: AbortSignal.timeout(LINK_REQUEST_TIMEOUT_MS),
  })
  const body = (await res.json().catch(() => ({}))) as { url?: unknown; detail?: unknown }
  if (res.status !== 201 || typeof body.url !== 'string') {
    throw new Error(`POST /links answered ${res.status}${typeof body.detail === 'string' ? `: ${body.detail}` : ''}`)
  }
  return body.url
}

/** Text for a double-quoted HTML attribute (a link's query holds `&`). */
function attr(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

const DESK_STYLE = `
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111827}
header{background:#1f2937;color:#fff;padding:12px 24px}
h1{font-size:18px;margin:0}header p{margin:2px 0 0;color:#d1d5db;font-size:13px}
ol{list-style:none;margin:0;padding:16px 24px;display:grid;gap:12px;max-width:640px}
li{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px}
.from{margin:0 0 6px;font-size:12px;color:#6b7280}.note{margin:6px 0 0;font-size:12px;color:#6b7280}
img{display:block;border-radius:4px;background:#e5e7eb}audio{width:100%}
.expired{border:1px dashed #dc2626}.expired .from{color:#dc2626}
#script-ran{margin:0 24px;font-size:13px}.safe{color:#047857}.alarm{color:#dc2626;font-weight:bold}
footer{margin:12px 24px 24px;font-size:12px;color:#6b7280}
`
/** The page's one inline style, allowed by its hash: the CSP allows no other style, and no script. */
const DESK_STYLE_HASH = `sha256-${createHash('sha256').update(DESK_STYLE).digest('base64')}`

/**
 * What a customer might send an agent: a page whose script, opened from the proxy's origin,
 * could act as that origin. Here it only leaves marks that it ran (the title, storage, a call
 * to the page's /beacon).
 */
function attachmentHtml(beaconUrl: string): Buffer {
  const beacon = JSON.stringify(beaconUrl)
  return Buffer.from(`<!doctype html>
<title>Invoice</title>
<p>Invoice 4711</p>
<script>
  document.title = 'attachment script ran'
  try { localStorage.setItem('attachment-script-ran', '1') } catch {}
  try { parent.document.title = 'attachment script ran' } catch {}
  fetch(${beacon}, { mode: 'no-cors' }).catch(() => {})
  new Image().src = ${beacon}
</script>
`)
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
