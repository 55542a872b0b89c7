// The emulator's media: files from a folder, and synthetic bodies of any size whose bytes
// are computed from their offset, so a 256 MiB item costs no memory and any range of it can
// be produced (and checked by a test) without storing it; and small bodies held in memory,
// such as a synthetic WAV recording. One store serves /v3/media, another /v1/files.
import { createHash } from 'node:crypto'
import { createReadStream, readdirSync, statSync } from 'node:fs'
import { extname, join } from 'node:path'
import { Readable } from 'node:stream'
import { UUID_SOURCE } from '../uuid.js'

const UUID_PREFIX = new RegExp(`^(${UUID_SOURCE})(\\.[a-z0-9]+)?$`, 'i')

const CONTENT_TYPES: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.mp4': 'video/mp4',
  '.ogg': 'audio/ogg',
  '.mp3': 'audio/mpeg',
  '.wav': 'audio/wav',
  '.pdf': 'application/pdf',
  '.txt': 'text/plain',
  '.vcf': 'text/vcard',
}

export interface MediaItem {
  readonly id: string
  readonly size: number
  readonly contentType: string
  readonly etag: string
  readonly lastModified: Date
  readonly fileName: string | undefined
  /** A readable of bytes [start, end] inclusive. */
  open(start: number, end: number): Readable
}

export interface SyntheticOptions {
  contentType?: string
  fileName?: string
  lastModified?: Date
}

const PATTERN_PERIOD = 251 // prime: the pattern never lines up with power-of-two chunk sizes
const CHUNK = 64 * 1024
const PATTERN = Buffer.alloc(CHUNK + PATTERN_PERIOD)
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % PATTERN_PERIOD

/** The byte a synthetic item holds at an offset: what tests compare against. */
export function syntheticByte(offset: number): number {
  return offset % PATTERN_PERIOD
}

/** Streams synthetic bytes [start, end] inclusive, in 64 KiB chunks, honouring backpressure. */
export function syntheticStream(start: number, end: number): Readable {
  let offset = start
  return new Readable({
    read() {
      if (offset > end) {
        this.push(null)
        return
      }
      const length = Math.min(CHUNK, end - offset + 1)
      const from = offset % PATTERN_PERIOD
      offset += length
      // A copy: the shared pattern must never be handed out to be mutated or pooled.
      this.push(Buffer.from(PATTERN.subarray(from, from + length)))
    },
  })
}

export class MediaStore {
  readonly #items = new Map<string, MediaItem>()

  get(id: string): MediaItem | undefined {
    return this.#items.get(id.toLowerCase())
  }

  addSynthetic(id: string, size: number, options: SyntheticOptions = {}): MediaItem {
    const item: MediaItem = {
      id,
      size,
      contentType: options.contentType ?? 'application/octet-stream',
      etag: etagFor(id, size),
      lastModified: secondsPrecision(options.lastModified ?? new Date()),
      fileName: options.fileName,
      open: (start, end) => syntheticStream(start, end),
    }
    this.#items.set(id.toLowerCase(), item)
    return item
  }

  /** An item whose body is this buffer (a recording, a small fixture). */
  addBuffer(id: string, body: Buffer, options: SyntheticOptions = {}): MediaItem {
    const item: MediaItem = {
      id,
      size: body.length,
      contentType: options.contentType ?? 'application/octet-stream',
      etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 20)}"`,
      lastModified: secondsPrecision(options.lastModified ?? new Date()),
      fileName: options.fileName,
      // A copy per range, so that nothing downstream can alter the stored body.
      open: (start, end) => Readable.from([Buffer.from(body.subarray(start, end + 1))]),
    }
    this.#items.set(id.toLowerCase(), item)
    return item
  }

  /** A recording: `seconds` of a sine tone as a WAV file (audio/wav), playable by a browser. */
  addWav(id: string, seconds: number, options: SyntheticOptions = {}): MediaItem {
    return this.addBuffer(id, sampleWav(seconds), { contentType: 'audio/wav', fileName: `${id}.wav`, ...options })
  }

  addFile(id: string, path: string, contentType?: string): MediaItem {
    const stat = statSync(path)
    const item: MediaItem = {
      id,
      size: stat.size,
      contentType: contentType ?? CONTENT_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream',
      etag: etagFor(id, stat.size, stat.mtimeMs),
      lastModified: secondsPrecision(stat.mtime),
      fileName: path.split('/').pop(),
      open: (start, end) => createReadStream(path, { start, end }),
    }
    this.#items.set(id.toLowerCase(), item)
    return item
  }

  /** Adds every file of a folder named <uuid> or <uuid>.<ext>; returns the ids added. */
  addFolder(dir: string): string[] {
    const ids: string[] = []
    for (const name of readdirSync(dir)) {
      const match = UUID_PREFIX.exec(name)
      const path = join(dir, name)
      if (match?.[1] && statSync(path).isFile()) {
        this.addFile(match[1], path)
        ids.push(match[1])
      }
    }
    return ids
  }
}

const WAV_SAMPLE_RATE = 8000 // telephony's rate, as Vonage's recordings
const WAV_TONE_HZ = 440
const WAV_FADE_SAMPLES = 80 // 10 ms in and out: no click at either end

/**
 * `seconds` of a 440 Hz sine tone as a WAV file: RIFF header, then 16-bit mono PCM at 8 kHz
 * (16 000 bytes a second). Same seconds, same bytes.
 */
export function sampleWav(seconds: number): Buffer {
  if (!(seconds > 0) || !Number.isFinite(seconds)) throw new Error(`seconds must be positive, not ${seconds}`)
  const samples = Math.round(seconds * WAV_SAMPLE_RATE)
  const dataBytes = samples * 2
  const wav = Buffer.alloc(44 + dataBytes)
  wav.write('RIFF', 0, 'latin1')
  wav.writeUInt32LE(36 + dataBytes, 4)
  wav.write('WAVE', 8, 'latin1')
  wav.write('fmt ', 12, 'latin1')
  wav.writeUInt32LE(16, 16) // fmt chunk size
  wav.writeUInt16LE(1, 20) // PCM
  wav.writeUInt16LE(1, 22) // mono
  wav.writeUInt32LE(WAV_SAMPLE_RATE, 24)
  wav.writeUInt32LE(WAV_SAMPLE_RATE * 2, 28) // bytes a second
  wav.writeUInt16LE(2, 32) // bytes a frame
  wav.writeUInt16LE(16, 34) // bits a sample
  wav.write('data', 36, 'latin1')
  wav.writeUInt32LE(dataBytes, 40)
  for (let i = 0; i < samples; i++) {
    const fade = Math.min(1, i / WAV_FADE_SAMPLES, (samples - 1 - i) / WAV_FADE_SAMPLES)
    const value = Math.sin((2 * Math.PI * WAV_TONE_HZ * i) / WAV_SAMPLE_RATE) * fade * 0.3
    wav.writeInt16LE(Math.round(value * 32767), 44 + i * 2)
  }
  return wav
}

function etagFor(id: string, size: number, version = 0): string {
  return `"${createHash('sha256').update(`${id}:${size}:${version}`).digest('hex').slice(0, 20)}"`
}

function secondsPrecision(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000)
}
