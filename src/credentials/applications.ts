// The Vonage applications this proxy holds keys for, each with its own signer: the default one
// of the single-application settings, and every <application-id>.pem in
// VONAGE_APPLICATIONS_DIR. The directory is watched (a Kubernetes Secret's ..data symlink swap
// included) and polled as a fallback, so that keys added, replaced or removed are seen within
// a couple of seconds; a replacement that is not a valid RSA key is refused and the old key stays.
import { createHash, type KeyObject } from 'node:crypto'
import { type FSWatcher, readdirSync, readFileSync, statSync, watch } from 'node:fs'
import { join } from 'node:path'
import { UUID_SOURCE } from '../uuid.js'
import { KeyError, parsePrivateKey } from './key.js'
import { type Clock, type Signers, systemClock, TokenSigner } from './token-cache.js'

const KEY_FILE = new RegExp(`^(${UUID_SOURCE})\\.pem$`, 'i')
const POLL_INTERVAL_MS = 1_000
/** Coalesces the burst of events one replacement causes (write, rename, symlink swap). */
const SETTLE_MS = 50

export interface ApplicationEvents {
  /** A key was loaded (first: at start-up) or replaced. */
  onKey?(applicationId: string, first: boolean): void
  /** A file that is not a valid key, or a key file that can no longer be read; the old key stays. */
  onRefused?(applicationId: string, reason: string): void
  /** A key file went away: the application is no longer served. */
  onRemoved?(applicationId: string): void
  /** A file that is not <application-id>.pem, reported once. */
  onIgnored?(fileName: string): void
}

interface Loaded {
  signer: TokenSigner
  digest: string | undefined
  /** The file as last read (inode, size, mtime): unchanged files are not read again. */
  stamp: string | undefined
}

export class Applications implements Signers {
  readonly #ttlSeconds: number
  readonly #clock: Clock
  readonly #dir: string | undefined
  readonly #events: ApplicationEvents
  readonly #loaded = new Map<string, Loaded>()
  /** The id whose key comes from the single-application settings, not the directory. */
  readonly #pinned: string | undefined
  readonly #refusedDigests = new Map<string, string>()
  readonly #ignored = new Set<string>()
  /** When each loaded directory key was first seen missing: removed a poll later. */
  readonly #missingSince = new Map<string, number>()
  #watcher: FSWatcher | undefined
  #poll: NodeJS.Timeout | undefined
  #settle: NodeJS.Timeout | undefined
  #pollIntervalMs = POLL_INTERVAL_MS

  constructor(options: {
    ttlSeconds: number
    clock?: Clock
    dir: string | undefined
    /** The default application and its key, from the single-application settings. */
    pinned?: { applicationId: string; key: KeyObject }
    events?: ApplicationEvents
  }) {
    this.#ttlSeconds = options.ttlSeconds
    this.#clock = options.clock ?? systemClock
    this.#dir = options.dir
    this.#events = options.events ?? {}
    if (options.pinned) {
      this.#pinned = options.pinned.applicationId
      const signer = this.#signerFor(this.#pinned, options.pinned.key)
      this.#loaded.set(this.#pinned, { signer, digest: undefined, stamp: undefined })
    }
    if (this.#dir) this.#scan(true)
  }

  signer(applicationId: string): TokenSigner | undefined {
    return this.#loaded.get(applicationId)?.signer
  }

  has(applicationId: string): boolean {
    return this.#loaded.has(applicationId)
  }

  get size(): number {
    return this.#loaded.size
  }

  /** Watches the directory for changes and polls it as a fallback. */
  start(pollIntervalMs = POLL_INTERVAL_MS): void {
    const dir = this.#dir
    if (!dir) return
    try {
      this.#watcher = watch(dir, () => {
        clearTimeout(this.#settle)
        this.#settle = setTimeout(() => this.#scan(false), SETTLE_MS)
        this.#settle.unref()
      })
      this.#watcher.on('error', () => this.#watcher?.close())
    } catch {
      // Some filesystems cannot be watched; polling alone still sees every change.
    }
    this.#poll = setInterval(() => this.#scan(false), pollIntervalMs)
    this.#poll.unref()
    this.#pollIntervalMs = pollIntervalMs
  }

