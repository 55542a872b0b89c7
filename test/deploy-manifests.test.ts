// The shipped container and deployment files, checked without Docker or a cluster: the
// Dockerfile, .dockerignore, docker-compose.yml and deploy/kubernetes/ are parsed and held to
// the contract (ports, probes, non-root numeric user, pinned images, keys mounted not baked).
// The media port listens on loopback in every example (HOST=127.0.0.1: only the containers that
// share the proxy's network namespace reach it), the admin port on every interface
// (ADMIN_HOST=0.0.0.0: probes and Prometheus). The several-applications examples (compose's
// applications profile, deploy/kubernetes/several-applications.yaml) are held to the same, with
// a directory of keys mounted where VONAGE_APPLICATIONS_DIR points. The cache (CACHE_DIR) is a
// volume of its own, the only place the proxy writes: a named volume in compose, an emptyDir sized
// for CACHE_MAX_BYTES in Kubernetes; the root filesystem stays read-only.
import assert from 'node:assert/strict'
import { createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { posix } from 'node:path'
import { test } from 'node:test'
import { parse, parseAllDocuments } from 'yaml'

const ROOT = new URL('../', import.meta.url)
const read = (path: string) => readFileSync(new URL(path, ROOT), 'utf8')

const MEDIA_PORT = 8080
const ADMIN_PORT = 8081
const KEY_SECRET_PATH = '/run/secrets/vonage_private_key'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const DEFAULTS = parse(read('config/default.yaml')) as Record<string, unknown>
const DEFAULT_SHUTDOWN_GRACE_MS = Number(DEFAULTS.SHUTDOWN_GRACE_MS)
const DEFAULT_MAX_IN_FLIGHT_REQUESTS = Number(DEFAULTS.MAX_IN_FLIGHT_REQUESTS)
/** The listen address of the admin port wherever probes or Prometheus come from outside. */
const ALL_INTERFACES = '0.0.0.0'

/** Addresses that never leave the machine, or the pod. */
function isLoopback(host: unknown): boolean {
  return typeof host === 'string' && (host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host))
}

type Json = Record<string, unknown>

/** An image reference is pinned when it has a digest, or a tag other than latest. */
function assertPinned(image: unknown, where: string): void {
  assert.equal(typeof image, 'string', `${where}: image must be a string`)
  const ref = image as string
  if (ref.includes('@sha256:')) return
  const tag = /:([^/:]+)$/.exec(ref)?.[1]
  assert.ok(tag, `${where}: image ${ref} has no tag`)
  assert.notEqual(tag, 'latest', `${where}: image ${ref} uses latest`)
}

function assertNumericNonRootUser(user: unknown, where: string): void {
  const match = /^(\d+)(?::(\d+))?$/.exec(String(user))
  assert.ok(match, `${where}: user ${String(user)} must be numeric (uid or uid:gid)`)
  assert.notEqual(Number(match[1]), 0, `${where}: user must not be root`)
}

/** No file may carry a usable private key; placeholders are fine. */
function assertNoPrivateKey(text: string, where: string): void {
  for (const [block] of text.matchAll(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g)) {
    const pem = block
      .split('\n')
      .map((line) => line.trim())
      .join('\n')
    assert.throws(() => createPrivateKey(pem), Error, `${where} embeds a real private key`)
  }
}

// ---- Dockerfile ----

interface Instruction {
  keyword: string
  args: string
}

interface Stage {
  image: string
  name: string | undefined
  instructions: Instruction[]
}

/** A small Dockerfile reader: comments dropped, backslash continuations joined. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) continue
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `
      continue
    }
    logical.push(pending + line)
    pending = ''
  }
  const stages: Stage[] = []
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? []
    const instruction = { keyword: keyword.toUpperCase(), args: args.trim() }
    if (instruction.keyword === 'FROM') {
      const [image = '', as, name] = instruction.args.replace(/--platform=\S+\s+/, '').split(/\s+/)
      stages.push({ image, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] })
    } else {
      const stage = stages.at(-1)
      assert.ok(stage, `${instruction.keyword} before the first FROM`)
      stage.instructions.push(instruction)
    }
  }
  return stages
}

function envOfStage(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {}
  for (const { keyword, args } of stage.instructions) {
    if (keyword !== 'ENV') continue
    for (const [, key = '', value = ''] of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) {
      env[key] = value.replace(/^"|"$/g, '')
    }
  }
  return env
}

/** COPY/ADD sources, without flags and the destination. */
function copySources(args: string): string[] {
  const tokens = args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/)
  return tokens.filter((token) => !token.startsWith('--')).slice(0, -1)
}

test('Node.js 24 everywhere: engines, the Node that npm scripts run, the types', () => {
  const pkg = JSON.parse(read('package.json')) as {
    engines: { node: string }
    devDependencies: Record<string, string>
    allowScripts: Record<string, boolean>
  }
  assert.equal(pkg.engines.node, '>=24')
  assert.match(pkg.devDependencies.node ?? '', /^\^24\./, 'the `node` package brings Node 24 to npm scripts')
  assert.equal(pkg.allowScripts.node, true, "the node package's install script is approved")
  assert.match(pkg.devDependencies['@types/node'] ?? '', /^\^24\./)
  // This test itself runs under npm test: on the project's Node, whatever the machine's own is.
  assert.equal(process.versions.node.split('.')[0], '24')
})

