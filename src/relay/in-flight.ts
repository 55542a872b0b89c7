// The in-flight limit: how many media requests are being served (their turn on their
// connection has come and they hold an upstream exchange). Read by the metrics.
export class InFlightLimit {
  #count = 0
  constructor(readonly limit: number) {}

  get count(): number {
    return this.#count
  }

  tryAcquire(): boolean {
    if (this.#count >= this.limit) return false
    this.#count++
    return true
  }

  release(): void {
    this.#count--
  }
}
