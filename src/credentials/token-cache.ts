// The application JWTs: signing (jose, exactly the contract's claims) and the cache that serves
// each application's token to every request for it, refreshes it in the background at two
// thirds of its lifetime, never hands out one with less than a quarter left, and fails closed.
// One lru-cache keyed by application id holds them all: bounded, single-flight per key.
import { type KeyObject, randomUUID } from 'node:crypto'
import { SignJWT } from 'jose'
import { LRUCache } from 'lru-cache'
import { errors } from '../errors.js'

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

export interface Token {
  readonly applicationId: string
  /** The compact JWS: never log it. */
  readonly value: string
  readonly jti: string
  /** Seconds since the epoch. */
  readonly iat: number
  readonly exp: number
}

export class TokenSigner {
  #key: KeyObject
  readonly #applicationId: string
  readonly #ttlSeconds: number
  readonly #clock: Clock

  constructor(key: KeyObject, applicationId: string, ttlSeconds: number, clock: Clock = systemClock) {
    this.#key = key
    this.#applicationId = applicationId
    this.#ttlSeconds = ttlSeconds
    this.#clock = clock
  }

  get applicationId(): string {
    return this.#applicationId
  }

  /** Replaces the signing key; the caller invalidates cached tokens. */
  setKey(key: KeyObject): void {
    this.#key = key
  }