test('Dockerfile: pinned multi-stage build, production dependencies only, non-root runtime', () => {
  const stages = parseDockerfile(read('Dockerfile'))
  assert.ok(stages.length >= 2, 'the build must be multi-stage')
  const stageNames = new Set(stages.map((stage) => stage.name).filter((name) => name !== undefined))
  for (const stage of stages) {
    if (stageNames.has(stage.image)) continue
    assertPinned(stage.image, `FROM ${stage.image}`)
    assert.match(stage.image, /^node:24[.-]|\/nodejs24-/, `FROM ${stage.image} must be a Node 24 image`)
  }

  const runtime = stages.at(-1) as Stage
  const instructions = (keyword: string) => runtime.instructions.filter((i) => i.keyword === keyword)

  const users = instructions('USER')
  assert.ok(users.length > 0, 'the final stage must set USER')
  assertNumericNonRootUser(users.at(-1)?.args, 'final stage USER')

  const exposed = instructions('EXPOSE').flatMap((i) => i.args.split(/\s+/).map((port) => port.replace(/\/tcp$/, '')))
  assert.ok(exposed.includes(String(MEDIA_PORT)) && exposed.includes(String(ADMIN_PORT)), `EXPOSE ${exposed}`)

  const env = envOfStage(runtime)
  assert.ok(isLoopback(env.HOST), `HOST=${env.HOST}: the media port stays on the container's loopback`)
  assert.equal(env.ADMIN_HOST, ALL_INTERFACES, 'the admin port listens on all interfaces, for probes and Prometheus')
  // glibc must keep the heap that garbage collections free in bursts, or large downloads cost
  // up to 1.5x the CPU in some processes (measured; README, Performance).
  assert.ok(
    Number(env.MALLOC_TRIM_THRESHOLD_) >= 32 * 1024 * 1024,
    `MALLOC_TRIM_THRESHOLD_=${env.MALLOC_TRIM_THRESHOLD_}`,
  )
  for (const stage of stages) {
    for (const name of Object.keys(envOfStage(stage))) {
      assert.doesNotMatch(name, /^VONAGE_|KEY|SECRET|TOKEN|PASSWORD/, `ENV ${name} would bake a setting or secret`)
    }
    for (const arg of stage.instructions.filter((i) => i.keyword === 'ARG')) {
      assert.doesNotMatch(arg.args, /KEY|SECRET|TOKEN|PASSWORD/i, `ARG ${arg.args} would leave a secret in the history`)
    }
  }

  const cmd = instructions('CMD').at(-1)
  assert.ok(cmd, 'the final stage must have a CMD')
  const argv = JSON.parse(cmd.args) as string[]
  assert.ok(Array.isArray(argv), 'CMD must be exec form, so node is PID 1 and receives SIGTERM')
  const script = runtime.image.includes('distroless/nodejs') ? argv[0] : argv[1]
  if (!runtime.image.includes('distroless/nodejs')) assert.match(argv[0] ?? '', /(^|\/)node$/)
  assert.match(script ?? '', /(^|\/)dist\/main\.js$/, `CMD ${cmd.args} must run dist/main.js`)

  // A read-only root filesystem: nothing in the runtime stage prepares writable state.
  assert.equal(instructions('RUN').length, 0, 'the runtime stage runs nothing at build time')
  assert.equal(instructions('VOLUME').length, 0, 'the runtime stage needs no writable volume')

  for (const stage of stages) {
    for (const copy of stage.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
      for (const source of copySources(copy.args)) {
        assert.doesNotMatch(source, /\.pem$|\.key$|\.env|secrets?|^\.$/, `${copy.keyword} ${copy.args} copies too much`)
      }
    }
  }

  const modulesCopy = instructions('COPY').find((i) => /node_modules/.test(i.args))
  const from = /--from=(\S+)/.exec(modulesCopy?.args ?? '')?.[1]
  assert.ok(from, 'the runtime stage copies node_modules from another stage')
  const depsStage = stages.find((stage) => stage.name === from)
  assert.ok(
    depsStage?.instructions.some((i) => i.keyword === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)),
    `stage ${from} must install with npm ci --omit=dev`,
  )
  const copiedFromBuild = instructions('COPY').map((i) => copySources(i.args).join(' '))
  assert.ok(
    copiedFromBuild.some((sources) => /dist$/.test(sources)),
    'the runtime stage copies dist/',
  )
  assert.ok(
    copiedFromBuild.some((sources) => /(^|\s)config$/.test(sources)),
    'the runtime stage copies config/',
  )
  assert.ok(
    copiedFromBuild.some((sources) => /package\.json/.test(sources)),
    'the runtime stage copies package.json',
  )
})

test('.dockerignore keeps keys, environment files and local build output out of the context', () => {
  const patterns = read('.dockerignore')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
  for (const required of ['node_modules', 'dist', '.git', '*.pem', '*.key', '.env', 'secrets']) {
    assert.ok(patterns.includes(required), `.dockerignore must list ${required}`)
  }
  assert.ok(patterns.includes('bench') || patterns.includes('bench/results'), '.dockerignore must list bench results')
  assert.ok(!patterns.some((p) => p.startsWith('!')), 'no exception may re-include an ignored file')
})

// ---- docker-compose.yml ----

type Service = Json & { environment?: Record<string, string | null> | string[]; profiles?: string[] }

function environment(service: Service): Record<string, string | null> {
  const env = service.environment
  if (env === undefined) return {}
  if (!Array.isArray(env)) return env
  return Object.fromEntries(
    env.map((entry) => {
      const at = entry.indexOf('=')
      return at < 0 ? [entry, null] : [entry.slice(0, at), entry.slice(at + 1)]
    }),
  )
}

/** Compose durations such as 30s, 1m30s, 500ms. */
function durationMs(value: unknown): number {
  let total = 0
  for (const [, amount, unit] of String(value).matchAll(/(\d+)(ms|h|m|s)/g)) {
    total += Number(amount) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[unit as 'ms' | 's' | 'm' | 'h']
  }
  return total
}