  close(): void {
    this.#watcher?.close()
    clearInterval(this.#poll)
    clearTimeout(this.#settle)
  }

  #signerFor(applicationId: string, key: KeyObject): TokenSigner {
    return new TokenSigner(key, applicationId, this.#ttlSeconds, this.#clock)
  }

  /** Reads the directory; applies what changed. */
  #scan(first: boolean): void {
    const dir = this.#dir as string
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      // Mid-swap, or gone: the next scan sees it again; keys in use stay.
      return
    }
    const files = new Map<string, string[]>()
    for (const name of names) {
      // Kubernetes' own entries (..data, ..2026_12_06_…) and hidden files.
      if (name.startsWith('.')) continue
      const match = KEY_FILE.exec(name)
      if (!match) {
        if (!this.#ignored.has(name)) {
          this.#ignored.add(name)
          this.#events.onIgnored?.(name)
        }
        continue
      }
      const applicationId = (match[1] as string).toLowerCase()
      // The single-application settings name this application's key themselves.
      if (applicationId === this.#pinned) continue
      files.set(applicationId, [...(files.get(applicationId) ?? []), name])
    }
    for (const [applicationId, found] of files) {
      if (found.length === 1) {
        this.#load(applicationId, join(dir, found[0] as string), first)
        continue
      }
      // Two files for one application (names differing in case): neither is taken, once said.
      const ambiguity = `ambiguous:${found.sort().join('|')}`
      if (this.#refusedDigests.get(applicationId) !== ambiguity) {
        this.#refusedDigests.set(applicationId, ambiguity)
        this.#events.onRefused?.(applicationId, `has ${found.length} key files (${found.join(', ')}); keep one`)
      }
    }
    const present = new Set(files.keys())
    this.#removeMissing(present)
  }

  #load(applicationId: string, path: string, first: boolean): void {
    const loaded = this.#loaded.get(applicationId)
    this.#missingSince.delete(applicationId)
    let pem: string
    let stamp: string
    try {
      // A thousand keys are polled every second: a stat each, and a read only when one changed.
      const stat = statSync(path)
      stamp = `${stat.ino}:${stat.size}:${stat.mtimeMs}`
      if (loaded?.stamp === stamp) return
      pem = readFileSync(path, 'utf8')
    } catch {
      return
    }
    const digest = createHash('sha256').update(pem).digest('hex')
    if (loaded?.digest === digest) {
      loaded.stamp = stamp
      return
    }
    if (this.#refusedDigests.get(applicationId) === digest) return
    let key: KeyObject
    try {
      key = parsePrivateKey(pem)
    } catch (err) {
      this.#refusedDigests.set(applicationId, digest)
      this.#events.onRefused?.(applicationId, err instanceof KeyError ? err.message : 'could not be parsed')
      return
    }
    this.#refusedDigests.delete(applicationId)
    if (loaded) {
      loaded.signer.setKey(key)
      loaded.digest = digest
      loaded.stamp = stamp
    } else {
      this.#loaded.set(applicationId, { signer: this.#signerFor(applicationId, key), digest, stamp })
    }
    this.#events.onKey?.(applicationId, first)
  }

  #removeMissing(present: ReadonlySet<string>): void {
    const now = Date.now()
    for (const applicationId of [...this.#loaded.keys()]) {
      if (applicationId === this.#pinned || present.has(applicationId)) continue
      // Mid-swap a file can be missing for a moment: only one still missing a poll later goes.
      const since = this.#missingSince.get(applicationId) ?? now
      this.#missingSince.set(applicationId, since)
      if (now - since < this.#pollIntervalMs) continue
      this.#missingSince.delete(applicationId)
      this.#loaded.delete(applicationId)
      this.#refusedDigests.delete(applicationId)
      this.#events.onRemoved?.(applicationId)
    }
  }
}