  async sign(): Promise<Token> {
    const iat = Math.floor(this.#clock.now() / 1000)
    const exp = iat + this.#ttlSeconds
    const jti = randomUUID()
    const value = await new SignJWT({ application_id: this.#applicationId })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(this.#key)
    return { applicationId: this.#applicationId, value, jti, iat, exp }
  }
}

export type RefreshResult = 'success' | 'failure'

/** Where the signers come from: one, or one per application (see credentials/applications.ts). */
export interface Signers {
  signer(applicationId: string): TokenSigner | undefined
}

export interface TokenCacheOptions {
  ttlSeconds: number
  clock?: Clock
  /** The application of calls that name none: the single signer's, or VONAGE_APPLICATION_ID. */
  defaultApplicationId?: string | undefined
  /** Called before every signing attempt; what it returns is told how it went (a trace span). */
  onSigning?: (applicationId: string) => { end(error?: unknown): void }
  /** Called after every signing attempt: feeds metrics and logs. */
  onRefresh?: (applicationId: string, result: RefreshResult, token: Token | undefined, error: unknown) => void
  /**
   * Refresh the default application's token in the background on a timer, so that an idle proxy
   * stays ready. Other applications' tokens are refreshed as they are used. Off in unit tests.
   */
  proactive?: boolean
  /** How many applications' tokens are kept at most (least recently used go first). */
  max?: number
}

const RETRY_AFTER_FAILURE_MS = 1_000
const DEFAULT_MAX_APPLICATIONS = 10_000

export class TokenCache {
  readonly #signers: Signers
  readonly #defaultApplicationId: string | undefined
  readonly #clock: Clock
  readonly #floorSeconds: number
  readonly #refreshAfterMs: number
  readonly #cache: LRUCache<string, Token>
  readonly #onRefresh: TokenCacheOptions['onRefresh']
  readonly #onSigning: TokenCacheOptions['onSigning']
  readonly #proactive: boolean
  #timer: NodeJS.Timeout | undefined
  /** Per application, the jti invalidate() last dropped. */
  readonly #droppedJti = new Map<string, string>()
  #closed = false

  constructor(signers: TokenSigner | Signers, options: TokenCacheOptions) {
    if (signers instanceof TokenSigner) {
      const single = signers
      this.#signers = { signer: (id) => (id === single.applicationId ? single : undefined) }
      this.#defaultApplicationId = options.defaultApplicationId ?? single.applicationId
    } else {
      this.#signers = signers
      this.#defaultApplicationId = options.defaultApplicationId
    }
    this.#clock = options.clock ?? systemClock
    this.#floorSeconds = options.ttlSeconds / 4
    this.#refreshAfterMs = Math.floor((options.ttlSeconds * 1000 * 2) / 3)
    this.#onRefresh = options.onRefresh
    this.#onSigning = options.onSigning
    this.#proactive = options.proactive ?? true
    this.#cache = new LRUCache<string, Token>({
      max: options.max ?? DEFAULT_MAX_APPLICATIONS,
      ttl: this.#refreshAfterMs,
      ttlResolution: 0,
      perf: this.#clock,
      // Stale-while-revalidate: past two thirds of its life the token is still handed out while
      // one background fetch signs the next; get() enforces the quarter-lifetime floor.
      allowStale: true,
      allowStaleOnFetchRejection: true,
      noDeleteOnFetchRejection: true,
      fetchMethod: async (applicationId, _stale, { options }) => {
        const token = await this.#mint(applicationId)
        // Staleness counts from the token's iat, not from when a (slow) signing finished;
        // 1 ms at least, since a TTL of 0 means "never stale" to lru-cache.
        options.ttl = Math.max(1, token.iat * 1000 + this.#refreshAfterMs - this.#clock.now())
        return token
      },
    })
  }

  get defaultApplicationId(): string | undefined {
    return this.#defaultApplicationId
  }

  /** A token with at least a quarter of its lifetime left; ProxyError 503 when none can be had. */
  async get(applicationId = this.#default()): Promise<Token> {
    let token = await this.#fetch(applicationId, true)
    if (token && this.#usable(token)) return token
    // Below the floor, or never minted: wait for the signing under way, or start one.
    token = await this.#fetch(applicationId, false, true)
    if (token && this.#usable(token)) return token
    throw errors.tokenUnavailable()
  }

  /**
   * The cached token while it is fresh (under two thirds of its lifetime), synchronously; else
   * undefined, and get() decides. The per-request fast path: no promise, no signing.
   */
  current(applicationId = this.#default()): Token | undefined {
    return this.#cache.peek(applicationId, { allowStale: false })
  }

  /** The cached token if it is usable now; never signs. For readiness checks. */
  peek(applicationId = this.#default()): Token | undefined {
    const token = this.#cache.peek(applicationId, { allowStale: true })
    return token && this.#usable(token) ? token : undefined
  }

  /**
   * Drops an application's cached token (the token's own, or the default's). With a token, only
   * if it is still the cached one (or being replaced already), so that many requests refused
   * with the same token cause one new signature, not one each.
   */
  invalidate(rejected?: Token): void {
    const applicationId = rejected?.applicationId ?? this.#default()
    const cached = this.#cache.peek(applicationId, { allowStale: true })
    if (rejected) {
      // Already dropped: its replacement is cached or being signed. While it signs the cache
      // shows no value, and a delete now would abort that signing and start another.
      if (rejected.jti === this.#droppedJti.get(applicationId)) return
      if (cached && cached.jti !== rejected.jti) return
    }
    const dropped = rejected?.jti ?? cached?.jti
    if (dropped) this.#droppedJti.set(applicationId, dropped)
    this.#cache.delete(applicationId)
  }

  /** An application whose key changed or was removed: its token goes now, not at its refresh. */
  drop(applicationId: string): void {
    this.#droppedJti.delete(applicationId)
    this.#cache.delete(applicationId)
  }

  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#cache.clear()
  }

  #default(): string {
    // Callers that name no application only exist where a default is configured.
    return this.#defaultApplicationId ?? ''
  }

  async #fetch(applicationId: string, allowStale: boolean, forceRefresh = false): Promise<Token | undefined> {
    try {
      return await this.#cache.fetch(applicationId, { allowStale, forceRefresh })
    } catch (err) {
      throw errors.tokenUnavailable(err)
    }
  }

  #usable(token: Token): boolean {
    return token.exp - this.#clock.now() / 1000 >= this.#floorSeconds
  }

  async #mint(applicationId: string): Promise<Token> {
    const signer = this.#signers.signer(applicationId)
    const isDefault = applicationId === this.#defaultApplicationId
    let token: Token
    const span = this.#onSigning?.(applicationId)
    try {
      if (!signer) throw new Error(`no key for application ${applicationId}`)
      token = await signer.sign()
    } catch (err) {
      span?.end(err)
      this.#onRefresh?.(applicationId, 'failure', undefined, err)
      if (isDefault) this.#schedule(RETRY_AFTER_FAILURE_MS)
      throw err
    }
    span?.end()
    this.#onRefresh?.(applicationId, 'success', token, undefined)
    // A few ms past the cache's TTL, so that the timer's fetch finds the token stale.
    if (isDefault) this.#schedule(this.#refreshAfterMs + 10)
    return token
  }

  /** The default application's proactive refresh. */
  #schedule(delayMs: number): void {
    const applicationId = this.#defaultApplicationId
    if (!this.#proactive || this.#closed || applicationId === undefined) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#cache.fetch(applicationId).catch(() => {
        // #mint has reported the failure and scheduled the next attempt.
      })
    }, delayMs)
    this.#timer.unref()
  }
}