function shutdownGraceMs(env: Record<string, string | null | undefined>): number {
  return Number(env.SHUTDOWN_GRACE_MS ?? DEFAULT_SHUTDOWN_GRACE_MS)
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as {
  services: Record<string, Service>
  secrets?: Json
  volumes?: Json
}

/** Services that `docker compose --profile <profile> up` starts. */
function servicesOf(profile: string): [string, Service][] {
  return Object.entries(compose.services).filter(([, s]) => s.profiles === undefined || s.profiles.includes(profile))
}

/** A proxy runs the image's default command with the proxy's settings. */
function proxiesOf(profile: string): [string, Service][] {
  return servicesOf(profile).filter(([, s]) => 'VONAGE_APPLICATION_ID' in environment(s) && s.command === undefined)
}

function assertHardenedProxy(name: string, service: Service): void {
  const env = environment(service)
  assert.equal(service.read_only, true, `${name} must have a read-only root filesystem`)
  assertNumericNonRootUser(service.user, name)
  assert.ok(isLoopback(env.HOST), `${name}: HOST=${env.HOST}, but the media port is for its namespace only`)
  assert.equal(env.ADMIN_HOST, ALL_INTERFACES, `${name}: the admin port must listen beyond loopback for Prometheus`)
  assert.ok([undefined, String(MEDIA_PORT)].includes(env.PORT ?? undefined), `${name}: clients call localhost:8080`)
  assert.ok([undefined, String(ADMIN_PORT)].includes(env.ADMIN_PORT ?? undefined), `${name}: admin port is 8081`)
  assert.equal(env.VONAGE_PRIVATE_KEY, undefined, `${name} must read the key from a mounted file, not the environment`)
  assert.ok(
    durationMs(service.stop_grace_period) > shutdownGraceMs(env),
    `${name}: stop_grace_period must exceed SHUTDOWN_GRACE_MS, or Docker kills in-flight downloads`,
  )
  const health = JSON.stringify((service.healthcheck as Json | undefined)?.test ?? '')
  assert.match(health, new RegExp(`:${ADMIN_PORT}/readyz`), `${name}: the health check asks /readyz on the admin port`)
}

function assertSidecarClient(profile: string, proxyName: string): void {
  // The demo's emulator joins the namespace too, as the upstream; the client is the other one.
  const clients = servicesOf(profile).filter(
    ([, s]) => s.network_mode === `service:${proxyName}` && !JSON.stringify(s.command ?? '').includes('emulator'),
  )
  assert.equal(clients.length, 1, `${profile}: one client shares ${proxyName}'s network namespace`)
  const [clientName, client] = clients[0] as [string, Service]
  assert.ok(client.depends_on !== undefined && proxyName in (client.depends_on as Json), `${clientName} waits for it`)
  assert.equal(client.ports, undefined, `${clientName}: ports belong to the namespace owner, ${proxyName}`)
}

interface Published {
  hostIp: string | undefined
  target: number
}

/** A service's published ports, from the short ("[ip:]host:container[/proto]") or the long syntax. */
function publishedPorts(service: Service): Published[] {
  return ((service.ports as (string | number | Json)[] | undefined) ?? []).map((entry) => {
    if (typeof entry === 'object') {
      return { hostIp: entry.host_ip as string | undefined, target: Number(entry.target) }
    }
    const spec = String(entry).replace(/\/\w+$/, '')
    const bracketed = /^\[([^\]]+)\]:(.*)$/.exec(spec)
    const parts = spec.split(':')
    const [hostIp, rest] = bracketed
      ? [bracketed[1], bracketed[2] as string]
      : parts.length === 3
        ? [parts[0], parts.slice(1).join(':')]
        : [undefined, spec]
    const target = /^(?:[\d-]*:)?(\d+)$/.exec(rest)?.[1]
    assert.ok(target, `port ${spec} is not in a form this test reads`)
    return { hostIp, target: Number(target) }
  })
}

test('publishedPorts reads the compose port forms', () => {
  const ports = (list: unknown[]) => publishedPorts({ ports: list } as Service)
  assert.deepEqual(ports(['8080']), [{ hostIp: undefined, target: 8080 }])
  assert.deepEqual(ports(['8080:8080', 9090]), [
    { hostIp: undefined, target: 8080 },
    { hostIp: undefined, target: 9090 },
  ])
  assert.deepEqual(ports(['127.0.0.1:18080:8080/tcp', '[::1]:8081:8081']), [
    { hostIp: '127.0.0.1', target: 8080 },
    { hostIp: '::1', target: 8081 },
  ])
  assert.deepEqual(ports([{ target: 8080, published: '8080', host_ip: '0.0.0.0' }]), [
    { hostIp: '0.0.0.0', target: 8080 },
  ])
})

test("docker-compose.yml: only the proxy's own network namespace reaches its media port", () => {
  for (const profile of ['vonage', 'demo', 'applications']) {
    const [[proxyName, proxy]] = proxiesOf(profile) as [[string, Service]]
    const aliases = ((proxy.networks as Json | undefined)?.default as { aliases?: string[] } | undefined)?.aliases
    const proxyHosts = [proxyName, ...(aliases ?? [])]
    for (const [name, service] of servicesOf(profile)) {
      for (const { hostIp, target } of publishedPorts(service)) {
        assert.ok(isLoopback(hostIp), `${profile}: ${name} publishes ${target} beyond the host's loopback`)
      }
      if (name === proxyName || service.network_mode === `service:${proxyName}`) {
        // HOST is the container's loopback: Docker forwards a published port to the container's
        // own address, where nothing listens. Whoever needs media joins the namespace instead.
        assert.ok(
          publishedPorts(service).every(({ target }) => target !== MEDIA_PORT),
          `${profile}: ${name} publishes the media port, which listens on the container's loopback only`,
        )
        continue
      }
      // Any other container reaches the proxy over the network, where only the admin port listens.
      const text = JSON.stringify(service)
      for (const host of proxyHosts) {
        assert.ok(
          !text.includes(`${host}:${MEDIA_PORT}`),
          `${profile}: ${name} calls ${host}:${MEDIA_PORT}, unreachable; share ${proxyName}'s network namespace`,
        )
      }
    }
  }
})

