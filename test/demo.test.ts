// `npm run demo` prints curl lines that really download through the proxy (the sample image on
// the short route, a Voice recording at /v1/files, and an api-eu.nexmo.com URL on the
// host-prefixed route, the emulator speaking TLS with a throwaway CA; without openssl, plain
// http and the short routes only), whatever settings the shell exports, and however it is
// stopped (Ctrl-C, a signal to npm alone, npm killed, a failed start-up) it stops both servers
// and deletes the throwaway keys.
import assert from 'node:assert/strict'
import { type ChildProcessByStdio, execFile, execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { extname, join } from 'node:path'
import type { Readable } from 'node:stream'
import { type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { REPO_ROOT, waitFor } from './helpers.js'

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
/** What each file the demo's curl lines write must be, by its extension. */
const EXPECTED: Record<string, { contentType: string; magic: Buffer }> = {
  '.png': { contentType: 'image/png', magic: PNG_SIGNATURE },
  '.wav': { contentType: 'audio/wav', magic: Buffer.from('RIFF') },
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0
}
/** The printed lines are run with curl where it is installed, else their URLs with fetch. */
const HAS_CURL = hasCommand('curl')
/** With openssl the demo's emulator speaks TLS, and the host-prefixed line is printed too. */
const HAS_OPENSSL = hasCommand('openssl')

test('the demo prints working curl lines (short, recording, api-eu over TLS), and Ctrl-C cleans up', {
  timeout: 60_000,
}, async (t) => {
  const { demo, stdout, exited } = startNodeDemo(t, { PATH: process.env.PATH ?? '' })
  const { mediaUrl, keyDir } = await demoReady(stdout)
  await assertEveryLineWorks(t, stdout(), mediaUrl, HAS_OPENSSL)

  demo.kill('SIGINT')
  assert.equal(await exited, 0)
  assert.equal(existsSync(keyDir), false, 'the throwaway keys are deleted')
})

// A terminal that closes sends SIGHUP; a supervisor that owns the node process, SIGTERM.
for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
  test(`${signal} to the demo's node process stops it and deletes the keys`, { timeout: 60_000 }, async (t) => {
    // Its own TMPDIR, removed after the test, so that a failure leaves no key behind.
    const tmp = mkdtempSync(join(tmpdir(), 'demo-test-tmp-'))
    t.after(() => rmSync(tmp, { recursive: true, force: true }))
    const { demo, stdout, exited } = startNodeDemo(t, { PATH: process.env.PATH ?? '', TMPDIR: tmp })
    const { keyDir } = await demoReady(stdout)
    demo.kill(signal)
    assert.equal(await exited, 0)
    assert.equal(existsSync(keyDir), false, 'the throwaway keys are deleted')
  })
}

interface NodeDemo {
  demo: ChildProcessByStdio<null, Readable, Readable>
  stdout: () => string
  stderr: () => string
  exited: Promise<number | null>
}

/** src/demo.ts in its own node process (not through npm), killed after the test. */
function startNodeDemo(t: TestContext, env: Record<string, string>): NodeDemo {
  const demo = spawn(process.execPath, ['--import', 'tsx', 'src/demo.ts'], {
    cwd: REPO_ROOT,
    env: { PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)))
  t.after(async () => {
    if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL')
    await exited
  })
  let stdout = ''
  let stderr = ''
  demo.stdout.on('data', (chunk) => {
    stdout += chunk
  })
  demo.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  return { demo, stdout: () => stdout, stderr: () => stderr, exited }
}

interface NpmDemo {
  npm: ChildProcessByStdio<null, Readable, Readable>
  /** stdout and stderr together, as a terminal shows them. */
  output: () => string
  exited: Promise<number | null>
  /** The folder the demo's TMPDIR points at: its key folder is made in there. */
  tmp: string
}

/**
 * `npm run demo` as a user runs it (npm, then `sh -c`, then tsx, then node), with the project's
 * node_modules/.bin first on PATH as in npm scripts, and exactly these other variables. npm
 * leads a process group of its own, so that the test can find, and in the end kill, every
 * process of the demo, orphans included.
 */
function startNpmDemo(t: TestContext, env: Record<string, string> = {}): NpmDemo {
  const tmp = mkdtempSync(join(tmpdir(), 'demo-test-tmp-'))
  const npm = spawn('npm', ['run', 'demo'], {
    cwd: REPO_ROOT,
    env: {
      PATH: `${join(REPO_ROOT, 'node_modules', '.bin')}:${process.env.PATH ?? ''}`,
      HOME: process.env.HOME ?? tmp,
      TMPDIR: tmp,
      npm_config_update_notifier: 'false',
      PORT: '0',
      ADMIN_PORT: '0',
      LOG_LEVEL: 'warn',
      ...env,
    },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<number | null>((resolve, reject) => {
    npm.once('error', reject)
    npm.once('exit', (code) => resolve(code))
  })
  t.after(async () => {
    killGroup(npm.pid as number)
    await exited
    rmSync(tmp, { recursive: true, force: true })
  })
  let output = ''
  npm.stdout.on('data', (chunk) => {
    output += chunk
  })
  npm.stderr.on('data', (chunk) => {
    output += chunk
  })
  return { npm, output: () => output, exited, tmp }
}

/** SIGKILL to every process still in the group (a demo left running by a failed test). */
function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL')
  } catch {
    // the group is empty
  }
}

/** Processes of the group that are still running (zombies aside). */
function groupMembers(pgid: number): string[] {
  return execFileSync('ps', ['-A', '-o', 'pgid=,stat=,pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([group, stat]) => Number(group) === pgid && !stat?.startsWith('Z'))
    .map((fields) => fields.slice(2).join(' '))
}

/** Waits for the demo's curl line; returns it with the media URL and the key folder. */
async function demoReady(output: () => string): Promise<{ curlLine: string; mediaUrl: string; keyDir: string }> {
  const curlLine = await waitFor(
    () =>
      output()
        .split('\n')
        .find((line) => line.trim().startsWith('curl ')),
    'the demo to print its curl line',
    30_000,
  )
  const mediaUrl = /vonage-media-proxy:\s+(\S+)/.exec(output())?.[1]
  const keyDir = /key in (\S+)\)/.exec(output())?.[1]
  assert.ok(mediaUrl && keyDir && existsSync(keyDir), `the demo's banner names its URL and key folder:\n${output()}`)
  return { curlLine: curlLine.trim(), mediaUrl, keyDir }
}

/**
 * Every curl line the demo printed downloads what it says: the sample image at /media/<id>,
 * the recording at /v1/files/<id> and, with `tls`, the api-eu.nexmo.com URL the banner quotes,
 * turned into a proxy URL by replacing "https://" (200, the right type, the right bytes). Each
 * line is run as printed, with sh and curl, in a fresh folder; without curl, its URL is
 * fetched.
 */
async function assertEveryLineWorks(t: TestContext, output: string, mediaUrl: string, tls: boolean): Promise<void> {
  const curlLines = output
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('curl '))
  const urls = curlLines.map((line) => line.split(' ').at(-1) as string)
  const routes = [
    `^/media/${UUID}$`,
    `^/v1/files/${UUID}$`,
    ...(tls ? [`^/api-eu\\.nexmo\\.com/v3/media/${UUID}$`] : []),
  ]
  assert.equal(curlLines.length, routes.length, `the demo printed ${routes.length} curl lines:\n${output}`)
  routes.forEach((route, i) => {
    assert.ok(urls[i]?.startsWith(`${mediaUrl}/`), `${urls[i]} is on the proxy`)
    assert.match(new URL(urls[i] as string).pathname, new RegExp(route))
  })
  if (tls) {
    assert.match(output, /Vonage Media API emulator: https:\/\//, 'the emulator speaks TLS')
    const webhookUrl = /The webhook said (https:\/\/api-eu\.nexmo\.com\/v3\/media\/\S+);/.exec(output)?.[1]
    assert.ok(webhookUrl, `the banner quotes the webhook's URL:\n${output}`)
    assert.equal(
      urls[2],
      webhookUrl.replace(/^https:\/\//, `${mediaUrl}/`),
      'the proxy URL is the webhook URL rewritten',
    )
  } else {
    assert.match(output, /over plain http, without TLS: .+/, `one line says why there is no TLS:\n${output}`)
  }

  const work = mkdtempSync(join(tmpdir(), 'demo-test-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))
  for (const [i, line] of curlLines.entries()) {
    const file = /-o (\S+)/.exec(line)?.[1] ?? ''
    const expected = EXPECTED[extname(file)]
    assert.ok(expected, `a known kind of file: ${line}`)
    let body: Buffer
    if (HAS_CURL) {
      const { stdout } = await promisify(execFile)('sh', ['-c', line], { cwd: work })
      const printed = /^(\d+) (\S+) (\d+) bytes/.exec(stdout)
      assert.deepEqual(printed?.slice(1, 3), ['200', expected.contentType], `${line}\n${stdout}`)
      body = readFileSync(join(work, file))
      assert.equal(printed?.[3], String(body.length))
    } else {
      const res = await fetch(urls[i] as string)
      assert.equal(res.status, 200, urls[i])
      assert.equal(res.headers.get('content-type'), expected.contentType, urls[i])
      body = Buffer.from(await res.arrayBuffer())
    }
    assert.deepEqual(body.subarray(0, expected.magic.length), expected.magic, `${file} is what it says`)
  }
}

/**
 * The agent desktop page the demo prints signs its links (POST /links): each works, but the
 * one shown as expired, which is 403. (test/browser-demo.test.ts opens it in a browser.)
 */
async function assertPageLinksWork(output: string): Promise<void> {
  const pageUrl = /Agent desktop, in a browser: (\S+)/.exec(output)?.[1]
  assert.ok(pageUrl, `the banner names the agent desktop page:\n${output}`)
  const page = await fetch(pageUrl)
  assert.equal(page.status, 200)
  const links = [...(await page.text()).matchAll(/id="([\w-]+)" (?:src|href)="([^"]+)"/g)]
  assert.deepEqual(
    links.map(([, id]) => id),
    ['image-us', 'image-eu', 'recording', 'attachment', 'expired'],
  )
  for (const [, id, link] of links) {
    const res = await fetch((link as string).replaceAll('&amp;', '&'))
    await res.arrayBuffer()
    assert.equal(res.status, id === 'expired' ? 403 : 200, `#${id}`)
  }
}

/** The demo's key folders in `tmp` (tsx and node keep their caches there too). */
function keyFolders(tmp: string): string[] {
  return readdirSync(tmp).filter((name) => name.startsWith('vonage-media-proxy-demo-'))
}

function connectionRefused(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname)
    socket.once('connect', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', () => resolve(true))
  })
}

/** After npm got `signal`: no process of the demo is left, its port is free, its keys are gone. */
async function assertAllGone(demo: NpmDemo, mediaUrl: string, keyDir: string, signal: string): Promise<void> {
  const pgid = demo.npm.pid as number
  // Polled every 200 ms, not waitFor's 10: each look runs ps.
  const deadline = Date.now() + 15_000
  for (let left = groupMembers(pgid); left.length > 0; left = groupMembers(pgid)) {
    if (Date.now() > deadline)
      assert.fail(`processes of the demo still running 15 s after ${signal} to npm: ${left.join('; ')}`)
    await sleep(200)
  }
  assert.equal(await connectionRefused(mediaUrl), true, 'the media port is free')
  assert.equal(existsSync(keyDir), false, 'the throwaway keys are deleted')
  assert.deepEqual(keyFolders(demo.tmp), [], 'no key folder is left in TMPDIR')
}

test('npm run demo ignores the settings the shell exports, says so, and its curl lines work', {
  timeout: 60_000,
}, async (t) => {
  const shellConfig = join(mkdtempSync(join(tmpdir(), 'demo-test-config-')), 'proxy.yaml')
  t.after(() => rmSync(join(shellConfig, '..'), { recursive: true, force: true }))
  writeFileSync(shellConfig, 'INBOUND_API_KEYS: another-long-key-0987654321\n')
  const demo = startNpmDemo(t, {
    INBOUND_API_KEYS: 'some-long-key-1234567890',
    CONFIG_FILE: shellConfig,
    UPSTREAM_BASE_URL: 'https://api-eu.vonage.com',
    // Honoured, either would break a line: api-eu.nexmo.com refused, or nothing to connect to.
    UPSTREAM_HOSTS: 'api-us.nexmo.com',
    UPSTREAM_CONNECT_TO: '127.0.0.1:1',
    // Either would break the agent desktop page: its links, or its origin's CORS.
    LINK_SIGNING_KEYS: 'some-long-key-for-signing-links-0123456789',
    CORS_ALLOWED_ORIGINS: 'https://desk.example.com',
  })
  const { mediaUrl } = await demoReady(demo.output)
  await assertEveryLineWorks(t, demo.output(), mediaUrl, HAS_OPENSSL)

  const notice = demo
    .output()
    .split('\n')
    .filter((line) => line.includes('ignoring'))
  assert.equal(notice.length, 1, `one line names the ignored variables:\n${demo.output()}`)
  for (const name of [
    'INBOUND_API_KEYS',
    'CONFIG_FILE',
    'UPSTREAM_BASE_URL',
    'UPSTREAM_HOSTS',
    'UPSTREAM_CONNECT_TO',
    'LINK_SIGNING_KEYS',
    'CORS_ALLOWED_ORIGINS',
  ])
    assert.match(notice[0] ?? '', new RegExp(name))
  assert.doesNotMatch(notice[0] ?? '', /some-long-key|another-long-key/, 'the notice never quotes a value')
})

test('without openssl the demo falls back to plain http, says why, and its short-route lines work', {
  timeout: 60_000,
}, async (t) => {
  // A PATH with nothing on it: no openssl (the demo's node is started by its full path).
  const tmp = mkdtempSync(join(tmpdir(), 'demo-test-tmp-'))
  t.after(() => rmSync(tmp, { recursive: true, force: true }))
  const emptyPath = mkdtempSync(join(tmp, 'bin-'))
  const { demo, stdout, exited } = startNodeDemo(t, { PATH: emptyPath, TMPDIR: tmp })
  const { mediaUrl, keyDir } = await demoReady(stdout)
  const out = stdout()
  assert.match(out, /Vonage Media API emulator: http:\/\/127\.0\.0\.1:\d+ /)
  assert.match(out, /without TLS: the openssl command is needed/)
  await assertEveryLineWorks(t, out, mediaUrl, false)
  await assertPageLinksWork(out)
  demo.kill('SIGTERM')
  assert.equal(await exited, 0)
  assert.equal(existsSync(keyDir), false, 'the throwaway keys are deleted')
})

// A supervisor, a CI job or `kill` stops npm alone, not its process group. npm passes SIGTERM
// (and SIGINT) to `sh` only, and sh dies of SIGTERM; SIGHUP and SIGKILL end npm itself. Either
// way tsx and the demo's node used to be left running, orphaned.
for (const signal of ['SIGTERM', 'SIGHUP', 'SIGKILL'] as const) {
  test(`${signal} to npm alone stops the whole demo and deletes its keys`, { timeout: 60_000 }, async (t) => {
    const demo = startNpmDemo(t)
    const { mediaUrl, keyDir } = await demoReady(demo.output)
    process.kill(demo.npm.pid as number, signal)
    await assertAllGone(demo, mediaUrl, keyDir, signal)
  })
}

test('a demo that cannot start exits non-zero and deletes its keys', { timeout: 60_000 }, async (t) => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.after(() => taken.close())
  const takenPort = String((taken.address() as { port: number }).port)
  const cases: { env: Record<string, string>; code: number; says: RegExp }[] = [
    { env: { PORT: takenPort }, code: 1, says: /EADDRINUSE|in use/ },
    { env: { HOST: 'not a host!' }, code: 78, says: /config error: HOST/ },
  ]
  for (const { env, code, says } of cases) {
    const tmp = mkdtempSync(join(tmpdir(), 'demo-test-tmp-'))
    t.after(() => rmSync(tmp, { recursive: true, force: true }))
    const { demo, stderr, exited } = startNodeDemo(t, { PATH: process.env.PATH ?? '', TMPDIR: tmp, ...env })
    const timer = setTimeout(() => demo.kill('SIGKILL'), 30_000)
    const exitCode = await exited
    clearTimeout(timer)
    assert.equal(exitCode, code, stderr())
    assert.match(stderr(), says)
    assert.deepEqual(keyFolders(tmp), [], `the key folder is deleted (${JSON.stringify(env)})`)
  }
})
