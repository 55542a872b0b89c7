// `npm run emulator`: the Vonage Media API emulator on its own, for trying the proxy by hand.
//   EMULATOR_PUBLIC_KEY_PATH  PEM public (or private) key the tokens are checked against (required)
//   EMULATOR_APPLICATION_ID   the application id tokens must carry (required)
//   EMULATOR_HOST / EMULATOR_PORT   listen address (127.0.0.1:3000)
//   EMULATOR_MEDIA_DIR        a folder of files named <uuid> or <uuid>.<ext> to serve
//   EMULATOR_TLS_CERT_PATH / EMULATOR_TLS_KEY_PATH   PEM certificate and key: serve HTTPS (both or neither)
// It also serves a synthetic media item under /v3/media and a synthetic recording (a WAV tone)
// under /v1/files, and prints their URLs.
import { readFileSync } from 'node:fs'
import { VonageEmulator } from './emulator.js'

const SAMPLE_SYNTHETIC_ID = '00000000-0000-4000-8000-000000000001'
const SAMPLE_RECORDING_ID = '00000000-0000-4000-8000-000000000002'
const SAMPLE_RECORDING_SECONDS = 3

function fail(message: string): never {
  process.stderr.write(`config error: ${message}\n`)
  process.exit(78)
}

function required(name: string): string {
  return process.env[name] || fail(`${name} is required`)
}

function readSetting(name: string, path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (error) {
    return fail(`${name} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

function tlsSettings(): { cert: string; key: string } | undefined {
  const certPath = process.env.EMULATOR_TLS_CERT_PATH
  const keyPath = process.env.EMULATOR_TLS_KEY_PATH
  if (!certPath && !keyPath) return undefined
  if (!certPath || !keyPath) fail('EMULATOR_TLS_CERT_PATH and EMULATOR_TLS_KEY_PATH go together: set both or neither')
  return {
    cert: readSetting('EMULATOR_TLS_CERT_PATH', certPath),
    key: readSetting('EMULATOR_TLS_KEY_PATH', keyPath),
  }
}

const tls = tlsSettings()
const emulator = new VonageEmulator({
  publicKey: readSetting('EMULATOR_PUBLIC_KEY_PATH', required('EMULATOR_PUBLIC_KEY_PATH')),
  applicationId: required('EMULATOR_APPLICATION_ID'),
  host: process.env.EMULATOR_HOST ?? '127.0.0.1',
  port: Number(process.env.EMULATOR_PORT ?? 3000),
  ...(tls ? { tls } : {}),
})
const ids = process.env.EMULATOR_MEDIA_DIR ? emulator.media.addFolder(process.env.EMULATOR_MEDIA_DIR) : []
emulator.media.addSynthetic(SAMPLE_SYNTHETIC_ID, 1024 * 1024, { contentType: 'application/octet-stream' })
emulator.files.addWav(SAMPLE_RECORDING_ID, SAMPLE_RECORDING_SECONDS)
const url = await emulator.listen()
process.stdout.write(`Vonage Media API emulator on ${url}\n`)
for (const id of [...ids, SAMPLE_SYNTHETIC_ID]) process.stdout.write(`  ${url}/v3/media/${id}\n`)
process.stdout.write(`  ${url}/v1/files/${SAMPLE_RECORDING_ID}  (recording: ${SAMPLE_RECORDING_SECONDS} s WAV tone)\n`)
const stop = () => void emulator.close().then(() => process.exit(0))
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
