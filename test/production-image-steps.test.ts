// The container image's production steps, run without Docker: a copy of the package files and
// config/, a freshly compiled dist/, `npm ci --omit=dev`, the tree made read-only, and
// `node dist/main.js` started as an unprivileged user. It must get ready and serve a download.
import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { APPLICATION_ID, keys, MEDIA_ID, startEmulator, waitFor } from './helpers.js'

const run = promisify(execFile)
const REPO = fileURLToPath(new URL('..', import.meta.url))
const NOBODY = 65_534
const DEV_DEPENDENCIES = ['typescript', 'tsx', '@biomejs/biome']

interface Launcher {
  /** Prepended to the node command line. */
  prefix: string[]
  uid: number
  gid: number
}

/** How to start a process without root: as it is when the tests are not root, else setpriv or runuser. */
function unprivilegedLauncher(): Launcher | string {
  const uid = process.getuid?.()
  const gid = process.getgid?.()
  if (uid === undefined || gid === undefined) return 'no POSIX user ids on this platform'
  if (uid !== 0) return { prefix: [], uid, gid }
  if (spawnSync('setpriv', ['--version']).status === 0) {
    return { prefix: ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'], uid: NOBODY, gid: NOBODY }
  }
  const nobody = spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' })
  const nobodyGid = spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' })
  if (spawnSync('runuser', ['--version']).status === 0 && nobody.status === 0 && nobodyGid.status === 0) {
    return { prefix: ['runuser', '-u', 'nobody', '--'], uid: Number(nobody.stdout), gid: Number(nobodyGid.stdout) }
  }
  return 'running as root, and neither setpriv nor runuser is available to drop privileges'
}

const launcher = unprivilegedLauncher()

/**
 * runuser forks and waits, setpriv execs: the node process is the launched one or its child.
 * Told by its executable, not its name: Node 24 names its main thread "MainThread".
 */
function nodePid(pid: number): number {
  const node = realpathSync(process.execPath)
  if (readlinkSync(`/proc/${pid}/exe`) === node) return pid
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)
  assert.equal(children.length, 1, `one child of pid ${pid}`)
  const child = Number(children[0])
  assert.ok(child > 0 && readlinkSync(`/proc/${child}/exe`) === node, `pid ${child} is node`)
  return child
}

test('the production tree (npm ci --omit=dev, built dist/) runs read-only as an unprivileged user', {
  timeout: 180_000,
  skip: typeof launcher === 'string' ? launcher : false,
}, async (t) => {
  const { prefix, uid, gid } = launcher as Launcher
  const root = mkdtempSync(join(tmpdir(), 'vonage-media-proxy-image-'))
  const app = join(root, 'app')
  let child: ChildProcess | undefined
  let proxyPid: number | undefined
  t.after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child?.once('exit', resolve))
      if (proxyPid !== undefined && proxyPid !== child.pid) process.kill(proxyPid, 'SIGKILL')
      child.kill('SIGKILL')
      await exited
    }
    spawnSync('chmod', ['-R', 'u+w', root])
    rmSync(root, { recursive: true, force: true })
  })

  // The image's build and prod-deps stages.
  mkdirSync(app)
  for (const file of ['package.json', 'package-lock.json']) cpSync(join(REPO, file), join(app, file))
  cpSync(join(REPO, 'config'), join(app, 'config'), { recursive: true })
  await run('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', join(app, 'dist')], { cwd: REPO })
  await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], {
    cwd: app,
    maxBuffer: 16 * 1024 * 1024,
  })

  for (const name of DEV_DEPENDENCIES) {
    assert.ok(!existsSync(join(app, 'node_modules', name)), `dev dependency ${name} was installed`)
  }
  const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>
  }
  const devOnly = Object.entries(lock.packages)
    .filter(([path, meta]) => path !== '' && meta.dev === true)
    .map(([path]) => path)
  assert.ok(devOnly.length > 0, 'the lockfile marks dev-only packages')
  assert.deepEqual(
    devOnly.filter((path) => existsSync(join(app, path))),
    [],
    'no dev-only package is installed',
  )

  // The key is a mounted secret: readable by the runtime user only. Media lives outside the tree.
  const secrets = join(root, 'secrets')
  mkdirSync(secrets)
  const keyPath = join(secrets, 'private.pem')
  writeFileSync(keyPath, keys.pkcs8, { mode: 0o400 })
  if (process.getuid?.() === 0) chownSync(keyPath, uid, gid)
  const media = randomBytes(512 * 1024 + 7)
  const mediaPath = join(root, 'media.bin')
  writeFileSync(mediaPath, media)

  chmodSync(root, 0o755)
  await run('chmod', ['-R', 'a-w', app, secrets])

  const emulator = await startEmulator(t)
  emulator.media.addFile(MEDIA_ID, mediaPath, 'audio/mpeg')

  const [command = process.execPath, ...args] = [...prefix, process.execPath, 'dist/main.js']
  const proc = spawn(command, args, {
    cwd: app,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'production',
      VONAGE_APPLICATION_ID: APPLICATION_ID,
      VONAGE_PRIVATE_KEY_PATH: keyPath,
      UPSTREAM_BASE_URL: emulator.url,
      HOST: '127.0.0.1',
      PORT: '0',
      ADMIN_PORT: '0',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child = proc
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (chunk) => {
    stdout += chunk
  })
  proc.stderr.on('data', (chunk) => {
    stderr += chunk
  })

  const listening = await waitFor(
    () => {
      if (proc.exitCode !== null) throw new Error(`dist/main.js exited with ${proc.exitCode}: ${stderr}`)
      return stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { msg?: string; mediaUrl?: string; adminUrl?: string })
        .find((line) => line.msg === 'vonage-media-proxy listening')
    },
    'the "vonage-media-proxy listening" log line',
    30_000,
  )
  const { mediaUrl, adminUrl } = listening as { mediaUrl: string; adminUrl: string }

  proxyPid = nodePid(proc.pid as number)
  const status = readFileSync(`/proc/${proxyPid}/status`, 'utf8')
  assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'), 'runs unprivileged')

  await waitFor(
    async () => {
      const res = await fetch(`${adminUrl}/readyz`)
      await res.arrayBuffer()
      return res.status === 200
    },
    '/readyz 200',
    10_000,
  )

  const res = await fetch(`${mediaUrl}/media/${MEDIA_ID}`)
  const body = Buffer.from(await res.arrayBuffer())
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'audio/mpeg')
  assert.equal(body.length, media.length)
  assert.ok(body.equals(media), 'the download is byte-identical')

  // To node itself: runuser would end its session rather than pass the signal on.
  process.kill(proxyPid, 'SIGTERM')
  await waitFor(() => proc.exitCode !== null || proc.signalCode !== null, 'exit after SIGTERM', 10_000)
  assert.equal(proc.exitCode, 0, `exit code after SIGTERM; stderr: ${stderr}`)
  assert.equal(stderr, '', 'nothing on stderr (a write to the read-only tree would show here)')
})
