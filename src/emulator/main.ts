// `npm run emulator`: the Vonage Media API emulator on its own, for trying the proxy by hand.
//   EMULATOR_PUBLIC_KEY_PATH  PEM public (or private) key the tokens are checked against (required)
//   EMULATOR_APPLICATION_ID   the application id tokens must carry (required)
//   EMULATOR_HOST / EMULATOR_PORT   listen address (127.0.0.1:3000)
//   EMULATOR_MEDIA_DIR        a folder of files named <uuid> or <uuid>.<ext> to serve
import { readFileSync } from 'node:fs'
import { VonageEmulator } from './emulator.js'

const SAMPLE_SYNTHETIC_ID = '00000000-0000-4000-8000-000000000001'

function required(name: string): string {
  const value = process.env[name]
  if (!value) {
    process.stderr.write(`config error: ${name} is required\n`)
    process.exit(78)
  }
  return value
}

const emulator = new VonageEmulator({
  publicKey: readFileSync(required('EMULATOR_PUBLIC_KEY_PATH'), 'utf8'),
  applicationId: required('EMULATOR_APPLICATION_ID'),
  host: process.env.EMULATOR_HOST ?? '127.0.0.1',
  port: Number(process.env.EMULATOR_PORT ?? 3000),
})
const ids = process.env.EMULATOR_MEDIA_DIR ? emulator.media.addFolder(process.env.EMULATOR_MEDIA_DIR) : []
emulator.media.addSynthetic(SAMPLE_SYNTHETIC_ID, 1024 * 1024, { contentType: 'application/octet-stream' })
const url = await emulator.listen()
process.stdout.write(`Vonage Media API emulator on ${url}\n`)
for (const id of [...ids, SAMPLE_SYNTHETIC_ID]) process.stdout.write(`  ${url}/v3/media/${id}\n`)
const stop = () => void emulator.close().then(() => process.exit(0))
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
