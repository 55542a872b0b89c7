// The emulator's media: files from a folder, and synthetic bodies of any size whose bytes
// are computed from their offset, so a 256 MiB item costs no memory and any range of it can
// be produced (and checked by a test) without storing it.
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

function etagFor(id: string, size: number, version = 0): string {
  return `"${createHash('sha256').update(`${id}:${size}:${version}`).digest('hex').slice(0, 20)}"`
}

function secondsPrecision(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000)
}
