// Live key rotation: watches the key file's directory (a Kubernetes secret update swaps the
// `..data` symlink, which a watch on the file itself never sees) and polls as a fallback, so
// a replacement is picked up within a couple of seconds. A replacement that is not a valid
// RSA key is refused and reported once; the old key stays in use.
import { createHash, type KeyObject } from 'node:crypto'
import { type FSWatcher, readFileSync, watch } from 'node:fs'
import { dirname } from 'node:path'
import { KeyError, parsePrivateKey } from './key.js'

const KEY_POLL_INTERVAL_MS = 1_000
/** Coalesces the burst of events one replacement causes (write, rename, symlink swap). */
const SETTLE_MS = 50

export interface KeyWatcherOptions {
  path: string
  /** The key in use at start, so that an unchanged file is not reported as a reload. */
  initialKey: KeyObject
  pollIntervalMs?: number
  onKey: (key: KeyObject) => void
  onRejected: (reason: string) => void
}

export class KeyWatcher {
  readonly #options: KeyWatcherOptions
  #digest: string | undefined
  #rejectedDigest: string | undefined
  /** Since when the file could not be read; reported once it still cannot a poll interval later. */
  #unreadableSince: number | undefined
  #unreadableReported = false
  #watcher: FSWatcher | undefined
  #poll: NodeJS.Timeout | undefined
  #settle: NodeJS.Timeout | undefined

  constructor(options: KeyWatcherOptions) {
    this.#options = options
  }

  get #pollIntervalMs(): number {
    return this.#options.pollIntervalMs ?? KEY_POLL_INTERVAL_MS
  }

  start(): void {
    this.check()
    try {
      this.#watcher = watch(dirname(this.#options.path), () => this.#scheduleCheck())
      this.#watcher.on('error', () => this.#watcher?.close())
    } catch {
      // Some filesystems cannot be watched; polling alone still sees every replacement.
    }
    this.#poll = setInterval(() => this.check(), this.#pollIntervalMs)
    this.#poll.unref()
  }

  close(): void {
    this.#watcher?.close()
    clearInterval(this.#poll)
    clearTimeout(this.#settle)
  }

  /** Reads the file; applies it if it changed and is valid, reports it once if it is not. */
  check(): void {
    let pem: string
    try {
      pem = readFileSync(this.#options.path, 'utf8')
    } catch (err) {
      // Mid-swap the path can be missing for a moment: only a file still unreadable at the next
      // poll is reported (once), and the key in use stays.
      const now = Date.now()
      this.#unreadableSince ??= now
      if (!this.#unreadableReported && now - this.#unreadableSince >= this.#pollIntervalMs) {
        this.#unreadableReported = true
        const code = (err as NodeJS.ErrnoException).code ?? 'read error'
        this.#options.onRejected(`cannot be read (${code}); keeping the key in use`)
      }
      return
    }
    this.#unreadableSince = undefined
    this.#unreadableReported = false
    const digest = digestOf(pem)
    if (digest === this.#digest || digest === this.#rejectedDigest) return
    let key: KeyObject
    try {
      key = parsePrivateKey(pem)
    } catch (err) {
      this.#rejectedDigest = digest
      this.#options.onRejected(err instanceof KeyError ? err.message : 'could not be parsed')
      return
    }
    const first = this.#digest === undefined
    this.#digest = digest
    this.#rejectedDigest = undefined
    if (first && key.equals(this.#options.initialKey)) return
    this.#options.onKey(key)
  }

  #scheduleCheck(): void {
    clearTimeout(this.#settle)
    this.#settle = setTimeout(() => this.check(), SETTLE_MS)
    this.#settle.unref()
  }
}

function digestOf(pem: string): string {
  return createHash('sha256').update(pem).digest('hex')
}
