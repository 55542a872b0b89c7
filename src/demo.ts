// `npm run demo`: a throwaway key pair, the Vonage emulator serving a sample image, and the
// proxy in front of it, then a curl line that downloads the image. No Vonage account needed.
// Ctrl-C stops both and deletes the keys.
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { crc32, deflateSync } from 'node:zlib'
import { buildApp } from './app.js'
import { ConfigError, EX_CONFIG, loadConfig } from './config.js'
import { VonageEmulator } from './emulator/emulator.js'

const SAMPLE_ID = '1b456509-974c-458b-aafa-45fc48a4d976'

const dir = mkdtempSync(join(tmpdir(), 'vonage-media-proxy-demo-'))
const cleanUp = () => rmSync(dir, { recursive: true, force: true })
process.on('exit', cleanUp)

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
const keyPath = join(dir, 'private.key')
writeFileSync(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
const imagePath = join(dir, `${SAMPLE_ID}.png`)
writeFileSync(imagePath, samplePng(160, 90))

const applicationId = randomUUID()
const emulator = new VonageEmulator({ publicKey, applicationId, port: Number(process.env.EMULATOR_PORT ?? 0) })
emulator.media.addFile(SAMPLE_ID, imagePath)
const emulatorUrl = await emulator.listen()

let config: ReturnType<typeof loadConfig>
try {
  config = loadConfig({
    env: {
      ...process.env,
      VONAGE_APPLICATION_ID: applicationId,
      VONAGE_PRIVATE_KEY_PATH: keyPath,
      VONAGE_PRIVATE_KEY: '',
      UPSTREAM_BASE_URL: emulatorUrl,
    },
  })
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(`config error: ${err.message}\n`)
  process.exit(EX_CONFIG)
}
const app = await buildApp(config, { onShutdownRequest: () => stop() })
const { mediaUrl, adminUrl } = await app.listen()

process.stdout.write(
  [
    '',
    `Vonage Media API emulator: ${emulatorUrl} (application ${applicationId}, key in ${dir})`,
    `vonage-media-proxy:        ${mediaUrl} (admin: ${adminUrl}/metrics, /readyz)`,
    '',
    'Download the sample image through the proxy, with no credentials:',
    '',
    `  curl -fsS -o sample.png -w '%{http_code} %{content_type} %{size_download} bytes\\n' ${mediaUrl}/media/${SAMPLE_ID}`,
    '',
    'Press Ctrl-C to stop both and delete the throwaway keys.',
    '',
  ].join('\n'),
)

let stopping = false
function stop(): void {
  if (stopping) process.exit(1)
  stopping = true
  void Promise.all([app.close(1_000), emulator.close()]).finally(() => process.exit(0))
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)

/** A small gradient PNG (8-bit RGB), so the demo downloads a real image. */
function samplePng(width: number, height: number): Buffer {
  const rows: Buffer[] = []
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3)
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round((255 * x) / width)
      row[2 + x * 3] = Math.round((255 * y) / height)
      row[3 + x * 3] = 160
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