test('docker-compose.yml: the proxy as a hardened sidecar with the key as a compose secret', () => {
  for (const [name, service] of Object.entries(compose.services)) assertPinned(service.image, `service ${name}`)
  assert.doesNotMatch(
    JSON.stringify(compose),
    /\$\{[^}]*\?/,
    'Compose interpolates the whole file before picking services: a required (:?) variable also stops the demo',
  )

  const proxies = proxiesOf('vonage')
  assert.equal(proxies.length, 1, 'the vonage profile runs one proxy')
  const [name, proxy] = proxies[0] as [string, Service]
  assertHardenedProxy(name, proxy)
  const env = environment(proxy)
  assert.ok(
    env.VONAGE_APPLICATION_ID === null || /^\$\{VONAGE_APPLICATION_ID\b/.test(env.VONAGE_APPLICATION_ID ?? ''),
    'the application id comes from the environment',
  )
  assert.equal(env.VONAGE_PRIVATE_KEY_PATH, KEY_SECRET_PATH)
  const secrets = (proxy.secrets as (string | Json)[] | undefined) ?? []
  assert.ok(
    secrets.some((s) => (typeof s === 'string' ? s : s.source) === 'vonage_private_key'),
    `${name} mounts the vonage_private_key secret`,
  )
  const secret = compose.secrets?.vonage_private_key as Json | undefined
  assert.equal(secret?.file, './secrets/vonage_private_key.pem', 'the key is a file on the host, not in the image')
  assertSidecarClient('vonage', name)
})

test('docker-compose.yml: Prometheus scrapes the admin port with the shipped rules, in every mode', () => {
  const config = parse(read('deploy/prometheus/prometheus.yml')) as {
    rule_files?: string[]
    scrape_configs: { static_configs?: { targets: string[] }[] }[]
  }
  const targets = config.scrape_configs.flatMap((job) => (job.static_configs ?? []).flatMap((s) => s.targets))
  assert.ok(targets.length > 0, 'prometheus.yml has a static target')
  for (const profile of ['vonage', 'demo', 'applications']) {
    const prometheus = servicesOf(profile).find(([, s]) => String(s.image).startsWith('prom/prometheus:'))
    assert.ok(prometheus, `${profile}: Prometheus runs`)
    const mounts = new Map(
      ((prometheus[1].volumes as string[] | undefined) ?? []).map((v) => [v.split(':')[0], v.split(':')[1]]),
    )
    const configTarget = mounts.get('./deploy/prometheus/prometheus.yml')
    assert.ok(configTarget, `${profile}: Prometheus mounts deploy/prometheus/prometheus.yml`)
    const rulesTarget = mounts.get('./deploy/prometheus/alerts.yml')
    assert.ok(rulesTarget, `${profile}: Prometheus mounts deploy/prometheus/alerts.yml`)
    const ruleFiles = (config.rule_files ?? []).map((file) => posix.resolve(posix.dirname(configTarget), file))
    assert.ok(ruleFiles.includes(rulesTarget), `${profile}: prometheus.yml loads the mounted alerts.yml`)

    const [[name, proxy]] = proxiesOf(profile) as [[string, Service]]
    const aliases = ((proxy.networks as Json | undefined)?.default as { aliases?: string[] } | undefined)?.aliases
    const hostNames = [name, ...(aliases ?? [])]
    for (const target of targets) {
      const [host, port] = target.split(':')
      assert.ok(hostNames.includes(host ?? ''), `${profile}: scrape target ${target} reaches ${name}`)
      assert.equal(Number(port), ADMIN_PORT, `${profile}: scrape target ${target} is the admin port`)
    }
  }
})

test('docker-compose.yml: the applications profile mounts a directory of keys, read-only, where VONAGE_APPLICATIONS_DIR points', () => {
  const proxies = proxiesOf('applications')
  assert.equal(proxies.length, 1, 'the applications profile runs one proxy')
  const [name, proxy] = proxies[0] as [string, Service]
  assertHardenedProxy(name, proxy)
  const env = environment(proxy)
  assert.ok(
    env.VONAGE_APPLICATION_ID === null || /^\$\{VONAGE_APPLICATION_ID\b/.test(env.VONAGE_APPLICATION_ID ?? ''),
    'the default application, if any, comes from the environment',
  )
  for (const setting of ['VONAGE_PRIVATE_KEY', 'VONAGE_PRIVATE_KEY_PATH']) {
    assert.equal(env[setting], undefined, `${name}: every key comes from the directory, not ${setting}`)
  }
  assert.equal(proxy.secrets, undefined, `${name}: the keys are a directory, not compose secrets (files)`)
  const dir = env.VONAGE_APPLICATIONS_DIR ?? ''
  assert.ok(dir.startsWith('/'), `VONAGE_APPLICATIONS_DIR=${dir} is an absolute path in the container`)
  const mounts = ((proxy.volumes as string[] | undefined) ?? []).map((v) => v.split(':'))
  const mount = mounts.find(([, target]) => target === dir)
  assert.ok(mount, `${name} mounts a directory at VONAGE_APPLICATIONS_DIR (${dir}) itself, not a file in it`)
  const [source, , mode] = mount
  assert.equal(source, './secrets/applications', 'the keys are a directory on the host, not in the image')
  assert.equal(mode, 'ro', 'the key directory is mounted read-only')
  assertSidecarClient('applications', name)
  const client = servicesOf('applications').find(([, s]) => s.network_mode === `service:${name}`)
  assert.match(JSON.stringify(client?.[1].command ?? ''), /Vonage-Application-Id: /, 'the client names its application')
})

test('docker-compose.yml: each proxy keeps its cache in a directory of its own on a named volume handed to its user', () => {
  const cacheDirs = new Set<string>()
  for (const profile of ['vonage', 'applications']) {
    const [[name, proxy]] = proxiesOf(profile) as [[string, Service]]
    const dir = environment(proxy).CACHE_DIR ?? ''
    assert.ok(dir.startsWith('/'), `${name}: CACHE_DIR=${dir} is an absolute path in the container`)
    assert.ok(!cacheDirs.has(dir), `${name}: CACHE_DIR ${dir} is another proxy's too (each empties its tmp/ at start)`)
    cacheDirs.add(dir)
    assert.equal(proxy.read_only, true, `${name}: the root filesystem stays read-only beside the cache`)
    const mount = ((proxy.volumes as string[] | undefined) ?? [])
      .map((v) => v.split(':'))
      .find(([, target = '']) => dir === target || dir.startsWith(`${target}/`))
    assert.ok(mount, `${name}: a volume holds CACHE_DIR (${dir})`)
    const [source = '', , mode] = mount
    assert.ok(compose.volumes && source in compose.volumes, `${name}: ${source} is a named volume, not a host path`)
    assert.notEqual(mode, 'ro', `${name}: the cache volume is writable`)

    // A new named volume is root's: a one-shot the proxy waits for hands it to the proxy's user.
    const [uid, gid = uid] = String(proxy.user).split(':')
    const owner = Object.entries(proxy.depends_on as Record<string, Json>)
      .filter(([, d]) => d.condition === 'service_completed_successfully')
      .map(([dependency]) => [dependency, compose.services[dependency] as Service] as const)
      .find(([, service]) => ((service.volumes as string[] | undefined) ?? []).some((v) => v.split(':')[0] === source))
    assert.ok(owner, `${name} waits for a one-shot that prepares the ${source} volume`)
    const [ownerName, ownerService] = owner
    const ownerTarget = ((ownerService.volumes as string[]).find((v) => v.split(':')[0] === source) ?? '').split(':')[1]
    assert.ok(ownerService.profiles?.includes(profile), `${ownerName} runs in the ${profile} profile`)
    assert.ok(
      JSON.stringify(ownerService.command).includes(`chownSync('${ownerTarget}', ${uid}, ${gid})`),
      `${ownerName} hands ${ownerTarget} to ${uid}:${gid}`,
    )
    assert.equal(ownerService.read_only, true, `${ownerName}: read-only root filesystem`)
    assert.deepEqual(ownerService.cap_drop, ['ALL'], `${ownerName}: root, but only with CHOWN`)
    assert.deepEqual(ownerService.cap_add, ['CHOWN'], `${ownerName}: root, but only with CHOWN`)
  }
})

test('docker-compose.yml: the demo profile swaps Vonage for the emulator and needs no account', () => {
  const demo = servicesOf('demo')
  const proxies = proxiesOf('demo')
  assert.equal(proxies.length, 1, 'the demo profile runs one proxy, not the one that needs a real key')
  const [proxyName, proxy] = proxies[0] as [string, Service]
  assertHardenedProxy(proxyName, proxy)

  const emulators = demo.filter(([, s]) => JSON.stringify(s.command ?? '').includes('dist/emulator/main.js'))
  assert.equal(emulators.length, 1, 'the demo profile runs the emulator from the same image')
  const [emulatorName, emulator] = emulators[0] as [string, Service]
  assert.equal(emulator.image, proxy.image, 'the emulator is built from the proxy image')
  assert.equal(emulator.read_only, true)
  assertNumericNonRootUser(emulator.user, emulatorName)
  const emulatorEnv = environment(emulator)
  const proxyEnv = environment(proxy)
  // The token goes over http only to loopback: the emulator joins the proxy's network namespace.
  assert.equal(emulator.network_mode, `service:${proxyName}`)
  assert.equal(emulatorEnv.EMULATOR_HOST, '127.0.0.1')
  assert.equal(proxyEnv.UPSTREAM_BASE_URL, `http://127.0.0.1:${emulatorEnv.EMULATOR_PORT}`)
  assert.equal(proxyEnv.VONAGE_APPLICATION_ID, emulatorEnv.EMULATOR_APPLICATION_ID)
  assert.match(proxyEnv.VONAGE_APPLICATION_ID ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i)

  // The throwaway key: written by a one-shot service into a volume both read.
  const keyDir = posix.dirname(proxyEnv.VONAGE_PRIVATE_KEY_PATH ?? '')
  assert.equal(posix.dirname(emulatorEnv.EMULATOR_PUBLIC_KEY_PATH ?? ''), keyDir)
  const volumeAt = (service: Service, dir: string) =>
    ((service.volumes as string[] | undefined) ?? []).find((v) => v.split(':')[1] === dir)?.split(':')[0]
  const keyVolume = volumeAt(proxy, keyDir)
  assert.ok(keyVolume, `${proxyName} mounts the demo key directory`)
  assert.equal(volumeAt(emulator, keyDir), keyVolume)
  const makers = Object.entries(proxy.depends_on as Record<string, Json>).filter(
    ([, d]) => d.condition === 'service_completed_successfully',
  )
  assert.ok(
    makers.some(([maker]) => volumeAt(compose.services[maker] as Service, keyDir) === keyVolume),
    `${proxyName} waits for the service that writes the demo key`,
  )

  for (const [name, service] of demo) {
    assert.equal(service.secrets, undefined, `${name}: the demo uses no real secret`)
    for (const [key, value] of Object.entries(environment(service))) {
      assert.ok(value !== null && !value.includes('${'), `${name}: ${key} must not need a value from the shell`)
    }
  }
  assertSidecarClient('demo', proxyName)
})

// ---- Kubernetes ----

type Container = Json & {
  name: string
  env?: { name: string; value?: string; valueFrom?: Json }[]
  ports?: { name?: string; containerPort: number }[]
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[]
  securityContext?: Json
}

function loadDocuments(path: string): Json[] {
  return parseAllDocuments(read(path)).map((doc) => {
    assert.deepEqual(doc.errors, [], `${path} is valid YAML`)
    return doc.toJS() as Json
  })
}

type PodSpec = Json & {
  initContainers?: Container[]
  containers: Container[]
  volumes?: (Json & { name: string })[]
  securityContext?: Json
}

interface Workload {
  path: string
  docs: Json[]
  template: Json
  podSpec: PodSpec
  /** The proxy: the init container named media-proxy. */
  sidecar: Container
  env: Record<string, NonNullable<Container['env']>[number]>
}

function loadWorkload(path: string): Workload {
  const docs = loadDocuments(path)
  const deployment = docs.find((doc) => doc.kind === 'Deployment') as Json
  assert.ok(deployment, `${path} holds a Deployment`)
  const template = (deployment.spec as Json | undefined)?.template as Json
  const podSpec = template?.spec as PodSpec
  const sidecar = podSpec?.initContainers?.find((c) => c.name === 'media-proxy') as Container
  assert.ok(sidecar, `${path}: the proxy is an init container named media-proxy`)
  const env = Object.fromEntries((sidecar.env ?? []).map((e) => [e.name, e]))
  return { path, docs, template, podSpec, sidecar, env }
}

/** deployment.yaml: one application. several-applications.yaml: a directory of keys. */
const single = loadWorkload('deploy/kubernetes/deployment.yaml')
const several = loadWorkload('deploy/kubernetes/several-applications.yaml')
const WORKLOADS = [single, several]
const KUBERNETES_FILES = [
  'deploy/kubernetes/deployment.yaml',
  'deploy/kubernetes/secret.example.yaml',
  'deploy/kubernetes/several-applications.yaml',
  'deploy/kubernetes/applications-secret.example.yaml',
]
const { docs: k8s, podSpec, sidecar, env: sidecarEnv } = single

function probePort(probe: unknown, container: Container = sidecar): number | undefined {
  const port = ((probe as Json | undefined)?.httpGet as Json | undefined)?.port
  if (typeof port === 'number') return port
  return container.ports?.find((p) => p.name === port)?.containerPort
}

test('Kubernetes: the proxy is a native sidecar probed on the admin port', () => {
  for (const { path, template, podSpec, sidecar, env: sidecarEnv } of WORKLOADS) {
    assert.equal(
      sidecar.restartPolicy,
      'Always',
      `${path}: a native sidecar: an init container with restartPolicy Always`,
    )
    assert.ok(podSpec.containers.length > 0, `${path}: with an app container next to it`)
    for (const c of [...(podSpec.initContainers ?? []), ...podSpec.containers])
      assertPinned(c.image, `${path}: ${c.name}`)

    for (const setting of ['PORT', 'ADMIN_PORT']) {
      assert.equal(sidecarEnv[setting], undefined, `${path}: ${setting} stays at the contract's default`)
    }
    const expected = { startupProbe: '/readyz', readinessProbe: '/readyz', livenessProbe: '/healthz' }
    for (const [probe, probePath] of Object.entries(expected)) {
      const spec = sidecar[probe] as Json | undefined
      assert.ok(spec, `${path}: ${probe} is set`)
      assert.equal((spec.httpGet as Json).path, probePath, `${path}: ${probe} path`)
      assert.equal(probePort(spec, sidecar), ADMIN_PORT, `${path}: ${probe} port`)
    }
    assert.ok(
      sidecar.ports?.some((p) => p.containerPort === ADMIN_PORT),
      `${path}: the admin port is declared (the probes name it)`,
    )

    const metadata = template.metadata as Json
    const annotations = metadata.annotations as Record<string, string>
    assert.equal(annotations['prometheus.io/scrape'], 'true')
    assert.equal(annotations['prometheus.io/port'], String(ADMIN_PORT))
    assert.equal(annotations['prometheus.io/path'], '/metrics')
    // The target label the alert rules select proxies by (deploy/prometheus/alerts.yml).
    assert.equal((metadata.labels as Json)['vonage-media-proxy'], 'true', `${path}: pod label vonage-media-proxy`)

    const graceSeconds = podSpec.terminationGracePeriodSeconds as number
    const shutdownMs = shutdownGraceMs({ SHUTDOWN_GRACE_MS: sidecarEnv.SHUTDOWN_GRACE_MS?.value })
    assert.ok(
      graceSeconds * 1000 > shutdownMs,
      `${path}: terminationGracePeriodSeconds ${graceSeconds} > SHUTDOWN_GRACE_MS`,
    )
  }
})

test('Kubernetes: the media port stays inside the pod, the admin port is open to probes and Prometheus', () => {
  for (const { path, podSpec, env: sidecarEnv } of WORKLOADS) {
    assert.ok(
      isLoopback(sidecarEnv.HOST?.value),
      `${path}: HOST=${sidecarEnv.HOST?.value}: the app container calls localhost:8080`,
    )
    assert.equal(
      sidecarEnv.ADMIN_HOST?.value,
      ALL_INTERFACES,
      `${path}: the kubelet and Prometheus reach the admin port`,
    )
    // Declared ports are informational, but a declared 8080 would invite a Service or a hostPort
    // to point at an address where nothing listens: none is declared, on any container.
    for (const c of [...(podSpec.initContainers ?? []), ...podSpec.containers]) {
      for (const port of (c.ports ?? []) as (Json & { containerPort: number })[]) {
        assert.notEqual(port.containerPort, MEDIA_PORT, `${path}: ${c.name} declares the media port`)
        assert.equal(port.hostPort, undefined, `${path}: ${c.name}: no hostPort (${port.containerPort})`)
      }
    }
    assert.notEqual(podSpec.hostNetwork, true, `${path}: no hostNetwork: the pod's loopback must be its own`)
  }
  for (const path of KUBERNETES_FILES) {
    for (const doc of loadDocuments(path).filter((d) => d.kind === 'Service' || d.kind === 'Ingress')) {
      const text = JSON.stringify(doc)
      const media = new RegExp(`"(targetPort|port|number)":(${MEDIA_PORT}(?!\\d)|"media")`)
      assert.doesNotMatch(text, media, `${path}: a ${doc.kind} exposes the media port`)
    }
  }
})

/** Kubernetes quantities: 100m, "1", 192Mi, 1Gi, 500M. */
function quantity(value: unknown): number {
  const match = /^(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi)?$/.exec(String(value))
  assert.ok(match, `quantity ${String(value)}`)
  const unit = { '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[match[2] ?? '']
  return Number(match[1]) * (unit as number)
}

const MiB = 1024 ** 2
const KiB = 1024

/** The latest column of docs/performance.md's sizing table: its date, and each row's figure. */
function latestSizing(): { date: string; figures: Record<string, string> } {
  const doc = read('docs/performance.md')
  const section = /^## Sizing\n([\s\S]*?)(?=^## |(?![\s\S]))/m.exec(doc)?.[1] ?? ''
  const rows = section
    .split('\n')
    .filter((line) => line.startsWith('|') && !/^\|[\s|:-]+\|$/.test(line))
    .map((line) =>
      line
        .slice(1, -1)
        .split('|')
        .map((cell) => cell.trim()),
    )
  const [header, ...body] = rows
  const date = /\d{4}-\d{2}-\d{2}/.exec(header?.at(-1) ?? '')?.[0]
  assert.ok(date && body.length >= 4, 'docs/performance.md has a Sizing table whose last column is dated')
  return { date, figures: Object.fromEntries(body.map((cells) => [cells[0] as string, cells.at(-1) as string])) }
}

/** The comment lines right above the proxy's `resources:`, joined. */
function resourcesComment(): string {
  const lines = read('deploy/kubernetes/deployment.yaml').split('\n')
  const at = lines.findIndex((line) => line.trim() === 'resources:')
  const comment: string[] = []
  for (let i = at - 1; i >= 0 && lines[i]?.trim().startsWith('#'); i--) comment.unshift(lines[i]?.trim().slice(1) ?? '')
  return comment.join(' ').replace(/\s+/g, ' ')
}

test('Kubernetes: the resources quote docs/performance.md and fit MAX_IN_FLIGHT_REQUESTS downloads', () => {
  const resources = sidecar.resources as { requests?: Json; limits?: Json } | undefined
  for (const kind of ['requests', 'limits'] as const) {
    assert.ok(resources?.[kind]?.cpu && resources[kind].memory, `resources.${kind} has cpu and memory`)
  }
  const { date, figures } = latestSizing()
  const comment = resourcesComment()
  assert.match(comment, /docs\/performance\.md/, 'the comment names its one source')
  assert.ok(comment.includes(date), `the comment dates its figures: ${date}`)
  for (const [what, figure] of Object.entries(figures)) {
    assert.ok(comment.includes(figure), `the comment quotes docs/performance.md's ${what}: ${figure}`)
  }
  const mib = (row: RegExp) => {
    const entry = Object.entries(figures).find(([what]) => row.test(what))
    return Number(/([\d.]+) MiB/.exec(entry?.[1] ?? '')?.[1])
  }
  const idle = mib(/^idle RSS/)
  const slowClients = mib(/slow clients/)
  assert.ok(idle > 0 && slowClients > 0, 'docs/performance.md gives idle and slow-client RSS in MiB')

  const requests = resources?.requests as Json
  const limits = resources?.limits as Json
  const requested = quantity(requests.memory)
  const limit = quantity(limits.memory)
  assert.ok(requested >= slowClients * MiB, `requests.memory ${requests.memory} covers the ${slowClients} MiB measured`)
  assert.ok(limit >= requested, 'limits.memory is at least requests.memory')
  // About 100 MiB, plus per in-flight download with a slow client about 390 KiB in the process
  // and 350 KiB of kernel socket buffers, which a cgroup v2 limit counts too (the benchmark's
  // 1,000 slow downloads held at once, docs/performance.md).
  const inFlight = Number(sidecarEnv.MAX_IN_FLIGHT_REQUESTS?.value ?? DEFAULT_MAX_IN_FLIGHT_REQUESTS)
  const needed = Math.max(idle, 100) * MiB + inFlight * 768 * KiB
  assert.ok(
    limit >= needed,
    `limits.memory ${limits.memory} < ${Math.round(needed / MiB)} MiB for MAX_IN_FLIGHT_REQUESTS ${inFlight}`,
  )
  assert.ok(quantity(limits.cpu) >= 1, 'the proxy may use its one core')
  assert.ok(quantity(requests.cpu) <= quantity(limits.cpu))
})

/** What the cache volume holds beyond CACHE_MAX_BYTES: files being stored, and block rounding. */
const CACHE_VOLUME_MARGIN = 256 * MiB

test('Kubernetes: the cache is an emptyDir at CACHE_DIR, sized above CACHE_MAX_BYTES, the root filesystem read-only', () => {
  for (const { path, podSpec, sidecar, env } of WORKLOADS) {
    const dir = (env.CACHE_DIR?.value ?? '').replace(/\/$/, '')
    assert.ok(dir.startsWith('/'), `${path}: CACHE_DIR=${dir} is an absolute path`)
    const mount = sidecar.volumeMounts?.find((m) => m.mountPath.replace(/\/$/, '') === dir)
    assert.ok(mount, `${path}: a volume is mounted at CACHE_DIR (${dir})`)
    assert.notEqual(mount.readOnly, true, `${path}: the cache volume is writable`)
    assert.equal(mount.subPath, undefined, `${path}: the whole volume is the cache`)
    assert.equal(
      sidecar.securityContext?.readOnlyRootFilesystem,
      true,
      `${path}: the root filesystem stays read-only; the cache volume is the one place the proxy writes`,
    )
    const volume = podSpec.volumes?.find((v) => v.name === mount.name)
    const emptyDir = volume?.emptyDir as { sizeLimit?: string; medium?: string } | undefined
    assert.ok(emptyDir, `${path}: the cache is an emptyDir`)
    assert.notEqual(emptyDir.medium, 'Memory', `${path}: tmpfs would count the files against the memory limit`)
    assert.ok(emptyDir.sizeLimit, `${path}: the emptyDir has a sizeLimit`)
    const maxBytes = Number(env.CACHE_MAX_BYTES?.value ?? DEFAULTS.CACHE_MAX_BYTES)
    assert.ok(Number.isSafeInteger(maxBytes) && maxBytes > 0, `${path}: CACHE_MAX_BYTES=${maxBytes}`)
    // Past sizeLimit the kubelet evicts the pod: the limit leaves room for files being stored.
    const sizeLimit = quantity(emptyDir.sizeLimit)
    assert.ok(
      sizeLimit >= maxBytes + CACHE_VOLUME_MARGIN,
      `${path}: sizeLimit ${emptyDir.sizeLimit} < CACHE_MAX_BYTES ${maxBytes} + ${CACHE_VOLUME_MARGIN / MiB} MiB`,
    )
  }
  assert.deepEqual(
    several.podSpec.volumes?.find((v) => v.name === 'media-cache'),
    single.podSpec.volumes?.find((v) => v.name === 'media-cache'),
    'the same cache volume in both examples',
  )
})

test('Kubernetes: every container runs non-root, read-only, unprivileged', () => {
  for (const { path, podSpec } of WORKLOADS) {
    const pod = podSpec.securityContext ?? {}
    for (const c of [...(podSpec.initContainers ?? []), ...podSpec.containers]) {
      const own = c.securityContext ?? {}
      const effective = { ...pod, ...own }
      const where = `${path}: ${c.name}`
      assert.equal(effective.runAsNonRoot, true, `${where}: runAsNonRoot`)
      assertNumericNonRootUser(effective.runAsUser, where)
      assert.equal((effective.seccompProfile as Json | undefined)?.type, 'RuntimeDefault', `${where}: seccomp`)
      assert.equal(own.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`)
      assert.equal(own.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`)
      assert.deepEqual((own.capabilities as Json | undefined)?.drop, ['ALL'], `${where}: capabilities drop ALL`)
    }
    assert.equal(podSpec.automountServiceAccountToken, false, `${path}: no service account token`)
  }
})

test('Kubernetes: the key comes from a Secret volume the proxy sees rotate, the id from a ConfigMap', () => {
  assert.equal(sidecarEnv.VONAGE_PRIVATE_KEY, undefined, 'the PEM is never an environment variable')
  const keyPath = sidecarEnv.VONAGE_PRIVATE_KEY_PATH?.value ?? ''
  const mount = sidecar.volumeMounts?.find((m) => keyPath.startsWith(`${m.mountPath.replace(/\/$/, '')}/`))
  assert.ok(mount, `VONAGE_PRIVATE_KEY_PATH ${keyPath} lies inside a volume mount`)
  assert.equal(mount.readOnly, true, 'the key is mounted read-only')
  assert.equal(mount.subPath, undefined, 'no subPath: the kubelet never updates those, so rotation would not be seen')
  const volume = podSpec.volumes?.find((v) => v.name === mount.name)
  const secretVolume = volume?.secret as { secretName: string; defaultMode?: number } | undefined
  assert.ok(secretVolume?.secretName, 'the key volume is a Secret')
  const mode = secretVolume.defaultMode ?? 0o644
  assert.equal(mode & 0o007, 0, 'the key file is not world-readable')
  assert.ok(mode & 0o040 && podSpec.securityContext?.fsGroup !== undefined, 'group-readable through fsGroup')

  const secret = loadDocuments('deploy/kubernetes/secret.example.yaml').find((doc) => doc.kind === 'Secret')
  assert.equal((secret?.metadata as Json | undefined)?.name, secretVolume.secretName, 'the example Secret matches')
  const keys = Object.keys({ ...(secret?.stringData as Json), ...(secret?.data as Json) })
  assert.ok(keys.includes(posix.relative(mount.mountPath, keyPath)), `the Secret has the key ${keyPath} names`)

  const ref = (sidecarEnv.VONAGE_APPLICATION_ID?.valueFrom as Json | undefined)?.configMapKeyRef as Json | undefined
  assert.ok(ref, 'VONAGE_APPLICATION_ID comes from a ConfigMap')
  const configMap = k8s.find((doc) => doc.kind === 'ConfigMap' && (doc.metadata as Json).name === ref.name)
  assert.match(String((configMap?.data as Json | undefined)?.[String(ref.key)]), /^[0-9a-f-]{36}$/i)
})

test('Kubernetes, several applications: the keys are a Secret mounted where VONAGE_APPLICATIONS_DIR points', () => {
  const { path, docs, podSpec, sidecar, env } = several
  for (const setting of ['VONAGE_PRIVATE_KEY', 'VONAGE_PRIVATE_KEY_PATH']) {
    assert.equal(env[setting], undefined, `${path}: every key comes from the directory, not ${setting}`)
  }
  const dir = env.VONAGE_APPLICATIONS_DIR?.value ?? ''
  assert.ok(dir.startsWith('/'), `${path}: VONAGE_APPLICATIONS_DIR=${dir} is an absolute path`)
  const mount = sidecar.volumeMounts?.find((m) => m.mountPath.replace(/\/$/, '') === dir.replace(/\/$/, ''))
  assert.ok(mount, `${path}: a volume is mounted at VONAGE_APPLICATIONS_DIR (${dir})`)
  assert.equal(mount.readOnly, true, 'the keys are mounted read-only')
  assert.equal(mount.subPath, undefined, 'no subPath: the kubelet never updates those, so changes would not be seen')
  const volume = podSpec.volumes?.find((v) => v.name === mount.name)
  const secretVolume = volume?.secret as { secretName: string; defaultMode?: number; items?: unknown } | undefined
  assert.ok(secretVolume?.secretName, 'the key volume is a Secret')
  assert.equal(secretVolume.items, undefined, 'every entry of the Secret becomes a file: no items list to keep in step')
  const mode = secretVolume.defaultMode ?? 0o644
  assert.equal(mode & 0o007, 0, 'the key files are not world-readable')
  assert.ok(mode & 0o040 && podSpec.securityContext?.fsGroup !== undefined, 'group-readable through fsGroup')

  const secret = loadDocuments('deploy/kubernetes/applications-secret.example.yaml').find(
    (doc) => doc.kind === 'Secret',
  )
  assert.equal((secret?.metadata as Json | undefined)?.name, secretVolume.secretName, 'the example Secret matches')
  const entries = Object.keys({ ...(secret?.stringData as Json), ...(secret?.data as Json) })
  assert.ok(entries.length >= 2, 'the example Secret holds several applications')
  for (const entry of entries) {
    assert.ok(entry.endsWith('.pem') && UUID.test(entry.slice(0, -4)), `Secret entry ${entry} is <application-id>.pem`)
  }

  // The default application is optional, and its key is one of the directory's.
  const ref = (env.VONAGE_APPLICATION_ID?.valueFrom as Json | undefined)?.configMapKeyRef as Json | undefined
  assert.ok(ref, 'VONAGE_APPLICATION_ID comes from a ConfigMap')
  assert.equal(ref.optional, true, 'VONAGE_APPLICATION_ID is optional: without it, no default application')
  const configMap = docs.find((doc) => doc.kind === 'ConfigMap' && (doc.metadata as Json).name === ref.name)
  const id = (configMap?.data as Json | undefined)?.[String(ref.key)]
  if (id !== undefined) {
    assert.match(String(id), UUID)
    assert.ok(
      entries.includes(`${String(id).toLowerCase()}.pem`),
      `the Secret holds the default application's ${id}.pem`,
    )
  }
  assert.equal(docs.filter((doc) => doc.kind === 'Secret').length, 0, `${path} applies no Secret over the real one`)
})

test('Kubernetes, several applications: the same sidecar as deployment.yaml otherwise', () => {
  assert.equal(several.sidecar.image, single.sidecar.image, 'the same image')
  assert.deepEqual(several.sidecar.resources, single.sidecar.resources, 'the same resources (sized in deployment.yaml)')
  for (const setting of [
    'HOST',
    'ADMIN_HOST',
    'SHUTDOWN_GRACE_MS',
    'MAX_IN_FLIGHT_REQUESTS',
    'CACHE_DIR',
    'CACHE_MAX_BYTES',
  ]) {
    assert.deepEqual(several.env[setting], single.env[setting], `the same ${setting}`)
  }
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    assert.deepEqual(several.sidecar[probe], single.sidecar[probe], `the same ${probe}`)
  }
  assert.deepEqual(several.podSpec.securityContext, single.podSpec.securityContext, 'the same pod securityContext')
  assert.equal(several.podSpec.terminationGracePeriodSeconds, single.podSpec.terminationGracePeriodSeconds)
  const lines = read(several.path).split('\n')
  const at = lines.findIndex((line) => line.trim() === 'resources:')
  assert.match(
    lines.slice(Math.max(0, at - 3), at).join(' '),
    /deployment\.yaml/,
    'the sizing comment points at deployment.yaml',
  )
})

test('no shipped deployment file embeds a usable private key', () => {
  for (const path of ['Dockerfile', 'docker-compose.yml', ...KUBERNETES_FILES]) {
    assertNoPrivateKey(read(path), path)
  }
})
